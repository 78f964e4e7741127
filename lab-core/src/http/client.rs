//! The lab's one HTTP client stack: hyper 1 (HTTP/1.1) over TCP, optionally with a PROXY v2
//! header first, a `CONNECT` tunnel through an explicit proxy, and TLS verified against the lab
//! CA (never accept-any-certificate between our own processes). Chunked and length-delimited
//! bodies are hyper's business, not ours.
//!
//! A connection is built in the order the wire sees it ([`Route`], [`connect`]):
//! 1. TCP to the real socket ([`Route::addr`]; the lab map turns lab addresses into real ones
//!    before this point), `TCP_NODELAY`;
//! 2. a PROXY v2 header ([`Route::proxy_header`]) — how the lab carries an endpoint's lab source
//!    address on loopback; a source port of 0 is replaced by the connection's local port;
//! 3. `CONNECT authority` ([`Route::tunnel`]) through an explicit proxy; a refusal (a block
//!    page, an error) is [`ClientError::TunnelRefused`] with the proxy's whole answer;
//! 4. TLS ([`Route::tls`]): SNI and certificate verification against the given name.
//!
//! Two ways to send:
//! - [`send`]: one connection, one request, the whole answer read (tests, tools, a fetch through
//!   the FortiGate proxy as an endpoint — every request its own firewall session, as there);
//! - [`Client`]: HTTP/1.1 keep-alive pooling per `scheme://host:port` (hyper-util's client),
//!   for a device that asks the same server again and again (the FortiGate's lab DNS and
//!   FortiGuard rating lookups).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{encode_v2, ProxyHeader};

/// Largest response body read unless a request says otherwise.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// Time limit of a whole exchange (connect, tunnel, TLS, request, body) unless a request says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sending the PROXY header: {0}")]
    ProxyHeader(std::io::Error),
    #[error("bad TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] crate::tls::TlsError),
    #[error("TLS with {name}: {source}")]
    Tls {
        name: String,
        source: std::io::Error,
    },
    /// The explicit proxy answered the `CONNECT` with something else than 2xx.
    #[error("the proxy refused the tunnel: HTTP {}", .0.status)]
    TunnelRefused(Box<Response>),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP: {0}")]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The byte stream a request goes over (TCP, TLS over TCP, TLS over a tunnel).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// TLS to the server: the client configuration (lab CA roots, optionally a client
/// certificate) and the name to verify (sent as SNI when it is a DNS name).
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

/// A `CONNECT` tunnel through an explicit proxy.
#[derive(Clone, Debug)]
pub struct Tunnel {
    /// `host:port` asked of the proxy (also its `Host` header).
    pub authority: String,
    /// More headers of the `CONNECT` request (`User-Agent`).
    pub headers: Vec<(String, String)>,
}

/// How to reach a server (see the module documentation for the order on the wire).
#[derive(Clone)]
pub struct Route {
    /// The real socket to connect to (the proxy's when tunnelling).
    pub addr: SocketAddr,
    /// Sent first; a source port of 0 becomes the connection's local port.
    pub proxy_header: Option<ProxyHeader>,
    pub tunnel: Option<Tunnel>,
    pub tls: Option<Tls>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("addr", &self.addr)
            .field("proxy_header", &self.proxy_header)
            .field("tunnel", &self.tunnel)
            .field("tls", &self.tls.as_ref().map(|t| &t.server_name))
            .finish()
    }
}

impl Route {
    /// Plain TCP to `addr`.
    pub fn to(addr: SocketAddr) -> Self {
        Self {
            addr,
            proxy_header: None,
            tunnel: None,
            tls: None,
        }
    }

