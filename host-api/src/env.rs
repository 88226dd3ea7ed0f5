//! The guest's environment: only what the user lists, in Docker's spellings.
//!
//! `-e KEY=VALUE` sets a variable, `-e KEY` copies it from a lookup (wrun's own
//! environment) and is skipped when unset there, as Docker does; `--env-file`
//! reads Docker's env-file format. The host environment is never inherited.

/// A malformed environment entry; `origin` says where it came from (`-e` or a
/// file and line).
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
    parse_entry(arg, "-e", lookup)
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
        let origin = format!("{name}, line {}", index + 1);
        if let Some(var) = parse_entry(line, &origin, lookup)? {
            vars.push(var);
        }
    }
    Ok(vars)
}

fn parse_entry(
    entry: &str,
    source: &str,
    lookup: &dyn Fn(&str) -> Result<Option<String>, ()>,
) -> Result<Option<(String, String)>, EnvError> {
    let err = |make: fn(String, String) -> EnvError| make(entry.to_owned(), source.to_owned());
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
                    name: name.to_owned(),
                    origin: source.to_owned(),
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
}
