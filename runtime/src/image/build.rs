//! `wrun build`: a CNCF wasm artifact from a `.wasm` file and a manifest
//! (`wrun.toml`), reproducibly: the same inputs give the same digest, since
//! timestamps are fixed (`SOURCE_DATE_EPOCH`, else the Unix epoch), tar
//! entries are sorted with owner, group and time cleared, and every JSON
//! document is written with sorted maps.
//!
//! ```toml
//! wasm = "target/wasm32-wasip2/release/app.wasm"   # relative to the manifest
//! args = ["--port", "8080"]
//! env = { GREETING = "hello" }
//! expose = ["8080/tcp"]
//! volumes = ["/data"]
//! workdir = "/data"
//!
//! [[files]]                 # baked in as a tar layer, read-only at run time
//! source = "static"
//! target = "/static"
//! ```

use super::ImageError;
use super::defaults::RunDefaults;
use super::spec::{self, ComponentInfo, Descriptor, Manifest, WasmConfig};
use super::store::ImageStore;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A build manifest, with its paths resolved.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    pub wasm: PathBuf,
    pub defaults: RunDefaults,
    pub files: Vec<FileTree>,
}

/// A directory (or file) to bake in at a guest path.
#[derive(Debug, Clone)]
pub struct FileTree {
    pub source: PathBuf,
    pub target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    wasm: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    expose: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    workdir: Option<String>,
    #[serde(default)]
    files: Vec<FilesEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesEntry {
    source: PathBuf,
    target: String,
}

impl BuildSpec {
    /// Just a wasm file: no defaults, no files.
    pub fn wasm(path: &Path) -> BuildSpec {
        BuildSpec {
            wasm: path.to_owned(),
            ..BuildSpec::default()
        }
    }

    /// Parses a manifest; relative paths are relative to `context`.
    pub fn parse(text: &str, name: &str, context: &Path) -> Result<BuildSpec, ImageError> {
        let invalid = |reason: String| ImageError::Build(format!("invalid `{name}`: {reason}"));
        let file: ManifestFile = toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;
        let mut env = Vec::new();
        for (key, value) in file.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(invalid(format!(
                    "env: `{key}` is not a valid variable name"
                )));
            }
            env.push(format!("{key}={value}"));
        }
        let mut exposed_ports = Vec::new();
        for port in &file.expose {
            exposed_ports.push(normalize_port(port).ok_or_else(|| {
                invalid(format!(
                    "expose: `{port}` is not PORT[/tcp|/udp] with PORT in 1-65535"
                ))
            })?);
        }
        let guest = |what: &str, path: &str| {
            guest_path(path).ok_or_else(|| {
                invalid(format!(
                    "{what}: `{path}` is not an absolute guest path without `..`"
                ))
            })
        };
        let volumes = (file.volumes.iter())
            .map(|v| guest("volumes", v))
            .collect::<Result<_, _>>()?;
        let workdir = file
            .workdir
            .as_deref()
            .map(|w| guest("workdir", w))
            .transpose()?;
        let mut files = Vec::new();
        for entry in file.files {
            let target = guest("files.target", &entry.target)?;
            if target == "/" {
                return Err(invalid(
                    "files.target: `/` is not allowed; name a directory".into(),
                ));
            }
            files.push(FileTree {
                source: context.join(entry.source),
                target,
            });
        }
        Ok(BuildSpec {
            wasm: context.join(file.wasm),
            defaults: RunDefaults {
                args: file.args,
                env,
                exposed_ports,
                volumes,
                workdir,
            },
            files,
        })
    }
}

