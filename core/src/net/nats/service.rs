//! The node as an ADR-32 service (docs/protocol.md, "NATS"): it answers
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (for all services, for
//! `packetflow`, and for this instance by its id, the node id) with the
//! response types of `async_nats::service`.
//!
//! The endpoints themselves are the node's own queue subscriptions, not
//! the library's `Endpoint`s: removing one of those unsubscribes at once,
//! and a request the server delivered before it saw the UNSUB is then
//! dropped unanswered (its requester waits out its deadline). A node's
//! endpoints are drained instead (see `link`), so this module keeps their
//! statistics and answers the verbs itself.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::service::{endpoint, error, Info, PingResponse, Stats};
use async_nats::{Client, Subscriber};
use futures::StreamExt;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::SERVICE_NAME;
use crate::error::PfError;

/// What the verbs report: the instance and its endpoints' counters.
pub(crate) struct Registry {
    id: String,
    version: String,
    description: String,
    metadata: HashMap<String, String>,
    started: OffsetDateTime,
    /// By subject.
    endpoints: Mutex<HashMap<String, EndpointEntry>>,
}

struct EndpointEntry {
    info: endpoint::Info,
    requests: usize,
    errors: usize,
    processing_time: Duration,
    last_error: Option<error::Error>,
}

impl Registry {
    /// The instance `id` (the node id) of the `packetflow` service.
    pub(crate) fn new(id: String, metadata: HashMap<String, String>) -> Registry {
        Registry {
            id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "a PacketFlow node: one endpoint per handler key it serves".to_owned(),
            metadata,
            started: OffsetDateTime::now_utc(),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Lists an endpoint (its counters start at zero).
    pub(crate) fn add(&self, info: endpoint::Info) {
        let entry =
            EndpointEntry { info, requests: 0, errors: 0, processing_time: Duration::ZERO, last_error: None };
        self.endpoints.lock().insert(entry.info.subject.clone(), entry);
    }

    /// Stops listing the endpoint on `subject`.
    pub(crate) fn remove(&self, subject: &str) {
        self.endpoints.lock().remove(subject);
    }

    /// Counts a request answered on `subject` after `took`, with the
    /// error it was answered with, if any.
    pub(crate) fn record(&self, subject: &str, took: Duration, failed: Option<&PfError>) {
        let mut endpoints = self.endpoints.lock();
        let Some(entry) = endpoints.get_mut(subject) else { return };
        entry.requests += 1;
        entry.processing_time += took;
        if let Some(e) = failed {
            entry.errors += 1;
            // ADR-32 errors carry a number: the PF code's.
            let code = e.code.trim_start_matches("PF").parse().unwrap_or(500);
            entry.last_error = Some(error::Error { status: e.message.clone(), code });
        }
    }

    fn ping(&self) -> PingResponse {
        PingResponse {
            kind: "io.nats.micro.v1.ping_response".to_owned(),
            name: SERVICE_NAME.to_owned(),
            id: self.id.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
        }
    }

    fn info(&self) -> Info {
        let mut endpoints: Vec<endpoint::Info> =
            self.endpoints.lock().values().map(|e| e.info.clone()).collect();
        endpoints.sort_by(|a, b| a.subject.cmp(&b.subject));
        Info {
            kind: "io.nats.micro.v1.info_response".to_owned(),
            name: SERVICE_NAME.to_owned(),
            id: self.id.clone(),
            description: self.description.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            endpoints,
        }
    }

    fn stats(&self) -> Stats {
        let mut endpoints: Vec<endpoint::Stats> = self
            .endpoints
            .lock()
            .values()
            .map(|e| endpoint::Stats {
                name: e.info.name.clone(),
                subject: e.info.subject.clone(),
                requests: e.requests,
                errors: e.errors,
                processing_time: e.processing_time,
                average_processing_time: e.processing_time.checked_div(e.requests as u32).unwrap_or_default(),
                last_error: e.last_error.clone(),
                data: None,
                queue_group: e.info.queue_group.clone(),
            })
            .collect();
        endpoints.sort_by(|a, b| a.subject.cmp(&b.subject));
        Stats {
            kind: "io.nats.micro.v1.stats_response".to_owned(),
            name: SERVICE_NAME.to_owned(),
            id: self.id.clone(),
            version: self.version.clone(),
            started: self.started,
            endpoints,
        }
    }

    /// Subscribes the verbs' subjects: `$SRV.<VERB>`, `$SRV.<VERB>.packetflow`
    /// and `$SRV.<VERB>.packetflow.<id>`.
    pub(crate) async fn subscribe(
        &self,
        client: &Client,
    ) -> Result<Vec<(Verb, Subscriber)>, async_nats::SubscribeError> {
        let mut subscriptions = Vec::new();
        for verb in [Verb::Ping, Verb::Info, Verb::Stats] {
            let name = verb.name();
            for subject in [
                format!("$SRV.{name}"),
                format!("$SRV.{name}.{SERVICE_NAME}"),
                format!("$SRV.{name}.{SERVICE_NAME}.{}", self.id),
            ] {
                subscriptions.push((verb, client.subscribe(subject).await?));
            }
        }
        Ok(subscriptions)
    }

    /// The answer to `verb`, as JSON.
    fn answer(&self, verb: Verb) -> Vec<u8> {
        let encoded = match verb {
            Verb::Ping => serde_json::to_vec(&self.ping()),
            Verb::Info => serde_json::to_vec(&self.info()),
            Verb::Stats => serde_json::to_vec(&self.stats()),
        };
        encoded.expect("the service responses encode")
    }
}

/// The verbs a service answers (ADR-32's SCHEMA is gone from the spec).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }
}

/// Answers the verbs until `closed`.
pub(crate) async fn answer_verbs(
    registry: std::sync::Arc<Registry>,
    client: Client,
    subscriptions: Vec<(Verb, Subscriber)>,
    closed: CancellationToken,
) {
    let mut requests = futures::stream::select_all(
        subscriptions.into_iter().map(|(verb, subscriber)| subscriber.map(move |message| (verb, message))),
    );
    loop {
        let (verb, message) = tokio::select! {
            _ = closed.cancelled() => return,
            next = requests.next() => match next {
                Some(request) => request,
                None => return,
            },
        };
        if let Some(reply) = message.reply {
            let _ = client.publish(reply, registry.answer(verb).into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn stats_count_requests_errors_and_time_per_endpoint() {
        let registry = Registry::new("node-1".into(), HashMap::from([("runtime".into(), "rust".into())]));
        let info = endpoint::Info {
            name: "df-upper".into(),
            subject: "pf.df.upper".into(),
            queue_group: "packetflow".into(),
            metadata: HashMap::from([("key".into(), "df:upper".into())]),
        };
        registry.add(info.clone());
        registry.record("pf.df.upper", Duration::from_millis(2), None);
        let timeout = PfError::new(ErrorCode::Timeout, "too slow");
        registry.record("pf.df.upper", Duration::from_millis(4), Some(&timeout));
        registry.record("pf.df.other", Duration::from_millis(4), None); // not listed: ignored

        let stats: serde_json::Value = serde_json::from_slice(&registry.answer(Verb::Stats)).unwrap();
        assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
        assert_eq!(stats["id"], "node-1");
        let upper = &stats["endpoints"][0];
        assert_eq!((upper["num_requests"].as_u64(), upper["num_errors"].as_u64()), (Some(2), Some(1)));
        assert_eq!(upper["processing_time"], 6_000_000);
        assert_eq!(upper["average_processing_time"], 3_000_000);
        assert_eq!(upper["last_error"], "408:too slow");

        let listed: serde_json::Value = serde_json::from_slice(&registry.answer(Verb::Info)).unwrap();
        assert_eq!(listed["endpoints"][0]["metadata"]["key"], "df:upper");
        registry.remove("pf.df.upper");
        let listed: serde_json::Value = serde_json::from_slice(&registry.answer(Verb::Info)).unwrap();
        assert_eq!(listed["endpoints"], serde_json::json!([]));
        let ping: serde_json::Value = serde_json::from_slice(&registry.answer(Verb::Ping)).unwrap();
        assert_eq!(
            (ping["name"].as_str(), ping["metadata"]["runtime"].as_str()),
            (Some("packetflow"), Some("rust"))
        );
    }
}
