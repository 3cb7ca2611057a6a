//! The `packetflow` binary end to end: a hub, submits against it, health,
//! a short benchmark, and clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_packetflow");

/// A `packetflow serve` on an ephemeral port, killed when dropped.
struct Hub {
    child: Child,
    url: String,
}

impl Hub {
    fn start(extra: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start packetflow serve");
        // The first line names the bound address.
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://") || w.starts_with("wss://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Hub { child, url }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("serve stops on SIGTERM").unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run packetflow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn submit_prints_the_result_and_sets_the_exit_code() {
    let hub = Hub::start(&["--handler", "df:transform=uppercase", "--handler", "df:fail=fail"]);
    let ok = run(&["submit", "--url", &hub.url, "df", "transform", "\"hello world\""]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let result: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(result["status"], "success");
    assert_eq!(result["data"], "HELLO WORLD");

    let packed = run(&["submit", "--url", &hub.url, "--msgpack", "df", "transform", "\"packed\""]);
    assert!(packed.status.success());
    assert!(stdout(&packed).contains("\"PACKED\""));

    let missing = run(&["submit", "--url", &hub.url, "df", "nothing", "1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).starts_with("PF001: no handler for df:nothing"), "{}", stderr(&missing));

    let failing = run(&["submit", "--url", &hub.url, "df", "fail", "{\"a\":1}"]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(stderr(&failing).starts_with("PF500"));

    let status = hub.terminate();
    assert!(status.success(), "serve exits 0 on SIGTERM");
}

#[test]
fn bad_arguments_are_named() {
    let bad_json = run(&["submit", "df", "transform", "{not json"]);
    assert_eq!(bad_json.status.code(), Some(2));
    assert!(stderr(&bad_json).contains("DATA is not JSON"));
    let bad_priority = run(&["submit", "--priority", "11", "df", "transform", "1"]);
    assert!(stderr(&bad_priority).contains("priority must be an integer 1-10, got 11"));
    let bad_group = run(&["submit", "zz", "transform", "1"]);
    assert!(stderr(&bad_group).contains("group must be one of"));
    let unreachable = run(&["submit", "--url", "ws://127.0.0.1:1/packetflow/v1", "df", "t", "1"]);
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(stderr(&unreachable).contains("cannot connect to ws://127.0.0.1:1/packetflow/v1"));
    let bad_handler = run(&["serve", "--listen", "127.0.0.1:0", "--handler", "df:x=teleport"]);
    assert_eq!(bad_handler.status.code(), Some(2));
    assert!(stderr(&bad_handler).contains("unknown handler kind \"teleport\""));
    let no_slots = run(&["serve", "--listen", "127.0.0.1:0", "--max-inflight", "0"]);
    assert_eq!(no_slots.status.code(), Some(2));
    assert!(stderr(&no_slots).contains("max_inflight must be at least 1, got 0"), "{}", stderr(&no_slots));
    let no_frames = run(&["serve", "--listen", "127.0.0.1:0", "--max-frame-bytes", "0"]);
    assert_eq!(no_frames.status.code(), Some(2));
    assert!(
        stderr(&no_frames).contains("max_frame_bytes must be at least 1, got 0"),
        "{}",
        stderr(&no_frames)
    );
    let bad_timeout = run(&["submit", "--timeout-ms", "-5", "df", "transform", "1"]);
    assert!(stderr(&bad_timeout).contains("timeout_ms must be a positive integer <= 86400000, got -5"));
    // bench judges its packet by the core's rules before it connects.
    let not_json = run(&["bench", "--url", "ws://127.0.0.1:1/packetflow/v1", "--metadata", "{nope"]);
    assert!(stderr(&not_json).contains("--metadata is not JSON"), "{}", stderr(&not_json));
    let not_object = run(&["bench", "--url", "ws://127.0.0.1:1/packetflow/v1", "--metadata", "[1]"]);
    assert!(
        stderr(&not_object).contains("metadata must be an object, got an array"),
        "{}",
        stderr(&not_object)
    );
}

#[test]
fn health_and_bench_against_a_hub() {
    let hub = Hub::start(&["--handler", "df:transform=uppercase"]);
    let health = run(&["health", &hub.url]);
    assert!(health.status.success());
    let doc: serde_json::Value = serde_json::from_str(&stdout(&health)).unwrap();
    assert_eq!(doc["handlers"], serde_json::json!(["df:transform"]));
    let bench = run(&[
        "bench",
        "--url",
        &hub.url,
        "--n",
        "2000",
        "--seq-n",
        "200",
        "--warmup",
        "50",
        "--conns",
        "2",
        "--expect",
        "\"HELLO WORLD\"",
        "--json",
    ]);
    assert!(bench.status.success(), "{}", stderr(&bench));
    let out = stdout(&bench);
    assert!(out.contains("seq  n=200: p50"), "{out}");
    assert!(out.contains("pipe 2x100 n=2000"), "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["errors"], 0);
    assert!(summary["pipe_packets_per_s"].as_f64().unwrap() > 0.0);
    // A wrong expectation is reported as errors, not hidden.
    let wrong = run(&[
        "bench", "--url", &hub.url, "--mode", "pipe", "--n", "100", "--warmup", "0", "--expect", "\"nope\"",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("100 answers were errors"));
}

#[test]
fn bench_messages_an_actor_with_metadata() {
    let hub = Hub::start(&["--actor", "counter=counter"]);
    let bench = run(&[
        "bench",
        "--url",
        &hub.url,
        "--mode",
        "pipe",
        "--n",
        "500",
        "--warmup",
        "0",
        "--group",
        "rm",
        "--element",
        "actor.counter",
        "--data",
        r#"{"type": "increment"}"#,
        "--metadata",
        r#"{"pf.actor_id": "bench"}"#,
        "--json",
    ]);
    assert!(bench.status.success(), "{}", stderr(&bench));
    let summary: serde_json::Value = serde_json::from_str(stdout(&bench).lines().last().unwrap()).unwrap();
    assert_eq!(summary["errors"], 0, "every message reached the actor");
    // Each of the 500 messages was one turn of the same actor.
    let value = run(&["actor", "send", &hub.url, "counter", "bench", r#"{"type": "get_value"}"#]);
    assert!(stdout(&value).contains(r#""value":500"#), "{}", stdout(&value));
}

#[test]
fn dashboard_prints_the_page_of_a_node_that_serves_it() {
    let hub = Hub::start(&[]);
    let out = Command::new(BIN)
        .args(["dashboard", &hub.url])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("run packetflow dashboard");
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out).trim().to_owned();
    let authority = hub.url.trim_start_matches("ws://").trim_end_matches("/packetflow/v1");
    assert_eq!(page, format!("http://{authority}/ui/"));
    // The page is there, on the node's own port.
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    use std::io::{Read, Write};
    write!(stream, "GET /ui/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.contains("<title>PacketFlow node</title>"),
        "{answer}"
    );
    let bad = run(&["dashboard", "ftp://x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("unsupported scheme ftp://"));
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["submit", "--help"],
        vec!["health", "--help"],
        vec!["bench", "--help"],
        vec!["dashboard", "--help"],
    ] {
        let out = run(&cmd);
        assert!(out.status.success());
        assert!(stdout(&out).contains("Usage: packetflow"), "{cmd:?}");
    }
}

#[test]
fn stream_answers_each_request_line() {
    use std::io::Write;
    let hub = Hub::start(&["--handler", "df:echo=echo"]);
    let mut child = Command::new(BIN)
        .args(["stream", "--url", &hub.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = b"{\"id\":1,\"group\":\"df\",\"element\":\"echo\",\"data\":{\"k\":[1,2]}}\n{\"id\":2,\"group\":\"df\",\"element\":\"echo\",\"priority\":11}\n{\"id\":3,\"group\":\"df\",\"element\":\"echo\",\"dependencies\":[\"a\",\"\"]}\n{\"id\":4,\"group\":\"df\",\"element\":\"echo\",\"timeout_ms\":\"soon\"}\n";
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by_key(|l| l["id"].as_u64());
    assert_eq!(lines[0]["result"]["data"], serde_json::json!({"k": [1, 2]}));
    assert_eq!(lines[1]["error"], "priority must be an integer 1-10, got 11");
    // The core's words for a bad dependency, with its index, as a frame gets them.
    assert_eq!(lines[2]["error"], "dependencies[1] must be a string of 1-128 bytes, got 0 bytes");
    assert_eq!(lines[3]["error"], "timeout_ms must be a positive integer <= 86400000, got \"soon\"");
}

/// A temporary directory removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(label: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("packetflow-cli-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CLIENT_TOKEN: &str = "cli-client-token-0123456789";

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("PACKETFLOW_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run packetflow")
}

#[test]
fn serve_with_auth_lets_in_only_its_tokens() {
    let dir = Dir::new("auth");
    let tokens = dir.file(
        "tokens.toml",
        &format!("[[tokens]]\nname = \"client\"\ntoken = \"{CLIENT_TOKEN}\"\nsubmit = [\"df:*\"]\n"),
    );
    let hub =
        Hub::start(&["--auth", &tokens, "--handler", "df:transform=uppercase", "--handler", "cf:x=echo"]);
    let url = hub.url.as_str();
    let missing = run_env(&["submit", "--url", url, "df", "transform", "\"a\""], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("PF401"), "{}", stderr(&missing));
    let wrong =
        run_env(&["submit", "--url", url, "--token", "wrong-token-0123456789", "df", "transform", "1"], &[]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("PF401") && !stderr(&wrong).contains("wrong-token"),
        "{}",
        stderr(&wrong)
    );
    let ok = run_env(&["submit", "--url", url, "--token", CLIENT_TOKEN, "df", "transform", "\"a\""], &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("\"A\""));
    let from_env =
        run_env(&["submit", "--url", url, "df", "transform", "\"b\""], &[("PACKETFLOW_TOKEN", CLIENT_TOKEN)]);
    assert!(from_env.status.success(), "{}", stderr(&from_env));
    let forbidden = run_env(&["submit", "--url", url, "--token", CLIENT_TOKEN, "cf", "x", "1"], &[]);
    assert_eq!(forbidden.status.code(), Some(1));
    assert!(
        stderr(&forbidden).starts_with("PF403: token \"client\" may not submit cf:x"),
        "{}",
        stderr(&forbidden)
    );
    // Health: the status only without a token, everything with one.
    let bare = run_env(&["health", url], &[]);
    assert_eq!(stdout(&bare).trim(), r#"{"status":"ok"}"#);
    let full = run_env(&["health", "--token", CLIENT_TOKEN, url], &[]);
    assert!(stdout(&full).contains("\"handlers\""), "{}", stdout(&full));
    assert!(hub.terminate().success());
}

#[test]
fn serve_refuses_a_bad_tokens_file_naming_it() {
    let dir = Dir::new("badauth");
    let tokens = dir.file("tokens.toml", "[[tokens]]\nname = \"x\"\ntoken = \"short\"\n");
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--auth", &tokens]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("error: --auth: tokens file {tokens}")), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 16 bytes"));
    let half = run(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", &tokens]);
    assert_eq!(half.status.code(), Some(2), "--tls-cert needs --tls-key");
}

#[test]
fn serve_over_tls_and_submit_with_a_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = Dir::new("tls");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let ca_file = dir.file("ca.pem", &ca.pem());
    let cert_file = dir.file("cert.pem", &cert.pem());
    let key_file = dir.file("key.pem", &key.serialize_pem());
    let hub = Hub::start(&["--tls-cert", &cert_file, "--tls-key", &key_file, "--handler", "df:t=uppercase"]);
    assert!(hub.url.starts_with("wss://127.0.0.1:"), "{}", hub.url);
    let ok = run(&["submit", "--url", &hub.url, "--ca", &ca_file, "df", "t", "\"sealed\""]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("\"SEALED\""));
    let untrusted = run(&["submit", "--url", &hub.url, "df", "t", "1"]);
    assert_eq!(untrusted.status.code(), Some(2));
    assert!(stderr(&untrusted).contains("certificate"), "{}", stderr(&untrusted));
    let bench = run(&[
        "bench",
        "--url",
        &hub.url,
        "--ca",
        &ca_file,
        "--mode",
        "pipe",
        "--n",
        "500",
        "--warmup",
        "0",
        "--expect",
        "\"HELLO WORLD\"",
        "--element",
        "t",
    ]);
    assert!(bench.status.success(), "{}", stderr(&bench));
    assert!(hub.terminate().success());
}

#[test]
fn serve_limits_are_flags() {
    use std::io::Write;
    let hub =
        Hub::start(&["--handler", "df:echo=echo", "--max-submits-per-sec", "1", "--max-frame-bytes", "2000"]);
    let mut child = Command::new(BIN)
        .args(["stream", "--url", &hub.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = |id: u32| format!("{{\"id\":{id},\"group\":\"df\",\"element\":\"echo\",\"data\":{id}}}\n");
    let input = format!("{}{}{}", line(1), line(2), line(3));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let limited = lines.iter().filter(|l| l["result"]["error"]["code"] == "PF429").count();
    let served = lines.iter().filter(|l| l["result"]["status"] == "success").count();
    assert_eq!((served, limited), (1, 2), "{lines:?}");
    // A frame past --max-frame-bytes closes the connection (1009): the
    // submit ends with PF503, its connection gone.
    let big = format!("\"{}\"", "x".repeat(3000));
    let too_big = run(&["submit", "--url", &hub.url, "df", "echo", &big]);
    assert_eq!(too_big.status.code(), Some(1));
    assert!(stderr(&too_big).starts_with("PF503"), "{}", stderr(&too_big));
    let help = stdout(&run(&["serve", "--help"]));
    for flag in ["--auth", "--tls-cert", "--max-connections", "--max-queued-bytes", "--max-inflight-per-conn"]
    {
        assert!(help.contains(flag), "{flag}");
    }
}
