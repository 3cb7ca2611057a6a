//! The members of a NATS cluster (docs/protocol.md, "Membership", and
//! "Actors and route keys over NATS"): every node that joined with
//! `membership` keeps an entry in the key-value bucket `<ns>_members`,
//! rewritten at each heartbeat, and watches the bucket for the others'.
//!
//! A member is alive while its entry was rewritten within the TTL (three
//! heartbeats), as this node saw it arrive: nodes compare no clocks. The
//! server drops entries older than the TTL itself (the bucket's
//! `max_age`; nats-server 2.9 has no per-key TTL), and a node that stops
//! cleanly deletes its entry, which every member sees at once.
//!
//! With the live members known, a route key and an actor id are placed
//! by the same rendezvous hashes as over WebSocket peers, over the
//! members serving the key (hosting the type): every member that sees the
//! same members picks the same node, and sends the packet to it on its own
//! subject `<ns>.node.<node id>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::link::{self, NatsLink, NO_RESPONDERS};
use super::{kv_store, subject};
use crate::error::{ErrorCode, PfError};
use crate::net::host_view::HostView;
use crate::net::node::NodeInner;
use crate::net::peers::{host_score, rendezvous};
use crate::packet::{Group, Packet, META_ROUTE_KEY};
use crate::reactor::Reactor;
use crate::result::PacketResult;

/// The heartbeat of a node that creates the members bucket; the TTL (the
/// bucket's `max_age`) is [`MISSED_BEATS`] of them.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Heartbeats a member may miss before it is taken for gone.
pub const MISSED_BEATS: u32 = 3;
/// The shortest heartbeat: below it, the beats alone would keep a
/// JetStream server busy.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The longest heartbeat: a dead member stays in every view for up to
/// [`MISSED_BEATS`] of them (3 minutes at this bound), and the bucket's
/// age limit stays far from overflowing.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

/// PF400 naming `field` (the heartbeat option as the caller spells it)
/// unless `heartbeat` lies within [`MIN_HEARTBEAT`]..=[`MAX_HEARTBEAT`].
pub(crate) fn check_heartbeat(heartbeat: Duration, field: &str) -> Result<(), PfError> {
    if (MIN_HEARTBEAT..=MAX_HEARTBEAT).contains(&heartbeat) {
        return Ok(());
    }
    Err(PfError::new(
        ErrorCode::BadRequest,
        format!(
            "{field} must be from {} to {} ms, got {} ms",
            MIN_HEARTBEAT.as_millis(),
            MAX_HEARTBEAT.as_millis(),
            heartbeat.as_millis()
        ),
    ))
}
/// Bound on each look at the bucket while joining, and on leaving.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before watching the bucket again after the watch failed.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

/// The name of the bucket `what` of `namespace`: the namespace with its
/// dots written `_` (bucket names hold `[A-Za-z0-9_-]`), `_`, `what`.
pub(crate) fn bucket_name(namespace: &str, what: &str) -> String {
    format!("{}_{what}", namespace.replace('.', "_"))
}

/// The subject a member is sent packets on: `<ns>.node.<node id>`, a word
/// of more than two letters after the namespace, which no key's subject
/// has (docs/protocol.md, "Subjects").
pub(crate) fn node_subject(namespace: &str, node_id: &str) -> String {
    format!("{namespace}.node.{}", subject::escape(node_id))
}

/// What a member's entry holds (JSON): what it serves and hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct MemberRecord {
    node_id: String,
    #[serde(default)]
    name: String,
    /// The handler keys it serves, `group:element`, sorted.
    #[serde(default)]
    handlers: Vec<String>,
    /// The actor types it hosts, sorted.
    #[serde(default)]
    actor_types: Vec<String>,
}

/// Another member, as this node last saw its entry.
struct Member {
    record: MemberRecord,
    /// When its entry last arrived here.
    seen: Instant,
    revision: u64,
    /// A packet sent to it found nobody on its subject: gone until its
    /// next heartbeat (a later revision) says otherwise.
    unreachable: bool,
}

