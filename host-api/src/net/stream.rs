//! The byte streams of a guest's TCP connection.
//!
//! A connection is a kernel socket: a real TCP stream (a published port or an
//! allowed outbound connection) or one end of a Unix stream (loopback and
//! virtual-network peers). The guest's reads and writes go straight to it
//! with non-blocking calls; there is no copy task in between, so a published
//! connection reaches the guest as the very host stream the client opened.

use super::lock;
use bytes::{Bytes, BytesMut};
use std::io;
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpStream, UnixStream};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most one `read` returns, and the most one `write` may be given: large
/// enough that bulk transfers take few calls, and the bound on what one
/// connection buffers in the host.
const MAX_CHUNK: usize = 1 << 20;

/// Kernel buffer size for connections between guests. Unix sockets default
/// to ~200 KiB, which makes two busy processes wake each other for every few
/// hundred kilobytes; loopback TCP autotunes to several MiB.
const UNIX_BUFFER: usize = 4 << 20;

/// Sizes a Unix stream's kernel buffers for bulk traffic; best effort.
pub(crate) fn tune_unix(stream: &UnixStream) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(stream, UNIX_BUFFER);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(stream, UNIX_BUFFER);
}

/// A connected kernel socket.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_read_buf(buf),
            Conn::Unix(s) => s.try_read_buf(buf),
        }
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_write(bytes),
            Conn::Unix(s) => s.try_write(bytes),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.readable().await,
            Conn::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.writable().await,
            Conn::Unix(s) => s.writable().await,
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => rustix::net::Shutdown::Read,
            Shutdown::Write => rustix::net::Shutdown::Write,
            Shutdown::Both => rustix::net::Shutdown::Both,
        };
        let result = match self {
            Conn::Tcp(s) => rustix::net::shutdown(s, how),
            Conn::Unix(s) => rustix::net::shutdown(s, how),
        };
        match result {
            // The peer already went away: nothing left to shut.
            Err(rustix::io::Errno::NOTCONN) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Splits a connection into the guest's input and output streams, plus a
/// handle the socket keeps for `shutdown`.
pub(crate) fn split(conn: Conn) -> (Reader, Writer, StreamControl) {
    let conn = Arc::new(conn);
    let read_open = Arc::new(Mutex::new(true));
    let write = Arc::new(Mutex::new(WriteState {
        pending: Bytes::new(),
        closed: None,
    }));
    let reader = Reader {
        conn: conn.clone(),
        open: read_open.clone(),
    };
    let writer = Writer {
        conn: conn.clone(),
        state: write.clone(),
    };
    (
        reader,
        writer,
        StreamControl {
            conn,
            read_open,
            write,
        },
    )
}

/// What the socket needs to shut its streams down.
pub(crate) struct StreamControl {
    conn: Arc<Conn>,
    read_open: Arc<Mutex<bool>>,
    write: Arc<Mutex<WriteState>>,
}

impl StreamControl {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            *lock(&self.read_open) = false;
            self.conn.shutdown(Shutdown::Read)?;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            let mut state = lock(&self.write);
            if state.closed.is_none() {
                state.closed = Some(StreamClosed::Shutdown);
            }
            if state.pending.is_empty() {
                drop(state);
                self.conn.shutdown(Shutdown::Write)?;
            } else {
                // Bytes the guest already wrote are delivered first.
                let pending = std::mem::take(&mut state.pending);
                drop(state);
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    if drain(&conn, pending).await.is_ok() {
                        let _ = conn.shutdown(Shutdown::Write);
                    }
                });
            }
        }
        Ok(())
    }
}

pub(crate) struct Reader {
    conn: Arc<Conn>,
    open: Arc<Mutex<bool>>,
}

#[async_trait]
impl InputStream for Reader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if !*lock(&self.open) {
            return Err(StreamError::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = BytesMut::with_capacity(size.min(MAX_CHUNK));
        match self.conn.try_read_buf(&mut buf) {
            Ok(0) => {
                *lock(&self.open) = false;
                Err(StreamError::Closed)
            }
            Ok(_) => Ok(buf.freeze()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => {
                *lock(&self.open) = false;
                Err(StreamError::LastOperationFailed(e.into()))
            }
        }
    }
}

#[async_trait]
impl Pollable for Reader {
    async fn ready(&mut self) {
        if *lock(&self.open) {
            let _ = self.conn.readable().await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum StreamClosed {
    Shutdown,
    Broken,
}

struct WriteState {
    /// Bytes accepted from the guest that the kernel has not taken yet; at
    /// most one permitted write, so the memory per connection is bounded.
    pending: Bytes,
    closed: Option<StreamClosed>,
}

pub(crate) struct Writer {
    conn: Arc<Conn>,
    state: Arc<Mutex<WriteState>>,
}

impl Writer {
    /// Hands pending bytes to the kernel as far as it takes them now.
    fn push_pending(&self, state: &mut WriteState) -> StreamResult<()> {
        while !state.pending.is_empty() {
            match self.conn.try_write(&state.pending) {
                Ok(n) => {
                    let _ = state.pending.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    state.pending.clear();
                    state.closed = Some(StreamClosed::Broken);
                    return Err(write_error(e));
                }
            }
        }
        Ok(())
    }

    fn check_open(state: &WriteState) -> StreamResult<()> {
        match state.closed {
            None => Ok(()),
            Some(_) => Err(StreamError::Closed),
        }
    }
}

fn write_error(e: io::Error) -> StreamError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => StreamError::Closed,
        _ => StreamError::LastOperationFailed(e.into()),
    }
}

async fn drain(conn: &Conn, mut pending: Bytes) -> io::Result<()> {
    while !pending.is_empty() {
        conn.writable().await?;
        match conn.try_write(&pending) {
            Ok(n) => {
                let _ = pending.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[async_trait]
impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let state = &mut *lock(&self.state);
        Self::check_open(state)?;
        if !state.pending.is_empty() || bytes.len() > MAX_CHUNK {
            return Err(StreamError::trap(
                "write exceeds what check-write permitted",
            ));
        }
        state.pending = bytes;
        self.push_pending(state)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Every write is handed to the kernel at once (or as soon as it takes
        // it, see `ready`); there is nothing else to flush.
        Self::check_open(&lock(&self.state))
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let state = &mut *lock(&self.state);
        Self::check_open(state)?;
        self.push_pending(state)?;
        Ok(if state.pending.is_empty() {
            MAX_CHUNK
        } else {
            0
        })
    }

    async fn cancel(&mut self) {
        // Bytes the guest wrote are delivered even if it drops the stream.
        self.ready().await
    }
}

#[async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {
        loop {
            {
                let state = &mut *lock(&self.state);
                if state.closed.is_some() || self.push_pending(state).is_err() {
                    return;
                }
                if state.pending.is_empty() {
                    return;
                }
            }
            if self.conn.writable().await.is_err() {
                return;
            }
        }
    }
}
