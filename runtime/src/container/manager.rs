//! The containers of one `$WRUN_HOME`, as the daemon runs them: created,
//! started as tasks on a bounded pool of guest threads, stopped, paused,
//! restarted by their policy, removed; their config and state persisted
//! with atomic writes so that a daemon killed at any point restarts with
//! true states.
//!
//! Each container is isolated as a `wrun run` instance is: its own Store,
//! its own network namespace, only its volumes. A container that traps or
//! exceeds a limit ends alone; its outcome becomes its exit code, as
//! `wrun run` reports it (see [`crate::exit`]).

use super::config::{ContainerConfig, Mount, MountSource, Origin};
use super::control::Control;
use super::events::{Events, Kind};
use super::logs::{self, Follow, LogWriter, ReadOptions, Stream};
use super::restart::Backoff;
use super::state::{State, Status, TransitionError};
use super::stdio::LogOutput;
use super::volumes::{VolumeError, Volumes};
use super::{ContainerSpec, Overrides};
use crate::image::{Image, ImageError, ImageStore, LockGuard};
use crate::{App, Limits, Lookup, RunError, Runtime, SourceKind};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};
use wrun_host_api::fds::FdBudget;
use wrun_host_api::net::{
    Address, Attachment, Namespace, NetSpec, NetworkError, NetworkInfo, NetworkStore, PublishedPort,
};
use wrun_host_api::{Access, Stdin, Volume};

/// SIGTERM: what `stop` ends a container with. A WASI guest has no signal
/// handlers, so the signal's default action applies at once: the guest
/// ends with 143, as a process without a handler does.
pub const SIGTERM: i32 = 15;
/// SIGKILL, `kill`'s default.
pub const SIGKILL: i32 = 9;

/// The exit code recorded for a container that was running when the daemon
/// died (Docker records 255 too).
const DAEMON_DIED: i32 = 255;

/// Why a container operation failed. Each says what a Docker client
/// expects to hear (the daemon maps them to Docker's status codes).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You \
         have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error(
        "Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 128 \
         characters"
    )]
    InvalidName(String),
    #[error("No such image: {0}")]
    ImageNotFound(String),
    /// Nothing to do (Docker's 304: `start` of a running container, `stop`
    /// of a stopped one).
    #[error("container {0} is already {1}")]
    Unchanged(String, &'static str),
    #[error("cannot {what} container: {name}: {reason}")]
    Conflict {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// The container could not start (a port taken, an app that does not
    /// load); it is left exited with the reason as its error.
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Refused as Docker refuses it with a 403 (an endpoint that exists, or
    /// does not).
    #[error("{0}")]
    Forbidden(String),
    #[error("failed to {what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_owned();
    move |source| ContainerError::Io { what, path, source }
}

/// What `wait` waits for (Docker's `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once if it is not running (the default).
    NotRunning,
    /// The next exit after the call (`docker run` without `--rm`).
    NextExit,
    /// Its removal (`docker run --rm`).
    Removed,
}

impl WaitCondition {
    pub fn parse(text: &str) -> Result<WaitCondition, String> {
        match text {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(format!(
                "invalid condition `{other}`: expected not-running, next-exit or removed"
            )),
        }
    }
}

/// How a wait ended: the exit code of the last run, and its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutcome {
    pub exit_code: i32,
    pub error: Option<String>,
}

/// A container as listed or inspected at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub config: ContainerConfig,
    pub state: State,
    /// The ports bound while it runs (with the host's picks).
    pub ports: Vec<PublishedPort>,
    /// Its addresses on its networks while it runs.
    pub addresses: Vec<Address>,
    /// CPU time its current run has used.
    pub cpu_time: Duration,
    /// Linear memory and tables its current run uses now, in bytes.
    pub memory: u64,
    pub dir: PathBuf,
}

/// What changes as a container lives, for waiters.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Runs that have ended so far.
    exits: u64,
    live: bool,
    removed: bool,
    outcome: Option<WaitOutcome>,
}

struct Container {
    id: String,
    dir: PathBuf,
    config: Mutex<ContainerConfig>,
    state: Mutex<State>,
    run: Mutex<Option<Run>>,
    progress: watch::Sender<Progress>,
    /// Serialises start, stop, restart and remove of this container.
    lifecycle: tokio::sync::Mutex<()>,
    /// Wakes a back-off early (stop, rm).
    cancel_restart: tokio::sync::Notify,
    /// The restart policy's back-off, over the restarts in a row.
    backoff: Mutex<Backoff>,
    /// Clients attached before a start, given its output when it starts.
    attachers: Mutex<Vec<oneshot::Sender<Follow>>>,
    /// Keeps prune from removing its image while it exists.
    _image: Option<LockGuard>,
    /// Held while its files are written or removed; true once removed.
    files: Mutex<bool>,
    /// Its stdin, with `open_stdin`.
    stdin: Mutex<StdinPipe>,
}

/// How many bytes of a container's stdin wait for the guest to read them
/// before a writing client is held back.
const STDIN_BUFFER: usize = 64 << 10;

/// A container's stdin: the end its next run reads, and the end attached
/// clients write. A run takes the reader; a new pair is made when a run or
/// a client finds its end gone.
#[derive(Default)]
struct StdinPipe {
    reader: Option<tokio::io::DuplexStream>,
    writer: Option<Arc<tokio::sync::Mutex<tokio::io::DuplexStream>>>,
}

impl StdinPipe {
    fn renew(&mut self) {
        let (writer, reader) = tokio::io::duplex(STDIN_BUFFER);
        self.reader = Some(reader);
        self.writer = Some(Arc::new(tokio::sync::Mutex::new(writer)));
    }
}

/// An attached client's way into a container's stdin.
pub struct StdinWriter {
    writer: Arc<tokio::sync::Mutex<tokio::io::DuplexStream>>,
    container: Arc<Container>,
}

impl StdinWriter {
    /// Writes all of `bytes`, waiting while the guest has not read what
    /// came before (at most 64 KiB wait); an error when its stdin closed.
    pub async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.writer.lock().await.write_all(bytes).await
    }

    /// The client's input ended. With `stdin_once` the guest's stdin ends
    /// too (once every writer is gone); else it stays open for the next
    /// client.
    pub fn finish(self) {
        if lock(&self.container.config).stdin_once {
            let mut pipe = lock(&self.container.stdin);
            if pipe
                .writer
                .as_ref()
                .is_some_and(|w| Arc::ptr_eq(w, &self.writer))
            {
                pipe.writer = None;
            }
        }
    }
}

