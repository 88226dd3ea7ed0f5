//! Allocates memory: `memhog MIB` grows the heap by MIB mebibytes and touches every
//! page. On failure Rust's allocator aborts (a trap), which is what most guests do.
//! `memhog MIB graceful` uses `try_reserve` and exits with code 3 instead.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let graceful = args.get(2).map(String::as_str) == Some("graceful");
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut block: Vec<u8> = Vec::new();
        if graceful {
            if let Err(e) = block.try_reserve_exact(1 << 20) {
                println!("allocation failed after {i} MiB: {e}");
                std::process::exit(3);
            }
            block.resize(1 << 20, 1);
        } else {
            block = vec![1u8; 1 << 20];
        }
        blocks.push(block);
    }
    let sum: usize = blocks.iter().map(|b| b[b.len() - 1] as usize).sum();
    println!("allocated {sum} MiB");
}
