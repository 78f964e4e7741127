//! In-process tests of the engine on a real [`Device`]: FortiAnalyzer notifications, logs,
//! webhooks and the actions that need no EMS (the EMS path is tested with real processes in
//! `tests/automation.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::clock::LabClock;
use fortilab_core::labnet::LabMap;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::{start, Engine, StartOptions};
use crate::config::{FosVersion, Origin};
use crate::device::{Device, TlsIdentity};
use crate::{load_config, serial_for, ConfigSource, DeviceEnv, FortiGateConfig};
use fortilab_core::wait::wait_for;

struct Lab {
    dev: Arc<Device>,
    engine: Arc<Engine>,
    notes: tokio::sync::mpsc::Sender<fortilab_core::logchan::Notification>,
    _stop: tokio_util::sync::DropGuard,
}

fn lab(version: &str, cli: &str, lab_map: LabMap) -> Lab {
    let version = FosVersion::parse(version).unwrap();
    let ca = fortilab_core::tls::LabCa::generate("test").unwrap();
    let opts = FortiGateConfig {
        config: Some(ConfigSource {
            name: "t.conf".into(),
            text: cli.into(),
        }),
        strict: true,
        name: Some("FGT-LAB".into()),
        ..FortiGateConfig::new(version)
    };
    let env = DeviceEnv {
        clock: LabClock::starting_now(1_614_881_482_000, 1.0, 0),
        lab_map: lab_map.clone(),
        ..DeviceEnv::with_ca(Arc::new(ca), 7, None)
    };
    let serial = serial_for(7);
    let (store, _) = load_config(&opts, &env, &serial, "tok3nTOKEN0123456789abcdefghij", "pw")
        .unwrap_or_else(|e| panic!("{e}"));
    let dev = Arc::new(Device::new(
        serial.clone(),
        version,
        7,
        env.clock,
        store,
        lab_map,
        None,
        None,
    ));
    let cert = env.ca.issue(&serial, &[]).unwrap();
    let _ = dev.tls.set(TlsIdentity {
        cert,
        ca_pem: env.ca.cert_pem().to_string(),
    });
    let stop = CancellationToken::new();
    let (notes, rx) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
    let engine = start(dev.clone(), StartOptions::default(), rx, stop.clone());
    Lab {
        dev,
        engine,
        notes,
        _stop: stop.drop_guard(),
    }
}

/// A GUI administrator as the origin of a configuration change.
fn gui_admin() -> Origin {
    Origin {
        user: "admin".into(),
        ui: "GUI(10.0.0.1)".into(),
    }
}

impl Lab {
    fn logs(&self, logid: &str) -> Vec<fortilab_core::logfmt::LogRecord> {
        let (rows, _) = self.dev.logs.query("event", "system", 0, 10_000);
        rows.iter()
            .filter(|l| l.record.text("logid").as_deref() == Some(logid))
            .map(|l| l.record.clone())
            .collect()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        let (evs, _) = self.dev.events.history_since(0);
        evs.iter()
            .filter(|e| e.kind == kind)
            .map(|e| Value::Object(e.data.clone()))
            .collect()
    }

    /// Waits until `n` runs finished and returns them.
    async fn finished_runs(&self, n: usize) -> Vec<super::RunRecord> {
        wait_for(
            &format!("{n} finished runs"),
            Duration::from_secs(10),
            || {
                let runs = self.engine.runs();
                (runs.len() >= n && runs.iter().all(|r| r.finished.is_some())).then_some(runs)
            },
        )
        .await
    }

    /// Hands the engine a FortiAnalyzer notification (its JSON wire form).
    fn notify(&self, v: Value) {
        let n: fortilab_core::logchan::Notification = serde_json::from_value(v).unwrap();
        self.notes.try_send(n).unwrap();
    }

    fn ioc(&self, ip: &str) {
        self.notify(
            json!({"id": 7, "type": "ioc", "verdict": "Infected", "ioc_level": "high",
            "srcip": ip, "mac": null, "user": null, "hostname": "PC-52",
            "devid": self.dev.serial, "vdom": "root", "threat": "www.eicar.org",
            "detect_method": "Infected-domain", "epid": 1041, "timestamp": 1614881482}),
        );
    }
}

const IOC_BAN: &str = "config system automation-action
    edit \"ban\"
        set action-type ban-ip
    next
    edit \"say\"
        set action-type alert
        set message \"%%log.srcip%% is compromised (%%log.threat%%) on %%devname%%\"
    next
end
config system automation-stitch
    edit \"Compromised Host Quarantine\"
        set status enable
        set trigger \"Compromised Host Quarantine\"
        set action \"ban\" \"say\"
    next
