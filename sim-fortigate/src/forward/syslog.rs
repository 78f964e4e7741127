//! Syslog output (`config log syslogd setting`): UDP datagrams or RFC 6587 octet-counted TCP
//! (`mode reliable`), formats `default` (`<PRI>` + the FortiOS line), `rfc5424` (7.0+), `csv`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::logfmt::LogRecord;
use fortilab_core::supervise::{share_receiver, SharedReceiver, Supervisor};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::logs::LogLine;

/// The syslog settings that matter to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// Real address to send to (after the lab map).
    pub target: SocketAddr,
    pub reliable: bool,
    /// `default`, `rfc5424`, `csv`, `cef` (cef is sent as default [P]).
    pub format: String,
    pub facility: u8,
    pub hostname: String,
}

/// Facility code of a FortiOS facility name.
pub fn facility_code(name: &str) -> u8 {
    const NAMES: [&str; 24] = [
        "kernel", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).unwrap_or(23) as u8
}

/// Severity of a FortiOS `level`.
pub fn severity(level: &str) -> u8 {
    match level {
        "emergency" => 0,
        "alert" => 1,
        "critical" => 2,
        "error" => 3,
        "warning" => 4,
        "notice" => 5,
        "information" => 6,
        "debug" => 7,
        _ => 6,
    }
}

/// Formats one message (without TCP framing).
pub fn format(s: &SyslogSettings, rec: &LogRecord, line: &str) -> String {
    let level = rec
        .text("level")
        .map(|c| c.into_owned())
        .unwrap_or_default();
    let pri = s.facility as u32 * 8 + severity(&level) as u32;
    match s.format.as_str() {
        "rfc5424" => {
            let date = rec.text("date").map(|c| c.into_owned()).unwrap_or_default();
            let time = rec.text("time").map(|c| c.into_owned()).unwrap_or_default();
            let tz = rec
                .text("tz")
                .map(|c| c.into_owned())
                .unwrap_or_else(|| "+0000".into());
            // `+hhmm` → `+hh:mm`; anything else (or not ASCII) is sent as UTC.
            let tz = match (tz.len() == 5).then(|| tz.get(..3).zip(tz.get(3..))) {
                Some(Some((h, m))) => format!("{h}:{m}"),
                _ => "Z".into(),
            };
            let host = if s.hostname.is_empty() {
                "-"
            } else {
                &s.hostname
            };
            format!("<{pri}>1 {date}T{time}{tz} {host} - - - - {line}")
        }
        "csv" => {
            let mut out = format!("<{pri}>");
            let mut first = true;
            for (k, v) in rec.fields() {
                if !first {
                    out.push(',');
                }
                first = false;
                let mut one = LogRecord::new();
                one.push(k.clone(), v.clone());
                out.push_str(&one.render());
            }
            out
        }
        _ => format!("<{pri}>{line}"),
    }
}

/// Counters of the syslog sender.
#[derive(Debug, Default)]
pub struct SyslogStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// The supervised task that sends to syslog (`/_lab/tasks`).
pub const SENDER_TASK: &str = "log forward: syslog sender";

/// Starts the sender task, supervised (a restarted instance goes on with the next queued
/// line); returns the channel to feed it.
pub fn start(
    s: SyslogSettings,
    stats: Arc<SyslogStats>,
    sup: &Supervisor,
    shutdown: CancellationToken,
) -> mpsc::Sender<Arc<LogLine>> {
    let (tx, rx) = mpsc::channel::<Arc<LogLine>>(65_536);
    let rx = share_receiver(rx);
    let stop = shutdown.clone();
    sup.spawn(SENDER_TASK, shutdown, move || {
        send_loop(s.clone(), stats.clone(), rx.clone(), stop.clone())
    });
    tx
}