/// A TOML error as a line: where, and what, with the quoted bits of the
/// input cut short (toml's own Display repeats the whole offending line).
pub fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = crate::input::excerpt_of(error.message().trim_end(), 256);
    match error.span() {
        Some(span) => {
            let (line, column) = crate::input::line_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// `8080` or `8080/tcp` → `8080/tcp`.
fn normalize_port(port: &str) -> Option<String> {
    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let number: u16 = number.parse().ok().filter(|n| *n > 0)?;
    matches!(proto, "tcp" | "udp").then(|| format!("{number}/{proto}"))
}

/// An absolute guest path, normalized (`//a/./b/` → `/a/b`); `..` refused.
fn guest_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The fixed creation time of every build: `SOURCE_DATE_EPOCH`, the
/// reproducible-builds convention, else the Unix epoch.
fn created() -> Result<String, ImageError> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse::<u64>().map_err(|_| {
            ImageError::Build(format!(
                "SOURCE_DATE_EPOCH `{value}` is not a number of seconds"
            ))
        })?,
        Err(_) => 0,
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    Ok(humantime::format_rfc3339_seconds(time).to_string())
}

/// Builds the image and names it `name` (`repository:tag`); returns the
/// manifest's descriptor.
pub fn build_image(
    store: &ImageStore,
    spec: &BuildSpec,
    name: &str,
) -> Result<Descriptor, ImageError> {
    let wasm = crate::input::read(&spec.wasm, crate::input::APP_FILE)
        .map_err(|e| ImageError::Build(e.to_string()))?;
    if !wasm.starts_with(b"\0asm") {
        return Err(ImageError::Build(format!(
            "`{}` is not a wasm binary (no `\\0asm` header); build .wat files with `wasm-tools parse` first",
            spec.wasm.display()
        )));
    }
    let is_component = wasmparser::Parser::is_component(&wasm);
    let component = if is_component {
        Some(component_info(&wasm).map_err(|e| {
            ImageError::Build(format!("failed to read `{}`: {e}", spec.wasm.display()))
        })?)
    } else {
        None
    };
    let mut tars = Vec::new();
    for tree in &spec.files {
        tars.push(tar_layer(tree)?);
    }
    let created = created()?;

    let _adding = store.adding()?;
    let mut layers = vec![store.put(spec::WASM_LAYER, &wasm)?];
    for tar in &tars {
        layers.push(store.put(spec::TAR_LAYER, tar)?);
    }
    let config = WasmConfig {
        created: Some(created.clone()),
        author: None,
        architecture: "wasm".to_owned(),
        os: if is_component { "wasip2" } else { "wasip1" }.to_owned(),
        layer_digests: layers.iter().map(|l| l.digest.clone()).collect(),
        component,
    };
    let config = store.put(spec::WASM_CONFIG, &spec::to_json(&config))?;
    crate::crash_hook::point(crate::crash_hook::BUILD_BEFORE_MANIFEST);
    let mut annotations = BTreeMap::new();
    annotations.insert(spec::CREATED.to_owned(), created);
    spec.defaults.to_annotations(&mut annotations);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::MANIFEST.to_owned()),
        artifact_type: None,
        config,
        layers,
        annotations,
    };
    let descriptor = store.put(spec::MANIFEST, &spec::to_json(&manifest))?;
    crate::crash_hook::point(crate::crash_hook::BUILD_BEFORE_TAG);
    store.tag(name, &descriptor)?;
    Ok(descriptor)
}

