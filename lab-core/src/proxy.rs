//! PROXY protocol v1 and v2 headers (haproxy's spec), which carry a lab source address at the
//! start of a connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The addresses a PROXY header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Errors parsing a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("incomplete PROXY header")]
    Incomplete,
    #[error("invalid PROXY header: {0}")]
    Invalid(&'static str),
}

const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Encodes a v1 header: `PROXY TCP4 src dst sport dport\r\n`.
pub fn encode_v1(h: &ProxyHeader) -> Vec<u8> {
    let fam = if h.src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        h.src.ip(),
        h.dst.ip(),
        h.src.port(),
        h.dst.port()
    )
    .into_bytes()
}

/// Encodes a v2 header (PROXY command, TCP over IPv4 or IPv6).
pub fn encode_v2(h: &ProxyHeader) -> Vec<u8> {
    let mut out = V2_SIG.to_vec();
    out.push(0x21);
    match (h.src.ip(), h.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let s6 = match s {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            let d6 = match d {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s6.octets());
            out.extend_from_slice(&d6.octets());
        }
    }
    out.extend_from_slice(&h.src.port().to_be_bytes());
    out.extend_from_slice(&h.dst.port().to_be_bytes());
    out
}

/// Parses a header at the start of `buf`. `Ok(None)`: the data does not start with a PROXY
/// header. `Ok(Some((hdr, n)))`: a header of `n` bytes (`hdr` is `None` for LOCAL/UNKNOWN).
#[allow(clippy::type_complexity)]
pub fn parse(buf: &[u8]) -> Result<Option<(Option<ProxyHeader>, usize)>, ProxyError> {
    if buf.len() < 12
        && (V2_SIG.starts_with(buf) || b"PROXY ".starts_with(&buf[..buf.len().min(6)]))
    {
        return Err(ProxyError::Incomplete);
    }
    if buf.starts_with(&V2_SIG) {
        return parse_v2(buf).map(Some);
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf).map(Some);
    }
    Ok(None)
}

fn parse_v1(buf: &[u8]) -> Result<(Option<ProxyHeader>, usize), ProxyError> {
    let limit = buf.len().min(107);
    let end = match buf[..limit].windows(2).position(|w| w == b"\r\n") {
        Some(p) => p,
        None if buf.len() >= 107 => return Err(ProxyError::Invalid("v1 line too long")),
        None => return Err(ProxyError::Incomplete),
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Invalid("not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.get(1) == Some(&"UNKNOWN") {
        return Ok((None, end + 2));
    }
    if parts.len() != 6 || !matches!(parts[1], "TCP4" | "TCP6") {
        return Err(ProxyError::Invalid("v1 fields"));
    }
    let sip: IpAddr = parts[2]
        .parse()
        .map_err(|_| ProxyError::Invalid("v1 source address"))?;
    let dip: IpAddr = parts[3]
        .parse()
        .map_err(|_| ProxyError::Invalid("v1 destination address"))?;
    let sp: u16 = parts[4]
        .parse()
        .map_err(|_| ProxyError::Invalid("v1 source port"))?;
    let dp: u16 = parts[5]
        .parse()
        .map_err(|_| ProxyError::Invalid("v1 destination port"))?;
    Ok((
        Some(ProxyHeader {
            src: SocketAddr::new(sip, sp),
            dst: SocketAddr::new(dip, dp),
        }),
        end + 2,
    ))
}

fn parse_v2(buf: &[u8]) -> Result<(Option<ProxyHeader>, usize), ProxyError> {
    if buf.len() < 16 {
        return Err(ProxyError::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Invalid("v2 version"));
    }
    let fam = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + len;
    if buf.len() < total {
        return Err(ProxyError::Incomplete);
    }
    let body = &buf[16..total];
    if ver_cmd & 0x0f == 0 {
        return Ok((None, total)); // LOCAL
    }
    let hdr = match fam {
        0x11 | 0x12 if len >= 12 => {
            let s = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let d = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let sp = u16::from_be_bytes([body[8], body[9]]);
            let dp = u16::from_be_bytes([body[10], body[11]]);
            Some(ProxyHeader {
                src: SocketAddr::new(s.into(), sp),
                dst: SocketAddr::new(d.into(), dp),
            })
        }
        0x21 | 0x22 if len >= 36 => {
            let s: [u8; 16] = body[0..16].try_into().unwrap();
            let d: [u8; 16] = body[16..32].try_into().unwrap();
            let sp = u16::from_be_bytes([body[32], body[33]]);
            let dp = u16::from_be_bytes([body[34], body[35]]);
            let unmap = |a: Ipv6Addr| a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a));
            Some(ProxyHeader {
                src: SocketAddr::new(unmap(Ipv6Addr::from(s)), sp),
                dst: SocketAddr::new(unmap(Ipv6Addr::from(d)), dp),
            })
        }
        0x00 => None,
        _ => return Err(ProxyError::Invalid("v2 address family")),
    };
    Ok((hdr, total))
}

