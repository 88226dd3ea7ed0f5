//! `wrun ps`, `logs`, `start`, `stop`, `restart`, `kill`, `rm`, `wait`,
//! `inspect`, `pause`, `unpause`, `rename` and `port`: the container verbs
//! as Docker users type them, answered by `wrun daemon`.
//!
//! They reach the daemon only through its Docker Engine API, with a
//! third-party client (bollard), never the runtime directly: every use of
//! them exercises the API as other Docker clients see it. Their output is
//! the docker CLI's wherever users read it (tables, names echoed on
//! success, `Error response from daemon: ...`, exit 1 when any container
//! failed).

use super::client;
use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::container::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, LogOutput, LogsOptions,
    RemoveContainerOptions, RenameContainerOptions, RestartContainerOptions, StartContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerSummary, Port, PortBinding};
use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use wrun_runtime::container::human_duration;

/// The daemon, as the verbs reach it.
struct Client {
    docker: Docker,
    socket: PathBuf,
}

/// The daemon's refusal of a request: its status and message.
struct Refusal {
    status: u16,
    message: String,
}

/// What a refusal of "no such container" does to the exit code.
#[derive(Clone, Copy)]
enum Missing {
    Fails,
    /// Reported, and not a failure (`rm -f`, as docker's).
    Forgiven,
}

fn no_daemon(socket: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no wrun daemon at `{}`: start one with `wrun daemon`",
        socket.display()
    )
}

/// Whether `error` means nothing answered at the socket (no file, or no
/// process listening on it).
fn nobody_listens(error: &ApiError) -> bool {
    if matches!(error, ApiError::SocketNotFoundError(_)) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

impl Client {
    fn connect() -> anyhow::Result<Client> {
        let socket = client::socket()?;
        match client::connect() {
            Ok(docker) => Ok(Client { docker, socket }),
            Err(e)
                if e.chain()
                    .any(|c| c.downcast_ref::<ApiError>().is_some_and(nobody_listens)) =>
            {
                Err(no_daemon(&socket))
            }
            Err(e) => Err(e),
        }
    }

    /// The daemon's answer in `error`, or an error when there was none
    /// (which ends the command: the next request would fare no better).
    fn refusal(&self, error: ApiError) -> anyhow::Result<Refusal> {
        match error {
            ApiError::DockerResponseServerError {
                status_code,
                message,
            } => Ok(Refusal {
                status: status_code,
                message: match message.is_empty() {
                    true => format!("status {status_code}"),
                    false => message,
                },
            }),
            e if nobody_listens(&e) => Err(no_daemon(&self.socket)),
            e => Err(anyhow::Error::new(e).context(format!(
                "failed to talk to the wrun daemon at `{}`",
                self.socket.display()
            ))),
        }
    }

    /// Prints a refusal as the docker CLI does; returns the exit code it
    /// means.
    fn report(&self, error: ApiError, missing: Missing) -> anyhow::Result<i32> {
        let refusal = self.refusal(error)?;
        eprintln!("Error response from daemon: {}", refusal.message);
        Ok(match (refusal.status, missing) {
            (404, Missing::Forgiven) => 0,
            _ => 1,
        })
    }

    /// Sends `request` for each container in turn, as the docker CLI does:
    /// each success prints the line it returns (the name as given, or an
    /// exit code), each refusal is reported, and the exit code is 1 if any
    /// failed.
    async fn each<F, Fut>(
        &self,
        containers: &[String],
        missing: Missing,
        request: F,
    ) -> anyhow::Result<i32>
    where
        F: Fn(Docker, String) -> Fut,
        Fut: Future<Output = Result<String, ApiError>>,
    {
        let mut code = 0;
        for name in containers {
            match request(self.docker.clone(), name.clone()).await {
                Ok(line) => writeln!(std::io::stdout(), "{line}")?,
                Err(e) => code = code.max(self.report(e, missing)?),
            }
        }
        Ok(code)
    }
}

/// Runs a verb on a runtime of its own (one thread: a verb waits on one
/// request at a time).
fn block_on(verb: impl Future<Output = anyhow::Result<i32>>) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(verb)
}

/// List containers, as `docker ps`: the running ones, newest first.
///
/// The table's columns are docker's: CONTAINER ID, IMAGE, COMMAND, CREATED,
/// STATUS, PORTS, NAMES.
#[derive(clap::Args)]
pub struct PsCommand {
    /// Show all containers [default: only running (and paused, and
    /// restarting) ones].
    #[arg(short, long)]
    all: bool,

    /// Only print container IDs, one a line (over --format).
    #[arg(short, long)]
    quiet: bool,

    /// Show the N most recently created containers, in any state (implies
    /// --all).
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,

    /// Show the most recently created container, in any state (as `-n 1`;
    /// -n wins when both are given).
    #[arg(short, long)]
    latest: bool,

    /// Only containers that match KEY=VALUE: status=STATUS (created,
    /// running, paused, restarting, exited, dead; any state is then
    /// listed, as with --all), name=PART (part of the name), id=PREFIX,
    /// label=KEY or label=KEY=VALUE, ancestor=IMAGE, exited=CODE. Repeat
    /// it: values of one key match if any does, except labels, which must
    /// all; different keys must all match.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,

