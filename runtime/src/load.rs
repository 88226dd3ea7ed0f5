//! Loading apps: telling modules, components, text and precompiled artifacts
//! apart by their bytes, compiling, and going through the AOT cache.

use crate::digests::FileStamp;
use sha2::{Digest, Sha256};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::{CodeBuilder, CodeHint, Engine, Module, Precompiled};

/// The bytes of an app, read once, with the digest that keys its cache entry.
#[derive(Debug, Clone)]
pub struct AppSource {
    name: String,
    bytes: Vec<u8>,
    digest: String,
    /// The file's identity while it was read, when it did not change meanwhile.
    pub(crate) stamp: Option<FileStamp>,
}

/// What an app's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A binary core module or component (`\0asm`).
    Binary,
    /// WebAssembly text (`.wat`), module or component.
    Text,
    /// An artifact precompiled by `wrun compile` / `wasmtime compile`.
    Precompiled,
}

/// A loaded, compiled app, ready to instantiate.
#[derive(Clone)]
pub struct App {
    pub(crate) name: String,
    pub(crate) code: AppCode,
}

#[derive(Clone)]
pub(crate) enum AppCode {
    Module(Module),
    Component(Component),
}

/// Whether an app is a core module (WASI preview 1) or a component (WASI 0.2/0.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    Module,
    Component,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read app `{path}`: no such file")]
    NotFound { path: String },
    #[error("failed to read app `{path}`: {reason}")]
    Read {
        path: String,
        reason: std::io::Error,
    },
    /// Too large (see [`crate::input::APP_FILE`]).
    #[error(transparent)]
    Input(crate::input::ReadError),
    #[error("failed to load app `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "app `{name}` is a precompiled artifact; running one requires --allow-precompiled \
         (only use artifacts you compiled yourself: they are machine code)"
    )]
    PrecompiledNotAllowed { name: String },
}

impl AppSource {
    /// Reads an app from a file. Its name (for messages and `argv[0]`) is the
    /// file's base name.
    pub fn read(path: &Path) -> Result<AppSource, LoadError> {
        let before = stat(path)?;
        let bytes = crate::input::read(path, crate::input::APP_FILE).map_err(|e| match e {
            crate::input::ReadError::Io { reason, .. } => read_error(path, reason),
            e => LoadError::Input(e),
        })?;
        let after = stat(path)?;
        let mut source = AppSource::from_bytes(app_name(path), bytes);
        source.stamp = (before == after).then_some(after);
        Ok(source)
    }

    pub fn from_bytes(name: String, bytes: Vec<u8>) -> AppSource {
        let digest = hex::encode(Sha256::digest(&bytes));
        AppSource::verified(name, bytes, digest)
    }

    /// Bytes whose sha256 the caller already checked to be `digest`.
    pub(crate) fn verified(name: String, bytes: Vec<u8>, digest: String) -> AppSource {
        AppSource {
            name,
            bytes,
            digest,
            stamp: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The lowercase hex sha256 of the bytes (an OCI layer digest, without the
    /// `sha256:` prefix).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn kind(&self) -> SourceKind {
        if Engine::detect_precompiled(&self.bytes).is_some() {
            SourceKind::Precompiled
        } else if self.bytes.starts_with(b"\0asm") {
            SourceKind::Binary
        } else {
            SourceKind::Text
        }
    }

    pub(crate) fn invalid(&self, reason: impl std::fmt::Display) -> LoadError {
        LoadError::Invalid {
            name: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Compiles the source to a serialized artifact, returning its kind.
    pub(crate) fn precompile(&self, engine: &Engine) -> Result<(AppKind, Vec<u8>), LoadError> {
        if self.bytes.is_empty() {
            return Err(self.invalid("the file is empty"));
        }
        if self.kind() == SourceKind::Text && std::str::from_utf8(&self.bytes).is_err() {
            return Err(self.invalid(
                "not WebAssembly: neither a binary module or component (no `\\0asm` header) \
                 nor WebAssembly text",
            ));
        }
        let mut code = CodeBuilder::new(engine);
        code.wasm_binary_or_text(&self.bytes, Some(Path::new(&self.name)))
            .map_err(|e| self.invalid(format_args!("{e:#}")))?;
        let result = match code.hint() {
            Some(CodeHint::Component) => code
                .compile_component_serialized()
                .map(|a| (AppKind::Component, a)),
            Some(CodeHint::Module) | None => code
                .compile_module_serialized()
                .map(|a| (AppKind::Module, a)),
        };
        result.map_err(|e| self.invalid(format_args!("{e:#}")))
    }
}

/// wasmtime 48 can map a component only by path; `/proc/self/fd` names the
/// very file that was verified, so no other file can be swapped in between.
#[cfg(target_os = "linux")]
fn open_component(engine: &Engine, file: std::fs::File) -> wasmtime::Result<Component> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: see `App::deserialize_file`; `file` stays open until mapped.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize_file(engine, &path) };
    drop(file);
    component
}

#[cfg(not(target_os = "linux"))]
fn open_component(engine: &Engine, mut file: std::fs::File) -> wasmtime::Result<Component> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut bytes)?;
    bytes.truncate(bytes.len().saturating_sub(crate::cache::TRAILER_LEN));
    // SAFETY: see `App::deserialize_file`.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &bytes) };
    component
}

