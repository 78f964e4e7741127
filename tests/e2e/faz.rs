//! End-to-end tests (faz): spawn the real `sim-faz` binary.
//!
//! - the unmodified `pyfortianalyzer` client reads status, ADOMs and devices with an API key;
//! - a log channel sender streams FortiGate lines incl. the EICAR fetch: two-step logsearch,
//!   compromised host, IOC alert, `ioc` notification, `events/ack` → `ioc-ack`;
//! - `kill -9` while 100,000 logs stream, restart on the same data dir and port: every log
//!   stored exactly once;
//! - bad input (JSON-RPC, log channel, syslog) is answered/counted and never stops the process.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fortilab_core::logchan::{Hello, LogSender, SenderConfig, UploadOption};
use fortilab_core::tls::LabCa;
use fortilab_core::LabClock;
use fortilab_faz::Shutdown as CancellationToken;
use serde_json::{json, Value};
use support::devices::{faz_rpc, lab_ca, spawn_faz};
use support::{wait_for, Proc};

const FGT: &str = "FGVM01TM19000001";

/// A raw HTTPS request body through curl: (http status, body).
fn curl_raw(faz: &Proc, path: &str, body: Option<&[u8]>) -> (u16, String) {
    let api = faz.ready["api"].as_str().unwrap();
    let mut cmd = Command::new(support::require_program("curl", "curl"));
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(faz.ready["ca_cert"].as_str().unwrap())
    .arg("-H")
    .arg(support::lab_header());
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    cmd.arg(format!("{api}{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("curl");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = body {
            stdin.write_all(b).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (b, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), b.to_string())
}

fn lab_get(faz: &Proc, path: &str) -> Value {
    let (code, body) = curl_raw(faz, path, None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn sender(
    ca: &LabCa,
    faz: &Proc,
    serial: &str,
    queue: &Path,
    stop: &CancellationToken,
) -> (
    LogSender,
    tokio::sync::mpsc::Receiver<fortilab_core::logchan::Notification>,
) {
    let cert = ca.issue(serial, &[]).unwrap();
    let tls = fortilab_core::tls::client_config(ca, Some(&cert)).unwrap();
    let addr = faz.ready["log_channel"].as_str().unwrap().parse().unwrap();
    LogSender::start(
        SenderConfig {
            server: addr,
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
            queue_dir: queue.to_path_buf(),
            mem_limit: 200_000,
            upload: UploadOption::Realtime,
            clock: LabClock::real(),
            reconnect_delay: Duration::from_millis(100),
        },
        stop.clone(),
    )
    .unwrap()
}

fn webfilter(i: u64, src: &str, host: &str, url: &str) -> String {
    format!(
        "date=2021-03-04 time=10:11:22 devname=\"FGT-LAB\" devid=\"{FGT}\" eventtime={} tz=\"+0000\" logid=\"0317013312\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_allow\" level=\"notice\" vd=\"root\" policyid=1 sessionid={i} srcip={src} srcport=50000 srcintf=\"port3\" srcintfrole=\"lan\" dstip=89.1.1.{} dstport=80 dstintf=\"port1\" dstintfrole=\"wan\" proto=6 service=\"HTTP\" hostname=\"{host}\" profile=\"monitor-all\" action=\"passthrough\" reqtype=\"direct\" url=\"{url}\" sentbyte=100 rcvdbyte=200 direction=\"outgoing\" msg=\"URL belongs to an allowed category in policy\" method=\"domain\" cat=0 catdesc=\"Unrated\"",
        1_614_852_000_000_000_000u64 + i * 1_000_000,
        1 + i % 250
    )
}

fn traffic(i: u64, src: &str) -> String {
    format!(
        "date=2021-03-04 time=10:11:22 devname=\"FGT-LAB\" devid=\"{FGT}\" eventtime={} tz=\"+0000\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip={src} srcport={} srcintf=\"port3\" dstip=89.1.2.3 dstport=443 dstintf=\"port1\" sessionid={i} proto=6 action=\"close\" policyid=1 service=\"HTTPS\" duration=1 sentbyte=10 rcvdbyte=20",
        1_614_852_000_000_000_000u64 + i * 1_000_000,
        1024 + i % 60000
    )
}

async fn next_note(
    rx: &mut tokio::sync::mpsc::Receiver<fortilab_core::logchan::Notification>,
    kind: &str,
) -> Value {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} notification within 20 s"))
            .expect("sender stopped")
            .to_json();
        if n["type"] == kind {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyfortianalyzer_reads_status_adoms_and_devices() {
    support::python_command(&["pyfortianalyzer"]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, _) = lab_ca(dir.path(), "faz-test");
    let mut faz = spawn_faz(dir.path(), &["--auto-authorize"], &[]);
    let stop = CancellationToken::new();
    let (s, _notes) = sender(&ca, &faz, FGT, &dir.path().join("q"), &stop);
    s.send(traffic(1, "10.115.2.52"));
    assert!(s.flush(Duration::from_secs(20)).await, "log not acked");
    let script = r#"
import json, os
from pyfortianalyzer import api
faz = api(host=os.environ["FAZ_HOST"], token=os.environ["FAZ_TOKEN"], verify=os.environ["REQUESTS_CA_BUNDLE"])
print(json.dumps({"status": faz.system.status(), "adoms": faz.adoms.all(), "devices": faz.fortigates.all(),
                  "one": faz.fortigates.all(fortigate="FGT-LAB")}))
"#;
    let (ok, out, err) = support::python(
        script,
        &[
            ("FAZ_HOST", faz.ready["api"].as_str().unwrap().to_string()),
            (
                "FAZ_TOKEN",
                faz.ready["api_token"].as_str().unwrap().to_string(),
            ),
            ("REQUESTS_CA_BUNDLE", cert.display().to_string()),
        ],
    );
    assert!(ok, "pyfortianalyzer failed: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"]["status"]["code"], 0, "{v}");
    assert_eq!(v["status"]["data"]["Serial Number"], faz.ready["serial"]);
    assert_eq!(v["status"]["data"]["Hostname"], "FAZ-LAB");
    assert!(v["status"]["data"]["Version"]
        .as_str()
        .unwrap()
        .starts_with("v6.4.5"));
    assert_eq!(v["adoms"]["data"][0]["name"], "root");
    let devs = v["devices"]["data"].as_array().unwrap();
    assert_eq!(devs.len(), 1, "{v}");
    assert_eq!(devs[0]["sn"], FGT);
    assert_eq!(devs[0]["name"], "FGT-LAB");
    assert_eq!(devs[0]["platform_str"], "FortiGate-VM64");
    assert_eq!(devs[0]["conn_status"], 1);
    assert_eq!(v["one"]["data"]["sn"], FGT);
    stop.cancel();
    s.stopped().await;
    assert!(
        faz.terminate().success(),
        "sim-faz did not exit 0 on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_fetch_compromises_host_notifies_fortigate_and_ack_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = lab_ca(dir.path(), "faz-test");
    let faz = spawn_faz(dir.path(), &[], &[]);
    let stop = CancellationToken::new();
    let (s, mut notes) = sender(&ca, &faz, FGT, &dir.path().join("q"), &stop);
    for i in 1..=20 {
        s.send(traffic(i, "10.115.2.60"));
    }
    // Unknown device: listed as unauthorized, nothing stored until an admin adds it.
    wait_for(
        "device waiting for authorization",
        Duration::from_secs(20),
        || {
            let r = faz_rpc(
                &faz,
                &json!({"id": 1, "method": "get", "params": [{"url": "/dvmdb/device"}]}),
            );
            r["result"][0]["data"]
                .as_array()
                .filter(|a| !a.is_empty())
                .cloned()
        },
    );
    let r = faz_rpc(
        &faz,
        &json!({"id": 2, "method": "get", "params": [{"url": "/dvmdb/adom/root/device"}]}),
    );
    assert_eq!(r["result"][0]["data"], json!([]), "{r}");
    let r = faz_rpc(
        &faz,
        &json!({"id": 3, "method": "exec", "params": [{"url": "dvm/cmd/add/device",
                "data": {"adom": "root", "device": {"sn": FGT, "name": "FGT-LAB", "mgmt_mode": "fmgfaz", "device action": "add_model"}}}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], 0, "{r}");
    let task = r["result"][0]["data"]["taskid"].as_u64().unwrap();
    let t = faz_rpc(
        &faz,
        &json!({"id": 4, "method": "get", "params": [{"url": format!("/task/task/{task}")}]}),
    );
    assert_eq!(t["result"][0]["data"]["percent"], 100, "{t}");
    s.send(webfilter(
        21,
        "10.115.2.52",
        "www.eicar.org",
        "/download/eicar.com",
    ));
    assert!(
        s.flush(Duration::from_secs(20)).await,
        "logs not acked after authorization"
    );

    // Two-step logsearch finds the EICAR fetch.
    let r = faz_rpc(
        &faz,
        &json!({"id": 5, "jsonrpc": "2.0", "method": "add", "params": [{"apiver": 3, "url": "/logview/adom/root/logsearch",
        "logtype": "webfilter", "device": [{"devid": "All_Devices"}], "filter": "srcip==10.115.2.52 and url=\"/download/eicar.com\"",
        "time-range": {"start": "2021-03-04 00:00:00", "end": "2021-03-04 23:59:59"}, "time-order": "desc"}]}),
    );
    let tid = r["result"]["tid"].as_u64().unwrap_or_else(|| panic!("{r}"));
    let r = faz_rpc(
        &faz,
        &json!({"id": 6, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": format!("/logview/adom/root/logsearch/{tid}"), "limit": 10, "offset": 0}]}),
    );
    assert_eq!(r["result"]["percentage"], 100, "{r}");
    assert_eq!(r["result"]["total-count"], 1, "{r}");
    assert_eq!(r["result"]["data"][0]["hostname"], "www.eicar.org");
    let r = faz_rpc(
        &faz,
        &json!({"id": 7, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": format!("logview/adom/root/logsearch/count/{tid}")}]}),
    );
    assert_eq!(r["result"]["matched-logs"], 1, "{r}");
    let r = faz_rpc(
        &faz,
        &json!({"id": 8, "jsonrpc": "2.0", "method": "add", "params": [{"apiver": 3, "url": "/logview/adom/root/logsearch", "logtype": "traffic", "filter": "srcip=10.115.2.0/24"}]}),
    );
    let tid2 = r["result"]["tid"].as_u64().unwrap();
    let r = faz_rpc(
        &faz,
        &json!({"id": 9, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": format!("/logview/adom/root/logsearch/{tid2}"), "limit": 5, "offset": 0}]}),
    );
    assert_eq!(
        (
            r["result"]["total-count"].as_u64(),
            r["result"]["return-lines"].as_u64()
        ),
        (Some(20), Some(5)),
        "{r}"
    );

    // Compromised host with verdict Infected; the default IOC alerts; the notification.
    let r = faz_rpc(
        &faz,
        &json!({"id": 10, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": "/ioc/adom/root/compromised-hosts", "filter": "epip=10.115.2.52"}]}),
    );
    let h = &r["result"]["data"][0];
    assert_eq!(
        (
            h["verdict"].as_str(),
            h["verdict-level"].as_str(),
            h["ack"].as_u64()
        ),
        (Some("Infected"), Some("high"), Some(0)),
        "{r}"
    );
    assert_eq!(h["threat-count"], 1);
    assert_eq!(h["devid"], FGT);
    let epid = h["epid"].as_u64().unwrap();
    for trig in [
        "Default-Compromised Host-Detection-IOC-By-Endpoint",
        "Default-Compromised Host-Detection-IOC-By-Threat",
    ] {
        let r = faz_rpc(
            &faz,
            &json!({"id": 11, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": "/eventmgmt/adom/root/alerts", "filter": format!("triggername=\"{trig}\""), "limit": 10}]}),
        );
        let a = r["result"]["data"].as_array().unwrap();
        assert_eq!(a.len(), 1, "{trig}: {r}");
        assert_eq!(a[0]["epip"], "10.115.2.52");
    }
    let n = next_note(&mut notes, "ioc").await;
    assert_eq!(
        (
            n["srcip"].as_str(),
            n["verdict"].as_str(),
            n["ioc_level"].as_str()
        ),
        (Some("10.115.2.52"), Some("Infected"), Some("high")),
        "{n}"
    );
    assert_eq!(n["detect_method"], "Infected-domain");
    assert_eq!(n["threat"], "www.eicar.org");
    assert_eq!(n["epid"].as_u64(), Some(epid));

    // Acknowledge (seed step 9) → ack=1 and the FortiGate gets ioc-ack.
    let r = faz_rpc(
        &faz,
        &json!({"id": 12, "jsonrpc": "2.0", "method": "update", "params": [{"apiver": 3, "url": "/ioc/adom/root/events/ack",
        "events": [{"endpoint-id": epid, "source-ip": "10.115.2.52", "comment": "re-imaged"}]}]}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let n = next_note(&mut notes, "ioc-ack").await;
    assert_eq!(
        (n["srcip"].as_str(), n["epid"].as_u64()),
        (Some("10.115.2.52"), Some(epid)),
        "{n}"
    );
    let r = faz_rpc(
        &faz,
        &json!({"id": 13, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": "/ioc/adom/root/compromised-hosts"}]}),
    );
    assert_eq!(r["result"]["data"][0]["ack"], 1, "{r}");
    assert_eq!(r["result"]["data"][0]["comment"], "re-imaged");
    // Alerts can be acknowledged too.
    let r = faz_rpc(
        &faz,
        &json!({"id": 14, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": "/eventmgmt/adom/root/alerts"}]}),
    );
    let ids: Vec<Value> = r["result"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alertid"].clone())
        .collect();
    let r = faz_rpc(
        &faz,
        &json!({"id": 15, "jsonrpc": "2.0", "method": "update", "params": [{"apiver": 3, "url": "/eventmgmt/adom/root/alerts/ack", "alertid": ids, "update-by": "admin"}]}),
    );
    assert_eq!(r["result"]["updated"], 2, "{r}");
    let events = lab_get(&faz, "/_lab/stats");
    assert!(
        events["counters"]["notifications"].as_u64().unwrap() >= 2,
        "{events}"
    );
    stop.cancel();
    s.stopped().await;
}

/// Lines in a data directory's raw log files (syslog's store).
fn raw_log_lines(data: &Path) -> u64 {
    let mut n = 0;
    for dev in std::fs::read_dir(data.join("rawlogs")).unwrap() {
        for f in std::fs::read_dir(dev.unwrap().path()).unwrap() {
            let b = std::fs::read(f.unwrap().path()).unwrap();
            n += b.iter().filter(|c| **c == b'\n').count() as u64;
        }
    }
    n
}

/// Logsearch count of `srcip==ip` over traffic and web filter logs of device `dev`.
fn count_from(faz: &Proc, dev: &str, ip: &str) -> u64 {
    let mut total = 0;
    for lt in ["traffic", "webfilter"] {
        let r = faz_rpc(
            faz,
            &json!({"id": 1, "jsonrpc": "2.0", "method": "add", "params": [{"apiver": 3, "url": "/logview/adom/root/logsearch", "logtype": lt, "device": [{"devid": dev}], "filter": format!("srcip=={ip}")}]}),
        );
        let tid = r["result"]["tid"].as_u64().unwrap();
        let r = faz_rpc(
            faz,
            &json!({"id": 2, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": format!("/logview/adom/root/logsearch/count/{tid}")}]}),
        );
        total += r["result"]["matched-logs"].as_u64().unwrap();
    }
    total
}

/// Syslog lines are stored in raw log files first and indexed into the SQL store behind them.
/// `kill -9` while the index is behind, restart on the same data dir: every line of the raw
/// log files ends up in the SQL store exactly once (the indexer resumes from the cursor
/// committed with the last batch), and the insert lag goes back to zero.
#[test]
fn syslog_kill9_while_indexing_then_restart_indexes_every_stored_line_once() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let _ = lab_ca(dir.path(), "faz-test");
    let mut faz = spawn_faz(dir.path(), &["--auto-authorize"], &[]);
    let sys: std::net::SocketAddr = faz.ready["syslog"].as_str().unwrap().parse().unwrap();
    let sender = std::thread::spawn(move || {
        let mut tcp = std::net::TcpStream::connect(sys).unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 1..=N {
            let line = if i % 2 == 0 {
                traffic(i, "10.115.2.77")
            } else {
                webfilter(i, "10.115.2.77", "www.example.com", "/x")
            };
            buf.extend_from_slice(format!("<189>{line}\n").as_bytes());
            if buf.len() > 512 * 1024 {
                // The connection breaks at the kill: the rest is not sent.
                if tcp.write_all(&buf).is_err() {
                    return;
                }
                buf.clear();
            }
        }
        let _ = tcp.write_all(&buf);
    });
    // Kill while lines are stored and the index is part of the way behind.
    let at_kill = wait_for(
        "stored and partly indexed",
        Duration::from_secs(120),
        || {
            let st = lab_get(&faz, "/_lab/stats");
            let r = &st["rawlog"];
            let (stored, indexed) = (r["stored_lines"].as_u64()?, r["indexed_lines"].as_u64()?);
            (stored >= N / 4 && indexed >= 1_000).then_some(st)
        },
    );
    faz.kill9();
    let _ = sender.join();
    let r = &at_kill["rawlog"];
    let indexed_at_kill = r["indexed_lines"].as_u64().unwrap();
    let data = dir.path().join("data");
    let stored = raw_log_lines(&data);
    assert!(
        stored >= r["stored_lines"].as_u64().unwrap(),
        "the raw log lost stored lines: {stored} in the files, {r} before the kill"
    );
    assert!(
        indexed_at_kill < stored,
        "everything was indexed before the kill; the test proves nothing ({r})"
    );
    let dev = at_kill["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["via"] == "syslog")
        .map(|d| d["sn"].as_str().unwrap().to_string())
        .expect("the syslog sender's device");
    let faz2 = spawn_faz(dir.path(), &["--auto-authorize"], &[]);
    let st = wait_for("the index caught up", Duration::from_secs(120), || {
        let st = lab_get(&faz2, "/_lab/stats");
        (st["rawlog"]["insert_lag_bytes"] == 0).then_some(st)
    });
    assert!(
        st["rawlog"]["indexed_lines"].as_u64().unwrap() > 0,
        "nothing was left to index after the restart: {st}"
    );
    assert_eq!(st["rawlog"]["insert_lag_s"], 0.0, "{st}");
    assert_eq!(
        count_from(&faz2, &dev, "10.115.2.77"),
        stored,
        "SQL rows vs lines in the raw log (indexed before the kill: {indexed_at_kill})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_streaming_then_restart_stores_every_log_exactly_once() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = lab_ca(dir.path(), "faz-test");
    // Small log segments: the stream opens and seals about fifteen of them, some around the kill.
    let seg_env = [("FORTILAB_FAZ_SEGMENT_ROWS", "7000")];
    let mut faz = spawn_faz(dir.path(), &["--auto-authorize"], &seg_env);
    let log_port = faz.ready["log_channel"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let api_port = faz.ready["api"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let stop = CancellationToken::new();
    let (s, _notes) = sender(&ca, &faz, FGT, &dir.path().join("q"), &stop);
    for i in 1..=N {
        s.send(if i % 2 == 0 {
            traffic(i, "10.115.2.77")
        } else {
            webfilter(i, "10.115.2.77", "www.example.com", "/x")
        });
    }
    // Kill while the stream is in flight (some, not all, acknowledged).
    let s2 = s.clone();
    wait_for("first acks", Duration::from_secs(60), || {
        (s2.stats().acked_seq >= 5_000).then_some(())
    });
    faz.kill9();
    let acked_at_kill = s.stats().acked_seq;
    assert!(
        acked_at_kill < N,
        "everything was acked before the kill; the test proves nothing"
    );
    let faz2 = spawn_faz(
        dir.path(),
        &[
            "--auto-authorize",
            "--log-listen",
            &format!("127.0.0.1:{log_port}"),
            "--listen",
            &format!("127.0.0.1:{api_port}"),
        ],
        &seg_env,
    );
    assert!(
        s.flush(Duration::from_secs(120)).await,
        "not everything acked after restart: {:?}",
        s.stats()
    );
    let v = lab_get(&faz2, &format!("/_lab/seq/{FGT}"));
    assert_eq!(
        (
            v["rows"].as_u64(),
            v["distinct_seq"].as_u64(),
            v["min_seq"].as_u64(),
            v["max_seq"].as_u64()
        ),
        (Some(N), Some(N), Some(1), Some(N)),
        "{v} (acked at kill: {acked_at_kill})"
    );
    // The same through the vendor API: logsearch count per log type (an indexed filter: the
    // sealed segments answer from their index, the one being filled by a scan).
    let mut total = 0;
    for lt in ["traffic", "webfilter"] {
        let r = faz_rpc(
            &faz2,
            &json!({"id": 1, "jsonrpc": "2.0", "method": "add", "params": [{"apiver": 3, "url": "/logview/adom/root/logsearch", "logtype": lt, "device": [{"devid": FGT}], "filter": "srcip==10.115.2.77"}]}),
        );
        let tid = r["result"]["tid"].as_u64().unwrap();
        let r = faz_rpc(
            &faz2,
            &json!({"id": 2, "jsonrpc": "2.0", "method": "get", "params": [{"apiver": 3, "url": format!("/logview/adom/root/logsearch/count/{tid}")}]}),
        );
        total += r["result"]["matched-logs"].as_u64().unwrap();
    }
    assert_eq!(total, N);
    stop.cancel();
    s.stopped().await;
}

#[test]
fn bad_input_is_answered_counted_and_never_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, _, _) = lab_ca(dir.path(), "faz-test");
    let mut faz = spawn_faz(dir.path(), &["--auto-authorize"], &[]);
    // JSON-RPC: malformed JSON, wrong shapes, unknown method/URL, wrong session, huge body.
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (b"{\"method\": ".to_vec(), -32700),
        (b"\xff\xfe\x00garbage".to_vec(), -32700),
        (b"[]".to_vec(), -32600),
        (br#"{"method":"get"}"#.to_vec(), -32600),
        (
            br#"{"method":"explode","params":[{"url":"/sys/status"}]}"#.to_vec(),
            -32601,
        ),
    ];
    for (body, code) in cases {
        let (status, text) = curl_raw(&faz, "/jsonrpc", Some(&body));
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{text}");
    }
    let (_, text) = curl_raw(
        &faz,
        "/jsonrpc",
        Some(br#"{"id":1,"method":"get","params":[{"url":"/sys/status"}],"session":"stale"}"#),
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["result"][0]["status"]["code"], -11, "{text}");
    assert_eq!(
        v["result"][0]["status"]["message"],
        "No permission for the resource"
    );
    let r = faz_rpc(
        &faz,
        &json!({"id": 2, "method": "get", "params": [{"url": "/does/not/exist"}]}),
    );
    assert_eq!(r["result"][0]["status"]["code"], -6, "{r}");
    let huge = vec![b' '; 5 * 1024 * 1024]; // over the 4 MiB request limit: HTTP 413
    let (status, text) = curl_raw(&faz, "/jsonrpc", Some(&huge));
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], -32600, "{text}");
    // Over 16 MiB the body is not even buffered: HTTP 413 from the Content-Length alone. The
    // server then closes with the rest of the body unread, so the kernel's reset can reach curl
    // before the answer does (curl reports 000); never anything but 413 or that.
    let (status, text) = curl_raw(&faz, "/jsonrpc", Some(&vec![b' '; 17 * 1024 * 1024]));
    assert!(status == 413 || status == 0, "{status}: {text}");
    // Log channel: plain TCP garbage and a TLS client without a certificate.
    let log: std::net::SocketAddr = faz.ready["log_channel"].as_str().unwrap().parse().unwrap();
    for payload in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        &[0u8; 4096][..],
    ] {
        if let Ok(mut c) = std::net::TcpStream::connect(log) {
            let _ = c.write_all(payload);
        }
    }
    // Syslog: malformed, empty, oversized (TCP) and valid messages.
    let sys: std::net::SocketAddr = faz.ready["syslog"].as_str().unwrap().parse().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"<13>", sys).unwrap();
    udp.send_to(b"<188>no pairs here at all", sys).unwrap();
    udp.send_to(b"<188>date=2021-03-04 time=10:00:00 devname=\"FGT-SYS\" devid=\"FGVM01TM19000009\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" srcip=10.115.2.90 dstip=195.22.28.198 action=\"close\"", sys).unwrap();
    let mut tcp = std::net::TcpStream::connect(sys).unwrap();
    tcp.write_all(b"99999999 x").unwrap();
    let mut tcp = std::net::TcpStream::connect(sys).unwrap();
    let msg = "<189>1 2021-03-04T10:00:01Z fgt - - - - date=2021-03-04 time=10:00:01 devname=\"FGT-SYS\" devid=\"FGVM01TM19000009\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" srcip=10.115.2.91 dstip=89.1.1.1 action=\"close\"";
    tcp.write_all(format!("{} {msg}", msg.len()).as_bytes())
        .unwrap();
    tcp.write_all(b"<188>date=2021-03-04 time=10:00:02 devid=\"FGVM01TM19000009\" type=\"traffic\" subtype=\"forward\" srcip=10.115.2.92 dstip=89.1.1.1\n").unwrap();
    drop(tcp);
    // The traffic log to the IOC test address lists 10.115.2.90 (syslog input feeds IOC too).
    wait_for("syslog logs stored", Duration::from_secs(20), || {
        let r = faz_rpc(
            &faz,
            &json!({"id": 3, "jsonrpc": "2.0", "method": "get", "params": [{"url": "/ioc/adom/root/compromised-hosts"}]}),
        );
        r["result"]["data"]
            .as_array()
            .filter(|a| a.iter().any(|h| h["epip"] == "10.115.2.90"))
            .cloned()
    });
    let st = lab_get(&faz, "/_lab/stats");
    let c = &st["counters"];
    assert!(c["bad_json"].as_u64().unwrap() >= 2, "{st}");
    assert!(c["bad_requests"].as_u64().unwrap() >= 2, "{st}");
    assert!(c["unknown_methods"].as_u64().unwrap() >= 1, "{st}");
    assert!(c["unknown_urls"].as_u64().unwrap() >= 1, "{st}");
    assert!(c["auth_failures"].as_u64().unwrap() >= 1, "{st}");
    assert!(c["syslog_bad"].as_u64().unwrap() >= 2, "{st}");
    assert!(c["oversized"].as_u64().unwrap() >= 2, "{st}");
    assert!(
        st["receiver"]["refused"].as_u64().unwrap() + st["receiver"]["malformed"].as_u64().unwrap()
            >= 1,
        "{st}"
    );
    let h = lab_get(&faz, "/_lab/health");
    assert_eq!(h["ok"], true);
    assert!(
        faz.terminate().success(),
        "sim-faz did not exit 0 on SIGTERM"
    );
}

#[test]
fn bad_flags_and_config_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::bin("sim-faz"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let cfg = dir.path().join("faz.toml");
    std::fs::write(
        &cfg,
        "hostname = \"FAZ-X\"\n[tidb]\nblack_ip = [\"not-an-ip\"]\n",
    )
    .unwrap();
    let out = Command::new(support::bin("sim-faz"))
        .args([
            "--data-dir",
            &dir.path().join("d").display().to_string(),
            "--config",
            &cfg.display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("faz.toml") && err.contains("not-an-ip"),
        "{err}"
    );
}
