//! The server's TLS: a PEM certificate chain and private key, read once at start.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::StreamingError;

pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, StreamingError> {
    let err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        StreamingError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("reading certificates", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("parsing certificates", cert, &e))?;
    if chain.is_empty() {
        return Err(err("reading certificates", cert, &"no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err("reading key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StreamingError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| StreamingError::Tls(format!("certificate and key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
