//! Minimal HTTP/1.1 framing for the explicit proxy: request/response heads and body relays
//! (Content-Length, chunked, until close). Pure parsing plus a small buffered reader.
//!
//! The proxy's upstream hop relays with this rather than with the lab's one HTTP client
//! (`fortilab_core::http::client`, hyper) for a measured reason (issue 18.5): on that hop alone
//! hyper's client connection served 26% fewer requests/s than this relay at twice its median
//! latency, the relay unoptimised and hyper optimised (`cargo bench -p fortilab-fortigate
//! --bench upstream_hop`, BENCHMARKS.md "Proxy: the upstream hop"). The relay also passes bodies
//! with their framing, so the logged `sentbyte`/`rcvdbyte` are the wire's.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest accepted head.
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request: method, target, version. Response: version, status, reason.
    pub line: [String; 3],
    pub headers: Vec<(String, String)>,
    /// Bytes of the head on the wire.
    pub len: usize,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Whether the connection persists after this message (HTTP/1.1 default keep-alive).
    pub fn keep_alive(&self, version: &str) -> bool {
        if self.has_token("connection", "close") || self.has_token("proxy-connection", "close") {
            return false;
        }
        if version.eq_ignore_ascii_case("HTTP/1.0") {
            return self.has_token("connection", "keep-alive")
                || self.has_token("proxy-connection", "keep-alive");
        }
        true
    }

    pub fn body(&self) -> BodyKind {
        if self.has_token("transfer-encoding", "chunked") {
            return BodyKind::Chunked;
        }
        match self
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
        {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Response delimited by the connection closing.
    UntilClose,
}

/// Parses a head (`buf` holds it up to and including the blank line).
pub fn parse_head(buf: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(buf).map_err(|_| "head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let first = lines.next().ok_or("empty head")?;
    let mut parts = first.splitn(3, ' ');
    let a = parts.next().ok_or("bad start line")?.to_string();
    let b = parts.next().ok_or("bad start line")?.to_string();
    let c = parts.next().unwrap_or("").to_string();
    if a.is_empty() || b.is_empty() {
        return Err("bad start line");
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (k, v) = l.split_once(':').ok_or("bad header line")?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Head {
        line: [a, b, c],
        headers,
        len: buf.len(),
    })
}

/// A buffered reader over one side of a connection.
pub struct Reader<R> {
    pub r: R,
    pub buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            buf: BytesMut::with_capacity(8192),
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        self.r.read_buf(&mut self.buf).await
    }

    /// Reads (and keeps in the buffer, to be forwarded) the client's first TLS record and
    /// returns the ClientHello's server name, if any.
    pub async fn peek_sni(&mut self) -> std::io::Result<Option<String>> {
        loop {
            match super::sni::parse(&self.buf) {
                super::sni::Sni::Name(n) => return Ok(Some(n)),
                super::sni::Sni::None => return Ok(None),
                super::sni::Sni::NeedMore => {
                    if self.buf.len() > super::sni::MAX_RECORD || self.fill().await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reads the next head. `Ok(None)`: clean EOF before any byte.
    pub async fn head(&mut self) -> std::io::Result<Option<Head>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = find_blank(&self.buf, scanned) {
                let raw = self.buf.split_to(pos + 4);
                return parse_head(&raw)
                    .map(Some)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
            scanned = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "head too long",
                ));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Copies exactly `n` bytes to `w`.
    pub async fn copy_exact<W: AsyncWrite + Unpin>(
        &mut self,
        mut n: u64,
        w: &mut W,
    ) -> std::io::Result<u64> {
        let total = n;
        while n > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            w.write_all(&self.buf[..take]).await?;
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(total)
    }

    async fn line(&mut self) -> std::io::Result<BytesMut> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.split_to(p + 2));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Copies a chunked body (framing included) to `w`; returns the bytes copied.
    pub async fn copy_chunked<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<u64> {
        let mut total = 0u64;
        loop {
            let line = self.line().await?;
            w.write_all(&line).await?;
            total += line.len() as u64;
            let s = std::str::from_utf8(&line).map_err(|_| std::io::ErrorKind::InvalidData)?;
            let size = u64::from_str_radix(s.trim().split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                })?;
            if size == 0 {
                // Trailers until the blank line.
                loop {
                    let l = self.line().await?;
                    w.write_all(&l).await?;
                    total += l.len() as u64;
                    if l.len() == 2 {
                        return Ok(total);
                    }
                }
            }
            total += self.copy_exact(size + 2, w).await?;
        }
    }

    /// Copies until EOF.
    pub async fn copy_to_eof<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<u64> {
        let mut total = 0u64;
        loop {
            if !self.buf.is_empty() {
                w.write_all(&self.buf).await?;
                total += self.buf.len() as u64;
                self.buf.clear();
            }
            if self.fill().await? == 0 {
                return Ok(total);
            }
        }
    }

    pub async fn copy_body<W: AsyncWrite + Unpin>(
        &mut self,
        kind: BodyKind,
        w: &mut W,
    ) -> std::io::Result<u64> {
        match kind {
            BodyKind::None => Ok(0),
            BodyKind::Length(n) => self.copy_exact(n, w).await,
            BodyKind::Chunked => self.copy_chunked(w).await,
            BodyKind::UntilClose => self.copy_to_eof(w).await,
        }
    }
}

fn find_blank(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
}

/// Splits a request target into (host, port, path) — absolute-form `http://h[:p]/path`, or
/// origin-form with the `Host` header.
pub fn target(head: &Head) -> Option<(String, u16, String)> {
    let t = &head.line[1];
    if let Some(rest) = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("HTTP://"))
    {
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let (h, p) = split_host_port(auth, 80)?;
        return Some((h, p, path));
    }
    if t.starts_with('/') {
        let (h, p) = split_host_port(head.header("host")?, 80)?;
        return Some((h, p, t.clone()));
    }
    None
}

/// `host[:port]` (IPv6 in brackets).
pub fn split_host_port(auth: &str, default: u16) -> Option<(String, u16)> {
    let auth = auth.rsplit('@').next()?;
    if auth.is_empty() {
        return None;
    }
    if let Some(rest) = auth.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((h.to_string(), port));
    }
    match auth.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((auth.to_string(), default)),
    }
}

