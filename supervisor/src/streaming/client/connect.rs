//! The byte stream under an upgrade request: TCP, with TLS for https/wss URLs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::target::Target;
use super::{ClientError, ClientTls};

/// A connected stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub(crate) type BoxIo = Box<dyn Io>;

/// Where distributions keep the system's CA bundle (SSL_CERT_FILE wins).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub(crate) async fn connect(target: &Target, tls: &ClientTls) -> Result<BoxIo, ClientError> {
    let addr = target.addr();
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.clone(),
            source,
        })?;
    // Keystrokes and small frames should not wait for Nagle.
    tcp.set_nodelay(true).ok();
    if !target.tls {
        return Ok(Box::new(tcp));
    }
    let config = client_config(tls)?;
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| ClientError::TlsConfig(format!("server name {:?}: {e}", target.host)))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| ClientError::Tls {
            host: target.host.clone(),
            source,
        })?;
    Ok(Box::new(stream))
}

fn client_config(tls: &ClientTls) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(path) => {
            for cert in read_pem(path)? {
                roots.add(cert).map_err(|e| {
                    ClientError::TlsConfig(format!("CA file {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            let path = system_bundle().ok_or_else(|| {
                ClientError::TlsConfig(
                    "no system CA bundle found; give the streaming server's CA file".into(),
                )
            })?;
            roots.add_parsable_certificates(read_pem(&path)?);
        }
    }
    if roots.is_empty() {
        return Err(ClientError::TlsConfig("no CA certificate to trust".into()));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsConfig(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

fn system_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(p));
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bad = |e: rustls::pki_types::pem::Error| {
        ClientError::TlsConfig(format!("CA file {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(ClientError::TlsConfig(format!(
            "CA file {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let tls = ClientTls { ca: Some(path) };
        let err = client_config(&tls).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        let tls = ClientTls {
            ca: Some(dir.path().join("missing.pem")),
        };
        assert!(matches!(
            client_config(&tls),
            Err(ClientError::TlsConfig(_))
        ));
    }
}
