//! Syslog output (`config log syslogd setting`): UDP datagrams or RFC 6587 octet-counted TCP
//! (`mode reliable`), formats `default` (`<PRI>` + the FortiOS line), `rfc5424` (7.0+), `csv`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::logfmt::LogRecord;
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
            let tz = if tz.len() == 5 {
                format!("{}:{}", &tz[..3], &tz[3..])
            } else {
                "Z".into()
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

/// Starts a sender task; returns the channel to feed it.
pub fn start(
    s: SyslogSettings,
    stats: Arc<SyslogStats>,
    shutdown: CancellationToken,
) -> mpsc::Sender<Arc<LogLine>> {
    let (tx, mut rx) = mpsc::channel::<Arc<LogLine>>(65_536);
    tokio::spawn(async move {
        let bind: SocketAddr = if s.target.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        let mut udp: Option<UdpSocket> = None;
        let mut tcp: Option<TcpStream> = None;
        loop {
            let line = tokio::select! {
                _ = shutdown.cancelled() => break,
                l = rx.recv() => match l { Some(l) => l, None => break },
            };
            let msg = format(&s, &line.record, &line.line);
            let ok = if s.reliable {
                let mut ok = false;
                for _ in 0..2 {
                    if tcp.is_none() {
                        match tokio::time::timeout(
                            Duration::from_secs(3),
                            TcpStream::connect(s.target),
                        )
                        .await
                        {
                            Ok(Ok(t)) => {
                                let _ = t.set_nodelay(true);
                                tcp = Some(t);
                            }
                            _ => break,
                        }
                    }
                    let framed = format!("{} {}", msg.len(), msg);
                    match tcp
                        .as_mut()
                        .expect("tcp")
                        .write_all(framed.as_bytes())
                        .await
                    {
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
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

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
