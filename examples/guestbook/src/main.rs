//! A guestbook kept in a file on a volume, to show what a wrun app sees.
//!
//! `guestbook sign NAME [MESSAGE...]` appends an entry to /data/guestbook.txt;
//! `guestbook read` prints the entries; `guestbook look` shows the app's view
//! of the host: its root directory, environment and arguments.
use std::fs;
use std::io::Write;
use std::process::ExitCode;

const BOOK: &str = "/data/guestbook.txt";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("sign") if args.len() > 2 => sign(&args[2], &args[3..].join(" ")),
        Some("read") | None => read(),
        Some("look") => look(&args),
        _ => {
            eprintln!("usage: guestbook sign NAME [MESSAGE...] | read | look");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestbook: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sign(name: &str, message: &str) -> std::io::Result<()> {
    let mut book = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(BOOK)?;
    let message = if message.is_empty() {
        "was here"
    } else {
        message
    };
    writeln!(book, "{name}: {message}")?;
    println!("signed the guestbook as {name}");
    Ok(())
}

fn read() -> std::io::Result<()> {
    match fs::read_to_string(BOOK) {
        Ok(text) => {
            let count = text.lines().count();
            println!(
                "{count} entr{} in {BOOK}:",
                if count == 1 { "y" } else { "ies" }
            );
            print!("{text}");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("the guestbook is empty; sign it with `guestbook sign NAME`");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn look(args: &[String]) -> std::io::Result<()> {
    println!("arguments: {args:?}");
    println!("environment: {:?}", std::env::vars().collect::<Vec<_>>());
    for dir in ["/", "/data", "/etc", ".."] {
        match fs::read_dir(dir) {
            Ok(entries) => {
                let names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                println!("{dir}: {names:?}");
            }
            Err(e) => println!("{dir}: {e}"),
        }
    }
    Ok(())
}
