//! `[http]` keys that secure the HTTP port: TLS (`tls_cert_file`,
//! `tls_key_file`, `tls_handshake_timeout_secs`) and basic authentication in
//! the convention of Prometheus' web config (`[http.basic_auth_users]`
//! name = bcrypt hash, `metrics_without_auth`), with the bounds on bcrypt's
//! cost (`auth_max_concurrent_checks`, `auth_cache_secs`).
//!
//! The fields live in [`HttpConfig`] (they are `[http]` keys); their
//! defaults, their validation and the PEM reading that `--check-config` and
//! the server share are here.

use crate::config::{ConfigError, HttpConfig, invalid};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// Default `http.tls_handshake_timeout_secs`: a TLS client that has not
/// finished its handshake this long after accept is cut (slowloris on TLS).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u32 = 10;

/// Default `http.auth_max_concurrent_checks`: bcrypt verifications running at
/// once. Each costs 50–250 ms of one core by design; two keep a password
/// guessing flood from taking more than two cores.
pub const DEFAULT_AUTH_MAX_CONCURRENT_CHECKS: usize = 2;

/// Default `http.auth_cache_secs`: how long a verified `user:password` is
/// remembered, so a dashboard's many requests cost one bcrypt, not one each.
pub const DEFAULT_AUTH_CACHE_SECS: u32 = 300;

/// Checks the security keys of `[http]`, naming the key at fault. Reads the
/// PEM files, so `--check-config` finds a missing or unreadable one.
pub(super) fn validate(h: &HttpConfig) -> Result<(), ConfigError> {
    match (&h.tls_cert_file, &h.tls_key_file) {
        (Some(_), None) => {
            return Err(invalid(
                "http.tls_key_file",
                "must be set together with http.tls_cert_file (the certificate's private key, PEM)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "http.tls_cert_file",
                "must be set together with http.tls_key_file (the certificate chain, PEM)",
            ));
        }
        (Some(cert), Some(key)) => {
            read_cert_chain(cert).map_err(|m| invalid("http.tls_cert_file", m))?;
            read_private_key(key).map_err(|m| invalid("http.tls_key_file", m))?;
        }
        (None, None) => {}
    }
    if h.tls_handshake_timeout_secs == 0 {
        return Err(invalid(
            "http.tls_handshake_timeout_secs",
            "must be at least 1",
        ));
    }
    if h.auth_max_concurrent_checks == 0 {
        return Err(invalid(
            "http.auth_max_concurrent_checks",
            "must be at least 1",
        ));
    }
    for (name, hash) in &h.basic_auth_users {
        let key = format!("http.basic_auth_users.{name}");
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(invalid(
                key,
                "a user name must be non-empty, without ':' or control characters (HTTP basic auth)",
            ));
        }
        if let Err(m) = check_bcrypt_hash(hash) {
            return Err(invalid(key, m));
        }
    }
    Ok(())
}

/// The certificate chain in `path` (PEM `CERTIFICATE` blocks, leaf first).
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM CERTIFICATE block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in `path` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{}: no PEM private key (PKCS#8, RSA or EC) found: {e}",
            path.display()
        )
    })
}

