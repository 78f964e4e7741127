//! End-to-end tests (console): the real `sim-fortigate` binary's SSH console driven by
//! OpenSSH's `ssh` (interactive `-tt` and exec) and by paramiko (`tests/py/console_*.py`),
//! with the results checked through the FortiOS REST API; `diagnose automation test` of the
//! seed stitch quarantining the endpoint on the real `sim-ems`; the REST config-script upload
//! running CLI through the same engine.

use crate::support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fortilab_core::http::client::HttpsClient;
use serde_json::{json, Value};
use support::devices::{
    block, endpoint_in_index, fgt_event_logs, fgt_rest, free_port, lab_ca, spawn_ems,
    spawn_endpoints, write_ems_config, EmsSession,
};
use support::{wait_for, Proc};

const LONG: Duration = Duration::from_secs(30);
const STITCH: &str = "Compromised Host Quarantine";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fortilab-console-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running FortiGate and what the tests need to reach it.
struct Fgt {
    p: Proc,
    dir: PathBuf,
    ca_pem: String,
}

impl Fgt {
    fn start(dir: &Path, extra: &[&str]) -> Fgt {
        let fdir = dir.join("fgt");
        let mut args = vec![
            "--name",
            "FGT-LAB",
            "--data-dir",
            fdir.to_str().unwrap(),
            "--timing",
            "fast",
        ];
        args.extend_from_slice(extra);
        let p = Proc::spawn("sim-fortigate", &fdir, &args);
        let ca_path = p.ready["ca_cert"].as_str().unwrap().to_string();
        let ca_pem = std::fs::read_to_string(ca_path).unwrap();
        Fgt {
            p,
            dir: dir.to_path_buf(),
            ca_pem,
        }
    }

    fn ssh_port(&self) -> u16 {
        let s = self.p.ready["ssh"].as_str().expect("ssh in the ready file");
        s.parse::<SocketAddr>().unwrap().port()
    }

