//! Serving an axum router over HTTPS (lab CA) or plain HTTP, with graceful drain.
//!
//! The device library binds its own listeners (port 0 in tests) and hands them here. Each
//! connection's peer address and, when the client presented one, its certificate CN reach the
//! handlers as the [`ConnInfo`] extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

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
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(tls)),
        app,
        shutdown,
    )
    .await
}

/// Serves `app` on `listener` without TLS until `shutdown` fires, then drains.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(listener, None, app, shutdown).await
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(Builder::new(TokioExecutor::new()));
    while let Some((tcp, peer)) = accept_next(&listener, &shutdown, "https").await {
        let app = app.clone();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
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
                    let info = ConnInfo {
                        peer,
                        client_cn,
                        tls: true,
                    };
                    let svc = service(app, info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let info = ConnInfo {
                        peer,
                        client_cn: None,
                        tls: false,
                    };
                    let svc = service(app, info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
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

fn service(app: Router, info: ConnInfo) -> AppService {
    AppService { app, info }
}

/// Adapts the axum router to a hyper service, stamping each request with its [`ConnInfo`].
#[derive(Clone)]
struct AppService {
    app: Router,
    info: ConnInfo,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for AppService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        let app = self.app.clone();
        Box::pin(async move { app.oneshot(req.map(axum::body::Body::new)).await })
    }
}

/// Binds `addr` (port 0 allowed) and reports the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
