//! `wrun system df` and `wrun system prune`: what wrun keeps on disk, and
//! removing what nothing uses, in Docker's spellings and output.

use crate::common::{image_store, wrun_home};
use anyhow::Context as _;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use wrun_runtime::image::{PruneImages, anonymous_volumes, prune_volumes};
use wrun_runtime::{CacheRoot, STALE_TEMP};

/// Manage wrun's state on disk ($WRUN_HOME).
#[derive(clap::Args)]
pub struct SystemCommand {
    #[command(subcommand)]
    command: SystemSubcommand,
}

#[derive(clap::Subcommand)]
enum SystemSubcommand {
    Df(DfCommand),
    Prune(PruneCommand),
}

impl SystemCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        match self.command {
            SystemSubcommand::Df(c) => c.execute(),
            SystemSubcommand::Prune(c) => c.execute(),
        }
    }
}

/// Show wrun's disk usage, as `docker system df`: images (their blobs in
/// the store), unpacked images (the file trees of images with tar layers),
/// local volumes (anonymous volumes of image runs) and the compile cache.
/// ACTIVE counts what a running app uses; RECLAIMABLE is what
/// `wrun system prune -a` would free.
#[derive(clap::Args)]
pub struct DfCommand {}

impl DfCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let home = home()?;
        let store = image_store()?;
        let usage = store.usage()?;
        let volumes = anonymous_volumes(&store);
        let cache = CacheRoot::new(&home.join("cache"));
        let files = cache.files();
        let mapped = cache.mapped();
        let canonical_root = std::fs::canonicalize(cache.path()).ok();
        let is_mapped = |path: &Path| {
            let canonical = match (&canonical_root, path.strip_prefix(cache.path())) {
                (Some(root), Ok(rest)) => root.join(rest),
                _ => path.to_owned(),
            };
            mapped.contains(&canonical)
        };
        let cache_bytes: u64 = files.iter().map(|f| f.size).sum();
        let active_files: Vec<_> = files.iter().filter(|f| is_mapped(&f.path)).collect();
        let active_bytes: u64 = active_files.iter().map(|f| f.size).sum();
        let volume_bytes: u64 = volumes.iter().map(|v| v.bytes).sum();
        let idle_volume_bytes: u64 = volumes.iter().filter(|v| !v.active).map(|v| v.bytes).sum();
        let rows = [
            Row::new(
                "Images",
                usage.images,
                usage.active_images,
                usage.blob_bytes,
                usage.reclaimable_blob_bytes,
                true,
            ),
            Row::new(
                "Unpacked Images",
                usage.trees,
                usage.active_trees,
                usage.tree_bytes,
                usage.reclaimable_tree_bytes,
                true,
            ),
            Row::new(
                "Local Volumes",
                volumes.len(),
                volumes.iter().filter(|v| v.active).count(),
                volume_bytes,
                idle_volume_bytes,
                true,
            ),
            // As Docker's build cache: no share in the last column.
            Row::new(
                "Compile Cache",
                files.iter().filter(|f| f.artifact).count(),
                active_files.iter().filter(|f| f.artifact).count(),
                cache_bytes,
                cache_bytes - active_bytes,
                false,
            ),
        ];
        let mut table = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(str::to_owned)];
        table.extend(rows.into_iter().map(|r| r.cells));
        print!("{}", tabulate(&table));
        Ok(0)
    }
}

struct Row {
    cells: [String; 5],
}

impl Row {
    fn new(
        kind: &str,
        total: usize,
        active: usize,
        size: u64,
        reclaimable: u64,
        share: bool,
    ) -> Row {
        let last = if share && size > 0 {
            format!(
                "{} ({}%)",
                human_size(reclaimable),
                reclaimable * 100 / size
            )
        } else {
            human_size(reclaimable)
        };
        Row {
            cells: [
                kind.to_owned(),
                total.to_string(),
                active.to_string(),
                human_size(size),
                last,
            ],
        }
    }
}

/// Columns as Docker's tabwriter lays them out (minimum width 10, padding 3).
fn tabulate(rows: &[[String; 5]]) -> String {
    let mut widths = [0; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// A size as Docker prints one (`units.HumanSize`): decimal units, four
/// significant digits, no space: `0B`, `212B`, `1.2kB`, `16.43MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let integer_digits = if size >= 100.0 {
        3
    } else if size >= 10.0 {
        2
    } else {
        1
    };
    let mut text = format!("{size:.prec$}", prec = 4 - integer_digits);
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", UNITS[unit])
}

