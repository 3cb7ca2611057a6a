//! `packetflow dashboard URL`: the address of a node's dashboard page,
//! opened in a browser when one is at hand.

use std::process::{Command, ExitCode, Stdio};

/// The dashboard's page on the node at `url` (`ws://HOST:PORT/...`,
/// `wss://...`, `http(s)://HOST:PORT` or `HOST:PORT`).
pub fn page_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("ws" | "http", rest)) => ("http", rest),
        Some(("wss" | "https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(format!(
                "unsupported scheme {other}:// in {url:?}; give ws://, wss://, http:// or https://"
            ))
        }
        None => ("http", url),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let has_port = host.rsplit_once(':').is_some_and(|(_, port)| !port.is_empty() && !port.contains(']'));
    let authority =
        if has_port { host.to_owned() } else { format!("{host}:{}", packetflow::net::DEFAULT_PORT) };
    Ok(format!("{scheme}://{authority}/ui/"))
}

/// Whether a graphical session is there to show a browser in.
fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Prints the page's URL, then opens it with `xdg-open` (or `open` on
/// macOS) when a display is there and `open` is set.
pub fn run(url: &str, open: bool) -> ExitCode {
    let page = match page_url(url) {
        Ok(page) => page,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{page}");
    if open && (has_display() || cfg!(target_os = "macos")) {
        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
        let spawned = Command::new(opener)
            .arg(&page)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("packetflow: could not open a browser ({opener}: {e}); open the URL above");
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::page_url;

    #[test]
    fn node_urls_become_the_page_url() {
        assert_eq!(page_url("ws://127.0.0.1:9000/packetflow/v1").unwrap(), "http://127.0.0.1:9000/ui/");
        assert_eq!(page_url("wss://hub.example:8443/packetflow/v1").unwrap(), "https://hub.example:8443/ui/");
        assert_eq!(page_url("http://localhost:8443").unwrap(), "http://localhost:8443/ui/");
        assert_eq!(page_url("hub.example").unwrap(), "http://hub.example:8443/ui/");
        assert_eq!(page_url("ws://[::1]:9000/x").unwrap(), "http://[::1]:9000/ui/");
        assert_eq!(page_url("ws://[::1]/x").unwrap(), "http://[::1]:8443/ui/");
        assert!(page_url("ftp://x").unwrap_err().contains("unsupported scheme ftp://"));
        assert!(page_url("ws:///x").unwrap_err().contains("no host"));
    }
}
