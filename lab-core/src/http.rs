//! Serving an axum router over HTTPS (lab CA) or plain HTTP, with graceful drain; the lab's one
//! HTTP client stack is [`client`].
//!
//! The device library binds its own listeners (port 0 in tests) and hands them here. Each
//! connection's peer address and, when the client presented one, its certificate CN reach the
//! handlers as the [`ConnInfo`] extension.
//!
//! Two guards apply to every server of the lab, whatever its router holds ([`HttpOptions`]):
//! - **the lab token**: a request whose path has a `_lab` segment (`/_lab/health`,
//!   `/endpoints/PC-52/_lab/fetch`, also percent-encoded) is answered `401` with a JSON error
//!   unless it carries `X-Fortilab-Token: <lab token>`. The check runs before routing, so a
//!   lab route added later cannot forget it. Vendor routes keep the vendors' own authentication.
//! - **the request head timeout**: a connection that has not sent a complete HTTP/1 request head
//!   within [`HttpOptions::header_read_timeout`] (default [`DEFAULT_HEADER_READ_TIMEOUT`]) is
//!   closed, as the products' Apache-derived web servers do (`mod_reqtimeout`); TLS handshakes
//!   get [`TLS_HANDSHAKE_TIMEOUT`]. HTTP/2 (by ALPN only) pings an idle peer and closes the
//!   connection when the ping goes unanswered.

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::secrets::{LabToken, LAB_TOKEN_HEADER};
use crate::supervise::{panic_message, Supervisor};

/// How long a client may take to send a complete request head (Apache's `mod_reqtimeout`
/// default for the header phase is 20 s, extended to 40 s while data trickles in; the products'
/// web servers derive from it) [P].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that overrides the request head timeout (seconds, fractions
/// allowed), for tests and for labs on slow links; the `--http-header-timeout` flag wins.
pub const HEADER_TIMEOUT_ENV: &str = "FORTILAB_HTTP_HEADER_TIMEOUT";

/// What every HTTP server of the lab enforces (see the module documentation).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The token every `/_lab/` request must carry.
    pub lab_token: LabToken,
    /// Connections that do not complete a request head within this are closed.
    pub header_read_timeout: Duration,
    /// Where a request whose handler panics is reported (it is answered `500`); its counters
    /// are served at `/_lab/tasks`.
    pub supervisor: Supervisor,
}

impl HttpOptions {
    /// The defaults with `lab_token`.
    pub fn new(lab_token: LabToken) -> Self {
        Self {
            lab_token,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            supervisor: Supervisor::default(),
        }
    }

    /// These options reporting handler panics to `supervisor`.
    pub fn with_supervisor(mut self, supervisor: Supervisor) -> Self {
        self.supervisor = supervisor;
        self
    }

    /// Options for tests and in-process use: a fresh random lab token.
    pub fn for_tests() -> Self {
        Self::new(LabToken::generate())
    }

    /// The defaults with `lab_token`, the head timeout from [`HEADER_TIMEOUT_ENV`] when set.
    pub fn from_env(lab_token: LabToken) -> Result<Self, String> {
        let mut o = Self::new(lab_token);
        if let Some(t) = header_timeout_from_env()? {
            o.header_read_timeout = t;
        }
        Ok(o)
    }
}

/// The request head timeout [`HEADER_TIMEOUT_ENV`] asks for (`None` when unset).
pub fn header_timeout_from_env() -> Result<Option<Duration>, String> {
    match std::env::var(HEADER_TIMEOUT_ENV) {
        Ok(v) => parse_timeout(&v)
            .map(Some)
            .map_err(|e| format!("{HEADER_TIMEOUT_ENV}={v}: {e}")),
        Err(_) => Ok(None),
    }
}

/// A positive number of seconds (fractions allowed).
pub fn parse_timeout(v: &str) -> Result<Duration, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err("not a positive number of seconds".into()),
    }
}