    /// Do not truncate IDs (12 characters) and commands (20).
    #[arg(long)]
    no_trunc: bool,

    /// `table` (the default), `json` (an object a line, as `docker ps
    /// --format json`), or a template: text with `{{.FIELD}}`, `{{json
    /// .FIELD}}`, `{{json .}}` and `{{.Label "KEY"}}`, where FIELD is ID,
    /// Image, Command, CreatedAt, RunningFor, Ports, State, Status, Size,
    /// Names, Labels, Mounts, Networks, LocalVolumes or Platform; `\t` is a
    /// tab.
    /// `table TEMPLATE` adds a header and aligns the tab-separated columns.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
}

/// The fields of a `ps` row, with their table headers (docker's).
const PS_FIELDS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Platform", "PLATFORM"),
];

/// Docker's default `ps` table.
const PS_TABLE: &str = "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t\
                        {{.Status}}\\t{{.Ports}}\\t{{.Names}}";

impl PsCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let format = match self.format.as_deref() {
            _ if self.quiet => "{{.ID}}",
            None | Some("table") => PS_TABLE,
            Some("json") => "{{json .}}",
            Some(other) => other,
        };
        let template = Template::parse(format)?;
        template.only(PS_FIELDS, "ps")?;
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        for filter in &self.filter {
            let Some((key, value)) = filter.split_once('=') else {
                bail!("invalid filter `{filter}`: expected KEY=VALUE");
            };
            filters
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        let limit = self.last.filter(|&n| n > 0).or(self.latest.then_some(1));
        let options = ListContainersOptions {
            all: self.all || limit.is_some(),
            limit: limit.map(|n| isize::try_from(n).unwrap_or(isize::MAX)),
            size: false,
            filters,
        };
        block_on(async move {
            let client = Client::connect()?;
            let containers = match client.docker.list_containers(Some(options)).await {
                Ok(containers) => containers,
                Err(e) => return client.report(e, Missing::Fails),
            };
            let now = SystemTime::now();
            let rows: Vec<(Value, HashMap<String, String>)> = containers
                .iter()
                .map(|c| {
                    let labels = c.labels.clone().unwrap_or_default();
                    (ps_row(c, !self.no_trunc, now), labels)
                })
                .collect();
            let text = template.render_all(
                rows.iter().map(|(row, labels)| {
                    (row, move |key: &str| {
                        labels.get(key).cloned().unwrap_or_default()
                    })
                }),
                |field| {
                    PS_FIELDS
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map(|(_, header)| (*header).to_owned())
                },
            );
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(0)
        })
    }
}

/// Strips `sha256:` and keeps 12 characters, as docker shows IDs.
fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

/// Docker's `Ellipsis`: at most `max` characters, the last one `…` when
/// cut.
fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Go's `strconv.Quote` (how docker shows a command), for the characters
/// a command line holds.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    quoted.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `host:port`, with brackets around an IPv6 host (Go's `JoinHostPort`).
fn join_host_port(host: &str, port: &str) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// The PORTS column, as docker's `DisplayablePorts` writes it: unpublished
/// and same-number ports grouped into ranges (`80-81/tcp`), then each
/// mapping (`127.0.0.1:8080->80/tcp`).
fn display_ports(ports: &[Port]) -> String {
    let mut ports: Vec<&Port> = ports.iter().collect();
    let kind = |p: &Port| p.typ.map(|t| t.to_string()).unwrap_or_default();
    let ip = |p: &Port| p.ip.clone().unwrap_or_default();
    ports.sort_by(|a, b| {
        (a.private_port, ip(a), a.public_port.unwrap_or(0), kind(a)).cmp(&(
            b.private_port,
            ip(b),
            b.public_port.unwrap_or(0),
            kind(b),
        ))
    });
    // (key, first, last) in the order the keys first appear.
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut result = Vec::new();
    let mut mappings = Vec::new();
    for port in ports {
        let current = port.private_port;
        let mut key = kind(port);
        if !ip(port).is_empty() {
            let public = port.public_port.unwrap_or(0);
            if public != current {
                mappings.push(format!(
                    "{}->{current}/{}",
                    join_host_port(&ip(port), &public.to_string()),
                    kind(port)
                ));
                continue;
            }
            key = format!("{}/{}", ip(port), kind(port));
        }
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            None => groups.push((key, current, current)),
            Some(group) if group.2.checked_add(1) == Some(current) => group.2 = current,
            Some(group) => {
                result.push(port_group(&group.0, group.1, group.2));
                *group = (key, current, current);
            }
        }
    }
    result.extend(
        groups
            .iter()
            .map(|(key, first, last)| port_group(key, *first, *last)),
    );
    result.extend(mappings);
    result.join(", ")
}

