//! Images: OCI wasm images in a local OCI image layout, built, saved and
//! loaded as OCI archives, pushed to and pulled from OCI registries, and
//! resolved into what `wrun run` needs.
//!
//! Two kinds of image run:
//! - the CNCF TAG-Runtime wasm artifact (config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer), which `wrun build` makes; wrun's run
//!   defaults travel as manifest annotations (see [`defaults`]), and file
//!   trees baked in travel as extra tar layers;
//! - Docker+Wasm images (a standard image config for platform `wasi/wasm`,
//!   the `.wasm` inside a tar layer that the entrypoint names), as
//!   `docker buildx --platform wasi/wasm` and runwasi make them.
//!
//! Tar layers are unpacked once per image into `$WRUN_HOME/rootfs/<digest>`
//! (through [`unpack`], which refuses hostile entries); `wrun run` shows
//! the app each top-level directory of it read-only at its path.

mod archive;
mod build;
pub mod defaults;
#[doc(hidden)]
pub mod fuzzing;
mod registry;
mod resolve;
mod spec;
mod store;
mod unpack;
mod volumes;

pub use archive::{LoadReport, load_archive, save_archive};
pub use build::{BuildSpec, FileTree, build_image, toml_error};
pub use defaults::RunDefaults;
pub use registry::{
    AuthFile, Credentials, Progress, ProgressFn, PullReport, PushReport, Registry, RegistryOptions,
    check_login, is_local as is_local_registry,
};
pub use resolve::{AppSource as ImageApp, Image, ImageKind};
pub use spec::{ComponentInfo, Descriptor, Digest, Index, Manifest, WasmConfig};
pub use store::{
    ImageEntry, ImageStore, ImageUser, LockGuard, PruneImages, PruneReport, RemoveReport,
    StoreUsage,
};
pub use unpack::Limits as UnpackLimits;
pub use volumes::{AnonymousVolume, VolumeUsage, anonymous_volumes, prune_volumes};

use oci_client::Reference;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image `{reference}` not found locally")]
    NotFound { reference: String },
    #[error("invalid digest `{digest}`: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("blob `{digest}` is corrupted: {reason}")]
    Corrupted { digest: Digest, reason: String },
    #[error("blob `{digest}` is missing from the store")]
    MissingBlob { digest: Digest },
    #[error("invalid {what}: {reason}")]
    InvalidDocument { what: String, reason: String },
    #[error("image `{reference}` cannot run here: {reason}")]
    NotRunnable { reference: String, reason: String },
    // The reasons below are part of the message and deliberately not
    // `source()`s: an error that prints its source and also returns it has
    // the reason printed twice by `{:#}` (and any other chain printer).
    #[error("{context} `{}`: {reason}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("invalid image: {0}")]
    Unpack(unpack::UnpackError),
    #[error("registry `{registry}`: {reason}")]
    Registry { registry: String, reason: String },
    /// The registry answered that it has no such image (its manifest or
    /// repository is unknown): Docker's `manifest unknown`.
    #[error("registry `{registry}`: manifest for `{reference}` not found: {reason}")]
    NotInRegistry {
        registry: String,
        reference: String,
        reason: String,
    },
    /// A removal that Docker would refuse without force (or at all): the
    /// image has several names, or a container uses it. The message is
    /// Docker's own, which clients show.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Build(String),
    /// A user file too large or unreadable (see [`crate::input`]).
    #[error(transparent)]
    Input(crate::input::ReadError),
}

impl ImageError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |reason| ImageError::Io {
            context,
            path,
            reason,
        }
    }
}

impl From<unpack::UnpackError> for ImageError {
    fn from(e: unpack::UnpackError) -> ImageError {
        ImageError::Unpack(e)
    }
}

/// An image name as a user types it (`hello`, `hello:1`,
/// `127.0.0.1:5000/team/app:v2`, `app@sha256:...`), normalized as Docker does:
/// no registry means Docker Hub (`library/` for one-part names), no tag
/// means `latest`.
///
/// Parsed here by the distribution grammar rather than through oci-spec's
/// `Reference`, whose Unicode-aware regex takes about 40 ms to build, paid
/// by every `wrun run IMAGE` (see bench/RESULTS.md).
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

