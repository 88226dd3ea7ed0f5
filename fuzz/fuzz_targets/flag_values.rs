//! Command-line flag values, as clap hands them to wrun's value parsers:
//! `-v` (Volume::parse), `-p` (PortMapping::parse), `--allow-outbound`
//! (OutboundRule::parse, then the policy checks a guest's destinations
//! against it), `-e` (parse_env_arg), `--memory`, `--timeout` and
//! `--cpu-time`, and `--name`. The first byte picks the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wrun_host_api::http::OutboundHttp;
use wrun_host_api::net::{MAX_APP_NAME, OutboundRule, PortMapping, is_valid_name};
use wrun_host_api::{Volume, parse_env_arg};

/// A host environment whose answer depends on the name: set, unset, or set
/// but not UTF-8.
fn lookup(name: &str) -> Result<Option<String>, ()> {
    match name.len() % 3 {
        0 => Ok(Some(format!("value of {name}"))),
        1 => Ok(None),
        _ => Err(()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // clap gives value parsers UTF-8 strings (an `OsStr` that is not UTF-8
    // is refused before them).
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(volume) = Volume::parse(text) {
                let _ = volume.to_string();
            }
        }
        1 => {
            if let Ok(mappings) = PortMapping::parse(text) {
                assert!(!mappings.is_empty() && mappings.len() <= 1024);
                for m in mappings {
                    let _ = m.to_string();
                }
            }
        }
        2 => {
            // A rule, then (after a newline) a destination as a guest
            // would name it in a URL.
            let (rule, destination) = text.split_once('\n').unwrap_or((text, ""));
            if let Ok(rule) = OutboundRule::parse(rule) {
                let _ = rule.to_string();
                let port = destination.len() as u16;
                let _ = rule.allows_host(destination, port);
                if let Ok(uri) = destination.parse::<http::Uri>() {
                    let _ = OutboundHttp::new(vec![rule]).allows(&uri);
                }
            }
        }
        3 => {
            if let Ok(Some((name, value))) = parse_env_arg(text, &lookup) {
                // WASI cannot carry these: the parser must have refused them.
                assert!(!name.is_empty() && !name.contains(['=', '\0']));
                assert!(!value.contains('\0'));
            }
        }
        4 => {
            if let Ok(bytes) = wrun::fuzzing::parse_memory(text) {
                assert!(bytes > 0);
            }
        }
        5 => {
            if let Ok(duration) = wrun::fuzzing::parse_duration(text) {
                assert!(!duration.is_zero());
            }
        }
        _ => {
            let _ = is_valid_name(text, MAX_APP_NAME);
        }
    }
});
