//! `wrun push`, `wrun pull` and `wrun login` against OCI distribution
//! registries, through `oci-client`: anonymous, HTTP basic, and bearer
//! tokens obtained with the user's credentials (the Docker token flow).
//!
//! Pulls write each blob through a verifying writer (see the store), skip
//! blobs already present, unpack the image's layers (refusing hostile ones)
//! and only then name the image; pushes skip blobs the registry has and
//! send the manifest last. Either can be interrupted at any point without
//! leaving a partial image visible.

use super::resolve::{Image, platforms, select_platform};
use super::spec::{self, ACCEPTED_MANIFESTS, Descriptor, Digest, Document};
use super::store::{ImageStore, MAX_DOCUMENT};
use super::unpack;
use super::{ImageError, ImageRef};
use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A user's credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The credentials a Docker client sends in `X-Registry-Auth`: base64url
    /// (padded or not) of JSON with `username` and `password`, or `auth` as
    /// base64 of `user:password`. `None` when it carries none (the CLI's
    /// `{}`, or only an identity token, which wrun does not use).
    pub fn from_registry_auth_header(value: &str) -> Result<Option<Credentials>, ImageError> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        #[derive(serde::Deserialize, Default)]
        struct Header {
            #[serde(default)]
            username: String,
            #[serde(default)]
            password: String,
            #[serde(default)]
            auth: String,
        }
        let invalid = |reason: String| ImageError::InvalidDocument {
            what: "X-Registry-Auth header".to_owned(),
            reason,
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let json = [URL_SAFE, URL_SAFE_NO_PAD, STANDARD]
            .iter()
            .find_map(|engine| engine.decode(value).ok())
            .ok_or_else(|| invalid("it is not base64".to_owned()))?;
        let header: Header = serde_json::from_slice(&json)
            .map_err(|e| invalid(format!("it is not the JSON of an auth config: {e}")))?;
        if !header.username.is_empty() {
            return Ok(Some(Credentials {
                username: header.username,
                password: header.password,
            }));
        }
        if header.auth.is_empty() {
            return Ok(None);
        }
        let pair = STANDARD
            .decode(header.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match pair.as_deref().and_then(|p| p.split_once(':')) {
            Some((user, password)) => Ok(Some(Credentials {
                username: user.to_owned(),
                password: password.to_owned(),
            })),
            None => Err(invalid(
                "its `auth` is not base64 of `user:password`".to_owned(),
            )),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP; only allowed for registries on this machine.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

/// What a transfer reports as it goes, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A blob is about to move: `size` bytes.
    Start { digest: Digest, size: u64 },
    /// `bytes` more of it moved.
    Advance { digest: Digest, bytes: u64 },
    /// It is done; `skipped` if it was already there.
    Done { digest: Digest, skipped: bool },
}

/// Where a transfer reports its [`Progress`].
pub type ProgressFn = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug)]
pub struct PullReport {
    pub name: String,
    pub digest: Digest,
    pub transferred: u64,
    pub skipped: usize,
}

#[derive(Debug)]
pub struct PushReport {
    pub digest: Digest,
    pub size: u64,
    pub transferred: u64,
    pub skipped: usize,
}

/// A connection to one registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    host: String,
    insecure: bool,
}

