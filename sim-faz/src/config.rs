//! The `--config` TOML file.
//!
//! ```toml
//! hostname = "FAZ-LAB"
//! version = "6.4.5"
//! api_key = "..."                 # default: derived from the seed
//! [admin]
//! user = "admin"
//! password = "..."                # default: derived from the seed
//! [api]
//! session_timeout = 300           # lab seconds of inactivity
//! [tidb]
//! version = "1.00002"
//! black_domain = ["bad.example"]
//! black_ip = ["203.0.113.7"]
//! black_url = ["files.example/x.exe"]
//! suspicious_url = { "crowd.example/t" = 40 }
//! [ioc]
//! notification_throttle = 1440    # minutes
//! suspicious_threshold = 80
//! [store]
//! retention_days = 60
//! max_size_mb = 0                 # 0: unlimited
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::ioc::{IocSettings, TidbAdditions};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub hostname: String,
    pub version: String,
    pub api_key: Option<String>,
    pub admin: AdminConfig,
    pub api: ApiConfig,
    pub tidb: TidbAdditions,
    pub ioc: IocSettings,
    pub store: StoreConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            hostname: "FAZ-LAB".into(),
            version: "6.4.5".into(),
            api_key: None,
            admin: AdminConfig::default(),
            api: ApiConfig::default(),
            tidb: TidbAdditions::default(),
            ioc: IocSettings::default(),
            store: StoreConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub user: String,
    pub password: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            user: "admin".into(),
            password: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Lab seconds of inactivity after which a session expires (-11).
    pub session_timeout: u64,
    /// Most concurrent login sessions (the next login is denied, as on the product).
    pub max_sessions: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_timeout: 300,
            max_sessions: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Days of logs kept (event time); 0 keeps everything.
    pub retention_days: u64,
    /// Largest database size in MiB; 0 is unlimited.
    pub max_size_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention_days: 60,
            max_size_mb: 0,
        }
    }
}

/// Loads the config file; errors read `path:line:column: what`.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// Parses config text; errors read `line:column: what`.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let cfg: FileConfig = toml::from_str(text).map_err(|err| {
        let (line, col) = err
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                (
                    before.matches('\n').count() + 1,
                    before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1,
                )
            })
            .unwrap_or((1, 1));
        format!("{line}:{col}: {}", err.message())
    })?;
    let mut probe = crate::ioc::Tidb::empty("probe");
    probe
        .extend(&cfg.tidb)
        .map_err(|e| format!("1:1: [tidb] {e}"))?;
    if cfg.hostname.trim().is_empty() {
        return Err("1:1: hostname must not be empty".into());
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines() {
        let c = parse("hostname = \"FAZ-X\"\n[tidb]\nblack_domain = [\"bad.example\"]\n[ioc]\nnotification_throttle = 5\n").unwrap();
        assert_eq!(c.hostname, "FAZ-X");
        assert_eq!(c.ioc.notification_throttle, 5);
        assert_eq!(c.version, "6.4.5");
        let e = parse("hostname = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(e.starts_with("2:"), "{e}");
        let e = parse("[tidb]\nblack_ip = [\"zzz\"]\n").unwrap_err();
        assert!(e.contains("zzz"), "{e}");
    }
}
