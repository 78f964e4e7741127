//! A small HTTPS / TLS client that trusts only the lab CA, optionally presenting a lab-CA
//! client certificate (a FortiGate's). Used by tests, benchmarks and tools; one connection per
//! request keeps it simple.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fortilab_core::tls::DeviceCert;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// HTTPS client for one server.
#[derive(Clone)]
pub struct HttpsClient {
    connector: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    /// Sent as `X-Fortilab-Token` on every request (lab surfaces need it).
    lab_token: Option<String>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client for `addr` trusting `ca_pem`, presenting `identity` when given.
    pub fn new(
        ca_pem: &str,
        identity: Option<&DeviceCert>,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let mut cfg = (*fortilab_core::tls::client_config_from_pem(ca_pem, identity)?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            addr,
            server_name: fortilab_core::tls::server_name(&addr.ip().to_string())?,
            lab_token: None,
        })
    }

    /// This client with the lab token, sent on every request (`X-Fortilab-Token`).
    pub fn with_lab_token(mut self, token: &str) -> Self {
        self.lab_token = Some(token.to_string());
        self
    }

    /// Sends one request.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.lab_token {
            req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .context("request timed out")??;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        driver.abort();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a JSON body (or none) and returns the reply.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Reply> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.request(method, path, &[("content-type", "application/json")], bytes)
            .await
    }
}

/// Opens a TLS connection to `addr` (lab CA), writes `bytes`, and returns everything the
/// server sends until it closes or `wait` passes without data.
pub async fn tls_exchange(
    addr: SocketAddr,
    ca_pem: &str,
    bytes: &[u8],
    wait: Duration,
) -> anyhow::Result<Vec<u8>> {
    let cfg = fortilab_core::tls::client_config_from_pem(ca_pem, None)?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(
            fortilab_core::tls::server_name(&addr.ip().to_string())?,
            tcp,
        )
        .await?;
    tls.write_all(bytes).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    Ok(out)
}
