//! End-to-end tests (ems): EMS and endpoints, either the real `sim-ems` and `sim-endpoint`
//! binaries ([`Lab::start`]: restarts, the process's error handling, the Python client) or
//! both started in this process through their libraries ([`Lab::in_process`]: behaviour
//! only, no process start-up).
//!
//! Fetches go to a tiny stand-in for the FortiGate's explicit proxy started by the test: a TCP
//! server that reads the PROXY v2 header and the request, records the lab source address, and
//! answers `200 OK`.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fortilab_core::http::client::{HttpsClient, Response};
use fortilab_core::LabCa;
use fortilab_testkit::{BlockingLab, LabSpec};
use serde_json::{json, Value};
use support::devices::{
    free_port, lab_ca, spawn_ems, spawn_endpoints, write_ems_config, EmsSession, ADMIN_PASSWORD,
};
use support::{wait_for, Proc};

const KA_MS: u64 = 200;
const FGT_SERIAL: &str = "FGVM01TM00000001";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the stand-in proxy saw: (lab source IP, request line).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn stand_in_proxy() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                let (src, used) = loop {
                    match fortilab_core::proxy::parse(&buf) {
                        Ok(Some((h, used))) => {
                            break (h.map(|h| h.src.ip().to_string()).unwrap_or_default(), used)
                        }
                        Ok(None) => break (String::new(), 0),
                        Err(fortilab_core::proxy::ProxyError::Incomplete) => {}
                        Err(_) => return,
                    }
                    let n = c.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let mut rest = buf[used..].to_vec();
                while !rest.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    rest.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&rest).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                s.lock().unwrap().push((src, line));
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
            });
        }
    });
    (addr, seen)
}

/// A lab: CA, EMS, optionally endpoints with the stand-in proxy; processes or in-process.
struct Lab {
    dir: PathBuf,
    ca_pem: String,
    ca: Arc<LabCa>,
    lab_token: String,
    /// The processes (`None` in process).
    ems: Option<Proc>,
    ep: Option<Proc>,
    /// The in-process devices.
    inproc: Option<BlockingLab>,
    /// The endpoints' control listener.
    control: Option<SocketAddr>,
    seen: Seen,
    api_port: u16,
    tel_port: u16,
}

fn start_ems(dir: &Path, api_port: u16, tel_port: u16) -> Proc {
    let cfg = write_ems_config(dir, KA_MS as f64 / 1000.0, Some("10.115.1.20:514"));
    spawn_ems(dir, api_port, tel_port, &cfg, &["--seed", "5"])
}

impl Lab {
    fn start(name: &str, endpoints: usize) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("fortilab-ems-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, _, _) = lab_ca(&dir, "test");
        let (api_port, tel_port) = (free_port(), free_port());
        let ems = start_ems(&dir, api_port, tel_port);
        let (proxy, seen) = stand_in_proxy();
        let map = json!({"services": {
            "10.115.1.30:8013": format!("127.0.0.1:{tel_port}"),
            "10.115.2.1:8080": proxy.to_string(),
        }});
        std::fs::write(dir.join("labmap.json"), map.to_string()).unwrap();
        let ep = (endpoints > 0).then(|| spawn_endpoints(&dir, endpoints));
        let control = ep.as_ref().map(|p| {
            let url = p.ready["control"].as_str().unwrap();
            url.trim_start_matches("https://").parse().unwrap()
        });
        let ca_pem = ca.cert_pem().to_string();
        Lab {
            dir,
            ca_pem,
            ca: Arc::new(ca),
            lab_token: support::lab_token().to_string(),
            ems: Some(ems),
            ep,
            inproc: None,
            control,
            seen,
            api_port,
            tel_port,
        }
    }

    /// The same lab (EMS as [`start_ems`] configures it, `endpoints` endpoints) started in
    /// this process.
    fn in_process(endpoints: usize) -> Lab {
        Lab::in_process_ka(endpoints, Duration::from_millis(KA_MS))
    }

