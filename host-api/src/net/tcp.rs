//! `wasi:sockets/tcp` over the instance's virtual network.

use super::bindings::wasi::sockets::{tcp, tcp_create_socket};
use super::stream::{self, Conn, StreamControl};
use super::{
    AbortOnDrop, Guard, Incoming, NetView, PEER_HEADER_LEN, Route, Shared, SocketFile, SocketSlot,
    check_remote, parse_peer_header, peer_header,
};
use crate::fds::{FdBudget, FdGrant};
use crate::net::publish::Protocol;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use wasmtime::component::Resource;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable, SocketResult};

/// Listen backlog unless the guest sets one, and its upper bound.
const DEFAULT_BACKLOG: usize = 128;
const MAX_BACKLOG: usize = 4096;

/// How long a peer on a virtual network may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The magic of a rendezvous connection's header (see `peer_header`).
const HEADER_MAGIC: &[u8; 2] = b"w1";

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Incoming>> + Send>>;

pub struct TcpSocket {
    ns: Arc<Shared>,
    _slot: SocketSlot,
    family: IpAddressFamily,
    state: State,
    backlog: usize,
    options: Options,
}

/// Socket options: kept for the guest to read back. Connections between
/// guests are local kernel sockets, where they have no effect.
#[derive(Clone, Copy)]
struct Options {
    keep_alive: bool,
    keep_alive_idle: u64,
    keep_alive_interval: u64,
    keep_alive_count: u32,
    hop_limit: u8,
    receive_buffer: u64,
    send_buffer: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep_alive: false,
            keep_alive_idle: 7_200_000_000_000,
            keep_alive_interval: 75_000_000_000,
            keep_alive_count: 9,
            hop_limit: 64,
            receive_buffer: 128 << 10,
            send_buffer: 16 << 10,
        }
    }
}

enum State {
    Default,
    BindStarted(Bound),
    Bound(Bound),
    ListenStarted(Bound, Listener),
    Listening(Bound, Listener),
    Connecting(Bound, ConnectFuture),
    ConnectReady(Bound, io::Result<Incoming>),
    Connected {
        _bound: Option<Bound>,
        local: SocketAddr,
        peer: SocketAddr,
        control: StreamControl,
    },
    Closed,
}

struct Bound {
    addr: SocketAddr,
    _guard: Guard,
}

struct Listener {
    rx: mpsc::Receiver<Incoming>,
    pending: Option<Incoming>,
    _registration: Guard,
    _tasks: Vec<AbortOnDrop>,
    _files: Vec<SocketFile>,
    /// The rendezvous sockets' descriptors.
    _fds: Vec<FdGrant>,
}

impl TcpSocket {
    fn new(ns: &Arc<Shared>, family: IpAddressFamily) -> Result<TcpSocket, ErrorCode> {
        Ok(TcpSocket::with_slot(SocketSlot::take(ns)?, family))
    }

    fn with_slot(slot: SocketSlot, family: IpAddressFamily) -> TcpSocket {
        TcpSocket {
            ns: slot.shared().clone(),
            _slot: slot,
            family,
            state: State::Default,
            backlog: DEFAULT_BACKLOG,
            options: Options::default(),
        }
    }

    fn is_v6(&self) -> bool {
        matches!(self.family, IpAddressFamily::Ipv6)
    }