    fn password(&self) -> String {
        self.p.ready["admin"]["password"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn rest(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        block(fgt_rest(&self.p, &self.ca_pem, method, path, body))
    }

    fn event_logs(&self, logid: &str) -> Vec<Value> {
        block(fgt_event_logs(&self.p, &self.ca_pem, logid))
    }

    /// An `ssh` command for this FortiGate with `password` supplied through SSH_ASKPASS.
    fn ssh(&self, password: &str, tag: &str) -> Command {
        let askpass = self.dir.join(format!("askpass-{tag}.sh"));
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut c = Command::new(support::require_program("ssh", "openssh-client"));
        c.args(["-F", "/dev/null", "-p", &self.ssh_port().to_string()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "ConnectTimeout=10",
            ])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
        c
    }
}

/// Runs `ssh -tt` feeding `input`; returns (exit ok, transcript).
fn ssh_interactive(fgt: &Fgt, input: &str) -> (bool, String) {
    let mut c = fgt.ssh(&fgt.password(), "ok");
    c.args(["-tt", "admin@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ssh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = wait_output(child, LONG);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn wait_output(child: std::process::Child, timeout: Duration) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.unwrap(),
        Err(_) => {
            support::unsafe_free_kill(pid, "KILL");
            panic!("ssh did not finish within {timeout:?}");
        }
    }
}

/// The prompts in a transcript, in order.
fn prompts(transcript: &str) -> Vec<String> {
    let re = regex_lite(transcript);
    re.into_iter().map(|s| s.trim_end().to_string()).collect()
}

/// `FGT-LAB ... # ` occurrences (a tiny matcher: no regex dependency in the test crate).
fn regex_lite(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("FGT-LAB ") {
        let after = &rest[i..];
        match after.find("# ") {
            Some(j) if j < 80 && !after[..j].contains('\n') => {
                out.push(after[..j + 2].to_string());
                rest = &after[j + 2..];
            }
            _ => rest = &after[8..],
        }
    }
    out
}

/// The seed article's CLI (reference: seed/ioc-automation-stitch-kb.txt), preceded by the
/// address object it names, line by line as a trainee types it.
const SEED_LINES: &[(&str, &str)] = &[
    ("config firewall address", "FGT-LAB (address) #"),
    ("edit \"10.115.2.52/32\"", "FGT-LAB (10.115.2.52/32) #"),
    (
        "set subnet 10.115.2.52 255.255.255.255",
        "FGT-LAB (10.115.2.52/32) #",
    ),
    ("next", "FGT-LAB (address) #"),
    ("end", "FGT-LAB #"),
    ("config firewall policy", "FGT-LAB (policy) #"),
    ("    edit 0", "FGT-LAB (0) #"),
    ("        set srcintf \"port3\"", "FGT-LAB (0) #"),
    ("        set dstintf \"virtual-wan-link\"", "FGT-LAB (0) #"),
    ("        set srcaddr \"10.115.2.52/32\"", "FGT-LAB (0) #"),
    ("        set dstaddr \"all\"", "FGT-LAB (0) #"),
    ("        set action accept", "FGT-LAB (0) #"),
    ("        set schedule \"always\"", "FGT-LAB (0) #"),
    ("        set service \"ALL\"", "FGT-LAB (0) #"),
    ("        set utm-status enable", "FGT-LAB (0) #"),
    (
        "        set ssl-ssh-profile \"certificate-inspection\"",
        "FGT-LAB (0) #",
    ),
    (
        "        set webfilter-profile \"monitor-all\"",
        "FGT-LAB (0) #",
    ),
    ("        set logtraffic all", "FGT-LAB (0) #"),
    ("        set nat enable", "FGT-LAB (0) #"),
    ("    next", "FGT-LAB (policy) #"),
    ("", "FGT-LAB (policy) #"),
    (
        "config system automation-stitch",
        "FGT-LAB (automation-stitch) #",
    ),
    (
        "    edit \"Compromised Host Quarantine\"",
        "FGT-LAB (Compromised Host Quarantine) #",
    ),
    (
        "        set trigger \"Compromised Host Quarantine\"",
        "FGT-LAB (Compromised Host Quarantine) #",
    ),
    (
        "        set action \"Compromised Host Quarantine_quarantine-forticlient\"",
        "FGT-LAB (Compromised Host Quarantine) #",
    ),
    ("    next", "FGT-LAB (automation-stitch) #"),
    ("end", "FGT-LAB #"),
];

fn check_seed_result(fgt: &Fgt) {
    let v = fgt.rest("GET", "/api/v2/cmdb/firewall/policy", None);
    let pol = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["webfilter-profile"] == "monitor-all")
        .unwrap_or_else(|| panic!("no monitor-all policy: {v}"))
        .clone();
    assert_eq!(pol["srcintf"][0]["name"], "port3");
    assert_eq!(pol["srcaddr"][0]["name"], "10.115.2.52/32");
    assert_eq!(pol["logtraffic"], "all");
    assert_ne!(pol["policyid"], 0);
    let v = fgt.rest(
        "GET",
        "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine",
        None,
    );
    let st = &v["results"][0];
    assert_eq!(st["trigger"], STITCH, "{v}");
    assert_eq!(
        st["action"][0]["name"], "Compromised Host Quarantine_quarantine-forticlient",
        "{v}"
    );
    // The trigger and action the stitch names exist (factory objects).
    let v = fgt.rest(
        "GET",
        "/api/v2/cmdb/system/automation-trigger/Compromised%20Host%20Quarantine",
        None,
    );
    assert_eq!(v["results"][0]["event-type"], "ioc", "{v}");
    let v = fgt.rest(
        "GET",
        "/api/v2/cmdb/system/automation-action/Compromised%20Host%20Quarantine_quarantine-forticlient",
        None,
    );
    assert_eq!(
        v["results"][0]["action-type"], "quarantine-forticlient",
        "{v}"
    );
}

#[test]
fn openssh_runs_the_seed_snippets_interactively_with_fortios_prompts_help_and_errors() {
    let dir = tmpdir("openssh");
    let fgt = Fgt::start(&dir, &[]);
    let mut input = String::new();
    for (l, _) in SEED_LINES {
        input.push_str(l);
        input.push('\n');
    }
    // `?` help (not inserted into the line), then Ctrl-U clears the line; errors for a wrong
    // field, a wrong value and a missing reference; `abort` discards the entry.
    input.push_str("config firewall policy\nedit 0\nset act?\x15set action ?\x15");
    input.push_str("set nosuchfield 1\nset action maybe\nset srcaddr nowhere\nabort\nend\n");
    input.push_str("get system status\nshow system automation-stitch\nexit\n");
    let (ok, out) = ssh_interactive(&fgt, &input);
    assert!(ok, "ssh failed:\n{out}");
    // Every prompt, in order: the initial one, then one after each line.
    let got = prompts(&out);
    let mut want: Vec<String> = vec!["FGT-LAB #".into()];
    want.extend(SEED_LINES.iter().map(|(_, p)| p.to_string()));
    assert_eq!(&got[..want.len()], &want[..], "transcript:\n{out}");
    check_seed_result(&fgt);
    // Help texts and FortiOS error wording.
    assert!(
        out.contains("action      Policy action (allow/deny/ipsec)."),
        "{out}"
    );
    assert!(
        out.contains("accept      Allows session that match the firewall policy."),
        "{out}"
    );
    assert!(
        out.contains("command parse error before 'nosuchfield'\r\nCommand fail. Return code -61")
    );
    assert!(out.contains("command parse error before 'maybe'\r\nCommand fail. Return code -61"));
    assert!(out.contains(
        "entry not found in datasource\r\n\r\nvalue parse error before 'nowhere'\r\nCommand fail. Return code -3"
    ));
    assert!(out.contains("Hostname: FGT-LAB"), "{out}");
    assert!(
        out.contains("Version: FortiGate-VM64 v6.4.4,build1803"),
        "{out}"
    );
    assert!(out.contains("set action \"Compromised Host Quarantine_quarantine-forticlient\""));
    // The aborted entry was not committed: still exactly one policy.
    let v = fgt.rest("GET", "/api/v2/cmdb/firewall/policy", None);
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    // Login log and config-change logs with the console as the origin.
    let login = wait_for("0100032001", LONG, || {
        let l = fgt.event_logs("0100032001");
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(login[0]["method"], "ssh");
    assert_eq!(login[0]["user"], "admin");
    let changes = fgt.event_logs("0100044547");
    assert!(
        changes
            .iter()
            .any(|l| l["cfgpath"] == "firewall.policy" && l["ui"] == "ssh(127.0.0.1)"),
        "{changes:?}"
    );
    wait_for("logout log 0100032003", LONG, || {
        (!fgt.event_logs("0100032003").is_empty()).then_some(())
    });

    // Non-interactive: `ssh admin@fgt "show firewall policy"`.
    let mut c = fgt.ssh(&fgt.password(), "ok");
    c.args(["admin@127.0.0.1", "show firewall policy"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(c.spawn().unwrap(), LONG);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("config firewall policy\n"), "{text}");
    assert!(
        text.contains("set webfilter-profile \"monitor-all\""),
        "{text}"
    );
    // A failing command gives a non-zero exit status.
    let mut c = fgt.ssh(&fgt.password(), "ok");
    c.args(["admin@127.0.0.1", "show firewall nosuchtable"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(c.spawn().unwrap(), LONG);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("command parse error before 'nosuchtable'")
    );
}

#[test]
fn an_over_long_line_is_refused_and_an_idle_console_closes_after_admintimeout() {
    let dir = tmpdir("idle");
    let cfg = dir.join("idle.conf");
    std::fs::write(&cfg, "config system global\n    set admintimeout 1\nend\n").unwrap();
    // At ×60 the lab clock makes admintimeout's one minute one real second.
    let fgt = Fgt::start(
        &dir,
        &["--config", cfg.to_str().unwrap(), "--clock-speed", "60"],
    );
    let mut c = fgt.ssh(&fgt.password(), "idle");
    c.args(["-tt", "admin@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ssh");
    let mut stdin = child.stdin.take().unwrap();
    // A 5,000-character line (FortiOS refuses over-long input), then a normal command.
    let long = "x".repeat(5000);
    stdin
        .write_all(format!("{long}\nget system status\n").as_bytes())
        .unwrap();
    let started = std::time::Instant::now();
    // stdin stays open: only the idle timeout can end the session.
    let out = wait_output(child, LONG);
    let elapsed = started.elapsed();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Command line too long (more than 4096 characters)"),
        "{text}"
    );
    assert!(
        text.contains("Version: FortiGate-VM64"),
        "the session goes on after the refused line: {text}"
    );
    assert!(
        !text.contains(&"x".repeat(4097)),
        "keys past the limit are not echoed"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "closed after {elapsed:?}"
    );
    // The logout log says why.
    let logs = wait_for("the timeout logout log", LONG, || {
        let l = fgt.event_logs("0100032003");
        l.iter().any(|l| l["reason"] == "timeout").then_some(l)
    });
    let l = logs.iter().find(|l| l["reason"] == "timeout").unwrap();
    assert_eq!(l["action"], "logout", "{l}");
    assert!(l["msg"].as_str().unwrap().contains("timed out"), "{l}");
}

#[test]
fn wrong_password_is_refused_and_logged() {
    let dir = tmpdir("badpw");
    let fgt = Fgt::start(&dir, &[]);
    let mut c = fgt.ssh("not-the-password", "bad");
    c.args(["admin@127.0.0.1", "get system status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(c.spawn().unwrap(), LONG);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let fails = wait_for("0100032002", LONG, || {
        let l = fgt.event_logs("0100032002");
        (!l.is_empty()).then_some(l)
    });
    let f = &fails[0];
    assert_eq!(f["user"], "admin");
    assert_eq!(f["action"], "login");
    assert_eq!(f["status"], "failed");
    assert_eq!(f["reason"], "passwd_invalid");
    assert_eq!(f["srcip"], "127.0.0.1");
    assert_eq!(f["level"], "alert");
    assert!(fgt.event_logs("0100032001").is_empty());
}

#[test]
fn paramiko_interactive_shell_and_exec_command() {
    let dir = tmpdir("paramiko");
    let fgt = Fgt::start(&dir, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/console_paramiko.py");
    let out = support::python_command(&["paramiko"])
        .arg(script)
        .env("FGT_SSH_PORT", fgt.ssh_port().to_string())
        .env("FGT_PASSWORD", fgt.password())
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paramiko script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    check_seed_result(&fgt);
}

#[test]
fn config_script_upload_runs_cli_through_the_same_engine() {
    use base64::Engine as _;
    let dir = tmpdir("script");
    let fgt = Fgt::start(&dir, &[]);
    let script = "config firewall address\n    edit \"lab-host\"\n        set subnet 10.115.2.60/32\n    next\nend\nconfig system global\n    set hostname \"FGT-SCRIPT\"\nend\nconfig firewall address\n    edit bad\n        set nosuchfield 1\n    next\nend\n";
    let v = fgt.rest(
        "POST",
        "/api/v2/monitor/system/config-script/upload",
        Some(json!({"filename": "lab.txt",
                    "file_content": base64::engine::general_purpose::STANDARD.encode(script)})),
    );
    assert_eq!(v["status"], "success", "{v}");
    let r = &v["results"];
    assert_eq!(r["name"], "lab.txt");
    assert_eq!(r["status"], "error", "one command failed: {v}");
    assert_eq!(r["failed"], 1);
    let output = r["output"].as_str().unwrap();
    assert!(
        output.contains("FGT-LAB (lab-host) # set subnet"),
        "{output}"
    );
    assert!(
        output.contains("command parse error before 'nosuchfield'"),
        "{output}"
    );
    // The good commands took effect (same validation and commit as the console and REST).
    let a = fgt.rest("GET", "/api/v2/cmdb/firewall/address/lab-host", None);
    assert_eq!(
        a["results"][0]["subnet"], "10.115.2.60 255.255.255.255",
        "{a}"
    );
    let g = fgt.rest("GET", "/api/v2/monitor/system/status", None);
    assert_eq!(g["results"]["hostname"], "FGT-SCRIPT");
    let changes = fgt.event_logs("0100044547");
    assert!(
        changes
            .iter()
            .any(|l| l["cfgobj"] == "lab-host" && l["user"] == "fortilab"),
        "{changes:?}"
    );
    let h = fgt.rest("GET", "/api/v2/monitor/system/config-script", None);
    let runs = h["results"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{h}");
    assert_eq!(runs[0]["name"], "lab.txt");
    // The missing content is a 424, like other missing parameters.
    let v = fgt.rest(
        "POST",
        "/api/v2/monitor/system/config-script/upload",
        Some(json!({"filename": "x"})),
    );
    assert_eq!(v["http_status"], 424, "{v}");
}

// ------------------------------------------------------------------------------------------
// diagnose automation test → EMS quarantine (real sim-ems and sim-endpoint).

fn ems_signin(ca_pem: &str, port: u16) -> (HttpsClient, EmsSession) {
    let client = HttpsClient::new(ca_pem, None, format!("127.0.0.1:{port}").parse().unwrap())
        .unwrap()
        .with_lab_token(support::lab_token());
    let session = block(EmsSession::signin(&client, port));
    (client, session)
}

fn ems_endpoint(ems: &(HttpsClient, EmsSession), ip: &str) -> Option<Value> {
    let r = block(ems.1.call(
        &ems.0,
        "GET",
        "/api/v1/endpoints/index?offset=0&count=100",
        None,
    ))
    .ok()?;
    endpoint_in_index(&r.json(), ip)
}

#[test]
fn diagnose_automation_test_quarantines_the_endpoint_on_ems() {
    let dir = tmpdir("diag");
    let (ca, ca_cert, ca_key) = lab_ca(&dir, "test");
    let (ca_cert, ca_key) = (ca_cert.display().to_string(), ca_key.display().to_string());
    let (ems_port, tel_port) = (free_port(), free_port());
    let map = json!({"services": {
        "10.115.1.30:443": format!("127.0.0.1:{ems_port}"),
        "10.115.1.30:8013": format!("127.0.0.1:{tel_port}"),
        "10.115.2.1:8080": format!("127.0.0.1:{}", free_port()),
    }});
    let map_path = dir.join("labmap.json");
    std::fs::write(&map_path, map.to_string()).unwrap();
    let map_path = map_path.display().to_string();
    let ems_cfg = write_ems_config(&dir, 0.1, None);
    let _ems = spawn_ems(
        &dir,
        ems_port,
        tel_port,
        &ems_cfg,
        &["--lab-ip", "10.115.1.30", "--auto-authorize"],
    );
    let _ep = spawn_endpoints(&dir, 1);
    let ca_pem = ca.cert_pem().to_string();
    let ems = ems_signin(&ca_pem, ems_port);
    wait_for("PC-52 registered on EMS", LONG, || {
        ems_endpoint(&ems, "10.115.2.52")
    });
    let cfg = dir.join("fgt.conf");
    std::fs::write(
        &cfg,
        "config endpoint-control fctems\n    edit \"EMS-LAB\"\n        set server \"10.115.1.30\"\n        set https-port 443\n        set status-check-interval 5\n    next\nend\n",
    )
    .unwrap();
    let fgt = Fgt::start(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--ca-cert",
            &ca_cert,
            "--ca-key",
            &ca_key,
            "--lab-map",
            &map_path,
        ],
    );
    // The seed stitch, typed on the console (enabled: the factory one is disabled).
    let (ok, out) = ssh_interactive(
        &fgt,
        "config system automation-stitch\nedit \"Compromised Host Quarantine\"\nset status enable\nset trigger \"Compromised Host Quarantine\"\nset action \"Compromised Host Quarantine_quarantine-forticlient\"\nnext\nend\nexit\n",
    );
    assert!(ok, "{out}");
    // The EMS connector, as the console shows it.
    let exec = |cmd: &str| -> (bool, String) {
        let mut c = fgt.ssh(&fgt.password(), "ok");
        c.args(["admin@127.0.0.1", cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = wait_output(c.spawn().unwrap(), LONG);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    wait_for("EMS connector connected (fcnacd 2)", LONG, || {
        let (_, t) = exec("diagnose test application fcnacd 2");
        t.contains("connection status: connected").then_some(())
    });
    let (ok, t) = exec(
        "diagnose automation test \"Compromised Host Quarantine\" 'date=2021-03-04 time=10:11:22 logid=0100022953 type=event subtype=system level=warning vd=root logdesc=\"Compromised host detected\" srcip=10.115.2.52'",
    );
    assert!(ok, "{t}");
    assert_eq!(
        t,
        "automation test is done. stitch:Compromised Host Quarantine\n"
    );
    wait_for("quarantined on EMS", LONG, || {
        ems_endpoint(&ems, "10.115.2.52")
            .filter(|e| e["is_quarantined"] == 1 || e["is_quarantined"] == true)
    });
    let trig = wait_for("0100046600", LONG, || {
        let l = fgt.event_logs("0100046600");
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(trig[0]["stitch"], STITCH);
    // autod 3 shows the run; the memory log through `execute log display`.
    let (_, t) = exec("diagnose test application autod 3");
    assert!(
        t.contains("stitch: Compromised Host Quarantine\n\tlocal hit: 1"),
        "{t}"
    );
    let (_, t) = exec("execute log filter field logid 0100046600\nexecute log display");
    assert!(t.contains("1 logs found."), "{t}");
    assert!(t.contains("logid=\"0100046600\""), "{t}");
}
