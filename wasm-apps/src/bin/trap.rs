//! Traps: `trap` executes `unreachable` three calls deep (so the backtrace has
//! frames to show); `trap panic` panics; `trap stack` overflows the stack.
#[inline(never)]
fn innermost_function() {
    core::arch::wasm32::unreachable()
}

#[inline(never)]
fn middle_function() {
    innermost_function();
    std::hint::black_box(());
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(n + 1)) + 1)
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("panic") => panic!("the guest panicked on purpose"),
        Some("stack") => println!("{}", recurse(0)),
        _ => middle_function(),
    }
}
