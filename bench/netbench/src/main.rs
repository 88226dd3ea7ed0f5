//! Load generators for bench/net.sh.
//!
//! `netbench bulk ADDR MIB`: sends MIB mebibytes to an echo server on one
//! connection while reading the echo back, and prints the seconds it took.
//! `netbench connrate ADDR N`: opens N connections one after another, each
//! sending 16 bytes and reading them back, and prints connections per second.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

fn bulk(addr: &str, mib: usize) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..mib {
            writer.write_all(&block)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0usize;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        received += n;
    }
    sender
        .join()
        .map_err(|_| std::io::Error::other("sender panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    if received != mib << 20 {
        return Err(std::io::Error::other(format!(
            "echoed {received} of {} bytes",
            mib << 20
        )));
    }
    println!("{secs:.4}");
    Ok(())
}

fn connrate(addr: &str, n: usize) -> std::io::Result<()> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    for _ in 0..n {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        conn.write_all(b"0123456789abcdef")?;
        conn.shutdown(Shutdown::Write)?;
        let mut got = 0;
        loop {
            let k = conn.read(&mut buf)?;
            if k == 0 {
                break;
            }
            got += k;
        }
        if got != 16 {
            return Err(std::io::Error::other(format!("echoed {got} of 16 bytes")));
        }
    }
    println!("{:.0}", n as f64 / started.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0);
    let result = match args.get(1).map(String::as_str) {
        Some("bulk") => bulk(&args[2], num(3)),
        Some("connrate") => connrate(&args[2], num(3)),
        _ => Err(std::io::Error::other(
            "usage: netbench bulk ADDR MIB | connrate ADDR N",
        )),
    };
    if let Err(e) = result {
        eprintln!("netbench: {e}");
        std::process::exit(1);
    }
}