/// A key file is small; a bigger file is not what the key names.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{}: {} bytes is not a PEM file (at most {MAX_PEM_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A modular-crypt bcrypt hash: `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit
/// cost 4–31, `$`, then 53 characters of bcrypt's base64 (salt and hash), as
/// `htpasswd -B` and Prometheus' `promtool`-style generators write.
fn check_bcrypt_hash(h: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{h:?} is not a bcrypt hash ($2b$<cost>$<53 characters>, e.g. from `htpasswd -nbBC 10 \"\" PASSWORD`)"
        )
    };
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .find_map(|p| h.strip_prefix(p))
        .ok_or_else(bad)?;
    let (cost, tail) = rest.split_once('$').ok_or_else(bad)?;
    let cost: u32 = match cost.len() {
        2 => cost.parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..=31"));
    }
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    if tail.len() != 53 || !tail.chars().all(alphabet) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HASH: &str = "$2b$04$0123456789abcdefghijkuJ5VYNo4XP7JTRXuVFc0a0/0SMC8uEzu";

    #[test]
    fn bcrypt_hash_shapes() {
        assert_eq!(HASH.len(), 60);
        assert!(check_bcrypt_hash(HASH).is_ok());
        assert!(check_bcrypt_hash(&HASH.replace("$2b$", "$2y$")).is_ok());
        for bad in [
            "",
            "secret",
            "$2b$4$0123456789abcdefghijkuJ5VYNo4XP7JTRXuVFc0a0/0SMC8uEzu",
            "$2b$04$0123456789abcdefghijkuJ5VYNo4XP7JTRXuVFc0a0/0SMC8uEz",
            "$2b$04$0123456789abcdefghijkuJ5VYNo4XP7JTRXuVFc0a0/0SMC8uEz!",
            "$1$04$0123456789abcdefghijkuJ5VYNo4XP7JTRXuVFc0a0/0SMC8uEzu",
        ] {
            assert!(check_bcrypt_hash(bad).is_err(), "{bad:?}");
        }
        let e = check_bcrypt_hash(&HASH.replace("$04$", "$40$")).unwrap_err();
        assert!(e.contains("cost 40"), "{e}");
    }

    fn http() -> HttpConfig {
        HttpConfig::default()
    }

    fn err(h: &HttpConfig) -> String {
        validate(h).unwrap_err().to_string()
    }

    #[test]
    fn cert_and_key_go_together_and_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = http();
        h.tls_cert_file = Some(dir.path().join("cert.pem"));
        assert!(err(&h).contains("`http.tls_key_file`"), "{}", err(&h));
        h.tls_key_file = Some(dir.path().join("key.pem"));
        h.tls_cert_file = None;
        assert!(err(&h).contains("`http.tls_cert_file`"), "{}", err(&h));
        h.tls_cert_file = Some(dir.path().join("cert.pem"));
        // Missing files: the message names the key and the file.
        let e = err(&h);
        assert!(
            e.contains("`http.tls_cert_file`") && e.contains("cert.pem"),
            "{e}"
        );
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        let e = err(&h);
        assert!(
            e.contains("`http.tls_key_file`") && e.contains("key.pem"),
            "{e}"
        );
        // A certificate where the key should be is not a key.
        std::fs::write(dir.path().join("key.pem"), ck.cert.pem()).unwrap();
        let e = err(&h);
        assert!(
            e.contains("`http.tls_key_file`") && e.contains("private key"),
            "{e}"
        );
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        validate(&h).unwrap();
        // A key where the certificate should be.
        std::fs::write(dir.path().join("cert.pem"), ck.key_pair.serialize_pem()).unwrap();
        let e = err(&h);
        assert!(
            e.contains("`http.tls_cert_file`") && e.contains("CERTIFICATE"),
            "{e}"
        );
    }

    #[test]
    fn users_are_checked_by_name() {
        let mut h = http();
        h.basic_auth_users = BTreeMap::from([("alice".into(), HASH.into())]);
        validate(&h).unwrap();
        h.basic_auth_users.insert("bob".into(), "plain-text".into());
        let e = err(&h);
        assert!(e.contains("`http.basic_auth_users.bob`"), "{e}");
        h.basic_auth_users = BTreeMap::from([("a:b".into(), HASH.into())]);
        assert!(err(&h).contains("':'"), "{}", err(&h));
    }

    #[test]
    fn bounds_are_at_least_one() {
        let mut h = http();
        h.auth_max_concurrent_checks = 0;
        assert!(err(&h).contains("http.auth_max_concurrent_checks"));
        let mut h = http();
        h.tls_handshake_timeout_secs = 0;
        assert!(err(&h).contains("http.tls_handshake_timeout_secs"));
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let d = crate::config::Config::from_toml(crate::config::DEFAULT_CONFIG_TOML)
            .unwrap()
            .http;
        let h = http();
        let keys = |h: &HttpConfig| {
            (
                h.tls_cert_file.clone(),
                h.tls_handshake_timeout_secs,
                h.metrics_without_auth,
                h.auth_max_concurrent_checks,
                h.auth_cache_secs,
                h.basic_auth_users.len(),
            )
        };
        assert_eq!(keys(&d), keys(&h));
    }

    #[test]
    fn keys_parse_from_toml() {
        let h: HttpConfig = toml::from_str(&format!(
            "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\nmetrics_without_auth = true\n\
             [basic_auth_users]\nalice = \"{HASH}\"\n"
        ))
        .unwrap();
        assert_eq!(h.basic_auth_users["alice"], HASH);
        assert!(h.metrics_without_auth);
        assert_eq!(h.tls_key_file.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(h.auth_cache_secs, DEFAULT_AUTH_CACHE_SECS);
    }
}
