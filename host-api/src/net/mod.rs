//! The guest's network: a virtual stack per instance.
//!
//! Every instance has its own loopback and its own port space, one virtual
//! IP on each network it joins, and a name other members resolve. Guest
//! sockets are virtual: binding a port only books it in the instance's
//! namespace. Host sockets exist only at the edges: a published port (`-p`)
//! whose host listener feeds the guest's listening socket, and outbound
//! connections that the policy allows. Connections between instances on a
//! network are Unix stream sockets in the network's rendezvous directory
//! (see `network`), so they work between separate `wrun` processes.
//!
//! This module implements `wasi:sockets` (tcp, udp, ip-name-lookup and their
//! create-socket interfaces) for components, shadowing wasmtime-wasi's
//! implementation; `instance-network` and `network` stay wasmtime-wasi's.

mod bindings;
mod lookup;
mod network;
mod policy;
mod publish;
mod runtime_dir;
mod stream;
mod tcp;
mod udp;

pub use network::{
    MAX_ALIASES, MAX_APP_NAME, NetworkError, NetworkInfo, NetworkStore, default_runtime_dir,
    is_valid_name,
};
pub use policy::{OutboundRule, RuleError};
pub use publish::{PortMapping, PortSpecError, Protocol};
pub use runtime_dir::{RuntimeDirError, prepare_runtime_dir};

use crate::fds::{FdBudget, FdGrant};
use network::Membership;
use policy::Policy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use stream::Conn;
use tokio::sync::mpsc;
use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;

/// What an instance may do on the network. The default is nothing but its
/// own loopback.
#[derive(Debug, Clone, Default)]
pub struct NetSpec {
    /// The instance's name, registered on every network it joins.
    pub name: Option<String>,
    pub publish: Vec<PortMapping>,
    pub networks: Vec<Attachment>,
    /// Where the networks' rendezvous directories live.
    pub runtime_dir: PathBuf,
    pub outbound: Vec<OutboundRule>,
}

/// A network an instance joins, and the aliases it is also known by there
/// (besides its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub info: NetworkInfo,
    pub aliases: Vec<String>,
}