end
";

#[tokio::test]
async fn ioc_notification_runs_the_stitch_once_per_host_until_acknowledged() {
    let l = lab("6.4.4", IOC_BAN, LabMap::default());
    l.ioc("10.115.2.52");
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].stitch, "Compromised Host Quarantine");
    assert_eq!(runs[0].status, "success", "{runs:?}");
    assert_eq!(runs[0].srcip.as_deref(), Some("10.115.2.52"));
    // 0100022953 then 0100046600 (6.4 field list: no stitchaction).
    let det = l.logs("0100022953");
    assert_eq!(det.len(), 1);
    assert_eq!(det[0].text("logdesc").unwrap(), "Compromised host detected");
    assert_eq!(det[0].text("srcip").unwrap(), "10.115.2.52");
    assert_eq!(det[0].text("level").unwrap(), "warning");
    let trig = l.logs("0100046600");
    assert_eq!(trig.len(), 1);
    let t = &trig[0];
    assert_eq!(t.text("stitch").unwrap(), "Compromised Host Quarantine");
    assert_eq!(t.text("trigger").unwrap(), "Compromised Host Quarantine");
    assert_eq!(t.text("from").unwrap(), "log");
    assert_eq!(
        t.text("msg").unwrap(),
        "stitch:Compromised Host Quarantine is triggered."
    );
    assert!(t.get("stitchaction").is_none());
    let keys: Vec<&str> = t.keys().collect();
    let at = keys.iter().position(|k| *k == "logdesc").unwrap();
    assert_eq!(&keys[at..], ["logdesc", "msg", "stitch", "trigger", "from"]);
    // The actions: ban-ip filled the banned list, the alert substituted the log fields.
    assert!(l.dev.banned.is_banned("10.115.2.52".parse().unwrap()));
    assert_eq!(l.dev.banned.list()[0].source, "ioc");
    let alerts = l.events("alert");
    assert_eq!(
        alerts[0]["message"],
        "10.115.2.52 is compromised (www.eicar.org) on FGT-LAB"
    );
    assert_eq!(
        l.dev
            .automation
            .stats("Compromised Host Quarantine")
            .triggered,
        1
    );
    let hosts = l.engine.compromised_hosts();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].verdict, "Infected");
    // Lab events in order.
    let kinds: Vec<String> = l
        .dev
        .events
        .history_since(0)
        .0
        .iter()
        .map(|e| e.kind.clone())
        .filter(|k| k.starts_with("ioc.") || k.starts_with("stitch.") || k == "action.result")
        .collect();
    assert_eq!(
        kinds,
        [
            "ioc.detected",
            "stitch.run",
            "action.result",
            "action.result",
            "stitch.done"
        ]
    );

    // The same host again: listed already, nothing runs.
    l.ioc("10.115.2.52");
    wait_for("ioc.repeat", Duration::from_secs(10), || {
        (!l.events("ioc.repeat").is_empty()).then_some(())
    })
    .await;
    assert_eq!(l.engine.runs().len(), 1);
    assert_eq!(l.logs("0100022953").len(), 1);
    assert_eq!(
        l.dev
            .automation
            .stats("Compromised Host Quarantine")
            .triggered,
        1
    );
    assert_eq!(l.engine.compromised_hosts()[0].count, 2);
    // Another host is acted on.
    l.ioc("10.115.2.53");
    l.finished_runs(2).await;

    // FortiAnalyzer acknowledges: the host leaves the list and acts again next time.
    l.notify(
        json!({"id": 8, "type": "ioc-ack", "srcip": "10.115.2.52", "epid": 1041,
                     "devid": l.dev.serial, "comment": "done"}),
    );
    wait_for("ioc.ack", Duration::from_secs(10), || {
        (!l.events("ioc.ack").is_empty()).then_some(())
    })
    .await;
    assert_eq!(l.engine.compromised_hosts().len(), 1);
    l.ioc("10.115.2.52");
    let runs = l.finished_runs(3).await;
    assert_eq!(runs[2].srcip.as_deref(), Some("10.115.2.52"));
    assert_eq!(l.logs("0100022953").len(), 3);
    assert_eq!(
        l.dev
            .automation
            .stats("Compromised Host Quarantine")
            .triggered,
        3
    );
}