/// This node's membership: its entry, its view of the others, and its
/// subject.
pub(crate) struct Cluster {
    node_id: String,
    namespace: String,
    link: Weak<NatsLink>,
    reactor: Reactor,
    bucket: kv::Store,
    heartbeat: Duration,
    ttl: Duration,
    members: RwLock<HashMap<String, Member>>,
    own: RwLock<MemberRecord>,
    own_key: String,
    /// The revision of this node's entry last written.
    own_revision: AtomicU64,
    /// Per actor type hosted here, the other live hosts last seen: a
    /// change hands its actors over (docs/protocol.md, "No stale copies").
    host_view: HostView,
    closed: CancellationToken,
}

/// PF503 for a step of joining that failed.
fn unavailable(what: &str, e: impl std::fmt::Display) -> PfError {
    PfError::new(ErrorCode::Unavailable, format!("NATS membership: cannot {what}: {e}"))
}

/// The stream of a key-value bucket made with `config`, as the client's
/// own `create_key_value` makes it. That call first reads the account's
/// JetStream limits, in a form nats-server 2.9 does not answer (no
/// `reserved_memory`): the stream is made directly instead.
fn bucket_stream(config: kv::Config) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{}", config.bucket),
        description: Some(config.description),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: config.storage,
        num_replicas: config.num_replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// The bucket `name`: the existing one as it is, else one made with