/// Remove what nothing uses, as `docker system prune`: dangling images (with
/// -a, every image no running app uses), blobs no image needs, unpacked
/// images of images that are gone (with -a, all not in use), anonymous
/// volumes left by runs that were killed, and temporary files of interrupted
/// writes (those of the compile cache once an hour old, since a writer may
/// still be at work; those of the store when no writer is); with -a, the
/// whole compile cache too (apps recompile on their next run). Asks first
/// unless -f.
#[derive(clap::Args)]
pub struct PruneCommand {
    /// Remove every image no running app uses, not just dangling ones, their
    /// unpacked trees, and the whole compile cache.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

impl PruneCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let home = home()?;
        if !self.force && !self.confirm()? {
            return Ok(0);
        }
        let store = image_store()?;
        let mut out = String::new();
        let mut total = 0;
        let report = store.prune_images(if self.all {
            PruneImages::Unused
        } else {
            PruneImages::Dangling
        })?;
        total += report.bytes;
        if !report.images.is_empty() || !report.blobs.is_empty() {
            out.push_str("Deleted Images:\n");
            for image in &report.images {
                if let Some(name) = &image.name {
                    out.push_str(&format!("untagged: {name}\n"));
                }
            }
            for blob in &report.blobs {
                out.push_str(&format!("deleted: {blob}\n"));
            }
            out.push('\n');
        }
        if !report.trees.is_empty() {
            out.push_str("Deleted Unpacked Images:\n");
            for (hex, _) in &report.trees {
                out.push_str(&format!("sha256:{hex}\n"));
            }
            out.push('\n');
        }
        let volumes = prune_volumes(&store)?;
        if !volumes.is_empty() {
            out.push_str("Deleted Volumes:\n");
            for volume in &volumes {
                total += volume.bytes;
                out.push_str(&format!("{}\n", volume.name));
            }
            out.push('\n');
        }
        let cache = CacheRoot::new(&home.join("cache"));
        if self.all {
            let (removed, bytes) = cache.clear();
            total += bytes;
            if !removed.is_empty() {
                out.push_str("Deleted Compile Cache:\n");
                for file in &removed {
                    let name = file.path.file_name().unwrap_or_default();
                    out.push_str(&format!("{}\n", name.to_string_lossy()));
                }
                out.push('\n');
            }
        } else {
            total += cache.sweep_temps(STALE_TEMP).1;
        }
        print!("{out}");
        println!("Total reclaimed space: {}", human_size(total));
        Ok(0)
    }

    /// Docker's warning and question; only `y` or `Y` goes on.
    fn confirm(&self) -> anyhow::Result<bool> {
        let mut warning = String::from("WARNING! This will remove:\n");
        let items: &[&str] = if self.all {
            &[
                "all images not used by a running app",
                "all unpacked images not used by a running app",
                "all anonymous volumes not used by a running app",
                "all compile cache",
                "temporary files left by interrupted writes",
            ]
        } else {
            &[
                "all dangling images",
                "unpacked images of images that are gone",
                "all anonymous volumes not used by a running app",
                "temporary files left by interrupted writes",
            ]
        };
        for item in items {
            warning.push_str(&format!("  - {item}\n"));
        }
        warning.push_str("\nAre you sure you want to continue? [y/N] ");
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(warning.as_bytes())?;
        stdout.flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .take(1 << 10)
            .read_line(&mut answer)
            .context("failed to read the answer from stdin")?;
        Ok(matches!(answer.trim(), "y" | "Y"))
    }
}

fn home() -> anyhow::Result<std::path::PathBuf> {
    wrun_home().context("no home directory and no WRUN_HOME")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        for (bytes, text) in [
            (0, "0B"),
            (212, "212B"),
            (999, "999B"),
            (1200, "1.2kB"),
            (1840, "1.84kB"),
            (16_434_300, "16.43MB"),
            (123_456, "123.5kB"),
            (1_000_000_000, "1GB"),
        ] {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn columns_as_dockers_tabwriter() {
        let rows = [
            ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(str::to_owned),
            ["Local Volumes", "0", "0", "0B", "0B"].map(str::to_owned),
        ];
        assert_eq!(
            tabulate(&rows),
            "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n\
             Local Volumes   0         0         0B        0B\n"
        );
    }
}
