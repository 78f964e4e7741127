//! Unit tests of the console engine over a real (temporary) store, no sockets.

use std::path::Path;
use std::sync::Arc;

use fortilab_core::LabClock;

use super::engine::Cli;
use crate::faz::{Faz, Identity};

fn open(dir: &Path) -> Arc<Faz> {
    let store = crate::store::Store::open(dir).unwrap();
    let id = Identity {
        hostname: "FAZ-LAB".into(),
        serial: "FAZ-VMTM00000001".into(),
        version: "6.4.5".into(),
        platform: "FortiAnalyzer-VM64".into(),
        admin_user: "admin".into(),
        admin_password: "pw".into(),
        api_key: "key".into(),
        lab_ip: "10.115.1.20".into(),
        session_timeout: 300,
        max_sessions: 8,
        retention_days: 0,
        max_size_mb: 0,
    };
    Faz::new(
        id,
        LabClock::real(),
        fortilab_core::binary::Timing::Fast,
        store,
        crate::ioc::Tidb::default_lab(),
        crate::ioc::IocSettings::default(),
        true,
        1,
    )
    .unwrap()
}

fn run(cli: &mut Cli, line: &str) -> String {
    cli.execute(line).text
}

#[test]
fn seed_commands_change_prompts_commit_on_end_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let faz = open(dir.path());
        let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
        assert_eq!(cli.prompt(), "FAZ-LAB # ");
        assert_eq!(run(&mut cli, "config system global"), "");
        assert_eq!(cli.prompt(), "FAZ-LAB (global)# ");
        assert_eq!(run(&mut cli, "set jsonapi-log all"), "");
        // Not committed before `end`.
        assert_eq!(faz.settings.global().jsonapi_log, "disable");
        assert!(run(&mut cli, "show").contains("set jsonapi-log all"));
        assert_eq!(run(&mut cli, "end"), "");
        assert_eq!(cli.prompt(), "FAZ-LAB # ");
        assert_eq!(faz.settings.global().jsonapi_log, "all");
        assert!(run(&mut cli, "get system global").contains("jsonapi-log    : all"));
    }
    let faz = open(dir.path());
    assert_eq!(faz.settings.global().jsonapi_log, "all");
}

#[test]
fn abort_discards_and_hostname_changes_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
    run(&mut cli, "conf sys glo");
    run(&mut cli, "set jsonapi-log request");
    assert_eq!(cli.pending(), 1);
    run(&mut cli, "abort");
    assert_eq!(faz.settings.global().jsonapi_log, "disable");
    run(&mut cli, "config system global");
    run(&mut cli, "set hostname \"FAZ-EDGE\"");
    run(&mut cli, "end");
    assert_eq!(cli.prompt(), "FAZ-EDGE # ");
    assert_eq!(faz.bus.device(), "FAZ-EDGE");
}

#[test]
fn errors_use_fortianalyzer_wording() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    assert_eq!(
        run(&mut cli, "bogus"),
        "command parse error before 'bogus'\nCommand fail. Return code -61\n"
    );
    assert!(run(&mut cli, "config system").starts_with("incomplete command in the end"));
    run(&mut cli, "config system global");
    assert_eq!(
        run(&mut cli, "set bogus 1"),
        "command parse error before 'bogus'\nCommand fail. Return code -61\n"
    );
    assert_eq!(
        run(&mut cli, "set jsonapi-log sometimes"),
        "value parse error before 'sometimes'\nCommand fail. Return code -651\n"
    );
    assert!(run(&mut cli, "set hostname \"x").contains("Unmatched double quote"));
    run(&mut cli, "end");
    run(&mut cli, "config system log ioc");
    assert!(
        run(&mut cli, "set notification-throttle 0").starts_with("value parse error before '0'")
    );
    assert_eq!(run(&mut cli, "set notification-throttle 60"), "");
    run(&mut cli, "end");
}

#[test]
fn question_mark_lists_fields_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    let h = cli.help("");
    assert!(
        h.contains("config") && h.contains("diagnose") && h.contains("Configure object."),
        "{h}"
    );
    assert!(cli.help("config system ").contains("global"));
    run(&mut cli, "config system global");
    let h = cli.help("set jsonapi-log ");
    for l in [
        "all",
        "logging both jsonapi request & response.",
        "disable jsonapi log.",
        "logging jsonapi request.",
        "logging jsonapi response.",
    ] {
        assert!(h.contains(l), "{h}");
    }
    let h = cli.help("set ");
    assert!(h.contains("jsonapi-log") && h.contains("hostname"), "{h}");
    let h = cli.help("set json");
    assert!(h.starts_with("jsonapi-log"), "{h}");
    assert!(cli.help("").contains("end") && cli.help("").contains("abort"));
    run(&mut cli, "end");
    run(&mut cli, "config system log ioc");
    assert!(cli.help("set notification-throttle ").contains("<integer>"));
}