/// Docker's `formGroup`: `80-81/tcp`, or `IP:80-81->80-81/tcp`.
fn port_group(key: &str, first: u16, last: u16) -> String {
    let (ip, kind) = match key.rsplit_once('/') {
        Some((ip, kind)) => (ip, kind),
        None => ("", key),
    };
    let mut group = first.to_string();
    if first != last {
        group = format!("{group}-{last}");
    }
    if !ip.is_empty() {
        group = format!("{ip}:{group}->{group}");
    }
    format!("{group}/{kind}")
}

/// Go's `time.Time.String()` of a Unix time, in UTC.
fn go_time(unix: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(time).to_string();
    format!(
        "{} +0000 UTC",
        text.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// One row of `ps`: what docker's `ContainerContext` shows for each field,
/// as strings (also what `--format json` prints).
fn ps_row(c: &ContainerSummary, trunc: bool, now: SystemTime) -> Value {
    let id = c.id.clone().unwrap_or_default();
    let mut image = c.image.clone().unwrap_or_default();
    if trunc {
        if image.starts_with("sha256:") {
            image = short_id(&image).to_owned();
        } else if let Some((name, _digest)) = image.split_once('@') {
            image = name.to_owned();
        }
    }
    let command = c.command.clone().unwrap_or_default();
    let command = go_quote(&match trunc {
        true => ellipsis(&command, 20),
        false => command,
    });
    let created = c.created.unwrap_or(0);
    let age = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(created).unwrap_or(0));
    let running_for = format!(
        "{} ago",
        human_duration(now.duration_since(age).unwrap_or_default())
    );
    // The CLI strips the leading `/` of each name; a link's name (with
    // another `/`) is shown only untruncated.
    let names: Vec<&str> = c
        .names
        .iter()
        .flatten()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .collect();
    let names = match trunc {
        true => names
            .iter()
            .find(|n| !n.contains('/'))
            .map(|n| n.to_string())
            .unwrap_or_else(|| names.join(",")),
        false => names.join(","),
    };
    let mut labels: Vec<String> = c
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    let mounts: Vec<String> = c
        .mounts
        .iter()
        .flatten()
        .map(|m| {
            let name = m
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| m.source.clone())
                .unwrap_or_default();
            match trunc {
                true => ellipsis(&name, 15),
                false => name,
            }
        })
        .collect();
    let local_volumes = c
        .mounts
        .iter()
        .flatten()
        .filter(|m| m.driver.as_deref() == Some("local"))
        .count();
    let mut networks: Vec<&str> = c
        .network_settings
        .iter()
        .flat_map(|s| s.networks.iter().flatten())
        .map(|(name, _)| name.as_str())
        .collect();
    networks.sort();
    let mut row = Map::new();
    let mut set = |key: &str, value: String| {
        row.insert(key.to_owned(), Value::String(value));
    };
    set(
        "ID",
        match trunc {
            true => short_id(&id).to_owned(),
            false => id.clone(),
        },
    );
    set("Image", image);
    set("Command", command);
    set("CreatedAt", go_time(created));
    set("RunningFor", running_for);
    set(
        "Ports",
        display_ports(c.ports.as_deref().unwrap_or_default()),
    );
    set("State", c.state.clone().unwrap_or_default());
    set("Status", c.status.clone().unwrap_or_default());
    set("Size", "0B".to_owned());
    set("Names", names);
    set("Labels", labels.join(","));
    set("Mounts", mounts.join(","));
    set("Networks", networks.join(","));
    set("LocalVolumes", local_volumes.to_string());
    // Docker 28's: the image's platform, which API 1.47 does not carry.
    row.insert("Platform".to_owned(), Value::Null);
    Value::Object(row)
}

/// A `--format` template: Go-template-like text with `{{.FIELD}}` (also a
/// path, `{{.State.Status}}`), `{{json .}}`, `{{json .FIELD}}` and `{{.Label
/// "KEY"}}`; `\t` and `\n` stand for a tab and a newline. A `table` prefix
/// adds a header and aligns the tab-separated columns, as docker's
/// tabwriter does.
struct Template {
    table: bool,
    parts: Vec<Part>,
}

enum Part {
    Text(String),
    Value { json: bool, path: Vec<String> },
    Label(String),
}