impl Registry {
    pub fn new(host: &str, options: &RegistryOptions) -> Result<Registry, ImageError> {
        if options.insecure && !is_local(host) {
            return Err(ImageError::Registry {
                registry: host.to_owned(),
                reason: "--insecure (plain HTTP) is only allowed for registries on this machine \
                         (localhost, 127.0.0.0/8, ::1)"
                    .to_owned(),
            });
        }
        // reqwest is built without a default crypto provider, so that only
        // one (ring, which wasmtime-wasi-http brings) is compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if options.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob, streamed: fewer round trips than chunks,
            // and every registry accepts it.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            user_agent: concat!("wrun/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let auth = match &options.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Client::new(config),
            auth,
            host: host.to_owned(),
            insecure: options.insecure,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> ImageError {
        ImageError::Registry {
            registry: self.host.clone(),
            reason: e.to_string(),
        }
    }

    /// An HTTP client's error with its causes (reqwest's own message does
    /// not say why a request failed), and a hint for the likeliest mistake.
    fn failed(&self, what: std::fmt::Arguments<'_>, e: &dyn std::error::Error) -> ImageError {
        let mut reason = format!("{what}: {e}");
        let mut source = e.source();
        while let Some(cause) = source {
            // Some errors print their source in their own message too.
            let text = cause.to_string();
            if !reason.ends_with(&text) {
                reason.push_str(&format!(": {text}"));
            }
            source = cause.source();
        }
        if !self.insecure && is_local(&self.host) && reason.contains("error sending request") {
            reason.push_str(" (for a plain-HTTP registry on this machine, add --insecure)");
        }
        self.error(reason)
    }

    /// Pulls `reference` into the store and names it; for an index, the
    /// manifest of platform wasm.
    pub async fn pull(
        &self,
        store: &ImageStore,
        reference: &ImageRef,
        progress: &ProgressFn,
    ) -> Result<PullReport, ImageError> {
        let oci = &reference.oci();
        self.client
            .auth(oci, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.failed(format_args!("failed to authenticate"), &e))?;
        let (bytes, _) = self
            .client
            .pull_manifest_raw(oci, &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| match not_found(&e) {
                Some(reason) => ImageError::NotInRegistry {
                    registry: self.host.clone(),
                    reference: reference.to_string(),
                    reason,
                },
                None => self.failed(format_args!("failed to pull `{reference}`"), &e),
            })?;
        let mut manifest_bytes = bytes.to_vec();
        let mut digest = Digest::of(&manifest_bytes);
        if let Some(wanted) = reference.digest()
            && wanted != digest
        {
            return Err(ImageError::Corrupted {
                digest: wanted,
                reason: format!("the registry's manifest hashes to `{digest}`"),
            });
        }
        // An index may point at an index; a registry cannot lead a pull
        // through more of them than any real image has.
        let mut depth = 0;
        let manifest = loop {
            match Document::parse(None, &manifest_bytes)? {
                Document::Manifest(m) => break m,
                Document::Index(_) if depth == 3 => {
                    return Err(
                        self.error(format_args!("`{reference}` nests indexes more than 3 deep"))
                    );
                }
                Document::Index(index) => {
                    depth += 1;
                    let child = select_platform(&index.manifests).ok_or_else(|| {
                        ImageError::NotRunnable {
                            reference: reference.to_string(),
                            reason: format!(
                                "its index has no manifest for platform wasm (it has {})",
                                platforms(&index.manifests)
                            ),
                        }
                    })?;
                    let (bytes, _) = self
                        .client
                        .pull_manifest_raw(
                            &reference.with_digest(&child.digest),
                            &self.auth,
                            ACCEPTED_MANIFESTS,
                        )
                        .await
                        .map_err(|e| {
                            self.failed(format_args!("failed to pull `{}`", child.digest), &e)
                        })?;
                    manifest_bytes = bytes.to_vec();
                    digest = Digest::of(&manifest_bytes);
                    if digest != child.digest {
                        return Err(ImageError::Corrupted {
                            digest: child.digest,
                            reason: format!("the registry's manifest hashes to `{digest}`"),
                        });
                    }
                }
            }
        };
        if manifest_bytes.len() as u64 > MAX_DOCUMENT {
            return Err(self.error(format_args!("manifest `{digest}` is too large")));
        }
        // Declared sizes are checked before anything is downloaded, so that
        // a manifest cannot make a pull fill the disk.
        let max_layer = unpack::Limits::default().max_bytes;
        if manifest.config.size > MAX_DOCUMENT {
            return Err(self.error(format_args!(
                "config `{}` declares {} bytes; at most {MAX_DOCUMENT} are accepted",
                manifest.config.digest, manifest.config.size
            )));
        }
        if let Some(layer) = manifest.layers.iter().find(|l| l.size > max_layer) {
            return Err(self.error(format_args!(
                "layer `{}` declares {} bytes; at most {max_layer} are accepted",
                layer.digest, layer.size
            )));
        }

        let _adding = store.adding()?;
        let mut transferred = 0;
        let mut skipped = 0;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if store.has_blob(blob) {
                skipped += 1;
                progress(Progress::Done {
                    digest: blob.digest.clone(),
                    skipped: true,
                });
                continue;
            }
            transferred += self.pull_blob(store, reference, blob, progress).await?;
        }
        crate::crash_hook::point(crate::crash_hook::PULL_BEFORE_MANIFEST);
        let media_type = manifest.media_type.as_deref().unwrap_or(spec::MANIFEST);
        let descriptor = store.put(media_type, &manifest_bytes)?;
        let name = reference.tagged().unwrap_or_else(|| reference.to_string());
        // Refuse what cannot run, hostile layers included, before naming it.
        let entry = super::store::ImageEntry {
            name: Some(name.clone()),
            descriptor: descriptor.clone(),
        };
        Image::load(store, &entry)?.rootfs(store, &unpack::Limits::default())?;
        crate::crash_hook::point(crate::crash_hook::PULL_BEFORE_TAG);
        store.tag(&name, &descriptor)?;
        Ok(PullReport {
            name,
            digest,
            transferred,
            skipped,
        })
    }

