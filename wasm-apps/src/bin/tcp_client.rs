//! A TCP client written with plain `std::net`.
//!
//! `tcp_client HOST:PORT MESSAGE` resolves HOST (a name on the app's
//! networks, `localhost`, or an address), connects, prints
//! `connected <local> -> <peer>`, sends MESSAGE, closes its sending side and
//! prints `reply: <what came back>`. `tcp_client HOST:PORT --send-mib N`
//! sends N MiB instead and prints the reply (a sink's byte count). Failures
//! print `error: <ErrorKind>: <message>` and exit 1.
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("error: {:?}: {e}", e.kind());
        std::process::exit(1);
    }
}
