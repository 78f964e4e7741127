//! A classroom (`fortilab class up`): N isolated labs on one machine, one instructor page and
//! one trainee page per lab.
//!
//! - [`labs`]: the class's labs: each a `fortilab up` (or `fortilab exercise`) child process
//!   with its own data directory (own ports, lab CA, random credentials, lab token), started
//!   concurrently and supervised with [`crate::procs::DeviceProc`] (stdin pipe: no lab outlives
//!   its class), or an attached lab (`--attach READY_FILE_OR_URL`, see [`crate::attach`]);
//!   progress from each lab dashboard's `GET /_lab/exercise`, last activity from the devices'
//!   event streams (`/_lab/events`);
//! - [`server`]: the instructor page and the trainee pages, each on its own loopback listener
//!   behind the dashboard's [`crate::dashboard::guard`] with its own token;
//! - this module: the pure parts (names, class file, activity rule, the status table).

pub mod labs;
pub mod run;
pub mod server;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The class file (mode 0600) under the class data directory: instructor and trainee URLs and
/// tokens; `fortilab class status` reads it.
pub const CLASS_FILE: &str = "class.json";

/// The default class data directory (`$TMPDIR/fortilab-class`).
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("fortilab-class")
}

/// Trainee names from a names file: one per line; blank lines and `#` comments are skipped.
pub fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The trainee of lab `index` (1-based): the names file's line, else `trainee-<index>`.
pub fn trainee_name(names: &[String], index: usize) -> String {
    names
        .get(index - 1)
        .cloned()
        .unwrap_or_else(|| format!("trainee-{index}"))
}

/// How many labs a class has and which are attached: `--labs N` started here plus one per
/// `--attach`; a names file longer than that is an error (a trainee without a lab).
pub fn class_size(labs: usize, attached: usize, names: usize) -> Result<usize, String> {
    let n = labs + attached;
    if n == 0 {
        return Err("a class needs at least one lab: --labs N or --attach".into());
    }
    if names > n {
        return Err(format!(
            "the names file has {names} trainees for {n} lab(s): give --labs {}",
            names - attached
        ));
    }
    Ok(n)
}

/// Whether a device event is a trainee's doing (last activity): a configuration change (REST,
/// console, script), an administrator's login or logout on any device, or one of the actions a
/// trainee takes on FortiAnalyzer, EMS or the FortiGate's monitor API. Device chatter
/// (registrations, keep-alives, logs, per-request records such as the lab dashboard's own
/// polls) is not; an authorization counts only when it names who did it (the seed lab
/// authorizes by itself at start).
pub fn is_activity(ev: &Value) -> bool {
    use fortilab_core::EventKind;
    let Some(kind) = crate::timeline::kind_of(ev) else {
        return false;
    };
    let has_user = ev
        .get("user")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    match kind {
        EventKind::ConfigChange
        | EventKind::ConfigScript
        | EventKind::ConsoleConfig
        | EventKind::ConsoleLogin
        | EventKind::ConsoleLogout
        | EventKind::AdminLogin
        | EventKind::AdminLogout
        | EventKind::ApiLogin
        | EventKind::EmsSignin
        | EventKind::IocAck
        | EventKind::IocNotifyAcked
        | EventKind::StitchTest
        | EventKind::BannedAdd
        | EventKind::BannedClear
        | EventKind::BannedClearAll
        | EventKind::FazRestart
        | EventKind::EmsUnquarantine
        | EventKind::EndpointFetch => true,
        EventKind::DeviceAuthorized | EventKind::DeviceDeleted | EventKind::EmsDevicesDeleted => {
            has_user
        }
        _ => false,
    }
}

