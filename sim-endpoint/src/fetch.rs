//! Browsing through the FortiGate explicit proxy with the endpoint's lab source address.
//!
//! Each fetch opens a TCP connection to the proxy's real address, sends a PROXY v2 header whose
//! source is the endpoint's lab IP, then either an absolute-form HTTP request (`http://` URLs)
//! or `CONNECT host:port` followed by TLS to the site, verified against the lab CA (`https://`).
//! A FortiGate block page is HTTP 403 with the header `X-Fortilab-Blocked: fortigate` (agreed
//! with the FortiGate twin).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::http::client::{self, ClientError, Request, Route};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Header the FortiGate sets on its block (replacement) page.
pub const BLOCK_HEADER: &str = "x-fortilab-blocked";
/// Largest body read.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Timeout of a whole fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The answer of `POST {control}/_lab/fetch`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FetchResult {
    pub ok: bool,
    pub status: Option<u16>,
    pub blocked_by: Option<&'static str>,
    pub bytes: usize,
    pub sha256: Option<String>,
    pub error: Option<String>,
}

impl FetchResult {
    pub fn failed(error: impl Into<String>) -> Self {
        FetchResult {
            ok: false,
            status: None,
            blocked_by: None,
            bytes: 0,
            sha256: None,
            error: Some(error.into()),
        }
    }

    pub fn quarantined() -> Self {
        FetchResult {
            ok: false,
            status: None,
            blocked_by: Some("quarantine"),
            bytes: 0,
            sha256: None,
            error: Some("the endpoint is quarantined by EMS: only EMS is reachable".into()),
        }
    }