impl Template {
    fn parse(text: &str) -> anyhow::Result<Template> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("invalid --format `{text}`: a `{{{{` is not closed");
            };
            parts.push(Part::action(after[..end].trim(), text)?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { table, parts })
    }

    /// Refuses a field outside `fields`, naming it and those there are.
    fn only(&self, fields: &[(&str, &str)], verb: &str) -> anyhow::Result<()> {
        for part in &self.parts {
            if let Part::Value { path, .. } = part
                && let Some(first) = path.first()
                && !fields.iter().any(|(f, _)| f == first)
            {
                let known: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                bail!(
                    "invalid --format: `{verb}` has no field `{first}` (it has {})",
                    known.join(", ")
                );
            }
        }
        Ok(())
    }

    /// The text for `value`, whose labels `label` looks up.
    fn render(&self, value: &Value, label: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Label(key) => out.push_str(&label(key)),
                Part::Value { json, path } => {
                    let found = path.iter().try_fold(value, |v, key| v.get(key));
                    match (json, found) {
                        (true, Some(v)) => out.push_str(&go_json(v)),
                        (true, None) => out.push_str("null"),
                        (false, Some(Value::String(s))) => out.push_str(s),
                        (false, Some(Value::Null)) => out.push_str("<nil>"),
                        (false, Some(v)) => out.push_str(&v.to_string()),
                        (false, None) => out.push_str("<no value>"),
                    }
                }
            }
        }
        out
    }

    /// Every row, a line each; under a header, aligned, for a table.
    fn render_all<'a, L: Fn(&str) -> String>(
        &self,
        rows: impl Iterator<Item = (&'a Value, L)>,
        header: impl Fn(&str) -> Option<String>,
    ) -> String {
        let mut text = String::new();
        if self.table {
            for part in &self.parts {
                match part {
                    Part::Text(t) => text.push_str(t),
                    Part::Label(_) => text.push_str("LABEL"),
                    Part::Value { path, .. } => {
                        let name = path.last().map(String::as_str).unwrap_or_default();
                        text.push_str(&header(name).unwrap_or_else(|| name.to_uppercase()));
                    }
                }
            }
            text.push('\n');
        }
        for (row, label) in rows {
            text.push_str(&self.render(row, &label));
            text.push('\n');
        }
        match self.table {
            true => align(&text),
            false => text,
        }
    }
}

/// JSON as Go's `json.Marshal` writes it (what docker's `{{json}}`
/// prints): compact, with `<`, `>` and `&` escaped.
fn go_json(value: &Value) -> String {
    // Outside strings, JSON has none of these characters.
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

impl Part {
    fn action(action: &str, template: &str) -> anyhow::Result<Part> {
        let unsupported = || {
            anyhow::anyhow!(
                "invalid --format `{template}`: `{{{{{action}}}}}` is not supported (wrun knows \
                 {{{{.FIELD}}}}, {{{{json .FIELD}}}}, {{{{json .}}}} and {{{{.Label \"KEY\"}}}})"
            )
        };
        if let Some(key) = action
            .strip_prefix(".Label")
            .filter(|rest| rest.starts_with([' ', '\t']))
        {
            let key = key.trim();
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .ok_or_else(unsupported)?;
            return Ok(Part::Label(key.to_owned()));
        }
        let (json, expression) = match action.strip_prefix("json") {
            Some(rest) if rest.starts_with([' ', '\t']) => (true, rest.trim()),
            _ => (false, action),
        };
        if expression == "." {
            return Ok(Part::Value {
                json,
                path: Vec::new(),
            });
        }
        let Some(path) = expression.strip_prefix('.') else {
            return Err(unsupported());
        };
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(unsupported());
        }
        Ok(Part::Value { json, path })
    }
}