/// One row of `fortilab class status` per lab, from the instructor's `GET /api/class`.
pub fn render_table(class: &Value) -> String {
    let mut rows = vec![[
        "LAB".to_string(),
        "TRAINEE".to_string(),
        "STATUS".to_string(),
        "PROGRESS".to_string(),
        "CURRENT TASK".to_string(),
        "LAST ACTIVITY".to_string(),
        "DASHBOARD".to_string(),
    ]];
    for l in class["labs"].as_array().into_iter().flatten() {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let progress = match &l["progress"] {
            Value::Null => "no exercise".to_string(),
            p => format!(
                "{}/{}",
                p["done"].as_u64().unwrap_or(0),
                p["total"].as_u64().unwrap_or(0)
            ),
        };
        let current = match &l["progress"]["current"] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let activity = match l["last_activity"]["ago_s"].as_f64() {
            Some(a) => format!(
                "{} ago ({})",
                ago(a),
                l["last_activity"]["kind"].as_str().unwrap_or("-")
            ),
            None => "-".to_string(),
        };
        rows.push([
            l["index"].as_u64().unwrap_or(0).to_string(),
            s(&l["trainee"]),
            s(&l["status"]),
            progress,
            current,
            activity,
            s(&l["dashboard"]),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `12 s`, `3 min`, `2 h`.
pub fn ago(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Reads the class file of a class data directory.
pub fn read_class_file(dir: &Path) -> anyhow::Result<Value> {
    let p = dir.join(CLASS_FILE);
    let text = std::fs::read_to_string(&p).map_err(|err| {
        anyhow::anyhow!(
            "{}: {err} (is a class running? `fortilab class up` writes it; give its --data-dir)",
            p.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Whether a process id names a live process (the class file's `pid`).
pub fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The class file's content (tokens included: it is written 0600 and never logged).
pub fn class_file_json(
    pid: u32,
    instructor_url: &str,
    instructor_token: &str,
    labs: &[Value],
) -> Value {
    json!({
        "pid": pid,
        "instructor": {
            "url": instructor_url,
            "token": instructor_token,
            "sign_in": format!("{instructor_url}?token={instructor_token}"),
        },
        "labs": labs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_skip_blanks_and_comments_and_default_per_lab() {
        let n = parse_names("Alice\n\n  Bob  # row 2\n# nobody\nCarol\n");
        assert_eq!(n, vec!["Alice", "Bob", "Carol"]);
        assert_eq!(trainee_name(&n, 2), "Bob");
        assert_eq!(trainee_name(&n, 4), "trainee-4");
    }

    #[test]
    fn class_size_counts_started_and_attached_labs() {
        assert_eq!(class_size(3, 0, 2), Ok(3));
        assert_eq!(class_size(2, 1, 3), Ok(3));
        assert!(class_size(0, 0, 0).is_err());
        let e = class_size(2, 0, 3).unwrap_err();
        assert!(e.contains("--labs 3"), "{e}");
    }

    #[test]
    fn activity_is_what_an_administrator_did() {
        assert!(is_activity(
            &json!({"kind": "config.change", "user": "api-admin"})
        ));
        assert!(is_activity(
            &json!({"kind": "admin.login", "user": "admin", "status": "success"})
        ));
        assert!(is_activity(&json!({"kind": "ioc.notify.acked"})));
        assert!(!is_activity(&json!({"kind": "endpoint.keepalive"})));
        assert!(!is_activity(&json!({"kind": "log.traffic", "user": ""})));
        assert!(!is_activity(
            &json!({"kind": "endpoint.registered", "user": "alice"})
        ));
        assert!(!is_activity(
            &json!({"kind": "api.request", "user": "fortilab"})
        ));
        assert!(!is_activity(&json!({"kind": "device.authorized"})));
        assert!(is_activity(
            &json!({"kind": "device.authorized", "user": "admin"})
        ));
        assert!(!is_activity(&json!({"kind": "lab.auto_authorize"})));
    }

    #[test]
    fn the_status_table_has_one_row_per_lab() {
        let class = json!({"labs": [
            {"index": 1, "trainee": "Alice", "status": "ready", "dashboard": "http://127.0.0.1:1/",
             "progress": {"done": 2, "total": 5, "current": "stitch"},
             "last_activity": {"ago_s": 4.2, "kind": "config.change"}},
            {"index": 2, "trainee": "Bob", "status": "starting", "progress": null, "last_activity": null},
        ]});
        let t = render_table(&class);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].contains("Alice")
                && lines[1].contains("2/5")
                && lines[1].contains("4 s ago (config.change)"),
            "{t}"
        );
        assert!(
            lines[2].contains("no exercise") && lines[2].contains("starting"),
            "{t}"
        );
        assert_eq!(ago(200.0), "3 min");
    }
}