#[tokio::test]
async fn medium_level_and_70_logs() {
    let cli = "config system automation-trigger
    edit \"med\"
        set ioc-level medium
    next
end
config system automation-action
    edit \"say\"
        set action-type alert
    next
    edit \"q\"
        set action-type quarantine-forticlient
    next
end
config system automation-stitch
    edit \"Compromised Host Quarantine\"
        set status enable
        set trigger \"Compromised Host - High\"
        config actions
            edit 1
                set action \"say\"
            next
        end
    next
    edit \"Medium\"
        set trigger \"med\"
        config actions
            edit 1
                set action \"q\"
                set required enable
            next
            edit 2
                set action \"say\"
            next
        end
    next
end
";
    let l = lab("7.0.12", cli, LabMap::default());
    // A suspicious (medium) host: only the medium stitch runs.
    l.notify(
        json!({"id": 9, "type": "ioc", "verdict": "Suspicious", "ioc_level": "medium",
                     "srcip": "10.115.2.60"}),
    );
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].stitch, "Medium");
    // No EMS configured: the required quarantine fails and stops the chain.
    assert_eq!(runs[0].status, "failed");
    assert_eq!(runs[0].results.len(), 1);
    assert!(
        runs[0].results[0].detail.contains("no EMS connector"),
        "{:?}",
        runs[0].results
    );
    // 7.0+: no 0100022953; 0100046600 carries stitchaction.
    assert!(l.logs("0100022953").is_empty());
    let t = &l.logs("0100046600")[0];
    assert_eq!(t.text("stitchaction").unwrap(), "q,say");
    // An infected host: both.
    l.ioc("10.115.2.61");
    let runs = l.finished_runs(3).await;
    let mut names: Vec<&str> = runs[1..].iter().map(|r| r.stitch.as_str()).collect();
    names.sort();
    assert_eq!(names, ["Compromised Host Quarantine", "Medium"]);
}

#[tokio::test]
async fn event_log_trigger_with_fields_and_test_and_cli_script() {
    let cli = "config system accprofile
    edit \"readonly\"
        set fwgrp read
        set sysgrp read
    next
end
config system automation-trigger
    edit \"admin-fail\"
        set event-type event-log
        set logid 32002
        config fields
            edit 1
                set name \"user\"
                set value \"eve*\"
            next
        end
    next
end
config system automation-action
    edit \"block-addr\"
        set action-type cli-script
        set script \"config firewall address
edit \\\"bad-%%log.srcip%%\\\"
set subnet %%log.srcip%% 255.255.255.255
next
end
execute ping %%log.srcip%%\"
        set accprofile \"super_admin\"
    next
    edit \"ro\"
        set action-type cli-script
        set script \"config firewall address
edit x
next
end\"
        set accprofile \"readonly\"
    next
end
config system automation-stitch
    edit \"Bad Login\"
        set trigger \"admin-fail\"
        set action \"block-addr\"
    next
    edit \"RO\"
        set trigger \"admin-fail\"
        set status disable
        set action \"ro\"
    next
end
";
    let l = lab("6.4.4", cli, LabMap::default());
    let fail = |user: &str| {
        l.dev
            .logs
            .event_system("0100032002", "alert", "Admin login failed", |record| {
                record
                    .str("user", user.to_string())
                    .ip("srcip", "10.115.2.66".parse().unwrap());
            });
    };
    fail("alice");
    fail("eve2");
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].stitch, "Bad Login");
    assert_eq!(runs[0].status, "success", "{runs:?}");
    assert!(runs[0].results[0]
        .detail
        .contains("not modelled: execute ping 10.115.2.66"));
    assert!(l.dev.config.exists("firewall address", "bad-10.115.2.66"));
    // The cli-script's own change does not fire config-change triggers, and alice's log did
    // not match.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(l.engine.runs().len(), 1);

    // automation-stitch/test runs a stitch on demand (even a disabled one), as its profile.
    assert!(l
        .dev
        .automation
        .submit(crate::device::AutomationRequest::Test {
            stitch: "RO".into(),
            log: None
        }));
    let runs = l.finished_runs(2).await;
    assert_eq!(runs[1].from, "test");
    assert_eq!(runs[1].status, "failed");
    assert!(
        runs[1].results[0].detail.contains("permission denied"),
        "{:?}",
        runs[1].results
    );
    assert!(!l.dev.config.exists("firewall address", "x"));
    // A test log provides the fields.
    l.engine
        .test(
            "Bad Login",
            Some("logid=\"0100032002\" srcip=10.1.2.3 user=\"x\""),
        )
        .unwrap();
    l.finished_runs(3).await;
    assert!(l.dev.config.exists("firewall address", "bad-10.1.2.3"));
}

/// A one-shot HTTP server: returns the request text.
async fn http_server() -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"ticket\":4242}")
            .await
            .unwrap();
        head + &String::from_utf8_lossy(&body)
    });
    (addr, h)
}

