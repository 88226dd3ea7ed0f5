//! The `wrun` command line: parses, installs logging, dispatches to a
//! subcommand, prints the error chain and sets the exit code.

use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use wrun::commands::run::{RunCommand, ShorthandCommand};
use wrun::{commands, exit};

/// App-level virtualization for WebAssembly: run WASI apps isolated and
/// rootless, with volumes, limits and a compile cache.
#[derive(Parser)]
#[command(
    name = "wrun",
    version,
    propagate_version = true,
    after_help = "Shorthand: `wrun APP [OPTIONS] [-- ARGS...]` is `wrun run [OPTIONS] APP [ARGS...]`;\n\
                  options may come before or after APP there, guest arguments after `--`.\n\n\
                  Logging: set WRUN_LOG (e.g. `WRUN_LOG=debug`); default `warn`.\n\
                  State: $WRUN_HOME (default ~/.local/share/wrun) holds images, the compile cache and networks;\n\
                  the compile cache is bounded by WRUN_CACHE_SIZE (e.g. `512m`, `4g`; default 1g), least\n\
                  recently used apps going first; `wrun system df` and `wrun system prune` show and reclaim space;\n\
                  sockets of apps on networks live under $XDG_RUNTIME_DIR/wrun, or $WRUN_HOME/run when\n\
                  XDG_RUNTIME_DIR is unset."
)]
struct Wrun {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Run(Box<RunCommand>),
    Compile(commands::compile::CompileCommand),
    Network(commands::network::NetworkCommand),
    Serve(Box<commands::serve::ServeCommand>),
    Build(commands::build::BuildCommand),
    /// List images (as `wrun image ls`).
    Images(commands::image::ImagesCommand),
    Image(commands::image::ImageCommand),
    Tag(commands::image::TagCommand),
    /// Remove images (as `wrun image rm`).
    Rmi(commands::image::RmiCommand),
    Save(commands::image::SaveCommand),
    Load(commands::image::LoadCommand),
    Pull(commands::registry::PullCommand),
    Push(commands::registry::PushCommand),
    Login(commands::registry::LoginCommand),
    Logout(commands::registry::LogoutCommand),
    System(commands::system::SystemCommand),
    Daemon(commands::daemon::DaemonCommand),
    Ps(commands::container::PsCommand),
    Logs(commands::container::LogsCommand),
    Start(commands::container::StartCommand),
    Stop(commands::container::StopCommand),
    Restart(commands::container::RestartCommand),
    Kill(commands::container::KillCommand),
    Rm(commands::container::RmCommand),
    Wait(commands::container::WaitCommand),
    Inspect(commands::container::InspectCommand),
    Pause(commands::container::PauseCommand),
    Unpause(commands::container::UnpauseCommand),
    Rename(commands::container::RenameCommand),
    Port(commands::container::PortCommand),
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let command = match parse(args) {
        Ok(command) => command,
        Err(e) => {
            let code = if e.use_stderr() { exit::WRUN_ERROR } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging();
    // Descriptors are budgeted (see wrun_host_api::fds), not rationed by a
    // soft limit kept low for `select`, which wrun does not use.
    wrun_host_api::fds::raise_nofile_limit();
    let result = match command {
        Command::Run(run) => run.execute(),
        Command::Compile(compile) => compile.execute(),
        Command::Network(network) => network.execute(),
        Command::Serve(serve) => serve.execute(),
        Command::Build(c) => c.execute(),
        Command::Images(c) => c.execute(),
        Command::Image(c) => c.execute(),
        Command::Tag(c) => c.execute(),
        Command::Rmi(c) => c.execute(),
        Command::Save(c) => c.execute(),
        Command::Load(c) => c.execute(),
        Command::Pull(c) => c.execute(),
        Command::Push(c) => c.execute(),
        Command::Login(c) => c.execute(),
        Command::Logout(c) => c.execute(),
        Command::System(c) => c.execute(),
        Command::Daemon(c) => c.execute(),
        Command::Ps(c) => c.execute(),
        Command::Logs(c) => c.execute(),
        Command::Start(c) => c.execute(),
        Command::Stop(c) => c.execute(),
        Command::Restart(c) => c.execute(),
        Command::Kill(c) => c.execute(),
        Command::Rm(c) => c.execute(),
        Command::Wait(c) => c.execute(),
        Command::Inspect(c) => c.execute(),
        Command::Pause(c) => c.execute(),
        Command::Unpause(c) => c.execute(),
        Command::Rename(c) => c.execute(),
        Command::Port(c) => c.execute(),
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            let code = exit::code_for(&error);
            eprintln!("wrun: {}", exit::describe(&error));
            code
        }
    };
    // The guest's output went through these streams; flush before leaving,
    // since `exit` does not run destructors.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

/// Parses `wrun SUBCOMMAND ...`, or the shorthand `wrun [OPTIONS] APP [OPTIONS]
/// [-- ARGS]` when the first argument is not a subcommand (nor `--help` or
/// `--version`).
fn parse(args: Vec<OsString>) -> Result<Command, clap::Error> {
    let is_shorthand = match args.get(1).map(|a| a.to_str()) {
        None => false,
        Some(Some("help" | "-h" | "--help" | "-V" | "--version")) => false,
        Some(Some(first)) => Wrun::command().find_subcommand(first).is_none(),
        // A non-UTF-8 argument can only be an app's path.
        Some(None) => true,
    };
    if is_shorthand {
        // `wrun ps`: clap's error, which suggests the closest subcommand.
        if commands::run::is_mistyped_subcommand(&args[1]) {
            return Ok(Wrun::try_parse_from(args)?.command);
        }
        return Ok(Command::Run(Box::new(
            ShorthandCommand::try_parse_from(args)?.into(),
        )));
    }
    Ok(Wrun::try_parse_from(args)?.command)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WRUN_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}
