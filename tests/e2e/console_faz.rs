//! End-to-end tests (console_faz): the FortiAnalyzer CLI over SSH on a real `sim-faz` process.
//!
//! - OpenSSH's `ssh -tt` (password through `SSH_ASKPASS`) types the seed article's
//!   `config system global` / `set jsonapi-log all` / `end`; the prompts change as on the real
//!   device; afterwards JSON-RPC requests appear in the FortiAnalyzer event log, `get
//!   /cli/global/system/global` shows `all`, and the setting survives a restart.
//! - paramiko `invoke_shell`: the same lines, `?` help, wrong field and value wording, the TIDB
//!   lookup of the EICAR domain, and a wrong password refused and written to the event log.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::devices::{faz_rpc, lab_ca, spawn_faz};
use support::{wait_for, Proc};

/// FAZ's own event logs matching `filter` (two-step log search).
fn event_logs(faz: &Proc, filter: &str) -> Vec<Value> {
    let r = faz_rpc(
        faz,
        &json!({"jsonrpc":"2.0","id":1,"method":"add","params":[{"url":"/logview/adom/root/logsearch","logtype":"event","filter":filter}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap_or_else(|| panic!("{r}"));
    let r = faz_rpc(
        faz,
        &json!({"jsonrpc":"2.0","id":2,"method":"get","params":[{"url":format!("/logview/adom/root/logsearch/{tid}"),"limit":500}]}),
    );
    r["result"]["data"].as_array().cloned().unwrap_or_default()
}

fn ssh_port(faz: &Proc) -> String {
    let ssh = faz.ready["ssh"]
        .as_str()
        .unwrap_or_else(|| panic!("no ssh in the ready report: {}", faz.ready));
    assert!(ssh.starts_with("127.0.0.1:"), "{ssh}");
    ssh.rsplit(':').next().unwrap().to_string()
}

/// OpenSSH `ssh -tt` typing `lines` (or, with `command`, `ssh user@host "command"`); the password
/// comes from an askpass script.
fn openssh(
    dir: &Path,
    faz: &Proc,
    user: &str,
    password: &str,
    lines: &str,
    command: Option<&str>,
) -> (bool, String) {
    let askpass = dir.join("askpass.sh");
    std::fs::write(
        &askpass,
        "#!/bin/sh\nprintf '%s\\n' \"$FAZ_TEST_PASSWORD\"\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("700")
        .arg(&askpass)
        .status()
        .unwrap();
    let mut cmd = Command::new(support::require_program("ssh", "openssh-client"));
    if command.is_none() {
        cmd.arg("-tt");
    }
    cmd.args(["-p", &ssh_port(faz)])
        .args(["-o", "StrictHostKeyChecking=no"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .args(["-o", "PubkeyAuthentication=no"])
        .args([
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "ConnectTimeout=20"])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("{user}@127.0.0.1"));
    if let Some(c) = command {
        cmd.arg(c);
    }
    let mut child = cmd
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env("FAZ_TEST_PASSWORD", password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace('\r', "");
    (out.status.success(), text)
}

#[test]
fn openssh_types_the_seed_commands_and_api_requests_reach_the_event_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lab_ca(dir, "console-faz-test");
    let mut faz = spawn_faz(dir, &[], &[]);
    let user = faz.ready["admin"]["user"].as_str().unwrap().to_string();
    let password = faz.ready["admin"]["password"].as_str().unwrap().to_string();

    let (ok, out) = openssh(
        dir,
        &faz,
        &user,
        &password,
        "config system global\nset jsonapi-log all\nend\nget system global\nexit\n",
        None,
    );
    assert!(ok, "ssh failed:\n{out}\n{}", faz.stderr());
    // The prompts, in order, as the device prints them.
    let p_top = out.find("FAZ-LAB # config system global").expect(&out);
    let p_glob = out[p_top..]
        .find("FAZ-LAB (global)# set jsonapi-log all")
        .expect(&out);
    let p_end = out[p_top + p_glob..]
        .find("FAZ-LAB (global)# end")
        .expect(&out);
    assert!(
        out[p_top + p_glob + p_end..].contains("FAZ-LAB # get system global"),
        "{out}"
    );
    assert!(out.contains("jsonapi-log"), "{out}");

    // The JSON-RPC object shows the new value.
    let r = faz_rpc(
        &faz,
        &json!({"id":1,"method":"get","params":[{"url":"/cli/global/system/global"}]}),
    );
    assert_eq!(r["result"][0]["data"]["jsonapi-log"], "all", "{r}");
    // Every JSON-RPC request is now written to the FortiAnalyzer event log.
    faz_rpc(
        &faz,
        &json!({"id":2,"method":"get","params":[{"url":"/sys/status"}]}),
    );
    let rows = wait_for(
        "the API request in the event log",
        Duration::from_secs(20),
        || {
            let rows = event_logs(&faz, "action=jsonapi-request");
            rows.iter()
                .any(|r| r["msg"].as_str().unwrap_or("").contains("/sys/status"))
                .then_some(rows)
        },
    );
    assert!(rows.iter().all(|r| r["user"] == "api-user"), "{rows:?}");
    // The console login is in the event log too.
    assert!(!event_logs(&faz, "action=login status=success").is_empty());

    // It survives a restart on the same data directory.
    assert!(faz.terminate().success());
    let faz = spawn_faz(dir, &[], &[]);
    let r = faz_rpc(
        &faz,
        &json!({"id":3,"method":"get","params":[{"url":"/cli/global/system/global"}]}),
    );
    assert_eq!(r["result"][0]["data"]["jsonapi-log"], "all", "{r}");
    // Non-interactive: `ssh admin@faz "get system status"`; a failing command exits 1.
    let (ok, out) = openssh(dir, &faz, &user, &password, "", Some("get system status"));
    assert!(ok, "{out}");
    assert!(out.contains("Platform Type"), "{out}");
    assert!(
        out.contains("Version                         : v6.4.5-build"),
        "{out}"
    );
    let (ok, out) = openssh(dir, &faz, &user, &password, "", Some("get system bogus"));
    assert!(!ok, "{out}");
    assert!(out.contains("command parse error before 'bogus'"), "{out}");
}

#[test]
fn paramiko_shell_help_errors_tidb_and_refused_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lab_ca(dir, "console-faz-test");
    let faz = spawn_faz(dir, &[], &[]);
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/console_faz_paramiko.py"),
    )
    .unwrap();
    let (ok, out, err) = support::python(
        &script,
        &[
            ("FAZ_SSH_HOST", "127.0.0.1".to_string()),
            ("FAZ_SSH_PORT", ssh_port(&faz)),
            (
                "FAZ_USER",
                faz.ready["admin"]["user"].as_str().unwrap().to_string(),
            ),
            (
                "FAZ_PASSWORD",
                faz.ready["admin"]["password"].as_str().unwrap().to_string(),
            ),
        ],
    );
    assert!(ok, "paramiko script failed:\n{err}\n{}", faz.stderr());
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["bad_password_refused"], true, "{r}");
    assert_eq!(
        r["prompts"],
        json!([
            "FAZ-LAB # ",
            "FAZ-LAB (global)# ",
            "FAZ-LAB (global)# ",
            "FAZ-LAB # "
        ]),
        "{r}"
    );
    let help = r["help"].as_str().unwrap();
    for l in [
        "all",
        "logging both jsonapi request & response.",
        "disable jsonapi log.",
        "logging jsonapi request.",
        "logging jsonapi response.",
    ] {
        assert!(help.contains(l), "{help}");
    }
    assert!(
        r["bad_field"]
            .as_str()
            .unwrap()
            .contains("command parse error before 'bogus-field'\nCommand fail. Return code -61"),
        "{r}"
    );
    assert!(
        r["bad_value"]
            .as_str()
            .unwrap()
            .contains("value parse error before 'sometimes'\nCommand fail. Return code -651"),
        "{r}"
    );
    assert_eq!(r["after_end"], "FAZ-LAB # ");
    assert!(
        r["tidb"]
            .as_str()
            .unwrap()
            .contains("www.eicar.org is in tidb type black_domain. id="),
        "{r}"
    );
    assert!(
        r["status"].as_str().unwrap().contains("Serial Number"),
        "{r}"
    );
    // The refused password is in the FortiAnalyzer event log.
    let rows = event_logs(&faz, "action=login status=failed");
    assert!(
        rows.iter().any(|x| x["msg"]
            .as_str()
            .unwrap_or("")
            .contains("login failed from ssh(127.0.0.1)")),
        "{rows:?}"
    );
}