/// The name of an app in messages and its `argv[0]`: the file's base name.
pub(crate) fn app_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The identity of the file at `path`, which must be a regular file.
pub(crate) fn stat(path: &Path) -> Result<FileStamp, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if meta.is_dir() {
        return Err(LoadError::Read {
            path: path.display().to_string(),
            reason: std::io::Error::other("it is a directory"),
        });
    }
    Ok(FileStamp::of(&meta))
}

fn read_error(path: &Path, e: std::io::Error) -> LoadError {
    let path = path.display().to_string();
    match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound { path },
        _ => LoadError::Read { path, reason: e },
    }
}

impl App {
    /// Deserializes an artifact produced by this engine (from the cache or a
    /// `--allow-precompiled` file).
    ///
    /// wasmtime checks that the artifact was produced by a compatible engine
    /// (version, target, settings) and refuses it otherwise; it cannot check the
    /// machine code itself, which is why cache entries carry a digest and
    /// arbitrary precompiled files need the user's explicit consent.
    pub(crate) fn deserialize(
        engine: &Engine,
        name: &str,
        artifact: &[u8],
    ) -> Result<App, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let code = match Engine::detect_precompiled(artifact) {
            Some(Precompiled::Module) => {
                // SAFETY: the bytes are a wasmtime artifact that either wrun
                // compiled itself (verified against its digest by the cache) or
                // that the user explicitly allowed with --allow-precompiled;
                // wasmtime validates the header and engine compatibility.
                #[allow(unsafe_code)]
                let module = unsafe { Module::deserialize(engine, artifact) }.map_err(invalid)?;
                AppCode::Module(module)
            }
            Some(Precompiled::Component) => {
                // SAFETY: as above.
                #[allow(unsafe_code)]
                let component =
                    unsafe { Component::deserialize(engine, artifact) }.map_err(invalid)?;
                AppCode::Component(component)
            }
            None => {
                return Err(LoadError::Invalid {
                    name: name.to_owned(),
                    reason: "not a precompiled wasmtime artifact".to_owned(),
                });
            }
        };
        Ok(App {
            name: name.to_owned(),
            code,
        })
    }

    /// Maps a verified cache entry. The file is mapped copy-on-write, not
    /// read: an entry is never modified in place (see `cache`), so the mapping
    /// holds exactly the bytes whose digest was checked.
    pub(crate) fn deserialize_file(
        engine: &Engine,
        name: &str,
        entry: crate::cache::CachedArtifact,
    ) -> Result<App, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let code = match entry.kind {
            AppKind::Module => {
                // SAFETY: a wasmtime artifact that wrun compiled itself, just
                // verified against its digest; wasmtime validates the header
                // and engine compatibility.
                #[allow(unsafe_code)]
                let module = unsafe { Module::deserialize_open_file(engine, entry.file) }
                    .map_err(invalid)?;
                AppCode::Module(module)
            }
            AppKind::Component => {
                AppCode::Component(open_component(engine, entry.file).map_err(invalid)?)
            }
        };
        Ok(App {
            name: name.to_owned(),
            code,
        })
    }

    /// The name used in messages: the file's base name unless renamed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shows the app under another name in messages (e.g. `--name`).
    pub fn renamed(mut self, name: impl Into<String>) -> App {
        self.name = name.into();
        self
    }

    pub fn kind(&self) -> AppKind {
        match self.code {
            AppCode::Module(_) => AppKind::Module,
            AppCode::Component(_) => AppKind::Component,
        }
    }
}