/// Sends queued lines until shutdown (connections are made as needed, so a restarted
/// instance starts without one).
async fn send_loop(
    s: SyslogSettings,
    stats: Arc<SyslogStats>,
    rx: SharedReceiver<mpsc::Receiver<Arc<LogLine>>>,
    shutdown: CancellationToken,
) {
    let mut rx = rx.lock().await;
    let bind: SocketAddr = if s.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut udp: Option<UdpSocket> = None;
    let mut tcp: Option<TcpStream> = None;
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => break,
            l = rx.recv() => match l { Some(l) => l, None => break },
        };
        #[cfg(test)]
        if line.line.contains(tests::PANIC_LINE) {
            panic!("a line that panics the sender (test)");
        }
        let msg = format(&s, &line.record, &line.line);
        let ok = if s.reliable {
            let mut ok = false;
            for _ in 0..2 {
                let conn = match tcp.as_mut() {
                    Some(t) => t,
                    None => match tokio::time::timeout(
                        Duration::from_secs(3),
                        TcpStream::connect(s.target),
                    )
                    .await
                    {
                        Ok(Ok(t)) => {
                            let _ = t.set_nodelay(true);
                            tcp.insert(t)
                        }
                        _ => break,
                    },
                };
                let framed = format!("{} {}", msg.len(), msg);
                match conn.write_all(framed.as_bytes()).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(_) => tcp = None,
                }
            }
            ok
        } else {
            if udp.is_none() {
                udp = UdpSocket::bind(bind).await.ok();
            }
            match &udp {
                Some(u) => u.send_to(msg.as_bytes(), s.target).await.is_ok(),
                None => false,
            }
        };
        if ok {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    // The queue closed (the forwarder stopped this output) or shutdown: wait for the token so
    // the supervisor does not start the task again.
    shutdown.cancelled().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line that makes the sender panic (tests of its supervision).
    pub(super) const PANIC_LINE: &str = "panic-the-syslog-sender";

    fn line(seq: u64, text: &str) -> Arc<LogLine> {
        let body = format!("date=2021-03-04 time=10:11:22 level=\"notice\" msg=\"{text}\"");
        Arc::new(LogLine {
            seq,
            log_type: "event",
            subtype: "system",
            record: LogRecord::parse(&body).unwrap(),
            line: body.into(),
        })
    }

    /// A sender that panics on a line is reported and started again; it goes on with the
    /// next queued line on the same queue.
    #[tokio::test]
    async fn a_panicking_sender_is_restarted_and_goes_on_with_the_next_line() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let settings = SyslogSettings {
            target: rx_sock.local_addr().unwrap(),
            reliable: false,
            format: "default".into(),
            facility: facility_code("local7"),
            hostname: "FGT-LAB".into(),
        };
        let sup = Supervisor::new(None);
        let stats = Arc::new(SyslogStats::default());
        let stop = CancellationToken::new();
        let tx = start(settings, stats.clone(), &sup, stop.clone());
        for (i, text) in ["first", PANIC_LINE, "after the panic"].iter().enumerate() {
            tx.send(line(i as u64 + 1, text)).await.unwrap();
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        while got.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(10), rx_sock.recv(&mut buf))
                .await
                .expect("a datagram")
                .unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(got[0].ends_with("msg=\"first\""), "{got:?}");
        assert!(got[1].ends_with("msg=\"after the panic\""), "{got:?}");
        let st = sup.stats();
        assert_eq!((st.panicked, st.restarted), (1, 1), "{st:?}");
        assert!(st.tasks[SENDER_TASK].running);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 2);
        stop.cancel();
    }

    #[test]
    fn formats_default_rfc5424_and_csv() {
        let line = r#"date=2021-03-04 time=10:11:22 devname="FGT-LAB" devid="FGVM01TM00000000" eventtime=1614881482000000000 tz="-0800" logid="0100032001" type="event" subtype="system" level="information" vd="root" logdesc="Admin login successful""#;
        let rec = LogRecord::parse(line).unwrap();
        let mut s = SyslogSettings {
            target: "127.0.0.1:514".parse().unwrap(),
            reliable: false,
            format: "default".into(),
            facility: facility_code("local7"),
            hostname: "FGT-LAB".into(),
        };
        assert_eq!(format(&s, &rec, line), format!("<190>{line}"));
        s.format = "rfc5424".into();
        assert_eq!(
            format(&s, &rec, line),
            format!("<190>1 2021-03-04T10:11:22-08:00 FGT-LAB - - - - {line}")
        );
        s.format = "csv".into();
        let csv = format(&s, &rec, line);
        assert!(csv.starts_with("<190>date=2021-03-04,time=10:11:22,devname=\"FGT-LAB\","));
        assert_eq!(severity("warning"), 4);
        assert_eq!(facility_code("user"), 1);
    }
}
