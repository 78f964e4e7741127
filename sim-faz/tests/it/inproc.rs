//! In-process tests of the whole FortiAnalyzer: a real log channel sender, the store, the IOC
//! engine, notifications and the JSON-RPC dispatcher (called directly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::logchan::{Hello, LogSender, SenderConfig, UploadOption};
use fortilab_core::tls::LabCa;
use fortilab_core::wait::wait_for;
use fortilab_core::LabClock;
use fortilab_faz::jsonrpc::{self, ApiState, Caller};
use fortilab_faz::{DeviceEnv, FazConfig, Listeners};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn webfilter(i: u64, src: &str, host: &str, url: &str) -> String {
    webfilter_at(i, src, host, url, 1_614_852_000_000_000_000u64 + i)
}

/// A web-filter log at `eventtime` (ns).
fn webfilter_at(i: u64, src: &str, host: &str, url: &str, eventtime: u64) -> String {
    format!(
        "date=2021-03-04 time=10:11:22 devname=\"FGT-LAB\" devid=\"FGVM01TM00000001\" eventtime={} tz=\"+0000\" logid=\"0316013057\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_allow\" level=\"notice\" vd=\"root\" policyid=1 sessionid={i} srcip={src} srcport=50000 srcintf=\"port3\" dstip=89.1.1.1 dstport=80 dstintf=\"port1\" proto=6 service=\"HTTP\" hostname=\"{host}\" profile=\"monitor-all\" action=\"passthrough\" reqtype=\"direct\" url=\"{url}\" sentbyte=100 rcvdbyte=200 direction=\"outgoing\" msg=\"URL belongs to an allowed category in policy\" cat=0 catdesc=\"Unrated\"",
        eventtime
    )
}

