//! The data plane: one HTTP and one HTTPS listener serving every site, chosen by Host header or
//! SNI, else by the destination lab address of a PROXY header.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fortilab_core::events::EventBus;
use fortilab_core::http::{accept_next, drain};
use fortilab_core::labnet::LabMap;
use fortilab_core::proxy;
use fortilab_core::tls::{self, ClientAuth, LabCa};
use fortilab_core::EventKind;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::sites::{eicar, Pick, Site, Sites};

/// How long a new connection may stay silent before it is served without a PROXY header.
const PROXY_WAIT: Duration = Duration::from_secs(2);

/// Certificates: one per site (SANs = its names and lab IP), plus one holding every name.
pub struct TlsSet {
    by_name: HashMap<String, Arc<rustls::ServerConfig>>,
    by_ip: HashMap<IpAddr, Arc<rustls::ServerConfig>>,
    all: Arc<rustls::ServerConfig>,
}

impl TlsSet {
    pub fn new(ca: &LabCa, sites: &Sites) -> Result<Self, tls::TlsError> {
        let alpn: &[&[u8]] = &[b"http/1.1"];
        let mut by_name = HashMap::new();
        let mut by_ip = HashMap::new();
        let mut every = Vec::new();
        for s in sites.all() {
            let mut sans = s.hosts.clone();
            sans.push(s.ip.to_string());
            every.extend(sans.iter().cloned());
            let cert = ca.issue(&s.primary(), &sans)?;
            let cfg = tls::server_config(ca, &cert, ClientAuth::None, alpn)?;
            for h in &s.hosts {
                by_name.insert(crate::sites::normalize_host(h), cfg.clone());
            }
            by_ip.insert(s.ip, cfg);
        }
        let cert = ca.issue("lab-internet", &every)?;
        let all = tls::server_config(ca, &cert, ClientAuth::None, alpn)?;
        Ok(Self {
            by_name,
            by_ip,
            all,
        })
    }

    /// The configuration for a connection: by SNI, else by destination address, else all names.
    pub fn choose(&self, sni: Option<&str>, dst: Option<IpAddr>) -> Arc<rustls::ServerConfig> {
        sni.and_then(|n| self.by_name.get(&crate::sites::normalize_host(n)))
            .or_else(|| dst.and_then(|ip| self.by_ip.get(&ip)))
            .unwrap_or(&self.all)
            .clone()
    }
}

/// What the request handler needs.
pub struct Ctx {
    pub sites: Arc<Sites>,
    pub bus: EventBus,
    pub lab_map: LabMap,
}

/// What is known about one connection.
#[derive(Debug, Clone)]
struct Conn {
    lab_src: SocketAddr,
    dst: Option<IpAddr>,
    sni: Option<String>,
    scheme: &'static str,
}

