//! A real DNS server for the lab's names (UDP, A records only), for labs whose devices have
//! their own network stacks (namespaces mode): an endpoint's `curl http://www.eicar.org/`
//! resolves the site's public lab address here, as it would at its ISP's resolver.
//!
//! The message logic ([`answer`]) has no I/O: a query's first question is answered from the
//! lab Internet's sites (`Sites::resolve`): an A record with a 60 s TTL, `NOERROR` with no
//! answer for other types of a known name, `NXDOMAIN` for unknown names, `FORMERR` for
//! queries that do not parse, `NOTIMP` for other opcodes. Nothing is recursed or forwarded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::Sites;

const TTL: u32 = 60;

/// The question of a query: its name (lower case, no trailing dot), type and where it ends.
fn question(msg: &[u8]) -> Option<(String, u16, usize)> {
    if msg.len() < 12 {
        return None;
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd == 0 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            // Compression pointers cannot appear in a query's first name.
            return None;
        }
        let label = msg.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
        if i > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let _qclass = u16::from_be_bytes([*msg.get(i + 2)?, *msg.get(i + 3)?]);
    Some((labels.join("."), qtype, i + 4))
}

/// The answer to one DNS query (`None`: too short to even echo an id, dropped).
pub fn answer(sites: &Sites, msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        // A response: never answered (no loops between resolvers).
        return None;
    }
    let opcode = (flags >> 11) & 0xf;
    let rd = flags & 0x0100;
    let head = |rcode: u16, qd: u16, an: u16| {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&msg[0..2]);
        // QR, opcode echoed, AA, RD echoed, RA clear.
        let f = 0x8000 | (opcode << 11) | 0x0400 | rd | rcode;
        out.extend_from_slice(&f.to_be_bytes());
        out.extend_from_slice(&qd.to_be_bytes());
        out.extend_from_slice(&an.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    };
    if opcode != 0 {
        return Some(head(4, 0, 0));
    }
    let Some((name, qtype, end)) = question(msg) else {
        return Some(head(1, 0, 0));
    };
    let ip = sites
        .resolve(&name)
        .filter(|_| name.parse::<IpAddr>().is_err());
    let Some(ip) = ip else {
        let mut out = head(3, 1, 0);
        out.extend_from_slice(&msg[12..end]);
        return Some(out);
    };
    match (qtype, ip) {
        // A (or ANY) of a known name.
        (1 | 255, IpAddr::V4(v4)) => {
            let mut out = head(0, 1, 1);
            out.extend_from_slice(&msg[12..end]);
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&v4.octets());
            Some(out)
        }
        _ => {
            let mut out = head(0, 1, 0);
            out.extend_from_slice(&msg[12..end]);
            Some(out)
        }
    }
}

/// Serves DNS on `sock` until `shutdown`.
pub async fn serve(sock: UdpSocket, sites: Arc<Sites>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer): (usize, SocketAddr) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns receive");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        if let Some(reply) = answer(&sites, &buf[..n]) {
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn a_site_resolves_to_its_public_lab_address() {
        let sites = Sites::defaults();
        let want = sites.resolve("www.eicar.org").unwrap();
        let r = answer(&sites, &query("WWW.eicar.org", 1)).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        let IpAddr::V4(v4) = want else { panic!() };
        assert_eq!(&r[r.len() - 4..], &v4.octets());
    }

    #[test]
    fn unknown_names_and_garbage() {
        let sites = Sites::defaults();
        let r = answer(&sites, &query("nope.example", 1)).unwrap();
        assert_eq!(r[3] & 0x0f, 3, "NXDOMAIN");
        let r = answer(&sites, &query("www.eicar.org", 28)).unwrap();
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0, "no AAAA");
        assert!(answer(&sites, &[1, 2, 3]).is_none());
        let mut bad = query("www.eicar.org", 1);
        bad.truncate(20);
        assert_eq!(answer(&sites, &bad).unwrap()[3] & 0x0f, 1, "FORMERR");
        for n in 0..40 {
            let mut q = query("www.eicar.org", 1);
            q.truncate(n);
            let _ = answer(&sites, &q);
        }
    }
}
