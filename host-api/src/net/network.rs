//! Virtual networks: their definitions under `$WRUN_HOME/networks`, and the
//! rendezvous directory where members on this host find each other.
//!
//! A network is a name, a random id and an IPv4 /24 subnet. Its rendezvous
//! directory `<runtime dir>/n/<id>/` holds, for each live member, a lock file
//! per virtual IP (`ip-<addr>`) and per name (`name-<name>`, holding the IP),
//! and a Unix socket per listening port (`t-<addr>-<port>` for TCP,
//! `u-<addr>-<port>` for UDP). A member holds an exclusive `flock` on its IP
//! and name files for as long as it runs, so an entry left behind by a crashed
//! process is recognised as free by the next one, and separate `wrun run`
//! processes share a network with no daemon in between.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A network as stored by `wrun network create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    /// The /24 subnet's first address, e.g. 10.89.0.0.
    pub subnet: Ipv4Addr,
    /// Labels, as Docker's networks have (`docker network create --label`).
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "invalid network name `{0}`: use letters, digits, `_`, `.` and `-`, starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("network `{0}` is reserved")]
    Reserved(String),
    #[error("network id prefix `{0}` matches more than one network")]
    Ambiguous(String),
    #[error("network `{0}` already exists")]
    Exists(String),
    #[error("no such network `{0}` (create it with `wrun network create {0}`)")]
    NotFound(String),
    #[error("invalid subnet `{0}`: expected an IPv4 /24 such as 10.89.3.0/24")]
    InvalidSubnet(String),
    #[error("subnet {0}/24 is already used by network `{1}`")]
    SubnetInUse(Ipv4Addr, String),
    #[error("network `{name}` is in use by {members} running app(s)")]
    InUse { name: String, members: usize },
    #[error(
        "invalid network alias `{0}`: use letters, digits, `_`, `.` and `-`, starting with a \
         letter or digit, at most {max} bytes",
        max = MAX_APP_NAME
    )]
    InvalidAlias(String),
    #[error("{0} aliases on one network: at most {max} are allowed", max = MAX_ALIASES)]
    TooManyAliases(usize),
    #[error("the name `{name}` is already taken on network `{network}`")]
    NameTaken { name: String, network: String },
    #[error("network `{0}` has no free address left")]
    Full(String),
    #[error("network definition `{}` is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "the rendezvous directory `{}` is too long a path for Unix sockets ({len} bytes; \
         sockets need at most {max}), and /proc/self/fd, which wrun would reach it through, \
         is not available; set XDG_RUNTIME_DIR or WRUN_HOME to a shorter directory",
        dir.display()
    )]
    SocketPathTooLong {
        dir: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("{what} `{}`: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetworkError + 'a {
    move |error| NetworkError::Io {
        what,
        path: path.to_owned(),
        error,
    }
}

/// Names a network may not have: `host` and `none` mean something to `--network`.
const RESERVED: [&str; 3] = ["host", "none", "bridge"];

/// The networks defined under `$WRUN_HOME/networks`.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
    runtime_dir: PathBuf,
}

