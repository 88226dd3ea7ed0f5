//! A TCP echo server written with plain `std::net`.
//!
//! `echo_server [ADDR] [--count N] [--sink] [--wait-ms MS]`: waits MS
//! milliseconds (to let clients arrive before it listens), listens on ADDR (default
//! `0.0.0.0:80`), prints `listening on <local address>`, then serves
//! connections one after another, printing `accepted <peer> at <local>` for
//! each. It echoes every byte back until the client closes; with `--sink` it
//! instead reads everything and answers with the byte count. After N
//! connections (default: no limit) it exits 0.
use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--") && a.contains(':'))
        .cloned();
    let count: Option<usize> = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let sink = args.iter().any(|a| a == "--sink");
    let wait_ms: u64 = args
        .iter()
        .position(|a| a == "--wait-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(wait_ms));
    let listener = match TcpListener::bind(addr.as_deref().unwrap_or("0.0.0.0:80")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {:?}: {e}", e.kind());
            std::process::exit(1);
        }
    };
    println!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    let _ = std::io::stdout().flush();
    let mut buf = vec![0u8; 256 << 10];
    for (served, conn) in listener.incoming().enumerate() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let local = conn.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("accepted {peer} at {local}");
        let _ = std::io::stdout().flush();
        let mut total: u64 = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    if !sink && conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if sink {
            let _ = conn.write_all(format!("{total}\n").as_bytes());
        }
        drop(conn);
        if count.is_some_and(|c| served + 1 >= c) {
            break;
        }
    }
}
