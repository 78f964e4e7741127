//! A small HTTP/1.1 client (plain or TLS, optionally with a PROXY v2 header) for tests and for
//! devices that fetch from the lab Internet. One request per connection (`Connection: close`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::proxy::{self, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request.
#[derive(Clone)]
pub struct Get {
    /// Real socket to connect to.
    pub addr: SocketAddr,
    /// TLS: the client configuration and the server name to verify (and send as SNI when it is
    /// a DNS name).
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// A PROXY v2 header to send first.
    pub proxy: Option<ProxyHeader>,
    /// The `Host` header (omitted when `None`).
    pub host: Option<String>,
    pub path: String,
    pub method: String,
    /// Extra request headers (`X-Fortilab-Token` for the control surface).
    pub headers: Vec<(String, String)>,
}

impl Get {
    pub fn new(addr: SocketAddr, host: &str, path: &str) -> Self {
        Self {
            addr,
            tls: None,
            proxy: None,
            host: Some(host.to_string()),
            path: path.to_string(),
            method: "GET".into(),
            headers: Vec::new(),
        }
    }

    /// This request with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Sends the request and reads the whole response (10 s limit).
pub async fn fetch(req: &Get) -> std::io::Result<Fetched> {
    tokio::time::timeout(Duration::from_secs(10), fetch_inner(req))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))?
}

async fn fetch_inner(req: &Get) -> std::io::Result<Fetched> {
    let mut tcp = TcpStream::connect(req.addr).await?;
    if let Some(h) = &req.proxy {
        tcp.write_all(&proxy::encode_v2(h)).await?;
    }
    match &req.tls {
        None => exchange(tcp, req).await,
        Some((cfg, name)) => {
            let sn = fortilab_core::tls::server_name(name).map_err(|e| bad(e.to_string()))?;
            let s = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(sn, tcp)
                .await?;
            exchange(s, req).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &Get,
) -> std::io::Result<Fetched> {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    if let Some(h) = &req.host {
        head.push_str(&format!("Host: {h}\r\n"));
    }
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("User-Agent: fortilab\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    s.flush().await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify after the body: keep what arrived.
    if let Err(e) = s.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e);
        }
    }
    parse(&raw, req.method == "HEAD")
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked, or to end of stream).
pub fn parse(raw: &[u8], head_only: bool) -> std::io::Result<Fetched> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let text = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let body = if head_only {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            return Err(bad("body shorter than content-length"));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Fetched {
        status,
        headers,
        body,
    })
}

fn dechunk(mut p: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = p
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("bad chunk"))?;
        let size = std::str::from_utf8(&p[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .ok_or_else(|| bad("bad chunk size"))?;
        p = &p[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if p.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&p[..size]);
        p = &p[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = super::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabcdef",
            false,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x")),
            (200, &b"abc"[..], Some("y"))
        );
        let r = super::parse(
            b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abc"[..]));
        assert!(super::parse(b"garbage", false).is_err());
    }
}
