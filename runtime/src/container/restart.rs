//! Restart policies, with Docker's spellings, decisions and back-off.

use super::state::State;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When an exited container is started again (`--restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (Docker's default).
    #[default]
    No,
    /// When it exits with a code other than 0, at most `max_retries` times
    /// in a row (no bound when `None`).
    OnFailure { max_retries: Option<u32> },
    /// Whatever the exit code; one stopped by a user stays stopped until the
    /// daemon restarts.
    Always,
    /// As `always`, but one stopped by a user stays stopped across daemon
    /// restarts too.
    UnlessStopped,
}

/// The first back-off, doubled at each restart in a row, as Docker.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Docker's longest back-off.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off (Docker: 10 s).
const STABLE_RUN: Duration = Duration::from_secs(10);

impl RestartPolicy {
    /// Docker's spelling: `no`, `on-failure[:N]`, `always`, `unless-stopped`
    /// (empty is `no`).
    pub fn parse(text: &str) -> Result<RestartPolicy, String> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max_retries = match count {
                    None => None,
                    Some(count) => Some(count.parse::<u32>().map_err(|_| {
                        format!(
                            "invalid restart policy `{text}`: the maximum retry count `{count}` \
                             is not a non-negative number"
                        )
                    })?),
                };
                return RestartPolicy::from_docker("on-failure", max_retries.unwrap_or(0));
            }
            _ => {
                return Err(format!(
                    "invalid restart policy `{text}`: expected no, always, unless-stopped or \
                     on-failure[:N]"
                ));
            }
        };
        if count.is_some() {
            return Err(format!(
                "invalid restart policy `{text}`: a maximum retry count applies to on-failure only"
            ));
        }
        Ok(policy)
    }

    /// From the Docker API's `RestartPolicy{Name, MaximumRetryCount}`, where
    /// a count of 0 means no bound.
    pub fn from_docker(name: &str, max_retries: u32) -> Result<RestartPolicy, String> {
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                return Ok(RestartPolicy::OnFailure {
                    max_retries: (max_retries > 0).then_some(max_retries),
                });
            }
            other => {
                return Err(format!(
                    "invalid restart policy `{other}`: expected no, always, unless-stopped or \
                     on-failure"
                ));
            }
        };
        if max_retries != 0 {
            return Err(format!(
                "invalid restart policy `{name}`: a maximum retry count applies to on-failure only"
            ));
        }
        Ok(policy)
    }

    /// Docker's name of the policy (`RestartPolicy.Name`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// `RestartPolicy.MaximumRetryCount` (0: no bound).
    pub fn max_retries(self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => max_retries.unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether the container that has just exited (`state`) starts again.
    pub fn restarts(self, state: &State) -> bool {
        if state.stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                state.exit_code != 0 && max_retries.is_none_or(|max| state.restart_count < max)
            }
        }
    }

    /// Whether a container found exited when the daemon starts is started:
    /// `always` whatever a user did before, `unless-stopped` unless a user
    /// stopped it (Docker's rules).
    pub fn starts_with_daemon(self, state: &State) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !state.stopped_by_user,
            RestartPolicy::No | RestartPolicy::OnFailure { .. } => false,
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            other => f.write_str(other.name()),
        }
    }
}

/// The delay before the next restart, as Docker: 100 ms doubled at each
/// restart in a row, at most a minute, back to 100 ms after a run of 10 s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The delay after a run that lasted `ran`.
    pub fn after(&mut self, ran: Duration) -> Duration {
        let delay = match self.next {
            Some(next) if ran < STABLE_RUN => next,
            _ => FIRST_DELAY,
        };
        self.next = Some((delay * 2).min(MAX_DELAY));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        assert_eq!(RestartPolicy::parse("").unwrap(), RestartPolicy::No);
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("always").unwrap(),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
        );
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure { max_retries: None }
        );
        for bad in [
            "sometimes",
            "always:3",
            "on-failure:x",
            "on-failure:-1",
            "no:1",
        ] {
            let error = RestartPolicy::parse(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
        assert_eq!(
            RestartPolicy::parse("on-failure:2").unwrap().to_string(),
            "on-failure:2"
        );
    }

    #[test]
    fn decisions_follow_docker() {
        let mut state = State::new(SystemTime::now());
        state.exit_code = 1;
        let bounded = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        assert!(bounded.restarts(&state));
        state.restart_count = 2;
        assert!(!bounded.restarts(&state));
        state.exit_code = 0;
        assert!(!RestartPolicy::OnFailure { max_retries: None }.restarts(&state));
        assert!(RestartPolicy::Always.restarts(&state));
        state.stopped_by_user = true;
        assert!(!RestartPolicy::Always.restarts(&state));
        assert!(RestartPolicy::Always.starts_with_daemon(&state));
        assert!(!RestartPolicy::UnlessStopped.starts_with_daemon(&state));
    }

    #[test]
    fn the_back_off_doubles_and_resets() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_millis(5);
        let delays: Vec<_> = (0..12).map(|_| backoff.after(quick).as_millis()).collect();
        assert_eq!(delays[..4], [100, 200, 400, 800]);
        assert_eq!(*delays.last().unwrap(), 60_000);
        assert_eq!(backoff.after(Duration::from_secs(11)).as_millis(), 100);
    }
}
