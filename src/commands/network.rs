//! `wrun network`: create, list and remove virtual networks.

use crate::common::wrun_home;
use anyhow::Context as _;
use wrun_host_api::net::{NetworkStore, default_runtime_dir};

/// Manage virtual networks: apps on the same network reach each other by
/// name (`--name`) or address, also across separate `wrun run` processes;
/// apps on different networks cannot.
#[derive(clap::Args)]
pub struct NetworkCommand {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Create a network.
    Create {
        /// The network's name: letters, digits, `_`, `.`, `-`.
        name: String,
        /// Its IPv4 /24 subnet [default: the first free 10.89.N.0/24].
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks that no running app uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Show a network's details.
    Inspect { name: String },
}

impl NetworkCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let home = wrun_home().context("no home directory and no WRUN_HOME")?;
        let store = NetworkStore::new(&home, &default_runtime_dir(&home));
        match self.action {
            Action::Create { name, subnet } => {
                let info = store.create(&name, subnet.as_deref())?;
                println!("{}", info.name);
            }
            Action::Ls { quiet } => {
                let networks = store.list()?;
                if quiet {
                    for n in &networks {
                        println!("{}", n.name);
                    }
                } else {
                    println!("{:<14}{:<24}{:<18}APPS", "NETWORK ID", "NAME", "SUBNET");
                    for n in &networks {
                        let subnet = format!("{}/24", n.subnet);
                        println!(
                            "{:<14}{:<24}{:<18}{}",
                            n.id,
                            n.name,
                            subnet,
                            store.members(n)
                        );
                    }
                }
            }
            Action::Rm { names } => {
                // Like `docker network rm`: remove what can be, report the rest.
                let mut failed = None;
                for name in names {
                    match store.remove(&name) {
                        Ok(info) => println!("{}", info.name),
                        Err(e) => {
                            eprintln!("wrun: {e}");
                            failed = Some(crate::exit::WRUN_ERROR);
                        }
                    }
                }
                return Ok(failed.unwrap_or(0));
            }
            Action::Inspect { name } => {
                let n = store.get(&name)?;
                println!("name:    {}", n.name);
                println!("id:      {}", n.id);
                println!("subnet:  {}/24", n.subnet);
                println!(
                    "gateway: none (apps reach only each other and what --allow-outbound permits)"
                );
                println!("apps:    {}", store.members(&n));
            }
        }
        Ok(0)
    }
}
