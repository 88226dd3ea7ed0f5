//! Loading apps: telling modules, components, text and precompiled artifacts
//! apart by their bytes, compiling, and going through the AOT cache.

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
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: shown.clone(),
            },
            _ if path.is_dir() => LoadError::Read {
                path: shown.clone(),
                reason: std::io::Error::other("it is a directory"),
            },
            _ => LoadError::Read {
                path: shown.clone(),
                reason: e,
            },
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(shown);
        Ok(AppSource::from_bytes(name, bytes))
    }

    pub fn from_bytes(name: String, bytes: Vec<u8>) -> AppSource {
        let digest = hex::encode(Sha256::digest(&bytes));
        AppSource {
            name,
            bytes,
            digest,
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