    async fn pull_blob(
        &self,
        store: &ImageStore,
        reference: &ImageRef,
        blob: &Descriptor,
        progress: &ProgressFn,
    ) -> Result<u64, ImageError> {
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        progress(Progress::Start {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        let mut stream = self
            .client
            .pull_blob_stream(&reference.oci(), &descriptor)
            .await
            .map_err(|e| self.failed(format_args!("failed to pull blob `{}`", blob.digest), &e))?;
        let mut writer = store.writer(blob)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                self.failed(format_args!("failed to pull blob `{}`", blob.digest), &e)
            })?;
            writer
                .write_all(&chunk)
                .map_err(|e| ImageError::Corrupted {
                    digest: blob.digest.clone(),
                    reason: e.to_string(),
                })?;
            progress(Progress::Advance {
                digest: blob.digest.clone(),
                bytes: chunk.len() as u64,
            });
        }
        let written = writer.written();
        writer.commit()?;
        progress(Progress::Done {
            digest: blob.digest.clone(),
            skipped: false,
        });
        Ok(written)
    }

    /// Pushes the local image `local` as `remote`.
    pub async fn push(
        &self,
        store: &ImageStore,
        local: &str,
        remote: &ImageRef,
        progress: &ProgressFn,
    ) -> Result<PushReport, ImageError> {
        let entry = store.find(local)?;
        let image = Image::load(store, &entry)?;
        let oci = &remote.oci();
        self.client
            .auth(oci, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.failed(format_args!("failed to authenticate"), &e))?;
        let mut transferred = 0;
        let mut skipped = 0;
        let manifest = &image.manifest;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let exists = self
                .client
                .blob_exists(oci, blob.digest.as_str())
                .await
                .map_err(|e| {
                    self.failed(format_args!("failed to check blob `{}`", blob.digest), &e)
                })?;
            if exists {
                skipped += 1;
                progress(Progress::Done {
                    digest: blob.digest.clone(),
                    skipped: true,
                });
                continue;
            }
            progress(Progress::Start {
                digest: blob.digest.clone(),
                size: blob.size,
            });
            let stream = blob_stream(
                store.blob_path(&blob.digest),
                blob.clone(),
                progress.clone(),
            );
            self.client
                .push_blob_stream(oci, stream, blob.digest.as_str(), Some(blob.size))
                .await
                .map_err(|e| {
                    self.failed(format_args!("failed to push blob `{}`", blob.digest), &e)
                })?;
            transferred += blob.size;
            progress(Progress::Done {
                digest: blob.digest.clone(),
                skipped: false,
            });
        }
        // The manifest goes exactly as stored, so its digest is unchanged.
        let bytes = store.read(&image.descriptor, MAX_DOCUMENT)?;
        let content_type = image
            .descriptor
            .media_type
            .parse()
            .map_err(|_| self.error("the manifest's media type is not a valid header"))?;
        self.client
            .push_manifest_raw(oci, bytes.clone(), content_type)
            .await
            .map_err(|e| self.failed(format_args!("failed to push the manifest"), &e))?;
        Ok(PushReport {
            digest: image.descriptor.digest,
            size: bytes.len() as u64,
            transferred,
            skipped,
        })
    }
}

/// A blob file as a stream of chunks, hashed on the way so that a corrupted
/// local blob fails the upload rather than being sent.
fn blob_stream(
    path: PathBuf,
    blob: Descriptor,
    progress: ProgressFn,
) -> futures_util::stream::BoxStream<'static, oci_client::errors::Result<bytes::Bytes>> {
    use std::io::Read as _;
    const CHUNK: usize = 1 << 20;
    struct State {
        file: Option<std::fs::File>,
        hasher: Sha256,
        read: u64,
        done: bool,
    }
    let fail =
        |reason: String| oci_client::errors::OciDistributionError::GenericError(Some(reason));
    let state = State {
        file: None,
        hasher: Sha256::new(),
        read: 0,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut state| {
        let path = path.clone();
        let blob = blob.clone();
        let progress = progress.clone();
        async move {
            if state.done {
                return None;
            }
            let mut buf = vec![0; CHUNK];
            let read = match &mut state.file {
                Some(file) => file.read(&mut buf),
                None => std::fs::File::open(&path).and_then(|mut file| {
                    let n = file.read(&mut buf);
                    state.file = Some(file);
                    n
                }),
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    state.done = true;
                    let reason = format!("failed to read blob `{}`: {e}", blob.digest);
                    return Some((Err(fail(reason)), state));
                }
            };
            state.read += n as u64;
            state.hasher.update(&buf[..n]);
            if n == 0 {
                state.done = true;
                let actual = Digest::from_hasher(std::mem::take(&mut state.hasher));
                if actual != blob.digest || state.read != blob.size {
                    let reason = format!(
                        "blob `{}` is corrupted: its content hashes to `{actual}`",
                        blob.digest
                    );
                    return Some((Err(fail(reason)), state));
                }
                return None;
            }
            progress(Progress::Advance {
                digest: blob.digest.clone(),
                bytes: n as u64,
            });
            buf.truncate(n);
            Some((Ok(bytes::Bytes::from(buf)), state))
        }
    })
    .boxed()
}

