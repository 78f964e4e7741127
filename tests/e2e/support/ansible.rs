//! Running the real `ansible-playbook` against a started lab (tests/ansible.rs and the
//! `ansible` bench): where the script is, the inventory of a ready report, one run's
//! per-task outcome from the `ansible.posix.json` callback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The interpreter the Python clients run under: `FORTILAB_PYTHON` (set by `cargo xtask`),
/// else the `target/venv` an earlier `cargo xtask` run built (the same rule as
/// `support::python_path`; this file is also compiled alone into the ansible bench).
pub fn python() -> String {
    if let Some(p) = std::env::var_os("FORTILAB_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).display().to_string();
    }
    let venv = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("venv/bin/python");
    assert!(
        venv.is_file(),
        "no Python environment: FORTILAB_PYTHON is not set and {} does not exist; run \
         `cargo xtask setup` (or the tests with `cargo xtask test`)",
        venv.display()
    );
    venv.display().to_string()
}

/// `ansible-playbook` next to `$FORTILAB_PYTHON` (its `sys.executable` directory, which is
/// the venv's `bin` for a venv interpreter), else on PATH.
pub fn ansible_playbook() -> PathBuf {
    let py = python();
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new(&py)
        .args([
            "-c",
            "import os, sys; print(os.path.dirname(sys.executable))",
        ])
        .output()
    {
        let d = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !d.is_empty() {
            dirs.push(PathBuf::from(d));
        }
    }
    if let Some(parent) = Path::new(&py)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        dirs.push(parent.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("ansible-playbook"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "ansible-playbook not found next to {py} nor on PATH: run `cargo xtask setup` \
                 (it installs tests/python-requirements.txt, which pins ansible)"
            )
        })
}

/// What one `ansible-playbook` run reported: per task (play name, task name, host) whether
/// it changed or failed, from the `ansible.posix.json` stdout callback.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub tasks: Vec<(String, String, String, bool, bool)>,
    pub stats: Value,
    /// The whole JSON document of the run (plays, tasks, per-host results).
    pub json: Value,
    pub raw: String,
    pub elapsed: Duration,
}

impl Run {
    /// The result of task `task` on `host` (the first play that has it).
    pub fn result(&self, task: &str, host: &str) -> Option<Value> {
        self.json["plays"].as_array()?.iter().find_map(|p| {
            p["tasks"].as_array()?.iter().find_map(|t| {
                (t["task"]["name"] == task)
                    .then(|| t["hosts"][host].clone())
                    .filter(|v| !v.is_null())
            })
        })
    }

    pub fn changed(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.3)
            .map(|t| format!("{} / {} ({})", t.0, t.1, t.2))
            .collect()
    }

    pub fn failed(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.4)
            .map(|t| format!("{} / {} ({})", t.0, t.1, t.2))
            .collect()
    }
}

pub fn run_playbook(dir: &Path, inventory: &Path, extra: &[&str]) -> Run {
    let home = dir.join("ansible-home");
    std::fs::create_dir_all(&home).unwrap();
    let started = Instant::now();
    let out = Command::new(ansible_playbook())
        .arg("-i")
        .arg(inventory)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ansible/ioc-flow.yml"))
        .args(extra)
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_STDOUT_CALLBACK", "ansible.posix.json")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
        .env("ANSIBLE_DEPRECATION_WARNINGS", "false")
        .env("ANSIBLE_PERSISTENT_COMMAND_TIMEOUT", "60")
        .env_remove("ANSIBLE_CONFIG")
        .output()
        .expect("run ansible-playbook");
    let elapsed = started.elapsed();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // The JSON document is the whole stdout (warnings go to stderr).
    let start = raw.find('{').unwrap_or(0);
    let v: Value = serde_json::from_str(&raw[start..]).unwrap_or_else(|e| {
        panic!("ansible-playbook printed no JSON ({e}):\n{raw}\n{err}");
    });
    let mut tasks = Vec::new();
    for play in v["plays"].as_array().into_iter().flatten() {
        let pname = play["play"]["name"].as_str().unwrap_or("").to_string();
        for t in play["tasks"].as_array().into_iter().flatten() {
            let tname = t["task"]["name"].as_str().unwrap_or("").to_string();
            for (host, r) in t["hosts"].as_object().into_iter().flatten() {
                tasks.push((
                    pname.clone(),
                    tname.clone(),
                    host.clone(),
                    r["changed"].as_bool().unwrap_or(false),
                    r["failed"].as_bool().unwrap_or(false),
                ));
            }
        }
    }
    Run {
        ok: out.status.success(),
        tasks,
        stats: v["stats"].clone(),
        json: v.clone(),
        raw: format!("{raw}\n{err}"),
        elapsed,
    }
}

/// The inventory of the started lab: the FortiGate with its admin account (session login)
/// and API token, FortiAnalyzer with its admin account; HTTPS verified against the lab CA.
pub fn write_inventory(dir: &Path, ready: &Value) -> PathBuf {
    let hp = |api: &str| {
        let a = api.trim_start_matches("https://");
        let (h, p) = a.rsplit_once(':').unwrap();
        (h.to_string(), p.to_string())
    };
    let f = &ready["fortigate"];
    let z = &ready["fortianalyzer"];
    let (fh, fp) = hp(f["api"].as_str().unwrap());
    let (zh, zp) = hp(z["api"].as_str().unwrap());
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let text = format!(
        "[fortigates]\nfgt ansible_host={fh} ansible_httpapi_port={fp} ansible_user={} ansible_password={}\n\n\
         [fortigates:vars]\nansible_network_os=fortinet.fortios.fortios\nfgt_token={}\n\n\
         [fortianalyzers]\nfaz ansible_host={zh} ansible_httpapi_port={zp} ansible_user={} ansible_password={}\n\n\
         [fortianalyzers:vars]\nansible_network_os=fortinet.fortimanager.fortimanager\n\n\
         [all:vars]\nansible_connection=httpapi\nansible_httpapi_use_ssl=true\n\
         ansible_httpapi_validate_certs=true\nansible_httpapi_ca_path={}\n\
         ansible_python_interpreter={{{{ ansible_playbook_python }}}}\n",
        s(&f["admin"]["user"]),
        s(&f["admin"]["password"]),
        s(&f["api_token"]),
        s(&z["admin"]["user"]),
        s(&z["admin"]["password"]),
        s(&ready["ca_cert"]),
    );
    let p = dir.join("inventory.ini");
    std::fs::write(&p, text).unwrap();
    p
}
