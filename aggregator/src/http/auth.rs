//! HTTP basic authentication, Prometheus' web-config convention:
//! `[http.basic_auth_users]` maps a user name to a bcrypt hash; when any user
//! is set every route needs `Authorization: Basic …` (`401` with
//! `WWW-Authenticate: Basic realm="ganglion"` otherwise), except `/metrics`
//! and `/metrics/*` with `http.metrics_without_auth = true`.
//!
//! bcrypt is slow on purpose (50–250 ms of a core at usual costs), so:
//! - A verified user and password are remembered for `http.auth_cache_secs`
//!   in a map of at most [`CACHE_CAPACITY`] entries, keyed by an HMAC-SHA256
//!   of `user NUL password` under a key drawn at start: a dashboard's burst
//!   of requests costs one bcrypt, and the map holds nothing an attacker
//!   could test guesses against offline. Failures are not remembered.
//! - At most `http.auth_max_concurrent_checks` bcrypt runs at once, on the
//!   blocking pool (never on the async workers); a request that finds no
//!   slot within [`BUSY_WAIT`] gets `503` with
//!   `Retry-After`, so a password-guessing flood costs at most that many
//!   cores while remembered users keep getting in. The slot is held by the
//!   bcrypt run itself, so clients that hang up cannot stack more runs.
//! - A request that waited for a slot looks in the map again first: the
//!   dashboard's parallel requests wait for the first one's check instead
//!   of each running their own.
//! - An unknown user is checked against the costliest configured hash and
//!   refused whatever the result, so timing does not tell which names exist;
//!   bcrypt compares its output in constant time.
//!
//! A request that passes carries [`Authenticated`] (the user) in its
//! extensions: `POST /api/flush` accepts it in place of a trusted address.

use super::{BUSY_RETRY_SECS, BUSY_WAIT, HttpLimits, error, retry_after};
use crate::config::HttpConfig;
use crate::diag::{self, Diag, Event, Level, LogAs};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Verified credentials remembered at most (each entry is 32 bytes and a
/// time): a fixed bound however many users or guesses there are.
pub const CACHE_CAPACITY: usize = 1024;

/// The `WWW-Authenticate` challenge.
pub const CHALLENGE: &str = "Basic realm=\"ganglion\"";

/// Longest `Authorization` header value looked at; a longer one is refused
/// without decoding (user and password fit easily).
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// How often failed logins from one address are logged.
const DENIED_LOG_EVERY: Duration = Duration::from_secs(60);

/// The user a request authenticated as (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub String);

/// The outcome of one check.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok(String),
    Missing,
    Denied(String),
    Busy,
}

/// Remembered verifications: HMAC tag → expiry.
struct Cache {
    map: HashMap<[u8; 32], Instant>,
}

impl Cache {
    fn hit(&mut self, tag: &[u8; 32], now: Instant) -> bool {
        match self.map.get(tag) {
            Some(exp) if *exp > now => true,
            Some(_) => {
                self.map.remove(tag);
                false
            }
            None => false,
        }
    }

    /// Remembers `tag` until `exp`; when full, expired entries go first,
    /// then the one closest to expiry.
    fn insert(&mut self, tag: [u8; 32], exp: Instant, now: Instant) {
        if self.map.len() >= CACHE_CAPACITY && !self.map.contains_key(&tag) {
            self.map.retain(|_, e| *e > now);
            if self.map.len() >= CACHE_CAPACITY
                && let Some(oldest) = self.map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(tag, exp);
    }
}

/// The users and the bounds on checking them.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// The hash an unknown user is checked against.
    decoy: String,
    metrics_open: bool,
    checks: Arc<Semaphore>,
    max_checks: usize,
    ttl: Duration,
    mac: ring::hmac::Key,
    cache: Mutex<Cache>,
    limits: Arc<HttpLimits>,
    diag: Diag<IpAddr>,
}

/// `401` for a wrong user or password (`ganglion_http_auth_total{result="denied"}`),
/// logged once a minute per client address.
struct Denied<'a> {
    ip: Option<IpAddr>,
    user: &'a str,
}