/// `config` (a node racing to make it takes the other's).
pub(crate) async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, PfError> {
    let name = config.bucket.clone();
    let open = || tokio::time::timeout(STEP_TIMEOUT, js.get_key_value(name.clone()));
    if let Ok(Ok(store)) = open().await {
        return Ok(store);
    }
    let made = match tokio::time::timeout(STEP_TIMEOUT, js.create_stream(bucket_stream(config))).await {
        Ok(Ok(_)) => "made".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    match open().await {
        Ok(Ok(store)) => Ok(store),
        _ => Err(unavailable(&format!("make the bucket {name} (is JetStream on?)"), made)),
    }
}

impl Cluster {
    /// Joins: opens (or makes) the members bucket, serves this node's
    /// subject, writes this node's entry and reads the others', returning
    /// once the view holds every entry written before this node's.
    /// `heartbeat` was judged by `connect` ([`check_heartbeat`]).
    pub(crate) async fn start(
        node: &Arc<NodeInner>,
        link: &Arc<NatsLink>,
        heartbeat: Duration,
    ) -> Result<Arc<Cluster>, PfError> {
        let js = jetstream::new(link.client.clone());
        let config = kv::Config {
            bucket: bucket_name(&link.namespace, "members"),
            description: "PacketFlow members: one entry per node, rewritten at each heartbeat".into(),
            history: 1,
            max_age: heartbeat * MISSED_BEATS,
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        };
        let bucket = open_bucket(&js, config).await?;
        // The bucket's age limit is the TTL of every member, whoever made it.
        let ttl = bucket.stream.cached_info().config.max_age;
        if ttl.is_zero() {
            return Err(PfError::new(
                ErrorCode::BadRequest,
                format!("the bucket {} has no max_age: members would never expire", bucket.name),
            ));
        }
        let subject = node_subject(&link.namespace, &node.node_id);
        let subscriber =
            link.client.subscribe(subject.clone()).await.map_err(|e| unavailable("subscribe", e))?;
        let cluster = Arc::new(Cluster {
            node_id: node.node_id.clone(),
            namespace: link.namespace.clone(),
            link: Arc::downgrade(link),
            reactor: node.reactor.clone(),
            bucket,
            heartbeat: ttl / MISSED_BEATS,
            ttl,
            members: RwLock::new(HashMap::new()),
            own: RwLock::new(MemberRecord::default()),
            own_key: kv_store::key_token(&node.node_id),
            own_revision: AtomicU64::new(0),
            host_view: HostView::default(),
            closed: link.closed.child_token(),
        });
        tokio::spawn(link::serve(Arc::downgrade(link), subscriber, subject, cluster.closed.clone()));
        // Watched before this node's entry is written: the watch delivers
        // every entry in order, so once this node's own shows, every entry
        // written before it has been read.
        let mut watch = tokio::time::timeout(STEP_TIMEOUT, cluster.bucket.watch_all())
            .await
            .map_err(|_| unavailable("watch the members", "timed out"))?
            .map_err(|e| unavailable("watch the members", e))?;
        cluster.refresh_own();
        cluster.beat().await?;
        let own = cluster.own_revision.load(Ordering::Acquire);
        let until = Instant::now() + STEP_TIMEOUT;
        loop {
            let entry = tokio::time::timeout_at(until, watch.next())
                .await
                .map_err(|_| unavailable("read the members", "timed out"))?;
            let Some(Ok(entry)) = entry else {
                return Err(unavailable("read the members", "the watch ended"));
            };
            let done = entry.key == cluster.own_key && entry.revision >= own;
            cluster.apply(entry, true);
            if done {
                break;
            }
        }
        cluster.check_hosts();
        tokio::spawn(keep_watching(Arc::downgrade(&cluster), watch, cluster.closed.clone()));
        tokio::spawn(keep_beating(Arc::downgrade(&cluster), cluster.closed.clone()));
        Ok(cluster)
    }

    /// This node's entry, from what its reactor serves and hosts now.
    fn refresh_own(&self) -> bool {
        let mut handlers: Vec<String> =
            self.reactor.handler_keys().into_iter().map(|(g, e)| format!("{g}:{e}")).collect();
        handlers.sort();
        let mut actor_types = self.reactor.actor_type_names();
        actor_types.sort();
        let record = MemberRecord {
            node_id: self.node_id.clone(),
            name: self.reactor.config().name.clone(),
            handlers,
            actor_types,
        };
        let mut own = self.own.write();
        let changed = *own != record;
        *own = record;
        changed
    }

    /// Writes this node's entry (a heartbeat).
    async fn beat(&self) -> Result<(), PfError> {
        let body = serde_json::to_vec(&*self.own.read()).expect("a member record encodes");
        let put = tokio::time::timeout(STEP_TIMEOUT, self.bucket.put(&self.own_key, body.into()))
            .await
            .map_err(|_| unavailable("write this node's entry", "timed out"))?
            .map_err(|e| unavailable("write this node's entry", e))?;
        self.own_revision.fetch_max(put, Ordering::AcqRel);
        Ok(())
    }

    /// Takes in one entry of the bucket (another member's; this node's own
    /// is known already). An entry counts from when it arrived, or, read
    /// while `joining`, from when the server stored it (at most a TTL ago):
    /// a member that died just before this node joined is not taken for
    /// alive for a whole TTL more. The same revision read again (a new
    /// watch) changes nothing.
    fn apply(&self, entry: kv::Entry, joining: bool) {
        if entry.key == self.own_key {
            return;
        }
        let Some(node_id) = kv_store::key_text(&entry.key) else { return };
        let mut members = self.members.write();
        match entry.operation {
            kv::Operation::Put => {
                let Ok(record) = serde_json::from_slice::<MemberRecord>(&entry.value) else { return };
                if record.node_id != node_id {
                    return; // not a PacketFlow member's entry
                }
                if members.get(&node_id).is_some_and(|m| m.revision >= entry.revision) {
                    return;
                }
                let now = Instant::now();
                let seen = match joining {
                    true => now.checked_sub(stored_ago(entry.created).min(self.ttl)).unwrap_or(now),
                    false => now,
                };
                members
                    .insert(node_id, Member { record, seen, revision: entry.revision, unreachable: false });
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                members.remove(&node_id);
            }
        }
    }

    fn live(&self, member: &Member, now: Instant) -> bool {
        !member.unreachable && now.saturating_duration_since(member.seen) < self.ttl
    }

    /// The live members other than this node, with their records.
    fn live_others(&self) -> Vec<(String, MemberRecord)> {
        let now = Instant::now();
        self.members
            .read()
            .iter()
            .filter(|(_, m)| self.live(m, now))
            .map(|(id, m)| (id.clone(), m.record.clone()))
            .collect()
    }

    /// The live members, this node included, sorted.
    pub(crate) fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.live_others().into_iter().map(|(id, _)| id).collect();
        ids.push(self.node_id.clone());
        ids.sort();
        ids
    }

    /// The live members hosting `actor_type`, this node included when it
    /// does, sorted.
    pub(crate) fn hosts_of(&self, actor_type: &str) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .live_others()
            .into_iter()
            .filter(|(_, r)| r.actor_types.iter().any(|t| t == actor_type))
            .map(|(id, _)| id)
            .collect();
        if self.reactor.actor_host(actor_type).is_some() {
            hosts.push(self.node_id.clone());
        }
        hosts.sort();
        hosts
    }

    /// Whether `node_id` is a live member hosting `actor_type` (this node
    /// when it hosts it).
    pub(crate) fn hosts(&self, actor_type: &str, node_id: &str) -> bool {
        if node_id == self.node_id {
            return self.reactor.actor_host(actor_type).is_some();
        }
        let now = Instant::now();
        self.members
            .read()
            .get(node_id)
            .is_some_and(|m| self.live(m, now) && m.record.actor_types.iter().any(|t| t == actor_type))
    }

    /// Whether `node_id` is a live member.
    pub(crate) fn knows(&self, node_id: &str) -> bool {
        let now = Instant::now();
        node_id == self.node_id || self.members.read().get(node_id).is_some_and(|m| self.live(m, now))
    }

    /// The owner of actor `actor_type/id`: the highest rendezvous score
    /// among the live members hosting the type (the score WebSocket
    /// placement uses); `None` when none does.
    pub(crate) fn actor_owner(&self, actor_type: &str, id: &str) -> Option<String> {
        let now = Instant::now();
        let members = self.members.read();
        let mut best = self
            .reactor
            .actor_host(actor_type)
            .map(|_| (host_score(actor_type, id, &self.node_id), self.node_id.as_str()));
        for (node, member) in members.iter() {
            if self.live(member, now) && member.record.actor_types.iter().any(|t| t == actor_type) {
                let score = host_score(actor_type, id, node);
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, node.as_str()));
                }
            }
        }
        best.map(|(_, node)| node.to_owned())
    }

    /// The member a packet for `group:element` with `route_key` goes to:
    /// the highest rendezvous score among the live members serving the key
    /// (this node when it has a handler); `None` when none does.
    pub(crate) fn route_owner(&self, group: Group, element: &str, route_key: &str) -> Option<String> {
        let key = format!("{group}:{element}");
        let now = Instant::now();
        let members = self.members.read();
        let mut best = self
            .reactor
            .has_handler(group, element)
            .then(|| (rendezvous(route_key, &self.node_id), self.node_id.as_str()));
        for (node, member) in members.iter() {
            if self.live(member, now) && member.record.handlers.binary_search(&key).is_ok() {
                let score = rendezvous(route_key, node);
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, node.as_str()));
                }
            }
        }
        best.map(|(_, node)| node.to_owned())
    }

    /// The member other than this node that `packet` is for: its actor's
    /// (the node `pf.actor_at` names while it is a live host, else its
    /// owner; a create without an id gets its id first), or its route
    /// key's; `None` for this node or no member.
    fn target_of(&self, packet: &mut Packet) -> Option<String> {
        let target = match crate::actor::address::placement(packet) {
            Some(placed) => match placed.at {
                Some(at) if self.hosts(placed.actor_type, at) => Some(at.to_owned()),
                _ => self.actor_owner(placed.actor_type, placed.id),
            },
            None => {
                let route_key = packet.meta(META_ROUTE_KEY).and_then(serde_json::Value::as_str)?;
                self.route_owner(packet.group, packet.element.as_str(), route_key)
            }
        };
        target.filter(|node| *node != self.node_id)
    }

    /// Sends `packet` to member `node_id` on its subject. A member nobody
    /// answers for (it left before its entry expired) is taken out of this
    /// node's view; then a route key's packet goes to whichever node serves
    /// its key (the queue group), as without membership, and an actor's is
    /// answered PF503 (nothing ran: a retry goes to the actor's next owner,
    /// which a node serving the key at random would not be).
    pub(crate) async fn send_to(
        self: Arc<Self>,
        node_id: String,
        packet: Packet,
        deadline: Instant,
    ) -> PacketResult {
        let Some(link) = self.link.upgrade() else {
            let message = "the node left NATS".to_owned();
            return PacketResult::error(packet.id, ErrorCode::Unavailable, message, 0);
        };
        let subject = node_subject(&self.namespace, &node_id);
        let again = packet.clone();
        let result = link.clone().request_on(subject.into(), packet, deadline).await;
        let gone =
            result.err().is_some_and(|e| e.is(ErrorCode::NoHandler) && e.message.ends_with(NO_RESPONDERS));
        if !gone {
            return result;
        }
        if let Some(member) = self.members.write().get_mut(&node_id) {
            member.unreachable = true;
        }
        self.check_hosts();
        if crate::actor::address::placement_of(&again).is_some() {
            let message = format!("member {node_id} left NATS (nobody answers on its subject); retry");
            return PacketResult::error(again.id, ErrorCode::Unavailable, message, 0);
        }
        link.request(again, deadline).await
    }

    /// Hands over the actors of each type hosted here whose other live
    /// hosts changed since the last look (docs/protocol.md, "No stale
    /// copies").
    fn check_hosts(&self) {
        self.host_view.hand_over_changed(self.reactor.actor_hosts(), |actor_type| {
            let mut others = self.hosts_of(actor_type);
            others.retain(|id| *id != self.node_id);
            others
        });
    }

    /// Leaves: this node's entry is deleted, so every member drops it at
    /// once rather than after the TTL (bounded; the TTL covers a failure).
    pub(crate) async fn leave(&self) {
        self.closed.cancel();
        let _ = tokio::time::timeout(STEP_TIMEOUT, self.bucket.delete(&self.own_key)).await;
    }

    /// What `/health` shows: the heartbeat, the TTL and the live members.
    pub(crate) fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "bucket": self.bucket.name,
            "heartbeat_ms": self.heartbeat.as_millis() as u64,
            "ttl_ms": self.ttl.as_millis() as u64,
            "members": self.member_ids(),
        })
    }
}

