//! The FortiAnalyzer's counters, exposed on `/_lab/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

/// Counters exposed on `/_lab/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub api_requests: AtomicU64,
    pub api_errors: AtomicU64,
    pub bad_json: AtomicU64,
    pub bad_requests: AtomicU64,
    pub unknown_urls: AtomicU64,
    pub unknown_methods: AtomicU64,
    pub auth_failures: AtomicU64,
    pub oversized: AtomicU64,
    pub log_batches: AtomicU64,
    pub log_lines: AtomicU64,
    pub unparsed_lines: AtomicU64,
    pub unauthorized_batches: AtomicU64,
    pub syslog_messages: AtomicU64,
    pub syslog_dropped: AtomicU64,
    pub syslog_bad: AtomicU64,
    /// Datagrams the kernel dropped on the syslog UDP socket (its receive buffer was full).
    pub syslog_udp_kernel_drops: AtomicU64,
    /// Syslog messages from a sender whose device is not authorized (not stored).
    pub syslog_unauthorized: AtomicU64,
    /// Syslog messages lost to a store error (the disk is full, ...).
    pub syslog_store_errors: AtomicU64,
    pub notifications: AtomicU64,
    pub notifications_acked: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "api_requests": g(&self.api_requests), "api_errors": g(&self.api_errors),
            "bad_json": g(&self.bad_json), "bad_requests": g(&self.bad_requests),
            "unknown_urls": g(&self.unknown_urls), "unknown_methods": g(&self.unknown_methods),
            "auth_failures": g(&self.auth_failures), "oversized": g(&self.oversized),
            "log_batches": g(&self.log_batches), "log_lines": g(&self.log_lines),
            "unparsed_lines": g(&self.unparsed_lines), "unauthorized_batches": g(&self.unauthorized_batches),
            "syslog_messages": g(&self.syslog_messages), "syslog_dropped": g(&self.syslog_dropped),
            "syslog_bad": g(&self.syslog_bad),
            "syslog_udp_kernel_drops": g(&self.syslog_udp_kernel_drops),
            "syslog_unauthorized": g(&self.syslog_unauthorized),
            "syslog_store_errors": g(&self.syslog_store_errors), "notifications": g(&self.notifications),
            "notifications_acked": g(&self.notifications_acked), "store_errors": g(&self.store_errors),
        })
    }
}