#[tokio::test]
async fn webhook_and_email_with_substitution_through_the_lab_map() {
    let (web, web_req) = http_server().await;
    // SMTP server.
    let smtp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = smtp_l.local_addr().unwrap();
    let smtp = tokio::spawn(async move {
        let (s, _) = smtp_l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut log = String::new();
        w.write_all(b"220 smtp.lab\r\n").await.unwrap();
        let mut data = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            log.push_str(&line);
            if data {
                if line == ".\r\n" {
                    data = false;
                    w.write_all(b"250 queued\r\n").await.unwrap();
                }
                continue;
            }
            match line.get(..4).unwrap_or("") {
                "DATA" => {
                    data = true;
                    w.write_all(b"354 go\r\n").await.unwrap();
                }
                "QUIT" => {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => w.write_all(b"250 ok\r\n").await.unwrap(),
            }
        }
        log
    });
    let mut map = LabMap::default();
    map.add_service("10.115.1.50:8080".parse().unwrap(), web);
    map.add_service("10.115.1.60:25".parse().unwrap(), smtp_addr);
    let cli = "config system email-server
    set server \"10.115.1.60\"
    set port 25
    set security none
end
config system automation-action
    edit \"hook\"
        set action-type webhook
        set uri \"10.115.1.50:8080/api/incident?host=%%log.srcip%%\"
        set http-body \"{\\\"host\\\":\\\"%%log.srcip%%\\\",\\\"threat\\\":\\\"%%log.threat%%\\\",\\\"fw\\\":\\\"%%devname%%\\\"}\"
        set headers \"X-Lab:%%log.hostname%%\" \"Authorization:Bearer abc\"
    next
    edit \"mail\"
        set action-type email
        set email-to \"soc@lab.example\"
        set email-subject \"Ticket %%results.ticket%% for %%log.srcip%%\"
        set message \"Host %%log.hostname%% hit %%log.threat%%\"
    next
end
config system automation-stitch
    edit \"Compromised Host Quarantine\"
        set status enable
        set trigger \"Compromised Host Quarantine\"
        set action \"hook\" \"mail\"
    next
end
";
    let l = lab("6.4.4", cli, map);
    l.ioc("10.115.2.52");
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].status, "success", "{:?}", runs[0].results);
    let req = web_req.await.unwrap();
    assert!(
        req.starts_with("POST /api/incident?host=10.115.2.52 HTTP/1.1\r\n"),
        "{req}"
    );
    let lower = req.to_ascii_lowercase();
    assert!(lower.contains("x-lab: pc-52"), "{req}");
    assert!(lower.contains("authorization: bearer abc"), "{req}");
    assert!(lower.contains("host: 10.115.1.50:8080"), "{req}");
    assert!(
        req.ends_with("{\"host\":\"10.115.2.52\",\"threat\":\"www.eicar.org\",\"fw\":\"FGT-LAB\"}"),
        "{req}"
    );
    let mail = smtp.await.unwrap();
    assert!(mail.contains("RCPT TO:<soc@lab.example>"), "{mail}");
    // %%results.ticket%% came from the webhook's JSON answer.
    assert!(
        mail.contains("Subject: Ticket 4242 for 10.115.2.52"),
        "{mail}"
    );
    assert!(mail.contains("Host PC-52 hit www.eicar.org"), "{mail}");
}