/// A run in progress.
struct Run {
    control: Control,
    logs: LogWriter,
    ports: Vec<PublishedPort>,
    addresses: Vec<Address>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Container {
    fn name(&self) -> String {
        lock(&self.config).name.clone()
    }

    fn snapshot(&self) -> Snapshot {
        // One lock at a time: `update` takes the state's, then the
        // config's.
        let config = lock(&self.config).clone();
        let state = lock(&self.state).clone();
        let run = lock(&self.run);
        Snapshot {
            id: self.id.clone(),
            config,
            state,
            ports: run.as_ref().map(|r| r.ports.clone()).unwrap_or_default(),
            addresses: run
                .as_ref()
                .map(|r| r.addresses.clone())
                .unwrap_or_default(),
            cpu_time: run
                .as_ref()
                .map(|r| r.control.cpu_time())
                .unwrap_or_default(),
            memory: run.as_ref().map(|r| r.control.memory()).unwrap_or_default(),
            dir: self.dir.clone(),
        }
    }

    fn control(&self) -> Option<Control> {
        lock(&self.run).as_ref().map(|r| r.control.clone())
    }

    fn save_state(&self) -> Result<(), ContainerError> {
        let json = serde_json::to_vec_pretty(&*lock(&self.state)).unwrap_or_default();
        self.save(STATE_FILE, &json)
    }

    fn save_config(&self) -> Result<(), ContainerError> {
        let json = serde_json::to_vec_pretty(&*lock(&self.config)).unwrap_or_default();
        self.save(CONFIG_FILE, &json)
    }

    /// Writes one of its files, unless it has been removed: an exit's last
    /// state write must not race the removal of the directory.
    fn save(&self, file: &str, json: &[u8]) -> Result<(), ContainerError> {
        let removed = lock(&self.files);
        if *removed {
            return Ok(());
        }
        let path = self.dir.join(file);
        crate::atomic::write(&path, json, 0o600).map_err(io("write", &path))
    }

    /// Changes the state, persists it and tells waiters.
    fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        self.change(change, None)
    }

    /// Records the end of a run: the state and the outcome that waiters
    /// are given change in one step, so no waiter sees the container
    /// stopped without its exit code.
    fn end_run<R>(&self, change: impl FnOnce(&mut State) -> R, outcome: WaitOutcome) -> R {
        self.change(change, Some(outcome))
    }

    fn change<R>(&self, change: impl FnOnce(&mut State) -> R, ended: Option<WaitOutcome>) -> R {
        let result = {
            let mut state = lock(&self.state);
            let result = change(&mut state);
            let live = state.status.is_live();
            self.progress.send_modify(|p| {
                p.live = live;
                if let Some(outcome) = ended {
                    p.exits += 1;
                    p.outcome = Some(outcome);
                }
            });
            result
        };
        if let Err(e) = self.save_state() {
            tracing::error!(container = %self.id, "{e}");
        }
        result
    }
}

/// How long a `--rm` container's removal waits for its log's followers.
const LOG_DRAIN: Duration = Duration::from_secs(30);

const CONFIG_FILE: &str = "config.json";
const STATE_FILE: &str = "state.json";

/// Everything a container's start needs besides the container.
pub struct Services {
    pub runtime: Arc<Runtime>,
    pub images: ImageStore,
    pub volumes: Volumes,
    pub networks: NetworkStore,
    /// Where the networks' rendezvous directories live.
    pub runtime_dir: PathBuf,
    /// The pool of threads guests run on.
    pub guests: tokio::runtime::Handle,
    /// The most containers that may run at once: each holds descriptors
    /// and memory mappings of the daemon's process, whose limits are the
    /// daemon's to respect (see [`running_bound`]).
    pub max_running: usize,
}

/// How many containers a process may run at once within its limits: each
/// running container holds about 3 descriptors and 10 memory mappings (as
/// `bench/density.sh` measured), and the daemon keeps a quarter of each
/// limit for itself, so that a start beyond is refused with a message
/// instead of the process running out (a failed mapping aborts it).
pub fn running_bound(open_files: u64, max_map_count: u64) -> usize {
    let by_fds = open_files.saturating_mul(3) / 4 / 4;
    let by_maps = max_map_count.saturating_mul(3) / 4 / 12;
    usize::try_from(by_fds.min(by_maps).max(1)).unwrap_or(usize::MAX)
}

/// A place among the running containers, given back when dropped.
struct RunSlot(Arc<Shared>);

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The containers of one `$WRUN_HOME` (`containers/<id>/`).
#[derive(Clone)]
pub struct Containers {
    shared: Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    services: Services,
    table: Mutex<Table>,
    events: Events,
    /// Containers running now (holding a [`RunSlot`]).
    running: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Container>>,
    by_name: HashMap<String, String>,
}

