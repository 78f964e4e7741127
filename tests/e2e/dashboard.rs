//! End-to-end tests of the lab dashboard served by `fortilab up`: headless Chromium driven by
//! selenium (tests/py/dashboard_e2e.py) against a running lab, plus HTTP-level checks of the
//! dashboard server (first byte, timeline resume, lab surface).

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::Proc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/test-artifacts/dashboard` (follows CARGO_TARGET_DIR).
fn artifacts() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().map(PathBuf::from).unwrap_or(tmp);
    let d = target.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The two tests each start a lab; they run one at a time so that timings mean something on a
/// small machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn start_lab(dir: &std::path::Path) -> Proc {
    let data = dir.join("data");
    Proc::spawn(
        "fortilab",
        dir,
        &["up", "--data-dir", data.to_str().unwrap()],
    )
}

/// A plain HTTP/1.1 request to the dashboard (no client library needed) with the lab token;
/// returns the status line, the headers and the body read so far (up to `wait`).
fn http(base: &str, method: &str, path: &str, body: Option<&str>, wait: Duration) -> String {
    let token = format!("{}\r\n", support::lab_header());
    http_as(base, method, path, body, wait, &token)
}

/// [`http`] with `extra` header lines (each ending in CRLF) instead of the lab token; a
/// `Host:` line among them replaces the right one.
fn http_as(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    wait: Duration,
    extra: &str,
) -> String {
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let body = body.unwrap_or("");
    let host = if extra.to_ascii_lowercase().contains("host:") {
        String::new()
    } else {
        format!("Host: {hostport}\r\n")
    };
    let ctype = if extra.to_ascii_lowercase().contains("content-type:") {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\n{host}{ctype}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn dashboard_serves_the_page_at_once_and_a_resumable_timeline() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path());
    let dash = lab.ready["dashboard"].as_str().unwrap().to_string();

    // The page is embedded: the first byte comes at once.
    let t0 = Instant::now();
    let page = http(&dash, "GET", "/", None, Duration::from_secs(2));
    let first = t0.elapsed();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("id=\"topology\"") && page.contains("/assets/dashboard.js"));
    // The event catalog is in the page (the script's kinds come from it) and served as JSON.
    assert!(
        page.contains(r#"<script id="event-catalog" type="application/json">{"kinds":{"#),
        "{page}"
    );
    let catalog = http(
        &dash,
        "GET",
        "/api/events/catalog",
        None,
        Duration::from_secs(2),
    );
    assert!(
        catalog.contains(r#""stitch.run":{"#) && catalog.contains(r#""story":[{"#),
        "{catalog}"
    );
    eprintln!("GET / answered in {first:?}");
    assert!(first < Duration::from_millis(500));
    let js = http(
        &dash,
        "GET",
        "/assets/dashboard.js",
        None,
        Duration::from_secs(2),
    );
    assert!(js.contains("text/javascript") && js.contains("EventSource"));

    dashboard_lets_nobody_else_in(&dash, &lab);

    // The timeline: a hello, then batches with generation:index ids; resuming from an id
    // gives only what came after it.
    let ev = http(
        &dash,
        "GET",
        "/api/events",
        None,
        Duration::from_millis(800),
    );
    assert!(ev.contains("event: hello"), "{ev}");
    assert!(ev.contains("event: batch"), "{ev}");
    let last_id = ev
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .expect("an id")
        .to_string();
    let (gen, idx) = last_id.split_once(':').unwrap();
    let idx: u64 = idx.parse().unwrap();
    // Synthetic events through the dashboard's lab surface.
    let r = http(
        &dash,
        "POST",
        "/_lab/inject",
        Some(r#"{"rate": 2000, "count": 100}"#),
        Duration::from_millis(500),
    );
    assert!(r.contains("\"ok\":true"), "{r}");
    // Resume until all 100 have been injected (each read replays everything after the id).
    let resumed = support::wait_for("the 100 injected events", Duration::from_secs(30), || {
        let resumed = http(
            &dash,
            "GET",
            &format!("/api/events?since={gen}:{idx}"),
            None,
            Duration::from_millis(500),
        );
        let n = resumed.matches("\"kind\":\"synthetic.tick\"").count();
        assert!(n <= 100, "more events than injected: {resumed}");
        (n == 100).then_some(resumed)
    });
    assert!(resumed.contains("\"resumed\":true"), "{resumed}");
    assert!(!resumed.contains("\"kind\":\"device.ready\""), "{resumed}");
    // A stale generation starts over (what a browser sees after a lab reset).
    let stale = http(
        &dash,
        "GET",
        "/api/events?since=999:5",
        None,
        Duration::from_millis(500),
    );
    assert!(stale.contains("\"reset\":true"), "{stale}");

    // The state: links and hosts derived from the vendor APIs.
    let st = http(&dash, "GET", "/api/state", None, Duration::from_secs(3));
    assert!(st.contains("\"hosts\""), "{st}");
    assert!(st.contains("\"name\":\"PC-52\""), "{st}");
    assert!(st.contains("\"id\":\"fgt-faz\""), "{st}");
    let lib = http(&dash, "GET", "/api/scenarios", None, Duration::from_secs(2));
    assert!(lib.contains("seed-flow.toml"), "{lib}");

    // The scenario player: paused before the first step, one step, then the rest.
    let r = http(
        &dash,
        "POST",
        "/api/scenario/run",
        Some(r#"{"file": "seed-flow.toml", "fresh": false, "paused": true}"#),
        Duration::from_secs(2),
    );
    assert!(r.contains("\"ok\":true"), "{r}");
    let player = |pred: &dyn Fn(&serde_json::Value) -> bool, what: &str| {
        support::wait_for(what, Duration::from_secs(30), || {
            let v = json_body(&http(
                &dash,
                "GET",
                "/api/scenario",
                None,
                Duration::from_secs(2),
            ));
            pred(&v).then_some(v)
        })
    };
    player(
        &|v| v["status"] == "paused" && v["steps"][0]["status"] == "pending",
        "paused before step 1",
    );
    http(
        &dash,
        "POST",
        "/api/scenario/step",
        Some("{}"),
        Duration::from_secs(2),
    );
    let v = player(
        &|v| v["status"] == "paused" && v["steps"][0]["status"] == "passed",
        "step 1 done, paused again",
    );
    assert_eq!(v["steps"][1]["status"], "pending", "{v}");
    http(
        &dash,
        "POST",
        "/api/scenario/resume",
        Some("{}"),
        Duration::from_secs(2),
    );
    let v = player(
        &|v| v["status"] == "passed" || v["status"] == "failed",
        "the scenario to end",
    );
    assert_eq!(v["status"], "passed", "{v}");

    // Reset: same seed, same ports, a new timeline generation, the ready file rewritten.
    let api_before = lab.ready["fortigate"]["api"].clone();
    let token_before = lab.ready["fortigate"]["api_token"].clone();
    let r = http(
        &dash,
        "POST",
        "/api/lab/reset",
        Some("{}"),
        Duration::from_secs(2),
    );
    assert!(r.contains("\"ok\":true"), "{r}");
    support::wait_for("the lab to restart", Duration::from_secs(60), || {
        let ev = http(
            &dash,
            "GET",
            "/api/events",
            None,
            Duration::from_millis(300),
        );
        let st = json_body(&http(
            &dash,
            "GET",
            "/api/state",
            None,
            Duration::from_secs(5),
        ));
        (ev.contains(&format!(
            "\"generation\":{}",
            gen.parse::<u64>().unwrap() + 1
        )) && st["lab"]["status"] == "running"
            && st["hosts"][0]["state"] == "clean")
            .then_some(())
    });
    let ready: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("fortilab.ready.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ready["fortigate"]["api"], api_before);
    assert_eq!(ready["fortigate"]["api_token"], token_before);

    // Timing speed: the lab restarts with the new lab-clock speed factor.
    let r = http(
        &dash,
        "POST",
        "/api/lab/speed",
        Some(r#"{"speed": 10}"#),
        Duration::from_secs(2),
    );
    assert!(r.contains("\"ok\":true"), "{r}");
    support::wait_for("the lab at ×10", Duration::from_secs(60), || {
        let st = json_body(&http(
            &dash,
            "GET",
            "/api/state",
            None,
            Duration::from_secs(5),
        ));
        (st["lab"]["status"] == "running"
            && st["lab"]["speed"] == 10.0
            && st["hosts"][0]["state"] == "clean")
            .then_some(())
    });

    let st = lab.terminate();
    assert!(
        st.success(),
        "fortilab up exited with {st}:\n{}",
        lab.stderr()
    );
}

/// The FortiAnalyzer's process id as the dashboard shows it (`lab.procs`).
fn faz_pid(dash: &str) -> Option<u64> {
    let st = json_body(&http(
        dash,
        "GET",
        "/api/state",
        None,
        Duration::from_secs(5),
    ));
    st["lab"]["procs"]
        .as_array()?
        .iter()
        .find(|p| p["label"] == "fortianalyzer" && p["running"] == true)
        .and_then(|p| p["pid"].as_u64())
}

/// Sign-in, the Host and Origin checks, and a start right after an outside `kill -9`.
fn dashboard_lets_nobody_else_in(dash: &str, lab: &Proc) {
    let token = lab.ready["lab_token"].as_str().expect("lab_token");
    let wait = Duration::from_secs(2);
    // No token: 401 for the API (JSON) and the page; every device's lab surface too.
    let r = http_as(dash, "GET", "/api/lab", None, wait, "");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("lab token required"), "{r}");
    let r = http_as(dash, "GET", "/", None, wait, "Accept: text/html\r\n");
    assert!(
        r.starts_with("HTTP/1.1 401") && r.contains("text/html"),
        "{r}"
    );
    // The printed URL signs in once: a strict HttpOnly cookie and the clean URL.
    let r = http_as(dash, "GET", &format!("/?token={token}"), None, wait, "");
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    assert!(r.to_ascii_lowercase().contains("location: /\r\n"), "{r}");
    let cookie_line = r
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("set-cookie");
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let r = http_as(dash, "GET", "/api/lab", None, wait, &with_cookie);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains(token),
        "the signed-in browser reads the lab report"
    );
    // DNS rebinding: a foreign Host, even with the token, is refused.
    let r = http_as(
        dash,
        "GET",
        "/api/lab",
        None,
        wait,
        &format!(
            "Host: fortilab.evil.example\r\n{}\r\n",
            support::lab_header()
        ),
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // A cross-origin text/plain POST (no CORS preflight needed) must not restart a device:
    // neither with the cookie (a browser with SameSite=Strict would not even send it) nor
    // without.
    let before = faz_pid(dash).expect("FortiAnalyzer running");
    for extra in [
        format!("{with_cookie}Origin: http://evil.example\r\nContent-Type: text/plain\r\n"),
        "Origin: http://evil.example\r\nContent-Type: text/plain\r\n".to_string(),
        format!("{with_cookie}Content-Type: text/plain\r\nSec-Fetch-Site: cross-site\r\n"),
    ] {
        let r = http_as(
            dash,
            "POST",
            "/api/device/fortianalyzer/restart",
            Some("{}"),
            wait,
            &extra,
        );
        assert!(
            r.starts_with("HTTP/1.1 403") || r.starts_with("HTTP/1.1 401"),
            "{extra:?}: {r}"
        );
    }
    assert_eq!(
        faz_pid(dash),
        Some(before),
        "the FortiAnalyzer was restarted"
    );
    // The dashboard's own page may change state (same origin).
    let origin = format!("Origin: {}\r\n", dash.trim_end_matches('/'));
    // `start` right after an outside `kill -9` starts the device again (the orchestrator has
    // not noticed the death yet: the process is a zombie it has not reaped, its other threads
    // may still be exiting).
    support::unsafe_free_kill(before as u32, "KILL");
    support::wait_for(
        "the killed FortiAnalyzer to die",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{before}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .map(|x| x.1.trim_start().chars().next());
            (stat.is_empty() || state == Some(Some('Z'))).then_some(())
        },
    );
    let r = http_as(
        dash,
        "POST",
        "/api/device/fortianalyzer/start",
        Some("{}"),
        Duration::from_secs(30),
        &format!("{with_cookie}{origin}"),
    );
    assert!(r.contains("\"ok\":true"), "{r}");
    let after = support::wait_for(
        "the FortiAnalyzer to run again",
        Duration::from_secs(30),
        || faz_pid(dash).filter(|p| *p != before),
    );
    assert!(
        std::path::Path::new(&format!("/proc/{after}")).exists(),
        "pid {after} is not running"
    );
}

/// The JSON body of a raw HTTP answer (Content-Length, not chunked).
fn json_body(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn dashboard_in_headless_chromium() {
    if std::env::var_os("FORTILAB_SKIP_BROWSER").is_some() {
        eprintln!("FORTILAB_SKIP_BROWSER set: skipped");
        return;
    }
    support::require_program("chromium", "chromium");
    support::require_program("chromedriver", "chromium-driver");
    let python = support::python_command(&["selenium", "requests"]);
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path());
    let ready = dir.path().join("fortilab.ready.json");
    let ca = lab.ready["ca_cert"].as_str().unwrap().to_string();
    let art = artifacts();
    let mut python = python;
    let out = python
        .arg(repo().join("tests/py/dashboard_e2e.py"))
        .env("READY", &ready)
        .env("ARTIFACTS", &art)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard browser test failed:\n{stdout}\n{stderr}\n--- fortilab stderr:\n{}",
        lab.stderr()
    );
    eprintln!("dashboard metrics: {stdout}");
    eprintln!("screenshots in {}", art.display());
    let m: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(m["first_contentful_paint_ms"].as_f64().unwrap() < 500.0);
    assert_eq!(m["synthetic_received"], m["inject_count"]);
    assert!(art.join("02-quarantined-main.png").exists());
    let st = lab.terminate();
    assert!(
        st.success(),
        "fortilab up exited with {st}:\n{}",
        lab.stderr()
    );
}

/// The dashboard's snapshot buttons in headless Chromium (tests/py/dashboard_snapshots.py): a
/// snapshot saved under a typed name is listed; a FortiGate address deleted through REST after
/// it is back after the Restore button.
#[test]
fn dashboard_snapshot_buttons_in_headless_chromium() {
    if std::env::var_os("FORTILAB_SKIP_BROWSER").is_some() {
        eprintln!("FORTILAB_SKIP_BROWSER set: skipped");
        return;
    }
    support::require_program("chromium", "chromium");
    support::require_program("chromedriver", "chromium-driver");
    let mut python = support::python_command(&["selenium", "requests"]);
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path());
    let ready = dir.path().join("fortilab.ready.json");
    let ca = lab.ready["ca_cert"].as_str().unwrap().to_string();
    let out = python
        .arg(repo().join("tests/py/dashboard_snapshots.py"))
        .env("READY", &ready)
        .env("ARTIFACTS", artifacts())
        .env("REQUESTS_CA_BUNDLE", &ca)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "snapshot buttons browser test failed:\n{stdout}\n{}\n--- fortilab stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.stderr()
    );
    let m: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(m["listed"], serde_json::json!(["browser-snap"]), "{m:#}");
    assert_eq!(m["deleted_status"], 404, "{m:#}");
    assert_eq!(m["restored_status"], 200, "{m:#}");
    assert!(dir
        .path()
        .join("data/snapshots/browser-snap/snapshot.json")
        .exists());
    let st = lab.terminate();
    assert!(
        st.success(),
        "fortilab up exited with {st}:\n{}",
        lab.stderr()
    );
}
