//! `wrun build`: make an OCI wasm image.

use crate::common::image_store;
use anyhow::{Context as _, bail};
use std::path::PathBuf;
use wrun_runtime::image::{BuildSpec, ImageRef, build_image};
use wrun_runtime::input;

/// Build an image: a CNCF wasm artifact (config
/// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) that
/// any OCI registry stores and Kubernetes wasm runtimes run.
///
/// PATH is a `.wasm` file (an image of just that app), or a directory whose
/// `wrun.toml` names the wasm file and the run defaults:
///
///   wasm = "app.wasm"          # relative to the manifest
///   args = ["--port", "8080"]  # replaced by `wrun run IMAGE ARGS...`
///   env = { GREETING = "hi" }  # -e overrides by name
///   expose = ["8080/tcp"]      # published by `wrun run -P`
///   volumes = ["/data"]        # an empty directory unless -v mounts one
///   workdir = "/data"
///   [[files]]                  # baked in; read-only at TARGET at run time
///   source = "static"
///   target = "/static"
///
/// Builds are reproducible: the same inputs give the same digest (times
/// come from SOURCE_DATE_EPOCH, else the Unix epoch).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BuildCommand {
    /// Name the image NAME[:TAG] (the tag defaults to `latest`). Repeatable.
    #[arg(short, long = "tag", value_name = "NAME[:TAG]", required = true)]
    tags: Vec<String>,

    /// The manifest, at most 1 MiB [default: PATH/wrun.toml].
    #[arg(short, long = "file", value_name = "FILE")]
    file: Option<PathBuf>,

    /// A `.wasm` file, or the directory the manifest's paths are relative to.
    #[arg(value_name = "PATH", default_value = ".")]
    path: PathBuf,
}

impl BuildCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let mut names = Vec::new();
        for tag in &self.tags {
            let reference = ImageRef::parse(tag)?;
            match reference.tagged() {
                Some(name) => names.push(name),
                None => bail!("invalid tag `{tag}`: name a tag, not a digest"),
            }
        }
        let is_dir = self.path.is_dir();
        let spec = match (&self.file, is_dir) {
            (None, false) => {
                if !self.path.exists() {
                    bail!(
                        "failed to read `{}`: no such file or directory",
                        self.path.display()
                    );
                }
                BuildSpec::wasm(&self.path)
            }
            (file, _) => {
                let context = if is_dir {
                    self.path.clone()
                } else {
                    bail!(
                        "`{}` is a file; with -f, PATH is the directory the manifest's paths are \
                         relative to",
                        self.path.display()
                    );
                };
                let manifest = file.clone().unwrap_or_else(|| context.join("wrun.toml"));
                let text = input::read_to_string(&manifest, input::BUILD_MANIFEST)?;
                BuildSpec::parse(&text, &manifest.display().to_string(), &context)?
            }
        };
        let store = image_store()?;
        let (first, rest) = names.split_first().context("no tag")?;
        let descriptor = build_image(&store, &spec, first)?;
        for name in rest {
            store.tag(name, &descriptor)?;
        }
        for name in &names {
            eprintln!("wrun: built {name}");
        }
        println!("{}", descriptor.digest);
        Ok(0)
    }
}
