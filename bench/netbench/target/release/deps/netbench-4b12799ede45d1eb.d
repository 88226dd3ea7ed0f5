/work/main/bench/netbench/target/release/deps/netbench-4b12799ede45d1eb.d: src/main.rs

/work/main/bench/netbench/target/release/deps/netbench-4b12799ede45d1eb: src/main.rs

src/main.rs:
