//! What a container was created with, as the daemon keeps it: every front
//! end's request (flags, Docker JSON, a compose service) becomes one of
//! these, and each start turns it into a [`ContainerSpec`](super::ContainerSpec)
//! the same way.

use super::logs::LogOptions;
use super::restart::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use wrun_host_api::net::PortMapping;

/// Where a container's app comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// An image of the local store: the name as the client gave it, and the
    /// digest of the manifest it named at create time (what runs, even if
    /// the name moves to another image later, as Docker).
    Image { reference: String, digest: String },
    /// A `.wasm` or `.wat` file (an absolute path).
    File { path: PathBuf },
}

/// A directory mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    /// The absolute guest path.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "source", rename_all = "lowercase")]
pub enum MountSource {
    /// A host directory (an absolute path).
    Bind(PathBuf),
    /// A named volume, created on first use.
    Volume(String),
}

/// A container's configuration, fixed at create time (only its name can
/// change, by rename, and its networks, by connect and disconnect).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub name: String,
    pub origin: Origin,
    /// Arguments after argv[0]; `None` keeps the image's.
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Guest paths to give an anonymous volume of their own at create (the
    /// image's volume points not covered by a mount are added); once made,
    /// they are in `mounts` and their names in `anonymous_volumes`.
    #[serde(default)]
    pub anonymous: Vec<String>,
    /// The anonymous volumes made for it: removed with it by `rm -v` and
    /// `--rm`, as Docker's.
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    pub workdir: Option<String>,
    #[serde(with = "ports")]
    pub publish: Vec<PortMapping>,
    /// Publish every port the image exposes (`-P`).
    pub publish_all: bool,
    /// wrun virtual networks it joins, by name (changed by `network
    /// connect` and `disconnect` while it is not running).
    pub networks: Vec<String>,
    /// Its aliases on each network, besides its name.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    pub memory: Option<u64>,
    /// CPU quota in cores (`--cpus`).
    pub cpus: Option<f64>,
    /// Relative CPU weight against other busy containers (`--cpu-shares`,
    /// 1024 when unset).
    pub cpu_shares: Option<u64>,
    /// Host descriptors it may hold (`--ulimit nofile`).
    pub max_fds: Option<usize>,
    pub restart: RestartPolicy,
    /// Removed when it exits (`--rm`).
    pub auto_remove: bool,
    pub labels: BTreeMap<String, String>,
    pub log: LogOptions,
    /// Its stdin stays open for an attached client (`-i`).
    pub open_stdin: bool,
    /// Its stdin closes when the first attached client's input ends
    /// (Docker's `StdinOnce`, which `docker run -i` sets).
    #[serde(default)]
    pub stdin_once: bool,
    pub tty: bool,
    /// Seconds `stop` waits before it kills (Docker's default: 10).
    pub stop_timeout: Option<u64>,
}

impl ContainerConfig {
    /// A configuration with Docker's defaults for `origin`.
    pub fn new(name: String, origin: Origin) -> ContainerConfig {
        ContainerConfig {
            name,
            origin,
            args: None,
            env: Vec::new(),
            mounts: Vec::new(),
            anonymous: Vec::new(),
            anonymous_volumes: Vec::new(),
            workdir: None,
            publish: Vec::new(),
            publish_all: false,
            networks: Vec::new(),
            aliases: BTreeMap::new(),
            memory: None,
            cpus: None,
            cpu_shares: None,
            max_fds: None,
            restart: RestartPolicy::No,
            auto_remove: false,
            labels: BTreeMap::new(),
            log: LogOptions::default(),
            open_stdin: false,
            stdin_once: false,
            tty: false,
            stop_timeout: None,
        }
    }

    /// What the container runs, as a client shows it: the image's name or
    /// the file's path.
    pub fn image_name(&self) -> String {
        match &self.origin {
            Origin::Image { reference, .. } => reference.clone(),
            Origin::File { path } => path.display().to_string(),
        }
    }
}

/// Port mappings as `{"host_ip","host_port","guest_port","protocol"}`.
mod ports {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::net::IpAddr;
    use wrun_host_api::net::{PortMapping, Protocol};

    #[derive(Serialize, Deserialize)]
    struct Port {
        host_ip: IpAddr,
        host_port: u16,
        guest_port: u16,
        protocol: String,
    }

    pub fn serialize<S: Serializer>(ports: &[PortMapping], s: S) -> Result<S::Ok, S::Error> {
        let ports: Vec<Port> = ports
            .iter()
            .map(|p| Port {
                host_ip: p.host_ip,
                host_port: p.host_port,
                guest_port: p.guest_port,
                protocol: p.protocol.to_string(),
            })
            .collect();
        ports.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortMapping>, D::Error> {
        Vec::<Port>::deserialize(d)?
            .into_iter()
            .map(|p| {
                let protocol = match p.protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "`{other}` is not a protocol (tcp or udp)"
                        )));
                    }
                };
                Ok(PortMapping {
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    guest_port: p.guest_port,
                    protocol,
                })
            })
            .collect()
    }
}
