//! `fortilab console fortigate|fortianalyzer [--ready-file F]`: opens the device's SSH console
//! of a running `fortilab up`. Reads the lab's ready file (`--ready-file`, else
//! `$FORTILAB_READY_FILE`), prints the admin password, then runs the system `ssh` client with
//! `-p PORT admin@127.0.0.1`, host keys checked against a lab `known_hosts` file under the lab
//! data directory (`StrictHostKeyChecking=accept-new`: the first connection records the
//! device's key, a changed key is refused).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

/// Environment variable naming the ready file when `--ready-file` is not given.
pub const READY_ENV: &str = "FORTILAB_READY_FILE";

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleTarget {
    /// `fortigate` or `fortianalyzer`.
    pub device: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub known_hosts: PathBuf,
}

/// The ready-file key of a device name (`fortigate`, `fgt`, `fortianalyzer`, `faz`).
pub fn device_key(device: &str) -> Option<&'static str> {
    match device.to_ascii_lowercase().as_str() {
        "fortigate" | "fgt" => Some("fortigate"),
        "fortianalyzer" | "faz" => Some("fortianalyzer"),
        _ => None,
    }
}

/// Reads the console target of `device` from a ready report.
pub fn target(ready: &Value, ready_path: &Path, device: &str) -> Result<ConsoleTarget, String> {
    let key = device_key(device)
        .ok_or_else(|| format!("unknown device '{device}' (fortigate or fortianalyzer)"))?;
    let d = &ready[key];
    if d.is_null() {
        return Err(format!("the lab has no {key}"));
    }
    let ssh = d["ssh"]
        .as_str()
        .ok_or_else(|| format!("the {key} has no SSH console in the ready file"))?;
    let (host, port) = ssh
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bad ssh address '{ssh}'"))?;
    let user = d["admin"]["user"].as_str().unwrap_or("admin").to_string();
    let password = d["admin"]["password"].as_str().unwrap_or("").to_string();
    // The lab data directory holds `ca/ca.pem`; the known_hosts file goes next to `ca/`.
    let data_dir = ready["ca_cert"]
        .as_str()
        .map(PathBuf::from)
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .or_else(|| ready_path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(ConsoleTarget {
        device: key.to_string(),
        name: d["name"].as_str().unwrap_or(key).to_string(),
        host,
        port,
        user,
        password,
        known_hosts: data_dir.join("known_hosts"),
    })
}

/// The `ssh` arguments for a target.
pub fn ssh_args(t: &ConsoleTarget) -> Vec<String> {
    vec![
        "-p".into(),
        t.port.to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", t.known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        "PreferredAuthentications=password,keyboard-interactive".into(),
        "-o".into(),
        "PubkeyAuthentication=no".into(),
        format!("{}@{}", t.user, t.host),
    ]
}

/// Where `fortilab up` writes its ready report when `--ready-file` is not given (the most
/// recently started lab), and where `fortilab console` looks for it by default.
pub fn default_ready_file() -> PathBuf {
    std::env::temp_dir().join("fortilab-ready.json")
}

/// Runs the subcommand.
pub fn main(device: &str, ready_file: Option<PathBuf>) -> ExitCode {
    let path = ready_file
        .or_else(|| std::env::var_os(READY_ENV).map(PathBuf::from))
        .unwrap_or_else(default_ready_file);
    if !path.exists() {
        eprintln!(
            "fortilab console: no running lab: {} does not exist (start one with `fortilab up`, or pass the lab's `--ready-file`, or set {READY_ENV})",
            path.display()
        );
        return ExitCode::from(2);
    }
    let ready: Value = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fortilab console: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let t = match target(&ready, &path, device) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fortilab console: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} console: ssh {}@{} -p {} (password: {})",
        t.name, t.user, t.host, t.port, t.password
    );
    let mut cmd = Command::new("ssh");
    cmd.args(ssh_args(&t));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        eprintln!("fortilab console: cannot run ssh: {err}");
        ExitCode::from(1)
    }
    #[cfg(not(unix))]
    {
        match cmd.status() {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("fortilab console: cannot run ssh: {e}");
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_the_ready_file() {
        let ready = serde_json::json!({
            "ca_cert": "/lab/data/ca/ca.pem",
            "fortigate": {"name": "FGT-LAB", "ssh": "127.0.0.1:2222",
                          "admin": {"user": "admin", "password": "pw"}},
            "fortianalyzer": {"name": "FAZ-LAB", "admin": {"user": "admin", "password": "x"}}
        });
        let t = target(&ready, Path::new("/x/ready.json"), "fgt").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 2222));
        assert_eq!(t.known_hosts, PathBuf::from("/lab/data/known_hosts"));
        let args = ssh_args(&t);
        assert_eq!(args.last().unwrap(), "admin@127.0.0.1");
        assert!(args.contains(&"StrictHostKeyChecking=accept-new".to_string()));
        assert!(target(&ready, Path::new("r"), "fortianalyzer")
            .unwrap_err()
            .contains("no SSH console"));
        assert!(target(&ready, Path::new("r"), "ems").is_err());
    }
}