    /// [`Lab::in_process`] with another keep-alive interval.
    fn in_process_ka(endpoints: usize, ka: Duration) -> Lab {
        let (proxy, seen) = stand_in_proxy();
        let ems = fortilab_ems::EmsConfig {
            ka_interval: ka,
            admin_password: ADMIN_PASSWORD.into(),
            faz: Some("10.115.1.20:514".into()),
            log_upload_enabled: false,
            ..fortilab_ems::EmsConfig::for_tests()
        };
        let spec = LabSpec {
            seed: 5,
            ..LabSpec::ems_and_endpoints(ems, endpoints, proxy)
        };
        let lab = BlockingLab::start(spec).unwrap();
        let running = lab.ems.as_ref().unwrap();
        Lab {
            dir: lab.dir().to_path_buf(),
            ca_pem: lab.ca_pem().to_string(),
            ca: lab.env.ca.clone(),
            lab_token: lab.lab_token().to_string(),
            ems: None,
            ep: None,
            control: lab.endpoint_control(),
            api_port: running.api_addr.port(),
            tel_port: running.telemetry_addr.port(),
            inproc: Some(lab),
            seen,
        }
    }

    fn api(&self) -> HttpsClient {
        HttpsClient::new(
            &self.ca_pem,
            None,
            format!("127.0.0.1:{}", self.api_port).parse().unwrap(),
        )
        .unwrap()
        .with_lab_token(&self.lab_token)
    }

    fn control(&self) -> HttpsClient {
        HttpsClient::new(&self.ca_pem, None, self.control.unwrap())
            .unwrap()
            .with_lab_token(&self.lab_token)
    }

    fn ca_path(&self) -> String {
        self.dir.join("ca/ca.pem").display().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.inproc.is_some() {
            // The in-process lab removes its own directory.
        } else if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if let Some(ems) = &self.ems {
            eprintln!("sim-ems stderr:\n{}", ems.stderr());
            if let Some(ep) = &self.ep {
                eprintln!("sim-endpoint stderr:\n{}", ep.stderr());
            }
        }
    }
}

/// A signed-in admin (cookies + CSRF token).
struct Admin {
    client: HttpsClient,
    session: EmsSession,
}

