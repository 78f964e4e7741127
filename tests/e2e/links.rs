//! End-to-end tests of link faults between devices: the orchestrator's `/_lab/link` control
//! (lab token required), logs held while FortiGate ↔ FortiAnalyzer is down and every one of them
//! delivered when it is up again, and the three library scenarios of link faults.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{wait_for, Proc};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One plain HTTP/1.1 request to the dashboard; returns (status, body).
fn http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, String) {
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let tok = token
        .map(|t| format!("X-Fortilab-Token: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n{tok}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match text.find("\r\n\r\n") {
        Some(i) => text[i + 4..].to_string(),
        None => String::new(),
    };
    // Chunked answers: take the JSON between the first '{' and the last '}'.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b > a => body[a..=b].to_string(),
        _ => body,
    };
    (status, body)
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// FortiAnalyzer's count of web filter logs from `ip` (through the dashboard's log search).
fn faz_count(dash: &str, token: &str, filter: &str) -> u64 {
    let (st, body) = http(
        dash,
        "POST",
        "/api/faz/logsearch",
        Some(&json!({"logtype": "webfilter", "filter": filter, "limit": 500})),
        Some(token),
    );
    assert_eq!(st, 200, "{body}");
    let v = json_of(&body);
    v["result"]["total-count"].as_u64().unwrap_or_else(|| {
        v["result"]["data"]
            .as_array()
            .map(|a| a.len() as u64)
            .unwrap_or(0)
    })
}

#[test]
fn a_down_log_link_holds_every_log_and_up_delivers_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lab = Proc::spawn(
        "fortilab",
        dir.path(),
        &["up", "--data-dir", data.to_str().unwrap()],
    );
    let dash = lab.ready["dashboard"].as_str().unwrap().to_string();
    let token = lab.ready["lab_token"].as_str().unwrap().to_string();

    // The link control is a lab surface: no token, no control.
    let down = json!({"a": "fortigate", "b": "fortianalyzer", "state": "down"});
    let (st, body) = http(&dash, "POST", "/_lab/link", Some(&down), None);
    assert_eq!(st, 401, "{body}");
    let (st, body) = http(&dash, "GET", "/_lab/links", None, None);
    assert_eq!(st, 401, "{body}");
    let (st, body) = http(&dash, "GET", "/_lab/links", None, Some("wrong"));
    assert_eq!(st, 401, "{body}");
    // Bad requests name the problem.
    let (st, body) = http(
        &dash,
        "POST",
        "/_lab/link",
        Some(&json!({"a": "fortigate", "b": "router"})),
        Some(&token),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("unknown device"), "{body}");
    let (st, body) = http(
        &dash,
        "POST",
        "/_lab/link",
        Some(&json!({"a": "ems", "b": "internet", "state": "down"})),
        Some(&token),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("no traffic"), "{body}");
    let (st, body) = http(&dash, "GET", "/_lab/links", None, Some(&token));
    assert_eq!(st, 200, "{body}");
    let links = json_of(&body);
    let names: Vec<&str> = links["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    for want in [
        "fortigate-fortianalyzer",
        "fortigate-ems",
        "fortigate-internet",
        "fortigate-endpoints",
        "fortianalyzer-endpoints",
        "ems-endpoints",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }

    // Down: the FortiGate keeps logging, FortiAnalyzer gets nothing.
    let filter = "srcip==10.115.2.52 hostname=news.sky.com";
    assert_eq!(faz_count(&dash, &token, filter), 0);
    let (st, body) = http(&dash, "POST", "/_lab/link", Some(&down), Some(&token));
    assert_eq!(st, 200, "{body}");
    assert_eq!(json_of(&body)["link"]["state"], "down");
    let n = 12;
    for i in 0..n {
        let (st, body) = http(
            &dash,
            "POST",
            "/api/endpoint/PC-52/fetch",
            Some(&json!({"url": format!("http://news.sky.com/story-{i}")})),
            Some(&token),
        );
        assert_eq!(st, 200, "{body}");
    }
    // Two seconds (the lab's log upload is real time, coalesced within a millisecond):
    // nothing may arrive while the link is down.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            faz_count(&dash, &token, filter),
            0,
            "a log crossed a down link"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, body) = http(&dash, "GET", "/_lab/links", None, Some(&token));
    let l = json_of(&body)["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "fortigate-fortianalyzer")
        .cloned()
        .unwrap();
    assert_eq!(l["state"], "down", "{l}");

    // Up: every log arrives, each once.
    let up = json!({"a": "fortianalyzer", "b": "fortigate", "state": "up"});
    let (st, body) = http(&dash, "POST", "/_lab/link", Some(&up), Some(&token));
    assert_eq!(st, 200, "{body}");
    wait_for(
        "every held log at FortiAnalyzer",
        Duration::from_secs(30),
        || (faz_count(&dash, &token, filter) >= n).then_some(()),
    );
    // And no duplicate shows up afterwards.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(faz_count(&dash, &token, filter), n);
    let status = lab.terminate();
    assert!(status.success(), "{status:?}\n{}", lab.stderr());
}

