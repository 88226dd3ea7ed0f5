//! An image's run defaults (Docker's CMD, ENV, EXPOSE, VOLUME, WORKDIR),
//! which `wrun run` merges with its flags, the flags winning.
//!
//! A wasm artifact's config has no place for them, so wrun writes them as
//! manifest annotations, each a JSON value, which other tools ignore:
//!
//! | annotation                   | value                                   |
//! |------------------------------|-----------------------------------------|
//! | `dev.wrun.run.args`          | JSON array of strings (argv after argv[0]) |
//! | `dev.wrun.run.env`           | JSON array of `KEY=VALUE` strings        |
//! | `dev.wrun.run.exposed-ports` | JSON array like `["8080/tcp"]`           |
//! | `dev.wrun.run.volumes`       | JSON array of guest paths like `["/data"]` |
//! | `dev.wrun.run.workdir`       | JSON string, a guest path                |
//!
//! Docker+Wasm images carry the same in their standard image config.

use super::ImageError;
use super::spec::ContainerConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

pub const ARGS: &str = "dev.wrun.run.args";
pub const ENV: &str = "dev.wrun.run.env";
pub const EXPOSED_PORTS: &str = "dev.wrun.run.exposed-ports";
pub const VOLUMES: &str = "dev.wrun.run.volumes";
pub const WORKDIR: &str = "dev.wrun.run.workdir";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunDefaults {
    /// Arguments after argv[0]; replaced by the command line's, if any.
    pub args: Vec<String>,
    /// `KEY=VALUE`; `-e` and `--env-file` override by name.
    pub env: Vec<String>,
    /// `PORT/PROTO`; published on host ports of the kernel's choosing by
    /// `wrun run -P`.
    pub exposed_ports: Vec<String>,
    /// Guest paths where the app expects a volume; each not given by `-v`
    /// gets an empty directory for the run.
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
}

impl RunDefaults {
    pub fn to_annotations(&self, annotations: &mut BTreeMap<String, String>) {
        let mut put = |key: &str, value: String| {
            annotations.insert(key.to_owned(), value);
        };
        if !self.args.is_empty() {
            put(ARGS, json(&self.args));
        }
        if !self.env.is_empty() {
            put(ENV, json(&self.env));
        }
        if !self.exposed_ports.is_empty() {
            put(EXPOSED_PORTS, json(&self.exposed_ports));
        }
        if !self.volumes.is_empty() {
            put(VOLUMES, json(&self.volumes));
        }
        if let Some(workdir) = &self.workdir {
            put(WORKDIR, json(workdir));
        }
    }

    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<RunDefaults, ImageError> {
        fn get<T: DeserializeOwned + Default>(
            annotations: &BTreeMap<String, String>,
            key: &str,
        ) -> Result<T, ImageError> {
            match annotations.get(key) {
                None => Ok(T::default()),
                Some(value) => {
                    serde_json::from_str(value).map_err(|e| ImageError::InvalidDocument {
                        what: format!("annotation `{key}`"),
                        reason: format!("`{value}`: {e}"),
                    })
                }
            }
        }
        Ok(RunDefaults {
            args: get(annotations, ARGS)?,
            env: get(annotations, ENV)?,
            exposed_ports: get(annotations, EXPOSED_PORTS)?,
            volumes: get(annotations, VOLUMES)?,
            workdir: get(annotations, WORKDIR)?,
        })
    }

    /// The defaults of a standard image config, and its entrypoint: the
    /// `.wasm` path (Entrypoint[0], else Cmd[0]) with the arguments that
    /// always follow it. As in Docker, the command line's arguments replace
    /// Cmd but not the Entrypoint's.
    pub fn from_container_config(
        config: &ContainerConfig,
    ) -> (RunDefaults, Option<(String, Vec<String>)>) {
        let entrypoint = config.entrypoint.clone().unwrap_or_default();
        let cmd = config.cmd.clone().unwrap_or_default();
        let (entry, args) = match entrypoint.split_first() {
            Some((wasm, fixed)) => (Some((wasm.clone(), fixed.to_vec())), cmd),
            None => match cmd.split_first() {
                Some((wasm, rest)) => (Some((wasm.clone(), Vec::new())), rest.to_vec()),
                None => (None, Vec::new()),
            },
        };
        let keys = |map: &Option<BTreeMap<String, serde_json::Value>>| {
            map.iter().flat_map(|m| m.keys().cloned()).collect()
        };
        let defaults = RunDefaults {
            args,
            env: config.env.clone().unwrap_or_default(),
            exposed_ports: keys(&config.exposed_ports),
            volumes: keys(&config.volumes),
            workdir: config.working_dir.clone().filter(|w| !w.is_empty()),
        };
        (defaults, entry)
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_round_trip() {
        let defaults = RunDefaults {
            args: vec!["--port".into(), "8080".into()],
            env: vec!["A=1".into(), "B=x=y".into()],
            exposed_ports: vec!["8080/tcp".into()],
            volumes: vec!["/data".into()],
            workdir: Some("/app".into()),
        };
        let mut map = BTreeMap::new();
        defaults.to_annotations(&mut map);
        assert_eq!(map[ARGS], r#"["--port","8080"]"#);
        assert_eq!(RunDefaults::from_annotations(&map).unwrap(), defaults);
        map.insert(ENV.into(), "not json".into());
        let err = RunDefaults::from_annotations(&map).unwrap_err().to_string();
        assert!(err.contains(ENV) && err.contains("not json"), "{err}");
    }

    #[test]
    fn docker_entrypoint_and_cmd() {
        let config = ContainerConfig {
            entrypoint: Some(vec!["/app.wasm".into(), "serve".into()]),
            cmd: Some(vec!["--verbose".into()]),
            ..Default::default()
        };
        let (d, entry) = RunDefaults::from_container_config(&config);
        assert_eq!(entry, Some(("/app.wasm".into(), vec!["serve".into()])));
        assert_eq!(d.args, vec!["--verbose"]);
        let config = ContainerConfig {
            cmd: Some(vec!["/app.wasm".into(), "x".into()]),
            ..Default::default()
        };
        let (d, entry) = RunDefaults::from_container_config(&config);
        assert_eq!(entry, Some(("/app.wasm".into(), vec![])));
        assert_eq!(d.args, vec!["x"]);
    }
}
