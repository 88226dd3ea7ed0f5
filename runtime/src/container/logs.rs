//! Docker's `json-file` log driver: a container's stdout and stderr kept as
//! JSON lines in its directory, rotated by size, read back with the filters
//! of `docker logs`, and followed live (`docker logs -f`, attach).
//!
//! `container.log` is the current file, `container.log.1` … `.N` the rotated
//! ones (`.1` the newest). Each line is one record, as Docker writes it:
//!
//! ```text
//! {"log":"hello\n","stream":"stdout","time":"2026-12-01T16:30:00.123456789Z"}
//! ```
//!
//! A directory has one [`LogWriter`]: it alone appends and rotates, and the
//! followers it hands out rely on its lock. [`read`] needs no writer, so
//! another process can read a log while a writer rotates it.

use crate::input::excerpt;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Take, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// The current log file of a container's directory.
pub const LOG_FILE: &str = "container.log";

/// The longest record, in bytes: a longer line is cut into records of this
/// size without a newline, the size of the buffer of Docker's log copier.
pub const MAX_RECORD: usize = 16 << 10;

/// Records a follower may fall behind before it has to re-read them from
/// the files: at most 16 MiB held for followers (1024 × [`MAX_RECORD`]).
const FOLLOW_CAPACITY: usize = 1024;

/// The longest line a reader accepts. A record of [`MAX_RECORD`] bytes is at
/// most about 100 KiB of JSON (6 bytes for an escaped control character);
/// longer lines are not wrun's, and are skipped rather than held in memory.
const MAX_LINE: usize = 1 << 20;

/// Which output of the container a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        self as usize
    }
}

/// How much log a container keeps: `--log-opt max-size=… --log-opt max-file=…`.
///
/// Docker's json-file driver keeps everything unless told otherwise; wrun
/// bounds every resource, so by default it keeps 3 files of 10 MiB, 30 MiB
/// per container, in the spirit of Docker's `local` driver (5 of 20 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    /// Bytes per file before it is rotated; more than 0. A single record
    /// larger than this gets a file of its own.
    pub max_size: u64,
    /// Files kept, the current one included; at least 1.
    pub max_file: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size: 10 << 20,
            max_file: 3,
        }
    }
}

impl LogOptions {
    /// Docker's `--log-opt`s of the json-file driver: `max-size` (`10m`,
    /// `512k`, `1g`, binary units as Docker's) and `max-file`; an option not
    /// given keeps its default.
    pub fn from_docker(options: &HashMap<String, String>) -> Result<LogOptions, LogError> {
        let mut parsed = LogOptions::default();
        // Sorted, so that of several bad options the same one is reported.
        let mut options: Vec<_> = options.iter().collect();
        options.sort();
        for (key, value) in options {
            match key.as_str() {
                "max-size" => {
                    parsed.max_size =
                        parse_size(value).filter(|&size| size > 0).ok_or_else(|| {
                            invalid(
                                key,
                                value,
                                "expected a positive size like `10m`, `512k` or `1g`",
                            )
                        })?;
                }
                "max-file" => {
                    parsed.max_file = (value.trim().parse().ok())
                        .filter(|&files: &u32| files >= 1)
                        .ok_or_else(|| {
                            invalid(key, value, "expected a number of files, at least 1")
                        })?;
                }
                _ => return Err(LogError::UnknownOption(excerpt(key).to_string())),
            }
        }
        Ok(parsed)
    }

    fn validate(self) -> Result<(), LogError> {
        if self.max_size == 0 {
            return Err(invalid("max-size", "0", "expected a positive size"));
        }
        if self.max_file == 0 {
            return Err(invalid("max-file", "0", "expected at least 1"));
        }
        Ok(())
    }
}

fn invalid(key: &str, value: &str, reason: &'static str) -> LogError {
    LogError::InvalidOption {
        key: excerpt(key).to_string(),
        value: excerpt(value).to_string(),
        reason,
    }
}

/// A size as Docker's `max-size` takes it (go-units' `RAMInBytes`): digits,
/// then `k`, `m` or `g` in binary units, optionally followed by `b` or `ib`
/// (`10m`, `10mb`, `10MiB`). Docker's fractions (`1.5m`) are not taken.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let number = (text.strip_suffix("ib"))
        .or_else(|| text.strip_suffix('b'))
        .unwrap_or(&text);
    let (digits, shift) = match number.as_bytes().last()? {
        b'k' => (&number[..number.len() - 1], 10),
        b'm' => (&number[..number.len() - 1], 20),
        b'g' => (&number[..number.len() - 1], 30),
        _ => (number, 0),
    };
    let digits = digits.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// One record: a line of one stream, or a piece of a longer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: Stream,
    pub time: SystemTime,
    /// The line, its `\n` included when it ended. Bytes that are not UTF-8
    /// are stored as U+FFFD, as Docker does, and read back as such.
    pub bytes: Bytes,
}

/// Which entries [`read`] and [`Follow::history`] return: `docker logs`'
/// `--tail`, `--since` and `--until`, and the API's `stdout`/`stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    pub stdout: bool,
    pub stderr: bool,
    /// Only the last N matching entries; `None` for all.
    pub tail: Option<usize>,
    /// Entries at or after this time (inclusive, as Docker's).
    pub since: Option<SystemTime>,
    /// Entries at or before this time (inclusive, as Docker's).
    pub until: Option<SystemTime>,
}

impl Default for ReadOptions {
    /// Every entry of both streams.
    fn default() -> Self {
        ReadOptions {
            stdout: true,
            stderr: true,
            tail: None,
            since: None,
            until: None,
        }
    }
}