impl Admin {
    fn signin(client: HttpsClient, port: u16) -> Admin {
        let session = rt().block_on(EmsSession::signin(&client, port));
        Admin { client, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        rt().block_on(self.session.call(&self.client, method, path, body))
            .unwrap()
    }

    fn endpoint(&self, ip: &str) -> Option<Value> {
        let r = self.call(
            "GET",
            &format!("/api/v1/endpoints/index?offset=0&count=100&ip_addr={ip}"),
            None,
        );
        r.json()["data"]["endpoints"]
            .as_array()
            .and_then(|a| a.first().cloned())
    }
}

fn fetch(ctl: &HttpsClient, name: &str) -> Value {
    let r = rt()
        .block_on(ctl.json(
            "POST",
            &format!("/endpoints/{name}/_lab/fetch"),
            Some(json!({"url": "http://www.eicar.org/download/eicar.com"})),
        ))
        .unwrap();
    r.json()
}

fn ep_status(ctl: &HttpsClient, name: &str) -> Value {
    rt().block_on(ctl.json("GET", &format!("/endpoints/{name}/_lab/status"), None))
        .unwrap()
        .json()
}

fn access_code(ctl: &HttpsClient, name: &str, code: &str) -> Response {
    rt().block_on(ctl.json(
        "POST",
        &format!("/endpoints/{name}/_lab/access-code"),
        Some(json!({"code": code})),
    ))
    .unwrap()
}

fn events(client: &HttpsClient) -> Vec<Value> {
    let r = rt()
        .block_on(client.request("GET", "/_lab/events?once=1", &[], None))
        .unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

const PY_CLIENT: &str = r#"
import json, os, re, sys, time
import requests

ems, ca, ctl = os.environ["EMS"], os.environ["CA"], os.environ["CONTROL"]
s = requests.Session()
s.verify = ca
r = s.post(ems + "/api/v1/auth/signin", json={"name": "admin", "password": os.environ["PASSWORD"]})
assert r.status_code == 200 and r.json()["result"]["retval"] == 1, r.text
assert len(r.cookies) == 2, r.cookies
assert re.search(r"csrftoken=(\S+);", r.headers["Set-Cookie"]), r.headers["Set-Cookie"]
s.headers.update({"X-CSRFToken": s.cookies["csrftoken"], "Referer": ems, "Ems-Call-Type": "2"})

assert s.get(ems + "/api/v1/system/serial_number").json()["data"].startswith("FCTEMS")

deadline = time.time() + 20
while True:
    data = s.get(ems + "/api/v1/endpoints/index", params={"offset": 0, "count": 100}).json()["data"]
    if data["total"] >= 2:
        break
    assert time.time() < deadline, data
    time.sleep(0.05)
ep = [e for e in data["endpoints"] if e["ip_addr"] == "10.115.2.52"][0]
assert ep["is_quarantined"] == 0 and ep["is_ems_online"] == 1 and ep["name"] == "PC-52", ep

def fetch():
    return requests.post(ctl + "/endpoints/PC-52/_lab/fetch", json={"url": "http://www.eicar.org/download/eicar.com"}, verify=ca,
                         headers={"X-Fortilab-Token": os.environ["LABTOKEN"]}).json()

f = fetch()
assert f["ok"] and f["status"] == 200 and f["blocked_by"] is None, f

r = s.post(ems + "/api/v1/clients/quarantine", json={"addresses": [{"ip": "10.115.2.52"}]})
assert r.status_code == 200 and r.json()["result"]["retval"] == 1, r.text
t0 = time.time()
while True:
    f = fetch()
    if f["blocked_by"] == "quarantine":
        break
    assert time.time() - t0 < 20, f
    time.sleep(0.02)
blocked_after = time.time() - t0
assert f["ok"] is False and f["status"] is None, f

ep = s.get(ems + "/api/v1/endpoints/device/%d/details" % ep["device_id"]).json()["data"]
assert ep["is_quarantined"] == 1 and len(ep["quarantine_access_code"]) == 8, ep
other = [e for e in s.get(ems + "/api/v1/endpoints/index").json()["data"]["endpoints"] if e["ip_addr"] != "10.115.2.52"][0]
assert other["is_quarantined"] == 0 and "quarantine_access_code" not in other, other

r = s.post(ems + "/api/v1/clients/unquarantine", json={"ids": [ep["device_id"]]})
assert r.status_code == 200, r.text
t1 = time.time()
while True:
    f = fetch()
    if f["ok"]:
        break
    assert time.time() - t1 < 20, f
    time.sleep(0.02)
released_after = time.time() - t1
ep = s.get(ems + "/api/v1/endpoints/device/%d/details" % ep["device_id"]).json()["data"]
assert ep["is_quarantined"] == 0 and "quarantine_access_code" not in ep, ep
assert s.get(ems + "/api/v1/auth/signout").status_code == 200
assert s.get(ems + "/api/v1/endpoints/index").status_code == 401
print(json.dumps({"blocked_after": blocked_after, "released_after": released_after}))
"#;

#[test]
fn python_ems_client_quarantines_by_ip_and_unquarantines_by_id() {
    let lab = Lab::start("py", 2);
    let ems = format!("https://127.0.0.1:{}", lab.api_port);
    let ctl = lab.ep.as_ref().unwrap().ready["control"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = support::python(
        PY_CLIENT,
        &[
            ("EMS", ems),
            ("CA", lab.ca_path()),
            ("CONTROL", ctl),
            ("PASSWORD", ADMIN_PASSWORD.to_string()),
            ("LABTOKEN", support::lab_token().to_string()),
            // requests prefers these over Session.verify when they are set in the environment.
            ("REQUESTS_CA_BUNDLE", lab.ca_path()),
            ("CURL_CA_BUNDLE", lab.ca_path()),
        ],
    );
    assert!(ok, "python client failed:\n{err}\n{out}");
    let times: Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    eprintln!(
        "quarantine seen by the endpoint after {}s, release after {}s",
        times["blocked_after"], times["released_after"]
    );
    // The stand-in proxy saw the endpoint's lab address and an absolute-form request.
    let seen = lab.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(src, line)| src == "10.115.2.52"
            && line == "GET http://www.eicar.org/download/eicar.com HTTP/1.1"),
        "{seen:?}"
    );
    // Delivery on the next keep-alive, from EMS's own event stream: no keep-alive of that
    // endpoint was answered between the request and the delivery.
    let ev = events(&lab.api());
    let find = |kind: &str| {
        ev.iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {ev:?}"))
            .clone()
    };
    let (req, del) = (find("ems.quarantine"), find("ems.quarantine.delivered"));
    let (a, b) = (req["seq"].as_u64().unwrap(), del["seq"].as_u64().unwrap());
    // (A delivery before the request's event was emitted trivially was the next keep-alive.)
    let between = ev
        .iter()
        .filter(|e| e["kind"] == "endpoint.keepalive" && e["fctuid"] == req["fctuid"])
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > a && s < b))
        .count();
    assert_eq!(
        between, 0,
        "keep-alives answered before the quarantine was delivered: {ev:?}"
    );
    let delay_ms = (del["ts"].as_i64().unwrap() - req["ts"].as_i64().unwrap()) / 1_000_000;
    eprintln!("EMS delivered the quarantine {delay_ms} ms (lab) after the request; KA {KA_MS} ms");
    assert!(ev
        .iter()
        .any(|e| e["kind"] == "ems.quarantine" && e["by"] == "admin:admin"));
    assert!(ev.iter().any(|e| e["kind"] == "endpoint.registered"));
}