#[test]
fn tab_completes_unique_words_and_lists_ambiguous_ones() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    assert_eq!(cli.complete("con").0, "config ");
    assert_eq!(cli.complete("config sys").0, "config system ");
    let (l, c) = cli.complete("config system ");
    assert_eq!(l, "config system ");
    assert_eq!(c, vec!["admin", "global", "log"]);
    run(&mut cli, "config system global");
    assert_eq!(cli.complete("set jsonapi-log a").0, "set jsonapi-log all ");
    let (l, c) = cli.complete("set jsonapi-log re");
    assert_eq!(l, "set jsonapi-log re");
    assert_eq!(c, vec!["request", "response"]);
}

#[test]
fn tidb_lookups_answer_from_the_real_tidb() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    let o = run(
        &mut cli,
        "diagnose test application sqllogd 204 tidb type=2, key=www.eicar.org",
    );
    assert!(
        o.starts_with("www.eicar.org is in tidb type black_domain. id="),
        "{o}"
    );
    assert!(o.contains(" hash="));
    let o = run(
        &mut cli,
        "diagnose test application sqllogd 204 tidb type=3, key=192.0.2.1",
    );
    assert_eq!(o, "192.0.2.1 is not in tidb type black_ip.\n");
    let o = run(
        &mut cli,
        "diag test app sqllogd 204 tidb type=3, key=195.22.28.198",
    );
    assert!(o.contains("is in tidb type black_ip"), "{o}");
    let o = run(
        &mut cli,
        "diagnose test application sqllogd 204 tidb type=1, key=www.eicar.org/download/eicar.com",
    );
    assert!(o.contains("is in tidb type black_url"), "{o}");
    let o = run(&mut cli, "diagnose test application sqllogd 204 stats");
    assert!(
        o.contains("License of post breach detection installed."),
        "{o}"
    );
    assert!(o.contains("TIDB version : 00001.00001-"), "{o}");
    assert!(o.contains("TIDB load time : "), "{o}");
}

#[test]
fn status_and_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    faz.device_hello(
        "FGVM01TM19000001",
        "FGT-LAB",
        "FortiGate-VM64",
        "6.4.4",
        "fortigate",
        "root",
        "10.115.1.1",
    );
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    let o = run(&mut cli, "get system status");
    assert!(
        o.contains("Platform Type                   : FAZVM64"),
        "{o}"
    );
    assert!(
        o.contains("Version                         : v6.4.5-build"),
        "{o}"
    );
    assert!(
        o.contains("Hostname                        : FAZ-LAB"),
        "{o}"
    );
    let o = run(&mut cli, "diagnose dvm device list");
    assert!(o.contains("FGVM01TM19000001"), "{o}");
    assert!(
        o.contains("There are currently 1 devices/vdoms managed"),
        "{o}"
    );
    assert!(o.contains("conn: up"), "{o}");
}

#[test]
fn admin_users_are_created_persisted_and_log_in() {
    let dir = tempfile::tempdir().unwrap();
    {
        let faz = open(dir.path());
        let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
        run(&mut cli, "config system admin user");
        assert_eq!(cli.prompt(), "FAZ-LAB (user)# ");
        run(&mut cli, "edit analyst");
        assert_eq!(cli.prompt(), "FAZ-LAB (analyst)# ");
        assert_eq!(run(&mut cli, "set password s3cret"), "");
        assert_eq!(run(&mut cli, "set profileid Super_User"), "");
        assert_eq!(run(&mut cli, "set rpc-permit read-write"), "");
        assert!(run(&mut cli, "set profileid Nobody").starts_with("value parse error"));
        run(&mut cli, "next");
        assert_eq!(cli.prompt(), "FAZ-LAB (user)# ");
        run(&mut cli, "end");
        assert!(faz.check_admin("analyst", "s3cret").is_some());
        assert!(faz.check_admin("analyst", "wrong").is_none());
        let show = run(&mut cli, "show system admin user");
        assert!(
            show.contains("edit \"analyst\"") && show.contains("set password ENC "),
            "{show}"
        );
        assert!(!show.contains("s3cret"));
        // The built-in admin still works.
        assert!(faz.check_admin("admin", "pw").is_some());
    }
    let faz = open(dir.path());
    assert!(faz.check_admin("analyst", "s3cret").is_some());
    let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
    run(&mut cli, "config system admin user");
    assert!(run(&mut cli, "delete admin").contains("Can not delete the current user"));
    assert_eq!(run(&mut cli, "delete analyst"), "");
    run(&mut cli, "end");
    assert!(faz.admin("analyst").is_none());
}