impl ReadOptions {
    /// Whether `entry` passes the stream and time filters (`tail` aside):
    /// for filtering live entries of a [`Follow`] as its history is.
    pub fn matches(&self, entry: &LogEntry) -> bool {
        let stream = match entry.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream
            && self.since.is_none_or(|since| entry.time >= since)
            && self.until.is_none_or(|until| entry.time <= until)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log option `{key}={value}`: {reason}")]
    InvalidOption {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("unknown log option `{0}`: the json-file driver takes `max-size` and `max-file`")]
    UnknownOption(String),
    // The reason is part of the message and deliberately not a `source()`,
    // which `{:#}` would print a second time (as `ImageError::Io`).
    #[error("failed to {action} `{}`: {reason}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: io::Error,
    },
    #[error("the log in `{}` is closed", dir.display())]
    Closed { dir: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    move |reason| LogError::Io {
        action,
        path: path.to_owned(),
        reason,
    }
}

/// A record on disk, in Docker's field order.
#[derive(Serialize)]
struct RecordOut<'a> {
    log: &'a str,
    stream: Stream,
    #[serde(serialize_with = "serialize_time")]
    time: SystemTime,
}

/// A record read back; fields Docker adds (`attrs`) are ignored.
#[derive(Deserialize)]
struct RecordIn {
    log: String,
    stream: Stream,
    #[serde(deserialize_with = "deserialize_time")]
    time: SystemTime,
}

/// Always nine digits of fraction and `Z`, as Docker's `RFC3339NanoFixed`.
fn serialize_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_nanos(*time))
}

fn deserialize_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_rfc3339_weak(&text).map_err(|e| {
        serde::de::Error::custom(format_args!("invalid time `{}`: {e}", excerpt(&text)))
    })
}

/// `time` within what humantime formats: it panics on a time before 1970
/// or after 9999, which only a clock set wildly wrong would give.
fn clamp(time: SystemTime) -> SystemTime {
    let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
    time.clamp(UNIX_EPOCH, last)
}

/// `container.log` for 0, else its `k`th rotated file.
fn file_path(dir: &Path, k: u32) -> PathBuf {
    if k == 0 {
        dir.join(LOG_FILE)
    } else {
        dir.join(format!("{LOG_FILE}.{k}"))
    }
}

/// Where a record starts or ends: the file, by its generation, and a byte
/// offset in it. [`LogWriter::open`] numbers the current file 0 (so its
/// rotated files are -1, -2, …), and each rotation starts the next
/// generation. Positions order as the records they delimit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    generation: i64,
    offset: u64,
}

impl Position {
    const START: Position = Position {
        generation: i64::MIN,
        offset: 0,
    };
}

/// A record as followers receive it: with its sequence number, which shows
/// a gap after a lag, and where it lies in the files, from which the gap is
/// re-read.
#[derive(Debug, Clone)]
struct Sent {
    entry: LogEntry,
    seq: u64,
    start: Position,
    end: Position,
}

/// Appends a container's output to its log: cheap to clone, shared by the
/// tasks and threads that copy the container's streams.
///
/// Dropping the last clone closes the log (see [`LogWriter::close`]).
#[derive(Clone)]
pub struct LogWriter {
    handle: Arc<Handle>,
}

/// Held by writers only; followers hold the [`Shared`] part, so that the
/// last writer going away ends them rather than leaving them waiting.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.shared.close() {
            tracing::warn!("{e}");
        }
    }
}

struct Shared {
    dir: PathBuf,
    options: LogOptions,
    state: Mutex<State>,
}

struct State {
    /// The partial line of each stream, always shorter than [`MAX_RECORD`].
    partial: [Vec<u8>; 2],
    out: Output,
}

struct Output {
    /// `None` after a rotation until the next record opens the new file.
    file: Option<File>,
    size: u64,
    generation: i64,
    /// Rotated files present, `.1` to `.rotated`.
    rotated: u32,
    /// The file ends in a torn record (a crash, a failed write): the next
    /// record starts on a line of its own, or it would be lost with it.
    needs_newline: bool,
    /// Records written since [`LogWriter::open`].
    seq: u64,
    /// The encoding buffer, reused.
    line: Vec<u8>,
    /// `None` once closed.
    sender: Option<broadcast::Sender<Sent>>,
}

