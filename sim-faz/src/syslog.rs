//! Plain syslog input (UDP and TCP on the same port number) for devices that only speak syslog.
//!
//! Framing: UDP datagrams (one message each; several newline-separated messages are split);
//! TCP with octet counting (RFC 6587 `LEN SP MSG`) or newline/NUL-terminated messages, chosen
//! per message by its first byte. Headers: FortiOS `format default` (`<PRI>` then the key=value
//! body), RFC 3164 (`<PRI>Mmm dd hh:mm:ss host tag: body`) and RFC 5424
//! (`<PRI>1 TS HOST APP PROCID MSGID SD body`). Messages are attributed to a device by the
//! `devid` (else `devname`) in the body.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faz::Faz;
use crate::store::field_of;

/// Longest accepted message.
pub const MAX_MSG: usize = 64 * 1024;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The FortiOS body of a syslog message (header removed), or `None` for an empty message.
pub fn body_of(msg: &str) -> Option<&str> {
    let msg = msg.trim_matches(|c: char| c == '\n' || c == '\r' || c == '\0' || c == ' ');
    let mut rest = msg;
    if let Some(r) = rest.strip_prefix('<') {
        if let Some(end) = r.find('>') {
            if end <= 3 && r[..end].bytes().all(|b| b.is_ascii_digit()) && end > 0 {
                rest = &r[end + 1..];
            }
        }
    }
    // RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    if let Some(after) = rest.strip_prefix("1 ") {
        let mut r = after;
        for _ in 0..5 {
            r = match r.find(' ') {
                Some(i) => &r[i + 1..],
                None => return None,
            };
        }
        // Structured data: "-" or one or more [...] elements.
        if let Some(x) = r.strip_prefix('-') {
            r = x;
        } else {
            while r.starts_with('[') {
                let b = r.as_bytes();
                let mut i = 1;
                let mut in_q = false;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 1,
                        b'"' => in_q = !in_q,
                        b']' if !in_q => break,
                        _ => {}
                    }
                    i += 1;
                }
                r = if i < b.len() { &r[i + 1..] } else { "" };
            }
        }
        let r = r.trim_start_matches(' ').trim_start_matches('\u{feff}');
        return (!r.is_empty()).then_some(r);
    }
    // RFC 3164: Mmm dd hh:mm:ss HOST TAG: MSG
    // The timestamp is 15 ASCII characters and a space; `get` keeps a multi-byte character
    // around byte 16 from splitting (such a line is not RFC 3164 and is kept whole).
    let stamp = rest.get(16..).filter(|_| {
        MONTHS.iter().any(|m| rest.starts_with(m))
            && rest.as_bytes()[3] == b' '
            && rest.as_bytes()[..16].is_ascii()
    });
    if let Some(after) = stamp.filter(|a| !a.is_empty()) {
        let mut r = after.trim_start();
        // HOST
        if let Some(i) = r.find(' ') {
            let host = &r[..i];
            if !host.contains('=') {
                r = &r[i + 1..];
            }
        }
        // TAG: (no '=' in it)
        if let Some(i) = r.find(' ') {
            let tag = &r[..i];
            if tag.ends_with(':') && !tag.contains('=') {
                r = &r[i + 1..];
            }
        }
        let r = r.trim_start();
        return (!r.is_empty()).then_some(r);
    }
    let r = rest.trim_start();
    (!r.is_empty()).then_some(r)
}

/// One received message.
#[derive(Debug)]
struct Msg {
    body: String,
    peer: SocketAddr,
}

/// Starts UDP and TCP listeners; bodies go to a blocking ingest thread. A TCP sender that
/// starts a message and does not finish it within `partial_timeout` is disconnected (an idle
/// connection between messages stays open, as reliable senders keep theirs).
pub fn start(
    faz: Arc<Faz>,
    udp: UdpSocket,
    tcp: TcpListener,
    partial_timeout: std::time::Duration,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<Msg>(65_536);
    // Supervised: a reader that panics is reported and restarted on the same socket.
    let sup = faz.supervisor.clone();
    {
        let faz = faz.clone();
        let tx = tx.clone();
        let stop = shutdown.clone();
        let r = sup.spawn_udp("syslog udp", udp, shutdown.clone(), move |udp| {
            udp_loop(faz.clone(), udp, tx.clone(), stop.clone())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "syslog UDP not started");
        }
    }
    {
        let faz = faz.clone();
        let stop = shutdown.clone();
        let r = sup.spawn_tcp("syslog tcp", tcp, shutdown.clone(), move |tcp| {
            tcp_loop(faz.clone(), tcp, tx.clone(), partial_timeout, stop.clone())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "syslog TCP not started");
        }
    }
    std::thread::Builder::new()
        .name("faz-syslog-ingest".into())
        .spawn(move || {
            // A panic while storing a batch is reported and the thread goes on with the next.
            let mut rx = rx;
            while let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ingest_loop(faz.clone(), &mut rx)
            })) {
                let msg = fortilab_core::supervise::panic_message(&*p);
                faz.supervisor.report_panic("syslog ingest", &msg);
            }
        })
        .expect("spawn syslog thread")
}

