//! What users hand wrun: files read with a size cap, and excerpts of user
//! text for error messages.
//!
//! Every file wrun reads on a user's behalf (env files, `wrun.toml`,
//! `serve.toml`, token files, `auth.json`, app files, and the compose and
//! Kubernetes files to come) goes through [`read`] or [`read_to_string`] with
//! the [`Kind`] that names it and caps it. At most cap + 1 bytes are read, so
//! `/dev/zero`, a FIFO that never ends or a runaway generator stops at the
//! cap with an error naming the file and the cap, instead of growing wrun
//! until the kernel kills it. A regular file over the cap is refused by its
//! size before anything is read.
//!
//! Messages that echo what a user typed or wrote (an env line, a port spec,
//! an image reference) show an [`excerpt`]: the first [`EXCERPT_CHARS`]
//! characters, control characters escaped, and the full length, so a 300 MB
//! line costs a line of output, and a line holding terminal escapes cannot
//! repaint the user's terminal.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A kind of user file: what messages call it, and its size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// e.g. "env file", as in "env file `x` is larger than ...".
    pub what: &'static str,
    /// The largest accepted size, in bytes.
    pub limit: u64,
}

/// `--env-file`: 4 MiB, twice what Linux lets one process receive as its
/// whole environment and arguments by default (a quarter of an 8 MiB stack).
pub const ENV_FILE: Kind = Kind {
    what: "env file",
    limit: 4 << 20,
};

/// `wrun.toml`, a build manifest: 1 MiB (it names files, it does not hold them).
pub const BUILD_MANIFEST: Kind = Kind {
    what: "build manifest",
    limit: 1 << 20,
};

/// `serve.toml`: 4 MiB, thousands of tenants and functions.
pub const SERVE_CONFIG: Kind = Kind {
    what: "serve config",
    limit: 4 << 20,
};

/// A token file (`token_file`, `--admin-token-file`): 64 KiB; its first line
/// is the token.
pub const TOKEN_FILE: Kind = Kind {
    what: "token file",
    limit: 64 << 10,
};

/// `$WRUN_HOME/auth.json`, stored registry credentials: 1 MiB.
pub const AUTH_FILE: Kind = Kind {
    what: "credentials file",
    limit: 1 << 20,
};

/// A password on stdin (`wrun login --password-stdin`): 64 KiB.
pub const PASSWORD: Kind = Kind {
    what: "password",
    limit: 64 << 10,
};

/// An app (`.wasm`, `.wat`, `.cwasm`): 1 GiB, wasmparser's own limit on the
/// size of a module.
pub const APP_FILE: Kind = Kind {
    what: "app",
    limit: 1 << 30,
};

/// Why a user file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{what} `{}` is larger than the limit of {}", path.display(), Bytes(*limit))]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        limit: u64,
    },
    #[error("failed to read {what} `{}`: {}", path.display(), IoReason(reason))]
    Io {
        what: &'static str,
        path: PathBuf,
        reason: io::Error,
    },
    #[error("{what} `{}` is not UTF-8 text (line {line})", path.display())]
    NotUtf8 {
        what: &'static str,
        path: PathBuf,
        line: usize,
    },
}

impl ReadError {
    /// Whether the file does not exist (some files are optional).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { reason, .. } if reason.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads the file at `path`, of at most `kind.limit` bytes.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, ReadError> {
    let io_error = |reason| ReadError::Io {
        what: kind.what,
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    // A regular file's size is known: one over the cap is refused unread,
    // and one under it is read into a buffer of the right size.
    let size = file
        .metadata()
        .ok()
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len());
    if size.is_some_and(|size| size > kind.limit) {
        return Err(too_large(path, kind));
    }
    read_capped(file, size, kind.limit)
        .map_err(io_error)?
        .ok_or_else(|| too_large(path, kind))
}

/// [`read`], for UTF-8 text.
pub fn read_to_string(path: &Path, kind: Kind) -> Result<String, ReadError> {
    to_string(read(path, kind)?, path, kind)
}

/// Reads `reader` to its end, of at most `kind.limit` bytes; `name` stands
/// for the source in messages (e.g. `-` for stdin).
pub fn read_from(reader: impl Read, name: &str, kind: Kind) -> Result<Vec<u8>, ReadError> {
    read_capped(reader, None, kind.limit)
        .map_err(|reason| ReadError::Io {
            what: kind.what,
            path: name.into(),
            reason,
        })?
        .ok_or_else(|| too_large(Path::new(name), kind))
}

/// [`read_from`], for UTF-8 text.
pub fn read_string_from(reader: impl Read, name: &str, kind: Kind) -> Result<String, ReadError> {
    to_string(read_from(reader, name, kind)?, Path::new(name), kind)
}

