//! From an image in the store to what runs: which bytes are the app, its run
//! defaults, and its unpacked files.

use super::ImageError;
use super::defaults::RunDefaults;
use super::spec::{self, ComponentInfo, Descriptor, Document, ImageConfig, Manifest, WasmConfig};
use super::store::{ImageEntry, ImageStore, MAX_DOCUMENT, verify_error};
use super::unpack::{self, Budget, Compression};
use std::path::{Path, PathBuf};

/// Which convention the image follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// The CNCF wasm artifact (what `wrun build` makes).
    WasmArtifact,
    /// A standard image config with the `.wasm` in a tar layer.
    DockerWasm,
}

/// Where the app's bytes are.
#[derive(Debug, Clone)]
pub enum AppSource {
    /// The `application/wasm` layer.
    Layer(Descriptor),
    /// A file of the unpacked layers, by its guest path.
    File(String),
}

/// A runnable image, read and checked from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was found by, else its ID.
    pub name: String,
    /// The manifest's descriptor: its media type, digest and size (the
    /// platform's manifest, for an index).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    pub kind: ImageKind,
    pub architecture: String,
    pub os: String,
    pub app: AppSource,
    /// Arguments that always follow argv[0] (a Docker image's Entrypoint).
    pub fixed_args: Vec<String>,
    pub defaults: RunDefaults,
    /// Tar layers, applied in order to make the files at `/`.
    pub file_layers: Vec<Descriptor>,
    pub component: Option<ComponentInfo>,
    /// The config document, verbatim (for `image inspect`).
    pub config: serde_json::Value,
}

