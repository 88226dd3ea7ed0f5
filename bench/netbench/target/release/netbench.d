/work/main/bench/netbench/target/release/netbench: /work/main/bench/netbench/src/main.rs
