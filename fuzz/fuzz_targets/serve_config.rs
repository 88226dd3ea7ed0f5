//! `serve.toml` (wrun::serve::config::parse), then what `wrun serve` does
//! with it before compiling anything: each tenant's limits resolved, each
//! function planned (routes, env, volumes, outbound rules, limits capped by
//! its tenant's).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wrun::serve::config::{self, ResolvedLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = config::parse(text) else {
        return;
    };
    for tenant in config.tenants.values() {
        let Ok(limits) = ResolvedLimits::defaults().apply(&tenant.limits, None) else {
            continue;
        };
        for function in tenant.functions.values() {
            if let Ok(plan) = function.plan(Path::new("/srv"), &limits) {
                assert!(!plan.routes.is_empty());
                assert!(plan.limits.memory <= limits.memory);
                assert!(plan.limits.max_body <= limits.max_body);
                assert!(plan.limits.max_concurrency <= limits.max_concurrency);
                for route in &plan.routes {
                    let _ = route.to_string();
                    let _ = route.matches_path("/fuzz/path");
                }
            }
        }
    }
});