/// Whether `path` addresses a lab surface: one of its segments (percent-decoded) is `_lab`.
pub fn is_lab_path(path: &str) -> bool {
    path.split('/')
        .any(|seg| percent_decode(seg).eq_ignore_ascii_case("_lab"))
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to a lab-surface request without the right token (`None`: let it through).
pub fn check_lab_token(
    token: &LabToken,
    headers: &axum::http::HeaderMap,
) -> Option<axum::response::Response> {
    let presented = headers.get(LAB_TOKEN_HEADER).map(|v| v.as_bytes());
    let (error, detail) = match presented {
        Some(p) if token.matches(p) => return None,
        Some(_) => (
            "invalid lab token",
            "the X-Fortilab-Token header does not match this lab's token (lab_token in the ready file)",
        ),
        None => (
            "lab token required",
            "every /_lab/ route needs the header X-Fortilab-Token: <lab_token> (lab_token in the ready file)",
        ),
    };
    Some(unauthorized(error, detail))
}

/// A `401` with a JSON body `{"status": 401, "error", "detail"}`.
pub fn unauthorized(error: &str, detail: &str) -> axum::response::Response {
    let body = serde_json::json!({"status": 401, "error": error, "detail": detail});
    let mut resp = axum::response::Response::new(axum::body::Body::from(body.to_string()));
    *resp.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a handler knows about the connection its request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The real peer socket address.
    pub peer: SocketAddr,
    /// The CN of the client certificate, when the client presented a lab-CA certificate.
    pub client_cn: Option<String>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// How long in-flight requests get to finish after shutdown is requested.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` with TLS until `shutdown` fires, then drains.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    opts: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(tls)),
        app,
        opts,
        shutdown,
    )
    .await
}

/// Serves `app` on `listener` without TLS until `shutdown` fires, then drains.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    opts: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(listener, None, app, opts, shutdown).await
}

/// The HTTP/1 and HTTP/2 connection builders of one server.
struct Builders {
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
}

impl Builders {
    fn new(opts: &HttpOptions) -> Self {
        let mut h1 = Builder::new(TokioExecutor::new()).http1_only();
        h1.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout);
        let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { h1, h2 }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    opts: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builders = Arc::new(Builders::new(&opts));
    let token = opts.lab_token.clone();
    let supervisor = opts.supervisor.clone();
    while let Some((tcp, peer)) = accept_next(&listener, &shutdown, "https").await {
        let app = app.clone();
        let acceptor = acceptor.clone();
        let builders = builders.clone();
        let watcher = graceful.watcher();
        let token = token.clone();
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let client_cn =
                        crate::tls::peer_common_name(tls.get_ref().1.peer_certificates());
                    // The protocol is what ALPN chose (HTTP/1.1 without ALPN); no sniffing, so
                    // a client that sends a few bytes and stalls meets the head timeout.
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let info = ConnInfo {
                        peer,
                        client_cn,
                        tls: true,
                    };
                    let svc = service(app, info, token, supervisor);
                    let builder = if h2 { &builders.h2 } else { &builders.h1 };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let info = ConnInfo {
                        peer,
                        client_cn: None,
                        tls: false,
                    };
                    let svc = service(app, info, token, supervisor);
                    let conn = builders
                        .h1
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    drain(graceful).await;
    Ok(())
}

/// The next connection on `listener` (with TCP_NODELAY), or `None` once `shutdown` fires. A
/// failed accept (EMFILE and friends) is logged as "`what` accept failed" and retried after
/// 50 ms instead of spinning. Every listener of the lab accepts through this.
pub async fn accept_next(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return None,
            res = listener.accept() => match res {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        return Some((tcp, peer));
    }
}

/// Gives the connections `graceful` watches [`DRAIN_GRACE`] to finish (a warning if some are
/// still open after it).
pub async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain grace period");
    }
}

fn service(app: Router, info: ConnInfo, token: LabToken, supervisor: Supervisor) -> AppService {
    AppService {
        app,
        info,
        token,
        supervisor,
    }
}

/// Adapts the axum router to a hyper service, stamping each request with its [`ConnInfo`] and
/// refusing lab-surface requests without the lab token. A handler that panics is answered
/// `500` and reported to the supervisor (`task.panicked`, task `http`); the connection and the
/// listener go on. `GET /_lab/tasks` answers the supervisor's counters on every device.
#[derive(Clone)]
struct AppService {
    app: Router,
    info: ConnInfo,
    token: LabToken,
    supervisor: Supervisor,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for AppService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if is_lab_path(req.uri().path()) {
            if let Some(refused) = check_lab_token(&self.token, req.headers()) {
                tracing::debug!(peer = %self.info.peer, path = %req.uri().path(), "lab request without a valid lab token");
                return Box::pin(async move {
                    // Read (a bounded part of) the body first: an HTTP/2 client still sending
                    // it would otherwise see its stream reset instead of the 401.
                    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        http_body_util::BodyExt::collect(body),
                    )
                    .await;
                    Ok(refused)
                });
            }
        }
        if req.uri().path() == "/_lab/tasks" {
            let supervisor = self.supervisor.clone();
            return Box::pin(async move { Ok(lab_tasks(&supervisor, req).await) });
        }
        req.extensions_mut().insert(self.info.clone());
        let app = self.app.clone();
        let supervisor = self.supervisor.clone();
        let what = format!("{} {}", req.method(), req.uri().path());
        Box::pin(async move {
            let fut = app.oneshot(req.map(axum::body::Body::new));
            match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await {
                Ok(r) => r,
                Err(payload) => {
                    let msg = panic_message(&*payload);
                    supervisor.report_panic("http", &format!("{what}: {msg}"));
                    Ok(internal_error())
                }
            }
        })
    }
}