/// How long ago the server stored an entry, by this machine's clock (zero
/// for a time ahead of it).
fn stored_ago(created: time::OffsetDateTime) -> Duration {
    Duration::try_from(time::OffsetDateTime::now_utc() - created).unwrap_or_default()
}

/// Applies the bucket's changes as they come; watches it again (from the
/// latest entries) if the watch ends, until the node leaves.
async fn keep_watching(cluster: Weak<Cluster>, mut watch: kv::Watch, closed: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => return,
            next = watch.next() => next,
        };
        let Some(cluster) = cluster.upgrade() else { return };
        match next {
            Some(Ok(entry)) => {
                cluster.apply(entry, false);
                cluster.check_hosts();
            }
            _ => loop {
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tokio::time::sleep(REWATCH_PAUSE) => {}
                }
                if let Ok(Ok(again)) = tokio::time::timeout(STEP_TIMEOUT, cluster.bucket.watch_all()).await {
                    watch = again;
                    break;
                }
            },
        }
    }
}

/// Rewrites this node's entry every heartbeat, and at once when its
/// handlers or actor types change; looks for members that expired.
async fn keep_beating(cluster: Weak<Cluster>, closed: CancellationToken) {
    let Some(mut changes) = cluster.upgrade().map(|c| c.reactor.watch_handlers()) else { return };
    let Some(period) = cluster.upgrade().map(|c| c.heartbeat) else { return };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tick.tick() => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        let Some(cluster) = cluster.upgrade() else { return };
        cluster.refresh_own();
        // A failed write is tried again at the next beat; the TTL spans
        // three of them.
        let _ = cluster.beat().await;
        cluster.check_hosts();
    }
}

