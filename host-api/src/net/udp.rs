//! `wasi:sockets/udp` over the instance's virtual network.
//!
//! A bound guest socket has an inbox fed by: datagrams from the same
//! instance, datagrams from other members of its networks (Unix datagram
//! sockets in the rendezvous directory), datagrams from clients of a
//! published UDP port, and replies to allowed outbound traffic. Sending
//! routes each datagram the same way back. As on a real network, a datagram
//! nobody is waiting for is dropped.

use super::bindings::wasi::sockets::{udp, udp_create_socket};
use super::{
    AbortOnDrop, Datagram, Guard, NetView, PEER_HEADER_LEN, Route, Shared, SocketFile, SocketSlot,
    check_remote, lock, parse_peer_header, peer_header,
};
use crate::fds::FdGrant;
use crate::net::publish::Protocol;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use wasmtime::component::Resource;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::{DynPollable, Pollable, SocketResult};

/// Datagrams queued for a guest socket before further ones are dropped.
const INBOX: usize = 512;
/// Datagrams one `send` may carry.
const SEND_PERMIT: u64 = 64;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65507;
/// Clients of published ports remembered for replies, per instance.
const MAX_CLIENTS: usize = 4096;
/// The magic of a datagram's header between members (see `peer_header`).
const HEADER_MAGIC: &[u8; 2] = b"u1";

pub struct UdpSocket {
    ns: Arc<Shared>,
    _slot: SocketSlot,
    family: IpAddressFamily,
    bound: Option<Bound>,
    bind_in_progress: bool,
    remote: Option<SocketAddr>,
    hop_limit: u8,
    receive_buffer: u64,
    send_buffer: u64,
}

struct Bound {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    tx: mpsc::Sender<Datagram>,
    clients: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>>,
    outbound: Arc<Mutex<Option<Outbound>>>,
    _guards: Vec<Guard>,
    _tasks: Vec<AbortOnDrop>,
    _files: Vec<SocketFile>,
    /// The rendezvous sockets' descriptors.
    _fds: Vec<FdGrant>,
}

/// A real host socket for allowed outbound traffic, with its reply reader.
struct Outbound {
    socket: Arc<tokio::net::UdpSocket>,
    _reader: AbortOnDrop,
    _fd: FdGrant,
}

struct Inbox {
    rx: mpsc::Receiver<Datagram>,
    pending: VecDeque<Datagram>,
}

pub struct IncomingDatagrams {
    inbox: Arc<Mutex<Inbox>>,
    remote: Option<SocketAddr>,
}

pub struct OutgoingDatagrams {
    ns: Arc<Shared>,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    v6: bool,
    tx: mpsc::Sender<Datagram>,
    clients: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>>,
    outbound: Arc<Mutex<Option<Outbound>>>,
    /// The unbound socket datagrams to network peers leave from, with its
    /// descriptor.
    unix: Option<(std::os::unix::net::UnixDatagram, FdGrant)>,
    permit: u64,
}

impl UdpSocket {
    fn is_v6(&self) -> bool {
        matches!(self.family, IpAddressFamily::Ipv6)
    }

    fn bind(&self, addr: SocketAddr) -> Result<Bound, ErrorCode> {
        let (addr, guard) = self.ns.bind(Protocol::Udp, addr)?;
        let (tx, rx) = mpsc::channel(INBOX);
        let registration = self.ns.register_udp(addr, tx.clone());
        let clients = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = Vec::new();
        let mut files = Vec::new();
        let mut fds = Vec::new();
        for m in self.ns.memberships_at(addr) {
            fds.push(self.ns.take_fd()?);
            let file = SocketFile::claim(m.udp_path(m.ip, addr.port()));
            let socket = UnixDatagram::bind(file.path()).map_err(ErrorCode::from)?;
            files.push(file);
            tasks.push(AbortOnDrop(tokio::spawn(receive_peers(socket, tx.clone()))));
        }
        if addr.is_ipv4() {
            for host in self.ns.published_udp(addr.port()) {
                tasks.push(AbortOnDrop(tokio::spawn(receive_published(
                    host,
                    tx.clone(),
                    clients.clone(),
                ))));
            }
        }
        Ok(Bound {
            addr,
            inbox: Arc::new(Mutex::new(Inbox {
                rx,
                pending: VecDeque::new(),
            })),
            tx,
            clients,
            outbound: Arc::new(Mutex::new(None)),
            _guards: vec![guard, registration],
            _tasks: tasks,
            _files: files,
            _fds: fds,
        })
    }
}

