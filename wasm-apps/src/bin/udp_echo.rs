//! A UDP echo server and client written with plain `std::net`.
//!
//! `udp_echo serve [ADDR] [--count N]` binds ADDR (default `0.0.0.0:53`),
//! prints `udp listening on <address>` and sends every datagram back to its
//! sender, printing `echoed <n> bytes to <peer>`; it exits after N datagrams.
//! `udp_echo send HOST:PORT MESSAGE` sends MESSAGE from a fresh socket and
//! prints `reply from <peer>: <reply>`, or `error: ...` (exit 1) when no
//! reply comes within two seconds.
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn serve(args: &[String]) -> std::io::Result<()> {
    let addr = args
        .iter()
        .find(|a| a.contains(':'))
        .map(String::as_str)
        .unwrap_or("0.0.0.0:53");
    let count: Option<usize> = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let socket = UdpSocket::bind(addr)?;
    println!("udp listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65536];
    let mut served = 0;
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], peer)?;
        println!("echoed {n} bytes to {peer}");
        served += 1;
        if count.is_some_and(|c| served >= c) {
            return Ok(());
        }
    }
}

fn send(args: &[String]) -> std::io::Result<()> {
    let target = args.first().map(String::as_str).unwrap_or("localhost:53");
    let message = args.get(1).map(String::as_str).unwrap_or("ping");
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.send_to(message.as_bytes(), target)?;
    // wasi-libc has no SO_RCVTIMEO: wait by polling a non-blocking socket.
    socket.set_nonblocking(true)?;
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                println!("reply from {peer}: {}", String::from_utf8_lossy(&buf[..n]));
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no reply within 2s",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("send") => send(&args[1..]),
        _ => Err(std::io::Error::other(
            "usage: udp_echo serve [ADDR] | send HOST:PORT MESSAGE",
        )),
    };
    if let Err(e) = result {
        println!("error: {:?}: {e}", e.kind());
        std::process::exit(1);
    }
}
