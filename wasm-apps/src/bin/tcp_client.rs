//! A TCP client written with plain `std::net`.
//!
//! `tcp_client HOST:PORT MESSAGE` resolves HOST (a name on the app's
//! networks, `localhost`, or an address), connects, prints
//! `connected <local> -> <peer>`, sends MESSAGE, closes its sending side and
//! prints `reply: <what came back>`. `tcp_client HOST:PORT --send-mib N`
//! sends N MiB instead and prints the reply (a sink's byte count). Failures
//! print `error: <ErrorKind>: <message>` and exit 1. `tcp_client --open N`
//! opens up to N listening sockets and prints `opened K` and why it stopped.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

fn run(args: &[String]) -> std::io::Result<()> {
    let target = args.first().map(String::as_str).unwrap_or("localhost:80");
    let mut conn = TcpStream::connect(target)?;
    println!("connected {} -> {}", conn.local_addr()?, conn.peer_addr()?);
    if args.get(1).map(String::as_str) == Some("--send-mib") {
        let mib: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
        let block = vec![0x42u8; 1 << 20];
        for _ in 0..mib {
            conn.write_all(&block)?;
        }
    } else {
        conn.write_all(
            args.get(1)
                .map(String::as_str)
                .unwrap_or("hello")
                .as_bytes(),
        )?;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    println!("reply: {}", reply.trim_end());
    Ok(())
}

fn open_many(n: usize) {
    let mut held = Vec::new();
    while held.len() < n {
        match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => held.push(l),
            Err(e) => {
                println!("stopped: {:?}: {e}", e.kind());
                break;
            }
        }
    }
    println!("opened {}", held.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--open") {
        open_many(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1));
        return;
    }
    if let Err(e) = run(&args) {
        println!("error: {:?}: {e}", e.kind());
        std::process::exit(1);
    }
}