/// The request head forwarded upstream: origin-form, hop-by-hop proxy headers removed.
pub fn upstream_request(head: &Head, host: &str, port: u16, path: &str) -> Vec<u8> {
    let mut out = format!("{} {} {}\r\n", head.line[0], path, head.line[2]);
    let mut has_host = false;
    for (k, v) in &head.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "proxy-connection" || lk == "proxy-authorization" || lk == "keep-alive" {
            continue;
        }
        if lk == "host" {
            has_host = true;
        }
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if !has_host {
        if port == 80 {
            out.push_str(&format!("Host: {host}\r\n"));
        } else {
            out.push_str(&format!("Host: {host}:{port}\r\n"));
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete small response.
pub fn response(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_targets_and_rewrites() {
        let h = parse_head(b"GET http://www.eicar.org/download/eicar.com HTTP/1.1\r\nHost: www.eicar.org\r\nProxy-Connection: Keep-Alive\r\n\r\n").unwrap();
        assert_eq!(h.line[0], "GET");
        assert_eq!(
            target(&h),
            Some(("www.eicar.org".into(), 80, "/download/eicar.com".into()))
        );
        assert!(h.keep_alive("HTTP/1.1"));
        let up = String::from_utf8(upstream_request(
            &h,
            "www.eicar.org",
            80,
            "/download/eicar.com",
        ))
        .unwrap();
        assert_eq!(
            up,
            "GET /download/eicar.com HTTP/1.1\r\nHost: www.eicar.org\r\n\r\n"
        );
        let h2 = parse_head(b"GET http://1.2.3.4:8080?x=1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(target(&h2), Some(("1.2.3.4".into(), 8080, "/?x=1".into())));
        assert!(!h2.keep_alive("HTTP/1.0"));
        assert_eq!(split_host_port("[::1]:443", 80), Some(("::1".into(), 443)));
        assert_eq!(split_host_port("h:x", 80), None);
        let r = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(r.body(), BodyKind::Chunked);
        assert!(parse_head(b"\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn relays_chunked_and_length_bodies() {
        let data: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = Reader::new(data);
        let h = r.head().await.unwrap().unwrap();
        let mut out = Vec::new();
        let n = r.copy_body(h.body(), &mut out).await.unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(n as usize, out.len());
        let h = r.head().await.unwrap().unwrap();
        let mut out = Vec::new();
        r.copy_body(h.body(), &mut out).await.unwrap();
        assert_eq!(out, b"abc");
        assert!(r.head().await.unwrap().is_none());
    }
}
