//! `config system global` (host name, time zone, JSON API log, ADOM and workspace modes) and
//! the lab-local time it gives: shared by the JSON-RPC API and the console, persisted under
//! `settings:global`.

use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{kv_json, Faz};

/// `config system global` settings the API exposes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GlobalSettings {
    pub hostname: String,
    pub timezone: String,
    /// `disable`, `request`, `response` or `all`.
    pub jsonapi_log: String,
    pub adom_status: String,
    pub workspace_mode: String,
}

/// `config system global` in force, behind its own lock.
#[derive(Debug)]
pub struct Settings {
    global: Mutex<GlobalSettings>,
}

impl Settings {
    pub(super) fn new(global: GlobalSettings) -> Self {
        Self {
            global: Mutex::new(global),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, GlobalSettings> {
        self.global.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `config system global` in force.
    pub fn global(&self) -> GlobalSettings {
        self.lock().clone()
    }

    /// Replaces it in memory (see [`Faz::save_global`] to persist it too).
    pub fn set_global(&self, g: GlobalSettings) {
        *self.lock() = g;
    }
}

impl Faz {
    /// A lab instant as `YYYY-MM-DD hh:mm:ss` in the configured time zone.
    pub fn display_time(&self, t: i64) -> String {
        let (d, tm) =
            fortilab_core::clock::format_date_time(t + self.tz_offset_minutes() as i64 * 60);
        format!("{d} {tm}")
    }

    /// The `config system global` time zone code in force (a code the table does not know,
    /// such as an old `UTC`, falls back to the lab clock's offset).
    pub fn tz_code(&self) -> String {
        let g = self.settings.lock().timezone.clone();
        if crate::tz::by_code(&g).is_some() {
            return g;
        }
        crate::tz::code_for_offset(self.clock.tz_minutes())
            .unwrap_or("80")
            .to_string()
    }

    /// The offset from UTC, in minutes, of the configured time zone.
    pub fn tz_offset_minutes(&self) -> i32 {
        crate::tz::by_code(&self.tz_code())
            .map(|z| z.1)
            .unwrap_or_else(|| self.clock.tz_minutes())
    }

    /// Replaces `config system global` (shared by the JSON-RPC API and the console) and
    /// persists it before returning.
    pub fn save_global(&self, g: GlobalSettings) -> anyhow::Result<()> {
        self.store
            .kv_put(&[("settings:global".into(), kv_json(&g))])?;
        if g.hostname != self.bus.device() {
            self.bus.set_device(&g.hostname);
        }
        *self.settings.lock() = g;
        Ok(())
    }
}
