//! End-to-end tests (automation): the real `sim-ems`, `sim-endpoint` and `sim-fortigate`
//! binaries, a FortiAnalyzer stand-in (`fortilab_core::logchan::LogReceiver`) that sends the
//! IOC notifications, and a test HTTP server for the webhook action.
//!
//! What they show: the seed stitch quarantines the endpoint on EMS (driven by
//! `automation-stitch/test` and by a FortiAnalyzer IOC notification), event logs 0100022953
//! and 0100046600, stitch statistics, the compromised-host list acting once per host until
//! FortiAnalyzer's IOC-ack, `ban-ip` in `monitor/user/banned`, a webhook with `%%` substitution,
//! the EMS connector state in `monitor/endpoint-control/ems/status`, and an unauthorized
//! FortiGate's quarantine failing.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fortilab_core::http::client::HttpsClient;
use fortilab_core::logchan::{LogReceiver, MemorySink};
use fortilab_core::tls::LabCa;
use serde_json::{json, Value};
use support::devices::{
    block, endpoint_in_index, faz_stand_in, fgt_event_logs, fgt_rest, free_port, lab_ca, spawn_ems,
    spawn_endpoints, write_ems_config, EmsSession,
};
use support::{wait_for, Proc};

const STITCH: &str = "Compromised Host Quarantine";

/// A test HTTP server: records each request (head + body), answers 200 with a JSON body.
fn webhook_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut r = BufReader::new(c);
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            s.lock()
                .unwrap()
                .push(head + &String::from_utf8_lossy(&body));
            let _ = r.get_mut().write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
            );
        }
    });
    (addr, seen)
}

struct Lab {
    dir: PathBuf,
    ca: LabCa,
    ca_pem: String,
    ems: Proc,
    ep: Proc,
    fgt: Option<Proc>,
    ems_port: u16,
    faz_addr: SocketAddr,
    web: Arc<Mutex<Vec<String>>>,
}

const FGT_CONFIG: &str = r#"config log fortianalyzer setting
    set status enable
    set server "10.115.1.20"
    set upload-option realtime
    set reliable enable
end
config endpoint-control fctems
    edit "EMS-LAB"
        set server "10.115.1.30"
        set https-port 443
        set status-check-interval 5
    next
end
config system automation-action
    edit "IOC Ban_ban-ip"
        set action-type ban-ip
    next
    edit "IOC Ban_webhook"
        set action-type webhook
        set protocol http
        set uri "10.115.1.50/incident?host=%%log.srcip%%"
        set http-body "{\"host\":\"%%log.srcip%%\",\"threat\":\"%%log.threat%%\",\"fw\":\"%%devname%%\"}"
        set headers "X-Verdict:%%log.verdict%%"
    next
end
config system automation-stitch
    edit "Compromised Host Quarantine"
        set status enable
        set trigger "Compromised Host Quarantine"
        set action "Compromised Host Quarantine_quarantine-forticlient"
    next
    edit "IOC Ban"
        set trigger "Compromised Host Quarantine"
        set action "IOC Ban_ban-ip" "IOC Ban_webhook"
    next
end
"#;

impl Lab {
    fn start(name: &str, auto_authorize: bool) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("fortilab-automation-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, _, _) = lab_ca(&dir, "test");
        let (ems_port, tel_port) = (free_port(), free_port());
        let faz_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (web, seen) = webhook_server();
        let map = json!({"services": {
            "10.115.1.30:443": format!("127.0.0.1:{ems_port}"),
            "10.115.1.30:8013": format!("127.0.0.1:{tel_port}"),
            "10.115.1.20:514": faz_addr.to_string(),
            "10.115.1.50:80": web.to_string(),
            // No FortiGate proxy in these tests: the endpoints never browse.
            "10.115.2.1:8080": format!("127.0.0.1:{}", free_port()),
        }});
        std::fs::write(dir.join("labmap.json"), map.to_string()).unwrap();

        let ems_cfg = write_ems_config(&dir, 0.1, None);
        let mut ems_extra = vec!["--lab-ip", "10.115.1.30"];
        if auto_authorize {
            ems_extra.push("--auto-authorize");
        }
        let ems = spawn_ems(&dir, ems_port, tel_port, &ems_cfg, &ems_extra);
        let ep = spawn_endpoints(&dir, 1);
        let ca_pem = ca.cert_pem().to_string();
        Lab {
            dir,
            ca,
            ca_pem,
            ems,
            ep,
            fgt: None,
            ems_port,
            faz_addr,
            web: seen,
        }
    }

