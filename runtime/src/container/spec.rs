//! A container's spec: an app file or an image, under a front end's
//! overrides.

use crate::image::{AnonymousVolume, Image, ImageError, ImageStore, UnpackLimits};
use std::path::{Path, PathBuf};
use wrun_host_api::net::PortMapping;
use wrun_host_api::{Access, NetworkAccess, Stdin, Volume, WasiSpec, merge_env};

/// What a front end asks for. Over an image's defaults: `args` replace the
/// image's arguments, `env` overrides its variables by name, `volumes` and
/// `workdir` win.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Arguments after argv[0] (and an image's fixed entrypoint arguments);
    /// `None` keeps the image's.
    pub args: Option<Vec<String>>,
    /// Variables in the order given (env files, then `-e`); of one name the
    /// last one wins, at the place of the first.
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub workdir: Option<String>,
    pub stdin: Stdin,
    /// Publish every port the image exposes, each on a free host port (`-P`).
    pub publish_all: bool,
}

/// What runs: the guest's world, the ports its image asks to publish, and
/// the anonymous volumes that live as long as the spec does.
pub struct ContainerSpec {
    pub wasi: WasiSpec,
    /// Ports published for the image (`-P`), beside the front end's own.
    pub publish: Vec<PortMapping>,
    /// The image's unpacked layers, if it has tar layers.
    pub rootfs: Option<PathBuf>,
    /// Removed when the spec is dropped, as Docker's anonymous volumes of a
    /// `--rm` container.
    anonymous: Vec<AnonymousVolume>,
}

impl ContainerSpec {
    /// An app file run as `argv0` (its base name, or `--name`).
    pub fn from_file(argv0: String, overrides: Overrides) -> ContainerSpec {
        let mut args = vec![argv0];
        args.extend(overrides.args.unwrap_or_default());
        ContainerSpec {
            wasi: WasiSpec {
                args,
                env: merge_env(overrides.env),
                volumes: overrides.volumes,
                workdir: overrides.workdir,
                stdin: overrides.stdin,
                network: NetworkAccess::Virtual,
            },
            publish: Vec::new(),
            rootfs: None,
            anonymous: Vec::new(),
        }
    }

    /// An image under `overrides`: its entrypoint and arguments, its
    /// environment, its working directory, the directories of its layers
    /// read-only at their paths, an empty directory at each volume point no
    /// volume covers, and with `publish_all` its exposed ports.
    pub fn from_image(
        image: &Image,
        store: &ImageStore,
        overrides: Overrides,
    ) -> Result<ContainerSpec, ImageError> {
        let defaults = &image.defaults;
        let mut args = vec![image.argv0()];
        args.extend(image.fixed_args.iter().cloned());
        args.extend(overrides.args.unwrap_or_else(|| defaults.args.clone()));
        let mut env = Vec::new();
        for entry in &defaults.env {
            match entry.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    env.push((key.to_owned(), value.to_owned()))
                }
                _ => tracing::warn!("image `{}`: ignoring env entry `{entry}`", image.name),
            }
        }
        env.extend(overrides.env);
        let mut volumes = overrides.volumes;
        let rootfs = image.rootfs(store, &UnpackLimits::default())?;
        if let Some(rootfs) = &rootfs {
            // Each top-level directory is its own read-only volume rather
            // than the whole tree at `/`: wasi-libc gives a volume at `/` and
            // the working directory (preopened as `.`) the same empty prefix,
            // so absolute paths would resolve in the working directory.
            for top in top_level_dirs(rootfs)? {
                let guest = format!("/{top}");
                if !volumes.iter().any(|v| v.guest == guest || v.guest == "/") {
                    volumes.push(Volume {
                        host: rootfs.join(&top),
                        guest,
                        access: Access::ReadOnly,
                    });
                }
            }
        }
        let mut anonymous = Vec::new();
        for point in &defaults.volumes {
            if volumes.iter().any(|v| v.guest == *point) {
                continue;
            }
            let dir = AnonymousVolume::create(store)?;
            volumes.push(Volume {
                host: dir.path().to_owned(),
                guest: point.clone(),
                access: Access::ReadWrite,
            });
            anonymous.push(dir);
        }
        let mut publish = Vec::new();
        if overrides.publish_all {
            for port in &defaults.exposed_ports {
                let mappings = PortMapping::parse(port).map_err(|e| ImageError::NotRunnable {
                    reference: image.name.clone(),
                    reason: e.to_string(),
                })?;
                publish.extend(mappings);
            }
        }
        Ok(ContainerSpec {
            wasi: WasiSpec {
                args,
                env: merge_env(env),
                volumes,
                workdir: overrides.workdir.or_else(|| defaults.workdir.clone()),
                stdin: overrides.stdin,
                network: NetworkAccess::Virtual,
            },
            publish,
            rootfs,
            anonymous,
        })
    }

    /// The host directories of the anonymous volumes made for the image's
    /// volume points.
    pub fn anonymous_volumes(&self) -> impl Iterator<Item = &Path> {
        self.anonymous.iter().map(|v| v.path())
    }
}

/// The names of the directories at the top of an unpacked image (a
/// symlink is not followed: its target is reachable where it lies).
fn top_level_dirs(rootfs: &Path) -> Result<Vec<String>, ImageError> {
    let read = || ImageError::io("failed to read", rootfs);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(rootfs).map_err(read())? {
        let entry = entry.map_err(read())?;
        if entry.file_type().map_err(read())?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gets_the_front_ends_world() {
        let env = [("A", "1"), ("B", "2"), ("A", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let spec = ContainerSpec::from_file(
            "app.wasm".to_owned(),
            Overrides {
                args: Some(vec!["-x".to_owned()]),
                env: env.to_vec(),
                workdir: Some("/data".to_owned()),
                ..Overrides::default()
            },
        );
        assert_eq!(spec.wasi.args, ["app.wasm", "-x"]);
        // The last value of a name, at the place of the first.
        let env: Vec<_> = spec
            .wasi
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(env, ["A=3", "B=2"]);
        assert_eq!(spec.wasi.workdir.as_deref(), Some("/data"));
        assert!(spec.publish.is_empty() && spec.anonymous_volumes().next().is_none());
    }
}
