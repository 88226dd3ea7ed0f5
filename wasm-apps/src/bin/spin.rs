//! Never finishes on its own: `spin busy` burns CPU in a loop, `spin sleep` blocks
//! in a host call (sleep), `spin stdin` blocks reading stdin until it closes.
use std::io::Read;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "busy".into());
    println!("spinning: {mode}");
    match mode.as_str() {
        "sleep" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "stdin" => {
            let mut buf = Vec::new();
            let n = std::io::stdin().read_to_end(&mut buf).unwrap_or(0);
            println!("stdin closed after {n} bytes");
        }
        _ => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }
}