/// EMS pushes actions on the persistent connection and FortiClient reports its own changes at
/// once: with a 60 s keep-alive, a quarantine, a release by access code and a release by the
/// administrator each land in well under a keep-alive period.
#[test]
fn actions_and_state_changes_do_not_wait_for_the_keepalive() {
    let lab = Lab::in_process_ka(1, Duration::from_secs(60));
    let admin = Admin::signin(lab.api(), lab.api_port);
    let ctl = lab.control();
    let ep = wait_for("registration", Duration::from_secs(20), || {
        admin.endpoint("10.115.2.52")
    });
    let id = ep["device_id"].as_u64().unwrap();
    let quarantined = |want: bool| {
        wait_for(
            &format!("PC-52 quarantined = {want}"),
            Duration::from_secs(5),
            || (ep_status(&ctl, "PC-52")["quarantined"].as_bool() == Some(want)).then_some(()),
        )
    };
    let quarantine = || {
        let r = admin.call(
            "POST",
            "/api/v1/clients/quarantine",
            Some(json!({"ids": [id]})),
        );
        assert_eq!(r.status, 200);
        admin
            .call(
                "GET",
                &format!("/api/v1/endpoints/device/{id}/details"),
                None,
            )
            .json()["data"]["quarantine_access_code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let t0 = std::time::Instant::now();
    let code = quarantine();
    quarantined(true);
    eprintln!(
        "quarantine pushed: on the endpoint after {:?} (KA 60 s)",
        t0.elapsed()
    );

    // The access code: EMS learns the release at once.
    assert_eq!(access_code(&ctl, "PC-52", &code).status, 200);
    wait_for("EMS shows the code used", Duration::from_secs(5), || {
        let e = admin.endpoint("10.115.2.52")?;
        (e["is_quarantined"] == 0).then_some(())
    });

    // Quarantined again, then released by the administrator: both pushed.
    quarantine();
    quarantined(true);
    let r = admin.call(
        "POST",
        "/api/v1/clients/unquarantine",
        Some(json!({"ids": [id]})),
    );
    assert_eq!(r.status, 200);
    quarantined(false);
    let ev = events(&lab.api());
    let released = ev
        .iter()
        .filter(|e| e["kind"] == "ems.unquarantine")
        .count();
    assert_eq!(released, 2, "{ev:?}");
    assert_eq!(
        ev.iter()
            .filter(|e| e["kind"] == "ems.quarantine.delivered")
            .count(),
        2,
        "{ev:?}"
    );
}

#[test]
fn access_code_wrong_right_and_only_once() {
    let lab = Lab::in_process(1);
    let admin = Admin::signin(lab.api(), lab.api_port);
    let ctl = lab.control();
    let ep = wait_for("registration", Duration::from_secs(20), || {
        admin.endpoint("10.115.2.52")
    });
    let id = ep["device_id"].as_u64().unwrap();
    let r = admin.call(
        "POST",
        "/api/v1/clients/quarantine",
        Some(json!({"ids": [id]})),
    );
    assert_eq!(r.status, 200);
    let details = admin
        .call(
            "GET",
            &format!("/api/v1/endpoints/device/{id}/details"),
            None,
        )
        .json();
    let code = details["data"]["quarantine_access_code"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("quarantine applied", Duration::from_secs(20), || {
        ep_status(&ctl, "PC-52")["quarantined"]
            .as_bool()
            .filter(|q| *q)
    });
    assert_eq!(fetch(&ctl, "PC-52")["blocked_by"], "quarantine");

    let wrong = access_code(&ctl, "PC-52", "ZZZZ9999");
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json()["error"], "wrong access code");
    assert_eq!(fetch(&ctl, "PC-52")["blocked_by"], "quarantine");

    let right = access_code(&ctl, "PC-52", &code.to_lowercase());
    assert_eq!(
        right.status,
        200,
        "{}",
        String::from_utf8_lossy(&right.body)
    );
    assert_eq!(fetch(&ctl, "PC-52")["ok"], true);
    // EMS learns it on the next keep-alive and voids the code.
    wait_for(
        "EMS shows is_quarantined 0",
        Duration::from_secs(20),
        || {
            let e = admin.endpoint("10.115.2.52")?;
            (e["is_quarantined"] == 0 && e.get("quarantine_access_code").is_none()).then_some(())
        },
    );
    let again = access_code(&ctl, "PC-52", &code);
    assert!(
        !again.json()["ok"].as_bool().unwrap(),
        "a used code works twice"
    );

    // A new quarantine has a new code; the old one does not release it.
    admin.call(
        "POST",
        "/api/v1/clients/quarantine",
        Some(json!({"ids": [id]})),
    );
    let code2 = admin
        .call(
            "GET",
            &format!("/api/v1/endpoints/device/{id}/details"),
            None,
        )
        .json()["data"]["quarantine_access_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(code, code2);
    wait_for("second quarantine applied", Duration::from_secs(20), || {
        ep_status(&ctl, "PC-52")["quarantined"]
            .as_bool()
            .filter(|q| *q)
    });
    assert_eq!(access_code(&ctl, "PC-52", &code).status, 403);
    assert_eq!(fetch(&ctl, "PC-52")["blocked_by"], "quarantine");
    let ev = events(&lab.api());
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "ems.unquarantine" && e["by"] == "access-code"),
        "{ev:?}"
    );
}

#[test]
fn unauthorized_fortigate_is_refused_until_authorized() {
    let lab = Lab::in_process(1);
    let admin = Admin::signin(lab.api(), lab.api_port);
    wait_for("registration", Duration::from_secs(20), || {
        admin.endpoint("10.115.2.52")
    });
    let cert = lab.ca.issue(FGT_SERIAL, &[]).unwrap();
    let fgt = HttpsClient::new(
        &lab.ca_pem,
        Some(&cert),
        format!("127.0.0.1:{}", lab.api_port).parse().unwrap(),
    )
    .unwrap()
    .with_lab_token(&lab.lab_token);
    let rt = rt();

    // Without a certificate or session: 401.
    let r = rt
        .block_on(lab.api().json(
            "POST",
            "/api/v1/fabric/quarantine",
            Some(json!({"ip": "10.115.2.52"})),
        ))
        .unwrap();
    assert_eq!(r.status, 401);

    let r = rt
        .block_on(fgt.json("GET", "/api/v1/system/serial_number", None))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json()["data"].as_str().unwrap().starts_with("FCTEMS"));
    let st = rt
        .block_on(fgt.json("GET", "/api/v1/fabric/status", None))
        .unwrap()
        .json();
    assert_eq!(st["data"]["authorized"], false);

    let body = json!({"ip": "10.115.2.52", "reason": "IOC: www.eicar.org", "source": FGT_SERIAL});
    let r = rt
        .block_on(fgt.json("POST", "/api/v1/fabric/quarantine", Some(body.clone())))
        .unwrap();
    assert_eq!(r.status, 403);
    let j = r.json();
    assert!(j["result"]["retval"].as_i64().unwrap() < 0);
    assert_eq!(
        j["result"]["message"],
        format!("FortiGate {FGT_SERIAL} is not authorized")
    );
    assert_eq!(admin.endpoint("10.115.2.52").unwrap()["is_quarantined"], 0);

    // The admin authorizes it (client_certificates/{id}/set), as the public EMS helper does.
    let rows = admin
        .call("GET", "/api/v1/client_certificates/index", None)
        .json();
    let row = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cn"] == FGT_SERIAL)
        .unwrap()
        .clone();
    assert_eq!(row["authorized"], false);
    let r = admin.call(
        "PATCH",
        &format!("/api/v1/client_certificates/{}/set", row["id"]),
        Some(json!({"authorized": true})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let r = rt
        .block_on(fgt.json("POST", "/api/v1/fabric/quarantine", Some(body)))
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["endpoints"][0]["is_quarantined"], 1);
    let ep = admin.endpoint("10.115.2.52").unwrap();
    assert_eq!(ep["is_quarantined"], 1);
    wait_for("endpoint quarantined", Duration::from_secs(20), || {
        ep_status(&lab.control(), "PC-52")["quarantined"]
            .as_bool()
            .filter(|q| *q)
    });
    let ev = events(&lab.api());
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "ems.quarantine" && e["by"] == format!("fortigate:{FGT_SERIAL}")),
        "{ev:?}"
    );
    assert!(ev
        .iter()
        .any(|e| e["kind"] == "fabric.device" && e["state"] == "seen"));

    // By FCTUID too, and release.
    let fctuid = ep["uid"].as_str().unwrap();
    let r = rt
        .block_on(fgt.json(
            "POST",
            "/api/v1/fabric/unquarantine",
            Some(json!({"fctuid": fctuid})),
        ))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(admin.endpoint("10.115.2.52").unwrap()["is_quarantined"], 0);
    let r = rt
        .block_on(fgt.json(
            "POST",
            "/api/v1/fabric/quarantine",
            Some(json!({"ip": "10.9.9.9"})),
        ))
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn restart_keeps_endpoints_quarantine_and_codes() {
    let mut lab = Lab::start("restart", 1);
    let admin = Admin::signin(lab.api(), lab.api_port);
    let ep = wait_for("registration", Duration::from_secs(20), || {
        admin.endpoint("10.115.2.52")
    });
    let r = admin.call(
        "POST",
        "/api/v1/clients/quarantine",
        Some(json!({"addresses": [{"ip": "10.115.2.52"}]})),
    );
    assert_eq!(r.status, 200);
    let code = admin.endpoint("10.115.2.52").unwrap()["quarantine_access_code"]
        .as_str()
        .unwrap()
        .to_string();

    // A crash right after the API answered loses nothing.
    lab.ems.as_mut().unwrap().kill9();
    lab.ems = Some(start_ems(&lab.dir, lab.api_port, lab.tel_port));
    let admin = Admin::signin(lab.api(), lab.api_port);
    let after = admin.endpoint("10.115.2.52").unwrap();
    assert_eq!(after["device_id"], ep["device_id"]);
    assert_eq!(after["uid"], ep["uid"]);
    assert_eq!(after["is_quarantined"], 1);
    assert_eq!(after["quarantine_access_code"], code.as_str());

    // The endpoint goes on talking to the restarted EMS and gets the quarantine.
    let ctl = lab.control();
    wait_for(
        "quarantine applied after restart",
        Duration::from_secs(20),
        || {
            ep_status(&ctl, "PC-52")["quarantined"]
                .as_bool()
                .filter(|q| *q)
        },
    );

    // A clean stop (SIGTERM) exits 0 and keeps the state as well.
    let st = lab.ems.as_mut().unwrap().terminate();
    assert!(st.success(), "{st:?}");
    lab.ems = Some(start_ems(&lab.dir, lab.api_port, lab.tel_port));
    let before_restart = admin;
    let admin = Admin::signin(lab.api(), lab.api_port);
    // A session from before the restart opens nothing, and the new one has another id.
    let r = before_restart.call("GET", "/api/v1/endpoints/index", None);
    assert_eq!(r.status, 401, "an old EMS session cookie still works");
    assert_ne!(before_restart.session.cookie, admin.session.cookie);
    let after = admin.endpoint("10.115.2.52").unwrap();
    assert_eq!(after["quarantine_access_code"], code.as_str());
    // The code still works after the restarts.
    assert_eq!(access_code(&ctl, "PC-52", &code).status, 200);
    wait_for("EMS shows the release", Duration::from_secs(20), || {
        (admin.endpoint("10.115.2.52")?["is_quarantined"] == 0).then_some(())
    });

    // Once more after a restart: a new quarantine has a new code and the used one is refused.
    assert!(lab.ems.as_mut().unwrap().terminate().success());
    lab.ems = Some(start_ems(&lab.dir, lab.api_port, lab.tel_port));
    let admin = Admin::signin(lab.api(), lab.api_port);
    wait_for("PC-52 back in touch", Duration::from_secs(20), || {
        admin.endpoint("10.115.2.52")
    });
    let r = admin.call(
        "POST",
        "/api/v1/clients/quarantine",
        Some(json!({"addresses": [{"ip": "10.115.2.52"}]})),
    );
    assert_eq!(r.status, 200);
    let second = admin.endpoint("10.115.2.52").unwrap()["quarantine_access_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, code, "a used access code was issued again");
    wait_for("quarantined again", Duration::from_secs(20), || {
        ep_status(&ctl, "PC-52")["quarantined"]
            .as_bool()
            .filter(|q| *q)
    });
    let used = access_code(&ctl, "PC-52", &code);
    assert_eq!(
        used.status, 403,
        "the used code released the endpoint again"
    );
    assert_eq!(access_code(&ctl, "PC-52", &second).status, 200);
}

#[test]
fn bad_input_gets_clear_errors_and_the_process_keeps_serving() {
    let lab = Lab::start("bad", 0);
    let rt = rt();
    let tel: SocketAddr = format!("127.0.0.1:{}", lab.tel_port).parse().unwrap();
    let wait = Duration::from_secs(3);

    let garbage = rt
        .block_on(fortilab_core::http::client::tls_exchange(
            tel,
            &lab.ca_pem,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            wait,
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&garbage).to_string();
    assert!(text.starts_with("MSG_HEADER: FCTEMS="), "{text}");
    let (reply, _) = fortilab_ems::proto::parse_frame(&garbage).unwrap().unwrap();
    assert_eq!(reply.value("STATUS"), Some("ERROR"));
    assert_eq!(reply.value("ERROR_CODE"), Some("BAD_FRAME"));
    assert!(
        reply.value("MESSAGE").unwrap().contains("MSG_HEADER"),
        "{reply:?}"
    );

    let bad_size = b"MSG_HEADER: FCTUID=ABC\r\nSIZE=nope\r\n\r\n";
    let r = rt
        .block_on(fortilab_core::http::client::tls_exchange(
            tel,
            &lab.ca_pem,
            bad_size,
            wait,
        ))
        .unwrap();
    let (reply, _) = fortilab_ems::proto::parse_frame(&r).unwrap().unwrap();
    assert!(
        reply.value("MESSAGE").unwrap().contains("SIZE=nope"),
        "{reply:?}"
    );

    let mut ka =
        fortilab_ems::proto::Frame::new("FCTUID", "0123456789ABCDEF0123456789ABCDEF", "KA", "KA")
            .head("EC_QUARANTINED", 0);
    ka.put("QUARANTINE_ID", 0);
    let r = rt
        .block_on(fortilab_core::http::client::tls_exchange(
            tel,
            &lab.ca_pem,
            &ka.encode(),
            Duration::from_millis(500),
        ))
        .unwrap();
    let (reply, _) = fortilab_ems::proto::parse_frame(&r).unwrap().unwrap();
    assert_eq!(reply.value("ERROR_CODE"), Some("NOT_REGISTERED"));
    assert_eq!(reply.value("ACTION"), Some("REGISTER"));
    assert!(reply.value("MESSAGE").unwrap().contains("register first"));
    assert!(reply.header_value("KA_INTERVAL").is_some());

    // A proper registration on the same server still works.
    let mut reg = fortilab_ems::proto::Frame::new(
        "FCTUID",
        "0123456789ABCDEF0123456789ABCDEF",
        "REGISTER",
        "SYSINFO",
    )
    .head("IP", "10.115.2.99")
    .head("MAC", "02-00-00-00-00-99")
    .head("EC_QUARANTINED", 0);
    reg.put("HOSTNAME", "PC-99").put("USER", "bob");
    let r = rt
        .block_on(fortilab_core::http::client::tls_exchange(
            tel,
            &lab.ca_pem,
            &reg.encode(),
            Duration::from_millis(500),
        ))
        .unwrap();
    let (reply, _) = fortilab_ems::proto::parse_frame(&r).unwrap().unwrap();
    assert_eq!(reply.value("STATUS"), Some("OK"), "{reply:?}");
    assert_eq!(reply.value("LOG_UPLOAD_SERVER"), Some("10.115.1.20:514"));

    // REST: no session, bad credentials, missing CSRF, bad Referer, bad JSON.
    let api = lab.api();
    let r = rt
        .block_on(api.json("GET", "/api/v1/endpoints/index", None))
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["result"]["retval"], -1);
    let r = rt
        .block_on(api.json(
            "POST",
            "/api/v1/auth/signin",
            Some(json!({"name": "admin", "password": "x"})),
        ))
        .unwrap();
    assert_eq!(r.status, 401);
    let admin = Admin::signin(lab.api(), lab.api_port);
    let no_csrf = rt
        .block_on(api.request(
            "POST",
            "/api/v1/clients/quarantine",
            &[
                ("cookie", &admin.session.cookie),
                ("referer", &admin.session.referer),
                ("content-type", "application/json"),
            ],
            Some(br#"{"ids":[1]}"#.to_vec()),
        ))
        .unwrap();
    assert_eq!(no_csrf.status, 403);
    assert!(no_csrf.json()["result"]["message"]
        .as_str()
        .unwrap()
        .starts_with("CSRF Failed"));
    let bad_ref = rt
        .block_on(api.request(
            "POST",
            "/api/v1/clients/quarantine",
            &[
                ("cookie", &admin.session.cookie),
                ("x-csrftoken", &admin.session.csrf),
                ("referer", "https://evil.example/"),
                ("content-type", "application/json"),
            ],
            Some(br#"{"ids":[1]}"#.to_vec()),
        ))
        .unwrap();
    assert_eq!(bad_ref.status, 403);
    let r = rt
        .block_on(api.request(
            "POST",
            "/api/v1/clients/quarantine",
            &[
                ("cookie", &admin.session.cookie),
                ("x-csrftoken", &admin.session.csrf),
                ("referer", &format!("{}/api/v1/", admin.session.referer)),
                ("content-type", "application/json"),
            ],
            Some(b"{\"ids\": [1,".to_vec()),
        ))
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["result"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON body"));
    let r = admin.call(
        "POST",
        "/api/v1/clients/quarantine",
        Some(json!({"ids": [424242]})),
    );
    assert_eq!(r.status, 404);
    let r = admin.call("GET", "/api/v1/no/such/thing", None);
    assert_eq!(r.status, 404);

    // A host name with control characters and markup is accepted as FortiClient sent it,
    // kept as data (JSON-escaped in the API and the events) and shown escaped on a terminal.
    let hostile = "PC-<b onmouseover=alert(1)>\u{1b}[2J\u{7}\"evil\"";
    let mut reg = fortilab_ems::proto::Frame::new(
        "FCTUID",
        "FEDCBA9876543210FEDCBA9876543210",
        "REGISTER",
        "SYSINFO",
    )
    .head("IP", "10.115.2.98")
    .head("MAC", "02-00-00-00-00-98")
    .head("EC_QUARANTINED", 0);
    reg.put("HOSTNAME", hostile).put("USER", "mallory");
    let r = rt
        .block_on(fortilab_core::http::client::tls_exchange(
            tel,
            &lab.ca_pem,
            &reg.encode(),
            Duration::from_millis(500),
        ))
        .unwrap();
    let (reply, _) = fortilab_ems::proto::parse_frame(&r).unwrap().unwrap();
    assert_eq!(reply.value("STATUS"), Some("OK"), "{reply:?}");
    let ep = admin.endpoint("10.115.2.98").unwrap();
    assert_eq!(ep["name"], hostile);
    let ev = wait_for("the registration event", Duration::from_secs(10), || {
        events(&api)
            .into_iter()
            .find(|e| e.to_string().contains("FEDCBA9876543210FEDCBA9876543210"))
    });
    let line =
        fortilab_scenarios::timeline::format_event(&ev, &fortilab_core::LabClock::real(), true);
    assert!(
        !line.contains('\u{7}') && !line.contains("\u{1b}[2J"),
        "terminal escapes reach the terminal: {line:?}"
    );
    assert!(line.contains(r"\x1b[2J"), "shown escaped: {line:?}");

    // Still serving: the registered endpoint is listed, deleting it works.
    let ep = admin.endpoint("10.115.2.99").unwrap();
    assert_eq!(ep["name"], "PC-99");
    let r = admin.call(
        "DELETE",
        &format!("/api/v1/devices/delete?ids[]={}", ep["device_id"]),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(admin.endpoint("10.115.2.99").is_none());
    let health = rt.block_on(api.json("GET", "/_lab/health", None)).unwrap();
    assert_eq!(health.json()["ok"], true);
    let started = Instant::now();
    let mut lab = lab;
    assert!(lab.ems.as_mut().unwrap().terminate().success());
    assert!(started.elapsed() < Duration::from_secs(10));
}