async fn receive_peers(socket: UnixDatagram, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; PEER_HEADER_LEN + MAX_DATAGRAM];
    loop {
        let Ok(n) = socket.recv(&mut buf).await else {
            continue;
        };
        let Some(from) = parse_peer_header(HEADER_MAGIC, &buf[..n]) else {
            continue;
        };
        let data = Bytes::copy_from_slice(&buf[PEER_HEADER_LEN..n]);
        let _ = tx.try_send(Datagram { data, from });
    }
}

async fn receive_published(
    socket: Arc<tokio::net::UdpSocket>,
    tx: mpsc::Sender<Datagram>,
    clients: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        {
            // Replies to this client go back out through the same port.
            let mut clients = lock(&clients);
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&from) {
                clients.clear();
            }
            clients.insert(from, socket.clone());
        }
        let _ = tx.try_send(Datagram {
            data: Bytes::copy_from_slice(&buf[..n]),
            from,
        });
    }
}

async fn receive_outbound(socket: Arc<tokio::net::UdpSocket>, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let _ = tx.try_send(Datagram {
            data: Bytes::copy_from_slice(&buf[..n]),
            from,
        });
    }
}

impl udp_create_socket::Host for NetView<'_> {
    fn create_udp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        let slot = SocketSlot::take(&self.ns.shared)?;
        let socket = UdpSocket {
            ns: self.ns.shared.clone(),
            _slot: slot,
            family,
            bound: None,
            bind_in_progress: false,
            remote: None,
            hop_limit: 64,
            receive_buffer: 208 << 10,
            send_buffer: 208 << 10,
        };
        Ok(self.table.push(socket)?)
    }
}

impl udp::Host for NetView<'_> {}

