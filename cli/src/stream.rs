//! `packetflow stream`: submit packets read as JSON lines on stdin, print
//! one result per line as each arrives. For scripts and tests that drive a
//! node from another language without a binding.

use std::process::ExitCode;

use packetflow::{
    ConnectOptions, Field, Node, NodeConfig, Packet, PacketParts, Reactor, ReactorConfig, Value,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// One request line: `{"id": ANY, "group", "element", "data", "priority"?,
/// "timeout_ms"?, "metadata"?, "dependencies"?, "packet_id"?}`. The packet's
/// fields are judged by the core, as a frame's would be.
fn packet_of(request: &Value) -> Result<Packet, String> {
    let field = |name: &str| request.get(name).map(Field::from);
    PacketParts {
        id: field("packet_id"),
        group: field("group"),
        element: field("element"),
        data: request.get("data").cloned(),
        priority: field("priority"),
        timeout_ms: field("timeout_ms"),
        dependencies: field("dependencies"),
        metadata: request.get("metadata").cloned(),
    }
    .into_packet()
    .map_err(|e| e.message)
}

pub async fn run(url: &str, options: ConnectOptions) -> ExitCode {
    let node = Node::new(
        Reactor::new(ReactorConfig { name: "packetflow-stream".into(), ..Default::default() }),
        NodeConfig::default(),
    );
    if let Err(e) = node.connect_with(url, options).await {
        eprintln!("error: {e}");
        node.stop().await;
        return ExitCode::from(2);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut running = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let tx = tx.clone();
        let request: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(format!(
                    "{}\n",
                    serde_json::json!({"id": null, "error": format!("not JSON: {e}")})
                ));
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        match packet_of(&request) {
            Err(e) => {
                let _ = tx.send(format!("{}\n", serde_json::json!({"id": id, "error": e})));
            }
            Ok(packet) => {
                let reactor = node.reactor().clone();
                running.push(tokio::spawn(async move {
                    let result = reactor.submit(packet).await;
                    let line = serde_json::json!({"id": id, "result": result});
                    let _ = tx.send(format!("{line}\n"));
                }));
            }
        }
    }
    for task in running {
        let _ = task.await;
    }
    drop(tx);
    let _ = writer.await;
    node.stop().await;
    ExitCode::SUCCESS
}
