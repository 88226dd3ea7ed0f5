//! `wrun images`, `wrun image ...`, `wrun tag`, `wrun rmi`, `wrun save` and
//! `wrun load`: the local image store.

use crate::common::image_store;
use anyhow::{Context as _, bail};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use wrun_runtime::Size;
use wrun_runtime::image::{
    Image, ImageEntry, ImageKind, ImageRef, ImageStore, load_archive, save_archive,
};

/// Manage images: list, inspect, tag, remove, prune.
#[derive(clap::Args)]
pub struct ImageCommand {
    #[command(subcommand)]
    command: ImageSubcommand,
}

#[derive(clap::Subcommand)]
enum ImageSubcommand {
    /// List images (as `wrun images`).
    #[command(visible_alias = "list")]
    Ls(ImagesCommand),
    /// Show images in detail, as JSON.
    Inspect(InspectCommand),
    /// Remove images (as `wrun rmi`).
    Rm(RmiCommand),
    /// Remove images without a name, then every blob that no image uses.
    Prune(PruneCommand),
    /// Give an image another name (as `wrun tag`).
    Tag(TagCommand),
}

impl ImageCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        match self.command {
            ImageSubcommand::Ls(c) => c.execute(),
            ImageSubcommand::Inspect(c) => c.execute(),
            ImageSubcommand::Rm(c) => c.execute(),
            ImageSubcommand::Prune(c) => c.execute(),
            ImageSubcommand::Tag(c) => c.execute(),
        }
    }
}

/// List images in the local store ($WRUN_HOME/images, an OCI image layout).
#[derive(clap::Args)]
pub struct ImagesCommand {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,

    /// `table` (the default) or `json`: one JSON object per line, as
    /// `docker images --format json` prints.
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json"])]
    format: String,

    /// Only images of this repository (e.g. `hello`, `127.0.0.1:5000/app`).
    #[arg(value_name = "REPOSITORY")]
    repository: Option<String>,
}

struct Row {
    repository: String,
    tag: String,
    digest: String,
    kind: String,
    size: u64,
}

fn row(store: &ImageStore, entry: &ImageEntry) -> Row {
    let (repository, tag) = match entry.name.as_deref() {
        Some(name) => match name.split_once('@') {
            Some((repo, _)) => (repo.to_owned(), "<none>".to_owned()),
            None => match name.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
                _ => (name.to_owned(), "<none>".to_owned()),
            },
        },
        None => ("<none>".to_owned(), "<none>".to_owned()),
    };
    let (kind, size) = match Image::load(store, entry) {
        Ok(image) => {
            let size = image.size();
            let kind = match image.kind {
                ImageKind::WasmArtifact => image.os.clone(),
                ImageKind::DockerWasm => format!("{}/{}", image.os, image.architecture),
            };
            (kind, size)
        }
        Err(e) => {
            tracing::warn!("image `{}`: {e}", repository);
            ("invalid".to_owned(), 0)
        }
    };
    Row {
        repository,
        tag,
        digest: entry.descriptor.digest.to_string(),
        kind,
        size,
    }
}

impl ImagesCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        let wanted = self
            .repository
            .as_deref()
            .map(|r| ImageRef::parse(r).map(|r| r.repository()))
            .transpose()?;
        let mut rows: Vec<Row> = store
            .entries()?
            .iter()
            .map(|e| row(&store, e))
            .filter(|r| wanted.as_ref().is_none_or(|w| *w == r.repository))
            .collect();
        rows.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        let mut out = std::io::stdout().lock();
        if self.quiet {
            for r in &rows {
                writeln!(out, "{}", &r.digest["sha256:".len()..][..12])?;
            }
        } else if self.format == "json" {
            for r in &rows {
                let json = serde_json::json!({
                    "Repository": r.repository,
                    "Tag": r.tag,
                    "ID": &r.digest["sha256:".len()..][..12],
                    "Digest": r.digest,
                    "Platform": r.kind,
                    "Size": Size(r.size).to_string(),
                    "SizeBytes": r.size,
                });
                writeln!(out, "{json}")?;
            }
        } else {
            let width = rows
                .iter()
                .map(|r| r.repository.len())
                .max()
                .unwrap_or(0)
                .max("REPOSITORY".len());
            let tag_width = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
            writeln!(
                out,
                "{:width$}  {:tag_width$}  {:12}  {:12}  SIZE",
                "REPOSITORY", "TAG", "IMAGE ID", "PLATFORM"
            )?;
            for r in &rows {
                writeln!(
                    out,
                    "{:width$}  {:tag_width$}  {:12}  {:12}  {}",
                    r.repository,
                    r.tag,
                    &r.digest["sha256:".len()..][..12],
                    r.kind,
                    Size(r.size)
                )?;
            }
        }
        Ok(0)
    }
}