fn run_fortilab(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(support::bin("fortilab"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_link_fault_library_scenarios_pass_with_real_processes() {
    let files: Vec<String> = [
        "faz-unreachable-during-eicar.toml",
        "ems-unreachable-at-stitch.toml",
        "slow-log-link.toml",
    ]
    .iter()
    .map(|f| {
        repo()
            .join("scenarios/library")
            .join(f)
            .display()
            .to_string()
    })
    .collect();
    let mut args = vec!["run"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run_fortilab(&args);
    assert_eq!(code, 0, "fortilab run failed:\n{out}\n{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
}

/// The report of link `name` from `/_lab/links`.
fn link_report(dash: &str, token: &str, name: &str) -> Value {
    let (st, body) = http(dash, "GET", "/_lab/links", None, Some(token));
    assert_eq!(st, 200, "{body}");
    json_of(&body)["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no link {name}: {body}"))
}

fn set_link(dash: &str, token: &str, spec: Value) {
    let (st, body) = http(dash, "POST", "/_lab/link", Some(&spec), Some(token));
    assert_eq!(st, 200, "{body}");
}

/// Link faults reach the paths that are not the log channel: syslog datagrams to
/// FortiAnalyzer (dropped and counted while FortiGate ↔ FortiAnalyzer is down, delivered when
/// it is up) and the FortiGate's DNS/FortiGuard lookups (held by a down FortiGate ↔ Internet
/// link). The orchestrator's own tasks are supervised and listed on its `/_lab/tasks`.
#[test]
fn link_faults_reach_syslog_datagrams_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lab = Proc::spawn(
        "fortilab",
        dir.path(),
        &["up", "--data-dir", data.to_str().unwrap()],
    );
    let dash = lab.ready["dashboard"].as_str().unwrap().to_string();
    let token = lab.ready["lab_token"].as_str().unwrap().to_string();

    // The orchestrator's tasks run supervised.
    let (st, body) = http(&dash, "GET", "/_lab/tasks", None, None);
    assert_eq!(st, 401, "{body}");
    let (st, body) = http(&dash, "GET", "/_lab/tasks", None, Some(&token));
    assert_eq!(st, 200, "{body}");
    let tasks = json_of(&body);
    assert_eq!(tasks["panicked"], 0, "{tasks}");
    assert_eq!(
        tasks["tasks"]["dashboard: state poller"]["running"], true,
        "{tasks}"
    );
    assert_eq!(
        tasks["tasks"]["terminal timeline"]["running"], true,
        "{tasks}"
    );
    assert_eq!(
        tasks["tasks"]["timeline: fortigate"]["running"], true,
        "{tasks}"
    );

    // Syslog goes through the FortiGate ↔ FortiAnalyzer relay, which takes UDP too. The lines
    // are sent as the FortiGate would (from its lab address on loopback, 10.115.1.1 →
    // 127.115.1.1), so FortiAnalyzer stores them as its logs.
    let link = link_report(&dash, &token, "fortigate-fortianalyzer");
    let relay: std::net::SocketAddr = link["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["udp"] == true)
        .and_then(|r| r["relay"].as_str())
        .unwrap_or_else(|| panic!("no UDP relay: {link}"))
        .parse()
        .unwrap();
    let udp = std::net::UdpSocket::bind("127.115.1.1:0").unwrap();
    let send = |host: &str, n: usize| {
        for i in 0..n {
            let line = format!(
                "<189>date=2021-03-04 time=10:11:{i:02} devname=\"FGT-LAB\" devid=\"FGVM01\" logid=\"0317013312\" type=\"utm\" subtype=\"webfilter\" level=\"notice\" vd=\"root\" srcip=10.115.2.77 srcport={} dstip=23.200.96.79 dstport=80 hostname=\"{host}\" action=\"passthrough\" url=\"/{i}\"",
                5000 + i
            );
            udp.send_to(line.as_bytes(), relay).unwrap();
        }
    };
    let count = |host: &str| {
        faz_count(
            &dash,
            &token,
            &format!("srcip==10.115.2.77 hostname={host}"),
        )
    };
    send("udp-clean.example", 3);
    wait_for("syslog over a clean link", Duration::from_secs(30), || {
        (count("udp-clean.example") == 3).then_some(())
    });
    set_link(
        &dash,
        &token,
        json!({"a": "fortigate", "b": "fortianalyzer", "state": "down"}),
    );
    send("udp-down.example", 4);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            count("udp-down.example"),
            0,
            "a datagram crossed a down link"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let l = link_report(&dash, &token, "fortigate-fortianalyzer");
    assert_eq!(l["datagrams_dropped"], 4, "{l}");
    set_link(
        &dash,
        &token,
        json!({"a": "fortigate", "b": "fortianalyzer", "state": "up"}),
    );
    send("udp-up.example", 2);
    wait_for(
        "syslog once the link is up",
        Duration::from_secs(30),
        || (count("udp-up.example") == 2).then_some(()),
    );
    assert_eq!(
        count("udp-down.example"),
        0,
        "dropped datagrams stay dropped"
    );

    // FortiGuard rating and DNS lookups go through the FortiGate ↔ Internet relay (one relay
    // of that link leads to the lab Internet's control surface): with the link down, a fetch
    // of a site not looked up yet holds a lookup there.
    let control = lab.ready["internet"]["control"]
        .as_str()
        .unwrap()
        .to_string();
    let control_sock = control
        .split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let l = link_report(&dash, &token, "fortigate-internet");
    assert!(
        l["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["real"] == control_sock.as_str()),
        "no relay to the lab Internet's control surface {control_sock}: {l}"
    );
    let before = l["bytes_up"].as_u64().unwrap();
    set_link(
        &dash,
        &token,
        json!({"a": "fortigate", "b": "internet", "state": "down"}),
    );
    let (d2, t2) = (dash.clone(), token.clone());
    let fetch = std::thread::spawn(move || {
        http(
            &d2,
            "POST",
            "/api/endpoint/PC-52/fetch",
            Some(&json!({"url": "http://www.mit.edu/"})),
            Some(&t2),
        )
    });
    // The lookup waits at the down link: on a new connection (held) or, when the FortiGate's
    // client reuses a pooled keep-alive connection, as bytes the relay holds back; either way
    // the fetch (milliseconds on an up link) does not finish while the link is down.
    let down_since = std::time::Instant::now();
    wait_for(
        "a lookup held by the down link",
        Duration::from_secs(20),
        || {
            let l = link_report(&dash, &token, "fortigate-internet");
            let held = l["held"].as_u64().unwrap_or(0) >= 1;
            let waiting = down_since.elapsed() > Duration::from_secs(1) && !fetch.is_finished();
            (held || waiting).then_some(())
        },
    );
    assert_eq!(
        link_report(&dash, &token, "fortigate-internet")["bytes_up"].as_u64(),
        Some(before),
        "bytes passed a down link"
    );
    set_link(
        &dash,
        &token,
        json!({"a": "fortigate", "b": "internet", "state": "up"}),
    );
    let _ = fetch.join().unwrap();
    let after = link_report(&dash, &token, "fortigate-internet")["bytes_up"]
        .as_u64()
        .unwrap();
    assert!(
        after > before,
        "the lookup went over the link: {before} → {after}"
    );
    let status = lab.terminate();
    assert!(status.success(), "{status:?}\n{}", lab.stderr());
}
