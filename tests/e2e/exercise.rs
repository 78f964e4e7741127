//! End-to-end tests of guided exercises (`fortilab exercise`): a trainee plays the library's
//! exercises through the devices' own interfaces (FortiOS REST, the FortiGate SSH console,
//! FortiAnalyzer JSON-RPC, EMS REST, the endpoint) and the progress of `GET /_lab/exercise`
//! ticks; each troubleshooting exercise completes with the right fix and stays incomplete with
//! a wrong one; `fortilab validate` names the file and line of a bad exercise.
//! (`cargo test --test e2e exercise::`)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support;
use fortilab_scenarios::attach::Attached;
use fortilab_scenarios::labdef::LabDef;
use fortilab_scenarios::runner::{Ctx, LabControl};
use fortilab_scenarios::timeline::Timeline;
use support::devices::block;
use support::Proc;

/// Every test starts a lab; one at a time, so that latencies mean something on a small machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn exercise_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/exercises")
        .join(name)
}

/// A running `fortilab exercise` and clients of its devices.
struct Lab {
    proc_: Proc,
    dir: PathBuf,
    dash: String,
    token: String,
    ctx: Ctx<Attached>,
}

impl Lab {
    fn start(dir: &Path, exercise: &str) -> Lab {
        let data = dir.join("data");
        let file = exercise_file(exercise);
        let proc_ = Proc::spawn(
            "fortilab",
            dir,
            &[
                "exercise",
                file.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
        );
        let ready_path = dir.join("fortilab.ready.json");
        let report = proc_.ready.clone();
        let dash = report["dashboard"].as_str().unwrap().to_string();
        let token = report["lab_token"].as_str().unwrap().to_string();
        let ctx = block(async {
            let lab = Attached::open(ready_path.to_str().unwrap()).await.unwrap();
            let http = lab.http_client(false).unwrap();
            let cookies = lab.http_client(true).unwrap();
            let timeline = Timeline::new(lab.clock());
            Ctx::from_report(lab.clone(), &lab.report.clone(), http, cookies, timeline)
        });
        Lab {
            proc_,
            dir: dir.to_path_buf(),
            dash,
            token,
            ctx,
        }
    }

    fn ready(&self) -> &Value {
        &self.proc_.ready
    }

    /// A dashboard request with the lab token; (status, JSON body).
    fn dash(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let hostport = self
            .dash
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut s = TcpStream::connect(&hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nX-Fortilab-Token: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (_, rest) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
        // The body may be chunked: take the JSON between the first '{' and the last '}'.
        let json = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) if b >= a => {
                serde_json::from_str(&rest[a..=b]).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        (status, json)
    }

    fn progress(&self) -> Value {
        let (st, v) = self.dash("GET", "/_lab/exercise", None);
        assert_eq!(st, 200, "{v}");
        v
    }

    fn panel(&self) -> Value {
        self.dash("GET", "/api/exercise", None).1
    }

    fn task(&self, id: &str) -> Value {
        self.panel()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    }

    fn done(&self, id: &str) -> bool {
        self.progress()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["done"] == true)
    }

    /// Waits until the current task is `id` and its starting snapshot is taken (in place:
    /// nothing restarts).
    fn wait_current(&self, id: &str) {
        support::wait_for(
            &format!("task {id} current, its snapshot taken"),
            Duration::from_secs(30),
            || {
                let t = self.task(id);
                (self.progress()["current"] == id && t["snapshot"]["saved"] == true).then_some(())
            },
        );
    }

    /// Runs `act` (the trainee's change), then measures how long until task `id` is done.
    fn expect_done_after(&self, id: &str, act: impl FnOnce(&Lab)) -> Duration {
        self.wait_current(id);
        act(self);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(20);
        loop {
            if self.done(id) {
                let d = t0.elapsed();
                eprintln!("task {id}: done {} ms after the change", d.as_millis());
                return d;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {id} not done 20 s after the change; panel: {}\nstderr:\n{}",
                    self.task(id),
                    self.proc_.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs scenario steps (the trainee's actions through the vendor APIs) and asserts each.
    fn steps(&mut self, toml_text: &str) {
        let def = LabDef::parse("actions.toml", toml_text).unwrap();
        let steps = fortilab_scenarios::scenario::parse_steps(&def, toml_text).unwrap();
        for s in steps {
            let out = block(self.ctx.run_step(&s));
            assert!(out.passed, "{}: {}", s.name, out.message);
        }
    }

    fn faz(&self, method: &str, url: &str, params: Value) -> Value {
        block(self.ctx.faz.rpc(method, url, params, true)).unwrap()
    }

    fn ems(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        block(self.ctx.ems.call(method, path, body.as_ref())).unwrap()
    }

    /// Authorizes the FortiGate on EMS through EMS REST.
    fn ems_authorize_fortigate(&self) {
        let list = self.ems("GET", "client_certificates/index", None);
        let id = support::wait_for("the FortiGate on EMS", Duration::from_secs(10), || {
            let list = self.ems("GET", "client_certificates/index", None);
            list["data"][0]["id"].as_u64()
        });
        let _ = list;
        self.ems(
            "PATCH",
            &format!("client_certificates/{id}/set"),
            Some(json!({"authorized": true})),
        );
    }

    /// Runs console lines on the FortiGate over SSH (OpenSSH, exec mode: one line each).
    fn fortigate_console(&self, lines: &str) -> String {
        let port = self.ready()["fortigate"]["ssh"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        let password = self.ready()["fortigate"]["admin"]["password"]
            .as_str()
            .unwrap()
            .to_string();
        let askpass = self.dir.join("askpass.sh");
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = Command::new(support::require_program("ssh", "openssh-client"))
            .args(["-F", "/dev/null", "-p", &port])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .arg("admin@127.0.0.1")
            .arg(lines)
            .stdin(Stdio::null())
            .output()
            .expect("ssh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ssh {lines:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Checks that task `id` stays not done for `hold` after the lab showed `settled`.
    fn stays_incomplete(&self, id: &str, hold: Duration) {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            assert!(!self.done(id), "task {id} ticked after a wrong fix");
            std::thread::sleep(Duration::from_millis(100));
        }
        let p = self.progress();
        assert_eq!(p["current"], id, "{p}");
        assert_ne!(p["done"], p["total"], "{p}");
    }
}

const EICAR: &str = r#"
[[step]]
fetch = { endpoint = "PC-52", url = "http://www.eicar.org/download/eicar.com", ok = true }
"#;

/// The seed exercise, played through the devices' own interfaces: the FortiGate's SSH console
/// and REST API, FortiAnalyzer JSON-RPC, EMS REST, the endpoint; every task ticks within a
/// second of the change. A hint is revealed; a task is started over (the lab snapshot taken
/// when it began is restored).
#[test]
fn seed_exercise_played_through_console_and_rest_ticks_every_task() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "seed-ioc-stitch.toml");
    let p = lab.progress();
    assert_eq!(p["total"], 11, "{p}");
    assert_eq!(p["done"], 0);
    assert_eq!(p["current"], "faz-logging");
    assert_eq!(p["exercise"]["name"], "seed-ioc-stitch");
    assert_eq!(p["last_activity"], Value::Null);
    let mut latencies = Vec::new();

    // 1. Console: logging to FortiAnalyzer, typed into an interactive session that stays open
    // across the next task's start (whose snapshot is taken in place, without restarts).
    let ssh_addr: std::net::SocketAddr = lab.ready()["fortigate"]["ssh"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut console = support::sshconsole::SshConsole::open(
        &lab.dir,
        ssh_addr,
        "admin",
        lab.ready()["fortigate"]["admin"]["password"]
            .as_str()
            .unwrap(),
        "# ",
    );
    latencies.push(lab.expect_done_after("faz-logging", |_| {
        for line in [
            "config log fortianalyzer setting",
            "set status enable",
            "set server 10.115.1.20",
            "set upload-option realtime",
            "end",
        ] {
            console.type_line(line);
        }
    }));
    lab.wait_current("faz-authorize");
    assert!(
        console.is_open(),
        "the console survived the task's snapshot"
    );
    let at = console.type_line("get system status");
    console.wait_output("the console answers after the snapshot", at, |t| {
        t.contains("Version:")
    });
    drop(console);
    let p = lab.progress();
    assert!(
        p["tasks"][0]["done_at"].as_str().unwrap().ends_with('Z'),
        "{p}"
    );
    assert!(p["last_activity"].is_string(), "{p}");

    // A hint, revealed on request.
    let (st, h) = lab.dash(
        "POST",
        "/_lab/exercise/hint",
        Some(&json!({"task": "faz-authorize"})),
    );
    assert_eq!(st, 200, "{h}");
    assert_eq!(h["hint"], 1);
    assert!(h["text"]
        .as_str()
        .unwrap()
        .contains("diagnose dvm device list"));
    assert_eq!(lab.progress()["tasks"][1]["hints_shown"], 1);
    assert_eq!(
        lab.task("faz-authorize")["hints"].as_array().unwrap().len(),
        1
    );

    // 2. FortiAnalyzer JSON-RPC: authorize the FortiGate.
    latencies.push(lab.expect_done_after("faz-authorize", |lab| {
        lab.faz(
            "exec",
            "/dvm/cmd/add/device",
            json!({"adom": "root", "device": {"name": "FGT-LAB"}}),
        );
    }));

    // 3. FortiOS REST: the EMS connector.
    latencies.push(lab.expect_done_after("ems-connector", |lab| {
        block(lab.ctx.fgt.call(
            "POST",
            "/api/v2/cmdb/endpoint-control/fctems",
            Some(&json!({"name": "EMS-LAB", "server": "10.115.1.30", "https-port": 443})),
        ))
        .unwrap();
    }));

    // 4. EMS REST: authorize the FortiGate.
    latencies.push(lab.expect_done_after("ems-authorize", |l| l.ems_authorize_fortigate()));

    // 5. The policy, as the article writes it, through the config-script REST upload.
    lab.wait_current("policy");
    let t0 = Instant::now();
    lab.steps(
        r#"
[[step]]
fgt_cli = """
config firewall policy
    edit 0
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "10.115.2.52/32"
        set dstaddr "all"
        set action accept
        set schedule "always"
        set service "ALL"
        set utm-status enable
        set ssl-ssh-profile "certificate-inspection"
        set webfilter-profile "monitor-all"
        set logtraffic all
        set nat enable
    next
end
"""
"#,
    );
    support::wait_for("policy done", Duration::from_secs(20), || {
        lab.done("policy").then_some(())
    });
    latencies.push(t0.elapsed());

    // 6. Console: the stitch. A wrong start first (disabled), then started over from the
    // task's snapshot, then done right.
    lab.wait_current("stitch");
    lab.fortigate_console(
        "config firewall address\nedit \"scratch\"\nset subnet 10.9.9.9 255.255.255.255\nnext\nend",
    );
    let (st, r) = lab.dash(
        "POST",
        "/_lab/exercise/restart",
        Some(&json!({"task": "stitch"})),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["progress"]["current"], "stitch");
    let (st, _) = block(
        lab.ctx
            .fgt
            .call("GET", "/api/v2/cmdb/firewall/address/scratch", None),
    )
    .unwrap();
    assert_eq!(
        st, 404,
        "the restore brings back the state of the task's start"
    );
    assert!(lab.done("policy"), "earlier tasks stay done");
    latencies.push(lab.expect_done_after("stitch", |lab| {
        lab.fortigate_console(
            "config system automation-stitch\nedit \"Compromised Host Quarantine\"\nset status enable\nnext\nend",
        );
    }));

    // 7. JSON-RPC: FortiAnalyzer's JSON API log.
    latencies.push(lab.expect_done_after("jsonapi-log", |lab| {
        lab.faz(
            "set",
            "/cli/global/system/global",
            json!({"data": {"jsonapi-log": "all"}}),
        );
    }));

    // 8, 9. The EICAR download; FortiAnalyzer, the stitch and EMS do the rest.
    lab.wait_current("eicar");
    lab.steps(EICAR);
    support::wait_for("eicar and quarantine done", Duration::from_secs(30), || {
        (lab.done("eicar") && lab.done("quarantine")).then_some(())
    });

    // 10. EMS REST: release.
    latencies.push(lab.expect_done_after("release", |lab| {
        let ep = block(lab.ctx.ems.endpoint_by_ip("10.115.2.52"))
            .unwrap()
            .unwrap();
        lab.ems(
            "POST",
            "clients/unquarantine",
            Some(json!({"ids": [ep["device_id"]]})),
        );
    }));

    // 11. JSON-RPC: acknowledge.
    lab.wait_current("acknowledge");
    let t0 = Instant::now();
    lab.steps(
        r#"
[[step]]
faz_ack = { ip = "10.115.2.52", comment = "trainee" }
"#,
    );
    support::wait_for("acknowledge done", Duration::from_secs(20), || {
        lab.done("acknowledge").then_some(())
    });
    latencies.push(t0.elapsed());

    let p = lab.progress();
    assert_eq!(p["done"], 11, "{p}");
    assert_eq!(p["current"], Value::Null);
    let worst = latencies.iter().max().unwrap();
    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "progress latency over {} changes: median {} ms, worst {} ms",
        sorted.len(),
        sorted[sorted.len() / 2].as_millis(),
        worst.as_millis()
    );
    assert!(*worst < Duration::from_secs(1), "{latencies:?}");

    // `fortilab exercise status` prints it (exit 0: every task done).
    let out = Command::new(support::bin("fortilab"))
        .args(["exercise", "status", "--ready-file"])
        .arg(dir.path().join("fortilab.ready.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("11/11 task(s) done"), "{text}");
    assert!(
        text.contains("✔  6. The Compromised Host Quarantine automation stitch (stitch)"),
        "{text}"
    );
    lab.proc_.terminate();
}

/// Logs not reaching FortiAnalyzer (logging switched off): the right fix (REST) completes the
/// exercise; a wrong one (the reliable flag) leaves it incomplete.
#[test]
fn troubleshooting_faz_logs_fix_and_wrong_fix() {
    let _s = serial();
    let browse = r#"
[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/", ok = true }
"#;
    {
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab::start(dir.path(), "troubleshoot-faz-logs.toml");
        lab.wait_current("logs-reach-faz");
        lab.steps(
            r#"
[[step]]
fgt_rest = { method = "PUT", path = "/api/v2/cmdb/log.fortianalyzer/setting", body = { reliable = "disable" } }
"#,
        );
        lab.steps(browse);
        lab.stays_incomplete("logs-reach-faz", Duration::from_secs(3));
        lab.proc_.terminate();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "troubleshoot-faz-logs.toml");
    lab.wait_current("logs-reach-faz");
    lab.steps(
        r#"
[[step]]
fgt_rest = { method = "PUT", path = "/api/v2/cmdb/log.fortianalyzer/setting", body = { status = "enable" } }
"#,
    );
    lab.steps(browse);
    support::wait_for("logs reach FortiAnalyzer", Duration::from_secs(20), || {
        lab.done("logs-reach-faz").then_some(())
    });
    lab.wait_current("flow-works");
    lab.steps(EICAR);
    support::wait_for("exercise complete", Duration::from_secs(30), || {
        (lab.progress()["done"] == 2).then_some(())
    });
    lab.proc_.terminate();
}

/// FortiGate not authorized on EMS: the diagnose command on the console, then the right fix
/// (EMS REST) completes the exercise; a wrong one (the stitch off and on again) does not.
#[test]
fn troubleshooting_ems_authorization_fix_and_wrong_fix() {
    let _s = serial();
    {
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab::start(dir.path(), "troubleshoot-ems-authorization.toml");
        let out = lab.expect_done_after("diagnose", |l| {
            l.fortigate_console("diagnose endpoint fctems status");
        });
        assert!(out < Duration::from_secs(1));
        lab.wait_current("authorize");
        lab.fortigate_console(
            "config system automation-stitch\nedit \"Compromised Host Quarantine\"\nset status disable\nnext\nend\nconfig system automation-stitch\nedit \"Compromised Host Quarantine\"\nset status enable\nnext\nend",
        );
        lab.steps(EICAR);
        lab.steps(
            r#"
[[step]]
expect_stitch = { stitch = "Compromised Host Quarantine", runs = 1 }
within = "10s"
"#,
        );
        lab.stays_incomplete("authorize", Duration::from_secs(3));
        assert!(!block(lab.ctx.ems.endpoint_by_ip("10.115.2.52"))
            .unwrap()
            .unwrap()["is_quarantined"]
            .as_bool()
            .unwrap_or(false));
        lab.proc_.terminate();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "troubleshoot-ems-authorization.toml");
    lab.expect_done_after("diagnose", |l| {
        l.fortigate_console("diag endpoint fctems status");
    });
    lab.expect_done_after("authorize", |l| l.ems_authorize_fortigate());
    lab.wait_current("flow-works");
    lab.steps(EICAR);
    support::wait_for("exercise complete", Duration::from_secs(30), || {
        (lab.progress()["done"] == 3).then_some(())
    });
    lab.proc_.terminate();
}

/// IOC level mismatch between the trigger (high) and the verdict (medium): the right fix
/// (`ioc-level medium` on the console) completes the exercise; a wrong one does not.
#[test]
fn troubleshooting_ioc_level_fix_and_wrong_fix() {
    let _s = serial();
    let suspicious = r#"
[[step]]
fetch = { endpoint = "PC-52", url = "http://cdn.sketchy.lab/dl/tool.exe", ok = true }

[[step]]
fetch = { endpoint = "PC-52", url = "http://cdn.sketchy.lab/dl/helper.exe", ok = true }

[[step]]
expect_compromised = { ip = "10.115.2.52", level = "medium" }
within = "10s"
"#;
    {
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab::start(dir.path(), "troubleshoot-ioc-level.toml");
        lab.wait_current("fix-trigger");
        // Wrong: "make sure" the trigger is at level high.
        lab.fortigate_console(
            "config system automation-trigger\nedit \"Compromised Host Quarantine\"\nset ioc-level high\nnext\nend",
        );
        lab.steps(suspicious);
        lab.stays_incomplete("fix-trigger", Duration::from_secs(3));
        lab.proc_.terminate();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "troubleshoot-ioc-level.toml");
    lab.expect_done_after("fix-trigger", |lab| {
        lab.fortigate_console(
            "config system automation-trigger\nedit \"Compromised Host Quarantine\"\nset ioc-level medium\nnext\nend",
        );
    });
    lab.wait_current("flow-works");
    lab.steps(suspicious);
    support::wait_for("exercise complete", Duration::from_secs(30), || {
        (lab.progress()["done"] == 2).then_some(())
    });
    lab.proc_.terminate();
}

/// `fortilab validate` checks exercises: the library's pass; a bad one fails with file:line.
#[test]
fn validate_names_file_and_line_of_a_bad_exercise() {
    let dir = tempfile::tempdir().unwrap();
    let good = exercise_file("seed-ioc-stitch.toml");
    let out = Command::new(support::bin("fortilab"))
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok (exercise, 11 task(s))"), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[exercise]\nname = \"bad\"\n\n[[task]]\nid = \"one\"\ntitle = \"One\"\n\n[[task.check]]\ncmdb = { path = \"firewall/policy\", feilds = { action = \"accept\" } }\n",
    )
    .unwrap();
    let out = Command::new(support::bin("fortilab"))
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:9:", bad.display())) && err.contains("unknown field `feilds`"),
        "{err}"
    );
    // An exercise is not a scenario.
    let out = Command::new(support::bin("fortilab"))
        .arg("run")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fortilab exercise FILE"));
}

/// The dashboard's Exercise panel in headless Chromium: "Show a hint" reveals the current task's
/// first hint, and "Start this task over" restores the lab as the task began (a FortiGate object
/// made after it is gone).
#[test]
fn exercise_panel_in_headless_chromium_shows_a_hint_and_starts_a_task_over() {
    let _s = serial();
    support::require_program("chromium", "chromium");
    support::require_program("chromedriver", "chromium-driver");
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "troubleshoot-faz-logs.toml");
    lab.wait_current("logs-reach-faz");
    support::wait_for(
        "the task's starting snapshot",
        Duration::from_secs(30),
        || (lab.task("logs-reach-faz")["snapshot"]["saved"] == true).then_some(()),
    );
    let address = "/api/v2/cmdb/firewall/address/panel-scratch";
    let (st, body) = block(lab.ctx.fgt.call(
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some(&json!({"name": "panel-scratch", "subnet": "10.9.9.10 255.255.255.255"})),
    ))
    .unwrap();
    assert_eq!(st, 200, "{body}");

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let art = tmp
        .parent()
        .map(PathBuf::from)
        .unwrap_or(tmp)
        .join("test-artifacts/exercise");
    let out = support::python_command(&["selenium"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/exercise_panel.py"))
        .env("DASH", format!("{}?token={}", lab.dash, lab.token))
        .env("TASK", "logs-reach-faz")
        .env("ARTIFACTS", &art)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exercise panel browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(m["badge"], "0/2", "{m:#}");
    assert!(!m["hint"].as_str().unwrap().is_empty(), "{m:#}");
    assert_eq!(lab.progress()["tasks"][0]["hints_shown"], 1);
    assert!(
        m["toast"].as_str().unwrap().contains("logs-reach-faz"),
        "{m:#}"
    );
    let (st, _) = block(lab.ctx.fgt.call("GET", address, None)).unwrap();
    assert_eq!(
        st, 404,
        "the restore brings back the state of the task's start"
    );
    assert_eq!(lab.progress()["current"], "logs-reach-faz");
    lab.proc_.terminate();
}

/// Issue 15: the exercise runner and the dashboard server are supervised. A panic injected
/// into each (`POST /_lab/tasks {"panic": ..}`, lab token) is reported on `/_lab/tasks` and on
/// the timeline, the task is restarted, and it goes on working: the restarted runner still
/// ticks the task the trainee fixes, the restarted server still answers.
#[test]
fn exercise_runner_and_dashboard_server_restart_after_a_panic() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), "troubleshoot-faz-logs.toml");
    lab.wait_current("logs-reach-faz");
    let tasks = |lab: &Lab| {
        let (st, v) = lab.dash("GET", "/_lab/tasks", None);
        assert_eq!(st, 200, "{v}");
        v
    };
    let t = tasks(&lab);
    assert_eq!(t["tasks"]["exercise runner"]["running"], true, "{t}");
    assert_eq!(t["tasks"]["dashboard: server"]["running"], true, "{t}");
    assert_eq!(t["panicked"], 0, "{t}");

    // Only a running task can be made to panic; the body must name one.
    let (st, v) = lab.dash(
        "POST",
        "/_lab/tasks",
        Some(&json!({"panic": "no such task"})),
    );
    assert_eq!(st, 404, "{v}");
    let (st, v) = lab.dash("POST", "/_lab/tasks", Some(&json!({"crash": 1})));
    assert_eq!(st, 400, "{v}");

    for task in ["exercise runner", "dashboard: server"] {
        let (st, v) = lab.dash("POST", "/_lab/tasks", Some(&json!({ "panic": task })));
        assert_eq!(st, 200, "{task}: {v}");
        support::wait_for(
            &format!("{task} restarted"),
            Duration::from_secs(20),
            || {
                let t = tasks(&lab);
                let s = &t["tasks"][task];
                (s["panicked"] == 1 && s["restarted"] == 1 && s["running"] == true).then_some(())
            },
        );
        // On the timeline (its files under the data directory).
        support::wait_for(
            &format!("task.panicked of {task} on the timeline"),
            Duration::from_secs(10),
            || {
                timeline_lines(&lab.dir.join("data/timeline"))
                    .iter()
                    .any(|e| e["kind"] == "task.panicked" && e["task"] == task)
                    .then_some(())
            },
        );
    }
    let t = tasks(&lab);
    assert_eq!(
        t["tasks"]["exercise runner"]["last_panic"],
        fortilab_core::supervise::INJECTED_PANIC,
        "{t}"
    );

    // The restarted runner still follows the lab: the fix ticks the task.
    lab.steps(
        r#"
[[step]]
fgt_rest = { method = "PUT", path = "/api/v2/cmdb/log.fortianalyzer/setting", body = { status = "enable" } }

[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/", ok = true }
"#,
    );
    support::wait_for("logs reach FortiAnalyzer", Duration::from_secs(20), || {
        lab.done("logs-reach-faz").then_some(())
    });
    lab.proc_.terminate();
}

/// The events of a `fortilab up` timeline written so far (`timeline-*.jsonl`).
fn timeline_lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    out
}
