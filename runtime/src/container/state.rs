//! A container's lifecycle: created → running ⇄ paused → exited (→ running
//! again on start or restart), or dead when it can never run again.
//!
//! Every transition goes through a method here, which refuses the ones
//! Docker refuses, so that the daemon's API, the CLI and a restart policy
//! cannot leave a container in a state no front end expects.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Docker's container statuses (`State.Status`), spelled as Docker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    /// Exited, waiting out the restart policy's back-off before it starts
    /// again.
    Restarting,
    Exited,
    /// It cannot run again (e.g. its image is gone); it can only be removed.
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether an instance of the app exists (it may be paused).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Status, String> {
        Ok(match s {
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "restarting" => Status::Restarting,
            "exited" => Status::Exited,
            "dead" => Status::Dead,
            other => return Err(format!("`{other}` is not a container status")),
        })
    }
}

/// A transition the container's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("container is already running")]
    AlreadyRunning,
    #[error("container is not running")]
    NotRunning,
    #[error("container is paused; unpause it first")]
    Paused,
    #[error("container is not paused")]
    NotPaused,
    #[error("container is dead: it can only be removed")]
    Dead,
}

/// What is known of a container's life, persisted beside its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The exit code of its last run (0 before any).
    pub exit_code: i32,
    /// Why its last run did not reach an exit of its own (a trap, a limit,
    /// an app that could not start), in one line.
    pub error: Option<String>,
    /// Its last run was stopped at its memory limit.
    pub oom_killed: bool,
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(with = "rfc3339::option")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339::option")]
    pub finished_at: Option<SystemTime>,
    /// Starts by the restart policy since the last start by a user.
    pub restart_count: u32,
    /// Stopped or killed by a user since its last start: `always` and
    /// `unless-stopped` then leave it stopped (`always` until the daemon
    /// restarts), as Docker does.
    pub stopped_by_user: bool,
}

impl State {
    pub fn new(now: SystemTime) -> State {
        State {
            status: Status::Created,
            exit_code: 0,
            error: None,
            oom_killed: false,
            created_at: now,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            stopped_by_user: false,
        }
    }

    /// Started by a user (`start`, `restart`, `run`): the restart count
    /// starts over.
    pub fn start(&mut self, now: SystemTime) -> Result<(), TransitionError> {
        self.begin(now)?;
        self.restart_count = 0;
        Ok(())
    }

    /// Started again by the restart policy, after [`State::restarting`].
    pub fn restart_by_policy(&mut self, now: SystemTime) -> Result<(), TransitionError> {
        self.begin(now)?;
        self.restart_count = self.restart_count.saturating_add(1);
        Ok(())
    }

    fn begin(&mut self, now: SystemTime) -> Result<(), TransitionError> {
        match self.status {
            Status::Running => return Err(TransitionError::AlreadyRunning),
            Status::Paused => return Err(TransitionError::Paused),
            Status::Dead => return Err(TransitionError::Dead),
            Status::Created | Status::Exited | Status::Restarting => {}
        }
        self.status = Status::Running;
        self.started_at = Some(now);
        self.exit_code = 0;
        self.error = None;
        self.oom_killed = false;
        self.stopped_by_user = false;
        Ok(())
    }

    pub fn pause(&mut self) -> Result<(), TransitionError> {
        match self.status {
            Status::Running => {
                self.status = Status::Paused;
                Ok(())
            }
            Status::Paused => Err(TransitionError::Paused),
            _ => Err(TransitionError::NotRunning),
        }
    }

    pub fn unpause(&mut self) -> Result<(), TransitionError> {
        match self.status {
            Status::Paused => {
                self.status = Status::Running;
                Ok(())
            }
            _ => Err(TransitionError::NotPaused),
        }
    }

    /// The instance ended with `exit_code` (and `error` when it did not end
    /// on its own).
    pub fn exited(&mut self, now: SystemTime, exit_code: i32, error: Option<String>, oom: bool) {
        self.status = Status::Exited;
        self.exit_code = exit_code;
        self.error = error;
        self.oom_killed = oom;
        self.finished_at = Some(now);
    }

    /// Waiting out the restart policy's back-off.
    pub fn restarting(&mut self) {
        if self.status == Status::Exited {
            self.status = Status::Restarting;
        }
    }

