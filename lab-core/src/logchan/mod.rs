//! The log channel: FortiGate/FortiClient → FortiAnalyzer logs, FortiAnalyzer → device
//! notifications on the same connection. It stands in for the proprietary OFTP (TCP 514).
//!
//! - Transport: TLS 1.3 with lab-CA certificates on both sides, ALPN [`ALPN`]; the client
//!   certificate's CN is the sender's serial and must equal the serial in its [`Hello`].
//! - Frames ([`frame`]): `u32 length | u8 type | payload`, at most 16 MiB.
//! - Sender ([`LogSender`]): numbered lines in a bounded memory queue that spills to segment
//!   files ([`spill`]); batches sent in real time or on an upload interval (lab clock); resent
//!   after reconnect from the server's `last_acked_seq`; keep-alive pings.
//! - Receiver ([`LogReceiver`]): hands batches to a [`LogSink`] that stores them durably (and
//!   drops sequence numbers it already has), then acknowledges; device registration; queued
//!   notifications retransmitted until acknowledged.
//!
//! `docs/architecture.md` ("The log channel") describes the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod frame;
mod memsink;
pub mod notify;
mod receiver;
mod sender;
mod spill;

#[cfg(test)]
mod tests;

pub use memsink::{MemorySink, StoredLine};
pub use receiver::{LogReceiver, ReceiverStats, SessionInfo};
pub use sender::LogSender;

/// The ALPN protocol id both sides must negotiate.
pub const ALPN: &[u8] = b"fortilab-logchan/1";

/// Lines per batch at most.
pub const MAX_BATCH_LINES: usize = 5000;
/// Bytes per batch at most (approximately: a batch stops after the line that crosses it).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Longest accepted log line; longer lines are truncated (at a character boundary).
pub const MAX_LINE: usize = 64 * 1024;
/// Batches sent ahead of the acknowledgements.
pub const WINDOW: usize = 8;
/// Under load, a sender lets at least this long pass between two batches, so lines written
/// one by one travel together (one TLS record and one durable commit for many lines) instead
/// of a batch each. A line written while the channel has been idle for longer goes at once.
pub const COALESCE: Duration = Duration::from_millis(1);
/// With this many lines waiting a sender does not wait for more.
pub const COALESCE_LINES: u64 = 256;
/// Notifications received but not yet taken by the device (its automation engine): while this
/// many wait, the sender stops reading the connection (TCP back-pressure on the FortiAnalyzer)
/// and acknowledges nothing more; nothing is dropped.
pub const NOTIFY_QUEUE: usize = 1024;
/// Highest sequence number a batch may carry (the FortiAnalyzer's store keeps sequences as
/// SQLite `INTEGER`, a signed 64-bit value). A batch whose last number would pass it, or wrap
/// around 2^64, is refused as `malformed`.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Longest accepted `Hello` field (serial, hostname, platform, ...), in bytes: a DNS name's
/// 253 characters fit; FortiOS hostnames are at most 35.
pub const MAX_HELLO_FIELD: usize = 255;
/// Either side sends a `Ping` after this long without sending anything.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Either side closes the connection after this long without receiving anything.
pub const DEAD_AFTER: Duration = Duration::from_secs(20);
/// Time allowed for the TLS handshake and the hello exchange.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A device's introduction (client → server, first frame).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub serial: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    /// `fortigate` or `forticlient`.
    pub device_type: String,
    pub vdom: String,
    /// The device's own (lab) address as it reports it — a FortiClient's endpoint IP. Absent:
    /// the receiver uses the connection's peer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Hello {
    /// Checks the field sizes ([`MAX_HELLO_FIELD`]); the error names the first field too long.
    pub fn check(&self) -> Result<(), String> {
        let mut fields = vec![
            ("serial", &self.serial),
            ("hostname", &self.hostname),
            ("platform", &self.platform),
            ("version", &self.version),
            ("device_type", &self.device_type),
            ("vdom", &self.vdom),
        ];
        if let Some(ip) = &self.ip {
            fields.push(("ip", ip));
        }
        for (name, v) in fields {
            if v.len() > MAX_HELLO_FIELD {
                return Err(format!(
                    "{name} of {} bytes exceeds {MAX_HELLO_FIELD} bytes",
                    v.len()
                ));
            }
        }
        Ok(())
    }

    /// A FortiAnalyzer's own introduction (the receiver's side of the hello exchange).
    pub fn fortianalyzer(serial: &str, hostname: &str, version: &str) -> Self {
        Hello {
            serial: serial.into(),
            hostname: hostname.into(),
            platform: "FortiAnalyzer-VM64".into(),
            version: version.into(),
            device_type: "fortianalyzer".into(),
            vdom: "root".into(),
            ip: None,
        }
    }
}

