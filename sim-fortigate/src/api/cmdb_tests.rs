//! CMDB write and query semantics with the requests real clients send.
//!
//! The request bodies of the `fortinet.fortios` collection below are what its modules send
//! (2.4.2, from `pip install ansible`): captured by running the modules' own code
//! (`filter_*_data`, `flatten_multilists_attributes`, `underscore_to_hyphen`,
//! `FortiOSHandler.set`) with a recording connection (`tests/py/capture_ansible_bodies.py`).
//! `set` first GETs the mkey URL, then
//! PUTs the full object there (POST to the table URL when the GET is not 200); the
//! collection takes `changed` straight from `revision_changed`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fortilab_core::labnet::LabMap;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tower::ServiceExt;

use crate::api::{router, Api};
use crate::config::{ChangeEvent, FosVersion};
use crate::device::Device;
use crate::{load_config, serial_for, ConfigSource, DeviceEnv, FortiGateConfig};

const TOKEN: &str = "tok3nTOKEN0123456789abcdefghij";
const V64: FosVersion = FosVersion::V6_4_4;
const V72: FosVersion = FosVersion::new(7, 2, 5);

/// A device behind the REST router, with a data directory (so saves are visible) and the
/// change listener of `lib.rs` replayed by hand (change logs).
struct Lab {
    app: Router,
    dev: Arc<Device>,
    rx: broadcast::Receiver<ChangeEvent>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(version: FosVersion, config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = FortiGateConfig {
            config: config.map(|t| ConfigSource {
                name: "t.conf".into(),
                text: t.into(),
            }),
            name: Some("FGT-LAB".into()),
            ..FortiGateConfig::new(version)
        };
        let env = DeviceEnv {
            data_dir: Some(dir.path().to_path_buf()),
            ..DeviceEnv::for_tests(7, None).unwrap()
        };
        let serial = serial_for(7);
        let (store, _) = load_config(&opts, &env, &serial, TOKEN, "adminpw").unwrap();
        let dev = Arc::new(Device::new(
            serial,
            version,
            7,
            env.clock,
            store,
            LabMap::default(),
            None,
            Some(dir.path().to_path_buf()),
        ));
        let rx = dev.config.subscribe();
        Lab {
            app: router(Api::new(dev.clone(), 443)),
            dev,
            rx,
            dir,
        }
    }

