//! A small file tool for exercising volumes: `filetool COMMAND ARGS...`.
//!
//! Commands: cat PATH | write PATH TEXT | append PATH TEXT | ls DIR | rm PATH |
//! mkdir DIR | rmdir DIR | rename FROM TO | symlink TARGET LINK | readlink LINK |
//! hardlink FROM TO | truncate PATH LEN | touch PATH | stat PATH | pwd | stdin |
//! fill PATH MIB (write MIB MiB in 1 MiB writes) | drain PATH (read in 1 MiB reads) |
//! openmany DIR N (create and keep open up to N files in DIR; prints `opened K`
//! and, if it stopped early, `stopped: <ErrorKind>`; then checks it can still
//! open one once it closed them) | openloop PATH N (open and close PATH N times;
//! prints `opened N` and the time one open took on average, for benchmarks).
//!
//! Success exits 0. Failure prints `error: <ErrorKind>: <message>` on stderr and
//! exits 1, so tests can tell a refused operation from a crash.
use std::fs;
use std::io::{self, Read, Write};

fn run(args: &[String]) -> io::Result<()> {
    let arg = |i: usize| -> io::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "missing argument"))
    };
    let mut out = io::stdout().lock();
    match arg(0)? {
        "cat" => out.write_all(&fs::read(arg(1)?)?)?,
        "write" => fs::write(arg(1)?, arg(2)?)?,
        "append" => fs::OpenOptions::new()
            .append(true)
            .open(arg(1)?)?
            .write_all(arg(2)?.as_bytes())?,
        "ls" => {
            let mut names: Vec<String> = fs::read_dir(arg(1)?)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for n in names {
                writeln!(out, "{n}")?;
            }
        }
        "rm" => fs::remove_file(arg(1)?)?,
        "mkdir" => fs::create_dir(arg(1)?)?,
        "rmdir" => fs::remove_dir(arg(1)?)?,
        "rename" => fs::rename(arg(1)?, arg(2)?)?,
        // `soft_link` is the only stable way to make a symlink on WASI.
        #[allow(deprecated)]
        "symlink" => fs::soft_link(arg(1)?, arg(2)?)?,
        "readlink" => writeln!(out, "{}", fs::read_link(arg(1)?)?.display())?,
        "hardlink" => fs::hard_link(arg(1)?, arg(2)?)?,
        "truncate" => {
            let len = arg(2)?
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad length"))?;
            fs::OpenOptions::new()
                .write(true)
                .open(arg(1)?)?
                .set_len(len)?
        }
        "touch" => fs::File::open(arg(1)?)?.set_modified(std::time::SystemTime::UNIX_EPOCH)?,
        "stat" => {
            let m = fs::symlink_metadata(arg(1)?)?;
            let kind = if m.is_dir() {
                "dir"
            } else if m.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            writeln!(out, "{kind} {}", m.len())?
        }
        "pwd" => writeln!(out, "{}", std::env::current_dir()?.display())?,
        "stdin" => {
            io::copy(&mut io::stdin().lock(), &mut out)?;
        }
        "fill" => {
            let mib: usize = arg(2)?
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad size"))?;
            let block = vec![0x5au8; 1 << 20];
            let mut f = fs::File::create(arg(1)?)?;
            for _ in 0..mib {
                f.write_all(&block)?;
            }
            f.sync_all()?;
        }
        "drain" => {
            let mut f = fs::File::open(arg(1)?)?;
            let mut block = vec![0u8; 1 << 20];
            let mut total: u64 = 0;
            loop {
                let n = f.read(&mut block)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            writeln!(out, "{total}")?
        }
        "openloop" => {
            let n: u32 = arg(2)?
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad count"))?;
            let started = std::time::Instant::now();
            for _ in 0..n {
                drop(fs::File::open(arg(1)?)?);
            }
            let each = started.elapsed().as_nanos() / u128::from(n.max(1));
            writeln!(out, "opened {n}, {each} ns each")?;
        }
        "openmany" => {
            let n: usize = arg(2)?
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad count"))?;
            let mut files = Vec::new();
            let mut stopped = None;
            for i in 0..n {
                match fs::File::create(format!("{}/f{i}", arg(1)?)) {
                    Ok(f) => files.push(f),
                    Err(e) => {
                        stopped = Some(e);
                        break;
                    }
                }
            }
            writeln!(out, "opened {}", files.len())?;
            if let Some(e) = stopped {
                writeln!(out, "stopped: {:?}", e.kind())?;
            }
            files.clear();
            fs::File::open(format!("{}/f0", arg(1)?))?;
            writeln!(out, "reopened after closing")?;
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown command `{other}`"),
            ));
        }
    }
    out.flush()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error: {:?}: {e}", e.kind());
        std::process::exit(1);
    }
}
