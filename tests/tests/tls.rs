//! `wss://` over loopback with certificates made at test time: a round
//! trip, a wrong CA refused with a clear error, TLS with auth, and bad
//! certificate files named.

use packetflow::{json, ConnectOptions, ErrorCode, ListenOptions, Node, NodeConfig, Packet, TokenSpec};
use packetflow_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM
/// files: `ca.pem`, `cert.pem`, `key.pem`; `elsewhere-cert.pem` and
/// `elsewhere-key.pem`, signed by the same CA for another name; and
/// `other-ca.pem`, a CA that signed nothing here.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("tls");
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (params, key, cert)
        };
        let (ca_params, ca_key, ca_cert) = ca("PacketFlow test CA");
        let (_, _, other) = ca("Some other CA");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let elsewhere_key = KeyPair::generate().unwrap();
        let elsewhere = CertificateParams::new(vec!["elsewhere.test".to_owned()])
            .unwrap()
            .signed_by(&elsewhere_key, &issuer)
            .unwrap();
        dir.file("elsewhere-cert.pem", &elsewhere.pem());
        dir.file("elsewhere-key.pem", &elsewhere_key.serialize_pem());
        dir.file("ca.pem", &ca_cert.pem());
        dir.file("other-ca.pem", &other.pem());
        dir.file("cert.pem", &leaf.pem());
        dir.file("key.pem", &leaf_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.0.join(name)
    }

    fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            tls_cert: Some(self.path("cert.pem")),
            tls_key: Some(self.path("key.pem")),
            ..ListenOptions::default()
        }
    }

    fn trusting(&self, ca: &str) -> ConnectOptions {
        ConnectOptions { tls_ca: Some(self.path(ca)), ..ConnectOptions::default() }
    }
}