/// Reads at most `limit + 1` bytes; `None` when there were more than `limit`.
fn read_capped(reader: impl Read, size: Option<u64>, limit: u64) -> io::Result<Option<Vec<u8>>> {
    // One byte over the size, so that `read_to_end` sees the end without
    // growing the buffer; a small start for streams of unknown length.
    let capacity = size
        .map_or(8 << 10, |size| size.saturating_add(1))
        .min(limit);
    let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

fn too_large(path: &Path, kind: Kind) -> ReadError {
    ReadError::TooLarge {
        what: kind.what,
        path: path.to_owned(),
        limit: kind.limit,
    }
}

fn to_string(bytes: Vec<u8>, path: &Path, kind: Kind) -> Result<String, ReadError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ReadError::NotUtf8 {
            what: kind.what,
            path: path.to_owned(),
            line,
        }
    })
}

/// The io error of a read, with "no such file" for the common case.
struct IoReason<'a>(&'a io::Error);

impl fmt::Display for IoReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind() {
            io::ErrorKind::NotFound => f.write_str("no such file"),
            io::ErrorKind::IsADirectory => f.write_str("it is a directory"),
            _ => fmt::Display::fmt(self.0, f),
        }
    }
}

/// A size as the caps are written: `4 MiB`, `64 KiB`, else bytes.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("GiB", 30u32), ("MiB", 20), ("KiB", 10)] {
            if self.0 >= 1u64 << shift && self.0.trailing_zeros() >= shift {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// How many characters of user text a message shows.
pub const EXCERPT_CHARS: usize = 64;

/// User text as a message shows it: see [`excerpt`].
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a>(&'a str, usize);

/// The first [`EXCERPT_CHARS`] characters of `text`, with control characters
/// escaped (`\n`, `\u{1b}`), and `… (N bytes)` when it is longer.
pub fn excerpt(text: &str) -> Excerpt<'_> {
    Excerpt(text, EXCERPT_CHARS)
}

/// [`excerpt`] with room for `chars` characters, for a parser's message
/// that quotes bits of its input (`unknown field `x`, expected one of ...`).
pub fn excerpt_of(text: &str, chars: usize) -> Excerpt<'_> {
    Excerpt(text, chars)
}

/// The 1-based line and column (in characters) of byte `offset` of `text`,
/// for a parser that reports byte spans.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = 1 + before.bytes().filter(|&b| b == b'\n').count();
    (line, 1 + before[line_start..].chars().count())
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == self.1 {
                return write!(f, "… ({} bytes)", self.0.len());
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SMALL: Kind = Kind {
        what: "test file",
        limit: 1 << 10,
    };

    #[test]
    fn files_up_to_the_cap_are_read_and_larger_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for len in [0, 1, 1023, 1024] {
            std::fs::write(&path, vec![b'a'; len]).unwrap();
            assert_eq!(read(&path, SMALL).unwrap().len(), len);
        }
        std::fs::write(&path, vec![b'a'; 1025]).unwrap();
        let e = read(&path, SMALL).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "test file `{}` is larger than the limit of 1 KiB",
                path.display()
            )
        );
        // A huge sparse file is refused by its size, unread.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 40).unwrap();
        assert!(matches!(
            read(&path, ENV_FILE),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn endless_streams_stop_at_the_cap() {
        for path in ["/dev/zero", "/dev/urandom"] {
            let e = read(Path::new(path), SMALL).unwrap_err();
            assert!(matches!(e, ReadError::TooLarge { .. }), "{path}: {e}");
            assert!(e.to_string().contains(path), "{e}");
        }
        let e = read_from(io::repeat(b'x'), "-", PASSWORD).unwrap_err();
        assert_eq!(
            e.to_string(),
            "password `-` is larger than the limit of 64 KiB"
        );
        assert_eq!(read_from(&b"abc"[..], "-", SMALL).unwrap(), b"abc");
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.env");
        let e = read(&missing, ENV_FILE).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            format!(
                "failed to read env file `{}`: no such file",
                missing.display()
            )
        );
        let e = read(dir.path(), ENV_FILE).unwrap_err();
        assert!(e.to_string().ends_with("it is a directory"), "{e}");
        let path = dir.path().join("bin");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"a\nb\n\xff\n").unwrap();
        let e = read_to_string(&path, SMALL).unwrap_err();
        assert!(e.to_string().ends_with("is not UTF-8 text (line 3)"), "{e}");
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("BAD NAME=2").to_string(), "BAD NAME=2");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact).to_string(), exact);
        let long = "é".repeat(300_000);
        let shown = excerpt(&long).to_string();
        assert_eq!(
            shown,
            format!("{}… (600000 bytes)", "é".repeat(EXCERPT_CHARS))
        );
        assert_eq!(
            excerpt("a\u{1b}[2Jb\nc").to_string(),
            "a\\u{1b}[2Jb\\nc",
            "control characters cannot reach the terminal"
        );
    }

    #[test]
    fn lines_and_columns() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 5));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn caps_print_in_binary_units() {
        assert_eq!(Bytes(4 << 20).to_string(), "4 MiB");
        assert_eq!(Bytes(64 << 10).to_string(), "64 KiB");
        assert_eq!(Bytes(1 << 30).to_string(), "1 GiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Bytes(3 << 19).to_string(), "1536 KiB");
    }
}
