//! A container's stdout and stderr: written through to its log as the guest
//! writes, never held in memory beyond the log writer's one partial line.

use super::logs::{LogWriter, Stream};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The most one write may hand over (the permit `check-write` gives).
const MAX_WRITE: usize = 64 << 10;

/// One of a container's output streams.
#[derive(Clone)]
pub(crate) struct LogOutput {
    writer: LogWriter,
    stream: Stream,
}

impl LogOutput {
    pub(crate) fn new(writer: LogWriter, stream: Stream) -> LogOutput {
        LogOutput { writer, stream }
    }

    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer
            .write(self.stream, bytes)
            .map_err(std::io::Error::other)
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        // A log that cannot be written (a full disk) ends the guest's
        // stream, not the daemon: the guest sees its write fail.
        self.write_all(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!("{e}")))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE)
    }
}

impl Pollable for LogOutput {
    // `#[async_trait]`'s expansion of `async fn ready(&mut self)`: the log
    // is always ready.
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(()))
    }
}

impl tokio::io::AsyncWrite for LogOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(MAX_WRITE);
        Poll::Ready(self.write_all(&buf[..n]).map(|()| n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