/// Aligns tab-separated cells as Go's tabwriter does with docker's
/// settings (minimum width 10, padding 3): every cell but a line's last
/// is padded to its column's width.
fn align(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (column, cell) in cells.iter().enumerate().take(cells.len() - 1) {
            let width = (cell.chars().count() + 3).max(10);
            match widths.get_mut(column) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::with_capacity(text.len() * 2);
    for cells in &lines {
        for (column, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if column + 1 < cells.len() {
                let pad = widths[column] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Print a container's log.
///
/// What its app wrote to stdout goes to stdout; what it wrote to stderr,
/// and wrun's reason for a trap, to stderr.
#[derive(clap::Args)]
pub struct LogsCommand {
    /// Keep printing what it writes until the container stops (or the
    /// command is interrupted).
    #[arg(short, long)]
    follow: bool,

    /// Only the last N lines of the log, or `all`.
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value = "all",
        value_parser = parse_tail
    )]
    tail: String,

    /// Start each line with the time it was written (RFC 3339, UTC, with
    /// nanoseconds).
    #[arg(short, long)]
    timestamps: bool,

    /// Only lines written since TIME: a duration before now (`10m`,
    /// `1h30m`, `1.5h`), an RFC 3339 time or date (`2024-05-01T10:00:00Z`,
    /// `2024-05-01`; UTC unless it says its zone) or Unix seconds. Whole
    /// seconds count.
    #[arg(long, value_name = "TIME", value_parser = parse_log_time)]
    since: Option<f64>,

    /// Only lines written before TIME (as --since takes one).
    #[arg(long, value_name = "TIME", value_parser = parse_log_time)]
    until: Option<f64>,

    /// The container: a name, an ID or a unique prefix of one.
    #[arg(value_name = "CONTAINER")]
    container: String,
}

fn parse_tail(text: &str) -> Result<String, String> {
    match text == "all" || text.parse::<usize>().is_ok() {
        true => Ok(text.to_owned()),
        false => Err(format!("`{text}` is not a number of lines or `all`")),
    }
}

/// A time as `logs --since` takes one, in Unix seconds.
fn parse_log_time(text: &str) -> Result<f64, String> {
    log_time_at(text, SystemTime::now())
}

fn log_time_at(text: &str, now: SystemTime) -> Result<f64, String> {
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    // As docker's `GetTimestamp`: `0` is a time, not a duration.
    if text != "0"
        && let Some(before) = go_duration(text)
    {
        return Ok(now - before);
    }
    let invalid = || {
        format!(
            "`{text}` is not a duration (`10m`), an RFC 3339 time (`2024-05-01T10:00:00Z`) or \
             Unix seconds"
        )
    };
    if text.contains('-') {
        return rfc3339_seconds(text).ok_or_else(invalid);
    }
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(seconds) && (fraction.is_empty() || digits(fraction)) {
        return text.parse::<f64>().map_err(|_| invalid());
    }
    Err(invalid())
}

/// Go's `time.ParseDuration`, in seconds: `300ms`, `10m`, `1h30m`, `1.5h`,
/// `-2s`.
fn go_duration(text: &str) -> Option<f64> {
    let (sign, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = next;
    }
    Some(sign * total)
}

/// An RFC 3339 time, or a prefix of one (`2024-05-01`, `2024-05-01T10`,
/// `2024-05-01T10:00`), with an optional fraction and zone (`Z`,
/// `+02:00`; UTC without one), in Unix seconds.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    fn number(text: &str, digits: usize) -> Option<(i64, &str)> {
        let head = text.get(..digits)?;
        if !head.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((head.parse().ok()?, &text[digits..]))
    }
    let (year, rest) = number(text, 4)?;
    let (month, rest) = number(rest.strip_prefix('-')?, 2)?;
    let (day, mut rest) = number(rest.strip_prefix('-')?, 2)?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) {
        return None;
    }
    let mut seconds = 0.0;
    if let Some(time) = rest.strip_prefix(['T', 't']) {
        let (hour, after) = number(time, 2)?;
        rest = after;
        let mut minute = 0;
        let mut second = 0;
        if let Some(after) = rest.strip_prefix(':') {
            (minute, rest) = number(after, 2)?;
            if let Some(after) = rest.strip_prefix(':') {
                (second, rest) = number(after, 2)?;
                if let Some(after) = rest.strip_prefix('.') {
                    let end = after
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(after.len());
                    if end == 0 {
                        return None;
                    }
                    seconds += format!("0.{}", &after[..end]).parse::<f64>().ok()?;
                    rest = &after[end..];
                }
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        seconds += (hour * 3600 + minute * 60 + second) as f64;
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, after) = number(&zone[1..], 2)?;
            let (minutes, after) = number(after.strip_prefix(':')?, 2)?;
            if !after.is_empty() || hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    Some((days_from_civil(year, month, day) * 86400 - offset) as f64 + seconds)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl LogsCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        // The API takes whole seconds, where `0` means "no bound": a time
        // before 1970 becomes the earliest one that still bounds.
        let since = self.since.map_or(0, |t| (t.floor() as i64).max(0));
        let until = self.until.map_or(0, |t| (t.floor() as i64).max(1));
        let options = LogsOptions {
            follow: self.follow,
            stdout: true,
            stderr: true,
            since,
            until,
            timestamps: self.timestamps,
            tail: self.tail.clone(),
        };
        block_on(async move {
            let client = Client::connect()?;
            let mut stream = client.docker.logs(&self.container, Some(options));
            while let Some(frame) = stream.next().await {
                let written = match frame {
                    Ok(LogOutput::StdErr { message }) => {
                        let mut stderr = std::io::stderr().lock();
                        stderr.write_all(&message).and_then(|()| stderr.flush())
                    }
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message },
                    ) => {
                        let mut stdout = std::io::stdout().lock();
                        stdout.write_all(&message).and_then(|()| stdout.flush())
                    }
                    Err(e) => return client.report(e, Missing::Fails),
                };
                match written {
                    Ok(()) => {}
                    // The reader went away (`wrun logs -f x | head`): done.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                    Err(e) => return Err(e).context("failed to write the log"),
                }
            }
            Ok(0)
        })
    }
}

/// Start stopped containers, in the background.
///
/// Prints each name as given; one already running is left as it is. What
/// they write: `wrun logs`.
#[derive(clap::Args)]
pub struct StartCommand {
    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl StartCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(
                    &self.containers,
                    Missing::Fails,
                    |docker, name| async move {
                        docker
                            .start_container(&name, None::<StartContainerOptions<String>>)
                            .await
                            .map(|()| name)
                    },
                )
                .await
        })
    }
}

/// Stop running containers.
///
/// A WASI app cannot catch a signal, so it ends at once: with 143
/// (SIGTERM), or 128 + the number of --signal's. Prints each name as given;
/// one already stopped is left as it is.
#[derive(clap::Args)]
pub struct StopCommand {
    /// Seconds to wait for it to stop before killing it, as Docker's (and
    /// unused: a wasm app cannot delay its end).
    #[arg(short, long = "time", value_name = "SECONDS")]
    time: Option<i64>,

