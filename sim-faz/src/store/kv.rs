//! The key/value table: the FortiAnalyzer's state (devices, compromised hosts, alerts,
//! settings) as JSON by key, written through the writer queue (so an update can share a log
//! batch's transaction) and read on the reader connections.

use std::sync::mpsc;

use rusqlite::{params, OptionalExtension};

use super::writer::{Batch, Job};
use super::{Durability, Store, StoreError};

/// Key/value updates written in the same transaction as a batch (IOC state).
pub type KvUpdates = Vec<(String, Option<String>)>;

impl Store {
    /// Writes key/value entries durably (grouped with the next log commit).
    pub fn kv_put(&self, updates: &[(String, Option<String>)]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        self.send(Job::Batch(Batch {
            dev: String::new(),
            rows: Vec::new(),
            rtime: 0,
            last: None,
            kv: updates.to_vec(),
            durability: Durability::Acknowledged,
            chain: None,
            done: done_tx,
        }))?;
        match done_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Writer(e)),
            Err(_) => Err(StoreError::Writer("log store writer stopped".into())),
        }
    }

    /// Key/value entries whose key starts with `prefix`.
    pub fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.reader();
        let mut st =
            conn.prepare("SELECT key, json FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
        let hi = format!("{prefix}\u{10FFFF}");
        let rows = st.query_map(params![prefix, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row("SELECT json FROM kv WHERE key=?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }
}