/// An instance's place on one network, as it holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub network: NetworkInfo,
    pub ip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Publish(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// A port published on the host, as bound.
#[derive(Debug, Clone)]
pub struct PublishedPort {
    pub mapping: PortMapping,
    /// The host address actually bound (with the picked port, if any).
    pub host: SocketAddr,
}

/// One instance's network namespace. Dropping it releases every host port,
/// address and name it holds.
pub struct Namespace {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// The instance's host descriptors: each socket counts as one, and so
    /// does every further host socket one holds (a connection waiting in a
    /// listener's backlog, a rendezvous socket on a network).
    fds: Arc<FdBudget>,
    memberships: Vec<Membership>,
    policy: Policy,
    published: Vec<Published>,
    state: Mutex<State>,
}

struct Published {
    info: PublishedPort,
    socket: HostSocket,
}

enum HostSocket {
    Tcp(Arc<tokio::net::TcpListener>),
    Udp(Arc<tokio::net::UdpSocket>),
}

/// A connection delivered to a listening guest socket.
pub(crate) struct Incoming {
    pub(crate) conn: Conn,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// The descriptor of a connection queued for a listener, which becomes
    /// the accepted socket's (none for the connecting side, which has its
    /// socket's own).
    pub(crate) fd: FdGrant,
}

/// A datagram delivered to a bound guest UDP socket.
pub(crate) struct Datagram {
    pub(crate) data: bytes::Bytes,
    pub(crate) from: SocketAddr,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_ephemeral: u16,
    /// Booked ports: (protocol, address, port, owner).
    bindings: Vec<(Protocol, SocketAddr, u64)>,
    tcp_listeners: Vec<(SocketAddr, mpsc::Sender<Incoming>, u64)>,
    udp_sockets: Vec<(SocketAddr, mpsc::Sender<Datagram>, u64)>,
}

/// One of an instance's sockets: one descriptor of its budget.
pub(crate) struct SocketSlot {
    shared: Arc<Shared>,
    _fd: FdGrant,
}

impl SocketSlot {
    /// A new socket's descriptor; at the limit the guest sees
    /// `new-socket-limit` (`EMFILE`).
    pub(crate) fn take(shared: &Arc<Shared>) -> Result<SocketSlot, ErrorCode> {
        Ok(SocketSlot {
            shared: shared.clone(),
            _fd: shared.take_fd()?,
        })
    }

    /// The slot of an accepted connection: the descriptor it was queued with.
    pub(crate) fn accepted(shared: &Arc<Shared>, fd: FdGrant) -> SocketSlot {
        SocketSlot {
            shared: shared.clone(),
            _fd: fd,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// The first and last ephemeral port (Linux's default range).
const EPHEMERAL: (u16, u16) = (32768, 60999);

impl Namespace {
    /// Builds the namespace: binds every published host port and joins every
    /// network (taking an address and the name). `fds` is the instance's
    /// descriptor budget, which its sockets share with its files. Must run
    /// inside tokio.
    pub async fn start(spec: &NetSpec, fds: Arc<FdBudget>) -> Result<Namespace, NetError> {
        let mut memberships = Vec::new();
        for attachment in &spec.networks {
            memberships.push(Membership::join(
                &attachment.info,
                &spec.runtime_dir,
                spec.name.as_deref(),
                &attachment.aliases,
            )?);
        }
        let mut published = Vec::new();
        for mapping in &spec.publish {
            let addr = SocketAddr::new(mapping.host_ip, mapping.host_port);
            let socket = match mapping.protocol {
                Protocol::Tcp => bind_tcp_listener(addr).map(|l| HostSocket::Tcp(Arc::new(l))),
                Protocol::Udp => std::net::UdpSocket::bind(addr)
                    .and_then(|s| {
                        s.set_nonblocking(true)?;
                        tokio::net::UdpSocket::from_std(s)
                    })
                    .map(|s| HostSocket::Udp(Arc::new(s))),
            }
            .map_err(|e| NetError::Publish(publish::bind_error(mapping, &e)))?;
            let host = match &socket {
                HostSocket::Tcp(l) => l.local_addr(),
                HostSocket::Udp(s) => s.local_addr(),
            }
            .map_err(|e| NetError::Publish(publish::bind_error(mapping, &e)))?;
            published.push(Published {
                info: PublishedPort {
                    mapping: mapping.clone(),
                    host,
                },
                socket,
            });
        }
        let shared = Shared {
            fds,
            memberships,
            policy: Policy::new(spec.outbound.clone()),
            published,
            state: Mutex::new(State {
                next_ephemeral: EPHEMERAL.0,
                ..State::default()
            }),
        };
        Ok(Namespace {
            shared: Arc::new(shared),
        })
    }

    /// What in this namespace only a component could use, for refusing it
    /// to a core module (which has no sockets): e.g. "publishing `-p 8080:80`".
    pub fn needs_sockets(&self) -> Option<String> {
        if let Some(p) = self.shared.published.first() {
            let m = &p.info.mapping;
            return Some(format!(
                "publishing a port (`-p {}:{}/{}`)",
                m.host_port, m.guest_port, m.protocol
            ));
        }
        if let Some(m) = self.shared.memberships.first() {
            return Some(format!("joining network `{}`", m.info.name));
        }
        if self.shared.policy.has_rules() {
            return Some("--allow-outbound".to_owned());
        }
        None
    }

    /// The instance's descriptor budget.
    pub fn fd_budget(&self) -> &Arc<FdBudget> {
        &self.shared.fds
    }

    /// The published ports, as bound.
    pub fn published(&self) -> Vec<PublishedPort> {
        self.shared
            .published
            .iter()
            .map(|p| p.info.clone())
            .collect()
    }

    /// The address it holds on each network it joined.
    pub fn addresses(&self) -> Vec<Address> {
        self.shared
            .memberships
            .iter()
            .map(|m| Address {
                network: m.info.clone(),
                ip: m.ip,
            })
            .collect()
    }
}

fn bind_tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // The port can be published again as soon as the app exits, even with
    // connections still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // Connections that arrive before the guest listens wait here.
    socket.listen(1024)
}

/// The view of an instance's store that the socket host functions use.
pub struct NetView<'a> {
    pub ns: &'a Namespace,
    pub table: &'a mut ResourceTable,
}

struct VNet;

impl HasData for VNet {
    type Data<'a> = NetView<'a>;
}

/// Replaces wasmtime-wasi's `wasi:sockets` implementation in `linker` (which
/// must already hold wasmtime-wasi's p2 interfaces) with wrun's.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> NetView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    bindings::wasi::sockets::tcp::add_to_linker::<T, VNet>(linker, get)?;
    bindings::wasi::sockets::tcp_create_socket::add_to_linker::<T, VNet>(linker, get)?;
    bindings::wasi::sockets::udp::add_to_linker::<T, VNet>(linker, get)?;
    bindings::wasi::sockets::udp_create_socket::add_to_linker::<T, VNet>(linker, get)?;
    bindings::wasi::sockets::ip_name_lookup::add_to_linker::<T, VNet>(linker, get)?;
    linker.allow_shadowing(false);
    Ok(())
}

impl wasmtime_wasi::p2::bindings::sockets::network::Host for NetView<'_> {
    fn convert_error_code(
        &mut self,
        error: wasmtime_wasi::p2::SocketError,
    ) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        _: wasmtime::component::Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for NetView<'_> {
    fn drop(
        &mut self,
        this: wasmtime::component::Resource<wasmtime_wasi::p2::Network>,
    ) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// Locks `m`; a panic while it was held cannot leave these states torn.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first bytes of every connection and datagram between members of a
/// network: a magic pair (one for TCP, one for UDP) and who is sending.
pub(crate) const PEER_HEADER_LEN: usize = 2 + 4 + 2;

pub(crate) fn peer_header(magic: &[u8; 2], from: SocketAddr) -> [u8; PEER_HEADER_LEN] {
    let ip = match from.ip() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    let mut h = [0u8; PEER_HEADER_LEN];
    h[..2].copy_from_slice(magic);
    h[2..6].copy_from_slice(&ip);
    h[6..].copy_from_slice(&from.port().to_be_bytes());
    h
}

/// The sender named by a header `peer_header` wrote, if `bytes` starts with one.
pub(crate) fn parse_peer_header(magic: &[u8; 2], bytes: &[u8]) -> Option<SocketAddr> {
    let h = bytes.get(..PEER_HEADER_LEN)?;
    if h[..2] != magic[..] {
        return None;
    }
    let ip = Ipv4Addr::new(h[2], h[3], h[4], h[5]);
    Some(SocketAddr::new(
        IpAddr::V4(ip),
        u16::from_be_bytes([h[6], h[7]]),
    ))
}

/// A rendezvous socket file, removed when its socket goes away.
pub(crate) struct SocketFile(PathBuf);

impl SocketFile {
    /// Takes `path` for a socket about to be bound there. The address in the
    /// path is this instance's alone (it holds its lock), so a file already
    /// there was left by a dead process and is removed.
    pub(crate) fn claim(path: PathBuf) -> SocketFile {
        let _ = std::fs::remove_file(&path);
        SocketFile(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes a booking or registration from the namespace when dropped.
pub(crate) struct Guard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.bindings.retain(|b| b.2 != self.id);
        state.tcp_listeners.retain(|l| l.2 != self.id);
        state.udp_sockets.retain(|s| s.2 != self.id);
    }
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a connection or datagram to `addr` goes.
pub(crate) enum Route<'a> {
    /// This instance: its loopback or one of its own addresses.
    Local,
    /// Another member of a network this instance joined.
    Peer(&'a Membership, Ipv4Addr),
    /// A real host address that the outbound policy allows.
    Outbound,
    /// Anything else.
    Denied,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// One host descriptor for the instance, or `new-socket-limit`.
    pub(crate) fn take_fd(&self) -> Result<FdGrant, ErrorCode> {
        self.fds.take(1).map_err(|_| ErrorCode::NewSocketLimit)
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn memberships(&self) -> &[Membership] {
        &self.memberships
    }

    /// The networks on which a socket bound at `addr` can be reached: all
    /// of them for the unspecified IPv4 address, else the one whose virtual
    /// IP it is bound to. (Virtual networks are IPv4.)
    pub(crate) fn memberships_at(&self, addr: SocketAddr) -> impl Iterator<Item = &Membership> {
        self.memberships.iter().filter(move |m| {
            addr.is_ipv4() && (addr.ip().is_unspecified() || addr.ip() == IpAddr::V4(m.ip))
        })
    }

    fn is_own(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || matches!(ip, IpAddr::V4(v4) if self.memberships.iter().any(|m| m.ip == v4))
    }

    /// The address the instance is reached at when a socket is bound to the
    /// unspecified address: its first virtual IP, else loopback.
    pub(crate) fn primary_ip(&self, family_v6: bool) -> IpAddr {
        if family_v6 {
            return IpAddr::V6(Ipv6Addr::LOCALHOST);
        }
        IpAddr::V4(
            self.memberships
                .first()
                .map_or(Ipv4Addr::LOCALHOST, |m| m.ip),
        )
    }

    pub(crate) fn route(&self, dest: SocketAddr) -> Route<'_> {
        let ip = dest.ip();
        if self.is_own(ip) {
            return Route::Local;
        }
        if let IpAddr::V4(v4) = ip
            && let Some(m) = self.memberships.iter().find(|m| m.contains(v4))
        {
            return Route::Peer(m, v4);
        }
        if self.policy.allows(dest) {
            Route::Outbound
        } else {
            Route::Denied
        }
    }

    /// Books `addr` for `protocol`, picking an ephemeral port for port 0.
    pub(crate) fn bind(
        self: &Arc<Self>,
        protocol: Protocol,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, Guard), ErrorCode> {
        let ip = addr.ip();
        if !(ip.is_unspecified() || self.is_own(ip)) {
            return Err(ErrorCode::AddressNotBindable);
        }
        let mut state = self.lock();
        let conflicts = |state: &State, port: u16| {
            state.bindings.iter().any(|(p, b, _)| {
                *p == protocol
                    && b.port() == port
                    && b.is_ipv4() == addr.is_ipv4()
                    && (b.ip() == ip || b.ip().is_unspecified() || ip.is_unspecified())
            })
        };
        let port = if addr.port() == 0 {
            let span = EPHEMERAL.1 - EPHEMERAL.0 + 1;
            let mut found = None;
            for _ in 0..span {
                let candidate = state.next_ephemeral;
                state.next_ephemeral = if candidate >= EPHEMERAL.1 {
                    EPHEMERAL.0
                } else {
                    candidate + 1
                };
                if !conflicts(&state, candidate) {
                    found = Some(candidate);
                    break;
                }
            }
            found.ok_or(ErrorCode::AddressInUse)?
        } else if conflicts(&state, addr.port()) {
            return Err(ErrorCode::AddressInUse);
        } else {
            addr.port()
        };
        let bound = SocketAddr::new(ip, port);
        let id = Self::next_id(&mut state);
        state.bindings.push((protocol, bound, id));
        Ok((
            bound,
            Guard {
                shared: self.clone(),
                id,
            },
        ))
    }

    /// A fresh owner id for a booking or registration.
    fn next_id(state: &mut State) -> u64 {
        state.next_id += 1;
        state.next_id
    }

    /// Whether a socket bound at `bound` receives what is sent to `dest`.
    fn reaches(&self, bound: SocketAddr, dest: SocketAddr) -> bool {
        bound.port() == dest.port()
            && bound.is_ipv4() == dest.is_ipv4()
            && (bound.ip() == dest.ip() || (bound.ip().is_unspecified() && self.is_own(dest.ip())))
    }

    /// Registers a listening TCP socket bound at `addr`.
    pub(crate) fn register_listener(
        self: &Arc<Self>,
        addr: SocketAddr,
        tx: mpsc::Sender<Incoming>,
    ) -> Guard {
        let mut state = self.lock();
        let id = Self::next_id(&mut state);
        state.tcp_listeners.push((addr, tx, id));
        Guard {
            shared: self.clone(),
            id,
        }
    }

    /// The local listener a connection to `dest` reaches, if any.
    pub(crate) fn find_listener(&self, dest: SocketAddr) -> Option<mpsc::Sender<Incoming>> {
        let state = self.lock();
        let found = state
            .tcp_listeners
            .iter()
            .find(|(a, _, _)| self.reaches(*a, dest));
        found.map(|(_, tx, _)| tx.clone())
    }

    /// Registers a bound UDP socket at `addr`.
    pub(crate) fn register_udp(
        self: &Arc<Self>,
        addr: SocketAddr,
        tx: mpsc::Sender<Datagram>,
    ) -> Guard {
        let mut state = self.lock();
        let id = Self::next_id(&mut state);
        state.udp_sockets.push((addr, tx, id));
        Guard {
            shared: self.clone(),
            id,
        }
    }

    /// The local UDP socket a datagram to `dest` reaches, if any.
    pub(crate) fn find_udp(&self, dest: SocketAddr) -> Option<mpsc::Sender<Datagram>> {
        let state = self.lock();
        let found = state
            .udp_sockets
            .iter()
            .find(|(a, _, _)| self.reaches(*a, dest));
        found.map(|(_, tx, _)| tx.clone())
    }

    /// Published TCP listeners that feed guest port `port` when the guest
    /// listens on `addr`: for the unspecified address, loopback or one of its
    /// own addresses alike, so `0.0.0.0:80` and `127.0.0.1:80` both work.
    pub(crate) fn published_tcp(&self, addr: SocketAddr) -> Vec<Arc<tokio::net::TcpListener>> {
        self.published
            .iter()
            .filter(|p| p.info.mapping.guest_port == addr.port() && addr.is_ipv4())
            .filter_map(|p| match &p.socket {
                HostSocket::Tcp(l) => Some(l.clone()),
                HostSocket::Udp(_) => None,
            })
            .collect()
    }

    pub(crate) fn published_udp(&self, port: u16) -> Vec<Arc<tokio::net::UdpSocket>> {
        self.published
            .iter()
            .filter(|p| p.info.mapping.guest_port == port)
            .filter_map(|p| match &p.socket {
                HostSocket::Udp(s) => Some(s.clone()),
                HostSocket::Tcp(_) => None,
            })
            .collect()
    }
}

/// Checks a `wasi:sockets` address the way the WASI spec asks of a remote
/// address: a real port, not the unspecified, broadcast or multicast address.
pub(crate) fn check_remote(addr: SocketAddr) -> Result<(), ErrorCode> {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(ErrorCode::InvalidArgument);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_headers_round_trip() {
        let from: SocketAddr = "10.89.0.3:32768".parse().unwrap();
        let h = peer_header(b"w1", from);
        assert_eq!(parse_peer_header(b"w1", &h), Some(from));
        assert_eq!(
            parse_peer_header(b"u1", &h),
            None,
            "TCP and UDP headers differ"
        );
        assert_eq!(parse_peer_header(b"w1", &h[..5]), None, "too short");
    }

    #[test]
    fn remote_addresses_are_checked() {
        assert!(check_remote("10.0.0.1:80".parse().unwrap()).is_ok());
        for bad in [
            "10.0.0.1:0",
            "0.0.0.0:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "[::]:80",
        ] {
            assert!(check_remote(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }
}