/// Reads a PROXY header, if the connection starts with one, consuming exactly its bytes.
/// Waits at most `timeout` for the first bytes (a client that speaks first without a header is
/// served as is; a silent client is given no header).
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: std::time::Duration,
) -> Result<Option<ProxyHeader>, ProxyError> {
    let mut buf = [0u8; 232];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Ok(None),
        };
        if n == 0 {
            return Ok(None);
        }
        match parse(&buf[..n]) {
            Ok(None) => return Ok(None),
            Ok(Some((hdr, len))) => {
                let mut sink = vec![0u8; len];
                consume(stream, &mut sink)
                    .await
                    .map_err(|_| ProxyError::Incomplete)?;
                return Ok(hdr);
            }
            Err(ProxyError::Incomplete) if n < buf.len() => {
                // Wait for more bytes to arrive, then peek again.
                if tokio::time::timeout_at(deadline, stream.readable())
                    .await
                    .is_err()
                {
                    return Err(ProxyError::Incomplete);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn consume<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<()> {
    r.read_exact(buf).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr() -> ProxyHeader {
        ProxyHeader {
            src: "10.115.2.52:51000".parse().unwrap(),
            dst: "89.1.1.1:80".parse().unwrap(),
        }
    }

    #[test]
    fn v1_and_v2_round_trip() {
        let h = hdr();
        let v1 = encode_v1(&h);
        assert_eq!(&v1[..], b"PROXY TCP4 10.115.2.52 89.1.1.1 51000 80\r\n");
        assert_eq!(parse(&v1).unwrap(), Some((Some(h), v1.len())));
        let v2 = encode_v2(&h);
        assert_eq!(parse(&v2).unwrap(), Some((Some(h), v2.len())));
        let h6 = ProxyHeader {
            src: "[fd00::1]:1".parse().unwrap(),
            dst: "[fd00::2]:2".parse().unwrap(),
        };
        let v2 = encode_v2(&h6);
        assert_eq!(parse(&v2).unwrap(), Some((Some(h6), v2.len())));
    }

    #[test]
    fn other_data_and_partial_headers() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Err(ProxyError::Incomplete));
        assert_eq!(parse(&V2_SIG[..5]), Err(ProxyError::Incomplete));
        assert!(matches!(
            parse(b"PROXY TCP9 a b c d\r\n"),
            Err(ProxyError::Invalid(_))
        ));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((None, 15)));
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&data);
            let mut with_sig = V2_SIG.to_vec();
            with_sig.extend_from_slice(&data);
            let _ = parse(&with_sig);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&data);
            let _ = parse(&v1);
        }
    }

    #[tokio::test]
    async fn read_header_consumes_only_the_header() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&encode_v2(&hdr())).await.unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let (mut s, _) = l.accept().await.unwrap();
        let h = read_header(&mut s, std::time::Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(h, Some(hdr()));
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        client.await.unwrap();
    }
}
