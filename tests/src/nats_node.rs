//! What the NATS tests share: nodes that reach others through NATS only,
//! and submits bounded by [`WAIT`].

use std::time::Duration;

use packetflow::{ErrorCode, Node, NodeConfig, Packet, PacketResult, Reactor, ReactorConfig, Value};
use tokio::time::{timeout, Instant};

use crate::WAIT;

/// A node named `name` with no listener: it reaches others through NATS
/// (or the peers it dials) only.
pub fn bare_node(name: &str) -> Node {
    Node::new(
        Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() }),
        NodeConfig::default(),
    )
}

/// A `df:<element>` packet carrying `data`.
pub fn df(element: &str, data: Value) -> Packet {
    Packet::build("df", element, data).unwrap()
}

/// Submits `packet` from `node`; fails the test if it is not answered
/// within [`WAIT`].
pub async fn submit_in_time(node: &Node, packet: Packet) -> PacketResult {
    timeout(WAIT, node.reactor().submit(packet)).await.expect("every packet is answered in time")
}

/// Submits `df:<element>` with `data` from `node` until the answer is not
/// PF001 (a subscription made through another server of a cluster, or by
/// a bridge that just learned a key, reaches the asking node's server a
/// moment later); bounded by [`WAIT`]. Returns the first other answer.
pub async fn until_reachable(node: &Node, element: &str, data: Value) -> PacketResult {
    let until = Instant::now() + WAIT;
    loop {
        let result = submit_in_time(node, df(element, data.clone())).await;
        if !result.err().is_some_and(|e| e.is(ErrorCode::NoHandler)) {
            return result;
        }
        assert!(Instant::now() < until, "df:{element} never became reachable over NATS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