    /// The signal to stop it with: a name (`SIGINT`, `INT`) or a number
    /// [default: SIGTERM].
    #[arg(short, long, value_name = "SIGNAL")]
    signal: Option<String>,

    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl StopCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let time = self.time;
        let signal = self.signal;
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(&self.containers, Missing::Fails, |docker, name| {
                    let signal = signal.clone();
                    async move {
                        // bollard 0.18's stop cannot carry `signal`: the
                        // signal goes as a kill, which, as stop does,
                        // returns once the app has ended. One that is not
                        // running (409) goes to stop, which says "already
                        // stopped" (304) or ends a pending restart.
                        if let Some(signal) = signal {
                            match docker
                                .kill_container(&name, Some(KillContainerOptions { signal }))
                                .await
                            {
                                Err(ApiError::DockerResponseServerError {
                                    status_code: 409,
                                    ..
                                }) => {}
                                done => return done.map(|()| name),
                            }
                        }
                        docker
                            .stop_container(&name, time.map(|t| StopContainerOptions { t }))
                            .await
                            .map(|()| name)
                    }
                })
                .await
        })
    }
}

/// Stop containers (as `wrun stop`), then start them again.
///
/// Prints each name as given; a stopped one is just started.
#[derive(clap::Args)]
pub struct RestartCommand {
    /// Seconds to wait for it to stop before killing it, as Docker's (and
    /// unused: a wasm app cannot delay its end).
    #[arg(short, long = "time", value_name = "SECONDS")]
    time: Option<isize>,

    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl RestartCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let time = self.time;
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(
                    &self.containers,
                    Missing::Fails,
                    |docker, name| async move {
                        docker
                            .restart_container(&name, time.map(|t| RestartContainerOptions { t }))
                            .await
                            .map(|()| name)
                    },
                )
                .await
        })
    }
}

/// Send a signal to running containers.
///
/// A WASI app cannot catch one, so it ends with 128 + the signal's number
/// (137 for SIGKILL). Prints each name as given; a container that is not
/// running is a failure.
#[derive(clap::Args)]
pub struct KillCommand {
    /// The signal: a name (`SIGHUP`, `HUP`) or a number [default: SIGKILL].
    #[arg(short, long, value_name = "SIGNAL")]
    signal: Option<String>,

    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl KillCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let signal = self.signal;
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(&self.containers, Missing::Fails, |docker, name| {
                    let options = signal.clone().map(|signal| KillContainerOptions { signal });
                    async move { docker.kill_container(&name, options).await.map(|()| name) }
                })
                .await
        })
    }
}

/// Remove containers, with their state and logs.
///
/// A running one is refused unless --force. Prints each name as given.
#[derive(clap::Args)]
pub struct RmCommand {
    /// Kill a running container (SIGKILL) before removing it; a container
    /// that does not exist is reported, and no failure.
    #[arg(short, long)]
    force: bool,

    /// Also remove the container's anonymous volumes (those made for `-v
    /// /path` and its image's volume points); named volumes stay.
    #[arg(short, long)]
    volumes: bool,

    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl RmCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let options = RemoveContainerOptions {
            v: self.volumes,
            force: self.force,
            link: false,
        };
        let missing = match self.force {
            true => Missing::Forgiven,
            false => Missing::Fails,
        };
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(&self.containers, missing, |docker, name| async move {
                    docker
                        .remove_container(&name, Some(options))
                        .await
                        .map(|()| name)
                })
                .await
        })
    }
}

/// Wait until containers stop, then print their exit codes.
///
/// One that is not running answers at once.
#[derive(clap::Args)]
pub struct WaitCommand {
    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl WaitCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(
                    &self.containers,
                    Missing::Fails,
                    |docker, name| async move {
                        let mut wait =
                            docker.wait_container(&name, None::<WaitContainerOptions<String>>);
                        match wait.next().await {
                            Some(Ok(answer)) => Ok(answer.status_code.to_string()),
                            // bollard makes a non-zero code an error.
                            Some(Err(ApiError::DockerContainerWaitError { code, .. })) => {
                                Ok(code.to_string())
                            }
                            Some(Err(e)) => Err(e),
                            None => Err(ApiError::DockerStreamError {
                                error: "the wait ended without an exit code".to_owned(),
                            }),
                        }
                    },
                )
                .await
        })
    }
}

/// Show containers in detail: a JSON array, as `docker inspect` prints.
///
/// The daemon's documents, field for field. Images: `wrun image inspect`.
#[derive(clap::Args)]
pub struct InspectCommand {
    /// Print each container through a template instead: `{{.State.Status}}`,
    /// `{{json .Config}}`, `{{.Name}}` (paths into the document), a line
    /// each.
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,

    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl InspectCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let template = self.format.as_deref().map(Template::parse).transpose()?;
        block_on(async move {
            let client = Client::connect()?;
            let mut documents = Vec::new();
            let mut code = 0;
            for name in &self.containers {
                match client
                    .docker
                    .inspect_container(name, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(document) => documents.push(document),
                    Err(e) => code = code.max(client.report(e, Missing::Fails)?),
                }
            }
            let text = match &template {
                Some(template) => {
                    let values = documents
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<Result<Vec<_>, _>>()?;
                    template.render_all(values.iter().map(|v| (v, |_: &str| String::new())), |_| {
                        None
                    })
                }
                None => {
                    // In the API's order of fields, indented by four
                    // spaces, as docker prints the daemon's answer.
                    let mut text = Vec::new();
                    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                    let mut serializer =
                        serde_json::Serializer::with_formatter(&mut text, formatter);
                    serde::Serialize::serialize(&documents, &mut serializer)?;
                    text.push(b'\n');
                    String::from_utf8(text)?
                }
            };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(code)
        })
    }
}