impl Containers {
    /// Opens the containers under `home`, as the daemon starts: those found
    /// running were running when a daemon died, and are recorded as exited
    /// (255); those whose restart policy says so are started again.
    pub fn open(home: &Path, services: Services) -> Result<Containers, ContainerError> {
        let root = home.join("containers");
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        let containers = Containers {
            shared: Arc::new(Shared {
                root: root.clone(),
                services,
                table: Mutex::default(),
                events: Events::default(),
                running: std::sync::atomic::AtomicUsize::new(0),
            }),
        };
        let entries = std::fs::read_dir(&root).map_err(io("read", &root))?;
        let mut to_start = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &root))?;
            let dir = entry.path();
            match containers.restore(&dir) {
                Ok(Some(container)) => {
                    let state = lock(&container.state).clone();
                    let policy = lock(&container.config).restart;
                    if policy.starts_with_daemon(&state) {
                        to_start.push(container.id.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping container directory `{}`: {e}", dir.display()),
            }
        }
        for id in to_start {
            let containers = containers.clone();
            containers.shared.services.guests.clone().spawn(async move {
                if let Err(e) = containers.start(&id).await {
                    tracing::warn!(container = %id, "could not restart: {e}");
                }
            });
        }
        Ok(containers)
    }

    /// Reads one container's directory. `None` for a directory that holds
    /// no container (a create that crashed before its config was written).
    fn restore(&self, dir: &Path) -> Result<Option<Arc<Container>>, ContainerError> {
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Ok(None);
        };
        let config_path = dir.join(CONFIG_FILE);
        let config: ContainerConfig = match std::fs::read(&config_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io("parse", &config_path)(std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(dir);
                return Ok(None);
            }
            Err(e) => return Err(io("read", &config_path)(e)),
        };
        let state_path = dir.join(STATE_FILE);
        let mut state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io("parse", &state_path)(std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(SystemTime::now()),
            Err(e) => return Err(io("read", &state_path)(e)),
        };
        let died = matches!(
            state.status,
            Status::Running | Status::Paused | Status::Restarting
        );
        if died {
            let error = "the daemon stopped while the container ran".to_owned();
            state.exited(SystemTime::now(), DAEMON_DIED, Some(error), false);
        }
        let image = self.mark_image(&config.origin).ok().flatten();
        let name = config.name.clone();
        let (progress, _) = watch::channel(Progress {
            outcome: Some(WaitOutcome {
                exit_code: state.exit_code,
                error: state.error.clone(),
            }),
            ..Progress::default()
        });
        let container = Arc::new(Container {
            id: id.clone(),
            dir: dir.to_owned(),
            config: Mutex::new(config),
            state: Mutex::new(state),
            run: Mutex::new(None),
            progress,
            lifecycle: tokio::sync::Mutex::new(()),
            cancel_restart: tokio::sync::Notify::new(),
            backoff: Mutex::default(),
            attachers: Mutex::default(),
            _image: image,
            files: Mutex::new(false),
            stdin: Mutex::default(),
        });
        if died {
            container.save_state()?;
        }
        let mut table = lock(&self.shared.table);
        table.by_name.insert(name, id.clone());
        table.by_id.insert(id, container.clone());
        Ok(Some(container))
    }

    fn mark_image(&self, origin: &Origin) -> Result<Option<LockGuard>, ContainerError> {
        match origin {
            Origin::Image { digest, .. } => {
                let digest = crate::image::Digest::parse(digest)?;
                Ok(Some(self.shared.services.images.mark_in_use(&digest)?))
            }
            Origin::File { .. } => Ok(None),
        }
    }

    /// The container that `key` names: its full id, its name (with or
    /// without Docker's leading `/`), or a unique prefix of its id.
    fn get(&self, key: &str) -> Result<Arc<Container>, ContainerError> {
        let table = lock(&self.shared.table);
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(container) = table.by_id.get(key) {
            return Ok(container.clone());
        }
        if let Some(id) = table.by_name.get(name) {
            return Ok(table.by_id[id].clone());
        }
        let not_found = || ContainerError::NotFound(crate::input::excerpt(key).to_string());
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut matches = table.by_id.iter().filter(|(id, _)| id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some((_, container)), None) => Ok(container.clone()),
            (Some(_), Some(_)) => Err(ContainerError::Invalid(format!(
                "multiple containers found with provided prefix: {key}"
            ))),
            _ => Err(not_found()),
        }
    }

    /// The full id of the container `key` names.
    pub fn resolve(&self, key: &str) -> Result<String, ContainerError> {
        Ok(self.get(key)?.id.clone())
    }

    /// Creates a container (not started). An empty name gets a generated
    /// one; an image origin with no digest is resolved in the local store.
    pub fn create(&self, mut config: ContainerConfig) -> Result<String, ContainerError> {
        if let Origin::Image { reference, digest } = &mut config.origin
            && digest.is_empty()
        {
            let entry = self
                .shared
                .services
                .images
                .find(reference)
                .map_err(|e| match e {
                    ImageError::NotFound { .. } => ContainerError::ImageNotFound(reference.clone()),
                    other => other.into(),
                })?;
            *digest = entry.descriptor.digest.to_string();
        }
        check_config(&config)?;
        // Networks by name from here on, however the client named them. One
        // that does not exist yet is the start's error, as in Docker.
        let store = &self.shared.services.networks;
        let mut networks: Vec<String> = Vec::new();
        for network in std::mem::take(&mut config.networks) {
            let name = match store.find(&network) {
                Ok(info) => info.name,
                Err(NetworkError::NotFound(_)) => network.clone(),
                Err(e) => return Err(e.into()),
            };
            if let Some(aliases) = config.aliases.remove(&network) {
                config.aliases.insert(name.clone(), aliases);
            }
            if !networks.contains(&name) {
                networks.push(name);
            }
        }
        config.networks = networks;
        if let Origin::File { path } = &config.origin
            && !path.is_file()
        {
            return Err(ContainerError::ImageNotFound(path.display().to_string()));
        }
        // Named volumes exist from create on, as Docker's.
        for mount in &config.mounts {
            if let MountSource::Volume(name) = &mount.source {
                self.shared
                    .services
                    .volumes
                    .create(name, Default::default(), false, true)?;
            }
        }
        let id = new_id();
        let image = self.mark_image(&config.origin)?;
        self.make_anonymous_volumes(&mut config)?;
        let made = config.anonymous_volumes.clone();
        let created = self.insert(config, id, image);
        if created.is_err() {
            self.remove_anonymous_volumes(&made);
        }
        created
    }

    /// Gives each of the config's anonymous volume points, and each volume
    /// point of its image that no mount covers, an anonymous volume that
    /// lives as long as the container (Docker's); on failure none is left.
    fn make_anonymous_volumes(&self, config: &mut ContainerConfig) -> Result<(), ContainerError> {
        let mut points = std::mem::take(&mut config.anonymous);
        if let Origin::Image { digest, .. } = &config.origin {
            let images = &self.shared.services.images;
            let image = Image::load(images, &images.find(digest)?)?;
            points.extend(image.defaults.volumes.iter().cloned());
        }
        for point in points {
            if config.mounts.iter().any(|m| m.target == point) {
                continue;
            }
            match self
                .shared
                .services
                .volumes
                .create_anonymous(BTreeMap::new())
            {
                Ok(volume) => {
                    config.anonymous_volumes.push(volume.name.clone());
                    config.mounts.push(Mount {
                        source: MountSource::Volume(volume.name),
                        target: point,
                        read_only: false,
                    });
                }
                Err(e) => {
                    self.remove_anonymous_volumes(&config.anonymous_volumes);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn remove_anonymous_volumes(&self, names: &[String]) {
        for name in names {
            if let Err(e) = self.shared.services.volumes.remove(name) {
                tracing::warn!(volume = %name, "could not remove an anonymous volume: {e}");
            }
        }
    }

    /// Adds a new container to the table and its directory.
    fn insert(
        &self,
        mut config: ContainerConfig,
        id: String,
        image: Option<LockGuard>,
    ) -> Result<String, ContainerError> {
        let mut table = lock(&self.shared.table);
        if config.name.is_empty() {
            config.name = generate_name(|name| table.by_name.contains_key(name));
        } else if !is_valid_name(&config.name) {
            return Err(ContainerError::InvalidName(
                crate::input::excerpt(&config.name).to_string(),
            ));
        } else if let Some(other) = table.by_name.get(&config.name) {
            return Err(ContainerError::NameInUse {
                name: config.name.clone(),
                id: other.clone(),
            });
        }
        let dir = self.shared.root.join(&id);
        std::fs::create_dir(&dir).map_err(io("create", &dir))?;
        let (progress, _) = watch::channel(Progress::default());
        let name = config.name.clone();
        let container = Arc::new(Container {
            id: id.clone(),
            dir: dir.clone(),
            config: Mutex::new(config),
            state: Mutex::new(State::new(SystemTime::now())),
            run: Mutex::new(None),
            progress,
            lifecycle: tokio::sync::Mutex::new(()),
            cancel_restart: tokio::sync::Notify::new(),
            backoff: Mutex::default(),
            attachers: Mutex::default(),
            _image: image,
            files: Mutex::new(false),
            stdin: Mutex::default(),
        });
        // The state first: a directory with a config is a container.
        let saved = container
            .save_state()
            .and_then(|()| container.save_config());
        if let Err(e) = saved {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        table.by_name.insert(name, id.clone());
        table.by_id.insert(id.clone(), container.clone());
        drop(table);
        self.emit(&container, "create", []);
        Ok(id)
    }

    /// A writer into the stdin of a container created with `open_stdin`
    /// (`None` for one without), for an attached client; it may attach
    /// before the start, as `docker run -i` does.
    pub fn stdin(&self, key: &str) -> Result<Option<StdinWriter>, ContainerError> {
        let container = self.get(key)?;
        if !lock(&container.config).open_stdin {
            return Ok(None);
        }
        let writer = {
            let mut pipe = lock(&container.stdin);
            if pipe.writer.is_none() {
                pipe.renew();
            }
            pipe.writer.clone()
        };
        Ok(writer.map(|writer| StdinWriter { writer, container }))
    }

    /// The events of the containers and their networks.
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    /// A container event: its name, image and labels, and `extra`.
    fn emit<const N: usize>(
        &self,
        container: &Container,
        action: &str,
        extra: [(&str, String); N],
    ) {
        let mut attributes = {
            let config = lock(&container.config);
            let mut attributes = config.labels.clone();
            attributes.insert("image".to_owned(), config.image_name());
            attributes.insert("name".to_owned(), config.name.clone());
            attributes
        };
        for (key, value) in extra {
            attributes.insert(key.to_owned(), value);
        }
        self.shared
            .events
            .emit(Kind::Container, action, &container.id, attributes);
    }

    /// A network event about a container.
    fn emit_network(&self, info: &NetworkInfo, action: &str, container: &str) {
        let attributes = BTreeMap::from([
            ("container".to_owned(), container.to_owned()),
            ("name".to_owned(), info.name.clone()),
            ("type".to_owned(), "bridge".to_owned()),
        ]);
        self.shared
            .events
            .emit(Kind::Network, action, &info.id, attributes);
    }

    /// Every container, newest first.
    /// The networks containers join.
    pub fn networks(&self) -> &NetworkStore {
        &self.shared.services.networks
    }

    pub fn list(&self) -> Vec<Snapshot> {
        let containers: Vec<_> = lock(&self.shared.table).by_id.values().cloned().collect();
        let mut snapshots: Vec<_> = containers.iter().map(|c| c.snapshot()).collect();
        snapshots.sort_by_key(|s| std::cmp::Reverse(s.state.created_at));
        snapshots
    }

    pub fn inspect(&self, key: &str) -> Result<Snapshot, ContainerError> {
        Ok(self.get(key)?.snapshot())
    }

    /// Starts the container; returns once its app is loaded and its ports
    /// are bound (an error then leaves it exited, with the reason).
    pub async fn start(&self, key: &str) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let _lifecycle = container.lifecycle.lock().await;
        self.start_locked(&container, false).await
    }

    async fn start_locked(
        &self,
        container: &Arc<Container>,
        by_policy: bool,
    ) -> Result<(), ContainerError> {
        {
            let state = lock(&container.state);
            match state.status {
                Status::Running => {
                    return Err(ContainerError::Unchanged(container.name(), "running"));
                }
                Status::Paused => {
                    return Err(ContainerError::Conflict {
                        what: "start",
                        name: container.name(),
                        reason: TransitionError::Paused.to_string(),
                    });
                }
                Status::Dead => {
                    return Err(ContainerError::Conflict {
                        what: "start",
                        name: container.name(),
                        reason: TransitionError::Dead.to_string(),
                    });
                }
                _ => {}
            }
        }
        let config = lock(&container.config).clone();
        let started = async {
            let slot = self.run_slot()?;
            Ok::<_, ContainerError>((slot, self.prepare(&config).await?))
        };
        let (slot, prepared) = match started.await {
            Ok(started) => started,
            Err(e) => {
                let message = e.to_string();
                let code = match &e {
                    ContainerError::Start(_) => crate::exit::CANNOT_RUN,
                    _ => crate::exit::WRUN_ERROR,
                };
                container.end_run(
                    |s| s.exited(SystemTime::now(), code, Some(message.clone()), false),
                    WaitOutcome {
                        exit_code: code,
                        error: Some(message.clone()),
                    },
                );
                // `--rm`: a container that could not start goes too (the
                // CLI waits for its removal).
                if lock(&container.config).auto_remove
                    && let Err(removal) = self.remove_locked(container, true)
                {
                    tracing::warn!(container = %container.id, "could not remove: {removal}");
                }
                return Err(e);
            }
        };
        let logs = LogWriter::open(&container.dir, config.log)
            .map_err(|e| ContainerError::Start(e.to_string()))?;
        let control = Control::new(config.cpus).with_shares(config.cpu_shares);
        {
            // Under the run's lock, so that an attach sees either the run or
            // the hand-over here, and output from the first byte either way.
            let mut run = lock(&container.run);
            *run = Some(Run {
                control: control.clone(),
                logs: logs.clone(),
                ports: prepared.net.published(),
                addresses: prepared.net.addresses(),
            });
            for attacher in lock(&container.attachers).drain(..) {
                let _ = attacher.send(logs.subscribe());
            }
        }
        let now = SystemTime::now();
        container
            .update(|s| match by_policy {
                true => s.restart_by_policy(now),
                false => s.start(now),
            })
            .map_err(|e| ContainerError::Conflict {
                what: "start",
                name: container.name(),
                reason: e.to_string(),
            })?;
        self.emit(container, "start", []);
        let this = self.clone();
        let container = container.clone();
        self.shared.services.guests.spawn(async move {
            let started = std::time::Instant::now();
            let outcome = this.run(&container, prepared, &logs, &control).await;
            drop(slot);
            // A stop or kill is the user's doing, not the app's failure.
            if let Err(e) = &outcome
                && !matches!(e, RunError::Killed { .. })
            {
                // What `wrun run` prints on stderr, the container's log shows
                // (and attached clients, before their stream ends).
                let _ = logs.write(
                    Stream::Stderr,
                    format!("wrun: {}\n", describe(e)).as_bytes(),
                );
            }
            let _ = logs.flush();
            let _ = logs.close();
            this.exited(&container, outcome, started.elapsed(), &logs)
                .await;
        });
        Ok(())
    }

    /// A place among the running containers, or why there is none.
    fn run_slot(&self) -> Result<RunSlot, ContainerError> {
        use std::sync::atomic::Ordering;
        let max = self.shared.services.max_running;
        let taken = self.shared.running.fetch_add(1, Ordering::Relaxed);
        let slot = RunSlot(self.shared.clone());
        if taken >= max {
            return Err(ContainerError::Start(format!(
                "{max} containers are running, the most this daemon runs at once within its \
                 process's limits on open files and memory mappings (RLIMIT_NOFILE, \
                 vm.max_map_count): stop one, or raise those limits and restart the daemon"
            )));
        }
        Ok(slot)
    }

    /// The spec, the network namespace and the loaded app of one start.
    async fn prepare(&self, config: &ContainerConfig) -> Result<Prepared, ContainerError> {
        let services = &self.shared.services;
        let mut volumes = Vec::new();
        for mount in &config.mounts {
            let host = match &mount.source {
                MountSource::Bind(path) => path.clone(),
                MountSource::Volume(name) => {
                    services
                        .volumes
                        .create(name, Default::default(), false, true)?
                        .mountpoint
                }
            };
            volumes.push(Volume {
                host,
                guest: mount.target.clone(),
                access: match mount.read_only {
                    true => Access::ReadOnly,
                    false => Access::ReadWrite,
                },
            });
        }
        let overrides = Overrides {
            args: config.args.clone(),
            env: config.env.clone(),
            volumes,
            workdir: config.workdir.clone(),
            stdin: Stdin::Empty,
            publish_all: config.publish_all,
        };
        let start_error = |e: &dyn std::fmt::Display| ContainerError::Start(e.to_string());
        let (spec, image) = match &config.origin {
            Origin::File { path } => {
                let argv0 = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (ContainerSpec::from_file(argv0, overrides), None)
            }
            Origin::Image { digest, reference } => {
                let entry = services.images.find(digest).map_err(|e| match e {
                    ImageError::NotFound { .. } => ContainerError::ImageNotFound(reference.clone()),
                    other => other.into(),
                })?;
                let image = Image::load(&services.images, &entry)?;
                let spec = ContainerSpec::from_image(&image, &services.images, overrides)?;
                (spec, Some(image))
            }
        };
        spec.wasi.validate().map_err(|e| start_error(&e))?;
        let mut networks = Vec::new();
        for name in &config.networks {
            networks.push(Attachment {
                info: services.networks.get(name)?,
                aliases: config.aliases.get(name).cloned().unwrap_or_default(),
            });
        }
        let mut publish = config.publish.clone();
        publish.extend(spec.publish.iter().cloned());
        let net_spec = NetSpec {
            name: Some(config.name.clone()),
            publish,
            runtime_dir: match networks.is_empty() {
                true => PathBuf::new(),
                false => services.runtime_dir.clone(),
            },
            networks,
            outbound: Vec::new(),
        };
        let fds = FdBudget::instance(
            config
                .max_fds
                .unwrap_or(wrun_host_api::fds::DEFAULT_INSTANCE_FDS),
        );
        let net = Namespace::start(&net_spec, fds)
            .await
            .map_err(|e| start_error(&e))?;
        let runtime = services.runtime.clone();
        let images = services.images.clone();
        let origin = config.origin.clone();
        let rootfs = spec.rootfs.clone();
        let name = config.name.clone();
        let app = tokio::task::spawn_blocking(move || {
            load_app(
                &runtime,
                &origin,
                image.as_ref(),
                &images,
                rootfs.as_deref(),
            )
        })
        .await
        .map_err(|e| start_error(&e))?
        .map_err(|e| start_error(&e))?
        .renamed(name);
        let limits = Limits {
            memory: config.memory.unwrap_or(crate::DEFAULT_MEMORY_LIMIT),
            timeout: None,
            cpu_time: None,
            max_fds: config
                .max_fds
                .unwrap_or(wrun_host_api::fds::DEFAULT_INSTANCE_FDS),
        };
        Ok(Prepared {
            app,
            spec,
            net,
            limits,
        })
    }

    async fn run(
        &self,
        container: &Container,
        prepared: Prepared,
        logs: &LogWriter,
        control: &Control,
    ) -> Result<i32, RunError> {
        let Prepared {
            app,
            spec,
            net,
            limits,
        } = prepared;
        let stdout = LogOutput::new(logs.clone(), Stream::Stdout);
        let stderr = LogOutput::new(logs.clone(), Stream::Stderr);
        let stdin = match lock(&container.config).open_stdin {
            true => {
                let mut pipe = lock(&container.stdin);
                if pipe.reader.is_none() {
                    pipe.renew();
                }
                pipe.reader.take()
            }
            false => None,
        };
        tracing::debug!(container = %container.id, "started");
        let result = self
            .shared
            .services
            .runtime
            .run_governed(
                &app,
                &spec.wasi,
                net,
                &limits,
                |builder| {
                    builder.stdout(stdout).stderr(stderr);
                    if let Some(stdin) = stdin {
                        builder.stdin(wasmtime_wasi::cli::AsyncStdinStream::new(stdin));
                    }
                },
                Some(control),
            )
            .await;
        // The anonymous volumes of this run go with the spec.
        drop(spec);
        result
    }

    /// Records how a run ended, then applies the restart policy or
    /// `--rm`.
    async fn exited(
        &self,
        container: &Arc<Container>,
        outcome: Result<i32, RunError>,
        ran: Duration,
        logs: &LogWriter,
    ) {
        let (exit_code, error, oom) = match &outcome {
            Ok(code) => (*code, None, false),
            Err(RunError::Killed { signal, .. }) => (128 + signal, None, false),
            Err(e) => {
                let oom = matches!(
                    e,
                    RunError::LimitExceeded {
                        limit: crate::LimitExceeded::Memory { .. },
                        ..
                    }
                );
                let code = crate::exit::code_of(e).unwrap_or(crate::exit::WRUN_ERROR);
                (code, Some(e.to_string()), oom)
            }
        };
        *lock(&container.run) = None;
        let policy = lock(&container.config).restart;
        let outcome = WaitOutcome {
            exit_code,
            error: error.clone(),
        };
        // Before waiters are woken: a `stop` then reports `stop` after it.
        if oom {
            self.emit(container, "oom", []);
        }
        self.emit(container, "die", [("exitCode", exit_code.to_string())]);
        let restarts = container.end_run(
            |s| {
                s.exited(SystemTime::now(), exit_code, error, oom);
                let restarts = policy.restarts(s);
                if restarts {
                    s.restarting();
                }
                restarts
            },
            outcome,
        );
        tracing::debug!(container = %container.id, exit_code, "exited");
        if restarts {
            let delay = lock(&container.backoff).after(ran);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = container.cancel_restart.notified() => {}
            }
            self.restart_by_policy(container.clone()).await;
            return;
        }
        *lock(&container.backoff) = Backoff::default();
        if lock(&container.config).auto_remove {
            // Attached clients that fell behind read the log's files:
            // they go once those clients are done (or 30 s on).
            logs.drained(LOG_DRAIN).await;
            let _lifecycle = container.lifecycle.lock().await;
            if let Err(e) = self.remove_locked(container, true) {
                tracing::warn!(container = %container.id, "could not remove: {e}");
            }
        }
    }

    /// Starts a container again after its back-off. Boxed: a start spawns
    /// the run that, when it ends, comes here again.
    fn restart_by_policy(
        &self,
        container: Arc<Container>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let _lifecycle = container.lifecycle.lock().await;
            if lock(&container.state).status != Status::Restarting {
                return;
            }
            if let Err(e) = self.start_locked(&container, true).await {
                tracing::warn!(container = %container.id, "restart failed: {e}");
            }
        })
    }

    /// Waits for `condition`. The wait is registered when this returns, so
    /// a start right after it cannot slip an exit past it.
    pub fn wait(
        &self,
        key: &str,
        condition: WaitCondition,
    ) -> Result<impl Future<Output = WaitOutcome> + Send + 'static, ContainerError> {
        let container = self.get(key)?;
        let mut progress = container.progress.subscribe();
        let seen = progress.borrow().exits;
        let status = lock(&container.state).status;
        Ok(async move {
            let done = |p: &Progress| match condition {
                WaitCondition::NotRunning => !p.live && status_settled(p, seen, status),
                WaitCondition::NextExit => p.exits > seen || p.removed,
                WaitCondition::Removed => p.removed,
            };
            let waited = progress.wait_for(done).await.map(|p| p.outcome.clone());
            // An error: the container is gone, and its sender with it.
            let outcome = waited.unwrap_or_else(|_| progress.borrow().outcome.clone());
            outcome.unwrap_or(WaitOutcome {
                exit_code: 0,
                error: None,
            })
        })
    }

    /// Stops a running container with `signal` ([`SIGTERM`] unless the
    /// client names one, as `docker stop -s`); waits until it has.
    pub async fn stop(&self, key: &str, signal: i32) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let _lifecycle = container.lifecycle.lock().await;
        self.stop_locked(&container, signal).await
    }

    async fn stop_locked(
        &self,
        container: &Arc<Container>,
        signal: i32,
    ) -> Result<(), ContainerError> {
        let status = lock(&container.state).status;
        if status == Status::Restarting {
            container.update(|s| {
                s.stopped_by_user = true;
                s.cancel_restart();
            });
            container.cancel_restart.notify_waiters();
            return Ok(());
        }
        let Some(control) = container.control() else {
            if lock(&container.state).status.is_live() {
                // Its run has just ended, and the exit is being recorded:
                // stopped once that is done (a `rm -f` racing an exit).
                self.wait(&container.id, WaitCondition::NotRunning)?.await;
                return Ok(());
            }
            return Err(ContainerError::Unchanged(container.name(), "stopped"));
        };
        let wait = self.wait(&container.id, WaitCondition::NextExit)?;
        container.update(|s| s.stopped_by_user = true);
        self.emit(container, "kill", [("signal", signal.to_string())]);
        control.kill(signal);
        wait.await;
        self.emit(container, "stop", []);
        Ok(())
    }

    /// Sends `signal` (a number) to a running container. No WASI guest can
    /// catch a signal, so any signal ends it, as its default action would.
    pub async fn kill(&self, key: &str, signal: i32) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let Some(control) = container.control() else {
            return Err(ContainerError::Conflict {
                what: "kill",
                name: key.to_owned(),
                reason: format!("container {} is not running", container.id),
            });
        };
        let wait = self.wait(&container.id, WaitCondition::NextExit)?;
        container.update(|s| s.stopped_by_user = true);
        self.emit(&container, "kill", [("signal", signal.to_string())]);
        control.kill(signal);
        wait.await;
        Ok(())
    }

    /// Stops the container if it runs, then starts it.
    pub async fn restart(&self, key: &str) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let _lifecycle = container.lifecycle.lock().await;
        match self.stop_locked(&container, SIGTERM).await {
            Ok(()) | Err(ContainerError::Unchanged(..)) => {}
            Err(e) => return Err(e),
        }
        self.start_locked(&container, false).await?;
        self.emit(&container, "restart", []);
        Ok(())
    }

    pub fn pause(&self, key: &str) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let control = container.control();
        container
            .update(|s| s.pause())
            .map_err(|e| ContainerError::Conflict {
                what: "pause",
                name: key.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(control) = control {
            control.pause();
        }
        self.emit(&container, "pause", []);
        Ok(())
    }

    pub fn unpause(&self, key: &str) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        container
            .update(|s| s.unpause())
            .map_err(|e| ContainerError::Conflict {
                what: "unpause",
                name: key.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(control) = container.control() {
            control.unpause();
        }
        self.emit(&container, "unpause", []);
        Ok(())
    }

    /// Puts a container that is not running on `network` (known there
    /// also by `aliases`) from its next start on. wrun joins networks as an
    /// instance starts, so a running container is refused, saying so.
    pub async fn connect(
        &self,
        key: &str,
        network: &str,
        aliases: Vec<String>,
    ) -> Result<(), ContainerError> {
        // The network first, as Docker's route looks it up first.
        let info = self.shared.services.networks.find(network)?;
        let container = self.get(key)?;
        check_aliases(&aliases)?;
        let _lifecycle = container.lifecycle.lock().await;
        self.refuse_if_live(&container, "connect")?;
        let mut config = lock(&container.config);
        let old = config.clone();
        // Connected again: its aliases are replaced, as Docker does for a
        // container that is not running.
        if !config.networks.contains(&info.name) {
            config.networks.push(info.name.clone());
        }
        if aliases.is_empty() {
            config.aliases.remove(&info.name);
        } else {
            config.aliases.insert(info.name.clone(), aliases);
        }
        drop(config);
        self.save_config_or_restore(&container, old)?;
        self.emit_network(&info, "connect", &container.id);
        Ok(())
    }

    /// Takes a container that is not running off `network`.
    pub async fn disconnect(&self, key: &str, network: &str) -> Result<(), ContainerError> {
        // The network first, as Docker's route looks it up first.
        let info = self.shared.services.networks.find(network)?;
        let container = self.get(key)?;
        let _lifecycle = container.lifecycle.lock().await;
        self.refuse_if_live(&container, "disconnect")?;
        let mut config = lock(&container.config);
        if !config.networks.contains(&info.name) {
            return Err(ContainerError::Forbidden(format!(
                "container {} is not connected to the network {}",
                container.id, info.name
            )));
        }
        let old = config.clone();
        config.networks.retain(|n| *n != info.name);
        config.aliases.remove(&info.name);
        drop(config);
        self.save_config_or_restore(&container, old)?;
        self.emit_network(&info, "disconnect", &container.id);
        Ok(())
    }

    fn refuse_if_live(
        &self,
        container: &Container,
        what: &'static str,
    ) -> Result<(), ContainerError> {
        if lock(&container.state).status.is_live() {
            return Err(ContainerError::Conflict {
                what,
                name: container.name(),
                reason: "it is running, and wrun joins networks when a container starts: stop \
                         it, change its networks, then start it"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Persists a changed config, or puts `old` back if that fails.
    fn save_config_or_restore(
        &self,
        container: &Container,
        old: ContainerConfig,
    ) -> Result<(), ContainerError> {
        let saved = container.save_config();
        if saved.is_err() {
            *lock(&container.config) = old;
        }
        saved
    }

    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), ContainerError> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !is_valid_name(new_name) {
            return Err(ContainerError::InvalidName(
                crate::input::excerpt(new_name).to_string(),
            ));
        }
        let container = self.get(key)?;
        let mut table = lock(&self.shared.table);
        if let Some(other) = table.by_name.get(new_name) {
            return Err(ContainerError::NameInUse {
                name: new_name.to_owned(),
                id: other.clone(),
            });
        }
        let old = std::mem::replace(&mut lock(&container.config).name, new_name.to_owned());
        if let Err(e) = container.save_config() {
            lock(&container.config).name = old;
            return Err(e);
        }
        table.by_name.remove(&old);
        table
            .by_name
            .insert(new_name.to_owned(), container.id.clone());
        drop(table);
        self.emit(&container, "rename", [("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// Removes a container; a running one only with `force` (it is killed
    /// first).
    pub async fn remove(
        &self,
        key: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), ContainerError> {
        let container = self.get(key)?;
        let _lifecycle = container.lifecycle.lock().await;
        if lock(&container.state).status.is_live() {
            if !force {
                return Err(ContainerError::Conflict {
                    what: "remove",
                    name: format!("\"/{}\"", container.name()),
                    reason: "container is running: stop the container before removing or force \
                             remove"
                        .to_owned(),
                });
            }
            self.stop_locked(&container, SIGKILL).await?;
        }
        self.remove_locked(&container, volumes)
    }

    /// Removes it, and with `volumes` its anonymous volumes (named ones
    /// stay, as Docker's `rm -v` leaves them).
    fn remove_locked(
        &self,
        container: &Arc<Container>,
        volumes: bool,
    ) -> Result<(), ContainerError> {
        {
            // Not saved: the state goes with the directory.
            let mut state = lock(&container.state);
            state.stopped_by_user = true;
            state.cancel_restart();
        }
        container.cancel_restart.notify_waiters();
        {
            let mut table = lock(&self.shared.table);
            table.by_id.remove(&container.id);
            let name = container.name();
            if table.by_name.get(&name) == Some(&container.id) {
                table.by_name.remove(&name);
            }
        }
        // The config goes first: a crash halfway leaves a directory that
        // holds no container, which the next open clears.
        let config = container.dir.join(CONFIG_FILE);
        let removed = {
            let mut files = lock(&container.files);
            *files = true;
            std::fs::remove_file(&config)
                .map_err(io("remove", &config))
                .and_then(|()| {
                    std::fs::remove_dir_all(&container.dir).map_err(io("remove", &container.dir))
                })
        };
        lock(&container.attachers).clear();
        container.progress.send_modify(|p| p.removed = true);
        if removed.is_ok() {
            self.emit(container, "destroy", []);
            if volumes {
                self.remove_anonymous_volumes(&lock(&container.config).anonymous_volumes);
            }
        }
        removed
    }

    /// A container's log: the entries written so far that `options` select,
    /// and with `follow`, a stream of those written after (ending when the
    /// container stops).
    pub fn logs(
        &self,
        key: &str,
        options: &ReadOptions,
        follow: bool,
    ) -> Result<(Vec<logs::LogEntry>, Option<Follow>), ContainerError> {
        let container = self.get(key)?;
        let follower = match follow {
            true => lock(&container.run).as_ref().map(|r| r.logs.subscribe()),
            false => None,
        };
        let read_error = |e: logs::LogError| ContainerError::Io {
            what: "read the log of",
            path: container.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        let history = match &follower {
            Some(follow) => follow.history(options),
            None => logs::read(&container.dir, options),
        };
        let history = history
            .map_err(read_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error)?;
        Ok((history, follower))
    }

    /// The output of the container's current run, or, if it is not
    /// running, of its next start (`docker run` attaches before it
    /// starts). `None` if it is removed first.
    pub fn attach(
        &self,
        key: &str,
    ) -> Result<impl Future<Output = Option<Follow>> + Send + 'static, ContainerError> {
        let container = self.get(key)?;
        let (tx, rx) = oneshot::channel();
        {
            let run = lock(&container.run);
            match run.as_ref() {
                Some(run) => {
                    let _ = tx.send(run.logs.subscribe());
                }
                None => lock(&container.attachers).push(tx),
            }
        }
        Ok(async move { rx.await.ok() })
    }

    /// Stops every running container (the daemon is shutting down); they
    /// are not marked stopped by a user, so `always` and `unless-stopped`
    /// ones start again with the next daemon.
    pub async fn shutdown(&self) {
        let containers: Vec<_> = lock(&self.shared.table).by_id.values().cloned().collect();
        let mut waits = Vec::new();
        for container in containers {
            if let Some(control) = container.control()
                && let Ok(wait) = self.wait(&container.id, WaitCondition::NextExit)
            {
                control.kill(SIGTERM);
                waits.push(wait);
            }
        }
        for wait in waits {
            wait.await;
        }
    }
}

/// Whether a not-running wait registered when the container was in
/// `status` is over: at once for one that is not running, else at its exit.
fn status_settled(p: &Progress, seen: u64, status: Status) -> bool {
    match status {
        Status::Running | Status::Paused | Status::Restarting => p.exits > seen || p.removed,
        _ => true,
    }
}

/// A run's error as `wrun run` reports it: the message, and a trap's
/// backtrace.
fn describe(error: &RunError) -> String {
    format!("{error}{}", crate::exit::backtrace_text(error))
}

struct Prepared {
    app: App,
    spec: ContainerSpec,
    net: Namespace,
    limits: Limits,
}

fn load_app(
    runtime: &Runtime,
    origin: &Origin,
    image: Option<&Image>,
    images: &ImageStore,
    rootfs: Option<&Path>,
) -> Result<App, String> {
    let source = match (origin, image) {
        (Origin::Image { .. }, Some(image)) => {
            match runtime
                .lookup_image(image, images, rootfs)
                .map_err(|e| e.to_string())?
            {
                Lookup::Cached(app) => return Ok(app),
                Lookup::Source(source) => source,
            }
        }
        (Origin::File { path }, _) => match runtime.lookup(path).map_err(|e| e.to_string())? {
            Lookup::Cached(app) => return Ok(app),
            Lookup::Source(source) => source,
        },
        (Origin::Image { reference, .. }, None) => {
            return Err(format!("image `{reference}` is not loaded"));
        }
    };
    if source.kind() == SourceKind::Precompiled {
        // Machine code from someone else: never, in a container.
        return Err(format!(
            "`{}` is a precompiled artifact, not wasm; containers run wasm",
            source.name()
        ));
    }
    runtime.compile(&source).map_err(|e| e.to_string())
}

fn check_config(config: &ContainerConfig) -> Result<(), ContainerError> {
    if config.auto_remove && config.restart != super::RestartPolicy::No {
        return Err(ContainerError::Invalid(
            "conflicting options: cannot specify both --restart and --rm".to_owned(),
        ));
    }
    if let Some(cpus) = config.cpus
        && !(cpus > 0.0 && cpus <= super::control::MAX_CPUS)
    {
        return Err(ContainerError::Invalid(format!(
            "invalid CPU count `{cpus}`: expected a number of CPUs above 0"
        )));
    }
    for mount in &config.mounts {
        if let MountSource::Bind(path) = &mount.source
            && !path.is_absolute()
        {
            return Err(ContainerError::Invalid(format!(
                "invalid mount source `{}`: a bind mount's source must be an absolute path",
                path.display()
            )));
        }
    }
    if let Origin::File { path } = &config.origin
        && !path.is_absolute()
    {
        return Err(ContainerError::Invalid(format!(
            "invalid app path `{}`: it must be absolute",
            path.display()
        )));
    }
    for (network, aliases) in &config.aliases {
        if !config.networks.contains(network) {
            return Err(ContainerError::Invalid(format!(
                "aliases given for network `{network}`, which the container does not join"
            )));
        }
        check_aliases(aliases)?;
    }
    Ok(())
}

/// Aliases a member could take (checked again as it joins).
fn check_aliases(aliases: &[String]) -> Result<(), ContainerError> {
    if let Some(bad) = aliases
        .iter()
        .find(|a| !wrun_host_api::net::is_valid_name(a, wrun_host_api::net::MAX_APP_NAME))
    {
        return Err(NetworkError::InvalidAlias(crate::input::excerpt(bad).to_string()).into());
    }
    if aliases.len() > wrun_host_api::net::MAX_ALIASES {
        return Err(NetworkError::TooManyAliases(aliases.len()).into());
    }
    Ok(())
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// 64 hex digits from the system's random source.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Never in practice; a hash of the time and pid is still unique here.
        let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
        bytes = *blake3::hash(seed.as_bytes()).as_bytes();
    }
    hex::encode(bytes)
}

/// A Docker-style name (`adjective_noun`), not yet taken.
fn generate_name(taken: impl Fn(&str) -> bool) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "quirky", "serene", "trusting", "vigilant", "wizardly", "zealous",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "dijkstra", "euler", "hopper", "kepler", "lamport", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wirth",
    ];
    let id = new_id();
    let seed = u64::from_str_radix(&id[..16], 16).unwrap_or(0);
    let left = LEFT[(seed % LEFT.len() as u64) as usize];
    let right = RIGHT[((seed >> 32) % RIGHT.len() as u64) as usize];
    let base = format!("{left}_{right}");
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}{n}"))
        .find(|name| !taken(name))
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::running_bound;

    #[test]
    fn the_running_bound_keeps_a_quarter_of_each_limit() {
        // This machine's limits: 20,000 files, 65,530 mappings.
        assert_eq!(running_bound(20_000, 65_530), 3_750);
        // Whichever limit is tighter decides.
        assert_eq!(running_bound(1 << 20, 65_530), 4_095);
        assert_eq!(running_bound(128, 65_530), 24);
        // Never none, and no overflow.
        assert_eq!(running_bound(0, 0), 1);
        assert!(running_bound(u64::MAX, u64::MAX) > 1_000_000);
    }
}