    fn check_family(&self, addr: SocketAddr) -> Result<(), ErrorCode> {
        if addr.is_ipv6() != self.is_v6() {
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(())
    }

    fn bound_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::BindStarted(b)
            | State::Bound(b)
            | State::ListenStarted(b, _)
            | State::Listening(b, _)
            | State::Connecting(b, _)
            | State::ConnectReady(b, _) => Some(b.addr),
            State::Connected { local, .. } => Some(*local),
            State::Default | State::Closed => None,
        }
    }

    fn listen(&mut self) -> Result<Listener, ErrorCode> {
        let State::Bound(bound) = &self.state else {
            return Err(ErrorCode::InvalidState);
        };
        let addr = bound.addr;
        let (tx, rx) = mpsc::channel(self.backlog);
        let registration = self.ns.register_listener(addr, tx.clone());
        let mut tasks = Vec::new();
        let mut files = Vec::new();
        let mut fds = Vec::new();
        // Other members of the instance's networks reach it through a Unix
        // socket per address and port in the network's rendezvous directory.
        for m in self.ns.memberships_at(addr) {
            fds.push(self.ns.take_fd()?);
            let file = SocketFile::claim(m.tcp_path(m.ip, addr.port()));
            let listener = UnixListener::bind(file.path()).map_err(|e| {
                tracing::warn!("failed to listen at `{}`: {e}", file.path().display());
                ErrorCode::from(e)
            })?;
            files.push(file);
            let local = SocketAddr::new(IpAddr::V4(m.ip), addr.port());
            tasks.push(AbortOnDrop(tokio::spawn(accept_peers(
                listener,
                local,
                tx.clone(),
                self.ns.fds.clone(),
            ))));
        }
        // Published host ports for this guest port start being accepted now;
        // until then their connections wait in the host's backlog.
        let local_ip = if addr.ip().is_unspecified() {
            self.ns.primary_ip(false)
        } else {
            addr.ip()
        };
        for host in self.ns.published_tcp(addr) {
            let local = SocketAddr::new(local_ip, addr.port());
            tasks.push(AbortOnDrop(tokio::spawn(accept_published(
                host,
                local,
                tx.clone(),
                self.ns.fds.clone(),
            ))));
        }
        Ok(Listener {
            rx,
            pending: None,
            _registration: registration,
            _tasks: tasks,
            _files: files,
            _fds: fds,
        })
    }

    /// Starts connecting a socket bound at `local` to `remote`.
    fn connect(&self, local: SocketAddr, remote: SocketAddr) -> Result<ConnectFuture, ErrorCode> {
        match self.ns.route(remote) {
            Route::Local => {
                let Some(listener) = self.ns.find_listener(remote) else {
                    // Nothing of the app's own listens there; the host's
                    // loopback is reachable only where the policy allows.
                    if self.ns.policy().allows(remote) {
                        return Ok(Box::pin(connect_outbound(local, remote)));
                    }
                    return Ok(Box::pin(async {
                        Err(io::ErrorKind::ConnectionRefused.into())
                    }));
                };
                // The connecting socket's descriptor covers its end; the
                // end queued for the listener is one more.
                let their_fd = self.ns.take_fd()?;
                let (ours, theirs) = UnixStream::pair().map_err(ErrorCode::from)?;
                stream::tune_unix(&ours);
                stream::tune_unix(&theirs);
                // The guest calls itself from the address it calls (its
                // loopback or its own virtual IP), as a kernel would pick.
                let local = if local.ip().is_unspecified() {
                    SocketAddr::new(remote.ip(), local.port())
                } else {
                    local
                };
                let incoming = Incoming {
                    conn: Conn::Unix(theirs),
                    local: remote,
                    peer: local,
                    fd: their_fd,
                };
                Ok(Box::pin(async move {
                    listener
                        .try_send(incoming)
                        .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
                    Ok(Incoming {
                        conn: Conn::Unix(ours),
                        local,
                        peer: remote,
                        fd: FdGrant::none(),
                    })
                }))
            }
            Route::Peer(m, ip) => {
                let path = m.tcp_path(ip, remote.port());
                let local = SocketAddr::new(IpAddr::V4(m.ip), local.port());
                Ok(Box::pin(connect_peer(path, local, remote)))
            }
            Route::Outbound => Ok(Box::pin(connect_outbound(local, remote))),
            Route::Denied => Err(ErrorCode::AccessDenied),
        }
    }

    fn connected(
        &mut self,
        bound: Option<Bound>,
        incoming: Incoming,
    ) -> (DynInputStream, DynOutputStream) {
        let (reader, writer, control) = stream::split(incoming.conn);
        self.state = State::Connected {
            _bound: bound,
            local: incoming.local,
            peer: incoming.peer,
            control,
        };
        (Box::new(reader), Box::new(writer))
    }
}

async fn connect_outbound(local: SocketAddr, remote: SocketAddr) -> io::Result<Incoming> {
    let stream = tokio::net::TcpStream::connect(remote).await?;
    let _ = stream.set_nodelay(true);
    // The guest keeps seeing its own address and port, not the host's.
    Ok(Incoming {
        conn: Conn::Tcp(stream),
        local,
        peer: remote,
        fd: FdGrant::none(),
    })
}