impl Event for Denied<'_> {
    type Counters = HttpLimits;
    type Key = IpAddr;
    const LEVEL: Level = Level::WARN;

    fn count(&self, l: &HttpLimits) {
        diag::inc(&l.security.auth_denied);
    }

    fn log_as(&self) -> LogAs<IpAddr> {
        self.ip.map_or(LogAs::Skip, LogAs::PerKey)
    }

    fn log(&self, _: &HttpLimits) {
        if let Some(ip) = self.ip {
            diag::line!(
                Self::LEVEL,
                %ip,
                user = %self.user.escape_debug(),
                "HTTP authentication failed (logged at most once a minute per address)"
            );
        }
    }
}

impl BasicAuth {
    /// `None` when no user is configured (the port is open, as before).
    pub fn new(c: &HttpConfig, limits: Arc<HttpLimits>) -> Option<Arc<BasicAuth>> {
        let decoy = c
            .basic_auth_users
            .values()
            .max_by_key(|h| bcrypt_cost(h))?
            .clone();
        let rng = ring::rand::SystemRandom::new();
        let mac = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).ok()?;
        Some(Arc::new(BasicAuth {
            users: c
                .basic_auth_users
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            decoy,
            metrics_open: c.metrics_without_auth,
            checks: Arc::new(Semaphore::new(c.auth_max_concurrent_checks.max(1))),
            max_checks: c.auth_max_concurrent_checks.max(1),
            ttl: Duration::from_secs(u64::from(c.auth_cache_secs)),
            mac,
            cache: Mutex::new(Cache {
                map: HashMap::new(),
            }),
            limits,
            diag: Diag::new(DENIED_LOG_EVERY),
        }))
    }

    /// `router` with every route behind this check.
    pub fn protect(self: &Arc<Self>, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), require))
    }

    /// Whether `path` is left open by `metrics_without_auth`.
    fn open_path(&self, path: &str) -> bool {
        self.metrics_open && (path == "/metrics" || path.starts_with("/metrics/"))
    }

    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.mac);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks one request's credentials (`peer`: its address, for the log).
    async fn check(&self, authorization: Option<&HeaderValue>, peer: Option<IpAddr>) -> Outcome {
        let counters = &self.limits.security;
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            counters.auth_missing.fetch_add(1, Ordering::Relaxed);
            return Outcome::Missing;
        };
        let tag = self.tag(&user, &password);
        if self.cache().hit(&tag, Instant::now()) {
            counters.auth_cached.fetch_add(1, Ordering::Relaxed);
            return Outcome::Ok(user);
        }
        let permit =
            match tokio::time::timeout(BUSY_WAIT, self.checks.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    counters.auth_busy.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Busy;
                }
            };
        // Whoever held the slot may have verified these very credentials.
        if self.cache().hit(&tag, Instant::now()) {
            counters.auth_cached.fetch_add(1, Ordering::Relaxed);
            return Outcome::Ok(user);
        }
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.decoy).clone();
        let verified = tokio::task::spawn_blocking(move || {
            let r = bcrypt::verify(&password, &hash).unwrap_or(false);
            drop(permit);
            r
        })
        .await
        .unwrap_or(false);
        if verified && known.is_some() {
            if !self.ttl.is_zero() {
                let now = Instant::now();
                self.cache().insert(tag, now + self.ttl, now);
            }
            counters.auth_verified.fetch_add(1, Ordering::Relaxed);
            Outcome::Ok(user)
        } else {
            self.diag.emit(
                Denied {
                    ip: peer,
                    user: &user,
                },
                &self.limits,
            );
            Outcome::Denied(user)
        }
    }

    /// [`BasicAuth::check`] from no known address (tests).
    #[cfg(test)]
    async fn check_from(&self, authorization: Option<&HeaderValue>) -> Outcome {
        self.check(authorization, None).await
    }

    /// Entries remembered now (tests).
    #[cfg(test)]
    fn cached_len(&self) -> usize {
        self.cache().map.len()
    }
}