/// A node serving `df:upper` over TLS; returns it and its port.
async fn tls_node(options: ListenOptions) -> (Node, u16) {
    let (n, _) = node("secure", NodeConfig::default()).await;
    register_upper(n.reactor());
    let addr = n.listen_with("127.0.0.1:0", options).await.expect("listen with TLS");
    (n, addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_over_wss_with_a_generated_certificate() {
    let pki = Pki::new();
    let (server, port) = tls_node(pki.listen_options()).await;
    for host in ["127.0.0.1", "localhost"] {
        let (client, _) = node("client", NodeConfig::default()).await;
        let url = format!("wss://{host}:{port}/packetflow/v1");
        client.connect_with(&url, pki.trusting("ca.pem")).await.expect("TLS handshake and hello");
        let answer = client.reactor().call(Packet::build("df", "upper", json!("sealed")).unwrap()).await;
        assert_eq!(answer, Ok(json!("SEALED")), "via {host}");
        client.stop().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn msgpack_over_wss_too() {
    let pki = Pki::new();
    let (server, port) = tls_node(pki.listen_options()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let options = ConnectOptions { codec: packetflow::Codec::MsgPack, ..pki.trusting("ca.pem") };
    client.connect_with(&format!("wss://127.0.0.1:{port}/packetflow/v1"), options).await.unwrap();
    let answer = client.reactor().call(Packet::build("df", "upper", json!("packed")).unwrap()).await;
    assert_eq!(answer, Ok(json!("PACKED")));
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let pki = Pki::new();
    let (server, port) = tls_node(pki.listen_options()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let url = format!("wss://127.0.0.1:{port}/packetflow/v1");
    let err = client.connect_with(&url, pki.trusting("other-ca.pem")).await.unwrap_err();
    assert!(err.is(ErrorCode::Unavailable), "{err:?}");
    assert!(
        err.message
            .starts_with(&format!("cannot connect to {url}: TLS handshake failed: invalid peer certificate")),
        "{}",
        err.message
    );
    assert!(err.message.contains("UnknownIssuer"), "{}", err.message);
    // Without a CA file the system roots are used: they do not know this CA
    // either (or there are none on this machine): refused all the same.
    let err = client.connect(&url).await.unwrap_err();
    assert!(err.message.contains("certificate"), "{}", err.message);
    // The server keeps serving a client that trusts the right CA.
    client.connect_with(&url, pki.trusting("ca.pem")).await.unwrap();
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let options = ListenOptions {
        tls_cert: Some(pki.path("elsewhere-cert.pem")),
        tls_key: Some(pki.path("elsewhere-key.pem")),
        ..ListenOptions::default()
    };
    let (server, port) = tls_node(options).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client
        .connect_with(&format!("wss://127.0.0.1:{port}/packetflow/v1"), pki.trusting("ca.pem"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::Unavailable), "{err:?}");
    assert!(err.message.contains("TLS handshake failed"), "{}", err.message);
    assert!(err.message.contains("certificate not valid for name \"127.0.0.1\""), "{}", err.message);
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn plain_ws_to_a_tls_listener_fails_and_the_listener_keeps_serving() {
    let pki = Pki::new();
    let (server, port) = tls_node(pki.listen_options()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client.connect(&format!("ws://127.0.0.1:{port}/packetflow/v1")).await.unwrap_err();
    assert!(err.is(ErrorCode::Unavailable), "{err:?}");
    client
        .connect_with(&format!("wss://127.0.0.1:{port}/packetflow/v1"), pki.trusting("ca.pem"))
        .await
        .unwrap();
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn tls_and_auth_together() {
    let pki = Pki::new();
    let token = "tls-client-token-0123456789";
    let options = ListenOptions {
        tokens: vec![TokenSpec::new("tls-client", token, &["df:upper"], &[])],
        ..pki.listen_options()
    };
    let (server, port) = tls_node(options).await;
    let url = format!("wss://127.0.0.1:{port}/packetflow/v1");
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client.connect_with(&url, pki.trusting("ca.pem")).await.unwrap_err();
    assert_eq!(err.code, "PF401", "{err:?}");
    let options = ConnectOptions { token: Some(token.into()), ..pki.trusting("ca.pem") };
    client.connect_with(&url, options.clone()).await.unwrap();
    let answer = client.reactor().call(Packet::build("df", "upper", json!("both")).unwrap()).await;
    assert_eq!(answer, Ok(json!("BOTH")));
    // A bare WebSocket through the same options (what the load generator uses).
    let ws = packetflow::net::open_websocket(&url, options, None).await;
    assert!(ws.is_ok(), "{:?}", ws.err());
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_certificate_files_are_named() {
    let pki = Pki::new();
    let (n, _) = node("n", NodeConfig::default()).await;
    let missing = pki.path("absent.pem");
    let err = n
        .listen_with("127.0.0.1:0", ListenOptions { tls_cert: Some(missing.clone()), ..pki.listen_options() })
        .await
        .unwrap_err();
    assert_eq!(err.code, "PF400");
    assert!(
        err.message.contains(&format!("cannot read TLS certificate {}", missing.display())),
        "{}",
        err.message
    );
    let not_pem = pki.dir.file("garbage.pem", "hello\n");
    let err = n
        .listen_with("127.0.0.1:0", ListenOptions { tls_cert: Some(not_pem), ..pki.listen_options() })
        .await
        .unwrap_err();
    assert!(err.message.contains("holds no CERTIFICATE block"), "{}", err.message);
    let err = n
        .listen_with(
            "127.0.0.1:0",
            ListenOptions { tls_key: Some(pki.path("cert.pem")), ..pki.listen_options() },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("holds no usable private key"), "{}", err.message);
    let err = n
        .listen_with("127.0.0.1:0", ListenOptions { tls_key: None, ..pki.listen_options() })
        .await
        .unwrap_err();
    assert!(err.message.contains("both a certificate and a key"), "{}", err.message);
    let err = n
        .connect_with(
            "wss://127.0.0.1:1/packetflow/v1",
            ConnectOptions { tls_ca: Some(missing), ..Default::default() },
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("cannot read CA file"), "{}", err.message);
    n.stop().await;
}