#[tokio::test]
async fn incoming_webhook_access_quarantine_and_config_change() {
    let cli = "config system automation-trigger
    edit \"cfg\"
        set event-type config-change
    next
end
config system automation-action
    edit \"say\"
        set action-type alert
    next
    edit \"limited\"
        set action-type alert
        set minimum-interval 3600
    next
end
config system automation-stitch
    edit \"Incoming Webhook Quarantine\"
        set status enable
    next
    edit \"On change\"
        set trigger \"cfg\"
        set action \"limited\"
    next
end
";
    let l = lab("6.4.4", cli, LabMap::default());
    // The factory webhook stitch: access-layer quarantine by MAC, then EMS (fails: no EMS).
    l.dev
        .automation
        .submit(crate::device::AutomationRequest::Webhook {
            stitch: "Incoming Webhook Quarantine".into(),
            body: json!({"mac": "0C:0A:00:0C:CE:B0", "fctuid": "52C66FE08F724FE0B116DAD5062C96CD"}),
            srcip: Some("10.115.1.99".into()),
        });
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].from, "webhook");
    assert_eq!(runs[0].results[0].status, super::runner::Status::Success);
    assert_eq!(runs[0].results[1].status, super::runner::Status::Failed);
    let macs = l.dev.config.with(|config| {
        config
            .single("user quarantine")
            .and_then(|e| e.table("targets"))
            .and_then(|t| t.get("0c:0a:00:0c:ce:b0"))
            .and_then(|e| e.table("macs"))
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|m| m.key.clone())
                    .collect::<Vec<_>>()
            })
    });
    assert_eq!(macs, Some(vec!["0c:0a:00:0c:ce:b0".to_string()]));
    // The quarantine's own configuration change did not fire config-change.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(l.engine.runs().len(), 1);
    // An admin change does, once per change set; minimum-interval suppresses the repeat.
    let admin = gui_admin();
    l.dev
        .config
        .apply_cli(
            "config firewall address\nedit a1\nnext\nedit a2\nnext\nend\n",
            "t",
            false,
            &admin,
        )
        .unwrap();
    let runs = l.finished_runs(2).await;
    assert_eq!(runs[1].stitch, "On change");
    assert_eq!(runs[1].results[0].status, super::runner::Status::Success);
    l.dev
        .config
        .apply_cli(
            "config firewall address\nedit a3\nnext\nend\n",
            "t",
            false,
            &admin,
        )
        .unwrap();
    let runs = l.finished_runs(3).await;
    assert_eq!(runs[2].results[0].status, super::runner::Status::Skipped);
    assert_eq!(runs[2].status, "success");
}

/// The writer hands logs to the event-log trigger only while a stitch may want them; a stitch
/// added later fires on the very next log, without waiting for the engine to notice the change.
#[tokio::test]
async fn an_event_log_stitch_added_later_fires_on_the_next_log() {
    let l = lab("6.4.4", "", LabMap::default());
    let fail = || {
        l.dev
            .logs
            .event_system("0100032002", "alert", "Admin login failed", |record| {
                record
                    .str("user", "eve")
                    .ip("srcip", "10.115.2.66".parse().unwrap());
            });
    };
    fail();
    let gate = wait_for(
        "the log task to look at the configuration",
        Duration::from_secs(10),
        || {
            let g = l.engine.log_gate.lock().unwrap();
            g.generation.map(|_| g.logids.clone())
        },
    )
    .await;
    // The factory stitches "Network Down" and "FortiAnalyzer Connection Down" (6.4).
    assert_eq!(gate, [20099, 22902], "32002 is not handed over any more");
    let admin = gui_admin();
    l.dev
        .config
        .apply_cli(
            "config system automation-trigger
    edit \"admin-fail\"
        set event-type event-log
        set logid 32002
    next
end
config system automation-action
    edit \"note\"
        set action-type cli-script
        set script \"config firewall address
edit \\\"bad-%%log.srcip%%\\\"
next
end\"
        set accprofile \"super_admin\"
    next
end
config system automation-stitch
    edit \"Bad Login\"
        set trigger \"admin-fail\"
        set action \"note\"
    next
end
",
            "t",
            false,
            &admin,
        )
        .unwrap();
    fail();
    let runs = l.finished_runs(1).await;
    assert_eq!(runs[0].stitch, "Bad Login");
    assert!(l.dev.config.exists("firewall address", "bad-10.115.2.66"));
}

/// Issue 15: a burst of 10,000 compromised hosts is evaluated 10,000 times — the queue from
/// the forwarder is bounded, so the burst waits (back-pressure) instead of being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_compromised_hosts_gives_ten_thousand_evaluations() {
    let l = lab("6.4.4", IOC_BAN, LabMap::default());
    let n = 10_000u64;
    let notes = l.notes.clone();
    let feeder = tokio::spawn(async move {
        for i in 0..n {
            let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
            let v = json!({"id": 1000 + i, "type": "ioc", "verdict": "Infected",
                           "ioc_level": "high", "srcip": ip, "threat": "www.eicar.org"});
            // Waits while the engine's queue is full.
            notes
                .send(serde_json::from_value(v).unwrap())
                .await
                .expect("engine running");
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while l.engine.ioc_evaluated() < n || l.dev.banned.list().len() < n as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "evaluated {} of {n}, banned {}",
            l.engine.ioc_evaluated(),
            l.dev.banned.list().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feeder.await.unwrap();
    assert_eq!(l.engine.ioc_evaluated(), n);
    assert_eq!(l.engine.notifications_taken(), n);
    assert_eq!(l.engine.compromised_hosts().len(), n as usize);
    assert_eq!(
        l.dev.banned.list().len(),
        n as usize,
        "every host banned once"
    );
}