    async fn call(&mut self, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        // What the device's change listener does for every committed change.
        while let Ok(ev) = self.rx.try_recv() {
            self.dev.on_change(&ev);
        }
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            panic!(
                "{method} {uri}: not JSON ({err}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    /// The config-change event logs so far (0100044546/0100044547), oldest first.
    fn change_logs(&self) -> Vec<String> {
        let (lines, _) = self.dev.logs.query("event", "system", 0, 100_000);
        lines
            .iter()
            .rev()
            .map(|l| l.line.to_string())
            .filter(|l| l.contains("logid=\"010004454"))
            .collect()
    }

    fn saved(&self) -> std::path::PathBuf {
        self.dir.path().join(crate::device::CONFIG_FILE)
    }
}

/// One task of a playbook: the collection's `set` (GET the mkey URL, then PUT there, or
/// POST to the table when the object does not exist).
async fn ansible_set(lab: &mut Lab, url: &str, table_url: &str, body: &Value) -> Value {
    let (s, _) = lab.call("GET", url, None).await;
    let (s, v) = if s == StatusCode::OK {
        lab.call("PUT", url, Some(body)).await
    } else {
        lab.call("POST", table_url, Some(body)).await
    };
    assert_eq!(s, StatusCode::OK, "{url}: {v}");
    assert_eq!(v["status"], "success", "{url}: {v}");
    v
}

/// (mkey URL, table URL, body) of every task of the IOC playbook on 6.4, in playbook order,
/// exactly as the collection sends them.
fn playbook_64() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "/api/v2/cmdb/system/interface/port3?vdom=root",
            "/api/v2/cmdb/system/interface?vdom=root",
            json!({"alias": "LAN", "allowaccess": "ping https ssh", "ip": "10.115.2.1/24", "mode": "static", "name": "port3", "role": "lan", "type": "physical", "vdom": "root"}),
        ),
        (
            "/api/v2/cmdb/system/global?vdom=root",
            "/api/v2/cmdb/system/global?vdom=root",
            json!({"admin-sport": 443, "admintimeout": 480, "hostname": "FGT-LAB", "language": "english", "timezone": "04"}),
        ),
        (
            "/api/v2/cmdb/firewall/address/PC-52?vdom=root",
            "/api/v2/cmdb/firewall/address?vdom=root",
            json!({"associated-interface": "port3", "color": 3, "comment": "Compromised host", "name": "PC-52", "subnet": "10.115.2.52/32", "type": "ipmask"}),
        ),
        (
            "/api/v2/cmdb/firewall/address/Lab%20Net%2F24?vdom=root",
            "/api/v2/cmdb/firewall/address?vdom=root",
            json!({"name": "Lab Net/24", "subnet": "10.115.2.0 255.255.255.0"}),
        ),
        (
            "/api/v2/cmdb/webfilter/profile/IOC-WF?vdom=root",
            "/api/v2/cmdb/webfilter/profile?vdom=root",
            json!({"comment": "IOC lab", "feature-set": "flow", "ftgd-wf": {"options": "error-allow", "filters": [{"id": 1, "category": 26, "action": "block", "log": "enable"}, {"id": 2, "category": 61, "action": "block"}, {"id": 3, "category": 0, "action": "monitor"}]}, "log-all-url": "enable", "name": "IOC-WF", "options": "block-invalid-url cookiefilter"}),
        ),
        (
            "/api/v2/cmdb/firewall/policy/1?vdom=root",
            "/api/v2/cmdb/firewall/policy?vdom=root",
            json!({"action": "accept", "comments": "IOC flow", "dstaddr": [{"name": "all"}], "dstintf": [{"name": "port1"}], "inspection-mode": "flow", "logtraffic": "all", "name": "LAN-out", "nat": "enable", "policyid": 1, "schedule": "always", "service": [{"name": "HTTP"}, {"name": "HTTPS"}, {"name": "DNS"}], "srcaddr": [{"name": "PC-52"}, {"name": "all"}], "srcintf": [{"name": "port3"}], "ssl-ssh-profile": "certificate-inspection", "status": "enable", "utm-status": "enable", "webfilter-profile": "IOC-WF"}),
        ),
        (
            "/api/v2/cmdb/system/automation-trigger/IOC-High?vdom=root",
            "/api/v2/cmdb/system/automation-trigger?vdom=root",
            json!({"event-type": "ioc", "ioc-level": "high", "name": "IOC-High", "trigger-type": "event-based"}),
        ),
        (
            "/api/v2/cmdb/system/automation-trigger/Login-Fail?vdom=root",
            "/api/v2/cmdb/system/automation-trigger?vdom=root",
            json!({"event-type": "event-log", "fields": [{"id": 1, "name": "user", "value": "admin"}], "logid": 32002, "name": "Login-Fail"}),
        ),
        (
            "/api/v2/cmdb/system/automation-action/Quarantine-EMS?vdom=root",
            "/api/v2/cmdb/system/automation-action?vdom=root",
            json!({"action-type": "quarantine-forticlient", "minimum-interval": 0, "name": "Quarantine-EMS"}),
        ),
        (
            "/api/v2/cmdb/system/automation-action/Mail-SOC?vdom=root",
            "/api/v2/cmdb/system/automation-action?vdom=root",
            json!({"action-type": "email", "email-subject": "IOC on %%log.hostname%%", "email-to": [{"name": "soc@lab.example"}, {"name": "noc@lab.example"}], "message": "Host %%log.srcip%% quarantined", "name": "Mail-SOC"}),
        ),
        (
            "/api/v2/cmdb/system/automation-stitch/IOC-Quarantine?vdom=root",
            "/api/v2/cmdb/system/automation-stitch?vdom=root",
            json!({"action": [{"name": "Quarantine-EMS"}, {"name": "Mail-SOC"}], "name": "IOC-Quarantine", "status": "enable", "trigger": "IOC-High"}),
        ),
        (
            "/api/v2/cmdb/log.fortianalyzer/setting?vdom=root",
            "/api/v2/cmdb/log.fortianalyzer/setting?vdom=root",
            json!({"conn-timeout": 10, "enc-algorithm": "high", "reliable": "enable", "serial": [{"name": "FAZ-VM0000000001"}], "server": "10.115.0.20", "status": "enable", "upload-option": "realtime"}),
        ),
        // 6.4 keys EMS connectors by name: the body of collections whose fctems module used
        // `name` as the mkey (2.4.x sends `ems-id`, a 7.0.8+ key; see the 7.2 test).
        (
            "/api/v2/cmdb/endpoint-control/fctems/EMS-LAB?vdom=root",
            "/api/v2/cmdb/endpoint-control/fctems?vdom=root",
            json!({"call-timeout": 30, "fortinetone-cloud-authentication": "disable", "https-port": 443, "name": "EMS-LAB", "pull-avatars": "enable", "pull-sysinfo": "enable", "pull-tags": "enable", "pull-vulnerabilities": "enable", "server": "10.115.0.30"}),
        ),
    ]
}