fn accept_body(faz: &Faz, raw: &[u8], peer: SocketAddr, tx: &mpsc::Sender<Msg>) {
    faz.counters.syslog_messages.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(raw);
    for m in text.split('\n') {
        if m.trim().is_empty() {
            continue;
        }
        match body_of(m) {
            Some(b) => {
                if tx
                    .try_send(Msg {
                        body: b.to_string(),
                        peer,
                    })
                    .is_err()
                {
                    faz.counters.syslog_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                faz.counters.syslog_bad.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn udp_loop(faz: Arc<Faz>, udp: UdpSocket, tx: mpsc::Sender<Msg>, stop: CancellationToken) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "syslog udp recv");
                    continue;
                }
            },
        };
        accept_body(&faz, &buf[..n], peer, &tx);
    }
}

async fn tcp_loop(
    faz: Arc<Faz>,
    listener: TcpListener,
    tx: mpsc::Sender<Msg>,
    partial_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "syslog tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let faz = faz.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tcp_conn(&faz, sock, peer, &tx, partial_timeout) => {
                    if let Err(e) = r {
                        faz.counters.syslog_bad.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "syslog tcp connection closed");
                    }
                }
            }
        });
    }
}

/// `fut` (the rest of a message whose first byte arrived), or `TimedOut` after `limit`.
async fn partial<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "syslog message not completed in time",
        )
    })?
}

async fn tcp_conn(
    faz: &Faz,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    tx: &mpsc::Sender<Msg>,
    partial_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    loop {
        let first = {
            let buf = r.fill_buf().await?;
            match buf.first() {
                None => return Ok(()),
                Some(b) => *b,
            }
        };
        if first.is_ascii_digit() {
            // Octet counting: LEN SP MSG.
            let mut len_text = Vec::new();
            loop {
                let mut b = [0u8; 1];
                partial(partial_timeout, r.read_exact(&mut b)).await?;
                if b[0] == b' ' {
                    break;
                }
                if !b[0].is_ascii_digit() || len_text.len() > 7 {
                    return Err(std::io::Error::other("bad octet count"));
                }
                len_text.push(b[0]);
            }
            let len: usize = std::str::from_utf8(&len_text)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if len == 0 || len > MAX_MSG {
                faz.counters.oversized.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::other("syslog frame too large"));
            }
            let mut msg = vec![0u8; len];
            partial(partial_timeout, r.read_exact(&mut msg)).await?;
            accept_body(faz, &msg, peer, tx);
        } else {
            let mut line = Vec::new();
            let n = partial(
                partial_timeout,
                (&mut r)
                    .take(MAX_MSG as u64 + 1)
                    .read_until(b'\n', &mut line),
            )
            .await?;
            if n == 0 {
                return Ok(());
            }
            if line.len() > MAX_MSG {
                faz.counters.oversized.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::other("syslog line too long"));
            }
            for part in line.split(|b| *b == 0) {
                if !part.iter().all(|b| b.is_ascii_whitespace()) {
                    accept_body(faz, part, peer, tx);
                }
            }
        }
    }
}

fn ingest_loop(faz: Arc<Faz>, rx: &mut mpsc::Receiver<Msg>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < 5000 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // Group by device, keeping order.
        let mut groups: Vec<(String, bool, Vec<String>)> = Vec::new();
        for m in batch {
            let devid = field_of(&m.body, "devid");
            let devname = field_of(&m.body, "devname").unwrap_or_default();
            let Some(dev) = devid.or_else(|| (!devname.is_empty()).then(|| devname.clone())) else {
                faz.counters.syslog_bad.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !faz.syslog_device(&dev, &devname, &m.peer.ip().to_string()) {
                faz.counters.syslog_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match groups.iter_mut().find(|g| g.0 == dev) {
                Some(g) => g.2.push(m.body),
                None => {
                    let client = dev.starts_with("FCT");
                    groups.push((dev, client, vec![m.body]));
                }
            }
        }
        for (dev, client, lines) in groups {
            if let Err(e) = faz.ingest(&dev, client, 0, lines) {
                tracing::warn!(error = %e, "syslog ingest failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_three_header_styles() {
        let kv =
            "date=2021-03-04 time=10:11:22 devname=\"FGT-LAB\" devid=\"FGVM01\" type=\"traffic\"";
        assert_eq!(body_of(&format!("<188>{kv}")), Some(kv));
        assert_eq!(
            body_of(&format!("<189>Mar  4 10:11:22 fgt-lab {kv}\n")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>Mar  4 10:11:22 fgt-lab fortigate: {kv}")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>1 2021-03-04T10:11:22Z fgt-lab - - - - {kv}")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>1 2021-03-04T10:11:22Z fgt-lab app 12 ID47 [ex@1 a=\"x]y\"][b@2 c=\"d\"] \u{feff}{kv}")),
            Some(kv)
        );
        assert_eq!(body_of(kv), Some(kv));
        assert_eq!(body_of("<13>"), None);
        assert_eq!(body_of("<13>1 short"), None);
        assert_eq!(body_of(""), None);
    }
}