/// Cost of a bcrypt hash (`$2b$CC$…`), 0 when unreadable.
fn bcrypt_cost(h: &str) -> u32 {
    h.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// `Basic base64(user:password)` → (user, password bytes).
fn parse_basic(v: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let v = v.as_bytes();
    if v.len() > MAX_AUTHORIZATION_BYTES {
        return None;
    }
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let (user, password) = raw.split_at(colon);
    let user = String::from_utf8(user.to_vec()).ok()?;
    Some((user, password.get(1..)?.to_vec()))
}

/// The middleware: checks the request, or answers `401` / `503`.
async fn require(State(auth): State<Arc<BasicAuth>>, mut req: Request, next: Next) -> Response {
    if auth.open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| crate::state::canonical_ip(c.0.ip()));
    match auth
        .check(req.headers().get(header::AUTHORIZATION), peer)
        .await
    {
        Outcome::Ok(user) => {
            req.extensions_mut().insert(Authenticated(user));
            next.run(req).await
        }
        Outcome::Busy => retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            BUSY_RETRY_SECS,
            &format!(
                "busy: {} password checks are running (http.auth_max_concurrent_checks); retry in {BUSY_RETRY_SECS} s",
                auth.max_checks
            ),
        ),
        Outcome::Missing => unauthorized("authentication required (HTTP basic auth)"),
        Outcome::Denied(_) => unauthorized("wrong user name or password"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use std::collections::BTreeMap;
    use tower::ServiceExt;

    fn config(users: &[(&str, &str)]) -> HttpConfig {
        HttpConfig {
            basic_auth_users: users
                .iter()
                .map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap()))
                .collect::<BTreeMap<_, _>>(),
            ..HttpConfig::default()
        }
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {b}")).unwrap()
    }

    fn auth(c: &HttpConfig) -> Arc<BasicAuth> {
        BasicAuth::new(c, HttpLimits::new(c)).unwrap()
    }

    #[test]
    fn no_users_no_auth() {
        let c = HttpConfig::default();
        assert!(BasicAuth::new(&c, HttpLimits::new(&c)).is_none());
    }

    #[test]
    fn parses_basic_headers() {
        assert_eq!(
            parse_basic(&basic("alice", "pa:ss word")),
            Some(("alice".into(), b"pa:ss word".to_vec()))
        );
        let lower = HeaderValue::from_static("basic YWxpY2U6eA==");
        assert_eq!(parse_basic(&lower), Some(("alice".into(), b"x".to_vec())));
        for bad in [
            "Bearer YWxpY2U6eA==",
            "Basic !!!",
            "Basic YWxpY2U=", // no colon
            "Basic",
        ] {
            assert_eq!(parse_basic(&HeaderValue::from_static(bad)), None, "{bad}");
        }
        let huge = HeaderValue::from_str(&format!("Basic {}", "A".repeat(5000))).unwrap();
        assert_eq!(parse_basic(&huge), None);
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_cached() {
        let c = config(&[("alice", "secret"), ("bob", "hunter2")]);
        let a = auth(&c);
        let s = &a.limits.security;
        let n = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
        assert_eq!(a.check_from(None).await, Outcome::Missing);
        assert_eq!(
            a.check_from(Some(&basic("alice", "wrong"))).await,
            Outcome::Denied("alice".into())
        );
        assert_eq!(
            a.check_from(Some(&basic("mallory", "secret"))).await,
            Outcome::Denied("mallory".into())
        );
        assert_eq!(a.cached_len(), 0, "failures are not remembered");
        assert_eq!(
            a.check_from(Some(&basic("alice", "secret"))).await,
            Outcome::Ok("alice".into())
        );
        assert_eq!(n(&s.auth_verified), 1);
        // The second time comes from the cache: no bcrypt.
        assert_eq!(
            a.check_from(Some(&basic("alice", "secret"))).await,
            Outcome::Ok("alice".into())
        );
        assert_eq!((n(&s.auth_verified), n(&s.auth_cached)), (1, 1));
        // Another user's password is not alice's.
        assert_eq!(
            a.check_from(Some(&basic("alice", "hunter2"))).await,
            Outcome::Denied("alice".into())
        );
        assert_eq!((n(&s.auth_missing), n(&s.auth_denied)), (1, 3));
    }

    #[tokio::test]
    async fn zero_cache_secs_checks_every_time() {
        let mut c = config(&[("alice", "secret")]);
        c.auth_cache_secs = 0;
        let a = auth(&c);
        for _ in 0..2 {
            assert_eq!(
                a.check_from(Some(&basic("alice", "secret"))).await,
                Outcome::Ok("alice".into())
            );
        }
        assert_eq!(a.limits.security.auth_verified.load(Ordering::Relaxed), 2);
        assert_eq!(a.cached_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn saturated_checks_answer_busy() {
        let mut c = config(&[("alice", "secret")]);
        c.auth_max_concurrent_checks = 1;
        let a = auth(&c);
        // Every slot taken (as by a guessing flood): a new check waits
        // BUSY_WAIT (paused clock: at once) and is refused.
        let held = a.checks.clone().acquire_owned().await.unwrap();
        assert_eq!(
            a.check_from(Some(&basic("alice", "x"))).await,
            Outcome::Busy
        );
        assert_eq!(a.limits.security.auth_busy.load(Ordering::Relaxed), 1);
        // A remembered user still gets in while the slots are busy.
        let now = Instant::now();
        let tag = a.tag("alice", b"secret");
        a.cache().insert(tag, now + Duration::from_secs(60), now);
        assert_eq!(
            a.check_from(Some(&basic("alice", "secret"))).await,
            Outcome::Ok("alice".into())
        );
        drop(held);
    }

    #[test]
    fn cache_has_a_fixed_capacity() {
        let mut cache = Cache {
            map: HashMap::new(),
        };
        let now = Instant::now();
        for i in 0..(CACHE_CAPACITY as u32 * 3) {
            let mut tag = [0u8; 32];
            tag[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(tag, now + Duration::from_secs(u64::from(i) + 1), now);
        }
        assert_eq!(cache.map.len(), CACHE_CAPACITY);
        // The newest stayed, the ones closest to expiry went.
        let mut newest = [0u8; 32];
        newest[..4].copy_from_slice(&(CACHE_CAPACITY as u32 * 3 - 1).to_le_bytes());
        assert!(cache.hit(&newest, now));
        assert!(!cache.hit(&[0u8; 32], now));
        // Expired entries are not hits and are dropped when seen.
        assert!(!cache.hit(&newest, now + Duration::from_secs(100_000)));
        assert_eq!(cache.map.len(), CACHE_CAPACITY - 1);
    }

    async fn status(r: &Router, path: &str, auth: Option<HeaderValue>) -> (StatusCode, Response) {
        let mut req = axum::http::Request::get(path);
        if let Some(v) = auth {
            req = req.header(header::AUTHORIZATION, v);
        }
        let resp = r
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (resp.status(), resp)
    }

    #[tokio::test]
    async fn every_route_needs_auth_but_metrics_may_be_open() {
        let mut c = config(&[("alice", "secret")]);
        let routes = || {
            Router::new()
                .route("/", get(|| async { "index" }))
                .route("/metrics", get(|| async { "m" }))
                .route("/metrics/hosts", get(|| async { "mh" }))
                .route("/metricsx", get(|| async { "x" }))
        };
        let r = auth(&c).protect(routes());
        for path in ["/", "/metrics", "/metrics/hosts", "/nope"] {
            let (s, resp) = status(&r, path, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        }
        let (s, _) = status(&r, "/", Some(basic("alice", "secret"))).await;
        assert_eq!(s, StatusCode::OK);
        c.metrics_without_auth = true;
        let r = auth(&c).protect(routes());
        for path in ["/metrics", "/metrics/hosts"] {
            assert_eq!(status(&r, path, None).await.0, StatusCode::OK, "{path}");
        }
        for path in ["/", "/metricsx"] {
            assert_eq!(
                status(&r, path, None).await.0,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
        }
    }
}