#[tokio::test]
async fn ansible_playbook_second_run_changes_nothing() {
    let mut lab = Lab::new(V64, None);
    // First run: every task changes something.
    for (url, table, body) in playbook_64() {
        let v = ansible_set(&mut lab, url, table, &body).await;
        assert_eq!(v["revision_changed"], true, "first run of {url}: {v}");
        assert_ne!(v["revision"], v["old_revision"]);
    }
    let logs = lab.change_logs().len();
    let revision = lab.dev.config.revision();
    std::fs::remove_file(lab.saved()).unwrap();
    // Second run (and a third): nothing changes, nothing is logged or saved.
    for round in 0..2 {
        for (url, table, body) in playbook_64() {
            let v = ansible_set(&mut lab, url, table, &body).await;
            assert_eq!(
                v["revision_changed"],
                false,
                "run {} of {url} changed: {v}",
                round + 2
            );
            assert_eq!(v["revision"], revision.as_str());
            assert_eq!(v["old_revision"], revision.as_str());
            assert_eq!(v["http_method"], "PUT", "{url}: the object exists now");
        }
    }
    assert_eq!(
        lab.change_logs().len(),
        logs,
        "no change log on a no-change"
    );
    assert!(!lab.saved().exists(), "a no-change write saves nothing");
    assert_eq!(lab.dev.config.revision(), revision);
}

#[tokio::test]
async fn ansible_bodies_of_72_second_run_changes_nothing() {
    let mut lab = Lab::new(V72, None);
    let tasks = [
        (
            "/api/v2/cmdb/system/automation-trigger/IOC-High?vdom=root",
            "/api/v2/cmdb/system/automation-trigger?vdom=root",
            json!({"event-type": "ioc", "name": "IOC-High", "trigger-type": "event-based"}),
        ),
        (
            "/api/v2/cmdb/system/automation-trigger/Login-Fail?vdom=root",
            "/api/v2/cmdb/system/automation-trigger?vdom=root",
            json!({"event-type": "event-log", "fields": [{"id": 1, "name": "user", "value": "admin"}], "logid": [{"id": 32002}, {"id": 32003}], "name": "Login-Fail"}),
        ),
        (
            "/api/v2/cmdb/system/automation-action/Quarantine-EMS?vdom=root",
            "/api/v2/cmdb/system/automation-action?vdom=root",
            json!({"action-type": "quarantine-forticlient", "minimum-interval": 0, "name": "Quarantine-EMS"}),
        ),
        (
            "/api/v2/cmdb/system/automation-action/Mail-SOC?vdom=root",
            "/api/v2/cmdb/system/automation-action?vdom=root",
            json!({"action-type": "email", "email-to": [{"name": "soc@lab.example"}], "name": "Mail-SOC"}),
        ),
        (
            "/api/v2/cmdb/system/automation-stitch/IOC-Quarantine?vdom=root",
            "/api/v2/cmdb/system/automation-stitch?vdom=root",
            json!({"actions": [{"id": 1, "action": "Quarantine-EMS", "delay": 0, "required": "enable"}, {"id": 2, "action": "Mail-SOC", "delay": 5}], "name": "IOC-Quarantine", "status": "enable", "trigger": "IOC-High"}),
        ),
        // The 2.4.2 fctems module: keyed by `ems-id`, `capabilities` flattened (not modelled
        // here: ignored).
        (
            "/api/v2/cmdb/endpoint-control/fctems/1?vdom=root",
            "/api/v2/cmdb/endpoint-control/fctems?vdom=root",
            json!({"call-timeout": 30000, "capabilities": "fabric-auth websocket", "ems-id": 1, "https-port": 443, "name": "EMS-LAB", "server": "10.115.0.30", "status": "enable"}),
        ),
    ];
    for (url, table, body) in &tasks {
        let v = ansible_set(&mut lab, url, table, body).await;
        assert_eq!(v["revision_changed"], true, "{url}: {v}");
    }
    let logs = lab.change_logs().len();
    for (url, table, body) in &tasks {
        let v = ansible_set(&mut lab, url, table, body).await;
        assert_eq!(v["revision_changed"], false, "{url}: {v}");
    }
    assert_eq!(lab.change_logs().len(), logs);
}

