//! Securing the HTTP port: what start-up wires ([`Security`]) and what
//! `/metrics` shows of it ([`SecurityCounters`]). TLS is [`tls`](super::tls),
//! basic authentication [`auth`](super::auth).

use super::HttpLimits;
use super::auth::BasicAuth;
use super::tls::{Tls, TlsError};
use crate::config::HttpConfig;
use crate::diag::{self, Event, Level, LogAs};
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// Authentication and certificate-reload outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct SecurityCounters {
    /// Requests let through by a remembered verification.
    pub(super) auth_cached: AtomicU64,
    /// Requests let through after a bcrypt verification.
    pub(super) auth_verified: AtomicU64,
    /// `401`: no (or a malformed) `Authorization: Basic` header.
    pub(super) auth_missing: AtomicU64,
    /// `401`: unknown user or wrong password.
    pub(super) auth_denied: AtomicU64,
    /// `503`: every bcrypt slot busy for the whole wait.
    pub(super) auth_busy: AtomicU64,
    /// Certificate reloads (SIGHUP) that took effect.
    tls_reload_ok: AtomicU64,
    /// Certificate reloads refused (the old certificate kept).
    tls_reload_failed: AtomicU64,
}

impl SecurityCounters {
    /// `ganglion_http_auth_total{result}` and
    /// `ganglion_http_tls_reloads_total{result}`.
    pub fn labelled(&self) -> Vec<crate::telemetry::LabelledCounter> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "ganglion_http_auth_total",
                "HTTP basic-auth checks by result (cached and verified let the request through)",
                "result",
                vec![
                    ("cached", g(&self.auth_cached)),
                    ("verified", g(&self.auth_verified)),
                    ("missing", g(&self.auth_missing)),
                    ("denied", g(&self.auth_denied)),
                    ("busy", g(&self.auth_busy)),
                ],
            ),
            (
                "ganglion_http_tls_reloads_total",
                "TLS certificate reloads on SIGHUP by result (failed: the old certificate is kept)",
                "result",
                vec![
                    ("ok", g(&self.tls_reload_ok)),
                    ("failed", g(&self.tls_reload_failed)),
                ],
            ),
        ]
    }

    /// Counts and logs one reload.
    pub(super) fn tls_reloaded(&self, r: &Result<(), TlsError>, cert_file: &std::path::Path) {
        match r {
            Ok(()) => diag::emit_rare(TlsReloaded { cert_file }, self),
            Err(error) => diag::emit_rare(TlsReloadFailed { error }, self),
        };
    }
}

/// SIGHUP: the certificate was reloaded
/// (`ganglion_http_tls_reloads_total{result="ok"}`).
struct TlsReloaded<'a> {
    cert_file: &'a std::path::Path,
}

impl Event for TlsReloaded<'_> {
    type Counters = SecurityCounters;
    type Key = ();
    const LEVEL: Level = Level::INFO;

    fn count(&self, c: &SecurityCounters) {
        diag::inc(&c.tls_reload_ok);
    }

    fn log_as(&self) -> LogAs<()> {
        LogAs::Always
    }

    fn log(&self, _: &SecurityCounters) {
        diag::line!(
            Self::LEVEL,
            cert = %self.cert_file.display(),
            "SIGHUP: TLS certificate reloaded; new connections get it"
        );
    }
}

/// SIGHUP: the new pair did not load; the old certificate stays
/// (`ganglion_http_tls_reloads_total{result="failed"}`).
struct TlsReloadFailed<'a> {
    error: &'a TlsError,
}

impl Event for TlsReloadFailed<'_> {
    type Counters = SecurityCounters;
    type Key = ();
    const LEVEL: Level = Level::ERROR;

    fn count(&self, c: &SecurityCounters) {
        diag::inc(&c.tls_reload_failed);
    }

    fn log_as(&self) -> LogAs<()> {
        LogAs::Always
    }

    fn log(&self, _: &SecurityCounters) {
        diag::line!(
            Self::LEVEL,
            error = %self.error,
            "SIGHUP: TLS certificate not reloaded; the previous one stays in service"
        );
    }
}

/// TLS and authentication of one HTTP listener, as configured.
pub struct Security {
    /// `Some` when `http.tls_cert_file` is set.
    pub tls: Option<Arc<Tls>>,
    /// `Some` when `[http.basic_auth_users]` has users.
    pub auth: Option<Arc<BasicAuth>>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Security {
    /// Loads the certificate (an error names the key) and the users. Takes
    /// the SIGHUP stream now, so no reload request is lost — and taken even
    /// without TLS, so `systemctl reload` (SIGHUP) never ends the process
    /// whose default action it would be. Must run inside the runtime.
    pub fn new(c: &HttpConfig, limits: &Arc<HttpLimits>) -> Result<Security, TlsError> {
        let tls = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(Tls::new(cert, key)?),
            _ => None,
        };
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| TlsError::File {
                key: "http.tls_cert_file",
                message: format!("cannot watch SIGHUP for reloads: {e}"),
            })?;
        let auth = BasicAuth::new(c, limits.clone());
        Ok(Security {
            tls,
            auth,
            hangup: Some(hangup),
        })
    }

    /// `router` behind basic authentication, when users are configured.
    pub fn protect(&self, router: Router) -> Router {
        match &self.auth {
            Some(a) => a.protect(router),
            None => router,
        }
    }

    /// The task that reloads the certificate on every SIGHUP until
    /// `shutdown` (without TLS it only takes the signal). `None` once taken.
    pub fn reload_task(
        &mut self,
        limits: Arc<HttpLimits>,
        shutdown: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let tls = self.tls.clone();
        let mut hangup = self.hangup.take()?;
        Some(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = hangup.recv() => if s.is_none() { return },
                }
                match &tls {
                    Some(t) => t.reload_logged(&limits).await,
                    None => {
                        tracing::debug!("SIGHUP: no TLS certificate to reload on the HTTP port")
                    }
                }
            }
        })
    }
}