/// Show images in detail: names, digests, the manifest, the config, and the
/// run defaults `wrun run` applies. Prints a JSON array.
#[derive(clap::Args)]
pub struct InspectCommand {
    /// Images: NAME[:TAG], NAME@DIGEST or an image ID.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl InspectCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        let mut all = Vec::new();
        for name in &self.images {
            let entry = store.find(name)?;
            let image = Image::load(&store, &entry)?;
            let names: Vec<String> = store
                .entries()?
                .into_iter()
                .filter(|e| e.descriptor.digest == entry.descriptor.digest)
                .filter_map(|e| e.name)
                .collect();
            all.push(serde_json::json!({
                "Id": image.descriptor.digest.to_string(),
                "RepoTags": names,
                "Kind": match image.kind {
                    ImageKind::WasmArtifact => "wasm-artifact",
                    ImageKind::DockerWasm => "docker-wasm",
                },
                "Os": image.os,
                "Architecture": image.architecture,
                "Size": image.size(),
                "RunDefaults": image.defaults,
                "EntrypointArgs": image.fixed_args,
                "Component": image.component,
                "Manifest": image.manifest,
                "Config": image.config,
            }));
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
        Ok(0)
    }
}

/// Name an image: `wrun tag SOURCE TARGET`, as `docker tag`.
#[derive(clap::Args)]
pub struct TagCommand {
    /// The image: NAME[:TAG], NAME@DIGEST or an image ID.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The new name: NAME[:TAG] (the tag defaults to `latest`).
    #[arg(value_name = "TARGET")]
    target: String,
}

impl TagCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        store.add_name(&self.source, &self.target)?;
        Ok(0)
    }
}

/// Remove images, as `docker rmi`: a name is removed, and the image with its
/// last name; an image ID removes the image with all its names (which
/// needs --force when it has several). Blobs are deleted unless another
/// image, or a running app, uses them.
#[derive(clap::Args)]
pub struct RmiCommand {
    /// Remove an image by ID even when it has several names.
    #[arg(short, long)]
    force: bool,
    /// Images: NAME[:TAG], NAME@DIGEST or an image ID.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl RmiCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        // As `docker rmi`: every name is tried, each failure reported, and
        // the exit code is that of the last failure.
        let mut code = 0;
        for name in &self.images {
            // Containers are the daemon's: `wrun rmi` knows of none (their
            // images' blobs stay while they exist, see `ImageStore`).
            match store.remove(name, self.force, |_| Vec::new()) {
                Ok(report) => {
                    for name in &report.untagged {
                        println!("Untagged: {name}");
                    }
                    if let (true, Some(digest)) = (report.untagged.is_empty(), &report.deleted) {
                        println!("Deleted: {digest}");
                    }
                }
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    eprintln!("wrun: {}", crate::exit::describe(&e));
                    code = crate::exit::code_for(&e);
                }
            }
        }
        let report = store.prune(false)?;
        for blob in &report.blobs {
            println!("Deleted: {blob}");
        }
        Ok(code)
    }
}

/// Remove images without a name, every blob no image uses, and files
/// unpacked for images that are gone.
#[derive(clap::Args)]
pub struct PruneCommand {
    /// Do not ask (wrun never asks; accepted for Docker compatibility).
    #[arg(short, long)]
    force: bool,
}

impl PruneCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let _ = self.force;
        let store = image_store()?;
        let report = store.prune(true)?;
        if !report.images.is_empty() || !report.blobs.is_empty() {
            println!("Deleted:");
            for image in &report.images {
                println!("  image {}", image.descriptor.digest);
            }
            for blob in &report.blobs {
                println!("  blob {blob}");
            }
        }
        println!("Total reclaimed space: {}", Size(report.bytes));
        Ok(0)
    }
}

/// Save images to an OCI archive (a tar of an OCI image layout, which
/// `wrun load`, `skopeo copy oci-archive:FILE:NAME` and other OCI tools
/// read). The same images always give the same bytes.
#[derive(clap::Args)]
pub struct SaveCommand {
    /// Write to FILE (atomically) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Images: NAME[:TAG], NAME@DIGEST or an image ID.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl SaveCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        match &self.output {
            Some(path) => {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => std::path::Path::new("."),
                };
                let mut file = tempfile::Builder::new()
                    .prefix(".wrun-save-")
                    .tempfile_in(dir)
                    .with_context(|| format!("failed to create `{}`", path.display()))?;
                save_archive(
                    &store,
                    &self.images,
                    std::io::BufWriter::new(file.as_file_mut()),
                )?;
                file.as_file().sync_all()?;
                file.persist(path)
                    .with_context(|| format!("failed to write `{}`", path.display()))?;
            }
            None => {
                let stdout = std::io::stdout();
                if stdout.is_terminal() {
                    bail!("refusing to write an archive to a terminal; use -o FILE or a redirect");
                }
                save_archive(&store, &self.images, std::io::BufWriter::new(stdout.lock()))?;
            }
        }
        Ok(0)
    }
}

/// Load images from an OCI archive (from `wrun save` or `skopeo copy ...
/// oci-archive:...`; `docker save` writes the same layout since Docker 25,
/// with extra files that are skipped). Every blob is verified, every layer
/// checked and every name parsed as an image reference before any image is
/// named.
#[derive(clap::Args)]
pub struct LoadCommand {
    /// Read from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
}

impl LoadCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let store = image_store()?;
        let report = match &self.input {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("failed to open `{}`", path.display()))?;
                load_archive(&store, std::io::BufReader::new(file))
                    .with_context(|| format!("failed to load `{}`", path.display()))?
            }
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    bail!("no archive: give -i FILE or pipe one in");
                }
                load_archive(&store, stdin.lock()).context("failed to load from stdin")?
            }
        };
        for (name, digest) in &report.images {
            match name {
                Some(name) => println!("Loaded image: {name}"),
                None => println!("Loaded image ID: {digest}"),
            }
        }
        Ok(0)
    }
}