/// Pause running containers.
///
/// Their apps are not run until `wrun unpause`; they keep their memory
/// and open sockets. Prints each name as given.
#[derive(clap::Args)]
pub struct PauseCommand {
    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl PauseCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(&self.containers, Missing::Fails, |docker, name| async move {
                    docker.pause_container(&name).await.map(|()| name)
                })
                .await
        })
    }
}

/// Resume paused containers.
///
/// Prints each name as given.
#[derive(clap::Args)]
pub struct UnpauseCommand {
    /// Containers: names, IDs or unique prefixes of IDs.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl UnpauseCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        block_on(async move {
            let client = Client::connect()?;
            client
                .each(&self.containers, Missing::Fails, |docker, name| async move {
                    docker.unpause_container(&name).await.map(|()| name)
                })
                .await
        })
    }
}

/// Rename a container (also a running one).
#[derive(clap::Args)]
pub struct RenameCommand {
    /// The container: a name, an ID or a unique prefix of one.
    #[arg(value_name = "CONTAINER")]
    container: String,

    /// Its new name: letters, digits, `_`, `.` and `-`, starting with a
    /// letter or digit.
    #[arg(value_name = "NEW_NAME")]
    name: String,
}

impl RenameCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        block_on(async move {
            let client = Client::connect()?;
            let options = RenameContainerOptions { name: &self.name };
            match client
                .docker
                .rename_container(&self.container, options)
                .await
            {
                Ok(()) => Ok(0),
                Err(e) => client.report(e, Missing::Fails),
            }
        })
    }
}

/// List a container's published ports.
///
/// Each as `80/tcp -> 127.0.0.1:8080`, or, for the one PORT asked for, its
/// host addresses (`127.0.0.1:8080`).
#[derive(clap::Args)]
pub struct PortCommand {
    /// The container: a name, an ID or a unique prefix of one.
    #[arg(value_name = "CONTAINER")]
    container: String,

    /// Only this port of the container: PORT or PORT/PROTO (`tcp`, the
    /// default, or `udp`).
    #[arg(value_name = "PORT[/PROTO]")]
    port: Option<String>,
}

impl PortCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let wanted = match &self.port {
            None => None,
            Some(text) => {
                let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
                if port.parse::<u16>().is_err() || protocol.is_empty() {
                    bail!("invalid port `{text}`: expected PORT or PORT/PROTO (e.g. `80/tcp`)");
                }
                Some(format!("{port}/{protocol}"))
            }
        };
        block_on(async move {
            let client = Client::connect()?;
            let document = match client
                .docker
                .inspect_container(&self.container, None::<InspectContainerOptions>)
                .await
            {
                Ok(document) => document,
                Err(e) => return client.report(e, Missing::Fails),
            };
            let ports = document
                .network_settings
                .and_then(|s| s.ports)
                .unwrap_or_default();
            let host = |b: &PortBinding| {
                join_host_port(
                    b.host_ip.as_deref().unwrap_or_default(),
                    b.host_port.as_deref().unwrap_or_default(),
                )
            };
            let mut lines: Vec<String> = match &wanted {
                Some(port) => match ports.get(port) {
                    Some(Some(bindings)) => bindings.iter().map(host).collect(),
                    _ => {
                        eprintln!(
                            "wrun: no public port `{port}` published for `{}`",
                            self.container
                        );
                        return Ok(1);
                    }
                },
                None => ports
                    .iter()
                    .flat_map(|(port, bindings)| {
                        bindings
                            .iter()
                            .flatten()
                            .map(move |b| format!("{port} -> {}", host(b)))
                    })
                    .collect(),
            };
            lines.sort_by(|a, b| natural_order(a, b));
            let mut stdout = std::io::stdout().lock();
            for line in &lines {
                writeln!(stdout, "{line}")?;
            }
            Ok(0)
        })
    }
}

