//! The server name of a TLS ClientHello, read without terminating TLS (what FortiOS
//! "certificate inspection" rates an intercepted HTTPS connection by).
//!
//! Only the first TLS record is read (a ClientHello fits one record in practice: at most 16 KiB).

/// Largest TLS record (plaintext limit plus the 5-byte header, with some room for padding).
pub const MAX_RECORD: usize = 5 + 16384 + 256;

/// What the bytes read so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// The record is not complete yet.
    NeedMore,
    /// A ClientHello with this `server_name` (host_name, lower case).
    Name(String),
    /// Not a ClientHello, or one without a (valid) host name.
    None,
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
}

/// Parses the start of a client's byte stream.
pub fn parse(buf: &[u8]) -> Sni {
    if buf.is_empty() {
        return Sni::NeedMore;
    }
    // Handshake record.
    if buf[0] != 0x16 {
        return Sni::None;
    }
    if buf.len() < 5 {
        return Sni::NeedMore;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Sni::NeedMore;
    }
    hello_name(&buf[5..5 + len]).map_or(Sni::None, Sni::Name)
}

fn hello_name(rec: &[u8]) -> Option<String> {
    let mut c = Cur(rec);
    // ClientHello.
    if c.u8()? != 1 {
        return None;
    }
    let len = c.u24()?;
    // The part of the hello in this record.
    let mut c = Cur(&c.0[..len.min(c.0.len())]);
    c.take(2 + 32)?; // client_version, random
    let sid = c.u8()?;
    c.take(sid)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let comp = c.u8()?;
    c.take(comp)?;
    let ext_len = c.u16()?;
    let mut ext = Cur(c.take(ext_len.min(c.0.len()))?);
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let l = ext.u16()?;
        let data = ext.take(l)?;
        if ty != 0 {
            continue;
        }
        let mut s = Cur(data);
        let list = s.u16()?;
        let mut s = Cur(s.take(list)?);
        while !s.0.is_empty() {
            let kind = s.u8()?;
            let l = s.u16()?;
            let name = s.take(l)?;
            if kind == 0 {
                let name = std::str::from_utf8(name).ok()?;
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                return ok.then(|| name.to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, as rustls sends it for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn the_name_of_a_real_client_hello() {
        let hello = client_hello("www.Example.com");
        assert_eq!(parse(&hello), Sni::Name("www.example.com".into()));
        // Byte by byte: more is needed until the record is complete.
        for n in 0..hello.len().min(200) {
            assert_eq!(parse(&hello[..n]), Sni::NeedMore, "{n}");
        }
    }

    #[test]
    fn no_name_without_sni_or_tls() {
        // rustls sends no SNI for an IP address.
        let hello = client_hello("192.0.2.7");
        assert_eq!(parse(&hello), Sni::None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Sni::None);
        // A truncated hello inside a complete record.
        let mut bad = client_hello("a.example");
        bad.truncate(60);
        let l = (bad.len() - 5) as u16;
        bad[3..5].copy_from_slice(&l.to_be_bytes());
        assert_eq!(parse(&bad), Sni::None);
    }
}