    /// This route with TLS, verifying `server_name` against `config`'s roots.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>, server_name: &str) -> Self {
        self.tls = Some(Tls {
            config,
            server_name: server_name.trim_matches(['[', ']']).to_string(),
        });
        self
    }

    /// This route with TLS when `config` is given.
    pub fn maybe_tls(self, config: Option<Arc<rustls::ClientConfig>>, server_name: &str) -> Self {
        match config {
            Some(c) => self.tls(c, server_name),
            None => self,
        }
    }

    /// This route sending `header` first.
    pub fn proxy_header(mut self, header: ProxyHeader) -> Self {
        self.proxy_header = Some(header);
        self
    }

    /// This route tunnelling to `authority` (`host:port`) with `CONNECT`.
    pub fn tunnel(mut self, authority: &str, headers: &[(&str, &str)]) -> Self {
        self.tunnel = Some(Tunnel {
            authority: authority.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        self
    }
}

/// One request.
#[derive(Clone)]
pub struct Request {
    pub method: String,
    /// Origin form (`/path?query`), or absolute form for an explicit proxy
    /// (`http://host/path`) and for [`Client`].
    pub target: String,
    /// Sent as given, in order (no `Host` is added: set it, or leave it out on purpose).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Largest body read.
    pub max_body: usize,
    /// Time limit of the whole exchange.
    pub timeout: Duration,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold secrets (tokens, cookies): names only.
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Request {
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// This request with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// This request with a body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// This request with a JSON body (and `Content-Type: application/json`).
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn max_body(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }

    fn to_hyper(&self) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let mut b = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.target.as_str());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (`Set-Cookie`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    async fn read(
        resp: hyper::Response<hyper::body::Incoming>,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| ClientError::Body(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Opens a connection along `route` (TCP, PROXY header, tunnel, TLS), ready for HTTP.
pub async fn connect(route: &Route) -> Result<Box<dyn Io>, ClientError> {
    let tcp = TcpStream::connect(route.addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: route.addr,
            source,
        })?;
    connect_over(route, tcp).await
}

/// [`connect`] on a TCP connection to `route.addr` the caller opened (e.g. from a socket in
/// another network namespace, [`crate::netns::connect`]).
pub async fn connect_over(route: &Route, mut tcp: TcpStream) -> Result<Box<dyn Io>, ClientError> {
    let _ = tcp.set_nodelay(true);
    if let Some(mut h) = route.proxy_header {
        if h.src.port() == 0 {
            h.src
                .set_port(tcp.local_addr().map(|a| a.port()).unwrap_or(0));
        }
        tcp.write_all(&encode_v2(&h))
            .await
            .map_err(ClientError::ProxyHeader)?;
    }
    let io: Box<dyn Io> = match &route.tunnel {
        None => Box::new(tcp),
        Some(t) => Box::new(tunnel(tcp, t).await?),
    };
    match &route.tls {
        None => Ok(io),
        Some(t) => {
            let name = crate::tls::server_name(&t.server_name)
                .map_err(|_| ClientError::ServerName(t.server_name.clone()))?;
            let tls = tokio_rustls::TlsConnector::from(t.config.clone())
                .connect(name, io)
                .await
                .map_err(|source| ClientError::Tls {
                    name: t.server_name.clone(),
                    source,
                })?;
            Ok(Box::new(tls))
        }
    }
}

/// `CONNECT` on `io`; the tunnel once the proxy answers 2xx.
async fn tunnel(
    io: TcpStream,
    t: &Tunnel,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn.with_upgrades());
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(t.authority.as_str())
        .header(hyper::header::HOST, t.authority.as_str());
    for (k, v) in &t.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new()))?)
        .await?;
    if !resp.status().is_success() {
        let r = Response::read(resp, DEFAULT_MAX_BODY).await;
        driver.abort();
        return Err(ClientError::TunnelRefused(Box::new(r?)));
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    Ok(TokioIo::new(upgraded))
}

/// Sends `req` on `io` and reads the whole answer (no time limit of its own).
pub async fn send_on(io: Box<dyn Io>, req: &Request) -> Result<Response, ClientError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req.to_hyper()?).await?;
        Response::read(resp, req.max_body).await
    }
    .await;
    driver.abort();
    result
}

/// One request on a new connection along `route`, the whole answer read, within
/// [`Request::timeout`].
pub async fn send(route: &Route, req: &Request) -> Result<Response, ClientError> {
    tokio::time::timeout(req.timeout, async {
        let io = connect(route).await?;
        send_on(io, req).await
    })
    .await
    .map_err(|_| ClientError::Timeout(req.timeout))?
}

/// [`send`] on a TCP connection to `route.addr` the caller opened.
pub async fn send_over(
    route: &Route,
    tcp: TcpStream,
    req: &Request,
) -> Result<Response, ClientError> {
    tokio::time::timeout(req.timeout, async {
        let io = connect_over(route, tcp).await?;
        send_on(io, req).await
    })
    .await
    .map_err(|_| ClientError::Timeout(req.timeout))?
}

