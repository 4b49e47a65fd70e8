//! TLS on the Flight listener: the server's certificate and key, and the client CA that turns on mutual TLS.
//!
//! The files are read and parsed here, at start-up, so that a wrong path or a file that is not
//! PEM stops the server with a message naming that file (tonic's own errors name neither).
//! The handshake itself is tonic's (`ServerTlsConfig`), run on the connections that
//! [`super::connections`] admitted: a TLS connection holds its slot from the first byte, and a
//! client that does not finish the handshake in time is dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::Config;

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("the TLS {what} {path} is not valid PEM: {reason}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key are each valid but cannot be used together.
    #[error("cannot use the TLS certificate {cert} with the key {key}: {reason}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reported.
        reason: String,
    },
}

/// The TLS settings `config` asks for: `None` when the listener speaks plaintext.
/// `handshake_timeout` bounds the TLS handshake of each new connection.
pub fn server_tls_config(
    config: &Config,
    handshake_timeout: Duration,
) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert = read_certificates(cert_path, "certificate")?;
    let key = read_private_key(key_path)?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(handshake_timeout);
    if let Some(ca_path) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_certificates(
            ca_path,
            "client CA",
        )?));
    }
    // Build it once now, so that a key that does not match its certificate stops the start.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| TlsError::Unusable {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason: error_chain(&e),
        })?;
    Ok(Some(tls))
}

/// The bytes of `path`, which must hold at least one PEM certificate and nothing unparsable.
fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(path, what)?;
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| pem_error(e.to_string()))?;
        found += 1;
    }
    if found == 0 {
        return Err(pem_error("no '-----BEGIN CERTIFICATE-----' block".into()));
    }
    Ok(pem)
}

/// The bytes of `path`, which must hold a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    const WHAT: &str = "private key";
    let pem = read(path, WHAT)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: WHAT,
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no '-----BEGIN PRIVATE KEY-----' block (or RSA/EC PRIVATE KEY)".into()
            }
            other => other.to_string(),
        },
    })?;
    Ok(pem)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The TLS settings of a client (`flightbear healthcheck`, `flightbear query`): the server
/// verified with `ca` (the system's roots without it), and a client certificate for mutual TLS.
pub fn client_config(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    let load = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    match ca {
        Some(path) => tls = tls.ca_certificate(Certificate::from_pem(load(path)?)),
        None => tls = tls.with_native_roots(),
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(load(cert)?, load(key)?));
        }
        (None, None) => {}
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    Ok(tls)
}

/// An error and its sources on one line (tonic's transport errors say little without them).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // rustls errors repeat their cause in their own text.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(dir: &Path, cert: &str, key: &str) -> Config {
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        Config {
            tls_cert: Some(cert_path),
            tls_key: Some(key_path),
            ..Config::default()
        }
    }

    /// Parses as PEM; not a usable certificate.
    const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

    fn start_error(config: &Config) -> String {
        server_tls_config(config, Duration::from_secs(1))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn no_certificate_means_plaintext() {
        let tls = server_tls_config(&Config::default(), Duration::from_secs(1)).unwrap();
        assert!(tls.is_none());
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_with(dir.path(), CERT_PEM, "");
        config.tls_key = Some(dir.path().join("absent.key"));
        let err = start_error(&config);
        assert!(
            err.contains("private key") && err.contains("absent.key"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), "not a certificate\n", "");
        let err = start_error(&config);
        assert!(
            err.contains("certificate") && err.contains("server.pem") && err.contains("BEGIN"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_holding_a_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), CERT_PEM, CERT_PEM);
        let err = start_error(&config);
        assert!(
            err.contains("private key") && err.contains("server.key"),
            "{err}"
        );
    }
}
