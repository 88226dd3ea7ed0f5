//! Writes `flood MIB` mebibytes (default 100) of text to stdout, in 64 KiB writes.
use std::io::Write;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 << 10).collect();
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        if out.write_all(&chunk).is_err() {
            std::process::exit(1);
        }
    }
    let _ = out.flush();
}