/// A pooling client (HTTP/1.1 keep-alive per `scheme://host:port`): requests carry absolute
/// targets (`https://127.0.0.1:8443/_lab/dns?name=x`); `https` uses the client's TLS
/// configuration with the URL's host as the name to verify; `Host` is set from the URL unless
/// the request has one. Hosts are IP literals or names the system resolves (loopback in the
/// lab). Idle connections are kept [`Client::IDLE`] at most.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// How long an idle pooled connection is kept: below the servers' request head timeout
    /// (20 s by default), so the client, not the server, closes an idle connection.
    pub const IDLE: Duration = Duration::from_secs(15);

    /// A client speaking TLS with `tls` to `https` URLs (plain HTTP only when `None`); it
    /// offers only `http/1.1` by ALPN whatever `tls` offers.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let tls = tls.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        });
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Self::IDLE)
            .pool_max_idle_per_host(8)
            .build(Connector { tls });
        Self { inner }
    }

    /// Sends `req` (absolute target) and reads the whole answer within [`Request::timeout`].
    pub async fn send(&self, req: &Request) -> Result<Response, ClientError> {
        tokio::time::timeout(req.timeout, async {
            let resp = self.inner.request(req.to_hyper()?).await?;
            Response::read(resp, req.max_body).await
        })
        .await
        .map_err(|_| ClientError::Timeout(req.timeout))?
    }

    /// A `GET` of an idempotent resource, tried once more on a fresh connection when the first
    /// attempt failed on a pooled one (a server may close an idle connection just as it is
    /// reused).
    pub async fn get(&self, req: &Request) -> Result<Response, ClientError> {
        match self.send(req).await {
            Err(ClientError::Pooled(e)) if !e.is_connect() => {
                tracing::debug!(error = %e, "retrying a GET on a new connection");
                self.send(req).await
            }
            r => r,
        }
    }
}

/// The pooled client's connector: the URL's host and port, TLS for `https`.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl tower::Service<hyper::Uri> for Connector {
    type Response = Conn;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ClientError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .unwrap_or("")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let addr = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port),
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ClientError::Connect {
                        addr: SocketAddr::from(([0, 0, 0, 0], port)),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("cannot resolve {host}"),
                        ),
                    })?,
            };
            let route = match (https, tls) {
                (true, Some(cfg)) => Route::to(addr).tls(cfg, &host),
                (true, None) => return Err(ClientError::ServerName(host)),
                (false, _) => Route::to(addr),
            };
            Ok(Conn(TokioIo::new(connect(&route).await?)))
        })
    }
}

/// A pooled connection.
struct Conn(TokioIo<Box<dyn Io>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// An HTTPS client for one server of the lab (tests, benchmarks, tools): trusts only the lab
/// CA, optionally presents a lab-CA client certificate (a FortiGate's), sends `Host: addr` and
/// the lab token (when given) on every request; one connection per request.
#[derive(Clone)]
pub struct HttpsClient {
    route: Route,
    /// Sent as `X-Fortilab-Token` on every request (lab surfaces need it).
    lab_token: Option<String>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the token.
        f.debug_struct("HttpsClient")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client for `addr` trusting the CA `ca_pem`, presenting `identity` when given; the
    /// address is the name verified.
    pub fn new(
        ca_pem: &str,
        identity: Option<&crate::tls::DeviceCert>,
        addr: SocketAddr,
    ) -> Result<Self, crate::tls::TlsError> {
        let mut cfg = (*crate::tls::client_config_from_pem(ca_pem, identity)?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsClient {
            route: Route::to(addr).tls(Arc::new(cfg), &addr.ip().to_string()),
            lab_token: None,
        })
    }

    /// This client with the lab token, sent on every request (`X-Fortilab-Token`).
    pub fn with_lab_token(mut self, token: &str) -> Self {
        self.lab_token = Some(token.to_string());
        self
    }

    /// Sends one request (`path` in origin form) with `headers` and `body`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let mut req = Request::new(method, path).header("host", &self.route.addr.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(t) = &self.lab_token {
            req = req.header(crate::secrets::LAB_TOKEN_HEADER, t);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        send(&self.route, &req).await
    }

    /// Sends a JSON body (or none) and returns the reply.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.request(method, path, &[("content-type", "application/json")], bytes)
            .await
    }
}