impl NetworkStore {
    /// `home` is `$WRUN_HOME`; `runtime_dir` is where rendezvous directories live.
    pub fn new(home: &Path, runtime_dir: &Path) -> NetworkStore {
        NetworkStore {
            dir: home.join("networks"),
            runtime_dir: runtime_dir.to_owned(),
        }
    }

    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.net"))
    }

    pub fn create(&self, name: &str, subnet: Option<&str>) -> Result<NetworkInfo, NetworkError> {
        self.create_labelled(name, subnet, BTreeMap::new())
    }

    /// Creates a network with `labels`.
    pub fn create_labelled(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkInfo, NetworkError> {
        check_name(name)?;
        if RESERVED.contains(&name) {
            return Err(NetworkError::Reserved(name.to_owned()));
        }
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetworkError::Exists(name.to_owned()));
        }
        let subnet = match subnet {
            Some(text) => {
                let subnet = parse_subnet(text)?;
                if let Some(other) = existing.iter().find(|n| n.subnet == subnet) {
                    return Err(NetworkError::SubnetInUse(subnet, other.name.clone()));
                }
                subnet
            }
            None => (0..=255u8)
                .map(|i| Ipv4Addr::new(10, 89, i, 0))
                .find(|s| existing.iter().all(|n| n.subnet != *s))
                .ok_or_else(|| NetworkError::Full(name.to_owned()))?,
        };
        let info = NetworkInfo {
            name: name.to_owned(),
            id: random_id(),
            subnet,
            labels,
        };
        fs::create_dir_all(&self.dir).map_err(io_err("failed to create", &self.dir))?;
        let path = self.path(name);
        let mut text = format!(
            "name = {}\nid = {}\nsubnet = {}/24\n",
            info.name, info.id, info.subnet
        );
        if !info.labels.is_empty() {
            // One line of JSON: its strings escape newlines.
            let labels = serde_json::to_string(&info.labels).unwrap_or_default();
            text.push_str(&format!("labels = {labels}\n"));
        }
        // Create-exclusive: of two concurrent creates, one wins.
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err("failed to write", &path))?;
        tmp.write_all(text.as_bytes())
            .map_err(io_err("failed to write", &path))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("failed to write", &path))?;
        tmp.persist_noclobber(&path).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                NetworkError::Exists(name.to_owned())
            } else {
                NetworkError::Io {
                    what: "failed to write",
                    path: path.clone(),
                    error: e.error,
                }
            }
        })?;
        Ok(info)
    }

    pub fn get(&self, name: &str) -> Result<NetworkInfo, NetworkError> {
        check_name(name)?;
        let path = self.path(name);
        match fs::read_to_string(&path) {
            Ok(text) => parse_info(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(NetworkError::NotFound(name.to_owned()))
            }
            Err(e) => Err(io_err("failed to read", &path)(e)),
        }
    }

    /// A network by name, by id, or by a prefix of its id that no other
    /// network's id starts with (as Docker finds networks).
    pub fn find(&self, key: &str) -> Result<NetworkInfo, NetworkError> {
        if is_valid_name(key, MAX_NETWORK_NAME) {
            match self.get(key) {
                Err(NetworkError::NotFound(_)) => {}
                found => return found,
            }
        }
        let not_found = || NetworkError::NotFound(crate::input::excerpt(key).to_string());
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut matches = self.list()?.into_iter().filter(|n| n.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(NetworkError::Ambiguous(key.to_owned())),
            _ => Err(not_found()),
        }
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkInfo>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("failed to list", &self.dir)(e)),
        };
        let mut networks = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err("failed to list", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == "net") {
                let text = fs::read_to_string(&path).map_err(io_err("failed to read", &path))?;
                networks.push(parse_info(&text, &path)?);
            }
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    /// When the network was made (its definition is never rewritten).
    pub fn created(&self, info: &NetworkInfo) -> Option<std::time::SystemTime> {
        fs::metadata(self.path(&info.name))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The number of apps currently on the network (on this host).
    pub fn members(&self, info: &NetworkInfo) -> usize {
        let dir = self.runtime_dir.join("n").join(&info.id);
        let Ok(entries) = fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("ip-"))
            .filter(|e| is_held(&e.path()))
            .count()
    }

    /// Removes a network nobody is using.
    pub fn remove(&self, name: &str) -> Result<NetworkInfo, NetworkError> {
        let info = self.get(name)?;
        let members = self.members(&info);
        if members > 0 {
            return Err(NetworkError::InUse {
                name: name.to_owned(),
                members,
            });
        }
        let path = self.path(name);
        fs::remove_file(&path).map_err(io_err("failed to remove", &path))?;
        let _ = fs::remove_dir_all(self.runtime_dir.join("n").join(&info.id));
        Ok(info)
    }
}

/// The longest network name.
pub const MAX_NETWORK_NAME: usize = 64;
/// The longest app name (`--name`), which members resolve on a network.
pub const MAX_APP_NAME: usize = 128;

/// Docker's rule for names, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most `max`
/// bytes. Such a name is also safe as part of a file name.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= max
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    if is_valid_name(name, MAX_NETWORK_NAME) {
        Ok(())
    } else {
        Err(NetworkError::InvalidName(name.to_owned()))
    }
}

fn parse_subnet(text: &str) -> Result<Ipv4Addr, NetworkError> {
    let invalid = || NetworkError::InvalidSubnet(text.to_owned());
    let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
    if prefix != "24" || addr.octets()[3] != 0 || addr.is_loopback() || addr.is_unspecified() {
        return Err(invalid());
    }
    Ok(addr)
}

