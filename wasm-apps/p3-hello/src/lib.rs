//! A WASI 0.3 command: exports only the async `wasi:cli/run@0.3.0` (no 0.2
//! `run`, no `_start`), so a runner can only run it as a 0.3 component.
//! Prints a greeting through the 0.3 `wasi:cli/stdout` stream, then returns
//! `ok`, or `err` when given the argument `fail`.

wit_bindgen::generate!({
    path: "wit",
    world: "wrun:p3-hello/p3-hello",
    generate_all,
});

use exports::wasi::cli::run::Guest;
use wasi::cli::{environment, stdout};

struct Command;

impl Guest for Command {
    async fn run() -> Result<(), ()> {
        let (mut tx, rx) = wit_stream::new::<u8>();
        let written = stdout::write_via_stream(rx);
        let unwritten = tx.write_all(b"hello from wasi 0.3\n".to_vec()).await;
        // Closing the stream lets the host finish the write and report it.
        drop(tx);
        written.await.map_err(|_| ())?;
        if !unwritten.is_empty() {
            return Err(());
        }
        if environment::get_arguments()
            .iter()
            .skip(1)
            .any(|a| a == "fail")
        {
            return Err(());
        }
        Ok(())
    }
}

export!(Command);