    /// Classifies a response.
    pub fn from_response(status: u16, blocked_header: Option<&str>, body: &[u8]) -> Self {
        let blocked = status == 403
            && blocked_header.is_some_and(|v| v.trim().eq_ignore_ascii_case("fortigate"));
        FetchResult {
            ok: !blocked && (200..400).contains(&status),
            status: Some(status),
            blocked_by: if blocked { Some("fortigate") } else { None },
            bytes: body.len(),
            sha256: Some(hex::encode(Sha256::digest(body))),
            error: None,
        }
    }
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let s = s.trim();
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("unsupported URL {s:?}: use http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err("user information in URLs is not supported".into());
        }
        let default = if https { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("bad IPv6 literal")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
                None => default,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("bad port {p:?}"))?,
                ),
                None => (authority.to_string(), default),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("bad host in {s:?}"));
        }
        Ok(Url {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    pub fn authority(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if (self.https && self.port == 443) || (!self.https && self.port == 80) {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    pub fn absolute(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority(),
            self.path
        )
    }
}

/// Where and how to reach the proxy.
#[derive(Clone)]
pub struct ProxyRoute {
    /// The proxy's lab address (PROXY header destination).
    pub lab: SocketAddr,
    /// Its real socket.
    pub real: SocketAddr,
    /// TLS client configuration for https sites (lab CA).
    pub tls: Arc<rustls::ClientConfig>,
}

/// Fetches `url` through the proxy as the endpoint with lab address `src_ip`.
pub async fn fetch(
    route: &ProxyRoute,
    netns: Option<&fortilab_core::netns::NetNs>,
    src_ip: std::net::IpAddr,
    url: &Url,
    user_agent: &str,
) -> FetchResult {
    match fetch_inner(route, netns, src_ip, url, user_agent).await {
        Ok(r) => r,
        Err(e) => FetchResult::failed(e),
    }
}

/// One connection to the proxy (the lab's one HTTP client, [`fortilab_core::http::client`]):
/// a PROXY v2 header with the endpoint's lab source, then an absolute-form request for
/// `http://`, or `CONNECT` and TLS to the site (lab CA) for `https://`.
async fn fetch_inner(
    route: &ProxyRoute,
    netns: Option<&fortilab_core::netns::NetNs>,
    src_ip: std::net::IpAddr,
    url: &Url,
    ua: &str,
) -> Result<FetchResult, String> {
    let tcp = tokio::time::timeout(
        FETCH_TIMEOUT,
        fortilab_core::netns::connect(netns, route.real),
    )
    .await
    .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))?
    .map_err(|e| format!("cannot reach the proxy {} ({}): {e}", route.lab, route.real))?;
    let mut path = Route::to(route.real).proxy_header(fortilab_core::proxy::ProxyHeader {
        // Port 0: the connection's own local port.
        src: SocketAddr::new(src_ip, 0),
        dst: route.lab,
    });
    let target = if url.https {
        let authority = format!(
            "{}:{}",
            if url.host.contains(':') {
                format!("[{}]", url.host)
            } else {
                url.host.clone()
            },
            url.port
        );
        path = path
            .tunnel(&authority, &[("user-agent", ua)])
            .tls(route.tls.clone(), &url.host);
        url.path.clone()
    } else {
        url.absolute()
    };
    let req = Request::get(&target)
        .header("host", &url.authority())
        .header("user-agent", ua)
        .header("accept", "*/*")
        .max_body(MAX_BODY)
        .timeout(FETCH_TIMEOUT);
    let resp = match client::send_over(&path, tcp, &req).await {
        Ok(r) => r,
        // The proxy refused the tunnel: its block page or error is the answer.
        Err(ClientError::TunnelRefused(r)) => *r,
        Err(ClientError::Connect { source, .. }) => {
            return Err(format!(
                "cannot reach the proxy {} ({}): {source}",
                route.lab, route.real
            ))
        }
        Err(ClientError::Tls { source, .. }) => {
            return Err(format!("TLS to {}: {source}", url.host))
        }
        Err(ClientError::Timeout(t)) => return Err(format!("timed out after {t:?}")),
        Err(e) => return Err(format!("proxy answer: {e}")),
    };
    Ok(FetchResult::from_response(
        resp.status,
        resp.header(BLOCK_HEADER),
        &resp.body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://www.eicar.org/download/eicar.com").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "www.eicar.org", 80, "/download/eicar.com")
        );
        assert_eq!(u.absolute(), "http://www.eicar.org/download/eicar.com");
        let u = Url::parse("https://Example.com:8443?q=1#frag").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "example.com", 8443, "/?q=1")
        );
        assert_eq!(u.authority(), "example.com:8443");
        assert_eq!(Url::parse("http://195.22.28.198").unwrap().path, "/");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://").is_err());
        assert!(Url::parse("http://a:xx/").is_err());
    }

    #[test]
    fn classification() {
        let r = FetchResult::from_response(403, Some("fortigate"), b"blocked");
        assert_eq!(r.blocked_by, Some("fortigate"));
        assert!(!r.ok);
        let r = FetchResult::from_response(403, None, b"");
        assert_eq!(r.blocked_by, None);
        let r = FetchResult::from_response(200, None, b"abc");
        assert!(r.ok);
        assert_eq!(
            r.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(FetchResult::quarantined().blocked_by, Some("quarantine"));
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn sends_proxy_header_and_absolute_form() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let hdr = fortilab_core::proxy::read_header(&mut s, Duration::from_secs(2))
                .await
                .unwrap()
                .unwrap();
            let (line, _) = {
                let mut buf = Vec::new();
                let mut c = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut c).await.unwrap();
                    buf.extend_from_slice(&c[..n]);
                }
                let t = String::from_utf8(buf).unwrap();
                (t.lines().next().unwrap().to_string(), t)
            };
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
                .await
                .unwrap();
            (hdr, line)
        });
        let ca = fortilab_core::LabCa::generate("t").unwrap();
        let route = ProxyRoute {
            lab: "10.115.2.1:8080".parse().unwrap(),
            real,
            tls: fortilab_core::tls::client_config(&ca, None).unwrap(),
        };
        let url = Url::parse("http://www.eicar.org/download/eicar.com").unwrap();
        let r = fetch(
            &route,
            None,
            "10.115.2.52".parse().unwrap(),
            &url,
            "FortiClient",
        )
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.bytes, 3);
        let (hdr, line) = server.await.unwrap();
        assert_eq!(hdr.src.ip().to_string(), "10.115.2.52");
        assert_eq!(hdr.dst, route.lab);
        assert_eq!(line, "GET http://www.eicar.org/download/eicar.com HTTP/1.1");
    }
}
