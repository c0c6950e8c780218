//! HTTPS for the HTTP port (`http.tls_cert_file`, `http.tls_key_file`):
//! rustls with the `ring` provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`.
//!
//! The certificate is served through a resolver holding an `Arc` that a
//! reload swaps: on SIGHUP both files are read again and, when they parse
//! and the key matches the certificate, new handshakes get the new
//! certificate while every open connection keeps going on the session it
//! has. A bad new pair is logged (naming the key) and counted
//! (`ganglion_http_tls_reloads_total{result="failed"}`); the old certificate
//! stays in service.
//!
//! The handshake itself runs in the connection's task, under the
//! connection's governor permit and `http.tls_handshake_timeout_secs`
//! (see [`server`](super::server)): a client that opens TLS connections and
//! stalls them costs what a plain-text slowloris does, and no more.

use crate::config::http_security::{read_cert_chain, read_private_key};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Why a certificate and key could not be used, naming the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not the PEM it should be.
    #[error("`{key}`: {message}")]
    File {
        /// `http.tls_cert_file` or `http.tls_key_file`.
        key: &'static str,
        /// What is wrong, with the file name.
        message: String,
    },
    /// The key is not one rustls can sign with, or is not the certificate's.
    #[error("`http.tls_key_file` {key_file}: {message} (certificate {cert_file})")]
    Pair {
        /// The key file.
        key_file: String,
        /// The certificate file.
        cert_file: String,
        /// What rustls said.
        message: String,
    },
}

/// The crypto provider: ring (no cmake, no C++), chosen explicitly so the
/// process default does not matter.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_cert_chain(cert_file).map_err(|message| TlsError::File {
        key: "http.tls_cert_file",
        message,
    })?;
    let key = read_private_key(key_file).map_err(|message| TlsError::File {
        key: "http.tls_key_file",
        message,
    })?;
    let pair = |message: String| TlsError::Pair {
        key_file: key_file.display().to_string(),
        cert_file: cert_file.display().to_string(),
        message,
    };
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pair(format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) => {}
        // rustls cannot tell for some key types: the handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(pair(format!("does not match the certificate: {e}"))),
    }
    Ok(Arc::new(ck))
}

/// Hands every handshake the certificate in force.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The TLS side of the HTTP listener.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair and builds the server configuration.
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Arc<Tls>, TlsError> {
        let ck = load(cert_file, key_file)?;
        let resolver = Arc::new(Resolver(RwLock::new(ck)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair {
                key_file: key_file.display().to_string(),
                cert_file: cert_file.display().to_string(),
                message: format!("no protocol version: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }))
    }

    /// Starts a handshake on an accepted connection.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads both files again; on success new handshakes use them, on
    /// failure the certificate in force is kept and the error returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load(&self.cert_file, &self.key_file)?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = ck;
        Ok(())
    }

    /// The leaf certificate handed to new clients (tests compare it).
    pub fn current_leaf(&self) -> Vec<u8> {
        let ck = self
            .resolver
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ck.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// Reloads the pair (off the async workers: two small files and a key
    /// parse), then counts and logs the result in `limits`.
    pub async fn reload_logged(self: &Arc<Self>, limits: &super::HttpLimits) {
        let tls = self.clone();
        let r = tokio::task::spawn_blocking(move || tls.reload())
            .await
            .unwrap_or_else(|e| {
                Err(TlsError::File {
                    key: "http.tls_cert_file",
                    message: format!("reload task failed: {e}"),
                })
            });
        limits.security.tls_reloaded(&r, &self.cert_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k, ck.cert.der().to_vec())
    }

    #[test]
    fn reload_swaps_and_a_bad_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, der_a) = pair(dir.path(), "a");
        let tls = Tls::new(&c, &k).unwrap();
        assert_eq!(tls.current_leaf(), der_a);
        // A new pair in the same files.
        let (c2, k2, der_b) = pair(dir.path(), "b");
        std::fs::copy(&c2, &c).unwrap();
        std::fs::copy(&k2, &k).unwrap();
        tls.reload().unwrap();
        assert_eq!(tls.current_leaf(), der_b);
        // A key that is not the certificate's: refused, the old pair stays.
        let (_, k3, _) = pair(dir.path(), "c");
        std::fs::copy(&k3, &k).unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(
            e.contains("http.tls_key_file") && e.contains("does not match"),
            "{e}"
        );
        assert_eq!(tls.current_leaf(), der_b);
        // A truncated certificate file: refused too.
        std::fs::write(&c, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("http.tls_cert_file"), "{e}");
        assert_eq!(tls.current_leaf(), der_b);
    }

    #[test]
    fn start_refuses_a_mismatched_pair_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = pair(dir.path(), "a");
        let (_, k, _) = pair(dir.path(), "b");
        let e = Tls::new(&c, &k).unwrap_err().to_string();
        assert!(e.contains("`http.tls_key_file`"), "{e}");
    }
}