#[test]
fn restricted_users_cannot_configure() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut a = crate::faz::AdminUser::new("viewer", "Restricted_User");
    a.set_password("v", "salt");
    faz.save_admin(a).unwrap();
    let mut cli = Cli::new(faz, "viewer", "ssh(127.0.0.1)");
    assert!(run(&mut cli, "config system global").starts_with("Permission denied."));
    assert!(run(&mut cli, "get system global").contains("jsonapi-log"));
}

fn rpc(faz: &Faz, api: &crate::jsonrpc::ApiState, body: serde_json::Value) -> serde_json::Value {
    let caller = crate::jsonrpc::Caller {
        token: Some("key".into()),
        peer: "127.0.0.1:1".into(),
    };
    crate::jsonrpc::handle(faz, api, body.to_string().as_bytes(), &caller)
}

/// FAZ's own event logs matching a filter, through the JSON-RPC two-step log search.
fn event_logs(faz: &Faz, filter: &str) -> Vec<serde_json::Value> {
    let api = crate::jsonrpc::ApiState::default();
    let r = rpc(
        faz,
        &api,
        serde_json::json!({"jsonrpc":"2.0","method":"add","params":[{"url":"/logview/adom/root/logsearch","logtype":"event","filter":filter}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap();
    let r = rpc(
        faz,
        &api,
        serde_json::json!({"jsonrpc":"2.0","method":"get","params":[{"url":format!("/logview/adom/root/logsearch/{tid}"),"limit":100}]}),
    );
    r["result"]["data"].as_array().cloned().unwrap_or_default()
}

#[test]
fn login_refuses_wrong_passwords_and_logs_them() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().unwrap();
    assert!(super::login(&faz, "admin", "nope", peer).is_none());
    assert!(super::login(&faz, "admin", "pw", peer).is_some());
    let events = faz.bus.history_since(0).0;
    assert!(events.iter().any(|e| e.kind == "console.login_failed"));
    assert!(events.iter().any(|e| e.kind == "console.login"));
    let rows = event_logs(&faz, "action=login status=failed");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["user"], "admin");
    assert!(rows[0]["msg"]
        .as_str()
        .unwrap()
        .contains("login failed from ssh(127.0.0.1)"));
}

#[test]
fn json_rpc_sees_console_settings_and_admin_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let api = crate::jsonrpc::ApiState::default();
    let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
    for l in [
        "config system log ioc",
        "set notification-throttle 60",
        "end",
    ] {
        assert_eq!(run(&mut cli, l), "", "{l}");
    }
    let r = rpc(
        &faz,
        &api,
        serde_json::json!({"method":"get","params":[{"url":"/cli/global/system/log/ioc"}]}),
    );
    assert_eq!(r["result"][0]["data"]["notification-throttle"], 60, "{r}");
    // An account made through JSON-RPC logs in on the console and over JSON-RPC.
    let r = rpc(
        &faz,
        &api,
        serde_json::json!({"method":"add","params":[{"url":"/cli/global/system/admin/user","data":{"userid":"bot","password":"b0t","profileid":"Super_User","rpc-permit":"read-write"}}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    assert!(run(&mut cli, "show system admin user").contains("edit \"bot\""));
    let r = rpc(
        &faz,
        &api,
        serde_json::json!({"method":"exec","params":[{"url":"sys/login/user","data":{"user":"bot","passwd":"b0t"}}]}),
    );
    assert!(r["session"].as_str().is_some(), "{r}");
    let r = rpc(
        &faz,
        &api,
        serde_json::json!({"method":"exec","params":[{"url":"sys/login/user","data":{"user":"bot","passwd":"bad"}}]}),
    );
    assert!(r.get("session").is_none(), "{r}");
    let r = rpc(
        &faz,
        &api,
        serde_json::json!({"method":"get","params":[{"url":"/cli/global/system/admin/user/bot"}]}),
    );
    assert_eq!(r["result"][0]["data"]["profileid"], "Super_User", "{r}");
    assert!(!r.to_string().contains("b0t"));
}

/// The command as the CLI understood it (what exercise checks match).
#[test]
fn canonical_commands_expand_abbreviations_as_the_cli_resolves_them() {
    let dir = tempfile::tempdir().unwrap();
    let faz = open(dir.path());
    let mut cli = Cli::new(faz, "admin", "ssh(127.0.0.1)");
    assert_eq!(
        cli.canonical("diag dvm dev li").as_deref(),
        Some("diagnose dvm device list")
    );
    assert_eq!(
        cli.canonical("conf sys glo").as_deref(),
        Some("config system global")
    );
    assert_eq!(cli.canonical("frobnicate"), None);
    assert_eq!(run(&mut cli, "config system global"), "");
    assert_eq!(
        cli.canonical("set jsonapi-log all").as_deref(),
        Some("set jsonapi-log all")
    );
    assert_eq!(cli.canonical("diagnose dvm device list"), None);
}