impl LogWriter {
    /// Opens the log in `dir`, appending to what a previous run left (a
    /// restarted container keeps its logs). Rotated files beyond
    /// `options.max_file`, left by a run that kept more, are removed.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogWriter, LogError> {
        options.validate()?;
        let keep = options.max_file - 1;
        let mut rotated = 0;
        while rotated < keep && file_path(dir, rotated + 1).exists() {
            rotated += 1;
        }
        let mut beyond = options.max_file;
        loop {
            let path = file_path(dir, beyond);
            match fs::remove_file(&path) {
                Ok(()) => beyond = beyond.saturating_add(1),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_error("remove", &path)(e)),
            }
        }
        let path = file_path(dir, 0);
        let file = open_log(&path)?;
        let size = file.metadata().map_err(io_error("read", &path))?.len();
        let needs_newline = size > 0 && {
            let mut last = [0];
            (file.read_exact_at(&mut last, size - 1)).map_err(io_error("read", &path))?;
            last[0] != b'\n'
        };
        let (sender, _) = broadcast::channel(FOLLOW_CAPACITY);
        let out = Output {
            file: Some(file),
            size,
            generation: 0,
            rotated,
            needs_newline,
            seq: 0,
            line: Vec::new(),
            sender: Some(sender),
        };
        let shared = Shared {
            dir: dir.to_owned(),
            options,
            state: Mutex::new(State {
                partial: [Vec::new(), Vec::new()],
                out,
            }),
        };
        Ok(LogWriter {
            handle: Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        })
    }

    /// Appends output of `stream`, cut into records as Docker's copier does:
    /// each complete line is one record; a partial line waits for the rest
    /// of its stream's output, until its newline, until it reaches
    /// [`MAX_RECORD`] (then it is a record without `\n`), or until
    /// [`LogWriter::flush`]. The partial line belongs to the stream, not to
    /// the caller, as in a pipe: writers that share a stream should write
    /// whole lines.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), LogError> {
        self.write_with_clock(stream, bytes, SystemTime::now)
    }

    fn write_with_clock(
        &self,
        stream: Stream,
        bytes: &[u8],
        now: impl Fn() -> SystemTime,
    ) -> Result<(), LogError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.out.sender.is_none() {
            return Err(LogError::Closed {
                dir: shared.dir.clone(),
            });
        }
        let State { partial, out } = &mut *state;
        split_lines(&mut partial[stream.index()], bytes, |record| {
            out.write_record(shared, stream, record, now())
        })
    }

    /// Writes the partial lines as records without `\n`.
    pub fn flush(&self) -> Result<(), LogError> {
        let shared = &self.handle.shared;
        shared.lock().flush(shared)
    }

    /// Waits (at most `limit`) until every [`Follow`] of this log has
    /// ended: after [`LogWriter::close`], until they have read all that was
    /// written. A follower that fell behind reads the files, so they must
    /// stay until then (a `--rm` container's are removed).
    pub async fn drained(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        // The writers' handle holds one reference; each follower one more.
        while Arc::strong_count(&self.handle.shared) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "followers of the logs in `{}` still reading after {} s: removing anyway",
                    self.handle.shared.dir.display(),
                    limit.as_secs()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Flushes, ends every [`Follow`] (after the records already written)
    /// and refuses further writes. Called when the container stops; a
    /// restart opens a new writer.
    pub fn close(&self) -> Result<(), LogError> {
        self.handle.shared.close()
    }

    /// Follows the records written from now on; see [`Follow`].
    pub fn subscribe(&self) -> Follow {
        let shared = &self.handle.shared;
        // Under the lock, no record is between being in the files and being
        // sent: those before the mark are in the files, the rest will reach
        // the receiver.
        let state = shared.lock();
        let out = &state.out;
        let mark = Position {
            generation: out.generation,
            offset: out.size,
        };
        Follow {
            shared: shared.clone(),
            receiver: out.sender.as_ref().map(broadcast::Sender::subscribe),
            mark,
            position: mark,
            next_seq: out.seq,
            replay: None,
            missed: 0,
            pending: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.handle.shared.dir
    }
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (f.debug_struct("LogWriter"))
            .field("dir", &self.handle.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while writing leaves at worst a size miscounted by one
        // record: logging goes on rather than failing every later write.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        if state.out.sender.is_none() {
            return Ok(());
        }
        let flushed = state.flush(self);
        // Dropping the sender ends followers once they have received every
        // record sent, the flushed ones included.
        state.out.sender = None;
        flushed
    }

    /// The files holding the records between `from` and `to`, oldest first.
    /// Opened under the lock, so that no rotation shifts a name between two
    /// opens, and each file's generation is known; read afterwards, as the
    /// writer goes on.
    fn segments(&self, from: Position, to: Position) -> Result<Vec<Segment>, LogError> {
        let state = self.lock();
        let out = &state.out;
        let mut segments = Vec::new();
        for k in (0..=out.rotated).rev() {
            let generation = out.generation - i64::from(k);
            if !(from.generation..=to.generation).contains(&generation) {
                continue;
            }
            let path = file_path(&self.dir, k);
            let Some(file) = open_existing(&path)? else {
                continue;
            };
            let start = if generation == from.generation {
                from.offset
            } else {
                0
            };
            let end = if generation == to.generation {
                to.offset
            } else {
                u64::MAX
            };
            if start < end {
                segments.push(Segment {
                    path,
                    file,
                    start,
                    end,
                });
            }
        }
        Ok(segments)
    }
}

impl State {
    fn flush(&mut self, shared: &Shared) -> Result<(), LogError> {
        let mut result = Ok(());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = &mut self.partial[stream.index()];
            if !partial.is_empty() {
                let written = self
                    .out
                    .write_record(shared, stream, partial, SystemTime::now());
                partial.clear();
                result = result.and(written);
            }
        }
        result
    }
}

/// Cuts `input`, the continuation of the partial line `partial`, into
/// records: up to a newline, or [`MAX_RECORD`] bytes without one. What is
/// left is kept in `partial`.
fn split_lines(
    partial: &mut Vec<u8>,
    mut input: &[u8],
    mut emit: impl FnMut(&[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    while !input.is_empty() {
        let room = MAX_RECORD - partial.len();
        let window = &input[..input.len().min(room)];
        let taken = match window.iter().position(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None if window.len() == room => room,
            None => {
                partial.extend_from_slice(window);
                return Ok(());
            }
        };
        let (record, rest) = input.split_at(taken);
        input = rest;
        if partial.is_empty() {
            emit(record)?;
        } else {
            partial.extend_from_slice(record);
            let emitted = emit(partial.as_slice());
            partial.clear();
            emitted?;
        }
    }
    Ok(())
}

impl Output {
    fn write_record(
        &mut self,
        shared: &Shared,
        stream: Stream,
        payload: &[u8],
        time: SystemTime,
    ) -> Result<(), LogError> {
        let path = file_path(&shared.dir, 0);
        // Docker's encoder does the same to bytes that are not UTF-8; live
        // followers then see what `docker logs` will.
        let log = String::from_utf8_lossy(payload);
        let time = clamp(time);
        self.line.clear();
        let record = RecordOut {
            log: &log,
            stream,
            time,
        };
        serde_json::to_writer(&mut self.line, &record)
            .map_err(|e| io_error("write", &path)(e.into()))?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        let newline = u64::from(self.needs_newline);
        if self.size > 0 && self.size + newline + len > shared.options.max_size {
            self.rotate(shared)?;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                let file = open_log(&path)?;
                self.size = file.metadata().map_err(io_error("read", &path))?.len();
                file
            }
        };
        let file = self.file.insert(file);
        if self.needs_newline {
            file.write_all(b"\n").map_err(io_error("write", &path))?;
            self.size += 1;
            self.needs_newline = false;
        }
        if let Err(e) = file.write_all(&self.line) {
            // Part of the record may have reached the file: count it, and
            // seal it off before the next one.
            self.size = file.metadata().map_or(self.size, |meta| meta.len());
            self.needs_newline = true;
            return Err(io_error("write", &path)(e));
        }
        let start = Position {
            generation: self.generation,
            offset: self.size,
        };
        self.size += len;
        let seq = self.seq;
        self.seq += 1;
        if let Some(sender) = &self.sender
            && sender.receiver_count() > 0
        {
            let entry = LogEntry {
                stream,
                time,
                bytes: Bytes::copy_from_slice(log.as_bytes()),
            };
            let end = Position {
                generation: self.generation,
                offset: self.size,
            };
            // Fails only if every follower went away meanwhile.
            let _ = sender.send(Sent {
                entry,
                seq,
                start,
                end,
            });
        }
        Ok(())
    }

    /// Shifts the rotated files up by one, dropping the oldest beyond the
    /// bound, and moves the current file to `.1`. A file missing (removed by
    /// hand) is skipped rather than stopping the log.
    fn rotate(&mut self, shared: &Shared) -> Result<(), LogError> {
        let dir = &shared.dir;
        let keep = shared.options.max_file - 1;
        if keep == 0 {
            // Docker truncates the file in place; a new file looks the same
            // to whoever opens it by name, and a follower that opened the
            // old one for its history reads it whole.
            remove_existing(&file_path(dir, 0))?;
        } else {
            if self.rotated == keep {
                remove_existing(&file_path(dir, keep))?;
                self.rotated -= 1;
            }
            for k in (0..=self.rotated).rev() {
                let from = file_path(dir, k);
                match fs::rename(&from, file_path(dir, k + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error("rotate", &from)(e));
                    }
                    _ => {}
                }
            }
            self.rotated += 1;
        }
        self.file = None;
        self.size = 0;
        self.generation += 1;
        self.needs_newline = false;
        Ok(())
    }
}