fn parse_info(text: &str, path: &Path) -> Result<NetworkInfo, NetworkError> {
    let damaged = |reason: &str| NetworkError::Damaged {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim)
            })
            .ok_or_else(|| damaged(&format!("no `{key}`")))
    };
    let name = field("name")?.to_owned();
    let id = field("id")?.to_owned();
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(damaged("bad `id`"));
    }
    let subnet = parse_subnet(field("subnet")?).map_err(|_| damaged("bad `subnet`"))?;
    let labels = match field("labels") {
        Ok(json) => serde_json::from_str(json).map_err(|_| damaged("bad `labels`"))?,
        Err(_) => BTreeMap::new(),
    };
    Ok(NetworkInfo {
        name,
        id,
        subnet,
        labels,
    })
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    // getrandom through rustix: the id only needs to be unique per host.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&(nanos as u64 ^ u64::from(std::process::id())).to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the alias files of an earlier holder of `ip` that ended without
/// removing them (a crash): whoever holds `ip` now owns those names.
fn remove_stale_aliases(dir: &Path, ip: Ipv4Addr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let suffix = format!("@{ip}");
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name();
        if file
            .to_str()
            .is_some_and(|f| f.starts_with("alias-") && f.ends_with(&suffix))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether some live process holds the lock on `path`.
pub(crate) fn is_held(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// Takes the exclusive lock on `path` (creating it), or `None` if a live
/// process holds it.
fn try_take(path: &Path) -> io::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates `dir` (and parents) private to this user.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The longest path a Unix socket can be bound or connected at: `sun_path`
/// holds 108 bytes on Linux, the last of them a NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The longest socket name in a rendezvous directory: `t-` or `u-`, an IPv4
/// address, `-` and a port.
const MAX_SOCKET_NAME: usize = "t-255.255.255.255-65535".len();

/// Where the sockets of rendezvous directory `dir` are bound and connected:
/// `dir` itself when its socket paths fit in `sun_path`, else the same
/// directory through `/proc/self/fd/N`, N an open handle of it. A long
/// `$WRUN_HOME` (or `$XDG_RUNTIME_DIR`) thus still works, and no socket is
/// ever bound at a silently truncated path.
fn socket_dir(dir: &Path) -> Result<PathBuf, NetworkError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Mutex, OnceLock};
    let len = dir.as_os_str().len();
    if len + 1 + MAX_SOCKET_NAME <= MAX_SOCKET_PATH {
        return Ok(dir.to_owned());
    }
    // The handles stay open for the life of the process: a socket path
    // names the handle's number, which must not come to mean another
    // directory while a listener or a peer may still use it. Few
    // networks are joined per process, so this costs a few descriptors.
    static HANDLES: OnceLock<Mutex<Vec<(PathBuf, fs::File)>>> = OnceLock::new();
    let too_long = || NetworkError::SocketPathTooLong {
        dir: dir.to_owned(),
        len,
        max: MAX_SOCKET_PATH - 1 - MAX_SOCKET_NAME,
    };
    let meta = fs::metadata(dir).map_err(io_err("failed to open", dir))?;
    let mut handles = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let same = |file: &fs::File| {
        file.metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    };
    let fd = match handles
        .iter()
        .find(|(path, file)| path == dir && same(file))
    {
        Some((_, file)) => file.as_raw_fd(),
        None => {
            let file = fs::File::open(dir).map_err(io_err("failed to open", dir))?;
            let fd = file.as_raw_fd();
            handles.push((dir.to_owned(), file));
            fd
        }
    };
    let alias = PathBuf::from(format!("/proc/self/fd/{fd}"));
    // /proc may be missing (a chroot, a container without it): then say so.
    match fs::metadata(&alias) {
        Ok(m) if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) => Ok(alias),
        _ => Err(too_long()),
    }
}

/// One app's place on a network: its virtual IP and name, held until dropped.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) info: NetworkInfo,
    pub(crate) ip: Ipv4Addr,
    pub(crate) dir: PathBuf,
    /// `dir`, or a shorter path to it for socket addresses (see [`socket_dir`]).
    sockets: PathBuf,
    _ip_lock: fs::File,
    _name_lock: Option<fs::File>,
    _alias_locks: Vec<fs::File>,
}

/// The most aliases a member may have on one network.
pub const MAX_ALIASES: usize = 32;

/// The lock file of an alias: any number of members may share an alias (as
/// Docker's embedded DNS answers with all of them), so each holds its own
/// file, named after its address.
fn alias_file(alias: &str, ip: Ipv4Addr) -> String {
    format!("alias-{alias}@{ip}")
}