/// Registration state of a device on the FortiAnalyzer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RegStatus {
    Registered,
    Unauthorized,
}

/// The server's answer to a hello (and again when the device is authorized later).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HelloReply {
    pub status: RegStatus,
    pub server_serial: String,
    pub server_hostname: String,
    pub server_version: String,
    /// Every sequence number ≤ this is durably stored for the device.
    pub last_acked_seq: u64,
}

pub use notify::{
    FazEventNotification, IocAckNotification, IocLevel, IocNotification, Notice, Notification,
};

/// When the sender uploads (`config log fortianalyzer setting` / `set upload-option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOption {
    /// As soon as lines are queued.
    Realtime,
    /// Everything queued, every interval of lab time (`1-minute`, `5-minute`).
    Interval(Duration),
}

/// Everything a [`LogSender`] needs.
#[derive(Clone)]
pub struct SenderConfig {
    /// Real address to connect to (the caller resolves the lab map).
    pub server: SocketAddr,
    /// TLS name to verify (lab IP or "localhost").
    pub server_name: String,
    /// Lab CA roots + the device identity (CN = serial). ALPN is set by the sender.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub hello: Hello,
    /// Persistent queue + sequence state.
    pub queue_dir: std::path::PathBuf,
    /// Lines kept in memory before spilling to disk.
    pub mem_limit: usize,
    pub upload: UploadOption,
    pub clock: crate::clock::LabClock,
    /// Real time between connection attempts (doubled after each failure, capped at
    /// [`MAX_RECONNECT_DELAY`] or this value, whichever is larger).
    pub reconnect_delay: Duration,
}

impl std::fmt::Debug for SenderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderConfig")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("hello", &self.hello)
            .field("queue_dir", &self.queue_dir)
            .field("mem_limit", &self.mem_limit)
            .field("upload", &self.upload)
            .field("reconnect_delay", &self.reconnect_delay)
            .finish_non_exhaustive()
    }
}

/// Cap of the reconnect back-off.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// Queue and connection figures of a sender (for `/api/v2/monitor/log/fortianalyzer*`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderStats {
    pub connected: bool,
    pub registration: Option<RegStatus>,
    /// The sequence number the next line gets.
    pub next_seq: u64,
    /// Every sequence number ≤ this is acknowledged.
    pub acked_seq: u64,
    /// Lines not yet acknowledged (in memory + spilled).
    pub queued: u64,
    pub in_memory: u64,
    pub spilled: u64,
    /// Lines written to the connection (resends included).
    pub sent_lines: u64,
    /// Connections lost or attempts failed.
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub server_serial: Option<String>,
    /// Lines dropped because memory was full and the queue could not spill to disk.
    pub dropped: u64,
    /// Set while the queue cannot spill to disk: the error, naming the file.
    pub queue_error: Option<String>,
}

/// The FortiAnalyzer side's storage and registry, implemented by the log store.
pub trait LogSink: Send + Sync + 'static {
    /// A device said hello. Returns its registration status and the last sequence number stored
    /// durably for this serial (0 if none).
    fn hello(&self, hello: &Hello, peer: SocketAddr) -> (RegStatus, u64);
    /// Stores lines numbered first_seq.. for `serial`, skipping numbers <= its last stored one;
    /// returns only after a durable commit, with the new last stored sequence. Runs on a blocking
    /// thread (spawn_blocking), so it may do synchronous I/O.
    fn store(&self, serial: &str, first_seq: u64, lines: Vec<String>) -> Result<u64, String>;
    fn disconnected(&self, _serial: &str) {}
    fn notify_acked(&self, _serial: &str, _id: u64) {}
}

/// Truncates an over-long line at a character boundary.
fn clamp_line(mut line: String) -> String {
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}