#[tokio::test]
async fn equivalent_notations_are_no_change() {
    let mut lab = Lab::new(V64, None);
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    let revision = lab.dev.config.revision();
    let logs = lab.change_logs().len();
    let same = [
        // Mask notation, member order, option case, numbers as strings.
        (
            "/api/v2/cmdb/firewall/address/PC-52",
            json!({"subnet": "10.115.2.52 255.255.255.255", "type": "IPMASK", "color": "3"}),
        ),
        (
            "/api/v2/cmdb/firewall/address/Lab%20Net%2F24",
            json!({"subnet": "10.115.2.0/24"}),
        ),
        (
            "/api/v2/cmdb/firewall/policy/1",
            json!({"srcaddr": [{"name": "all"}, {"name": "PC-52"}], "service": ["DNS", "HTTPS", "HTTP"], "nat": "Enable", "srcintf": "port3"}),
        ),
        (
            "/api/v2/cmdb/system/interface/port3",
            json!({"allowaccess": "ssh ping https", "ip": "10.115.2.1 255.255.255.0"}),
        ),
        (
            "/api/v2/cmdb/system/global",
            json!({"admintimeout": "480", "hostname": "FGT-LAB"}),
        ),
        (
            "/api/v2/cmdb/webfilter/profile/IOC-WF",
            json!({"options": "cookiefilter block-invalid-url", "ftgd-wf": {"options": "error-allow"}}),
        ),
        (
            "/api/v2/cmdb/system/automation-action/Mail-SOC",
            json!({"email-to": [{"name": "noc@lab.example"}, {"name": "soc@lab.example"}]}),
        ),
        // Empty bodies and attributes the table does not have.
        ("/api/v2/cmdb/firewall/address/PC-52", json!({})),
        (
            "/api/v2/cmdb/firewall/address/PC-52",
            json!({"sdn-addr-type": "private"}),
        ),
    ];
    for (url, body) in &same {
        let (s, v) = lab.call("PUT", url, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{url}: {v}");
        assert_eq!(v["revision_changed"], false, "{url} {body}: {v}");
    }
    assert_eq!(lab.dev.config.revision(), revision);
    assert_eq!(lab.change_logs().len(), logs);
    // The stored order of an equivalent member list is kept.
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/policy/1", None)
        .await;
    assert_eq!(v["results"][0]["srcaddr"][0]["name"], "PC-52");
    // Console: `set` to the current value and `end` is no change either.
    let mut cli = crate::console::cli::CliSession::new(
        lab.dev.config.clone(),
        crate::config::Origin {
            user: "admin".into(),
            ui: "ssh(10.0.0.9)".into(),
        },
    );
    for line in [
        "config firewall address",
        "edit \"PC-52\"",
        "set subnet 10.115.2.52/32",
        "set color 3",
        "next",
        "end",
        "config system global",
        "set hostname \"FGT-LAB\"",
        "end",
        "config firewall policy",
        "edit 1",
        "set service DNS HTTP HTTPS",
        "end",
    ] {
        let lexed = crate::config::lexer::lex(line).unwrap();
        for c in &lexed.commands {
            match cli.dispatch(c) {
                crate::console::cli::Dispatch::Done(o) => {
                    assert!(!o.failed, "{line}: {}", o.text)
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }
    while let Ok(ev) = lab.rx.try_recv() {
        lab.dev.on_change(&ev);
    }
    assert_eq!(lab.dev.config.revision(), revision, "console no-change");
    assert_eq!(lab.change_logs().len(), logs);
}

#[tokio::test]
async fn a_change_logs_only_what_changed_in_fortios_format() {
    let mut lab = Lab::new(V64, None);
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    let logs = lab.change_logs();
    // Adds list what they set; the single table logs 0100044546 without cfgobj.
    let add = logs
        .iter()
        .find(|l| l.contains("cfgpath=\"firewall.policy\""))
        .unwrap();
    assert!(add.contains("logid=\"0100044547\""), "{add}");
    assert!(add.contains("logdesc=\"Object attribute configured\""));
    assert!(add.contains("action=\"Add\""));
    assert!(add.contains(" uuid=\""), "{add}");
    assert!(add.contains("cfgobj=\"1\""));
    assert!(
        add.contains("cfgattr=\"name[LAN-out]srcintf[port3]dstintf[port1]srcaddr[PC-52 all]dstaddr[all]action[accept]schedule[always]service[HTTP HTTPS DNS]utm-status[enable]"),
        "{add}"
    );
    assert!(add.contains("msg=\"Add firewall.policy 1\""));
    let global = logs
        .iter()
        .find(|l| l.contains("cfgpath=\"system.global\""))
        .unwrap();
    assert!(global.contains("logid=\"0100044546\""), "{global}");
    assert!(global.contains("logdesc=\"Attribute configured\""));
    assert!(!global.contains("cfgobj="), "{global}");
    assert!(
        global.contains("cfgattr=\"admintimeout[5->480]\""),
        "only what changed: {global}"
    );
    assert!(global.contains("msg=\"Edit system.global\""));
    // An edit with one changed attribute among unchanged ones.
    let n = logs.len();
    let (_, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/firewall/policy/1",
            Some(&json!({"srcaddr": [{"name": "all"}, {"name": "PC-52"}], "dstintf": [{"name": "port2"}], "action": "accept", "comments": "IOC flow"})),
        )
        .await;
    assert_eq!(v["revision_changed"], true);
    let logs = lab.change_logs();
    assert_eq!(logs.len(), n + 1);
    let edit = &logs[n];
    assert!(edit.contains("action=\"Edit\""));
    assert!(edit.contains("cfgattr=\"dstintf[port1->port2]\""), "{edit}");
    // Nested tables: only the filter that changed.
    let (_, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/webfilter/profile/IOC-WF",
            Some(&json!({"ftgd-wf": {"options": "error-allow", "filters": [{"id": 1, "category": 26, "action": "block", "log": "enable"}, {"id": 2, "category": 61, "action": "warning"}, {"id": 3, "category": 0, "action": "monitor"}]}})),
        )
        .await;
    assert_eq!(v["revision_changed"], true);
    let last = lab.change_logs().pop().unwrap();
    assert!(
        last.contains("cfgattr=\"ftgd-wf.filters.2.action[block->warning]\""),
        "{last}"
    );
    // A delete names no attributes; secrets never appear.
    let (_, v) = lab
        .call(
            "DELETE",
            "/api/v2/cmdb/firewall/address/Lab%20Net%2F24",
            None,
        )
        .await;
    assert_eq!(v["revision_changed"], true);
    let del = lab.change_logs().pop().unwrap();
    assert!(del.contains("action=\"Delete\""), "{del}");
    assert!(del.contains("cfgobj=\"Lab Net/24\""));
    assert!(!del.contains("cfgattr"), "{del}");
    lab.call(
        "PUT",
        "/api/v2/cmdb/system/api-user/fortilab",
        Some(&json!({"api-key": "AnotherSecret0123456789abcdefgh"})),
    )
    .await;
    let key = lab.change_logs().pop().unwrap();
    assert!(key.contains("cfgattr=\"api-key[*->*]\""), "{key}");
}

#[tokio::test]
async fn get_then_put_back_is_no_change_for_every_table() {
    let mut lab = Lab::new(V64, Some(crate::config::tests::SEED_SNIPPETS));
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    assert!(put_back_everything(&mut lab, V64).await > 100);
    // 7.x tables (stitch `config actions`, trigger `logid` lists, `ems-id` keys).
    let mut lab = Lab::new(V72, None);
    let n = put_back_everything(&mut lab, V72).await;
    assert!(n > 50, "{n}");
}

/// GETs every entry of every table (with `datasource` and `with_meta` decorations) and PUTs
/// it back unchanged, as scripts that "GET, edit, PUT" do: none of them may change anything.
/// The number of entries written.
async fn put_back_everything(lab: &mut Lab, version: FosVersion) -> usize {
    let revision = lab.dev.config.revision();
    let tables: Vec<(String, bool)> = crate::config::Schema::get()
        .tables_at(version)
        .map(|t| {
            let (p, n) = t.rest_path_name();
            (format!("{p}/{n}"), t.is_single())
        })
        .collect();
    let mut entries = 0;
    for (t, single) in tables {
        let (s, v) = lab
            .call(
                "GET",
                &format!("/api/v2/cmdb/{t}?datasource=1&with_meta=1"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{t}");
        let items = if single {
            vec![v["results"].clone()]
        } else {
            v["results"].as_array().unwrap().clone()
        };
        for item in items {
            let url = if single {
                format!("/api/v2/cmdb/{t}")
            } else {
                let k = match &item["q_origin_key"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!(
                    "/api/v2/cmdb/{t}/{}",
                    percent_encoding::utf8_percent_encode(&k, percent_encoding::NON_ALPHANUMERIC)
                )
            };
            let (s, w) = lab.call("PUT", &url, Some(&item)).await;
            assert_eq!(s, StatusCode::OK, "{url}: {w}");
            assert_eq!(w["revision_changed"], false, "{url} changed: {item}");
            entries += 1;
        }
    }
    assert_eq!(lab.dev.config.revision(), revision);
    entries
}

#[tokio::test]
async fn bad_input_applies_nothing() {
    let mut lab = Lab::new(V64, None);
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    let revision = lab.dev.config.revision();
    let (_, before) = lab
        .call("GET", "/api/v2/cmdb/firewall/policy/1", None)
        .await;
    let logs = lab.change_logs().len();
    // Each body changes several attributes, one of them bad: nothing is applied.
    let cases: [(&str, &str, Value, i32, &str); 7] = [
        (
            "PUT",
            "/api/v2/cmdb/firewall/policy/1",
            json!({"comments": "new", "tcp-mss-sender": 70000}),
            -651,
            "value parse error before '70000'",
        ),
        (
            "PUT",
            "/api/v2/cmdb/firewall/policy/1",
            json!({"comments": "new", "srcaddr": [{"name": "all"}, {"name": "nowhere"}]}),
            -651,
            "node_check_object fail! for name nowhere",
        ),
        (
            "PUT",
            "/api/v2/cmdb/firewall/policy/1",
            json!({"name": "x".repeat(40), "action": "deny"}),
            -1,
            "Invalid length of value",
        ),
        (
            "PUT",
            "/api/v2/cmdb/firewall/policy/1",
            json!({"action": "deny", "status": "maybe"}),
            -61,
            "command parse error before 'maybe'",
        ),
        (
            "PUT",
            "/api/v2/cmdb/firewall/address/PC-52",
            json!({"comment": "x", "subnet": "10.1.1.300/32"}),
            -8,
            "Invalid IP address",
        ),
        (
            "PUT",
            "/api/v2/cmdb/firewall/address/PC-52",
            json!({"comment": "x", "subnet": "10.1.1.0 255.0.255.0"}),
            -9,
            "Invalid netmask",
        ),
        (
            "PUT",
            "/api/v2/cmdb/system/global",
            json!({"hostname": "other", "admintimeout": 0}),
            -651,
            "value parse error before '0'",
        ),
    ];
    for (method, url, body, code, text) in &cases {
        let (s, v) = lab.call(method, url, Some(body)).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{url} {body}: {v}");
        assert_eq!(v["error"], *code, "{url} {body}: {v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["revision_changed"], false);
        assert_eq!(v["revision"], revision.as_str());
        let cli = v["cli_error"].as_str().unwrap_or_default();
        assert!(cli.contains(text), "{url} {body}: {cli}");
        assert!(
            cli.ends_with(&format!("Command fail. Return code {code}\n")),
            "{cli}"
        );
    }
    // Deleting an object in use (the address is in policy 1), a duplicate, a missing one.
    let (s, v) = lab
        .call("DELETE", "/api/v2/cmdb/firewall/address/PC-52", None)
        .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-23))
    );
    assert!(v["cli_error"]
        .as_str()
        .unwrap()
        .contains("The entry is used by other 1 entries"));
    let (s, v) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/address",
            Some(&json!({"name": "PC-52", "subnet": "10.9.9.9/32"})),
        )
        .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-5))
    );
    let (s, v) = lab
        .call("DELETE", "/api/v2/cmdb/firewall/address/ghost", None)
        .await;
    assert_eq!(
        (s, v["mkey"].clone()),
        (StatusCode::NOT_FOUND, json!("ghost"))
    );
    assert_eq!(v["revision_changed"], false);
    // Nothing half-applied.
    let (_, after) = lab
        .call("GET", "/api/v2/cmdb/firewall/policy/1", None)
        .await;
    assert_eq!(before["results"], after["results"]);
    assert_eq!(lab.dev.config.revision(), revision);
    assert_eq!(lab.change_logs().len(), logs);
    assert_eq!(lab.dev.hostname(), "FGT-LAB");
}

#[tokio::test]
async fn query_parameters_of_the_collection_and_scripts() {
    let mut lab = Lab::new(V64, Some(crate::config::tests::SEED_SNIPPETS));
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    // A second policy (the seed's is policy 1).
    let (s, v) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/policy",
            Some(&json!({"name": "second", "srcintf": [{"name": "port2"}], "dstintf": [{"name": "port1"}], "srcaddr": [{"name": "all"}], "dstaddr": [{"name": "all"}], "schedule": "always", "service": [{"name": "ALL"}], "action": "accept"})),
        )
        .await;
    assert_eq!((s, v["mkey"].clone()), (StatusCode::OK, json!(2)), "{v}");
    let names = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Every filter operator; several filters AND, comma OR; values URL-encoded.
    let q = |f: &str| format!("/api/v2/cmdb/firewall/address?format=name&{f}");
    let (_, v) = lab.call("GET", &q("filter=name==pc-52"), None).await;
    assert_eq!(names(&v), ["PC-52"], "== is case-insensitive");
    let (_, v) = lab
        .call("GET", &q("filter=type==ipmask&filter=name!=all&filter=name!=none&filter=name!@FABRIC&filter=name!@FIREWALL&filter=name!@SSLVPN&filter=name!@10.115"), None)
        .await;
    assert_eq!(names(&v), ["PC-52", "Lab Net/24"]);
    let (_, v) = lab
        .call("GET", &q("filter=name=@lab%20net,name==pc-52"), None)
        .await;
    assert_eq!(names(&v), ["PC-52", "Lab Net/24"]);
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/firewall/policy?format=policyid&filter=policyid%3E%3D1&filter=policyid%3C2",
            None,
        )
        .await;
    assert_eq!(v["results"], json!([{"policyid": 1, "q_origin_key": 1}]));
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/firewall/policy?format=policyid&filter=policyid%3E1,policyid%3C%3D0",
            None,
        )
        .await;
    assert_eq!(v["results"], json!([{"policyid": 2, "q_origin_key": 2}]));
    // Filters see member lists.
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/firewall/policy?format=policyid&filter=srcaddr==PC-52",
            None,
        )
        .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    // sort (the collection's `sorters`: one sort parameter per item, `,dsc` descending).
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/system/interface?format=name&sort=name,dsc",
            None,
        )
        .await;
    assert_eq!(names(&v), ["ssl.root", "port4", "port3", "port2", "port1"]);
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/firewall/policy?format=policyid&sort=policyid,dsc&start=0&count=1",
            None,
        )
        .await;
    assert_eq!(v["results"], json!([{"policyid": 2, "q_origin_key": 2}]));
    // skip=1 hides what does not apply (an ipmask address has no fqdn/start-ip).
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/address/PC-52?skip=1", None)
        .await;
    let r = &v["results"][0];
    assert_eq!(r["subnet"], "10.115.2.52 255.255.255.255");
    assert!(
        r.get("fqdn").is_none() && r.get("start-ip").is_none(),
        "{r}"
    );
    let (_, v) = lab
        .call(
            "GET",
            "/api/v2/cmdb/firewall/address/gmail.com?skip=1",
            None,
        )
        .await;
    assert!(v["results"][0].get("subnet").is_none());
    assert_eq!(v["results"][0]["fqdn"], "gmail.com");
    // action=schema in FortiOS's shape (7.4.2 dump of firewall/addrgrp).
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/addrgrp?action=schema", None)
        .await;
    assert_eq!(v["action"], "schema");
    let r = &v["results"];
    assert_eq!(
        (
            r["name"].clone(),
            r["path"].clone(),
            r["category"].clone(),
            r["mkey"].clone(),
            r["mkey_type"].clone()
        ),
        (
            json!("addrgrp"),
            json!("firewall"),
            json!("table"),
            json!("name"),
            json!("string")
        )
    );
    let member = &r["children"]["member"];
    assert_eq!(member["category"], "table");
    assert_eq!(member["member_table"], true);
    assert_eq!(
        member["children"]["name"]["datasource"],
        json!(["firewall.address.name", "firewall.addrgrp.name"])
    );
    assert_eq!(r["children"]["color"]["type"], "integer");
    assert_eq!(r["children"]["color"]["max-value"], 32);
    assert_eq!(r["children"]["color"]["default"], 0);
    assert_eq!(
        r["children"]["allow-routing"]["options"][0]["name"],
        "enable"
    );
    assert_eq!(r["children"]["comment"]["type"], "var-string");
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/system/global?action=schema", None)
        .await;
    assert_eq!(v["results"]["category"], "complex");
    // action=default.
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/policy?action=default", None)
        .await;
    assert_eq!(v["results"]["action"], "deny");
    assert_eq!(v["results"]["logtraffic"], "utm");
    // mkey with spaces and `/`, percent-encoded.
    let (s, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/address/Lab%20Net%2F24", None)
        .await;
    assert_eq!(
        (s, v["results"][0]["name"].clone()),
        (StatusCode::OK, json!("Lab Net/24"))
    );
    let (s, _) = lab
        .call(
            "GET",
            "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // action=move: a move that changes the order, then the same move again (no change).
    let (_, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/firewall/policy/2?vdom=root&action=move&before=1",
            Some(&Value::Null),
        )
        .await;
    assert_eq!(v["revision_changed"], true, "{v}");
    let (_, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/firewall/policy/2?vdom=root&action=move&before=1",
            Some(&Value::Null),
        )
        .await;
    assert_eq!(v["revision_changed"], false, "{v}");
    let (_, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/firewall/policy/1?action=move&after=2",
            None,
        )
        .await;
    assert_eq!(v["revision_changed"], false, "already after: {v}");
    let (_, v) = lab
        .call("GET", "/api/v2/cmdb/firewall/policy?format=policyid", None)
        .await;
    assert_eq!(v["results"][0]["policyid"], 2);
    let (s, v) = lab
        .call(
            "PUT",
            "/api/v2/cmdb/firewall/policy/2?action=move&before=99",
            None,
        )
        .await;
    assert_eq!(
        (s, v["revision_changed"].clone()),
        (StatusCode::NOT_FOUND, json!(false))
    );
    // action=clone with nkey (a new UUID; references are not copied onto the clone).
    let (s, v) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/address/PC-52?action=clone&nkey=PC-52%20copy",
            None,
        )
        .await;
    assert_eq!(
        (s, v["mkey"].clone()),
        (StatusCode::OK, json!("PC-52 copy")),
        "{v}"
    );
    assert_eq!(v["revision_changed"], true);
    let (_, a) = lab
        .call("GET", "/api/v2/cmdb/firewall/address/PC-52", None)
        .await;
    let (_, b) = lab
        .call("GET", "/api/v2/cmdb/firewall/address/PC-52%20copy", None)
        .await;
    assert_eq!(a["results"][0]["subnet"], b["results"][0]["subnet"]);
    assert_ne!(a["results"][0]["uuid"], b["results"][0]["uuid"]);
    let (s, v) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/address/PC-52?action=clone&nkey=PC-52%20copy",
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-5))
    );
    let (s, _) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/address/PC-52?action=clone",
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 424);
    let (s, _) = lab
        .call(
            "POST",
            "/api/v2/cmdb/firewall/address/ghost?action=clone&nkey=g2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn config_script_upload_of_current_values_changes_nothing() {
    use base64::Engine as _;
    let mut lab = Lab::new(V64, None);
    for (url, table, body) in playbook_64() {
        ansible_set(&mut lab, url, table, &body).await;
    }
    let revision = lab.dev.config.revision();
    let logs = lab.change_logs().len();
    let upload = |text: &str| {
        json!({"filename": "s.txt",
               "file_content": base64::engine::general_purpose::STANDARD.encode(text)})
    };
    let same = "config firewall address\n    edit \"PC-52\"\n        set subnet 10.115.2.52 255.255.255.255\n        set comment \"Compromised host\"\n    next\nend\nconfig system global\n    set admintimeout 480\nend\n";
    let (s, v) = lab
        .call(
            "POST",
            "/api/v2/monitor/system/config-script/upload",
            Some(&upload(same)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"]["status"], "success", "{v}");
    assert_eq!(lab.dev.config.revision(), revision);
    assert_eq!(lab.change_logs().len(), logs);
    let changed = "config system global\n    set admintimeout 480\n    set hostname FGT-2\nend\n";
    lab.call(
        "POST",
        "/api/v2/monitor/system/config-script/upload",
        Some(&upload(changed)),
    )
    .await;
    assert_ne!(lab.dev.config.revision(), revision);
    let last = lab.change_logs().pop().unwrap();
    assert!(last.contains("ui=\"jsconsole("), "{last}");
    assert!(
        last.contains("cfgattr=\"hostname[FGT-LAB->FGT-2]\""),
        "{last}"
    );
}

/// The 2.4.x fctems module keys connectors by `ems-id` (7.0.8+); a 6.4 table is keyed by
/// name, so its GET of `fctems/1` is 404, every run POSTs and the second is a duplicate
/// (documented in docs/fidelity-fortigate.md).
#[tokio::test]
async fn fctems_module_of_2_4_against_64_posts_every_run() {
    let mut lab = Lab::new(V64, None);
    let body = json!({"call-timeout": 30, "ems-id": 1, "name": "EMS-LAB", "server": "10.115.0.30", "status": "enable"});
    let url = "/api/v2/cmdb/endpoint-control/fctems/1?vdom=root";
    let table = "/api/v2/cmdb/endpoint-control/fctems?vdom=root";
    let v = ansible_set(&mut lab, url, table, &body).await;
    assert_eq!(
        (v["http_method"].clone(), v["mkey"].clone()),
        (json!("POST"), json!("EMS-LAB"))
    );
    let (s, _) = lab.call("GET", url, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = lab.call("POST", table, Some(&body)).await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-5))
    );
}