/// What the registry said when it has no such manifest or repository (as
/// moby's `translatePullError` reads a pull's first answer).
fn not_found(e: &oci_client::errors::OciDistributionError) -> Option<String> {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
    match e {
        E::RegistryError { envelope, .. } => {
            let reasons: Vec<String> = envelope
                .errors
                .iter()
                .filter(|e| {
                    matches!(
                        e.code,
                        Code::ManifestUnknown | Code::NameUnknown | Code::NotFound
                    )
                })
                .map(|e| match e.message.is_empty() {
                    true => "manifest unknown".to_owned(),
                    false => e.message.clone(),
                })
                .collect();
            (!reasons.is_empty()).then(|| reasons.join("; "))
        }
        E::ServerError {
            code: 404, message, ..
        } => Some(match message.trim() {
            "" => "manifest unknown".to_owned(),
            text => crate::input::excerpt(text).to_string(),
        }),
        E::ImageManifestNotFoundError(reason) => Some(reason.clone()),
        _ => None,
    }
}

/// Whether plain HTTP to `host` stays on this machine (localhost,
/// 127.0.0.0/8, ::1): the registries `--insecure` may reach, and those
/// Docker treats as insecure by default.
pub fn is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks `credentials` against the registry at `host`, as `docker login`
/// does: basic auth directly, or by obtaining a bearer token with them.
pub async fn check_login(
    host: &str,
    credentials: &Credentials,
    insecure: bool,
) -> Result<(), ImageError> {
    let registry = Registry::new(
        host,
        &RegistryOptions {
            insecure,
            credentials: Some(credentials.clone()),
        },
    )?;
    let scheme = if insecure { "http" } else { "https" };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| registry.failed(format_args!("failed to start an HTTP client"), &e))?;
    let url = format!("{scheme}://{host}/v2/");
    let response = (client.get(&url).send().await)
        .map_err(|e| registry.failed(format_args!("failed to reach `{url}`"), &e))?;
    if response.status().is_success() {
        return Ok(());
    }
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = if challenge.to_ascii_lowercase().starts_with("bearer") {
        let params = challenge_params(&challenge);
        let realm = params
            .get("realm")
            .ok_or_else(|| registry.error("its bearer challenge names no realm"))?;
        let mut query = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service", service.as_str()));
        }
        client
            .get(realm)
            .query(&query)
            .basic_auth(&credentials.username, Some(&credentials.password))
            .send()
            .await
            .map_err(|e| registry.failed(format_args!("failed to reach `{realm}`"), &e))?
            .status()
    } else {
        client
            .get(&url)
            .basic_auth(&credentials.username, Some(&credentials.password))
            .send()
            .await
            .map_err(|e| registry.failed(format_args!("failed to reach `{url}`"), &e))?
            .status()
    };
    if status.is_success() {
        Ok(())
    } else if status == reqwest::StatusCode::UNAUTHORIZED
        || status == reqwest::StatusCode::FORBIDDEN
    {
        Err(registry.error("unauthorized: incorrect username or password"))
    } else {
        Err(registry.error(format_args!("login failed with status {status}")))
    }
}

/// `Bearer realm="...",service="..."` → its parameters.
fn challenge_params(challenge: &str) -> BTreeMap<String, String> {
    let rest = challenge.split_once(' ').map_or("", |(_, r)| r);
    let mut params = BTreeMap::new();
    for part in rest.split(',') {
        if let Some((key, value)) = part.trim().split_once('=') {
            params.insert(
                key.trim().to_ascii_lowercase(),
                value.trim().trim_matches('"').to_owned(),
            );
        }
    }
    params
}