fn call(app: &(Arc<fortilab_faz::faz::Faz>, ApiState), token: &str, body: Value) -> Value {
    jsonrpc::handle(
        &app.0,
        &app.1,
        body.to_string().as_bytes(),
        &Caller {
            token: Some(token.into()),
            peer: "test".into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_webfilter_log_compromises_host_notifies_and_ack_clears() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let env = DeviceEnv::with_ca(ca.clone(), 1, Some(&dir.path().join("faz")));
    let cfg = FazConfig {
        auto_authorize: false,
        ..FazConfig::default()
    };
    let running = fortilab_faz::start(
        cfg,
        env.clone(),
        Listeners::ephemeral().await.unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    let faz = running.faz.clone();
    let key = faz.id.api_key.clone();
    let app = (faz.clone(), ApiState::default());

    let serial = "FGVM01TM00000001";
    let cert = ca.issue(serial, &[]).unwrap();
    let tls = fortilab_core::tls::client_config(&ca, Some(&cert)).unwrap();
    let (sender, mut notes) = LogSender::start(
        SenderConfig {
            server: running.log_addr,
            server_name: "localhost".into(),
            tls,
            hello: Hello {
                serial: serial.into(),
                hostname: "FGT-LAB".into(),
                platform: "FortiGate-VM64".into(),
                version: "6.4.4".into(),
                device_type: "fortigate".into(),
                vdom: "root".into(),
                ip: None,
            },
            queue_dir: dir.path().join("q"),
            mem_limit: 10_000,
            upload: UploadOption::Realtime,
            clock: LabClock::real(),
            reconnect_delay: Duration::from_millis(100),
        },
        stop.clone(),
    )
    .unwrap();
    sender.send(webfilter(1, "10.115.2.60", "www.example.com", "/"));
    // Unauthorized: listed in /dvmdb/device but not stored.
    wait_for("device registered", Duration::from_secs(20), || {
        faz.device(serial)
    })
    .await;
    assert!(!faz.is_authorized(serial));
    let r = call(
        &app,
        &key,
        json!({"method": "get", "params": [{"url": "/dvmdb/adom/root/device"}]}),
    );
    assert_eq!(r["result"][0]["data"].as_array().unwrap().len(), 0, "{r}");
    // Authorize through the API.
    let r = call(
        &app,
        &key,
        json!({"method": "exec", "params": [{"url": "dvm/cmd/add/device", "data": {"adom": "root", "device": {"sn": serial, "name": "FGT-LAB", "device action": "add_model", "mgmt_mode": "fmgfaz"}}}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    assert!(
        sender.flush(Duration::from_secs(10)).await,
        "not acked after authorization"
    );
    sender.send(webfilter(
        2,
        "10.115.2.52",
        "www.eicar.org",
        "/download/eicar.com",
    ));
    assert!(sender.flush(Duration::from_secs(10)).await);

    // Two-step log search.
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 3, "method": "add", "params": [{"apiver": 3, "url": "/logview/adom/root/logsearch", "logtype": "webfilter", "filter": "hostname=\"www.eicar.org\" srcip==10.115.2.52"}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap_or_else(|| panic!("{r}"));
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 4, "method": "get", "params": [{"apiver": 3, "url": format!("/logview/adom/root/logsearch/{tid}"), "limit": 10, "offset": 0}]}),
    );
    assert_eq!(r["result"]["total-count"], 1, "{r}");
    assert_eq!(r["result"]["data"][0]["url"], "/download/eicar.com");

    // Compromised host, alerts, notification.
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 5, "method": "get", "params": [{"apiver": 3, "url": "/ioc/adom/root/compromised-hosts"}]}),
    );
    let host = r["result"]["data"][0].clone();
    assert_eq!(host["epip"], "10.115.2.52", "{r}");
    assert_eq!(host["verdict"], "Infected");
    assert_eq!(host["verdict-level"], "high");
    assert_eq!(host["threat-count"], 1);
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 6, "method": "get", "params": [{"apiver": 3, "url": "/eventmgmt/adom/root/alerts", "filter": "trigger_name=\"Default-Compromised Host-Detection-IOC-By-Endpoint\""}]}),
    );
    assert_eq!(r["result"]["data"].as_array().unwrap().len(), 1, "{r}");
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    let n = n.to_json();
    assert_eq!(n["type"], "ioc");
    assert_eq!(n["srcip"], "10.115.2.52");
    assert_eq!(n["verdict"], "Infected");
    assert_eq!(n["detect_method"], "Infected-domain");

    // Acknowledge → ioc-ack.
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 7, "method": "update", "params": [{"apiver": 3, "url": "/ioc/adom/root/events/ack", "events": [{"source-ip": "10.115.2.52", "comment": "cleaned"}]}]}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    let n = n.to_json();
    assert_eq!(n["type"], "ioc-ack");
    assert_eq!(n["srcip"], "10.115.2.52");
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "id": 8, "method": "get", "params": [{"apiver": 3, "url": "/ioc/adom/root/compromised-hosts", "filter": "epip=10.115.2.52"}]}),
    );
    assert_eq!(r["result"]["data"][0]["ack"], 1, "{r}");
    // A new hit (logged after the acknowledgement) re-lists and notifies again.
    let after_ack = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 2_000_000_000;
    sender.send(webfilter_at(
        3,
        "10.115.2.52",
        "www.eicar.org",
        "/download/eicar.com",
        after_ack,
    ));
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    let n = n.to_json();
    assert_eq!(n["type"], "ioc");
    stop.cancel();
    running.wait().await;
}