/// `/_lab/tasks`: `GET` the supervisor's counters; `POST {"panic": "<task>"}` makes that
/// running task panic ([`Supervisor::inject_panic`], fault injection): `404` when no such task
/// runs.
async fn lab_tasks(
    supervisor: &Supervisor,
    req: hyper::Request<hyper::body::Incoming>,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse;
    use serde_json::json;
    if req.method() != Method::POST {
        return axum::Json(supervisor.stats()).into_response();
    }
    let body = http_body_util::Limited::new(req.into_body(), 4096);
    let bytes = match tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::collect(body),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "unreadable body", "status": 400})),
            )
                .into_response()
        }
    };
    let task = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("panic").and_then(|t| t.as_str()).map(str::to_string));
    let Some(task) = task else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "expected {\"panic\": \"<task name>\"}", "status": 400})),
        )
            .into_response();
    };
    if supervisor.inject_panic(&task) {
        axum::Json(json!({"ok": true, "task": task})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": format!("no running restartable task {task:?}"), "status": 404}),
            ),
        )
            .into_response()
    }
}

/// The answer to a request whose handler panicked.
fn internal_error() -> axum::response::Response {
    axum::response::IntoResponse::into_response((
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({"error": "internal error", "status": 500})),
    ))
}

/// Binds `addr` (port 0 allowed) and reports the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_paths_are_recognised_in_any_spelling() {
        for p in [
            "/_lab/health",
            "/_lab",
            "/endpoints/PC-52/_lab/fetch",
            "/%5Flab/config",
            "/%5flab/config",
            "//_lab/config",
            "/_LAB/config",
            "/x/_lab/",
        ] {
            assert!(is_lab_path(p), "{p}");
        }
        for p in [
            "/api/v2/cmdb/firewall/policy",
            "/jsonrpc",
            "/_labx/y",
            "/lab/x",
            "/",
            "%",
        ] {
            assert!(!is_lab_path(p), "{p}");
        }
    }

    async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = token
            .map(|t| format!("{LAB_TOKEN_HEADER}: {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{t}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_500_and_is_counted_and_the_server_goes_on() {
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    let s = "€";
                    s[..1].to_string()
                }),
            )
            .route("/ok", axum::routing::get(|| async { "fine" }));
        let sup = Supervisor::new(None);
        let opts = HttpOptions::new(LabToken::new("tok")).with_supervisor(sup.clone());
        let (l, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_http(l, app, opts, stop.clone()));
        let r = get(addr, "/boom", None).await;
        assert!(r.starts_with("HTTP/1.1 500"), "{r}");
        assert!(r.contains("internal error"), "{r}");
        assert!(get(addr, "/ok", None).await.ends_with("fine"));
        assert_eq!(sup.stats().panicked, 1);
        assert!(sup.stats().tasks["http"]
            .last_panic
            .as_deref()
            .unwrap()
            .starts_with("GET /boom: "));
        assert!(get(addr, "/_lab/tasks", None)
            .await
            .starts_with("HTTP/1.1 401"));
        let t = get(addr, "/_lab/tasks", Some("tok")).await;
        let body: serde_json::Value =
            serde_json::from_str(t.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["panicked"], 1, "{t}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_token_check_answers_401_json_without_or_with_a_wrong_token() {
        let t = LabToken::new("s3cret");
        let mut h = axum::http::HeaderMap::new();
        let r = check_lab_token(&t, &h).expect("refused");
        assert_eq!(r.status(), axum::http::StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["content-type"], "application/json");
        h.insert(LAB_TOKEN_HEADER, "nope".parse().unwrap());
        assert!(check_lab_token(&t, &h).is_some());
        h.insert(LAB_TOKEN_HEADER, "s3cret".parse().unwrap());
        assert!(check_lab_token(&t, &h).is_none());
    }
}
