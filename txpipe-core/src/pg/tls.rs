//! TLS for the Postgres endpoint: a PEM certificate chain and private key.
//!
//! Unlike `datafusion_postgres::serve`, which logs a warning and serves
//! plaintext when the key does not load, a bad certificate or key here is an
//! error at start: a server the operator asked to encrypt never answers in
//! the clear.

use std::path::Path;
use std::sync::Arc;

use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: what,
        path: path.to_path_buf(),
        source,
    })
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1).
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does not
/// match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad = |what: String| Error::Config(format!("Postgres TLS: {what}"));
    let cert_pem = read(cert, "reading the TLS certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", cert.display())));
    }
    let key_pem = read(key, "reading the TLS private key")?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(format!("{}: no private key ({e})", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
