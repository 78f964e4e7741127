//! An in-memory [`LogSink`] for tests and for devices that need a test receiver before the
//! FortiAnalyzer twin exists. Not durable: "stored" means held in this process.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Hello, LogSink, RegStatus};

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub seq: u64,
    pub line: String,
}

#[derive(Default)]
struct Device {
    hello: Option<Hello>,
    lines: Vec<StoredLine>,
    last_seq: u64,
    stored: u64,
    duplicates: u64,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<String, Device>,
    authorized: BTreeSet<String>,
    acked_notifications: Vec<(String, u64)>,
    disconnects: u64,
    hellos: u64,
}

/// Keeps every stored line in memory and drops sequence numbers it already has.
#[derive(Default)]
pub struct MemorySink {
    auto_authorize: bool,
    keep_lines: bool,
    /// `store` refuses every batch (a FortiAnalyzer whose disk is full).
    refusing: AtomicBool,
    inner: Mutex<Inner>,
}

impl MemorySink {
    /// `auto_authorize`: every device is registered on hello; otherwise only those passed to
    /// [`MemorySink::authorize`].
    pub fn new(auto_authorize: bool) -> Self {
        Self {
            auto_authorize,
            keep_lines: true,
            refusing: AtomicBool::new(false),
            inner: Mutex::default(),
        }
    }

    /// While `on`, every batch is refused with a store error (the receiver closes the
    /// connection with `Error {"code":"store"}`), as a FortiAnalyzer with a full disk does.
    pub fn set_refusing(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// A sink that only counts (benchmarks).
    pub fn counting() -> Self {
        Self {
            auto_authorize: true,
            keep_lines: false,
            refusing: AtomicBool::new(false),
            inner: Mutex::default(),
        }
    }

    /// Marks a device as authorized (then call `LogReceiver::authorize`).
    pub fn authorize(&self, serial: &str) {
        self.inner
            .lock()
            .unwrap()
            .authorized
            .insert(serial.to_string());
    }

    /// Lines stored for `serial`, in sequence order.
    pub fn lines(&self, serial: &str) -> Vec<StoredLine> {
        self.inner
            .lock()
            .unwrap()
            .devices
            .get(serial)
            .map(|d| d.lines.clone())
            .unwrap_or_default()
    }

    /// How many lines are stored for `serial` (counted also by a counting sink).
    pub fn count(&self, serial: &str) -> u64 {
        let inner = self.inner.lock().unwrap();
        inner.devices.get(serial).map(|d| d.stored).unwrap_or(0)
    }

    pub fn last_seq(&self, serial: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .devices
            .get(serial)
            .map(|d| d.last_seq)
            .unwrap_or(0)
    }

    /// Lines offered again after they were stored (resends), dropped.
    pub fn duplicates(&self, serial: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .devices
            .get(serial)
            .map(|d| d.duplicates)
            .unwrap_or(0)
    }

    /// The hello a device sent last.
    pub fn hello_of(&self, serial: &str) -> Option<Hello> {
        self.inner
            .lock()
            .unwrap()
            .devices
            .get(serial)
            .and_then(|d| d.hello.clone())
    }

    pub fn hellos(&self) -> u64 {
        self.inner.lock().unwrap().hellos
    }

    pub fn acked_notifications(&self) -> Vec<(String, u64)> {
        self.inner.lock().unwrap().acked_notifications.clone()
    }

    pub fn disconnects(&self) -> u64 {
        self.inner.lock().unwrap().disconnects
    }

    /// Forgets a device's stored lines and sequence (a wiped log store).
    pub fn reset(&self, serial: &str) {
        self.inner.lock().unwrap().devices.remove(serial);
    }
}

impl LogSink for MemorySink {
    fn hello(&self, hello: &Hello, _peer: SocketAddr) -> (RegStatus, u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.hellos += 1;
        let authorized = self.auto_authorize || inner.authorized.contains(&hello.serial);
        let d = inner.devices.entry(hello.serial.clone()).or_default();
        d.hello = Some(hello.clone());
        let status = if authorized {
            RegStatus::Registered
        } else {
            RegStatus::Unauthorized
        };
        (status, d.last_seq)
    }

    fn store(&self, serial: &str, first_seq: u64, lines: Vec<String>) -> Result<u64, String> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err("memory sink: refusing (test)".into());
        }
        let mut inner = self.inner.lock().unwrap();
        let d = inner.devices.entry(serial.to_string()).or_default();
        for (i, line) in lines.into_iter().enumerate() {
            let seq = first_seq + i as u64;
            if seq <= d.last_seq {
                d.duplicates += 1;
                continue;
            }
            d.last_seq = seq;
            d.stored += 1;
            if self.keep_lines {
                d.lines.push(StoredLine { seq, line });
            }
        }
        Ok(d.last_seq)
    }

    fn disconnected(&self, _serial: &str) {
        self.inner.lock().unwrap().disconnects += 1;
    }

    fn notify_acked(&self, serial: &str, id: u64) {
        self.inner
            .lock()
            .unwrap()
            .acked_notifications
            .push((serial.to_string(), id));
    }
}