    /// The back-off is cancelled (stop, kill, rm): exited as it was.
    pub fn cancel_restart(&mut self) {
        if self.status == Status::Restarting {
            self.status = Status::Exited;
        }
    }

    pub fn dead(&mut self, error: String) {
        self.status = Status::Dead;
        self.error = Some(error);
    }

    /// How long its current run has lasted, if it is live.
    pub fn uptime(&self, now: SystemTime) -> Option<Duration> {
        match (self.status.is_live(), self.started_at) {
            (true, Some(started)) => Some(now.duration_since(started).unwrap_or_default()),
            _ => None,
        }
    }

    /// The `Status` column of `docker ps`: `Up 5 seconds`, `Up 2 minutes
    /// (Paused)`, `Exited (0) 3 minutes ago`, `Restarting (1) 2 seconds ago`,
    /// `Created`, `Dead`.
    pub fn describe(&self, now: SystemTime) -> String {
        let ago = |t: Option<SystemTime>| {
            human_duration(t.map_or(Duration::ZERO, |t| {
                now.duration_since(t).unwrap_or_default()
            }))
        };
        match self.status {
            Status::Created => "Created".to_owned(),
            Status::Running => format!("Up {}", ago(self.started_at)),
            Status::Paused => format!("Up {} (Paused)", ago(self.started_at)),
            Status::Restarting => {
                format!(
                    "Restarting ({}) {} ago",
                    self.exit_code,
                    ago(self.finished_at)
                )
            }
            Status::Exited => format!("Exited ({}) {} ago", self.exit_code, ago(self.finished_at)),
            Status::Dead => "Dead".to_owned(),
        }
    }
}

/// Docker's (go-units') `HumanDuration`: `Less than a second`, `5 seconds`,
/// `About a minute`, `3 minutes`, `About an hour`, `2 hours`, `3 days`,
/// `2 weeks`, `4 months`, `2 years`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // Rounded, as go-units rounds hours.
    let hours = (seconds + 1800) / 3600;
    match seconds {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Timestamps as RFC 3339 in UTC with nanoseconds, as Docker writes them.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::SystemTime;

        pub fn serialize<S: Serializer>(
            time: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => humantime::parse_rfc3339_weak(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    #[test]
    fn the_lifecycle_refuses_what_docker_refuses() {
        let mut state = State::new(at(0));
        assert_eq!(state.pause(), Err(TransitionError::NotRunning));
        assert_eq!(state.unpause(), Err(TransitionError::NotPaused));
        state.start(at(1)).unwrap();
        assert_eq!(state.start(at(2)), Err(TransitionError::AlreadyRunning));
        state.pause().unwrap();
        assert_eq!(state.start(at(2)), Err(TransitionError::Paused));
        assert_eq!(state.pause(), Err(TransitionError::Paused));
        state.unpause().unwrap();
        state.exited(at(3), 3, None, false);
        assert_eq!(state.describe(at(63)), "Exited (3) About a minute ago");
        state.restarting();
        state.restart_by_policy(at(4)).unwrap();
        state.exited(at(5), 1, None, false);
        state.restarting();
        state.restart_by_policy(at(6)).unwrap();
        assert_eq!(state.restart_count, 2);
        // A user's start begins the count again.
        state.exited(at(7), 0, None, false);
        state.start(at(8)).unwrap();
        assert_eq!(state.restart_count, 0);
        assert_eq!(state.describe(at(13)), "Up 5 seconds");
        state.dead("gone".to_owned());
        assert_eq!(state.start(at(9)), Err(TransitionError::Dead));
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let mut state = State::new(at(0));
        state.start(at(1)).unwrap();
        state.exited(at(2), 137, Some("memory limit".to_owned()), true);
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"status\":\"exited\""), "{json}");
        assert!(json.contains("2023-11-14T22:13:22.000000000Z"), "{json}");
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }

    #[test]
    fn durations_read_as_docker_prints_them() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (150, "2 minutes"),
            (3600, "About an hour"),
            (7200 * 10, "20 hours"),
            (86400 * 3, "3 days"),
            (86400 * 20, "2 weeks"),
            (86400 * 100, "3 months"),
            (86400 * 800, "2 years"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(Duration::from_secs(seconds)), text);
        }
    }
}
