//! Prints a greeting: the smallest useful guest, used for start-up benchmarks.
fn main() {
    println!("Hello from a wrun guest!");
}