impl Membership {
    /// Takes an address on the network, the name `name` (which no other
    /// live member may hold) and the `aliases` (which others may share).
    pub(crate) fn join(
        info: &NetworkInfo,
        runtime_dir: &Path,
        name: Option<&str>,
        aliases: &[String],
    ) -> Result<Membership, NetworkError> {
        let mut alias_names: Vec<String> = Vec::new();
        for alias in aliases {
            if !is_valid_name(alias, MAX_APP_NAME) {
                return Err(NetworkError::InvalidAlias(alias.clone()));
            }
            let alias = alias.to_ascii_lowercase();
            if Some(alias.as_str()) != name && !alias_names.contains(&alias) {
                alias_names.push(alias);
            }
        }
        if alias_names.len() > MAX_ALIASES {
            return Err(NetworkError::TooManyAliases(alias_names.len()));
        }
        let dir = runtime_dir.join("n").join(&info.id);
        create_private_dir(&dir).map_err(io_err("failed to create", &dir))?;
        let sockets = socket_dir(&dir)?;
        // The name first: a taken name must not cost an address.
        let name_lock = match name {
            Some(name) => {
                let path = dir.join(format!("name-{name}"));
                match try_take(&path).map_err(io_err("failed to lock", &path))? {
                    Some(file) => Some(file),
                    None => {
                        return Err(NetworkError::NameTaken {
                            name: name.to_owned(),
                            network: info.name.clone(),
                        });
                    }
                }
            }
            None => None,
        };
        let [a, b, c, _] = info.subnet.octets();
        for host in 2..=254u8 {
            let ip = Ipv4Addr::new(a, b, c, host);
            let path = dir.join(format!("ip-{ip}"));
            let Some(ip_lock) = try_take(&path).map_err(io_err("failed to lock", &path))? else {
                continue;
            };
            if let Some(mut file) = name_lock.as_ref() {
                let write = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{ip}"));
                let path = dir.join(format!("name-{}", name.unwrap_or_default()));
                write.map_err(io_err("failed to write", &path))?;
            }
            remove_stale_aliases(&dir, ip);
            let mut alias_locks = Vec::with_capacity(alias_names.len());
            for alias in &alias_names {
                let path = dir.join(alias_file(alias, ip));
                // The address is ours, and so is every file named after it.
                let lock = try_take(&path)
                    .map_err(io_err("failed to lock", &path))?
                    .ok_or_else(|| NetworkError::Io {
                        what: "failed to lock",
                        path: path.clone(),
                        error: io::ErrorKind::WouldBlock.into(),
                    })?;
                alias_locks.push(lock);
            }
            return Ok(Membership {
                info: info.clone(),
                ip,
                dir,
                sockets,
                _ip_lock: ip_lock,
                _name_lock: name_lock,
                _alias_locks: alias_locks,
            });
        }
        Err(NetworkError::Full(info.name.clone()))
    }

    /// The virtual IPs of the live members called `name`: the one whose
    /// name it is, else every one that has it as an alias.
    pub(crate) fn resolve(&self, name: &str) -> Vec<Ipv4Addr> {
        if !is_valid_name(name, MAX_APP_NAME) {
            return Vec::new();
        }
        let path = self.dir.join(format!("name-{name}"));
        if is_held(&path) {
            let mut text = String::new();
            let read = fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
            return match (read, text.trim().parse()) {
                (Ok(_), Ok(ip)) => vec![ip],
                _ => Vec::new(),
            };
        }
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let prefix = format!("alias-{}@", name.to_ascii_lowercase());
        let mut found: Vec<Ipv4Addr> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name();
                let ip = file.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
                is_held(&e.path()).then_some(ip)
            })
            .collect();
        found.sort();
        found
    }

    /// Whether `ip` belongs to this network's subnet.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.info.subnet.octets()[..3]
    }

    pub(crate) fn tcp_path(&self, ip: Ipv4Addr, port: u16) -> PathBuf {
        self.sockets.join(format!("t-{ip}-{port}"))
    }

    pub(crate) fn udp_path(&self, ip: Ipv4Addr, port: u16) -> PathBuf {
        self.sockets.join(format!("u-{ip}-{port}"))
    }
}