async fn connect_peer(
    path: PathBuf,
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Incoming> {
    let mut stream = UnixStream::connect(&path)
        .await
        .map_err(|e| match e.kind() {
            // No such listener: as on a real network, the connection is refused.
            io::ErrorKind::NotFound => io::ErrorKind::ConnectionRefused.into(),
            _ => e,
        })?;
    stream::tune_unix(&stream);
    stream.write_all(&peer_header(HEADER_MAGIC, local)).await?;
    Ok(Incoming {
        conn: Conn::Unix(stream),
        local,
        peer: remote,
        fd: FdGrant::none(),
    })
}

async fn accept_peers(
    listener: UnixListener,
    local: SocketAddr,
    tx: mpsc::Sender<Incoming>,
    fds: Arc<FdBudget>,
) {
    loop {
        let fd = wait_fd(&fds).await;
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream::tune_unix(&stream);
        let tx = tx.clone();
        // Each caller's header is read on its own, so a slow one holds up
        // nobody else.
        tokio::spawn(async move {
            let mut h = [0u8; PEER_HEADER_LEN];
            let read = tokio::time::timeout(HEADER_TIMEOUT, stream.read_exact(&mut h)).await;
            let Some(peer) = read
                .ok()
                .and_then(Result::ok)
                .and(parse_peer_header(HEADER_MAGIC, &h))
            else {
                return;
            };
            let _ = tx
                .send(Incoming {
                    conn: Conn::Unix(stream),
                    local,
                    peer,
                    fd,
                })
                .await;
        });
    }
}

async fn accept_published(
    listener: Arc<tokio::net::TcpListener>,
    local: SocketAddr,
    tx: mpsc::Sender<Incoming>,
    fds: Arc<FdBudget>,
) {
    loop {
        let fd = wait_fd(&fds).await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                // Waits while the guest's backlog is full; the host's own
                // backlog then holds further clients.
                if tx
                    .send(Incoming {
                        conn: Conn::Tcp(stream),
                        local,
                        peer,
                        fd,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("accepting on a published port failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until the instance may hold one more host descriptor: a client of
/// a full instance then waits in the host's backlog, as it would for a
/// process out of descriptors, instead of being accepted past the limit.
async fn wait_fd(fds: &Arc<FdBudget>) -> FdGrant {
    loop {
        if let Ok(grant) = fds.take(1) {
            return grant;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn poll_now<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

impl tcp_create_socket::Host for NetView<'_> {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        let socket = TcpSocket::new(&self.ns.shared, family)?;
        Ok(self.table.push(socket)?)
    }
}

impl tcp::Host for NetView<'_> {}

impl tcp::HostTcpSocket for NetView<'_> {
    fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local: IpSocketAddress,
    ) -> SocketResult<()> {
        self.table.get(&network)?;
        let socket = self.table.get_mut(&this)?;
        let local = SocketAddr::from(local);
        if !matches!(socket.state, State::Default) {
            return Err(ErrorCode::InvalidState.into());
        }
        socket.check_family(local)?;
        let (addr, guard) = socket.ns.bind(Protocol::Tcp, local)?;
        socket.state = State::BindStarted(Bound {
            addr,
            _guard: guard,
        });
        Ok(())
    }

    fn finish_bind(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        let socket = self.table.get_mut(&this)?;
        match std::mem::replace(&mut socket.state, State::Closed) {
            State::BindStarted(bound) => {
                socket.state = State::Bound(bound);
                Ok(())
            }
            other => {
                socket.state = other;
                Err(ErrorCode::NotInProgress.into())
            }
        }
    }

    fn start_connect(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        remote: IpSocketAddress,
    ) -> SocketResult<()> {
        self.table.get(&network)?;
        let socket = self.table.get_mut(&this)?;
        let remote = SocketAddr::from(remote);
        match socket.state {
            State::Default | State::Bound(_) => {}
            State::Connecting(..)
            | State::ConnectReady(..)
            | State::BindStarted(_)
            | State::ListenStarted(..) => {
                return Err(ErrorCode::ConcurrencyConflict.into());
            }
            _ => return Err(ErrorCode::InvalidState.into()),
        }
        socket.check_family(remote)?;
        check_remote(remote)?;
        let bound = match std::mem::replace(&mut socket.state, State::Closed) {
            State::Bound(bound) => bound,
            _ => {
                let any = if socket.is_v6() {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                match socket.ns.bind(Protocol::Tcp, SocketAddr::new(any, 0)) {
                    Ok((addr, guard)) => Bound {
                        addr,
                        _guard: guard,
                    },
                    Err(e) => {
                        socket.state = State::Default;
                        return Err(e.into());
                    }
                }
            }
        };
        match socket.connect(bound.addr, remote) {
            Ok(future) => {
                socket.state = State::Connecting(bound, future);
                Ok(())
            }
            Err(e) => {
                socket.state = State::Bound(bound);
                Err(e.into())
            }
        }
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let socket = self.table.get_mut(&this)?;
        let (bound, result) = match std::mem::replace(&mut socket.state, State::Closed) {
            State::Connecting(bound, mut future) => match poll_now(&mut future) {
                Poll::Ready(result) => (bound, result),
                Poll::Pending => {
                    socket.state = State::Connecting(bound, future);
                    return Err(ErrorCode::WouldBlock.into());
                }
            },
            State::ConnectReady(bound, result) => (bound, result),
            other => {
                socket.state = other;
                return Err(ErrorCode::NotInProgress.into());
            }
        };
        let incoming = match result {
            Ok(incoming) => incoming,
            // A failed connection leaves the socket closed, as in WASI.
            Err(e) => return Err(ErrorCode::from(e).into()),
        };
        let (input, output) = socket.connected(Some(bound), incoming);
        let input = self.table.push_child(input, &this)?;
        let output = self.table.push_child(output, &this)?;
        Ok((input, output))
    }

    fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        let socket = self.table.get_mut(&this)?;
        match socket.state {
            State::Bound(_) => {}
            State::Connecting(..)
            | State::ConnectReady(..)
            | State::BindStarted(_)
            | State::ListenStarted(..) => {
                return Err(ErrorCode::ConcurrencyConflict.into());
            }
            // In WASI 0.2 a socket must be bound before it listens.
            _ => return Err(ErrorCode::InvalidState.into()),
        }
        let listener = socket.listen()?;
        let State::Bound(bound) = std::mem::replace(&mut socket.state, State::Closed) else {
            return Err(ErrorCode::InvalidState.into());
        };
        socket.state = State::ListenStarted(bound, listener);
        Ok(())
    }

    fn finish_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        let socket = self.table.get_mut(&this)?;
        match std::mem::replace(&mut socket.state, State::Closed) {
            State::ListenStarted(bound, listener) => {
                socket.state = State::Listening(bound, listener);
                Ok(())
            }
            other => {
                socket.state = other;
                Err(ErrorCode::NotInProgress.into())
            }
        }
    }

    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    )> {
        let socket = self.table.get_mut(&this)?;
        if !matches!(socket.state, State::Listening(..)) {
            return Err(ErrorCode::InvalidState.into());
        }
        let State::Listening(_, listener) = &mut socket.state else {
            return Err(ErrorCode::InvalidState.into());
        };
        let mut incoming = match listener.pending.take() {
            Some(incoming) => incoming,
            None => listener.rx.try_recv().map_err(|_| ErrorCode::WouldBlock)?,
        };
        // The descriptor the connection was queued with becomes the socket's.
        let fd = std::mem::replace(&mut incoming.fd, FdGrant::none());
        let mut accepted =
            TcpSocket::with_slot(SocketSlot::accepted(&socket.ns, fd), socket.family);
        accepted.options = socket.options;
        let (input, output) = accepted.connected(None, incoming);
        let accepted = self.table.push(accepted)?;
        let input = self.table.push_child(input, &accepted)?;
        let output = self.table.push_child(output, &accepted)?;
        Ok((accepted, input, output))
    }

    fn local_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        let socket = self.table.get(&this)?;
        let addr = socket.bound_addr().ok_or(ErrorCode::InvalidState)?;
        Ok(addr.into())
    }

    fn remote_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        let socket = self.table.get(&this)?;
        match &socket.state {
            State::Connected { peer, .. } => Ok((*peer).into()),
            _ => Err(ErrorCode::InvalidState.into()),
        }
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(matches!(self.table.get(&this)?.state, State::Listening(..)))
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.table.get(&this)?.family)
    }

    fn set_listen_backlog_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        let socket = self.table.get_mut(&this)?;
        if value == 0 {
            return Err(ErrorCode::InvalidArgument.into());
        }
        match socket.state {
            State::Default | State::Bound(_) | State::BindStarted(_) => {
                socket.backlog = usize::try_from(value)
                    .unwrap_or(MAX_BACKLOG)
                    .min(MAX_BACKLOG);
                Ok(())
            }
            // A listening socket's queue is already sized; like many kernels,
            // accept the call and keep it.
            State::Listening(..) | State::ListenStarted(..) => Ok(()),
            _ => Err(ErrorCode::InvalidState.into()),
        }
    }

    fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> SocketResult<bool> {
        Ok(self.table.get(&this)?.options.keep_alive)
    }

    fn set_keep_alive_enabled(
        &mut self,
        this: Resource<TcpSocket>,
        value: bool,
    ) -> SocketResult<()> {
        self.table.get_mut(&this)?.options.keep_alive = value;
        Ok(())
    }

    fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.options.keep_alive_idle)
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        positive(value)?;
        self.table.get_mut(&this)?.options.keep_alive_idle = value;
        Ok(())
    }

    fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.options.keep_alive_interval)
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        positive(value)?;
        self.table.get_mut(&this)?.options.keep_alive_interval = value;
        Ok(())
    }

    fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> SocketResult<u32> {
        Ok(self.table.get(&this)?.options.keep_alive_count)
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> SocketResult<()> {
        positive(u64::from(value))?;
        self.table.get_mut(&this)?.options.keep_alive_count = value;
        Ok(())
    }

    fn hop_limit(&mut self, this: Resource<TcpSocket>) -> SocketResult<u8> {
        Ok(self.table.get(&this)?.options.hop_limit)
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> SocketResult<()> {
        positive(u64::from(value))?;
        self.table.get_mut(&this)?.options.hop_limit = value;
        Ok(())
    }

    fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.options.receive_buffer)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        positive(value)?;
        self.table.get_mut(&this)?.options.receive_buffer = value;
        Ok(())
    }

    fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        Ok(self.table.get(&this)?.options.send_buffer)
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()> {
        positive(value)?;
        self.table.get_mut(&this)?.options.send_buffer = value;
        Ok(())
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    fn shutdown(&mut self, this: Resource<TcpSocket>, how: tcp::ShutdownType) -> SocketResult<()> {
        let socket = self.table.get(&this)?;
        let State::Connected { control, .. } = &socket.state else {
            return Err(ErrorCode::InvalidState.into());
        };
        let how = match how {
            tcp::ShutdownType::Receive => std::net::Shutdown::Read,
            tcp::ShutdownType::Send => std::net::Shutdown::Write,
            tcp::ShutdownType::Both => std::net::Shutdown::Both,
        };
        control.shutdown(how)?;
        Ok(())
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

fn positive(value: u64) -> Result<(), ErrorCode> {
    if value == 0 {
        Err(ErrorCode::InvalidArgument)
    } else {
        Ok(())
    }
}

#[async_trait]
impl Pollable for TcpSocket {
    async fn ready(&mut self) {
        match &mut self.state {
            State::Connecting(..) => {
                // Polled in place: `ready` may be dropped before it finishes
                // (a guest polling with a timeout), and the connection must
                // survive that.
                let result = std::future::poll_fn(|cx| match &mut self.state {
                    State::Connecting(_, future) => future.as_mut().poll(cx).map(Some),
                    _ => Poll::Ready(None),
                })
                .await;
                if let Some(result) = result
                    && let State::Connecting(bound, _) =
                        std::mem::replace(&mut self.state, State::Closed)
                {
                    self.state = State::ConnectReady(bound, result);
                }
            }
            State::Listening(_, listener) if listener.pending.is_none() => {
                listener.pending = listener.rx.recv().await;
            }
            _ => {}
        }
    }
}
