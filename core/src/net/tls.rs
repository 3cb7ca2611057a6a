//! `wss://`: rustls with the ring provider. A listener takes a PEM
//! certificate chain and key; a dialer verifies the node against a PEM CA
//! file when given one, else against the system's root certificates.
//!
//! Without the `tls` feature the same functions exist and refuse with a
//! clear error, so the callers need no `cfg` of their own.

use std::path::Path;

use crate::error::{ErrorCode, PfError};

fn bad(message: String) -> PfError {
    PfError::new(ErrorCode::BadRequest, message)
}

#[cfg(feature = "tls")]
mod enabled {
    use std::path::Path;
    use std::sync::{Arc, OnceLock};

    use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

    use super::bad;
    use crate::error::PfError;

    pub(crate) type Acceptor = tokio_rustls::TlsAcceptor;

    fn provider() -> Arc<CryptoProvider> {
        static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
        PROVIDER.get_or_init(|| Arc::new(ring::default_provider())).clone()
    }

    fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, PfError> {
        let shown = path.display();
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read {what} {shown}: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{what} {shown} is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad(format!("{what} {shown} holds no CERTIFICATE block")));
        }
        Ok(certs)
    }

    /// A TLS acceptor serving the chain in `cert` with the key in `key`.
    pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, PfError> {
        let chain = certificates(cert, "TLS certificate")?;
        let shown = key.display();
        let bytes = std::fs::read(key).map_err(|e| bad(format!("cannot read TLS key {shown}: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| bad(format!("TLS key {shown} holds no usable private key: {e}")))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad(format!("TLS certificate {} does not fit its key: {e}", cert.display())))?;
        Ok(Acceptor::from(Arc::new(config)))
    }

    fn system_roots() -> Result<Arc<RootCertStore>, PfError> {
        // Reading the system store parses hundreds of certificates: once.
        static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
        ROOTS
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err("no system root certificates were found (install the ca-certificates \
                                package, or pass a CA file)"
                        .to_owned());
                }
                Ok(Arc::new(store))
            })
            .clone()
            .map_err(bad)
    }

    /// A dialer's TLS settings: trust `ca` (a PEM file) when given, else
    /// the system roots.
    pub(crate) fn connector(ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, PfError> {
        let roots = match ca {
            Some(path) => {
                let mut store = RootCertStore::empty();
                for cert in certificates(path, "CA file")? {
                    store.add(cert).map_err(|e| {
                        bad(format!("CA file {} holds an unusable certificate: {e}", path.display()))
                    })?;
                }
                Arc::new(store)
            }
            None => system_roots()?,
        };
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    pub(crate) type Connector = tokio_rustls::TlsConnector;

    /// The name the certificate must carry: a DNS name or an IP address.
    pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, PfError> {
        ServerName::try_from(host.to_owned())
            .map_err(|_| bad(format!("{host:?} is not a valid TLS server name")))
    }
}

#[cfg(feature = "tls")]
pub(crate) use enabled::*;

#[cfg(not(feature = "tls"))]
mod disabled {
    use std::path::Path;

    use super::bad;
    use crate::error::PfError;

    const OFF: &str = "this build of PacketFlow has no TLS support (the `tls` feature is off)";

    /// Never built: stands in for the TLS acceptor.
    #[derive(Clone)]
    pub(crate) enum Acceptor {}
    /// Never built: stands in for the TLS connector.
    #[derive(Clone)]
    pub(crate) enum Connector {}

    pub(crate) fn acceptor(_: &Path, _: &Path) -> Result<Acceptor, PfError> {
        Err(bad(OFF.into()))
    }

    pub(crate) fn connector(_: Option<&Path>) -> Result<Connector, PfError> {
        Err(bad(OFF.into()))
    }
}

#[cfg(not(feature = "tls"))]
pub(crate) use disabled::*;

/// Checks that a listener's certificate and key come as a pair.
pub(crate) fn listener_acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Acceptor>, PfError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
        _ => Err(bad("TLS needs both a certificate and a key".into())),
    }
}
