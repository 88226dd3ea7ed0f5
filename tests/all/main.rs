//! End-to-end tests: each spawns the real `wrun` binary and checks what a
//! user sees (output, exit codes, files on disk).

#[macro_use]
mod support;

mod cache;
mod cli;
mod crash;
mod daemon;
mod daemon_abuse;
mod daemon_cli;
mod daemon_cpu;
mod daemon_events;
mod daemon_images;
mod daemon_networks;
mod daemon_stdin;
mod daemon_tls;
mod daemon_volumes;
mod env;
mod images;
mod inputs;
mod limits;
mod net;
mod p3;
mod registry;
mod serve;
mod stdio;
mod system;
mod volumes;