#[test]
fn dispatcher_rejects_bad_input_with_clear_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let running = rt
        .block_on(async {
            fortilab_faz::start(
                FazConfig::default(),
                DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path())),
                Listeners::ephemeral().await.unwrap(),
                stop.clone(),
            )
            .await
        })
        .unwrap();
    let faz = running.faz.clone();
    let api = ApiState::default();
    let anon = Caller::default();
    let h = |b: &[u8], c: &Caller| jsonrpc::handle(&faz, &api, b, c);
    assert_eq!(h(b"{not json", &anon)["error"]["code"], -32700);
    assert_eq!(h(b"[1,2]", &anon)["error"]["code"], -32600);
    assert_eq!(
        h(
            br#"{"method":"frobnicate","params":[{"url":"/sys/status"}]}"#,
            &anon
        )["error"]["code"],
        -32601
    );
    assert_eq!(
        h(
            br#"{"method":"get","params":[{"url":"/sys/status"}]}"#,
            &anon
        )["result"][0]["status"]["code"],
        -11
    );
    let bad_key = Caller {
        token: Some("nope".into()),
        peer: String::new(),
    };
    assert_eq!(
        h(
            br#"{"method":"get","params":[{"url":"/sys/status"}]}"#,
            &bad_key
        )["result"][0]["status"]["code"],
        -11
    );
    // Login, use the session (also without a leading slash), logout, reuse → -11.
    let pw = faz.id.admin_password.clone();
    let bad = h(json!({"id":1,"method":"exec","params":[{"url":"sys/login/user","data":{"user":"admin","passwd":"wrong"}}]}).to_string().as_bytes(), &anon);
    assert_ne!(bad["result"][0]["status"]["code"], 0);
    assert!(bad.get("session").is_none());
    let r = h(json!({"id":1,"method":"exec","params":[{"url":"sys/login/user","data":{"user":"admin","passwd":pw}}],"session":""}).to_string().as_bytes(), &anon);
    let sid = r["session"].as_str().unwrap().to_string();
    let r = h(
        json!({"id":2,"method":"get","params":[{"url":"sys/status"}],"session":sid})
            .to_string()
            .as_bytes(),
        &anon,
    );
    assert_eq!(
        r["result"][0]["data"]["Serial Number"],
        faz.id.serial.as_str()
    );
    assert_eq!(r["id"], 2);
    let r = h(json!({"id":3,"method":"get","params":[{"url":"/cli/global/system/global","fields":["workspace-mode","adom-status"]}],"session":sid}).to_string().as_bytes(), &anon);
    assert_eq!(r["result"][0]["data"]["workspace-mode"], "disabled");
    let r = h(
        json!({"id":4,"method":"get","params":[{"url":"/no/such/thing"}],"session":sid})
            .to_string()
            .as_bytes(),
        &anon,
    );
    assert_eq!(r["result"][0]["status"]["code"], -6);
    let r = h(json!({"id":5,"jsonrpc":"2.0","method":"add","params":[{"url":"/logview/adom/root/logsearch","logtype":"webfilter","filter":"srcip==("}],"session":sid}).to_string().as_bytes(), &anon);
    assert_eq!(r["error"]["code"], -10, "{r}");
    let r = h(json!({"id":6,"jsonrpc":"2.0","method":"add","params":[{"url":"/logview/adom/root/logsearch","logtype":"nonsense"}],"session":sid}).to_string().as_bytes(), &anon);
    assert_eq!(r["error"]["code"], -10, "{r}");
    let r = h(json!({"id":7,"method":"set","params":[{"url":"/cli/global/system/global","data":{"jsonapi-log":"sometimes"}}],"session":sid}).to_string().as_bytes(), &anon);
    assert_eq!(r["result"][0]["status"]["code"], -10);
    h(
        json!({"id":8,"method":"exec","params":[{"url":"/sys/logout"}],"session":sid})
            .to_string()
            .as_bytes(),
        &anon,
    );
    let r = h(
        json!({"id":9,"method":"get","params":[{"url":"sys/status"}],"session":sid})
            .to_string()
            .as_bytes(),
        &anon,
    );
    assert_eq!(r["result"][0]["status"]["code"], -11);
    // A valid bearer token wins over a bogus body session (pyFMG's fake session).
    let key = Caller {
        token: Some(faz.id.api_key.clone()),
        peer: String::new(),
    };
    let r = h(
        json!({"id":10,"method":"get","params":[{"url":"/dvmdb/adom"}],"session":"uuid-fake-abcd"})
            .to_string()
            .as_bytes(),
        &key,
    );
    assert_eq!(r["result"][0]["data"][0]["name"], "root");
    let c = faz.counters.snapshot();
    assert!(
        c["bad_json"].as_u64().unwrap() >= 1
            && c["unknown_urls"].as_u64().unwrap() >= 1
            && c["auth_failures"].as_u64().unwrap() >= 3,
        "{c}"
    );
    stop.cancel();
    rt.block_on(running.wait());
}

