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