/// Text order with runs of digits compared as numbers (`80/tcp` before
/// `443/tcp`), as docker sorts `port`'s lines.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(text: &str) -> Vec<(bool, &str)> {
        let mut chunks = Vec::new();
        let mut rest = text;
        while let Some(first) = rest.chars().next() {
            let digits = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            chunks.push((digits, &rest[..end]));
            rest = &rest[end..];
        }
        chunks
    }
    let (a, b) = (chunks(a), chunks(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortTypeEnum;

    fn port(ip: Option<&str>, private: u16, public: Option<u16>) -> Port {
        Port {
            ip: ip.map(str::to_owned),
            private_port: private,
            public_port: public,
            typ: Some(PortTypeEnum::TCP),
        }
    }

    #[test]
    fn ports_read_as_docker_ps_shows_them() {
        assert_eq!(display_ports(&[]), "");
        assert_eq!(
            display_ports(&[port(Some("127.0.0.1"), 80, Some(8080))]),
            "127.0.0.1:8080->80/tcp"
        );
        assert_eq!(
            display_ports(&[port(Some("::"), 80, Some(8080))]),
            "[::]:8080->80/tcp"
        );
        // Unpublished neighbours are a range; same-number mappings too.
        assert_eq!(
            display_ports(&[
                port(None, 81, None),
                port(None, 80, None),
                port(None, 90, None)
            ]),
            "80-81/tcp, 90/tcp"
        );
        assert_eq!(
            display_ports(&[
                port(Some("0.0.0.0"), 8000, Some(8000)),
                port(Some("0.0.0.0"), 8001, Some(8001)),
                port(Some("0.0.0.0"), 443, Some(8443)),
            ]),
            "0.0.0.0:8000-8001->8000-8001/tcp, 0.0.0.0:8443->443/tcp"
        );
    }

    #[test]
    fn commands_are_quoted_and_cut_as_docker_does() {
        assert_eq!(go_quote(&ellipsis("spin", 20)), "\"spin\"");
        assert_eq!(
            go_quote(&ellipsis("args one two three four five", 20)),
            "\"args one two three …\""
        );
        assert_eq!(go_quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn tables_align_as_gos_tabwriter() {
        assert_eq!(
            align("CONTAINER ID\tIMAGE\tNAMES\n0123456789ab\tspin\tbusy\n"),
            "CONTAINER ID   IMAGE     NAMES\n0123456789ab   spin      busy\n"
        );
        let template = Template::parse("table {{.Names}}\\t{{.Label \"a b\"}}").unwrap();
        let row = serde_json::json!({"Names": "web"});
        let text = template.render_all(std::iter::once((&row, |k: &str| format!("<{k}>"))), |f| {
            (f == "Names").then(|| "NAMES".to_owned())
        });
        assert_eq!(text, "NAMES     LABEL\nweb       <a b>\n");
    }

    #[test]
    fn templates_read_fields_paths_and_json() {
        let doc = serde_json::json!({"State": {"Status": "running", "ExitCode": 0}, "Name": "/w"});
        let render = |t: &str| Template::parse(t).unwrap().render(&doc, &|_| String::new());
        assert_eq!(
            render("{{.State.Status}} {{ .State.ExitCode }}"),
            "running 0"
        );
        assert_eq!(
            render("{{json .State}}"),
            r#"{"ExitCode":0,"Status":"running"}"#
        );
        assert_eq!(render("{{.Nothing}}"), "<no value>");
        let ports = serde_json::json!({"Ports": "a:1->2/tcp & <b>"});
        let json = Template::parse("{{json .}}").unwrap();
        assert_eq!(
            json.render(&ports, &|_| String::new()),
            r#"{"Ports":"a:1-\u003e2/tcp \u0026 \u003cb\u003e"}"#
        );
        assert!(Template::parse("{{.State").is_err());
        assert!(Template::parse("{{range .Mounts}}").is_err());
        let ps = Template::parse("{{.Nmes}}").unwrap();
        let error = ps.only(PS_FIELDS, "ps").unwrap_err().to_string();
        assert!(error.contains("no field `Nmes`"), "{error}");
    }

    #[test]
    fn log_times_are_durations_rfc3339_or_unix_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600);
        let at = |t: &str| log_time_at(t, now);
        assert_eq!(at("10m"), Ok(1_714_557_000.0));
        assert_eq!(at("1h30m"), Ok(1_714_552_200.0));
        assert_eq!(at("1.5h"), Ok(1_714_552_200.0));
        assert_eq!(at("-2s"), Ok(1_714_557_602.0));
        assert_eq!(at("2024-05-01T10:00:00Z"), Ok(1_714_557_600.0));
        assert_eq!(at("2024-05-01T12:00:00+02:00"), Ok(1_714_557_600.0));
        assert_eq!(at("2024-05-01T10:00:00.5Z"), Ok(1_714_557_600.5));
        assert_eq!(at("2024-05-01T10"), Ok(1_714_557_600.0));
        assert_eq!(at("2024-05-01"), Ok(1_714_521_600.0));
        assert_eq!(at("2000-02-29"), Ok(951_782_400.0));
        assert_eq!(at("1714557600"), Ok(1_714_557_600.0));
        assert_eq!(at("1714557600.25"), Ok(1_714_557_600.25));
        assert_eq!(at("0"), Ok(0.0));
        for bad in [
            "yesterday",
            "10d",
            "2023-02-29",
            "2024-05-01T25:00",
            "1.2.3",
            "",
            "m",
        ] {
            let error = at(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
    }

    #[test]
    fn port_lines_sort_by_number() {
        let mut lines = vec!["8080/tcp -> a", "443/tcp -> b", "80/tcp -> c"];
        lines.sort_by(|a, b| natural_order(a, b));
        assert_eq!(lines, ["80/tcp -> c", "443/tcp -> b", "8080/tcp -> a"]);
    }
}