#[test]
fn jsonapi_log_writes_searchable_event_logs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let running = rt
        .block_on(async {
            fortilab_faz::start(
                FazConfig::default(),
                DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path())),
                Listeners::ephemeral().await.unwrap(),
                stop.clone(),
            )
            .await
        })
        .unwrap();
    let faz = running.faz.clone();
    let app = (faz.clone(), ApiState::default());
    let key = faz.id.api_key.clone();
    let r = call(
        &app,
        &key,
        json!({"method":"set","params":[{"url":"/cli/global/system/global","data":{"jsonapi-log":"all"}}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    call(
        &app,
        &key,
        json!({"method":"get","params":[{"url":"/sys/status"}]}),
    );
    let r = call(
        &app,
        &key,
        json!({"jsonrpc":"2.0","method":"add","params":[{"url":"/logview/adom/root/logsearch","logtype":"event","filter":"action=jsonapi-request logdesc~\"JSON API\""}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap();
    let r = call(
        &app,
        &key,
        json!({"jsonrpc":"2.0","method":"get","params":[{"url":format!("/logview/adom/root/logsearch/{tid}"),"limit":50}]}),
    );
    let rows = r["result"]["data"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|x| x["msg"].as_str().unwrap_or("").contains("/sys/status")),
        "{r}"
    );
    stop.cancel();
    rt.block_on(running.wait());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_100k_with_a_restart_stores_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let env = DeviceEnv::with_ca(ca.clone(), 1, Some(&dir.path().join("faz")));
    let cfg = FazConfig {
        auto_authorize: true,
        ..FazConfig::default()
    };
    let running = fortilab_faz::start(
        cfg.clone(),
        env.clone(),
        Listeners::ephemeral().await.unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    let serial = "FGVM01TM00000002";
    let cert = ca.issue(serial, &[]).unwrap();
    let tls = fortilab_core::tls::client_config(&ca, Some(&cert)).unwrap();
    let sstop = CancellationToken::new();
    let (sender, _notes) = LogSender::start(
        SenderConfig {
            server: running.log_addr,
            server_name: "localhost".into(),
            tls,
            hello: Hello {
                serial: serial.into(),
                hostname: "FGT-LAB".into(),
                platform: "FortiGate-VM64".into(),
                version: "6.4.4".into(),
                device_type: "fortigate".into(),
                vdom: "root".into(),
                ip: None,
            },
            queue_dir: dir.path().join("q"),
            mem_limit: 200_000,
            upload: UploadOption::Realtime,
            clock: LabClock::real(),
            reconnect_delay: Duration::from_millis(100),
        },
        sstop.clone(),
    )
    .unwrap();
    const N: u64 = 100_000;
    for i in 1..=N {
        sender.send(webfilter(i, "10.115.2.61", "www.example.com", "/a"));
    }
    let s2 = sender.clone();
    wait_for("some acks", Duration::from_secs(20), || {
        (s2.stats().acked_seq >= 5000).then_some(())
    })
    .await;
    stop.cancel();
    running.wait().await;
    let stop2 = CancellationToken::new();
    let running2 = fortilab_faz::start(
        cfg,
        env.clone(),
        Listeners::ephemeral().await.unwrap(),
        stop2.clone(),
    )
    .await
    .unwrap();
    sender.set_server(running2.log_addr, "localhost".into());
    assert!(
        sender.flush(Duration::from_secs(120)).await,
        "{:?}",
        sender.stats()
    );
    let st = running2.faz.store.seq_stats(serial).unwrap();
    assert_eq!(st, (N, N, 1, N));
    sstop.cancel();
    stop2.cancel();
    running2.wait().await;
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, Value)>>);

impl fortilab_faz::faz::Notifier for Recorder {
    fn notify(&self, serial: &str, n: fortilab_core::logchan::Notification) -> bool {
        self.0
            .lock()
            .unwrap()
            .push((serial.to_string(), n.to_json()));
        true
    }
    fn authorize(&self, _serial: &str) {}
}

#[test]
fn forticlient_hit_names_the_endpoint_and_notifies_its_fortigate() {
    let dir = tempfile::tempdir().unwrap();
    let store = fortilab_faz::store::Store::open(dir.path()).unwrap();
    let id = fortilab_faz::faz::Identity {
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
    let faz = fortilab_faz::faz::Faz::new(
        id,
        LabClock::real(),
        fortilab_core::binary::Timing::Fast,
        store,
        fortilab_faz::ioc::Tidb::default_lab(),
        fortilab_faz::ioc::IocSettings::default(),
        true,
        1,
    )
    .unwrap();
    let rec = Arc::new(Recorder::default());
    faz.notifications.set_notifier(rec.clone());
    assert!(faz.device_hello(
        "FGVM01TM00000001",
        "FGT-LAB",
        "FortiGate-VM64",
        "6.4.4",
        "fortigate",
        "root",
        "127.0.0.1"
    ));
    assert!(faz.device_hello(
        "FCT8001234567890",
        "PC-52",
        "FortiClient",
        "6.4.3",
        "forticlient",
        "root",
        "127.0.0.1"
    ));
    faz.ingest(
        "FGVM01TM00000001",
        false,
        1,
        vec![webfilter(1, "10.115.2.52", "www.example.com", "/")],
    )
    .unwrap();
    let fct = "date=2021-03-04 time=10:11:30 logver=1 type=\"traffic\" level=\"info\" sessionid=1 hostname=\"www.eicar.org\" srcip=10.115.2.52 dstip=89.1.1.1 dstport=80 url=\"http://www.eicar.org/download/eicar.com\" user=\"jdoe\" devid=\"FCT8001234567890\"";
    faz.ingest("FCT8001234567890", true, 1, vec![fct.to_string()])
        .unwrap();
    let got = rec.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "FGVM01TM00000001");
    assert_eq!(got[0].1["hostname"], "PC-52");
    assert_eq!(got[0].1["user"], "jdoe");
    let h = faz.ioc.engine().host("10.115.2.52").cloned().unwrap();
    assert_eq!(
        (h.verdict.as_str(), h.epname.as_deref()),
        ("Infected", Some("PC-52"))
    );
    // The FortiClient log is searchable as fct-traffic.
    let spec = fortilab_faz::store::SearchSpec {
        ltypes: vec![6],
        ..Default::default()
    };
    assert_eq!(faz.store.count(&spec).unwrap(), 1);
}

#[test]
fn rescan_with_a_new_package_finds_old_logs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let env = DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path()));
    let cfg = FazConfig {
        auto_authorize: true,
        ..FazConfig::default()
    };
    let running = rt
        .block_on(async {
            fortilab_faz::start(
                cfg,
                env.clone(),
                Listeners::ephemeral().await.unwrap(),
                stop.clone(),
            )
            .await
        })
        .unwrap();
    let faz = running.faz.clone();
    faz.device_hello(
        "FGVM01TM00000003",
        "FGT-LAB",
        "FortiGate-VM64",
        "6.4.4",
        "fortigate",
        "root",
        "127.0.0.1",
    );
    faz.ingest(
        "FGVM01TM00000003",
        false,
        1,
        vec![webfilter(1, "10.115.2.70", "late.example", "/x")],
    )
    .unwrap();
    assert!(faz.ioc.engine().listed().is_empty());
    faz.ioc.engine().tidb.add_domain("late.example");
    let app = (faz.clone(), ApiState::default());
    let key = faz.id.api_key.clone();
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "method": "add", "params": [{"url": "/ioc/adom/root/rescan/run",
        "time-range": {"start": "2021-03-01 00:00:00", "end": "2021-03-31 00:00:00"}}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap_or_else(|| panic!("{r}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(
            &app,
            &key,
            json!({"jsonrpc": "2.0", "method": "get", "params": [{"url": format!("/ioc/adom/root/rescan/run/{tid}")}]}),
        );
        if r["result"]["status"] == "done" {
            assert_eq!(r["result"]["threats-count"], 1, "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "rescan did not finish: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = faz.ioc.engine().host("10.115.2.70").cloned().unwrap();
    assert!(h.rescan && h.verdict == "Infected");
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "method": "get", "params": [{"url": "/eventmgmt/adom/root/alerts"}]}),
    );
    assert!(
        r["result"]["data"][0]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "Ioc_Rescan"),
        "{r}"
    );
    let r = call(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "method": "get", "params": [{"url": "/ioc/adom/root/rescan/history"}]}),
    );
    assert_eq!(r["result"]["data"][0]["status"], "done", "{r}");
    stop.cancel();
    rt.block_on(running.wait());
}

/// What the `fortinet.fortimanager` httpapi plugin needs: a device add's `os_ver`/`mr`/
/// `patch`/`platform_str`/`ip` come back in the device list; `/sys/status` and
/// `/cli/global/system/global` name the same time zone, before and after a change; a bad zone
/// is refused without changing anything.
#[test]
fn device_add_round_trips_and_time_zone_views_agree() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let mut env = DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path()));
    let cfg = FazConfig::default();
    env.clock = LabClock::starting_now(1_614_852_000_000, 1.0, -480);
    let running = rt
        .block_on(async {
            fortilab_faz::start(
                cfg,
                env.clone(),
                Listeners::ephemeral().await.unwrap(),
                stop.clone(),
            )
            .await
        })
        .unwrap();
    let faz = running.faz.clone();
    let app = (faz.clone(), ApiState::default());
    let key = faz.id.api_key.clone();
    let r = call(
        &app,
        &key,
        json!({"method":"exec","params":[{"url":"/dvm/cmd/add/device","data":{"adom":"root",
               "device":{"name":"FGT-BRANCH","sn":"FGVM01TM99999999","os_type":"fos","os_ver":"6.0",
                         "mr":4,"patch":4,"platform_str":"FortiGate-VM64","ip":"10.115.1.1",
                         "mgmt_mode":"faz","adm_usr":"admin"},
               "flags":["create_task","nonblocking"]}}],"verbose":1}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    let r = call(
        &app,
        &key,
        json!({"method":"get","params":[{"url":"/dvmdb/adom/root/device/FGT-BRANCH"}],"verbose":1}),
    );
    let d = &r["result"][0]["data"];
    assert_eq!(d["os_ver"], "6.0", "{r}");
    assert_eq!(d["mr"], 4, "{r}");
    assert_eq!(d["patch"], 4, "{r}");
    assert_eq!(d["platform_str"], "FortiGate-VM64", "{r}");
    assert_eq!(d["ip"], "10.115.1.1", "{r}");
    assert_eq!(d["sn"], "FGVM01TM99999999", "{r}");
    let zone = |app: &(Arc<fortilab_faz::faz::Faz>, ApiState)| {
        let s = call(
            app,
            &key,
            json!({"method":"get","params":[{"url":"/sys/status"}]}),
        );
        let g = call(
            app,
            &key,
            json!({"method":"get","params":[{"url":"/cli/global/system/global"}],"verbose":1}),
        );
        (
            s["result"][0]["data"]["Time Zone"]
                .as_str()
                .unwrap()
                .to_string(),
            g["result"][0]["data"]["timezone"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    // The lab clock runs at -08:00: zone 04.
    assert_eq!(
        zone(&app),
        ("(GMT-8:00) Pacific Time (US & Canada).".into(), "04".into())
    );
    let r = call(
        &app,
        &key,
        json!({"method":"set","params":[{"url":"/cli/global/system/global","data":{"timezone":"28"}}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    assert_eq!(
        zone(&app),
        (
            "(GMT+1:00) Brussels, Copenhagen, Madrid, Paris.".into(),
            "28".into()
        )
    );
    let r = call(
        &app,
        &key,
        json!({"method":"set","params":[{"url":"/cli/global/system/global","data":{"timezone":"Mars/Olympus"}}]}),
    );
    assert_ne!(r["result"][0]["status"]["code"], 0, "{r}");
    assert_eq!(zone(&app).1, "28");
    // Log search as the fortimanager plugin sends it (classic envelope, `verbose`): the tid
    // comes back as a number beside a status the plugin reads, and the fetch by tid answers
    // the 6.4 page fields.
    let r = call(
        &app,
        &key,
        json!({"method":"add","params":[{"url":"/logview/adom/root/logsearch","apiver":3,
               "logtype":"event","time-order":"desc","filter":""}],"verbose":1,"id":5}),
    );
    assert_eq!(r["result"]["status"]["code"], 0, "{r}");
    let tid = r["result"]["tid"].as_u64().unwrap_or_else(|| panic!("{r}"));
    let r = call(
        &app,
        &key,
        json!({"method":"get","params":[{"url":format!("/logview/adom/root/logsearch/{tid}"),
               "apiver":3,"offset":0,"limit":10}],"verbose":1,"id":6}),
    );
    let res = &r["result"];
    assert_eq!(res["status"]["code"], 0, "{r}");
    assert_eq!(res["offset"], 0, "{r}");
    assert_eq!(res["percentage"], 100, "{r}");
    assert!(res["data"].is_array() && res["total-count"].is_u64(), "{r}");
    let r = call(
        &app,
        &key,
        json!({"jsonrpc":"2.0","method":"delete","params":[{"url":format!("/logview/adom/root/logsearch/{tid}")}],"id":7}),
    );
    assert_eq!(r["result"]["tid"], tid, "{r}");
    let r = call(
        &app,
        &key,
        json!({"jsonrpc":"2.0","method":"get","params":[{"url":format!("/logview/adom/root/logsearch/{tid}")}],"id":8}),
    );
    assert!(r.get("error").is_some(), "a deleted search is gone: {r}");
    stop.cancel();
    rt.block_on(running.wait());
}