impl Image {
    /// The bytes its config and layers take in the store.
    pub fn size(&self) -> u64 {
        let m = &self.manifest;
        m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Reads the image `entry` refers to, verifying each document against
    /// its digest. An index resolves to its wasm platform's manifest.
    pub fn load(store: &ImageStore, entry: &ImageEntry) -> Result<Image, ImageError> {
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| entry.descriptor.digest.short().to_owned());
        let not_runnable = |reason: String| ImageError::NotRunnable {
            reference: name.clone(),
            reason,
        };
        let mut descriptor = entry.descriptor.clone();
        let manifest = loop {
            let bytes = store.read(&descriptor, MAX_DOCUMENT)?;
            match Document::parse(Some(&descriptor.media_type), &bytes)? {
                Document::Manifest(m) => break m,
                Document::Index(index) => {
                    descriptor = select_platform(&index.manifests).ok_or_else(|| {
                        not_runnable(format!(
                            "its index has no manifest for platform wasm (it has {})",
                            platforms(&index.manifests)
                        ))
                    })?;
                }
            }
        };
        let config_bytes = store.read(&manifest.config, MAX_DOCUMENT)?;
        let config: serde_json::Value =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::InvalidDocument {
                what: format!("config `{}`", manifest.config.digest),
                reason: e.to_string(),
            })?;
        let invalid_config = |e: serde_json::Error| ImageError::InvalidDocument {
            what: format!("config `{}`", manifest.config.digest),
            reason: e.to_string(),
        };
        let mut file_layers = Vec::new();
        let mut wasm_layers = Vec::new();
        for layer in &manifest.layers {
            if layer.media_type == spec::WASM_LAYER {
                wasm_layers.push(layer.clone());
            } else if Compression::from_media_type(&layer.media_type).is_some() {
                file_layers.push(layer.clone());
            } else {
                return Err(not_runnable(format!(
                    "layer `{}` has media type `{}`, which wrun cannot unpack",
                    layer.digest, layer.media_type
                )));
            }
        }
        if !matches!(
            manifest.config.media_type.as_str(),
            spec::WASM_CONFIG | spec::OCI_CONFIG | spec::DOCKER_CONFIG
        ) {
            return Err(not_runnable(format!(
                "its config has media type `{}`, which is not a wasm or image config",
                manifest.config.media_type
            )));
        }
        let image = if manifest.config.media_type == spec::WASM_CONFIG {
            let wasm: WasmConfig =
                serde_json::from_value(config.clone()).map_err(invalid_config)?;
            if wasm.architecture != "wasm" {
                return Err(not_runnable(format!(
                    "its config says architecture `{}`, not `wasm`",
                    wasm.architecture
                )));
            }
            let [layer] = wasm_layers.as_slice() else {
                return Err(not_runnable(format!(
                    "a wasm artifact needs exactly one `{}` layer; it has {}",
                    spec::WASM_LAYER,
                    wasm_layers.len()
                )));
            };
            Image {
                name,
                descriptor: descriptor.clone(),
                kind: ImageKind::WasmArtifact,
                architecture: wasm.architecture,
                os: wasm.os,
                app: AppSource::Layer(layer.clone()),
                fixed_args: Vec::new(),
                defaults: RunDefaults::from_annotations(&manifest.annotations)?,
                file_layers,
                component: wasm.component,
                config,
                manifest,
            }
        } else {
            let image_config: ImageConfig =
                serde_json::from_value(config.clone()).map_err(invalid_config)?;
            if image_config.architecture != "wasm" {
                return Err(not_runnable(format!(
                    "it is built for {}/{}, not for wasm",
                    image_config.os, image_config.architecture
                )));
            }
            if !wasm_layers.is_empty() {
                return Err(not_runnable(format!(
                    "an `{}` layer needs the `{}` config",
                    spec::WASM_LAYER,
                    spec::WASM_CONFIG
                )));
            }
            let (defaults, entry) =
                RunDefaults::from_container_config(&image_config.config.unwrap_or_default());
            let Some((wasm, fixed_args)) = entry else {
                return Err(not_runnable(
                    "its config names no entrypoint or command (the `.wasm` to run)".into(),
                ));
            };
            Image {
                name,
                descriptor: descriptor.clone(),
                kind: ImageKind::DockerWasm,
                architecture: image_config.architecture,
                os: image_config.os,
                app: AppSource::File(wasm),
                fixed_args,
                defaults,
                file_layers,
                component: None,
                config,
                manifest,
            }
        };
        Ok(image)
    }

    /// The app's argv[0]: the entrypoint as written, or the repository's
    /// last path segment.
    pub fn argv0(&self) -> String {
        match &self.app {
            AppSource::File(path) => path.clone(),
            AppSource::Layer(_) => {
                let repo = self.name.split(['@']).next().unwrap_or(&self.name);
                let repo = match repo.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => r,
                    _ => repo,
                };
                repo.rsplit('/').next().unwrap_or(repo).to_owned()
            }
        }
    }

    /// The image's files, unpacked once into `$WRUN_HOME/rootfs/<digest>`
    /// (refusing hostile layers), or `None` if it has no tar layers.
    pub fn rootfs(
        &self,
        store: &ImageStore,
        limits: &unpack::Limits,
    ) -> Result<Option<PathBuf>, ImageError> {
        if self.file_layers.is_empty() {
            return Ok(None);
        }
        let parent = store.home().join("rootfs");
        let target = parent.join(self.descriptor.digest.hex());
        if target.is_dir() {
            return Ok(Some(target));
        }
        let _adding = store.adding()?;
        std::fs::create_dir_all(&parent).map_err(ImageError::io("failed to create", &parent))?;
        let staging = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(store.tmp_dir())
            .map_err(ImageError::io(
                "failed to create a directory in",
                store.tmp_dir(),
            ))?;
        let root = cap_std::fs::Dir::open_ambient_dir(staging.path(), cap_std::ambient_authority())
            .map_err(ImageError::io("failed to open", staging.path()))?;
        let mut budget = Budget::default();
        for layer in &self.file_layers {
            let compression =
                Compression::from_media_type(&layer.media_type).unwrap_or(Compression::None);
            let mut reader = store.open_blob(layer)?;
            match unpack::apply_layer(&root, &mut reader, compression, limits, &mut budget) {
                Ok(()) => {
                    reader.finish()?;
                    crate::crash_hook::point(crate::crash_hook::ROOTFS_AFTER_LAYER);
                }
                Err(unpack::UnpackError::Read(e)) => return Err(verify_error(&layer.digest, e)),
                Err(e) => return Err(e.into()),
            }
        }
        drop(root);
        crate::crash_hook::point(crate::crash_hook::ROOTFS_BEFORE_RENAME);
        match std::fs::rename(staging.path(), &target) {
            Ok(()) => {
                // The directory now lives on as `target`.
                let _ = staging.keep();
            }
            // Another run unpacked the same image meanwhile.
            Err(_) if target.is_dir() => {}
            Err(e) => return Err(ImageError::io("failed to create", &target)(e)),
        }
        Ok(Some(target))
    }

    /// Where the app's entrypoint file lies on the host: inside `rootfs`,
    /// with every symlink resolved, or an error (the unpacker refuses links
    /// that lead out, so this only fails for a missing file).
    pub fn app_path(&self, rootfs: Option<&Path>) -> Result<PathBuf, ImageError> {
        let AppSource::File(path) = &self.app else {
            return Err(self.not_runnable("its app is a wasm layer, not a file".into()));
        };
        let Some(rootfs) = rootfs else {
            return Err(self.not_runnable(format!(
                "its entrypoint `{path}` names a file, but it has no file layers"
            )));
        };
        let relative = match path.strip_prefix('/') {
            Some(absolute) => absolute.to_owned(),
            None => {
                let workdir = self.defaults.workdir.as_deref().unwrap_or("/");
                format!("{}/{path}", workdir.trim_matches('/'))
            }
        };
        let missing = |e: std::io::Error| {
            self.not_runnable(format!("failed to read its entrypoint `{path}`: {e}"))
        };
        let root = rootfs.canonicalize().map_err(missing)?;
        let file = root
            .join(relative.trim_start_matches('/'))
            .canonicalize()
            .map_err(missing)?;
        if !file.starts_with(&root) {
            return Err(self.not_runnable(format!(
                "its entrypoint `{path}` leads out of the image's files"
            )));
        }
        Ok(file)
    }

    fn not_runnable(&self, reason: String) -> ImageError {
        ImageError::NotRunnable {
            reference: self.name.clone(),
            reason,
        }
    }
}

/// The manifest of an index to run: the one for architecture `wasm`, or the
/// only one when platforms are not given.
pub(crate) fn select_platform(manifests: &[Descriptor]) -> Option<Descriptor> {
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "wasm")
        })
        .or_else(|| match manifests {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
        .cloned()
}

pub(crate) fn platforms(manifests: &[Descriptor]) -> String {
    let list: Vec<String> = manifests
        .iter()
        .map(|m| match &m.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "one without a platform".to_owned(),
        })
        .collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
