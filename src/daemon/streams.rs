//! Output streams to clients: Docker's 8-byte multiplexing (or raw bytes for
//! a TTY container), over a chunked body (`logs`) or a hijacked connection
//! (`attach`), each ending when the container's output does and cancelled
//! when the client goes away.

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use std::time::SystemTime;
use wrun_runtime::container::logs::{Follow, LogEntry, Stream};

pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// How entries are written to a client.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Raw bytes (a TTY container), else multiplexed frames.
    pub raw: bool,
    /// Each entry starts with its RFC 3339 time and a space (`logs -t`).
    pub timestamps: bool,
}

impl Framing {
    pub fn content_type(self) -> &'static str {
        match self.raw {
            true => RAW,
            false => MULTIPLEXED,
        }
    }

    /// One entry as the client reads it.
    pub fn frame(self, entry: &LogEntry) -> Bytes {
        let stamp = match self.timestamps {
            true => format!("{} ", timestamp(entry.time)),
            false => String::new(),
        };
        let len = stamp.len() + entry.bytes.len();
        let mut out = BytesMut::with_capacity(8 + len);
        if !self.raw {
            let kind = match entry.stream {
                Stream::Stdout => 1,
                Stream::Stderr => 2,
            };
            out.put_slice(&[kind, 0, 0, 0]);
            out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        }
        out.put_slice(stamp.as_bytes());
        out.put_slice(&entry.bytes);
        out.freeze()
    }
}

/// Docker's `RFC3339NanoFixed`: always nine digits of fraction.
fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// What a client receives: entries written before (`history`), then, with
/// `follow`, those written after, until the container's output ends.
pub struct Output {
    pub history: Vec<LogEntry>,
    pub follow: Option<Follow>,
    /// Which live entries the client wants.
    pub wanted: Box<dyn Fn(&LogEntry) -> bool + Send + Sync>,
    pub framing: Framing,
}

impl Output {
    /// The frames, as a stream. Dropping it (the client went away) drops
    /// the follower, which is all the container knew of this client.
    pub fn frames(self) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
        let Output {
            history,
            follow,
            wanted,
            framing,
        } = self;
        let history =
            futures_util::stream::iter(history.into_iter().map(move |e| framing.frame(&e)));
        let live =
            futures_util::stream::unfold((follow, wanted), move |(follow, wanted)| async move {
                let mut follow = follow?;
                loop {
                    let entry = follow.next().await?;
                    if wanted(&entry) {
                        return Some((framing.frame(&entry), (Some(follow), wanted)));
                    }
                }
            });
        futures_util::StreamExt::chain(history, live)
    }

    pub fn body(self) -> Body {
        Body::from_stream(futures_util::StreamExt::map(
            self.frames(),
            Ok::<_, std::io::Error>,
        ))
    }
}
