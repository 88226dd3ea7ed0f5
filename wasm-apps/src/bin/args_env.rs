//! Prints what the guest was given: argv, the environment and its working directory.
//!
//! `args_env` prints `argv[i]=...` lines, then `env KEY=VALUE` lines (sorted), then
//! `cwd ...`. `args_env exit N` exits with code N after printing.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        println!("argv[{i}]={a}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        println!("env {k}={v}");
    }
    match std::env::current_dir() {
        Ok(d) => println!("cwd {}", d.display()),
        Err(e) => println!("cwd error: {e}"),
    }
    if args.get(1).map(String::as_str) == Some("exit") {
        let code = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
        std::process::exit(code);
    }
}