/// Stored credentials: `$WRUN_HOME/auth.json` in the format Docker and
/// podman use (`{"auths": {"HOST": {"auth": base64("user:password")}}}`),
/// so `skopeo --authfile` reads it too; readable by the user alone.
pub struct AuthFile {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct AuthJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AuthEntry {
    auth: String,
}

impl AuthFile {
    pub fn new(home: &Path) -> AuthFile {
        AuthFile {
            path: home.join("auth.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<AuthJson, ImageError> {
        match crate::input::read(&self.path, crate::input::AUTH_FILE) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidDocument {
                what: format!("credentials file `{}`", self.path.display()),
                reason: e.to_string(),
            }),
            Err(e) if e.is_not_found() => Ok(AuthJson::default()),
            Err(e) => Err(ImageError::Input(e)),
        }
    }

    pub fn get(&self, host: &str) -> Result<Option<Credentials>, ImageError> {
        let Some(entry) = self.read()?.auths.remove(host) else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, password)) => Ok(Some(Credentials {
                username: user.to_owned(),
                password: password.to_owned(),
            })),
            None => Err(ImageError::InvalidDocument {
                what: format!("credentials file `{}`", self.path.display()),
                reason: format!("the entry for `{host}` is not base64 of `user:password`"),
            }),
        }
    }

    pub fn set(&self, host: &str, credentials: &Credentials) -> Result<(), ImageError> {
        let mut json = self.read()?;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        json.auths.insert(host.to_owned(), AuthEntry { auth });
        self.write(&json)
    }

    /// Forgets `host`; returns whether there was anything to forget.
    pub fn remove(&self, host: &str) -> Result<bool, ImageError> {
        let mut json = self.read()?;
        let removed = json.auths.remove(host).is_some();
        if removed {
            self.write(&json)?;
        }
        Ok(removed)
    }

    fn write(&self, json: &AuthJson) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(ImageError::io("failed to create", dir))?;
        let mut file = tempfile::Builder::new()
            .prefix(".auth-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(ImageError::io("failed to create a temporary file in", dir))?;
        let bytes = serde_json::to_vec_pretty(json).unwrap_or_default();
        file.write_all(&bytes)
            .and_then(|()| file.as_file().sync_all())
            .map_err(ImageError::io("failed to write", &self.path))?;
        file.persist(&self.path)
            .map_err(|e| ImageError::io("failed to write", &self.path)(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_only_for_this_machine() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_local(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.example.com:5000",
            "x.localhost",
            "x.localhost",
        ] {
            assert!(!is_local(host), "{host}");
        }
        let err = Registry::new(
            "example.com",
            &RegistryOptions {
                insecure: true,
                credentials: None,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("example.com") && err.contains("--insecure"),
            "{err}"
        );
    }

    #[test]
    fn credentials_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let file = AuthFile::new(home.path());
        let creds = Credentials {
            username: "me".into(),
            password: "p:ss".into(),
        };
        file.set("127.0.0.1:5000", &creds).unwrap();
        assert_eq!(file.get("127.0.0.1:5000").unwrap(), Some(creds));
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.remove("127.0.0.1:5000").unwrap());
        assert_eq!(file.get("127.0.0.1:5000").unwrap(), None);
    }

    /// What the docker CLI and docker-py send in `X-Registry-Auth`.
    #[test]
    fn registry_auth_headers() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let parse = Credentials::from_registry_auth_header;
        assert_eq!(parse("e30=").unwrap(), None, "the CLI's `{{}}`");
        assert_eq!(parse("").unwrap(), None);
        let me = Credentials {
            username: "me".into(),
            password: "p/ss?".into(),
        };
        let json = r#"{"username":"me","password":"p/ss?","serveraddress":"127.0.0.1:5000"}"#;
        for engine in [URL_SAFE, URL_SAFE_NO_PAD, STANDARD] {
            assert_eq!(parse(&engine.encode(json)).unwrap(), Some(me.clone()));
        }
        let auth = format!(r#"{{"auth":"{}"}}"#, STANDARD.encode("me:p/ss?"));
        assert_eq!(parse(&URL_SAFE.encode(auth)).unwrap(), Some(me));
        assert_eq!(
            parse(&URL_SAFE.encode(r#"{"identitytoken":"t"}"#)).unwrap(),
            None
        );
        let err = parse("%%%").unwrap_err().to_string();
        assert!(
            err.contains("X-Registry-Auth header") && err.contains("not base64"),
            "{err}"
        );
        let err = parse(&URL_SAFE.encode("[1]")).unwrap_err().to_string();
        assert!(err.contains("not the JSON of an auth config"), "{err}");
    }

    #[test]
    fn bearer_challenges() {
        let p = challenge_params(r#"Bearer realm="https://auth.example/token",service="registry""#);
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry");
    }
}