const DOCKER_HUB: &str = "docker.io";

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: crate::input::excerpt(s).to_string(),
            reason: reason.to_owned(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (s, None),
        };
        // A tag follows the last `:` that is not part of the registry's port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(invalid(
                    "a tag is 1-128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
                ));
            }
        }
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.len() > 255 {
            return Err(invalid("the name is longer than 255 characters"));
        }
        // The first component is a registry if it looks like a host.
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let host_ok = !registry.is_empty()
            && registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        if !host_ok {
            return Err(invalid(
                "the registry is not a host name or address with an optional port",
            ));
        }
        for component in path.split('/') {
            if !is_path_component(component) {
                return Err(invalid(
                    "each part of a name is lowercase letters and digits, separated by `.`, `_`, `__` or dashes",
                ));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// The repository as Docker shows it: `hello` for Docker Hub's
    /// `library/hello`, `host:port/path` for others.
    pub fn repository(&self) -> String {
        if self.registry == DOCKER_HUB {
            // Only one-part names live under `library/`: `library/a/b` is a
            // repository of its own, which `a/b` would name differently.
            let repo = &self.repository;
            let short = match repo.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short,
                _ => repo,
            };
            // A first part that looks like a host would be read back as a
            // registry: `docker.io/a.b/c` is not `a.b/c`.
            match short.split_once('/') {
                Some((first, _)) if first.contains('.') || first == "localhost" => {
                    format!("{DOCKER_HUB}/{short}")
                }
                _ => short.to_owned(),
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The repository's path in its registry (`library/hello` on Docker
    /// Hub, `team/app`), as Docker's pull progress names it.
    pub fn path(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<Digest> {
        self.digest.clone()
    }

    /// `repository:tag`, the name an image is stored under; `None` for a
    /// reference by digest only.
    pub fn tagged(&self) -> Option<String> {
        self.tag().map(|tag| format!("{}:{tag}", self.repository()))
    }

    /// The registry's host (and port), as contacted.
    pub fn registry(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "index.docker.io"
        } else {
            &self.registry
        }
    }

    /// The reference as the registry client takes it.
    pub(crate) fn oci(&self) -> Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                digest.to_string(),
            ),
            (Some(tag), None) => Reference::with_tag(registry, repository, tag.clone()),
            (None, Some(digest)) => {
                Reference::with_digest(registry, repository, digest.to_string())
            }
            (None, None) => Reference::with_tag(registry, repository, "latest".to_owned()),
        }
    }

    /// The same repository at another digest.
    pub(crate) fn with_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &s[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error that carries a reason prints it once, also through a
    /// chain printer such as anyhow's `{:#}`: none returns as its `source()`
    /// what its message already says.
    #[test]
    fn reasons_are_printed_once() {
        use std::error::Error as _;
        let io = || std::io::Error::other("Not a directory (os error 20)");
        let errors = [
            ImageError::io("failed to create", "/h/images")(io()),
            ImageError::Unpack(unpack::UnpackError::Write {
                entry: "a/b".into(),
                reason: io(),
            }),
            ImageError::Unpack(unpack::UnpackError::Read(io())),
        ];
        for e in errors {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            assert_eq!(text.matches("Not a directory").count(), 1, "{text}");
        }
    }

    #[test]
    fn references_normalize_like_docker() {
        let r = ImageRef::parse("hello").unwrap();
        assert_eq!(r.tagged().unwrap(), "hello:latest");
        assert_eq!(r.registry(), "index.docker.io");
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v2").unwrap();
        assert_eq!(r.tagged().unwrap(), "127.0.0.1:5000/team/app:v2");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("app@{d}")).unwrap();
        assert_eq!(r.tagged(), None);
        assert_eq!(r.digest().unwrap().as_str(), d);
        assert!(ImageRef::parse("Upper/Case").is_err());
        assert!(ImageRef::parse("").is_err());
        assert!(
            ImageRef::parse("docker.io/hello:1")
                .unwrap()
                .tagged()
                .unwrap()
                == "hello:1"
        );
        assert_eq!(
            ImageRef::parse("localhost/a__b.c-d/e:v1.0")
                .unwrap()
                .tagged()
                .unwrap(),
            "localhost/a__b.c-d/e:v1.0"
        );
        let long = format!("{}:1", "a".repeat(1 << 20));
        let e = ImageRef::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("bytes)"), "{}", &e[..300]);
        // Every spelling shows as a name that parses back to the same
        // repository, and distinct repositories never share a name.
        for (spelling, shown) in [
            ("hello", "hello:latest"),
            ("library/hello", "hello:latest"),
            ("docker.io/library/hello:1", "hello:1"),
            ("docker.io/a/b", "a/b:latest"),
            ("docker.io/library/a/b", "library/a/b:latest"),
            ("index.docker.io/library/a/b:2", "library/a/b:2"),
            ("localhost/library/a", "localhost/library/a:latest"),
            ("docker.io/a.b/c", "docker.io/a.b/c:latest"),
            ("docker.io/localhost/c", "docker.io/localhost/c:latest"),
            ("docker.io/library/a.b", "a.b:latest"),
        ] {
            let r = ImageRef::parse(spelling).unwrap();
            assert_eq!(r.tagged().unwrap(), shown, "{spelling}");
            assert!(ImageRef::parse(shown).unwrap() == r, "{spelling}");
        }
        for bad in [
            "a/../b",
            "a//b",
            "-a",
            "a-",
            "a:",
            "a:-x",
            "a@sha256:00",
            "a b",
            "a/B",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
