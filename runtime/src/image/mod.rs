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
mod registry;
mod resolve;
mod spec;
mod store;
mod unpack;

pub use archive::{LoadReport, load_archive, save_archive};
pub use build::{BuildSpec, FileTree, build_image};
pub use defaults::RunDefaults;
pub use registry::{
    AuthFile, Credentials, Progress, ProgressFn, PullReport, PushReport, Registry, RegistryOptions,
    check_login,
};
pub use resolve::{AppSource as ImageApp, Image, ImageKind};
pub use spec::{ComponentInfo, Descriptor, Digest, Index, Manifest, WasmConfig};
pub use store::{ImageEntry, ImageStore, PruneReport};
pub use unpack::Limits as UnpackLimits;

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
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid image: {0}")]
    Unpack(#[from] unpack::UnpackError),
    #[error("registry `{registry}`: {reason}")]
    Registry { registry: String, reason: String },
    #[error("{0}")]
    Build(String),
}

impl ImageError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            context,
            path,
            source,
        }
    }
}

/// An image name as a user types it (`hello`, `hello:1`,
/// `127.0.0.1:5000/team/app:v2`, `app@sha256:...`), normalized as Docker does:
/// no registry means Docker Hub, no tag means `latest`.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef(Reference);

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let reference = Reference::try_from(s).map_err(|e| ImageError::InvalidReference {
            reference: s.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(digest) = reference.digest() {
            Digest::parse(digest)?;
        }
        Ok(ImageRef(reference))
    }

    /// The repository as Docker shows it: `hello` for Docker Hub's
    /// `library/hello`, `host:port/path` for others.
    pub fn repository(&self) -> String {
        match self.0.registry() {
            "docker.io" => {
                let repo = self.0.repository();
                repo.strip_prefix("library/").unwrap_or(repo).to_owned()
            }
            registry => format!("{registry}/{}", self.0.repository()),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    pub fn digest(&self) -> Option<Digest> {
        self.0.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// `repository:tag`, the name an image is stored under; `None` for a
    /// reference by digest only.
    pub fn tagged(&self) -> Option<String> {
        self.tag().map(|tag| format!("{}:{tag}", self.repository()))
    }

    /// The registry's host (and port), as contacted.
    pub fn registry(&self) -> &str {
        self.0.resolve_registry()
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.0
    }

    /// The same repository at another tag or digest.
    pub(crate) fn with_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.0.registry().to_owned(),
            self.0.repository().to_owned(),
            digest.to_string(),
        )
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = self.0.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.0.digest() {
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
    }
}
