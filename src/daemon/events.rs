//! `GET /events`: the runtime's events ([`wrun_runtime::container::events`])
//! as Docker's JSON lines, the recorded ones from `since` and then, unless
//! `until` has passed, those that follow, until `until` or until the client
//! goes away.

use super::containers::parse_time;
use super::{ApiError, ApiResult, DaemonState, Filters, Query, labels_match};
use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast::error::RecvError;
use wrun_runtime::container::events::{Event, Events, Kind};
use wrun_runtime::input::excerpt;

/// An event on the wire: API 1.22's `Type`, `Action` and `Actor`, and for
/// containers the older `status`, `id` and `from`, which clients still
/// read (docker-compose 1.29 skips events without `status`).
#[derive(Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Action")]
    action: &'a str,
    #[serde(rename = "Actor")]
    actor: Actor<'a>,
    scope: &'static str,
    time: i64,
    #[serde(rename = "timeNano")]
    time_nano: i128,
}

#[derive(Serialize)]
struct Actor<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Attributes")]
    attributes: &'a BTreeMap<String, String>,
}

fn line(event: &Event) -> Bytes {
    let since_epoch = event
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let container = event.kind == Kind::Container;
    let message = Message {
        status: container.then_some(event.action.as_str()),
        id: container.then_some(event.id.as_str()),
        from: container
            .then(|| event.attributes.get("image").map(String::as_str))
            .flatten(),
        kind: event.kind.as_str(),
        action: &event.action,
        actor: Actor {
            id: &event.id,
            attributes: &event.attributes,
        },
        scope: "local",
        time: since_epoch.as_secs() as i64,
        time_nano: since_epoch.as_nanos() as i128,
    };
    let mut bytes = serde_json::to_vec(&message).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The filters `docker events` takes: values of one key are alternatives,
/// keys must all match.
struct Wanted {
    filters: Filters,
}

const TYPES: [&str; 4] = ["container", "network", "volume", "image"];

impl Wanted {
    fn parse(query: &Query) -> ApiResult<Wanted> {
        let filters = Filters::parse(query)?;
        filters.only(&[
            "container",
            "event",
            "type",
            "label",
            "image",
            "network",
            "volume",
            "scope",
        ])?;
        if let Some(bad) = filters
            .get("type")
            .and_then(|types| types.iter().find(|t| !TYPES.contains(&t.as_str())))
        {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'type={}': expected one of {}",
                excerpt(bad),
                TYPES.join(", ")
            )));
        }
        Ok(Wanted { filters })
    }

    fn matches(&self, event: &Event) -> bool {
        let name = event.attributes.get("name").map(String::as_str);
        let any = |key: &str, test: &dyn Fn(&str) -> bool| {
            self.filters
                .get(key)
                .is_none_or(|values| values.iter().any(|v| test(v)))
        };
        let object = |kind: Kind| {
            move |v: &str| event.kind == kind && (event.id.starts_with(v) || name == Some(v))
        };
        any("type", &|v| v == event.kind.as_str())
            && any("event", &|v| v == event.action)
            && any("scope", &|v| v == "local")
            && any("container", &object(Kind::Container))
            && any("network", &object(Kind::Network))
            && any("volume", &object(Kind::Volume))
            && any("image", &|v| {
                event.attributes.get("image").map(String::as_str) == Some(v)
            })
            && labels_match(&self.filters, |k| {
                event.attributes.get(k).map(String::as_str)
            })
    }
}

pub(super) fn routes() -> axum::Router<Arc<super::Daemon>> {
    axum::Router::new().route("/events", axum::routing::get(events))
}

/// `GET /events?since=&until=&filters=`.
async fn events(daemon: DaemonState, query: Query) -> ApiResult<Response> {
    let since = parse_time("since", query.get("since").unwrap_or_default())?;
    let until = parse_time("until", query.get("until").unwrap_or_default())?;
    let wanted = Wanted::parse(&query)?;
    let subscription = daemon.containers.events().subscribe();
    // Without `since`, only what happens from now on (as dockerd).
    let history: Vec<Bytes> = match since {
        None => Vec::new(),
        Some(since) => subscription
            .history
            .iter()
            .filter(|e| e.time >= since && until.is_none_or(|u| e.time <= u))
            .filter(|e| wanted.matches(e))
            .map(line)
            .collect(),
    };
    let deadline = until.map(|until| {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left
    });
    let live = futures_util::stream::unfold(
        (subscription.live, wanted, deadline),
        |(mut live, wanted, deadline)| async move {
            loop {
                let next = match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, live.recv()).await {
                        Ok(next) => next,
                        Err(_) => return None,
                    },
                    None => live.recv().await,
                };
                match next {
                    Ok(event) if wanted.matches(&event) => {
                        return Some((line(&event), (live, wanted, deadline)));
                    }
                    Ok(_) => {}
                    // A client that does not read loses the oldest events;
                    // it stays connected.
                    Err(RecvError::Lagged(lost)) => {
                        tracing::warn!("an events client fell behind: {lost} events not sent");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    // An `until` that has passed ends the stream after the history.
    let body = futures_util::StreamExt::chain(futures_util::stream::iter(history), live);
    let body = futures_util::StreamExt::map(body, Ok::<_, std::io::Error>);
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, "application/json".parse().expect("a header"));
    Ok(response)
}

/// An event of the daemon's own doing (networks and volumes it made or
/// removed).
pub(super) fn emit(events: &Events, kind: Kind, action: &str, id: &str, name: &str) {
    let mut attributes = BTreeMap::from([("name".to_owned(), name.to_owned())]);
    if kind == Kind::Network {
        attributes.insert("type".to_owned(), "bridge".to_owned());
    }
    if kind == Kind::Volume {
        attributes.insert("driver".to_owned(), "local".to_owned());
    }
    events.emit(kind, action, id, attributes);
}
