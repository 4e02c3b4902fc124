//! TLS for client connections (rustls). A certificate or key that cannot be loaded stops the
//! server: it never falls back to plaintext.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::{self, ServerConfig};
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use ring::digest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_certificate::{SignatureAlgorithm, X509Certificate};

/// TLS for the server: the acceptor and the certificate's channel binding data.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS (RFC 5929), `None` when the
    /// certificate's signature names no hash (Ed25519): then only SCRAM-SHA-256 is offered.
    pub end_point: Option<Arc<[u8]>>,
}

/// TLS with `cert` (PEM chain, the server's certificate first) and `key` (PEM, PKCS#8, PKCS#1
/// or SEC1).
pub fn load(cert: &Path, key: &Path) -> Result<Tls> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "the TLS certificate file {} holds no certificate",
            cert.display()
        );
    }
    let end_point = end_point(&chain[0]);
    if end_point.is_none() {
        log::warn!(
            "the TLS certificate's signature algorithm names no hash for channel binding; \
             SCRAM-SHA-256-PLUS is not offered"
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot load a private key from {}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not form a usable pair")?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

/// The certificate's hash with its signature's hash function, SHA-256 in place of MD5 and
/// SHA-1 (RFC 5929, section 4.1).
fn end_point(cert: &CertificateDer<'_>) -> Option<Arc<[u8]>> {
    let algorithm = match X509Certificate::from_der(cert.as_ref())
        .ok()?
        .signature_algorithm()?
    {
        SignatureAlgorithm::RsaSha1 | SignatureAlgorithm::RsaSha256 => &digest::SHA256,
        SignatureAlgorithm::EcdsaSha256 => &digest::SHA256,
        SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => &digest::SHA384,
        SignatureAlgorithm::RsaSha512 => &digest::SHA512,
        SignatureAlgorithm::Ed25519 | SignatureAlgorithm::NoSignature(_) => return None,
    };
    Some(digest::digest(algorithm, cert.as_ref()).as_ref().into())
}