/// Where rendezvous directories live: `$XDG_RUNTIME_DIR/wrun` when that is
/// set (a directory the system made for this user alone), else `run/` under
/// `home` (`$WRUN_HOME`). Never a predictable name in a shared directory such
/// as `/tmp`, which another user could create first.
pub fn default_runtime_dir(home: &Path) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wrun"),
        _ => home.join("run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, NetworkStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&dir.path().join("home"), &dir.path().join("run"));
        (dir, store)
    }

    #[test]
    fn create_list_remove() {
        let (_dir, store) = store();
        let shop = store.create("shop", None).unwrap();
        assert_eq!(shop.subnet, Ipv4Addr::new(10, 89, 0, 0));
        let other = store.create("other", Some("10.7.7.0/24")).unwrap();
        assert!(matches!(
            store.create("shop", None),
            Err(NetworkError::Exists(_))
        ));
        assert!(matches!(
            store.create("x", Some("10.7.7.0/24")),
            Err(NetworkError::SubnetInUse(..))
        ));
        assert!(matches!(
            store.create("y", Some("10.7.7.0/16")),
            Err(NetworkError::InvalidSubnet(_))
        ));
        assert!(matches!(
            store.create("host", None),
            Err(NetworkError::Reserved(_))
        ));
        assert!(matches!(
            store.create("bad name", None),
            Err(NetworkError::InvalidName(_))
        ));
        assert_eq!(store.list().unwrap(), vec![other.clone(), shop.clone()]);
        assert_eq!(store.get("shop").unwrap(), shop);
        store.remove("shop").unwrap();
        assert!(matches!(store.get("shop"), Err(NetworkError::NotFound(_))));
    }

    #[test]
    fn members_get_addresses_and_names() {
        let (_dir, store) = store();
        let info = store.create("shop", None).unwrap();
        let db = Membership::join(&info, store.runtime_dir(), Some("db"), &[]).unwrap();
        let api = Membership::join(&info, store.runtime_dir(), Some("api"), &[]).unwrap();
        assert_ne!(db.ip, api.ip);
        assert_eq!(api.resolve("db"), vec![db.ip]);
        assert!(matches!(
            Membership::join(&info, store.runtime_dir(), Some("db"), &[]),
            Err(NetworkError::NameTaken { .. })
        ));
        // App names may be longer than network names.
        let long = "a".repeat(MAX_APP_NAME);
        let member = Membership::join(&info, store.runtime_dir(), Some(&long), &[]).unwrap();
        assert_eq!(api.resolve(&long), vec![member.ip]);
        drop(member);
        assert!(matches!(
            store.remove("shop"),
            Err(NetworkError::InUse { members: 2, .. })
        ));
        let db_ip = db.ip;
        drop(db);
        // The name and the address are free again once the member is gone.
        assert!(api.resolve("db").is_empty());
        let again = Membership::join(&info, store.runtime_dir(), Some("db"), &[]).unwrap();
        assert_eq!(again.ip, db_ip);
    }

    #[test]
    fn aliases_are_shared_and_go_with_their_member() {
        let (_dir, store) = store();
        let info = store.create("shop", None).unwrap();
        let aliases = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let one = Membership::join(
            &info,
            store.runtime_dir(),
            Some("web-1"),
            &aliases(&["web"]),
        )
        .unwrap();
        let two = Membership::join(
            &info,
            store.runtime_dir(),
            Some("web-2"),
            &aliases(&["Web"]),
        )
        .unwrap();
        let client = Membership::join(&info, store.runtime_dir(), None, &[]).unwrap();
        // Every member with the alias answers, whatever its case.
        assert_eq!(client.resolve("web"), vec![one.ip, two.ip]);
        assert_eq!(client.resolve("web-2"), vec![two.ip]);
        // A name is still one member's: an alias does not take it.
        assert!(matches!(
            Membership::join(&info, store.runtime_dir(), Some("web-1"), &[]),
            Err(NetworkError::NameTaken { .. })
        ));
        drop(one);
        assert_eq!(client.resolve("web"), vec![two.ip]);
        // Bad aliases are refused by value, before an address is taken.
        assert!(matches!(
            Membership::join(&info, store.runtime_dir(), None, &aliases(&["../x"])),
            Err(NetworkError::InvalidAlias(a)) if a == "../x"
        ));
        let many: Vec<String> = (0..=MAX_ALIASES).map(|i| format!("a{i}")).collect();
        assert!(matches!(
            Membership::join(&info, store.runtime_dir(), None, &many),
            Err(NetworkError::TooManyAliases(_))
        ));
        assert_eq!(store.members(&info), 2);
    }

    #[test]
    fn sockets_in_a_long_directory_are_reached_through_a_short_path() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(120));
        let long_store = NetworkStore::new(&dir.path().join("home"), &long);
        let info = long_store.create("shop", None).unwrap();
        let member = Membership::join(&info, long_store.runtime_dir(), None, &[]).unwrap();
        let path = member.tcp_path(Ipv4Addr::new(10, 89, 0, 2), 65535);
        assert!(path.as_os_str().len() <= MAX_SOCKET_PATH, "{path:?}");
        assert!(path.starts_with("/proc/self/fd/"), "{path:?}");
        // It is the directory itself: a socket bound there appears in it.
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(member.dir.join("t-10.89.0.2-65535").exists());
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        // A short directory is used as it is.
        let (_dir, store) = store();
        let info = store.create("short", None).unwrap();
        let member = Membership::join(&info, store.runtime_dir(), None, &[]).unwrap();
        assert!(member.tcp_path(member.ip, 80).starts_with(&member.dir));
    }
}
