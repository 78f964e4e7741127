//! The log channel's FortiAnalyzer side: [`FazSink`] implements `LogSink` over [`Faz`], and
//! [`ChannelNotifier`] pushes IOC notifications through the `LogReceiver`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fortilab_core::logchan::{Hello, LogReceiver, LogSink, RegStatus};

use crate::faz::{Faz, Notifier};

/// Stores batches in the log store (with IOC matching) and keeps the device registry.
pub struct FazSink {
    pub faz: Arc<Faz>,
}

impl LogSink for FazSink {
    fn hello(&self, hello: &Hello, peer: SocketAddr) -> (RegStatus, u64) {
        // A FortiClient reports its endpoint address; the connection's peer is the lab host.
        let ip = hello.ip.clone().unwrap_or_else(|| peer.ip().to_string());
        let authorized = self.faz.device_hello(
            &hello.serial,
            &hello.hostname,
            &hello.platform,
            &hello.version,
            &hello.device_type,
            &hello.vdom,
            &ip,
        );
        let last = self.faz.store.last_seq(&hello.serial);
        (
            if authorized {
                RegStatus::Registered
            } else {
                RegStatus::Unauthorized
            },
            last,
        )
    }

    fn store(&self, serial: &str, first_seq: u64, lines: Vec<String>) -> Result<u64, String> {
        let Some(dev) = self.faz.device(serial) else {
            return Err(format!("{serial}: no hello"));
        };
        if !dev.authorized {
            // The channel does not call us for unauthorized devices; be safe anyway.
            self.faz
                .counters
                .unauthorized_batches
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!("{serial}: not authorized"));
        }
        self.faz
            .ingest(serial, dev.device_type == "forticlient", first_seq, lines)
    }

    fn disconnected(&self, serial: &str) {
        self.faz.device_disconnected(serial);
    }

    fn notify_acked(&self, serial: &str, id: u64) {
        self.faz.notification_acked(serial, id);
    }
}

/// Sends notifications over the log channel.
pub struct ChannelNotifier(pub LogReceiver);

impl Notifier for ChannelNotifier {
    fn notify(&self, serial: &str, n: fortilab_core::logchan::Notification) -> bool {
        self.0.notify(serial, n)
    }

    fn authorize(&self, serial: &str) {
        self.0.authorize(serial)
    }
}
