//! `--env-file`: Docker's env-file format (parse_env_file).

#![no_main]

use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Result<Option<String>, ()> {
    match name.len() % 3 {
        0 => Ok(Some(format!("value of {name}"))),
        1 => Ok(None),
        _ => Err(()),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(vars) = wrun_host_api::parse_env_file(&text, "fuzz.env", &lookup) {
        for (name, value) in vars {
            // WASI cannot carry these: the parser must have refused them.
            assert!(!name.is_empty() && !name.contains(['=', '\0']));
            assert!(!value.contains('\0'));
        }
    }
});