    fn start_fgt(&mut self, version: &str, config: &str) {
        let cfg = self.dir.join("fgt.conf");
        std::fs::write(&cfg, config).unwrap();
        let fdir = self.dir.join("fgt");
        let p = Proc::spawn(
            "sim-fortigate",
            &fdir,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--version",
                version,
                "--name",
                "FGT-LAB",
                "--data-dir",
                fdir.to_str().unwrap(),
                "--ca-cert",
                self.dir.join("ca/ca.pem").to_str().unwrap(),
                "--ca-key",
                self.dir.join("ca/ca.key").to_str().unwrap(),
                "--lab-map",
                self.dir.join("labmap.json").to_str().unwrap(),
                "--timing",
                "fast",
            ],
        );
        self.fgt = Some(p);
    }

    fn fgt(&self) -> &Proc {
        self.fgt.as_ref().unwrap()
    }

    fn serial(&self) -> String {
        self.fgt().ready["serial"].as_str().unwrap().to_string()
    }

    /// A FortiOS REST call with the lab API token.
    fn rest(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        block(fgt_rest(self.fgt(), &self.ca_pem, method, path, body))
    }

    fn event_logs(&self, logid: &str) -> Vec<Value> {
        block(fgt_event_logs(self.fgt(), &self.ca_pem, logid))
    }

    fn triggered(&self, stitch: &str) -> u64 {
        let v = self.rest(
            "GET",
            "/api/v2/monitor/system/automation-stitch/stats",
            None,
        );
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == stitch)
            .and_then(|r| r["triggered"].as_u64())
            .unwrap_or(0)
    }

    fn runs(&self) -> Vec<Value> {
        self.rest("GET", "/_lab/automation/runs", None)["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn hosts(&self) -> Vec<Value> {
        self.rest("GET", "/_lab/compromised-hosts", None)["hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn ems_admin(&self) -> EmsAdmin {
        EmsAdmin::signin(
            HttpsClient::new(
                &self.ca_pem,
                None,
                format!("127.0.0.1:{}", self.ems_port).parse().unwrap(),
            )
            .unwrap()
            .with_lab_token(support::lab_token()),
            self.ems_port,
        )
    }

    /// The FortiAnalyzer stand-in on the lab address 10.115.1.20:514.
    fn start_faz(&self) -> (LogReceiver, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::new(true));
        let faz = block(faz_stand_in(&self.ca, sink.clone(), self.faz_addr));
        (faz.rx, sink)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sim-ems stderr:\n{}", self.ems.stderr());
            eprintln!("sim-endpoint stderr:\n{}", self.ep.stderr());
            if let Some(f) = &self.fgt {
                eprintln!("sim-fortigate stderr:\n{}", f.stderr());
            }
        } else {
            if let Some(mut f) = self.fgt.take() {
                assert!(f.terminate().success(), "sim-fortigate exit");
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A signed-in EMS admin.
struct EmsAdmin {
    client: HttpsClient,
    session: EmsSession,
}

impl EmsAdmin {
    fn signin(client: HttpsClient, port: u16) -> EmsAdmin {
        let session = block(EmsSession::signin(&client, port));
        EmsAdmin { client, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        block(self.session.call(&self.client, method, path, body))
            .unwrap()
            .json()
    }

    fn endpoint(&self, ip: &str) -> Option<Value> {
        let v = self.call("GET", "/api/v1/endpoints/index?offset=0&count=100", None);
        endpoint_in_index(&v, ip)
    }

    fn quarantined(&self, ip: &str) -> bool {
        self.endpoint(ip)
            .is_some_and(|e| e["is_quarantined"] == 1 || e["is_quarantined"] == true)
    }

    fn unquarantine(&self, ip: &str) {
        let v = self.call(
            "POST",
            "/api/v1/clients/unquarantine",
            Some(json!({"addresses": [{"ip": ip}]})),
        );
        assert_eq!(v["result"]["retval"], 1, "{v}");
    }
}

fn ioc_notice(serial: &str, id: u64) -> fortilab_core::logchan::Notification {
    notice(
        json!({"id": id, "type": "ioc", "verdict": "Infected", "ioc_level": "high",
           "srcip": "10.115.2.52", "mac": null, "user": null, "hostname": "PC-52",
           "devid": serial, "vdom": "root", "threat": "www.eicar.org",
           "detect_method": "Infected-domain", "epid": 1041, "timestamp": 1614881482}),
    )
}

/// A notification from its JSON wire form.
fn notice(v: Value) -> fortilab_core::logchan::Notification {
    serde_json::from_value(v).expect("a valid notification")
}

const LONG: Duration = Duration::from_secs(20);

#[test]
fn seed_stitch_quarantines_on_ems_once_per_host_until_faz_ack() {
    let mut lab = Lab::start("seed", true);
    let admin = lab.ems_admin();
    wait_for("PC-52 registered on EMS", LONG, || {
        admin.endpoint("10.115.2.52")
    });
    lab.start_fgt("6.4.4", FGT_CONFIG);
    let serial = lab.serial();

    // The EMS connector is up and authorized (EMS auto-authorizes).
    let st = wait_for("EMS connector connected", LONG, || {
        let v = lab.rest("GET", "/api/v2/monitor/endpoint-control/ems/status", None);
        let row = v["results"][0].clone();
        (row["status"] == "connected").then_some(row)
    });
    assert_eq!(st["ems_name"], "EMS-LAB");
    assert_eq!(st["connected"], true);
    assert!(
        st["ems_serial"].as_str().unwrap().starts_with("FCTEMS"),
        "{st}"
    );

    // 1. automation-stitch/test with a log naming the endpoint.
    let v = lab.rest(
        "POST",
        "/api/v2/monitor/system/automation-stitch/test",
        Some(json!({"mkey": STITCH, "log": "date=2021-03-04 time=10:11:22 logid=\"0100022953\" type=\"event\" subtype=\"system\" level=\"warning\" vd=\"root\" logdesc=\"Compromised host detected\" srcip=10.115.2.52"})),
    );
    assert_eq!(v["status"], "success", "{v}");
    wait_for("quarantined by the stitch test", LONG, || {
        admin.quarantined("10.115.2.52").then_some(())
    });
    // The FortiGate's endpoint records are what EMS reports through the connector.
    let on_ems = admin.endpoint("10.115.2.52").unwrap();
    let rec = wait_for("record-list shows PC-52 quarantined", LONG, || {
        let v = lab.rest("GET", "/api/v2/monitor/endpoint-control/record-list", None);
        v["results"]
            .as_array()?
            .iter()
            .find(|r| r["ip"] == "10.115.2.52" && r["quarantined"] == true)
            .cloned()
    });
    assert_eq!(rec["uid"], on_ems["uid"], "{rec}");
    assert_eq!(rec["mac"], on_ems["mac_addr"], "{rec}");
    assert_eq!(rec["host"], on_ems["host"], "{rec}");
    assert_eq!(rec["ems_name"], "EMS-LAB", "{rec}");
    assert!(
        rec["ems_sn"].as_str().unwrap().starts_with("FCTEMS"),
        "{rec}"
    );
    let sum = lab.rest("GET", "/api/v2/monitor/endpoint-control/summary", None);
    assert!(sum["results"]["quarantined"].as_u64() >= Some(1), "{sum}");
    let reg = lab.rest(
        "GET",
        "/api/v2/monitor/endpoint-control/registration/summary",
        None,
    );
    assert_eq!(
        reg["results"]["total"],
        admin.call("GET", "/api/v1/endpoints/index?count=1", None)["data"]["total"],
        "{reg}"
    );
    let runs = wait_for("the test run finished", LONG, || {
        let r = lab.runs();
        (r.len() == 1 && r[0]["status"] != "running").then_some(r)
    });
    assert_eq!(runs[0]["status"], "success", "{runs:?}");
    assert_eq!(runs[0]["from"], "test");
    assert_eq!(
        runs[0]["results"][0]["action"],
        "Compromised Host Quarantine_quarantine-forticlient"
    );
    assert_eq!(lab.triggered(STITCH), 1);
    assert_eq!(lab.event_logs("0100046600").len(), 1);
    admin.unquarantine("10.115.2.52");
    assert!(!admin.quarantined("10.115.2.52"));

    // 2. The FortiAnalyzer notifies: 0100022953, both ioc stitches, EMS quarantine, ban, webhook.
    let (faz, _sink) = lab.start_faz();
    wait_for("the FortiGate on the log channel", LONG, || {
        faz.sessions()
            .iter()
            .any(|s| s.serial == serial)
            .then_some(())
    });
    faz.notify(&serial, ioc_notice(&serial, 7));
    wait_for("quarantined by the IOC stitch", LONG, || {
        admin.quarantined("10.115.2.52").then_some(())
    });
    let det = wait_for("0100022953", LONG, || {
        let l = lab.event_logs("0100022953");
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(det[0]["srcip"], "10.115.2.52");
    assert_eq!(det[0]["logdesc"], "Compromised host detected");
    let trig = wait_for("two more 0100046600", LONG, || {
        let l = lab.event_logs("0100046600");
        (l.len() == 3).then_some(l)
    });
    let stitches: Vec<&str> = trig.iter().filter_map(|l| l["stitch"].as_str()).collect();
    assert!(stitches.contains(&"IOC Ban"), "{trig:?}");
    assert!(trig
        .iter()
        .all(|l| l["logdesc"] == "Automation stitch triggered"));
    assert!(trig.iter().any(|l| l["from"] == "log"));
    // The detection log comes before the stitch logs (newest first in the log API).
    let all = lab.rest("GET", "/api/v2/log/memory/event/system?rows=1000", None)["results"]
        .as_array()
        .unwrap()
        .clone();
    let pos = |pred: &dyn Fn(&Value) -> bool| all.iter().position(pred).unwrap();
    assert!(
        pos(&|l: &Value| l["logid"] == "0100022953")
            > pos(&|l: &Value| l["logid"] == "0100046600" && l["stitch"] == STITCH)
    );
    assert_eq!(lab.triggered(STITCH), 2);
    assert_eq!(lab.triggered("IOC Ban"), 1);
    let banned = wait_for("ban-ip", LONG, || {
        let v = lab.rest("GET", "/api/v2/monitor/user/banned", None);
        let rows = v["results"].as_array().cloned().unwrap_or_default();
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(banned[0]["ip_address"], "10.115.2.52");
    assert_eq!(banned[0]["source"], "ioc");
    let hook = wait_for("the webhook", LONG, || {
        lab.web.lock().unwrap().first().cloned()
    });
    assert!(
        hook.starts_with("POST /incident?host=10.115.2.52 HTTP/1.1\r\n"),
        "{hook}"
    );
    assert!(
        hook.to_ascii_lowercase().contains("x-verdict: infected"),
        "{hook}"
    );
    assert!(
        hook.ends_with(
            "{\"host\":\"10.115.2.52\",\"threat\":\"www.eicar.org\",\"fw\":\"FGT-LAB\"}"
        ),
        "{hook}"
    );
    let hosts = lab.hosts();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["srcip"], "10.115.2.52");
    assert_eq!(hosts[0]["verdict"], "Infected");
    wait_for("all runs finished", LONG, || {
        lab.runs()
            .iter()
            .all(|r| r["status"] == "success")
            .then_some(())
    });

    // 3. A second notification for the same host does not act again.
    admin.unquarantine("10.115.2.52");
    faz.notify(&serial, ioc_notice(&serial, 8));
    wait_for("the repeat is seen", LONG, || {
        (lab.hosts().first().map(|h| h["count"].clone()) == Some(json!(2))).then_some(())
    });
    // The host's count and the decision not to run again are made together, under one lock:
    // once the count shows 2, no run can still start.
    assert_eq!(lab.triggered(STITCH), 2);
    assert_eq!(lab.event_logs("0100022953").len(), 1);
    assert!(!admin.quarantined("10.115.2.52"));

    // 4. FortiAnalyzer acknowledges the host: it is cleared, and the next IOC acts again.
    faz.notify(
        &serial,
        notice(
            json!({"id": 9, "type": "ioc-ack", "srcip": "10.115.2.52", "epid": 1041,
               "devid": serial, "comment": "handled"}),
        ),
    );
    wait_for("the host cleared", LONG, || {
        lab.hosts().is_empty().then_some(())
    });
    faz.notify(&serial, ioc_notice(&serial, 10));
    wait_for("quarantined again after the ack", LONG, || {
        admin.quarantined("10.115.2.52").then_some(())
    });
    wait_for("stats count the third run", LONG, || {
        (lab.triggered(STITCH) == 3).then_some(())
    });
    assert_eq!(lab.event_logs("0100022953").len(), 2);
}

#[test]
fn unauthorized_fortigate_quarantine_fails_and_is_logged() {
    let mut lab = Lab::start("unauth", false);
    let admin = lab.ems_admin();
    wait_for("PC-52 registered on EMS", LONG, || {
        admin.endpoint("10.115.2.52")
    });
    lab.start_fgt("6.4.4", FGT_CONFIG);
    let serial = lab.serial();
    let st = wait_for("EMS connector waiting for authorization", LONG, || {
        let v = lab.rest("GET", "/api/v2/monitor/endpoint-control/ems/status", None);
        let row = v["results"][0].clone();
        (row["status"] == "waiting for authorization").then_some(row)
    });
    assert_eq!(st["connected"], true);
    // The FortiGate is listed on EMS as a fabric device awaiting authorization.
    let certs = admin.call("GET", "/api/v1/client_certificates/index", None);
    let row = certs["data"]
        .as_array()
        .or_else(|| certs["data"]["client_certificates"].as_array())
        .and_then(|a| a.iter().find(|c| c["cn"] == serial.as_str()).cloned())
        .unwrap_or_else(|| panic!("FortiGate not listed: {certs}"));
    assert_ne!(row["authorized"], true, "{row}");
    // EMS shares no endpoint inventory with an unauthorized FortiGate.
    let v = lab.rest("GET", "/api/v2/monitor/endpoint-control/record-list", None);
    assert_eq!(v["results"], json!([]), "{v}");

    lab.rest(
        "POST",
        "/api/v2/monitor/system/automation-stitch/test",
        Some(json!({"mkey": STITCH, "log": "logid=\"0100022953\" srcip=10.115.2.52"})),
    );
    let runs = wait_for("the run finished", LONG, || {
        let r = lab.runs();
        (r.len() == 1 && r[0]["status"] != "running").then_some(r)
    });
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    let res = &runs[0]["results"][0];
    assert_eq!(res["status"], "failed");
    assert!(
        res["detail"].as_str().unwrap().contains("HTTP 403"),
        "{res}"
    );
    assert!(!admin.quarantined("10.115.2.52"));
    // The stitch still counts as triggered and its event log is written; the failure is in
    // the FortiGate's diagnostics.
    assert_eq!(lab.triggered(STITCH), 1);
    assert_eq!(lab.event_logs("0100046600").len(), 1);
    wait_for("the failure in the diagnostics", LONG, || {
        lab.fgt()
            .stderr()
            .contains("automation action failed")
            .then_some(())
    });

    // Once the admin authorizes the FortiGate on EMS, the same stitch succeeds.
    let id = row["id"].clone();
    let v = admin.call(
        "PATCH",
        &format!("/api/v1/client_certificates/{id}/set"),
        Some(json!({"authorized": true})),
    );
    assert_eq!(v["result"]["retval"], 1, "{v}");
    lab.rest(
        "POST",
        "/api/v2/monitor/system/automation-stitch/test",
        Some(json!({"mkey": STITCH, "log": "logid=\"0100022953\" srcip=10.115.2.52"})),
    );
    wait_for("quarantined once authorized", LONG, || {
        admin.quarantined("10.115.2.52").then_some(())
    });
    // Authorized, the FortiGate reads EMS's inventory: PC-52 is in its records, quarantined.
    let v = lab.rest("GET", "/api/v2/monitor/endpoint-control/record-list", None);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ip"] == "10.115.2.52" && r["quarantined"] == true),
        "{v}"
    );
    let _ = Path::new(&lab.dir);
}
