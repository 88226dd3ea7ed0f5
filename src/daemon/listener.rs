//! The daemon's listeners: every `--host` (Unix sockets, and TCP ports
//! served over mutual TLS) feeding one server, with at most a fixed number
//! of client connections open at once across all of them. At the bound the
//! listeners stop accepting, so further clients wait in the sockets'
//! backlogs (their connect succeeds; their first answer comes when an
//! earlier connection closes) rather than each costing the daemon a
//! descriptor and a task. A hijacked connection (`attach`) counts until it
//! closes, and so does a TLS handshake in progress: that is bounded in time
//! ([`super::tls::HANDSHAKE_TIMEOUT`]) and runs in its own task, so a client
//! that connects and says nothing neither keeps its slot nor stalls the
//! clients behind it.

use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Docker clients rarely hold more than a few connections each (one per
/// `logs -f`, `attach` or `events`); 1024 serves a compose project of
/// hundreds of services following logs.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// One bound `--host`.
pub enum Endpoint {
    Unix(UnixListener),
    /// A TCP listener whose clients must complete mutual TLS.
    Tls(TcpListener, TlsAcceptor),
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Unix,
    Tcp(SocketAddr),
}

/// The endpoints, accepting while fewer than `max` of their connections
/// (handshakes included) are open.
pub struct Bounded {
    incoming: mpsc::Receiver<(Counted<Stream>, Peer)>,
    /// The accept loops; they end when this is dropped (the server stopped
    /// accepting), closing the listeners.
    _acceptors: JoinSet<()>,
}

impl Bounded {
    /// Starts accepting on every endpoint (on the current Tokio runtime).
    pub fn new(endpoints: Vec<Endpoint>, max: usize) -> Bounded {
        let slots = Arc::new(Semaphore::new(max.max(1)));
        // Every queued connection holds a slot, so the slots bound the queue.
        let (tx, incoming) = mpsc::channel(64);
        let mut acceptors = JoinSet::new();
        for endpoint in endpoints {
            match endpoint {
                Endpoint::Unix(listener) => {
                    acceptors.spawn(accept_unix(listener, slots.clone(), tx.clone()));
                }
                Endpoint::Tls(listener, tls) => {
                    acceptors.spawn(accept_tls(listener, tls, slots.clone(), tx.clone()));
                }
            }
        }
        Bounded {
            incoming,
            _acceptors: acceptors,
        }
    }
}

type Incoming = mpsc::Sender<(Counted<Stream>, Peer)>;

async fn slot(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed")
}

async fn accept_unix(mut listener: UnixListener, slots: Arc<Semaphore>, incoming: Incoming) {
    loop {
        let permit = slot(&slots).await;
        // axum's accept retries (after a pause on errors such as EMFILE).
        let (io, _) = Listener::accept(&mut listener).await;
        let conn = Counted {
            io: Stream::Unix(io),
            _permit: permit,
        };
        if incoming.send((conn, Peer::Unix)).await.is_err() {
            return;
        }
    }
}

async fn accept_tls(
    mut listener: TcpListener,
    tls: TlsAcceptor,
    slots: Arc<Semaphore>,
    incoming: Incoming,
) {
    let mut handshakes = JoinSet::new();
    loop {
        // Reaps finished handshakes, so the set stays no larger than the
        // slots plus those finished since the last accept.
        while handshakes.try_join_next().is_some() {}
        let permit = slot(&slots).await;
        let (tcp, peer) = Listener::accept(&mut listener).await;
        // Docker's requests and attach streams are small writes.
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let incoming = incoming.clone();
        handshakes.spawn(async move {
            let tls =
                match tokio::time::timeout(super::tls::HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::warn!("TLS handshake with {peer} failed: {error}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "TLS handshake with {peer}: no handshake within {} s",
                            super::tls::HANDSHAKE_TIMEOUT.as_secs()
                        );
                        return;
                    }
                };
            let conn = Counted {
                io: Stream::Tls(Box::new(tls)),
                _permit: permit,
            };
            let _ = incoming.send((conn, Peer::Tcp(peer))).await;
        });
    }
}

impl Listener for Bounded {
    type Io = Counted<Stream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(conn) => conn,
            // The accept loops never end while `self` holds them.
            None => std::future::pending().await,
        }
    }

    /// The daemon prints its endpoints itself; there is no one address.
    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the daemon listens on several endpoints",
        ))
    }
}

/// A connection on one of the endpoints.
pub enum Stream {
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection, holding its slot until dropped.
pub struct Counted<I> {
    io: I,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(io) => Pin::new(io).poll_write(cx, buf),
            Stream::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Stream::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Unix(io) => io.is_write_vectored(),
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