fn open_log(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        // As Docker's: a log holds whatever the app printed, secrets too.
        .mode(0o640)
        .open(path)
        .map_err(io_error("open", path))
}

fn open_existing(path: &Path) -> Result<Option<File>, LogError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("open", path)(e)),
    }
}

fn remove_existing(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Reads the log in `dir`: the entries of every file, oldest first (`.N` …
/// `.1`, then `container.log`), that pass `options`. No log yet is an empty
/// one. A line that is not a record (a torn last line after a crash) is
/// skipped with a warning.
///
/// The files are read as they were when this is called; a writer, in this
/// process or another, may go on meanwhile.
pub fn read(dir: &Path, options: &ReadOptions) -> Result<Entries, LogError> {
    Ok(Entries::new(snapshot(dir)?, *options))
}

/// The files of `dir`, oldest first, as one consistent set although a
/// writer without our lock may rotate them meanwhile (which, opened one by
/// one, could show a file twice or skip one).
///
/// They are opened newest first, then each name is checked to still hold
/// the file opened (a missing one to still be missing). A file only ever
/// moves to an older name, so a name that holds the same file at its open
/// and at its check held it throughout; and every open-to-check interval
/// spans the moment between the last open and the first check, when all
/// the names held the files opened, unless a rotation happened then, which
/// changes the current file's name and fails the check.
fn snapshot(dir: &Path) -> Result<Vec<Segment>, LogError> {
    const ATTEMPTS: usize = 8;
    let identity = |meta: &Metadata| (meta.dev(), meta.ino());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut opened = Vec::new();
        for k in 0.. {
            let path = file_path(dir, k);
            let file = match open_existing(&path)? {
                Some(file) => {
                    let meta = file.metadata().map_err(io_error("read", &path))?;
                    Some((file, meta))
                }
                None => None,
            };
            // Between a rotation's rename and the next record, there is no
            // current file but there are rotated ones.
            let last = file.is_none() && k > 0;
            opened.push((path, file));
            if last {
                break;
            }
        }
        let stable = opened.iter().all(|(path, file)| {
            let now = fs::metadata(path).ok();
            now.as_ref().map(identity) == file.as_ref().map(|(_, meta)| identity(meta))
        });
        if stable || attempt == ATTEMPTS {
            if !stable {
                tracing::warn!(
                    "the logs in `{}` kept rotating while being opened: reading them as found",
                    dir.display()
                );
            }
            let segments = opened.into_iter().rev().filter_map(|(path, file)| {
                let (file, meta) = file?;
                Some(Segment {
                    path,
                    file,
                    start: 0,
                    // A file still written is read as it was.
                    end: meta.len(),
                })
            });
            return Ok(segments.collect());
        }
    }
}

/// A byte range of one open log file.
struct Segment {
    path: PathBuf,
    file: File,
    start: u64,
    end: u64,
}

impl Segment {
    fn into_reader(mut self) -> Result<(PathBuf, BufReader<Take<File>>), LogError> {
        if self.start > 0 {
            (self.file.seek(SeekFrom::Start(self.start))).map_err(io_error("read", &self.path))?;
        }
        let len = self.end.saturating_sub(self.start);
        Ok((self.path, BufReader::new(self.file.take(len))))
    }
}

/// The entries of [`read`] and [`Follow::history`]: read as iterated, one
/// line in memory at a time, or, for `tail`, at most that many entries.
/// Ends after the first error.
pub struct Entries {
    segments: std::vec::IntoIter<Segment>,
    reader: Option<(PathBuf, BufReader<Take<File>>)>,
    options: ReadOptions,
    tail: Tail,
    line: Vec<u8>,
    done: bool,
}

enum Tail {
    All,
    /// The last N entries, not collected yet.
    Last(usize),
    Collected(VecDeque<LogEntry>),
}

impl Entries {
    fn new(segments: Vec<Segment>, options: ReadOptions) -> Entries {
        Entries {
            segments: segments.into_iter(),
            reader: None,
            options,
            tail: options.tail.map_or(Tail::All, Tail::Last),
            line: Vec::new(),
            done: false,
        }
    }

    fn next_matching(&mut self) -> Option<Result<LogEntry, LogError>> {
        while !self.done {
            let Some((path, reader)) = &mut self.reader else {
                match self.segments.next().map(Segment::into_reader) {
                    Some(Ok(reader)) => self.reader = Some(reader),
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    None => self.done = true,
                }
                continue;
            };
            match read_line(reader, &mut self.line) {
                Ok(Line::End) => self.reader = None,
                Ok(Line::TooLong) => tracing::warn!(
                    "skipping a line of `{}` longer than {MAX_LINE} bytes: not a log record",
                    path.display()
                ),
                Ok(Line::Read) => {
                    if let Some(entry) = parse(path, &self.line)
                        && self.options.matches(&entry)
                    {
                        return Some(Ok(entry));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(io_error("read", path)(e)));
                }
            }
        }
        None
    }
}

impl Iterator for Entries {
    type Item = Result<LogEntry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.tail {
            Tail::All => self.next_matching(),
            Tail::Collected(entries) => entries.pop_front().map(Ok),
            &mut Tail::Last(n) => {
                let mut last = VecDeque::with_capacity(n.min(FOLLOW_CAPACITY));
                while n > 0
                    && let Some(entry) = self.next_matching()
                {
                    match entry {
                        Ok(entry) => {
                            if last.len() == n {
                                last.pop_front();
                            }
                            last.push_back(entry);
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                self.tail = Tail::Collected(last);
                self.next()
            }
        }
    }
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (f.debug_struct("Entries"))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Line {
    Read,
    TooLong,
    End,
}

/// Reads a line, without its `\n`, into `line`; a line longer than
/// [`MAX_LINE`] is consumed but not kept. The last line may lack its
/// newline (a torn record): it is returned like any other, to be parsed.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::End
            } else {
                Line::Read
            });
        }
        let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(newline) => (&buf[..newline], true),
            None => (buf, false),
        };
        let used = chunk.len() + usize::from(complete);
        if !too_long && line.len() + chunk.len() <= MAX_LINE {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        reader.consume(used);
        if complete {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

fn parse(path: &Path, line: &[u8]) -> Option<LogEntry> {
    // An empty line is the newline that sealed off a torn record.
    if line.is_empty() {
        return None;
    }
    match serde_json::from_slice::<RecordIn>(line) {
        Ok(record) => Some(LogEntry {
            stream: record.stream,
            time: record.time,
            bytes: Bytes::from(record.log),
        }),
        Err(e) => {
            tracing::warn!(
                "skipping a line of `{}` that is not a log record: {e}",
                path.display()
            );
            None
        }
    }
}

/// The records of a log from a moment on ([`LogWriter::subscribe`]), for
/// `docker logs -f` and attach: [`Follow::history`] gives those written
/// before it, [`Follow::next`] those after, each record exactly once.
///
/// No gap, no duplicate: a record is written to the file and sent to the
/// followers under the writer's lock, and `subscribe` takes the same lock
/// to create the receiver and to note the end of the current file (its
/// generation and size, the mark). Every record before the mark was sent
/// before the receiver existed, and every record after it reaches the
/// receiver. `history` reads the files up to the mark: the file of the
/// mark's generation up to its size, the older files whole, the newer ones
/// not at all, whichever names rotations have moved them to since. Offsets
/// rather than a count of records, because the files hold no count and
/// rotation drops their oldest records.
///
/// A follower more than 1024 records behind loses the oldest from the
/// channel. The records carry sequence numbers and positions, so the next
/// one received shows the gap and where it lies in the files: the missing
/// records are re-read from there before it is delivered. Those already
/// rotated away are lost, with a warning saying how many. The re-reading is
/// a synchronous read of local files, as writing them is.
pub struct Follow {
    shared: Arc<Shared>,
    /// `None` when the log was closed, or once it has ended.
    receiver: Option<broadcast::Receiver<Sent>>,
    mark: Position,
    /// The end of the last record delivered (at first the mark).
    position: Position,
    /// The sequence number of the next record to deliver.
    next_seq: u64,
    /// Records of a gap, re-read from the files, and how many of the gap
    /// are still to come.
    replay: Option<Entries>,
    missed: u64,
    /// The record that showed the gap, delivered after it.
    pending: Option<Sent>,
}

impl Follow {
    /// The entries written before the subscription that pass `options`,
    /// as [`read`] gives them. Works after the log is closed too.
    pub fn history(&self, options: &ReadOptions) -> Result<Entries, LogError> {
        let segments = self.shared.segments(Position::START, self.mark)?;
        Ok(Entries::new(segments, *options))
    }

    /// The next record written after the subscription, waiting for it;
    /// `None` once the log is closed (or every writer dropped) and every
    /// record written before has been delivered. Cancel-safe: a call
    /// dropped while waiting loses nothing.
    pub async fn next(&mut self) -> Option<LogEntry> {
        loop {
            if let Some(replay) = &mut self.replay {
                match replay.next() {
                    Some(Ok(entry)) => {
                        self.missed = self.missed.saturating_sub(1);
                        return Some(entry);
                    }
                    Some(Err(e)) => tracing::warn!("following the logs: {e}"),
                    None => {}
                }
                if self.missed > 0 {
                    tracing::warn!(
                        "a follower of the logs in `{}` fell behind: {} records were rotated away before it could read them",
                        self.shared.dir.display(),
                        self.missed
                    );
                }
                self.replay = None;
                self.missed = 0;
            }
            if let Some(sent) = self.pending.take() {
                return Some(self.deliver(sent));
            }
            let receiver = self.receiver.as_mut()?;
            match receiver.recv().await {
                Ok(sent) if sent.seq == self.next_seq => return Some(self.deliver(sent)),
                // Sent before the subscription: cannot happen, since the
                // receiver was created under the writer's lock.
                Ok(sent) if sent.seq < self.next_seq => {}
                Ok(sent) => {
                    self.missed = sent.seq - self.next_seq;
                    match self.shared.segments(self.position, sent.start) {
                        Ok(segments) => {
                            self.replay = Some(Entries::new(segments, ReadOptions::default()));
                        }
                        Err(e) => tracing::warn!("following the logs: {e}"),
                    }
                    self.pending = Some(sent);
                }
                // The next record received is the oldest the channel kept;
                // its sequence number shows the gap.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.receiver = None;
                    return None;
                }
            }
        }
    }

    fn deliver(&mut self, sent: Sent) -> LogEntry {
        self.next_seq = sent.seq + 1;
        self.position = sent.end;
        sent.entry
    }
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (f.debug_struct("Follow"))
            .field("dir", &self.shared.dir)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn all() -> ReadOptions {
        ReadOptions::default()
    }

    fn entries(dir: &Path, options: &ReadOptions) -> Vec<LogEntry> {
        read(dir, options).unwrap().map(Result::unwrap).collect()
    }

    fn texts(entries: impl IntoIterator<Item = LogEntry>) -> Vec<String> {
        (entries.into_iter())
            .map(|entry| String::from_utf8(entry.bytes.to_vec()).unwrap())
            .collect()
    }

    /// The numbers of lines written as `"{n} …\n"`.
    fn numbers(entries: impl IntoIterator<Item = LogEntry>) -> Vec<usize> {
        (texts(entries).iter())
            .map(|text| text.split(' ').next().unwrap().trim().parse().unwrap())
            .collect()
    }

    fn assert_consecutive(numbers: &[usize]) {
        for pair in numbers.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "{numbers:?}");
        }
    }

    /// The log files of `dir` and their sizes, by name.
    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<_> = (fs::read_dir(dir).unwrap())
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                (name, entry.metadata().unwrap().len())
            })
            .collect();
        files.sort();
        files
    }

    fn names(dir: &Path) -> Vec<String> {
        files(dir).into_iter().map(|(name, _)| name).collect()
    }

    fn at(second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + second)
    }

    #[test]
    fn records_are_docker_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        let time = humantime::parse_rfc3339("2026-12-01T16:30:00.123456789Z").unwrap();
        writer
            .write_with_clock(Stream::Stdout, b"hello\n", || time)
            .unwrap();
        let whole = humantime::parse_rfc3339("2026-12-01T16:30:01Z").unwrap();
        (writer.write_with_clock(Stream::Stderr, b"say \"hi\"\t\xff\n", || whole)).unwrap();
        let text = fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"log":"hello\n","stream":"stdout","time":"2026-12-01T16:30:00.123456789Z"}"#,
                "\n",
                r#"{"log":"say \"hi\"\t"#,
                "\u{fffd}",
                r#"\n","stream":"stderr","time":"2026-12-01T16:30:01.000000000Z"}"#,
                "\n",
            )
        );
        assert_eq!(
            entries(dir.path(), &all()),
            [
                LogEntry {
                    stream: Stream::Stdout,
                    time,
                    bytes: Bytes::from("hello\n"),
                },
                LogEntry {
                    stream: Stream::Stderr,
                    time: whole,
                    bytes: Bytes::from("say \"hi\"\t\u{fffd}\n"),
                },
            ]
        );
    }

    #[test]
    fn partial_lines_are_joined_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"hel").unwrap();
        writer.write(Stream::Stderr, b"err").unwrap();
        writer.write(Stream::Stdout, b"lo\nwor").unwrap();
        writer.write(Stream::Stderr, b"or\n").unwrap();
        writer.write(Stream::Stdout, b"ld\n\nunfinished").unwrap();
        let got = entries(dir.path(), &all());
        let streams: Vec<_> = got.iter().map(|entry| entry.stream).collect();
        assert_eq!(
            streams,
            [
                Stream::Stdout,
                Stream::Stderr,
                Stream::Stdout,
                Stream::Stdout
            ]
        );
        assert_eq!(texts(got), ["hello\n", "error\n", "world\n", "\n"]);
        writer.flush().unwrap();
        let got = entries(dir.path(), &all());
        assert_eq!(texts(got)[4..], ["unfinished"]);
    }

    #[test]
    fn lines_are_cut_at_16_kib() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        // Joined across writes, then cut when the buffer is full.
        let long = vec![b'a'; MAX_RECORD + 100];
        writer.write(Stream::Stdout, &long[..10_000]).unwrap();
        writer.write(Stream::Stdout, &long[10_000..]).unwrap();
        writer.write(Stream::Stdout, b"\n").unwrap();
        // A long line in one write.
        let mut line = vec![b'b'; 2 * MAX_RECORD + 7];
        line.push(b'\n');
        writer.write(Stream::Stderr, &line).unwrap();
        // A line of exactly 16 KiB: its newline comes as a record of its
        // own, as with Docker.
        let mut line = vec![b'c'; MAX_RECORD];
        line.push(b'\n');
        writer.write(Stream::Stdout, &line).unwrap();

        let got = entries(dir.path(), &all());
        let shapes: Vec<_> = (got.iter())
            .map(|entry| (entry.bytes.len(), entry.bytes.ends_with(b"\n")))
            .collect();
        assert_eq!(
            shapes,
            [
                (MAX_RECORD, false),
                (101, true),
                (MAX_RECORD, false),
                (MAX_RECORD, false),
                (8, true),
                (MAX_RECORD, false),
                (1, true),
            ]
        );
        let joined: Vec<u8> = (got[..2].iter()).flat_map(|e| e.bytes.to_vec()).collect();
        assert_eq!(joined[..MAX_RECORD + 100], long[..]);
    }

    #[test]
    fn rotation_bounds_the_files_under_a_flood() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 4096,
            max_file: 3,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        let (mut written, mut n) = (0, 0);
        while written < 1 << 20 {
            let line = format!("{n} {}\n", "x".repeat(n % 60));
            writer.write(Stream::Stdout, line.as_bytes()).unwrap();
            written += line.len();
            n += 1;
            if n % 97 == 0 {
                let files = files(dir.path());
                assert!(files.len() <= 3, "{files:?}");
                assert!(files.iter().all(|(_, size)| *size <= 4096), "{files:?}");
            }
        }
        assert_eq!(
            names(dir.path()),
            ["container.log", "container.log.1", "container.log.2"]
        );
        let numbers = numbers(entries(dir.path(), &all()));
        assert_consecutive(&numbers);
        assert_eq!(numbers.last(), Some(&(n - 1)));
        // Two full files and some: the oldest lines are gone.
        assert!(numbers.len() > 2 * (4096 / 150), "{}", numbers.len());
    }

    #[test]
    fn max_file_1_keeps_only_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 1024,
            max_file: 1,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        for n in 0..200 {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
        let files = files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].1 <= 1024, "{files:?}");
        let numbers = numbers(entries(dir.path(), &all()));
        assert_consecutive(&numbers);
        assert_eq!(numbers.last(), Some(&199));
        assert!(numbers.len() < 200);
    }

    #[test]
    fn tail_reads_the_last_entries_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 256,
            max_file: 100,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        for n in 0..50 {
            let stream = if n % 10 == 3 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            writer.write(stream, format!("{n}\n").as_bytes()).unwrap();
        }
        assert!(names(dir.path()).len() > 5);
        let tail = |tail, stderr: bool| {
            let options = ReadOptions {
                tail: Some(tail),
                stdout: !stderr,
                stderr,
                ..all()
            };
            numbers(entries(dir.path(), &options))
        };
        assert_eq!(tail(5, false), [45, 46, 47, 48, 49]);
        assert_eq!(tail(0, false), [] as [usize; 0]);
        assert_eq!(tail(1000, false).len(), 45);
        assert_eq!(tail(2, true), [33, 43]);
        let all_of_them = numbers(entries(dir.path(), &all()));
        assert_eq!(all_of_them, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn since_and_until_select_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        for n in 0..10 {
            let line = format!("{n}\n");
            (writer.write_with_clock(Stream::Stdout, line.as_bytes(), || at(n))).unwrap();
        }
        let between = |since, until| {
            let options = ReadOptions {
                since,
                until,
                ..all()
            };
            numbers(entries(dir.path(), &options))
        };
        assert_eq!(between(Some(at(3)), Some(at(6))), [3, 4, 5, 6]);
        assert_eq!(between(Some(at(8)), None), [8, 9]);
        assert_eq!(between(None, Some(at(1))), [0, 1]);
        let late = ReadOptions {
            since: Some(at(5)),
            tail: Some(2),
            ..all()
        };
        assert_eq!(numbers(entries(dir.path(), &late)), [8, 9]);
    }

    #[test]
    fn streams_are_selected() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        for n in 0..6 {
            let stream = if n % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            writer.write(stream, format!("{n}\n").as_bytes()).unwrap();
        }
        let only = |stdout, stderr| {
            let options = ReadOptions {
                stdout,
                stderr,
                ..all()
            };
            numbers(entries(dir.path(), &options))
        };
        assert_eq!(only(true, false), [0, 2, 4]);
        assert_eq!(only(false, true), [1, 3, 5]);
        assert_eq!(only(true, true), [0, 1, 2, 3, 4, 5]);
        assert_eq!(only(false, false), [] as [usize; 0]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_sealed_off() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"1 before\n").unwrap();
        drop(writer);
        // What a crash in the middle of a write leaves.
        let path = dir.path().join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"log":"2 torn"#).unwrap();
        assert_eq!(numbers(entries(dir.path(), &all())), [1]);

        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"3 after\n").unwrap();
        assert_eq!(numbers(entries(dir.path(), &all())), [1, 3]);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().nth(1), Some(r#"{"log":"2 torn"#));
    }

    #[test]
    fn reopening_appends_and_drops_files_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 100,
            max_file: 5,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        for n in 0..20 {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
        drop(writer);
        assert_eq!(names(dir.path()).len(), 5);
        let before = numbers(entries(dir.path(), &all()));

        // Larger files this time, so that nothing rotates away.
        let larger = LogOptions {
            max_size: 1 << 20,
            ..options
        };
        let writer = LogWriter::open(dir.path(), larger).unwrap();
        writer.write(Stream::Stdout, b"20\n").unwrap();
        let after = numbers(entries(dir.path(), &all()));
        assert_eq!(before, [15, 16, 17, 18, 19]);
        assert_eq!(after, [15, 16, 17, 18, 19, 20]);
        drop(writer);

        let fewer = LogOptions {
            max_file: 2,
            ..options
        };
        let writer = LogWriter::open(dir.path(), fewer).unwrap();
        assert_eq!(names(dir.path()), ["container.log", "container.log.1"]);
        writer.write(Stream::Stdout, b"21\n").unwrap();
        let numbers = numbers(entries(dir.path(), &all()));
        assert_consecutive(&numbers);
        assert_eq!(numbers.last(), Some(&21));
    }

    #[test]
    fn no_log_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(entries(dir.path(), &all()).is_empty());
        assert!(entries(&dir.path().join("missing"), &all()).is_empty());
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        assert!(entries(dir.path(), &all()).is_empty());
        assert_eq!(writer.subscribe().history(&all()).unwrap().count(), 0);
    }

    #[test]
    fn reading_during_rotation_sees_consecutive_records() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 2048,
            max_file: 4,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        let flood = std::thread::spawn(move || {
            for n in 0..30_000 {
                writer
                    .write(Stream::Stdout, format!("{n} x\n").as_bytes())
                    .unwrap();
            }
        });
        let mut reads = 0;
        while !flood.is_finished() || reads == 0 {
            assert_consecutive(&numbers(entries(dir.path(), &all())));
            reads += 1;
        }
        flood.join().unwrap();
    }

    #[test]
    fn writers_on_many_threads_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 16 << 10,
            max_file: 100,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        const THREADS: usize = 8;
        const LINES: usize = 500;
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    let stream = if thread % 2 == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    // Two lines per write, so that a write is more than one
                    // record.
                    for n in (0..LINES).step_by(2) {
                        let pad = "y".repeat(thread * 7);
                        let lines = format!("{thread} {n} {pad}\n{thread} {} {pad}\n", n + 1);
                        writer.write(stream, lines.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut next = [0; THREADS];
        let got = entries(dir.path(), &all());
        assert_eq!(got.len(), THREADS * LINES);
        for text in texts(got) {
            let fields: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
            let thread: usize = fields[0].parse().unwrap();
            assert_eq!(fields[1], next[thread].to_string(), "{text:?}");
            assert_eq!(fields[2], "y".repeat(thread * 7), "{text:?}");
            assert_eq!(fields.len(), 3, "{text:?}");
            next[thread] += 1;
        }
        assert_eq!(next, [LINES; THREADS]);
    }

    #[tokio::test]
    async fn follow_gives_each_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"1\n2\n").unwrap();
        let mut follow = writer.subscribe();
        writer.write(Stream::Stderr, b"3\n").unwrap();
        writer.write(Stream::Stdout, b"4\nunfinished").unwrap();
        assert_eq!(
            numbers(follow.history(&all()).unwrap().map(Result::unwrap)),
            [1, 2]
        );
        let live = follow.next().await.unwrap();
        assert_eq!(
            (live.stream, &live.bytes[..]),
            (Stream::Stderr, &b"3\n"[..])
        );
        assert_eq!(&follow.next().await.unwrap().bytes[..], b"4\n");
        writer.close().unwrap();
        assert_eq!(&follow.next().await.unwrap().bytes[..], b"unfinished");
        assert_eq!(follow.next().await, None);
        assert_eq!(follow.next().await, None);
        assert_eq!(follow.history(&all()).unwrap().count(), 2);
        assert!(matches!(
            writer.write(Stream::Stdout, b"late\n"),
            Err(LogError::Closed { .. })
        ));
    }

    #[tokio::test]
    async fn following_a_flood_has_no_gap_and_no_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        const RECORDS: usize = 20_000;
        let (started, wait) = std::sync::mpsc::channel();
        let flood = std::thread::spawn({
            let writer = writer.clone();
            move || {
                for n in 0..RECORDS {
                    writer
                        .write(Stream::Stdout, format!("{n}\n").as_bytes())
                        .unwrap();
                    if n == 1000 {
                        started.send(()).unwrap();
                    }
                }
            }
        });
        wait.recv().unwrap();
        // Subscribed in the middle of the flood, and read only after it:
        // the follower falls far behind and re-reads from the files.
        let mut follow = writer.subscribe();
        flood.join().unwrap();
        writer.close().unwrap();
        let mut got = numbers(follow.history(&all()).unwrap().map(Result::unwrap));
        let history = got.len();
        while let Some(entry) = follow.next().await {
            got.extend(numbers([entry]));
        }
        assert!(history > 1000, "{history}");
        assert_eq!(got, (0..RECORDS).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_follower_far_behind_rereads_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"0\n").unwrap();
        let mut follow = writer.subscribe();
        // Nothing to deliver yet: polled once and dropped, losing nothing.
        assert_eq!(follow.next().now_or_never(), None);
        for n in 1..5000 {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(numbers([follow.next().await.unwrap()]), [1]);
        for n in 5000..6000 {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
        writer.close().unwrap();
        let mut got = vec![1];
        while let Some(entry) = follow.next().await {
            got.extend(numbers([entry]));
        }
        assert_eq!(got, (1..6000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_follower_behind_rotation_loses_only_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            max_size: 4096,
            max_file: 2,
        };
        let writer = LogWriter::open(dir.path(), options).unwrap();
        let mut follow = writer.subscribe();
        for n in 0..5000 {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
        writer.close().unwrap();
        let mut got = Vec::new();
        while let Some(entry) = follow.next().await {
            got.extend(numbers([entry]));
        }
        assert!(got.windows(2).all(|pair| pair[0] < pair[1]), "{got:?}");
        // What the channel kept, and what the files still had before it.
        assert!(
            got.len() >= FOLLOW_CAPACITY && got.len() < 5000,
            "{}",
            got.len()
        );
        assert_eq!(got.last(), Some(&4999));
    }

    #[tokio::test]
    async fn subscribing_after_close_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        writer.write(Stream::Stdout, b"1\n").unwrap();
        writer.close().unwrap();
        let mut follow = writer.subscribe();
        assert_eq!(follow.next().await, None);
        assert_eq!(
            numbers(follow.history(&all()).unwrap().map(Result::unwrap)),
            [1]
        );
    }

    #[tokio::test]
    async fn dropping_the_last_writer_ends_followers() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::open(dir.path(), LogOptions::default()).unwrap();
        let mut follow = writer.subscribe();
        let clone = writer.clone();
        writer.write(Stream::Stdout, b"partial").unwrap();
        drop(writer);
        clone.write(Stream::Stdout, b" line\nrest").unwrap();
        drop(clone);
        assert_eq!(&follow.next().await.unwrap().bytes[..], b"partial line\n");
        // Flushed when the last writer went.
        assert_eq!(&follow.next().await.unwrap().bytes[..], b"rest");
        assert_eq!(follow.next().await, None);
    }

    #[test]
    fn docker_log_opts_are_parsed() {
        let parse = |pairs: &[(&str, &str)]| {
            let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            LogOptions::from_docker(&pairs.collect())
        };
        assert_eq!(parse(&[]).unwrap(), LogOptions::default());
        assert_eq!(
            parse(&[("max-size", "10m"), ("max-file", "5")]).unwrap(),
            LogOptions {
                max_size: 10 << 20,
                max_file: 5,
            }
        );
        for (text, size) in [
            ("4096", 4096),
            ("512k", 512 << 10),
            ("1g", 1 << 30),
            ("10M", 10 << 20),
            ("10mb", 10 << 20),
            ("10MiB", 10 << 20),
        ] {
            assert_eq!(
                parse(&[("max-size", text)]).unwrap().max_size,
                size,
                "{text}"
            );
        }
        let error = |pairs: &[(&str, &str)]| parse(pairs).unwrap_err().to_string();
        assert_eq!(
            error(&[("compress", "true")]),
            "unknown log option `compress`: the json-file driver takes `max-size` and `max-file`"
        );
        assert_eq!(
            error(&[("max-size", "ten")]),
            "invalid log option `max-size=ten`: expected a positive size like `10m`, `512k` or `1g`"
        );
        for bad in [
            "0",
            "-1",
            "1.5m",
            "m",
            "99999999999999999999",
            "17179869184g",
        ] {
            assert!(error(&[("max-size", bad)]).contains(&format!("`max-size={bad}`")));
        }
        assert_eq!(
            error(&[("max-file", "0")]),
            "invalid log option `max-file=0`: expected a number of files, at least 1"
        );
        assert!(error(&[("max-file", "three")]).contains("`max-file=three`"));
        let zero = LogOptions {
            max_size: 0,
            max_file: 1,
        };
        assert!(matches!(
            LogWriter::open(Path::new("/nonexistent"), zero),
            Err(LogError::InvalidOption { .. })
        ));
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = LogWriter::open(&missing, LogOptions::default()).unwrap_err();
        let message = e.to_string();
        let expected = format!("failed to open `{}`: ", missing.join(LOG_FILE).display());
        assert!(message.starts_with(&expected), "{message}");
    }
}
