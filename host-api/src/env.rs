//! The guest's environment: only what the user lists, in Docker's spellings.
//!
//! `-e KEY=VALUE` sets a variable, `-e KEY` copies it from a lookup (wrun's own
//! environment) and is skipped when unset there, as Docker does; `--env-file`
//! reads Docker's env-file format. The host environment is never inherited.
//! Everything here is linear in the size of its input, and messages show an
//! [`excerpt`] of a bad entry, never the whole of it.

use crate::input::excerpt;
use std::collections::HashMap;

/// A malformed environment entry; `origin` says where it came from (`-e` or a
/// file and line). `entry` and `name` are excerpts of what was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("invalid environment variable `{entry}` ({origin}): the name is empty")]
    EmptyName { entry: String, origin: String },
    #[error("invalid environment variable `{entry}` ({origin}): the name contains whitespace")]
    Whitespace { entry: String, origin: String },
    #[error(
        "invalid environment variable `{entry}` ({origin}): names and values must not contain NUL"
    )]
    Nul { entry: String, origin: String },
    #[error(
        "environment variable `{name}` ({origin}): its value in wrun's environment is not UTF-8"
    )]
    NotUtf8 { name: String, origin: String },
}

/// Parses one `-e` argument. `lookup` supplies values for the `KEY` form; it is
/// called with the name and returns `Ok(None)` when the variable is unset and
/// `Err(())` when it is set but not UTF-8.
pub fn parse_env_arg(
    arg: &str,
    lookup: &dyn Fn(&str) -> Result<Option<String>, ()>,
) -> Result<Option<(String, String)>, EnvError> {
    parse_entry(arg, &|| "-e".to_owned(), lookup)
}

/// Parses Docker's env-file format: one `KEY=VALUE` or `KEY` per line; blank
/// lines and lines starting with `#` are skipped; leading whitespace is
/// trimmed; the value is taken verbatim (no quote processing). `name` is the
/// file's name for error messages.
pub fn parse_env_file(
    text: &str,
    name: &str,
    lookup: &dyn Fn(&str) -> Result<Option<String>, ()>,
) -> Result<Vec<(String, String)>, EnvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = || format!("{name}, line {}", index + 1);
        if let Some(var) = parse_entry(line, &origin, lookup)? {
            vars.push(var);
        }
    }
    Ok(vars)
}

/// One value per name, the last one given winning, at the place where the
/// name first appeared (as Docker merges `-e` over an image's environment).
/// Linear: 200,000 variables take milliseconds.
pub fn merge_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let vars = vars.into_iter();
    let mut merged: Vec<(String, String)> = Vec::with_capacity(vars.size_hint().0);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(vars.size_hint().0);
    for (name, value) in vars {
        match index.get(&name) {
            Some(&at) => merged[at].1 = value,
            None => {
                index.insert(name.clone(), merged.len());
                merged.push((name, value));
            }
        }
    }
    merged
}

fn parse_entry(
    entry: &str,
    origin: &dyn Fn() -> String,
    lookup: &dyn Fn(&str) -> Result<Option<String>, ()>,
) -> Result<Option<(String, String)>, EnvError> {
    let err = |make: fn(String, String) -> EnvError| make(excerpt(entry).to_string(), origin());
    let (name, value) = match entry.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (entry, None),
    };
    if name.is_empty() {
        return Err(err(|entry, origin| EnvError::EmptyName { entry, origin }));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(err(|entry, origin| EnvError::Whitespace { entry, origin }));
    }
    if entry.contains('\0') {
        return Err(err(|entry, origin| EnvError::Nul { entry, origin }));
    }
    let value = match value {
        Some(value) => value.to_owned(),
        None => match lookup(name) {
            Ok(Some(value)) => value,
            Ok(None) => return Ok(None),
            Err(()) => {
                return Err(EnvError::NotUtf8 {
                    name: excerpt(name).to_string(),
                    origin: origin(),
                });
            }
        },
    };
    Ok(Some((name.to_owned(), value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Result<Option<String>, ()> {
        match name {
            "HOST_SET" => Ok(Some("from-host".into())),
            "HOST_BINARY" => Err(()),
            _ => Ok(None),
        }
    }

    #[test]
    fn env_args() {
        assert_eq!(
            parse_env_arg("A=1", &lookup).unwrap(),
            Some(("A".into(), "1".into()))
        );
        assert_eq!(
            parse_env_arg("A=", &lookup).unwrap(),
            Some(("A".into(), "".into()))
        );
        assert_eq!(
            parse_env_arg("A=b=c", &lookup).unwrap(),
            Some(("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_env_arg("HOST_SET", &lookup).unwrap(),
            Some(("HOST_SET".into(), "from-host".into()))
        );
        assert_eq!(parse_env_arg("UNSET", &lookup).unwrap(), None);
        assert!(matches!(
            parse_env_arg("=x", &lookup),
            Err(EnvError::EmptyName { .. })
        ));
        assert!(matches!(
            parse_env_arg("A B=x", &lookup),
            Err(EnvError::Whitespace { .. })
        ));
        assert!(matches!(
            parse_env_arg("HOST_BINARY", &lookup),
            Err(EnvError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn env_file() {
        let text = "\u{feff}# comment\n\nA=1\n  B=two words \nHOST_SET\nUNSET\nC=\"quoted\"\n";
        let vars = parse_env_file(text, "app.env", &lookup).unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words ".into()),
                ("HOST_SET".into(), "from-host".into()),
                ("C".into(), "\"quoted\"".into()),
            ]
        );
        let err = parse_env_file("A=1\nBAD NAME=2\n", "app.env", &lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid environment variable `BAD NAME=2` (app.env, line 2): the name contains whitespace"
        );
    }

    #[test]
    fn long_entries_are_shown_as_excerpts() {
        let line = format!("BAD NAME={}", "x".repeat(3 << 20));
        let err = parse_env_file(&line, "big.env", &lookup).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 300, "{} bytes", text.len());
        assert!(
            text.contains(&format!("… ({} bytes)", line.len())) && text.contains("big.env, line 1"),
            "{text}"
        );
    }

    #[test]
    fn merged_env_keeps_the_last_value_at_the_first_place() {
        let vars = [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4"), ("B", "5")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            merge_env(vars),
            [("A", "3"), ("B", "5"), ("C", "4")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // Many variables, each given twice: one each, with the second value.
        let n = 200_000;
        let text: String = (0..n)
            .map(|i| format!("V{i}=first\n"))
            .chain((0..n).map(|i| format!("V{i}=second{i}\n")))
            .collect();
        let merged = merge_env(parse_env_file(&text, "many.env", &lookup).unwrap());
        assert_eq!(merged.len(), n);
        assert_eq!(merged[0], ("V0".to_owned(), "second0".to_owned()));
        assert_eq!(
            merged[n - 1],
            (format!("V{}", n - 1), format!("second{}", n - 1))
        );
    }
}
