//! The automation engine's HTTP calls (EMS connector, webhook actions) over the lab's one HTTP
//! client ([`fortilab_core::http::client`]): one connection per request, HTTPS verified against
//! the lab CA only (optionally presenting the FortiGate's certificate), lab addresses resolved
//! through the lab map by the caller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::http::client::{self, ClientError, Request, Route};

/// How to reach a server.
#[derive(Clone)]
pub struct Target {
    /// The real socket to connect to.
    pub addr: SocketAddr,
    /// The `Host` header / TLS server name (the lab address or name as configured).
    pub host: String,
    /// `Some` for HTTPS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TLS client configuration trusting only the lab CA (PEM), presenting `identity`.
pub fn tls_config(
    ca_pem: &str,
    identity: Option<&fortilab_core::tls::DeviceCert>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let cfg =
        fortilab_core::tls::client_config_from_pem(ca_pem, identity).map_err(|e| e.to_string())?;
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Sends one request and reads the whole reply within `timeout` (real time), over the lab's
/// one HTTP client ([`fortilab_core::http::client`]): a new connection per request.
pub async fn request(
    target: &Target,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Reply, String> {
    // The name to verify: the host without a port (`10.115.1.60:8443`, `[::1]:443`).
    let name = target
        .host
        .rsplit_once(':')
        .filter(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
        .map(|(h, _)| h)
        .unwrap_or(&target.host)
        .trim_matches(['[', ']']);
    let route = Route::to(target.addr).maybe_tls(target.tls.clone(), name);
    let mut req = Request::new(
        method,
        if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        },
    )
    .header("host", &target.host)
    .header("user-agent", "FortiGate autod")
    .timeout(timeout);
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k, v);
    }
    if let Some(b) = body {
        if !has_ct {
            req = req.header("content-type", "application/json");
        }
        req = req.body(b);
    }
    let host = &target.host;
    match client::send(&route, &req).await {
        Ok(r) => Ok(Reply {
            status: r.status,
            body: r.body,
        }),
        Err(ClientError::Timeout(t)) => Err(format!("no answer from {host} within {t:?}")),
        Err(ClientError::Connect { source, .. }) => {
            Err(format!("connect to {host} ({}): {source}", target.addr))
        }
        Err(ClientError::Tls { source, .. }) => Err(format!("TLS with {host}: {source}")),
        Err(ClientError::Body(e)) => Err(format!("reading the reply of {host}: {e}")),
        Err(e) => Err(format!("request to {host}: {e}")),
    }
}

/// A webhook `uri` (`host[:port]/path`, optionally with a scheme) split into
/// (https?, host, port, path). `protocol`/`port` from the action apply unless the URI says
/// otherwise.
pub fn split_uri(
    uri: &str,
    protocol: &str,
    port: u16,
) -> Result<(bool, String, u16, String), String> {
    let mut https = protocol.eq_ignore_ascii_case("https");
    let mut rest = uri.trim();
    if let Some(r) = rest.strip_prefix("https://") {
        https = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix("http://") {
        https = false;
        rest = r;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no server in the URI \"{uri}\""));
    }
    let (host, uri_port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("bad address in \"{uri}\""))?;
        (h.to_string(), tail.strip_prefix(':').map(str::to_string))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (authority.to_string(), None),
        }
    };
    let default = if https { 443 } else { 80 };
    let p = match (port, uri_port) {
        (p, _) if p != 0 => p,
        (_, Some(p)) => p
            .parse()
            .map_err(|_| format!("bad port in the URI \"{uri}\""))?,
        _ => default,
    };
    Ok((https, host, p, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_webhook_uris() {
        assert_eq!(
            split_uri("10.115.1.50/hook?a=1", "http", 0).unwrap(),
            (false, "10.115.1.50".into(), 80, "/hook?a=1".into())
        );
        assert_eq!(
            split_uri("10.115.1.50:8080/hook", "http", 0).unwrap(),
            (false, "10.115.1.50".into(), 8080, "/hook".into())
        );
        assert_eq!(
            split_uri("10.115.1.50:8080/hook", "https", 9443).unwrap(),
            (true, "10.115.1.50".into(), 9443, "/hook".into())
        );
        assert_eq!(
            split_uri("https://hooks.example.com", "http", 0).unwrap(),
            (true, "hooks.example.com".into(), 443, "/".into())
        );
        assert!(split_uri("/path-only", "http", 0).is_err());
    }

    #[tokio::test]
    async fn plain_http_round_trip() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    if text[i + 4..].len() >= 7 {
                        break;
                    }
                }
            }
            s.write_all(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let t = Target {
            addr,
            host: "10.115.1.50".into(),
            tls: None,
        };
        let r = request(
            &t,
            "put",
            "/x",
            &[("X-A".into(), "b".into())],
            Some(b"{\"a\":1}".to_vec()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.text(), "ok");
        let req = server.await.unwrap();
        assert!(req.starts_with("PUT /x HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("host: 10.115.1.50"));
        assert!(req.to_ascii_lowercase().contains("x-a: b"));
        assert!(req.ends_with("{\"a\":1}"));
    }
}
