//! Retention: logs older than the age limit (by arrival, lab time) and, while the database is
//! over its size limit, the oldest logs go: whole segments dropped where they can, else rows
//! deleted in chunks. Runs on the writer thread.

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension};

use super::schema::Seg;
use super::writer::Writer;
use super::{Store, StoreError};

impl Writer {
    fn segs(&self) -> Vec<Seg> {
        self.shared
            .segs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn drop_segment(&mut self, seg: Seg) -> rusqlite::Result<u64> {
        let t = seg.logs_table();
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
        self.shared
            .segs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.n != seg.n);
        self.conn.execute_batch(&format!(
            "BEGIN; DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {}; COMMIT;",
            seg.raws_table()
        ))?;
        self.shared
            .counters
            .segments_dropped
            .fetch_add(1, Ordering::Relaxed);
        Ok(n as u64)
    }

    /// Deletes rows with id below `cut` from a segment, 5,000 per transaction (at most
    /// `max_chunks` transactions).
    fn delete_below(&mut self, seg: Seg, cut: i64, max_chunks: usize) -> rusqlite::Result<u64> {
        let (t, r) = (seg.logs_table(), seg.raws_table());
        let mut deleted = 0u64;
        for _ in 0..max_chunks {
            let hi: Option<i64> = self.conn.query_row(
                &format!(
                    "SELECT max(id) FROM (SELECT id FROM {t} WHERE id < ?1 ORDER BY id LIMIT 5000)"
                ),
                params![cut],
                |r| r.get(0),
            )?;
            let Some(hi) = hi else { break };
            self.conn.execute_batch("BEGIN")?;
            let res = (|| {
                let n = self
                    .conn
                    .execute(&format!("DELETE FROM {t} WHERE id <= ?1"), params![hi])?;
                self.conn
                    .execute(&format!("DELETE FROM {r} WHERE id <= ?1"), params![hi])?;
                self.conn.execute_batch("COMMIT")?;
                Ok(n)
            })();
            match res {
                Ok(n) => deleted += n as u64,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        Ok(deleted)
    }

    fn size_bytes(&self) -> rusqlite::Result<u64> {
        size_of(&self.conn)
    }

    /// Retention (see [`Store::retain`]), on the writer thread.
    fn retain(
        &mut self,
        now_s: i64,
        max_age_s: Option<i64>,
        max_bytes: Option<u64>,
    ) -> rusqlite::Result<u64> {
        let hot = self.hot;
        let mut deleted = 0u64;
        if let Some(age) = max_age_s {
            // By arrival (lab) time, not event time: a lab replaying old logs keeps them.
            // Rows arrive in id order, so everything below the first young row is old.
            let cut = now_s - age;
            for seg in self.segs() {
                let t = seg.logs_table();
                let first_young: Option<i64> = self
                    .conn
                    .query_row(
                        &format!("SELECT id FROM {t} WHERE rtime >= ?1 ORDER BY id LIMIT 1"),
                        params![cut],
                        |r| r.get(0),
                    )
                    .optional()?;
                match first_young {
                    None if seg.n != hot => deleted += self.drop_segment(seg)?,
                    None => deleted += self.delete_below(seg, i64::MAX, usize::MAX)?,
                    Some(id) => {
                        deleted += self.delete_below(seg, id, usize::MAX)?;
                        break;
                    }
                }
            }
        }
        if let Some(max) = max_bytes {
            for _ in 0..100_000 {
                if self.size_bytes()? <= max {
                    break;
                }
                let Some(seg) = self.segs().first().copied() else {
                    break;
                };
                if seg.n != hot {
                    deleted += self.drop_segment(seg)?;
                    continue;
                }
                let n = self.delete_below(seg, i64::MAX, 1)?;
                deleted += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

pub(super) fn size_of(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free) * size) as u64)
}

impl Store {
    /// Retention: deletes logs that arrived more than `max_age_s` ago (lab time) and, while the
    /// database is larger than `max_bytes`, the oldest logs (whole segments where it can, else
    /// in chunks). Returns the number deleted.
    pub fn retain(
        &self,
        now_s: i64,
        max_age_s: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        Ok(self.on_writer(move |w| w.retain(now_s, max_age_s, max_bytes))??)
    }

    /// Bytes in use by the database (pages minus free pages).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        Ok(size_of(&conn)?)
    }
}