impl udp::HostUdpSocket for NetView<'_> {
    fn start_bind(
        &mut self,
        this: Resource<UdpSocket>,
        network: Resource<Network>,
        local: IpSocketAddress,
    ) -> SocketResult<()> {
        self.table.get(&network)?;
        let socket = self.table.get_mut(&this)?;
        let local = SocketAddr::from(local);
        if socket.bind_in_progress {
            return Err(ErrorCode::ConcurrencyConflict.into());
        }
        if socket.bound.is_some() {
            return Err(ErrorCode::InvalidState.into());
        }
        if local.is_ipv6() != socket.is_v6() {
            return Err(ErrorCode::InvalidArgument.into());
        }
        socket.bound = Some(socket.bind(local)?);
        socket.bind_in_progress = true;
        Ok(())
    }

    fn finish_bind(&mut self, this: Resource<UdpSocket>) -> SocketResult<()> {
        let socket = self.table.get_mut(&this)?;
        if !socket.bind_in_progress {
            return Err(ErrorCode::NotInProgress.into());
        }
        socket.bind_in_progress = false;
        Ok(())
    }

    fn stream(
        &mut self,
        this: Resource<UdpSocket>,
        remote: Option<IpSocketAddress>,
    ) -> SocketResult<(Resource<IncomingDatagrams>, Resource<OutgoingDatagrams>)> {
        let socket = self.table.get_mut(&this)?;
        let v6 = socket.is_v6();
        let Some(bound) = socket.bound.as_ref().filter(|_| !socket.bind_in_progress) else {
            return Err(ErrorCode::InvalidState.into());
        };
        let remote = remote.map(SocketAddr::from);
        if let Some(remote) = remote {
            if remote.is_ipv6() != v6 {
                return Err(ErrorCode::InvalidArgument.into());
            }
            check_remote(remote)?;
        }
        let incoming = IncomingDatagrams {
            inbox: bound.inbox.clone(),
            remote,
        };
        let local = if bound.addr.ip().is_unspecified() {
            SocketAddr::new(
                match remote {
                    Some(r) if r.ip().is_loopback() => r.ip(),
                    _ => socket.ns.primary_ip(v6),
                },
                bound.addr.port(),
            )
        } else {
            bound.addr
        };
        let outgoing = OutgoingDatagrams {
            ns: socket.ns.clone(),
            local,
            remote,
            v6,
            tx: bound.tx.clone(),
            clients: bound.clients.clone(),
            outbound: bound.outbound.clone(),
            unix: None,
            permit: 0,
        };
        socket.remote = remote;
        let incoming = self.table.push_child(incoming, &this)?;
        let outgoing = self.table.push_child(outgoing, &this)?;
        Ok((incoming, outgoing))
    }

    fn local_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        let socket = self.table.get(&this)?;
        let bound = socket.bound.as_ref().ok_or(ErrorCode::InvalidState)?;
        Ok(bound.addr.into())
    }

    fn remote_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        let socket = self.table.get(&this)?;
        Ok(socket.remote.ok_or(ErrorCode::InvalidState)?.into())
    }

    fn address_family(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.table.get(&this)?.family)
    }

    fn unicast_hop_limit(&mut self, this: Resource<UdpSocket>) -> SocketResult<u8> {
        Ok(self.table.get(&this)?.hop_limit)
    }

    fn set_unicast_hop_limit(&mut self, this: Resource<UdpSocket>, value: u8) -> SocketResult<()> {
        if value == 0 {
            return Err(ErrorCode::InvalidArgument.into());
        }
        self.table.get_mut(&this)?.hop_limit = value;
        Ok(())
    }

    fn receive_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.receive_buffer)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<UdpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        if value == 0 {
            return Err(ErrorCode::InvalidArgument.into());
        }
        self.table.get_mut(&this)?.receive_buffer = value;
        Ok(())
    }

    fn send_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.send_buffer)
    }

    fn set_send_buffer_size(&mut self, this: Resource<UdpSocket>, value: u64) -> SocketResult<()> {
        if value == 0 {
            return Err(ErrorCode::InvalidArgument.into());
        }
        self.table.get_mut(&this)?.send_buffer = value;
        Ok(())
    }

    fn subscribe(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[async_trait]
impl Pollable for UdpSocket {
    async fn ready(&mut self) {}
}

impl udp::HostIncomingDatagramStream for NetView<'_> {
    fn receive(
        &mut self,
        this: Resource<IncomingDatagrams>,
        max: u64,
    ) -> SocketResult<Vec<udp::IncomingDatagram>> {
        let stream = self.table.get(&this)?;
        let mut inbox = lock(&stream.inbox);
        let mut out = Vec::new();
        while (out.len() as u64) < max {
            let next = match inbox.pending.pop_front() {
                Some(d) => d,
                None => match inbox.rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => break,
                },
            };
            // A connected socket only hears from its peer.
            if stream.remote.is_some_and(|r| r != next.from) {
                continue;
            }
            out.push(udp::IncomingDatagram {
                data: next.data.to_vec(),
                remote_address: next.from.into(),
            });
        }
        Ok(out)
    }

    fn subscribe(
        &mut self,
        this: Resource<IncomingDatagrams>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    fn drop(&mut self, this: Resource<IncomingDatagrams>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[async_trait]
impl Pollable for IncomingDatagrams {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| {
            let mut inbox = lock(&self.inbox);
            if !inbox.pending.is_empty() {
                return Poll::Ready(());
            }
            match inbox.rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => {
                    inbox.pending.push_back(d);
                    Poll::Ready(())
                }
                Poll::Ready(None) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl OutgoingDatagrams {
    fn send_one(&mut self, datagram: udp::OutgoingDatagram) -> Result<(), ErrorCode> {
        let dest = match (datagram.remote_address.map(SocketAddr::from), self.remote) {
            (Some(d), Some(r)) if d != r => return Err(ErrorCode::InvalidArgument),
            (Some(d), _) => d,
            (None, Some(r)) => r,
            (None, None) => return Err(ErrorCode::InvalidArgument),
        };
        if dest.is_ipv6() != self.v6 {
            return Err(ErrorCode::InvalidArgument);
        }
        check_remote(dest)?;
        if datagram.data.len() > MAX_DATAGRAM {
            return Err(ErrorCode::DatagramTooLarge);
        }
        // A client of a published port is answered through that port, even
        // when its address looks like this instance's own loopback.
        let client = lock(&self.clients).get(&dest).cloned();
        if let Some(published) = client {
            let _ = send_now(&published, &datagram.data, dest);
            return Ok(());
        }
        match self.ns.route(dest) {
            Route::Local if self.ns.find_udp(dest).is_none() && self.ns.policy().allows(dest) => {
                self.send_outbound(&datagram.data, dest)
            }
            Route::Local => {
                if let Some(tx) = self.ns.find_udp(dest) {
                    let from = SocketAddr::new(
                        if self.local.ip().is_unspecified() {
                            dest.ip()
                        } else {
                            self.local.ip()
                        },
                        self.local.port(),
                    );
                    let _ = tx.try_send(Datagram {
                        data: datagram.data.into(),
                        from,
                    });
                }
                Ok(())
            }
            Route::Peer(m, ip) => {
                let path = m.udp_path(ip, dest.port());
                let from = SocketAddr::new(IpAddr::V4(m.ip), self.local.port());
                let mut packet = Vec::with_capacity(PEER_HEADER_LEN + datagram.data.len());
                packet.extend_from_slice(&peer_header(HEADER_MAGIC, from));
                packet.extend_from_slice(&datagram.data);
                if self.unix.is_none() {
                    let fd = self.ns.take_fd()?;
                    let unix =
                        std::os::unix::net::UnixDatagram::unbound().map_err(ErrorCode::from)?;
                    unix.set_nonblocking(true).map_err(ErrorCode::from)?;
                    self.unix = Some((unix, fd));
                }
                if let Some((unix, _)) = &self.unix {
                    // No receiver, or a full one: dropped, as UDP would.
                    let _ = unix.send_to(&packet, &path);
                }
                Ok(())
            }
            Route::Denied => Err(ErrorCode::AccessDenied),
            Route::Outbound => self.send_outbound(&datagram.data, dest),
        }
    }

    fn send_outbound(&self, data: &[u8], dest: SocketAddr) -> Result<(), ErrorCode> {
        let socket = self.outbound_socket()?;
        match send_now(&socket, data, dest) {
            Ok(()) | Err(rustix::io::Errno::WOULDBLOCK) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn outbound_socket(&self) -> Result<Arc<tokio::net::UdpSocket>, ErrorCode> {
        let mut outbound = lock(&self.outbound);
        if let Some(o) = outbound.as_ref() {
            return Ok(o.socket.clone());
        }
        let fd = self.ns.take_fd()?;
        let any = if self.v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let std_socket =
            std::net::UdpSocket::bind(SocketAddr::new(any, 0)).map_err(ErrorCode::from)?;
        std_socket.set_nonblocking(true).map_err(ErrorCode::from)?;
        let socket =
            Arc::new(tokio::net::UdpSocket::from_std(std_socket).map_err(ErrorCode::from)?);
        let reader = AbortOnDrop(tokio::spawn(receive_outbound(
            socket.clone(),
            self.tx.clone(),
        )));
        *outbound = Some(Outbound {
            socket: socket.clone(),
            _reader: reader,
            _fd: fd,
        });
        Ok(socket)
    }
}

/// Sends one datagram straight away. (tokio's `try_send_to` refuses until
/// the reactor has seen the socket writable, which a fresh socket has not.)
fn send_now(
    socket: &tokio::net::UdpSocket,
    data: &[u8],
    dest: SocketAddr,
) -> Result<(), rustix::io::Errno> {
    rustix::net::sendto(socket, data, rustix::net::SendFlags::DONTWAIT, &dest).map(drop)
}

impl udp::HostOutgoingDatagramStream for NetView<'_> {
    fn check_send(&mut self, this: Resource<OutgoingDatagrams>) -> SocketResult<u64> {
        let stream = self.table.get_mut(&this)?;
        stream.permit = SEND_PERMIT;
        Ok(SEND_PERMIT)
    }

    fn send(
        &mut self,
        this: Resource<OutgoingDatagrams>,
        datagrams: Vec<udp::OutgoingDatagram>,
    ) -> SocketResult<u64> {
        let stream = self.table.get_mut(&this)?;
        if datagrams.len() as u64 > stream.permit {
            return Err(wasmtime_wasi::p2::SocketError::trap(wasmtime::format_err!(
                "unpermitted: argument exceeds permitted size"
            )));
        }
        stream.permit = 0;
        let mut sent = 0;
        for datagram in datagrams {
            match stream.send_one(datagram) {
                Ok(()) => sent += 1,
                Err(e) if sent == 0 => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    fn subscribe(
        &mut self,
        this: Resource<OutgoingDatagrams>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    fn drop(&mut self, this: Resource<OutgoingDatagrams>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[async_trait]
impl Pollable for OutgoingDatagrams {
    // Sending never waits: a datagram the path cannot take is dropped.
    async fn ready(&mut self) {}
}
