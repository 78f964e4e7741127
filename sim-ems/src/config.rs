//! The `--config` TOML file of sim-ems.
//!
//! ```toml
//! hostname = "EMS-LAB"
//! version = "6.4.3"
//! ka_interval = 60            # keep-alive interval in lab seconds (fractions allowed)
//! auto_authorize = false      # authorize FortiGates on first contact
//! persistent_connections = true  # FortiClient keeps its telemetry connection open (PERCON=1)
//! [admin]
//! user = "admin"
//! password = "..."
//! [profile]
//! name = "Default"
//! faz = "10.115.1.20:514"     # FortiAnalyzer (lab address) for FortiClient log upload
//! log_upload_enabled = true
//! quarantine_message = "..."
//! ```

use std::path::Path;

use serde::Deserialize;

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub hostname: Option<String>,
    pub version: Option<String>,
    pub ka_interval: Option<f64>,
    pub auto_authorize: Option<bool>,
    pub persistent_connections: Option<bool>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub profile: ProfileConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub name: Option<String>,
    pub faz: Option<String>,
    pub log_upload_enabled: Option<bool>,
    pub quarantine_message: Option<String>,
}

/// A config error with its position.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {msg}")]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub msg: String,
}

/// Parses config text; `path` is only used in messages.
pub fn parse(path: &str, text: &str) -> Result<FileConfig, ConfigError> {
    let cfg: FileConfig = toml::from_str(text).map_err(|err| {
        let line = err
            .span()
            .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1)
            .unwrap_or(1);
        ConfigError {
            path: path.to_string(),
            line,
            msg: err.message().to_string(),
        }
    })?;
    if let Some(ka) = cfg.ka_interval {
        if !(ka.is_finite() && ka > 0.0 && ka <= 86_400.0) {
            let line = line_of(text, "ka_interval");
            return Err(ConfigError {
                path: path.to_string(),
                line,
                msg: format!("ka_interval = {ka}: must be a number of seconds in (0, 86400]"),
            });
        }
    }
    if let Some(faz) = &cfg.profile.faz {
        if faz.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError {
                path: path.to_string(),
                line: line_of(text, "faz"),
                msg: format!("profile.faz = {faz:?}: expected a lab address IP:PORT"),
            });
        }
    }
    Ok(cfg)
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Reads and parses the file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        line: 0,
        msg: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines() {
        let c = parse(
            "c.toml",
            "hostname = \"EMS-X\"\nka_interval = 0.2\n[profile]\nfaz = \"10.115.1.20:514\"\n",
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("EMS-X"));
        assert_eq!(c.ka_interval, Some(0.2));
        let e = parse("c.toml", "hostname = \"a\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("c.toml", "hostname = \"a\"\n\nka_interval = -1\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse("c.toml", "[profile]\nfaz = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