/// Opens a TLS connection to `addr` (lab CA given as PEM, the address as the name to verify),
/// writes `bytes`, and returns everything the server sends until it closes or `wait` passes
/// without data. For tests of non-HTTP TLS protocols and of garbage input.
pub async fn tls_exchange(
    addr: SocketAddr,
    ca_pem: &str,
    bytes: &[u8],
    wait: Duration,
) -> Result<Vec<u8>, ClientError> {
    use tokio::io::AsyncReadExt;
    let cfg = crate::tls::client_config_from_pem(ca_pem, None)?;
    let mut io = connect(&Route::to(addr).tls(cfg, &addr.ip().to_string())).await?;
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    write.await.map_err(|e| ClientError::Body(e.to_string()))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Reads one request head (after an optional PROXY header) and answers `answer`.
    async fn one_shot_server(
        l: TcpListener,
        answer: &'static [u8],
    ) -> (Option<ProxyHeader>, String) {
        let (mut s, _) = l.accept().await.unwrap();
        let hdr = crate::proxy::read_header(&mut s, Duration::from_secs(2))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut c = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut c).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&c[..n]);
        }
        s.write_all(answer).await.unwrap();
        (hdr, String::from_utf8(buf).unwrap())
    }

    #[tokio::test]
    async fn proxy_header_absolute_form_and_chunked_body() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(one_shot_server(
            l,
            b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        ));
        let route = Route::to(addr).proxy_header(ProxyHeader {
            src: "10.115.2.52:0".parse().unwrap(),
            dst: "10.115.2.1:8080".parse().unwrap(),
        });
        let r = send(
            &route,
            &Request::get("http://www.eicar.org/x").header("host", "www.eicar.org"),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abc"[..]));
        assert_eq!(r.header("X-a"), Some("1"));
        let (hdr, head) = srv.await.unwrap();
        let hdr = hdr.unwrap();
        assert_eq!(hdr.src.ip().to_string(), "10.115.2.52");
        assert_ne!(hdr.src.port(), 0, "port 0 becomes the local port");
        assert!(
            head.starts_with("GET http://www.eicar.org/x HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: www.eicar.org\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_refused_tunnel_carries_the_answer() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(one_shot_server(
            l,
            b"HTTP/1.1 403 Forbidden\r\nX-Fortilab-Blocked: fortigate\r\nContent-Length: 7\r\nConnection: close\r\n\r\nblocked",
        ));
        let ca = crate::LabCa::generate("t").unwrap();
        let route = Route::to(addr)
            .tunnel("www.example.com:443", &[("user-agent", "FortiClient")])
            .tls(
                crate::tls::client_config(&ca, None).unwrap(),
                "www.example.com",
            );
        let e = send(&route, &Request::get("/")).await.unwrap_err();
        let ClientError::TunnelRefused(r) = e else {
            panic!("{e}")
        };
        assert_eq!(r.status, 403);
        assert_eq!(r.header("x-fortilab-blocked"), Some("fortigate"));
        assert_eq!(r.body, b"blocked");
        let (_, head) = srv.await.unwrap();
        assert!(
            head.starts_with("CONNECT www.example.com:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("user-agent: FortiClient\r\n"), "{head}");
    }

    /// A lab-CA HTTPS server (axum through [`crate::http`]) reached through a tunnel, with the
    /// certificate verified; another CA's client is refused; the pooled client reuses one
    /// connection.
    #[tokio::test]
    async fn tls_through_a_tunnel_and_pooled_keep_alive() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ca = crate::LabCa::generate("t").unwrap();
        let cert = ca.issue_exact("site", &[]).unwrap();
        let server_cfg = crate::tls::server_config(
            &ca,
            &cert,
            crate::tls::ClientAuth::None,
            &[b"http/1.1".as_slice()],
        )
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let site = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                seen.fetch_add(1, Ordering::SeqCst);
                let acc = tokio_rustls::TlsAcceptor::from(server_cfg.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acc.accept(s).await else { return };
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let body = format!("hello {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        // A tunnelling proxy: answers CONNECT with 200 and splices to the site.
        let pl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = pl.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = pl.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut c = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut c).await.unwrap();
                buf.push(c[0]);
            }
            s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let mut up = TcpStream::connect(site).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
        });
        let cfg = crate::tls::client_config(&ca, None).unwrap();
        let route = Route::to(proxy)
            .tunnel(&format!("localhost:{}", site.port()), &[])
            .tls(cfg.clone(), "localhost");
        let r = send(&route, &Request::get("/t").header("host", "localhost"))
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello /t"));

        let other = crate::LabCa::generate("other").unwrap();
        let bad = Route::to(site).tls(
            crate::tls::client_config(&other, None).unwrap(),
            "localhost",
        );
        assert!(matches!(
            send(&bad, &Request::get("/")).await,
            Err(ClientError::Tls { .. })
        ));

        let before = conns.load(Ordering::SeqCst);
        let client = Client::new(Some(cfg));
        for i in 0..3 {
            let r = client
                .get(&Request::get(&format!(
                    "https://127.0.0.1:{}/{i}",
                    site.port()
                )))
                .await
                .unwrap();
            assert_eq!(r.text(), format!("hello /{i}"));
            // The connection goes back to the pool from a task of its own.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            conns.load(Ordering::SeqCst) - before,
            1,
            "one pooled connection"
        );
    }
}