/// Serves the sites on `listener` (TLS when `tls` is given) until shutdown, then drains.
/// HTTP/1.1 only (the sites' ALPN offers nothing else); a connection that does not complete a
/// request head within `header_read_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsSet>>,
    ctx: Arc<Ctx>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let builder = Arc::new(builder);
    while let Some((tcp, peer)) = accept_next(&listener, &shutdown, "lab Internet").await {
        let (tls, ctx, builder, watcher) = (
            tls.clone(),
            ctx.clone(),
            builder.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            let Some((io, conn)) = open(tcp, peer, tls.as_deref(), &ctx).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ctx, conn) = (ctx.clone(), conn.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    discard_body(body).await;
                    let req = Request::from_parts(parts, ());
                    Ok::<_, std::convert::Infallible>(respond(&ctx, &conn, req))
                }
            });
            match io {
                Io::Plain(tcp) => {
                    let c = builder.serve_connection(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(c.into_owned()).await;
                }
                Io::Tls(s) => {
                    let c = builder.serve_connection(TokioIo::new(*s), svc);
                    let _ = watcher.watch(c.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    drain(graceful).await;
    Ok(())
}

/// The most of a request body a site reads (and throws away) before it answers; past it the
/// answer goes out and the connection closes.
const MAX_DRAIN: u64 = 64 * 1024 * 1024;

/// Reads a request body to its end (up to [`MAX_DRAIN`]) and throws it away, as a web server
/// does with a body its page does not use (nginx discards it): the client's upload completes
/// before the answer and the connection stays usable. Answering first and closing on the
/// unread rest would cut a proxy's upload short.
async fn discard_body(mut body: hyper::body::Incoming) {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    while seen <= MAX_DRAIN {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Reads the PROXY header and does the TLS handshake.
async fn open(
    mut tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsSet>,
    ctx: &Ctx,
) -> Option<(Io, Conn)> {
    let hdr = match proxy::read_header(&mut tcp, PROXY_WAIT).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad PROXY header");
            return None;
        }
    };
    let lab_src = ctx.lab_map.lab_source(hdr.as_ref(), peer);
    // Without a PROXY header the connection's own destination is the site's address (a lab
    // whose sites' addresses are local to the Internet's network namespace).
    let dst = hdr
        .map(|h| h.dst.ip())
        .or_else(|| tcp.local_addr().ok().map(|a| a.ip()));
    let Some(tls) = tls else {
        return Some((
            Io::Plain(tcp),
            Conn {
                lab_src,
                dst,
                sni: None,
                scheme: "http",
            },
        ));
    };
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout(Duration::from_secs(10), acceptor).await {
        Ok(Ok(s)) => s,
        _ => return None,
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    let cfg = tls.choose(sni.as_deref(), dst);
    let stream = match tokio::time::timeout(Duration::from_secs(10), start.into_stream(cfg)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => return None,
    };
    Some((
        Io::Tls(Box::new(stream)),
        Conn {
            lab_src,
            dst,
            sni,
            scheme: "https",
        },
    ))
}

fn respond<B>(ctx: &Ctx, conn: &Conn, req: Request<B>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string));
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut picks = Vec::new();
    if let Some(h) = host.as_deref() {
        picks.push(Pick::Name(h));
    }
    if let Some(s) = conn.sni.as_deref() {
        picks.push(Pick::Name(s));
    }
    if let Some(ip) = conn.dst {
        picks.push(Pick::Addr(ip));
    }
    let site = ctx.sites.pick(&picks);
    let head = req.method() == hyper::Method::HEAD;
    let (resp, bytes) = match site {
        None => simple(
            StatusCode::NOT_FOUND,
            &format!(
                "no site {:?} in the lab Internet\n",
                host.as_deref().or(conn.sni.as_deref()).unwrap_or("")
            ),
        ),
        Some(site) => page_response(site, &path),
    };
    ctx.bus.emit(
        EventKind::HttpRequest,
        serde_json::json!({
            "site": site.map(|s| s.name.clone()),
            "host": host.clone().or(conn.sni.clone()).or(conn.dst.map(|d| d.to_string())),
            "ip": site.map(|s| s.ip.to_string()),
            "method": req.method().as_str(),
            "path": path,
            "scheme": conn.scheme,
            "status": resp.status().as_u16(),
            "bytes": bytes,
            "src": conn.lab_src.ip().to_string(),
            "srcport": conn.lab_src.port(),
            "category": site.map(|s| s.category),
        }),
    );
    if head {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    resp
}

fn simple(status: StatusCode, text: &str) -> (Response<Full<Bytes>>, usize) {
    let body = Bytes::from(text.to_string());
    let n = body.len();
    let resp = Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("server", "fortilab-internet")
        .body(Full::new(body))
        .expect("valid response");
    (resp, n)
}

fn page_response(site: &Site, path: &str) -> (Response<Full<Bytes>>, usize) {
    let Some(page) = site.page(path) else {
        return simple(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    let body = if page.eicar {
        Bytes::from(eicar())
    } else {
        Bytes::from(page.body.clone())
    };
    let n = body.len();
    let mut b = Response::builder()
        .status(StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK))
        .header("content-type", page.content_type.as_str())
        .header("server", "fortilab-internet")
        .header("x-lab-site", site.name.as_str());
    for (k, v) in &page.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    match b.body(Full::new(body)) {
        Ok(r) => (r, n),
        Err(_) => simple(StatusCode::INTERNAL_SERVER_ERROR, "bad page headers\n"),
    }
}