impl NodeInner {
    /// The cluster this node is a member of, if it joined NATS with
    /// membership.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.nats.get()?.cluster.get()
    }

    /// Whether connection `origin` is NATS: a packet from there runs
    /// where it arrived (its sender placed it), and is never sent back.
    pub(crate) fn came_from_nats(&self, origin: Option<u64>) -> bool {
        origin.is_some() && self.nats.get().map(|link| link.origin.0) == origin
    }

    /// For the router: `packet` sent to the member its actor or route key
    /// belongs to, when that is another member; the packet back otherwise.
    // The packet comes back by value (no allocation) when not sent.
    #[allow(clippy::result_large_err)]
    pub(crate) fn forward_in_cluster(
        &self,
        mut packet: Packet,
        deadline: Instant,
        origin: Option<u64>,
    ) -> Result<BoxFuture<'static, PacketResult>, Packet> {
        let Some(cluster) = self.cluster() else { return Err(packet) };
        if self.came_from_nats(origin) {
            return Err(packet);
        }
        match cluster.target_of(&mut packet) {
            Some(node) => Ok(Box::pin(cluster.clone().send_to(node, packet, deadline))),
            None => Err(packet),
        }
    }

    /// For the router: whether the actor `actor_type/id` runs here, by the
    /// members; `None` when this node has no membership or no member hosts
    /// the type (WebSocket placement decides).
    pub(crate) fn actor_here_in_cluster(
        &self,
        actor_type: &str,
        id: &str,
        at: Option<&str>,
        origin: Option<u64>,
    ) -> Option<bool> {
        let cluster = self.cluster()?;
        if self.came_from_nats(origin) || at == Some(self.node_id.as_str()) {
            return Some(true);
        }
        if at.is_some_and(|at| cluster.hosts(actor_type, at)) {
            return Some(false);
        }
        cluster.actor_owner(actor_type, id).map(|owner| owner == self.node_id)
    }

    /// For the router: whether a packet with `route_key` for a key served
    /// here runs here, by the members.
    pub(crate) fn route_key_here_in_cluster(
        &self,
        group: Group,
        element: &str,
        route_key: &str,
        origin: Option<u64>,
    ) -> bool {
        let Some(cluster) = self.cluster() else { return true };
        if self.came_from_nats(origin) {
            return true;
        }
        cluster.route_owner(group, element, route_key).is_none_or(|owner| owner == self.node_id)
    }

    /// For the router: `packet` (delivered at `node_id` by `pf.actor_at`)
    /// sent to that member, when it is a live member hosting the type.
    #[allow(clippy::result_large_err)]
    pub(crate) fn forward_to_member(
        &self,
        node_id: &str,
        packet: Packet,
        deadline: Instant,
    ) -> Result<BoxFuture<'static, PacketResult>, Packet> {
        let Some(cluster) = self.cluster() else { return Err(packet) };
        let hosts = crate::actor::address::placement_of(&packet)
            .is_some_and(|placed| cluster.hosts(placed.actor_type, node_id));
        if !hosts || node_id == self.node_id {
            return Err(packet);
        }
        Ok(Box::pin(cluster.clone().send_to(node_id.to_owned(), packet, deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_subjects_live_under_the_namespace() {
        assert_eq!(bucket_name("pf", "members"), "pf_members");
        assert_eq!(bucket_name("acme.prod", "actors"), "acme_prod_actors");
        assert_eq!(node_subject("pf", "4f1c-9a"), "pf.node.4f1c-9a");
        assert_eq!(node_subject("acme.prod", "a.b"), "acme.prod.node.a%2Eb");
        // `node` is no group: no key's subject is a node's.
        assert!(subject::parse_key_subject("pf", &node_subject("pf", "n1")).is_none());
    }

    #[test]
    fn a_member_record_reads_what_later_versions_add() {
        let record: MemberRecord =
            serde_json::from_str(r#"{"node_id":"n1","handlers":["df:a"],"extra":1}"#).unwrap();
        assert_eq!(record.node_id, "n1");
        assert_eq!(record.handlers, ["df:a"]);
        assert!(record.actor_types.is_empty());
    }

    #[test]
    fn a_heartbeat_out_of_bounds_is_pf400_naming_the_field() {
        for ok in [MIN_HEARTBEAT, DEFAULT_HEARTBEAT, MAX_HEARTBEAT] {
            assert!(check_heartbeat(ok, "membership_heartbeat").is_ok(), "{ok:?}");
        }
        let e = check_heartbeat(Duration::ZERO, "membershipHeartbeatMs").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert_eq!(e.message, "membershipHeartbeatMs must be from 10 to 60000 ms, got 0 ms");
        let e = check_heartbeat(MAX_HEARTBEAT + Duration::from_millis(1), "membership_heartbeat_ms");
        assert_eq!(
            e.unwrap_err().message,
            "membership_heartbeat_ms must be from 10 to 60000 ms, got 60001 ms"
        );
        assert!(check_heartbeat(Duration::from_millis(9), "h").is_err());
    }
}