/// The names a component imports and exports at its top level (the
/// interfaces of its world).
pub(crate) fn component_info(bytes: &[u8]) -> Result<ComponentInfo, wasmparser::BinaryReaderError> {
    use wasmparser::Payload;
    let mut info = ComponentInfo::default();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    info.imports.push(import?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    info.exports.push(export?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// One file tree as an uncompressed tar, entries sorted, metadata cleared.
fn tar_layer(tree: &FileTree) -> Result<Vec<u8>, ImageError> {
    let fail = |path: &Path, reason: String| {
        ImageError::Build(format!("failed to add `{}`: {reason}", path.display()))
    };
    let meta =
        std::fs::symlink_metadata(&tree.source).map_err(|e| fail(&tree.source, e.to_string()))?;
    let mut builder = tar::Builder::new(Vec::new());
    let base = tree.target.trim_start_matches('/').to_owned();
    if meta.is_dir() {
        append(&mut builder, &tree.source, &base, &meta, &tree.source)?;
        let mut stack = vec![(tree.source.clone(), base)];
        while let Some((dir, prefix)) = stack.pop() {
            let mut children: Vec<_> = std::fs::read_dir(&dir)
                .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                .map_err(|e| fail(&dir, e.to_string()))?;
            children.sort_by_key(|c| c.file_name());
            let mut subdirs = Vec::new();
            for child in children {
                let name = child.file_name();
                let name = name
                    .to_str()
                    .ok_or_else(|| fail(&child.path(), "the name is not UTF-8".into()))?;
                let path = child.path();
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|e| fail(&path, e.to_string()))?;
                let entry = format!("{prefix}/{name}");
                append(&mut builder, &path, &entry, &meta, &tree.source)?;
                if meta.is_dir() {
                    subdirs.push((path, entry));
                }
            }
            // Depth-first in name order, whatever the stack order.
            stack.extend(subdirs.into_iter().rev());
        }
    } else {
        append(&mut builder, &tree.source, &base, &meta, &tree.source)?;
    }
    builder
        .into_inner()
        .map_err(|e| fail(&tree.source, e.to_string()))
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    entry: &str,
    meta: &std::fs::Metadata,
    root: &Path,
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let fail =
        |reason: String| ImageError::Build(format!("failed to add `{}`: {reason}", path.display()));
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    let executable = meta.permissions().mode() & 0o111 != 0;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, format!("{entry}/"), std::io::empty())
            .map_err(|e| fail(e.to_string()))
    } else if file_type.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_size(meta.len());
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        builder
            .append_data(&mut header, entry, file)
            .map_err(|e| fail(e.to_string()))
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| fail(e.to_string()))?;
        // The same rules the unpacker applies, so that what is built runs: a
        // link stays inside the tree, and only leading `..` count.
        if super::unpack::has_dotdot_after_name(&target) {
            return Err(fail(format!(
                "it is a symlink to `{}`, which has `..` after a name; write the target \
                 without it",
                target.display()
            )));
        }
        let inside = target.is_relative() && {
            let depth = path
                .strip_prefix(root)
                .map(|p| p.components().count().saturating_sub(1))
                .unwrap_or(0) as isize;
            let mut level = depth;
            target.components().all(|c| {
                match c {
                    Component::ParentDir => level -= 1,
                    Component::Normal(_) => level += 1,
                    _ => {}
                }
                level >= 0
            })
        };
        if !inside {
            return Err(fail(format!(
                "it is a symlink to `{}`, outside the tree",
                target.display()
            )));
        }
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder
            .append_link(&mut header, entry, &target)
            .map_err(|e| fail(e.to_string()))
    } else {
        Err(fail(
            "only files, directories and symlinks can be baked in".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baked_in_links_follow_the_unpackers_rules() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        std::os::unix::fs::symlink(".", tree.join("x")).unwrap();
        std::os::unix::fs::symlink("x/..", tree.join("l")).unwrap();
        let err = tar_layer(&FileTree {
            source: tree.clone(),
            target: "/t".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`x/..`") && err.contains("after a name"),
            "{err}"
        );
        std::fs::remove_file(tree.join("l")).unwrap();
        std::fs::create_dir(tree.join("sub")).unwrap();
        std::os::unix::fs::symlink("../x", tree.join("sub/l")).unwrap();
        tar_layer(&FileTree {
            source: tree,
            target: "/t".into(),
        })
        .unwrap();
    }

    #[test]
    fn manifest_parsing_names_bad_values() {
        let ctx = Path::new("/ctx");
        let spec = BuildSpec::parse(
            "wasm = \"app.wasm\"\nexpose = [\"80\"]\nenv = { B = \"2\", A = \"1\" }\n\
             [[files]]\nsource = \"static\"\ntarget = \"/srv//static/\"\n",
            "wrun.toml",
            ctx,
        )
        .unwrap();
        assert_eq!(spec.wasm, Path::new("/ctx/app.wasm"));
        assert_eq!(spec.defaults.exposed_ports, vec!["80/tcp"]);
        assert_eq!(spec.defaults.env, vec!["A=1", "B=2"]);
        assert_eq!(spec.files[0].target, "/srv/static");
        for (text, needle) in [
            ("wasm = \"a\"\nexpose = [\"http\"]", "`http`"),
            ("wasm = \"a\"\nvolumes = [\"data\"]", "`data`"),
            ("wasm = \"a\"\nworkdir = \"/a/../..\"", "`/a/../..`"),
            ("wasm = \"a\"\nport = 1", "unknown field `port`"),
            ("args = []", "missing field `wasm`"),
        ] {
            let err = BuildSpec::parse(text, "wrun.toml", ctx)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle) && err.contains("wrun.toml"), "{err}");
        }
    }
}
