//! `packetflow health URL`: GET /health over plain HTTP.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of a ws://, http:// or bare URL.
fn authority(url: &str) -> Result<String, String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok(if host.contains(':') { host.to_owned() } else { format!("{host}:8443") })
}

/// Fetches `path` from the node at `url`; returns the status and body.
pub async fn get(url: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    if url.starts_with("wss://") || url.starts_with("https://") {
        return Err("health speaks plain HTTP only; for a TLS node, query it from the host it runs on".into());
    }
    let host = authority(url)?;
    let mut stream = TcpStream::connect(&host).await.map_err(|e| format!("cannot reach {host}: {e}"))?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("malformed HTTP status line")?;
    Ok((status, body.to_owned()))
}

pub async fn print(url: &str, token: Option<String>) -> ExitCode {
    match get(url, "/health", token.as_deref()).await {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("error: HTTP {status}: {}", body.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
