//! End-to-end tests of `fortilab`: the scenario library with real processes, JUnit, failure
//! and invalid-input exit codes, clean shutdown (no orphans), determinism.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, pids_mentioning, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn library() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios/library"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    v.sort();
    v
}

fn run_fortilab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("fortilab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_library_scenario_passes_with_real_processes_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let files = library();
    let mut args: Vec<String> = vec!["run".into(), "--junit".into(), junit.display().to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_fortilab(&args);
    assert_eq!(code, 0, "fortilab run failed:\n{out}\n{err}");
    assert!(
        out.contains(&format!("{} passed, 0 failed", files.len())),
        "{out}"
    );
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.starts_with("<?xml"), "{x}");
    assert!(
        x.contains(&format!("tests=\"{}\" failures=\"0\"", files.len())),
        "{x}"
    );
    assert_eq!(x.matches("<testsuite ").count(), files.len());
    assert_eq!(
        x.matches("<testsuite ").count(),
        x.matches("</testsuite>").count()
    );
}

#[test]
fn a_wrong_expectation_fails_with_exit_1_and_says_what_was_expected_and_seen() {
    let f = repo().join("tests/fixtures/wrong-expectation.toml");
    let (code, out, err) = run_fortilab(&["run", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains("wrong-expectation.toml:12"),
        "failing step with file:line:\n{out}"
    );
    assert!(out.contains("seen instead"), "{out}");
    assert!(out.contains("timeline tail"), "{out}");
    assert!(out.contains("seed 1"), "{out}");
}

/// EMS answers `endpoints/index` at most 1,000 records a page: with 1,201 endpoints the
/// runner's EMS checks still find one registered past the first page, and the flow still
/// quarantines the one that downloads the test file.
#[test]
fn expectations_hold_with_more_endpoints_than_one_ems_page() {
    let f = repo().join("tests/fixtures/many-endpoints.toml");
    let (code, out, err) = run_fortilab(&["run", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("past EMS's first page"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn an_invalid_scenario_fails_validate_and_run_with_exit_2_and_file_line() {
    let f = repo().join("tests/fixtures/invalid.toml");
    for cmd in ["validate", "run"] {
        let (code, out, err) = run_fortilab(&[cmd, f.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {out}\n{err}");
        assert!(err.contains("invalid.toml:8:"), "{cmd}: {err}");
        assert!(err.contains("verdit"), "{cmd}: {err}");
    }
    let files = library();
    let mut args = vec!["validate"];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let (code, out, err) = run_fortilab(&args);
    assert_eq!(code, 0, "{out}\n{err}");
}

fn start_up(dir: &Path, seed: &str) -> (std::process::Child, serde_json::Value) {
    start_up_lab(dir, seed, None)
}

/// `fortilab up [LAB_FILE] --seed SEED` with its ready file and data directory under `dir`.
fn start_up_lab(
    dir: &Path,
    seed: &str,
    lab: Option<&Path>,
) -> (std::process::Child, serde_json::Value) {
    let ready = dir.join("ready.json");
    let data = dir.join("data");
    let mut cmd = Command::new(bin("fortilab"));
    cmd.arg("up");
    if let Some(l) = lab {
        cmd.arg(l);
    }
    let child = cmd
        .args(["--seed", seed, "--json", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = wait_for("fortilab up ready file", Duration::from_secs(60), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    });
    (child, report)
}

#[test]
fn up_writes_the_ready_file_and_ctrl_c_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, r) = start_up(dir.path(), "7");
    for key in [
        "ca_cert",
        "dashboard",
        "fortigate",
        "fortianalyzer",
        "ems",
        "endpoints",
        "internet",
    ] {
        assert!(r.get(key).is_some(), "ready file lacks {key}: {r}");
    }
    assert_eq!(r["fortigate"]["name"], "FGT-LAB");
    assert_eq!(r["fortigate"]["version"], "6.4.4");
    assert!(r["fortigate"]["api"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    assert!(!r["fortigate"]["api_token"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    assert_eq!(r["endpoints"][0]["name"], "PC-52");
    assert_eq!(r["endpoints"][0]["ip"], "10.115.2.52");
    assert!(r["endpoints"][0]["control"]
        .as_str()
        .unwrap()
        .contains("/endpoints/PC-52"));
    // The ready file is written once the Security Fabric is linked: the FortiGate's log
    // channel and EMS connector are up, and PC-52 is registered with EMS and uploads to
    // FortiAnalyzer.
    let token = r["lab_token"]
        .as_str()
        .expect("lab_token in the ready file");
    assert!(token.len() >= 32, "{token}");
    let health = |url: String| -> serde_json::Value {
        let out = Command::new(support::require_program("curl", "curl"))
            .args(["-sS", "--cacert", r["ca_cert"].as_str().unwrap(), "-H"])
            .arg(format!("X-Fortilab-Token: {token}"))
            .arg(&url)
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let fgt = health(format!(
        "{}/_lab/health",
        r["fortigate"]["api"].as_str().unwrap()
    ));
    assert_eq!(fgt["links"]["fortianalyzer"]["connected"], true, "{fgt}");
    assert_eq!(fgt["links"]["ems"][0]["connected"], true, "{fgt}");
    let control = r["endpoints"][0]["control"].as_str().unwrap();
    let root = &control[..control.find("/endpoints/").unwrap()];
    let eps = health(format!("{root}/_lab/health"));
    assert_eq!(
        (eps["endpoints"].clone(), eps["linked"].clone()),
        (1.into(), 1.into()),
        "{eps}"
    );
    // Without the token the lab surface answers 401 with a JSON error.
    let out = Command::new(support::require_program("curl", "curl"))
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "--cacert",
            r["ca_cert"].as_str().unwrap(),
        ])
        .arg(format!(
            "{}/_lab/health",
            r["fortigate"]["api"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n401"), "{text}");
    assert!(text.contains("lab token required"), "{text}");
    // The ready file and every file holding secrets: only the owner reads them.
    let data = dir.path().join("data");
    for f in [
        dir.path().join("ready.json"),
        data.join("secrets.json"),
        data.join("ca/ca.key"),
        data.join("fortigate/ssh_host_ed25519_key"),
        data.join("fortianalyzer/ssh_host_ed25519_key"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {:o}",
            f.display(),
            mode & 0o777
        );
    }
    let needle = dir.path().display().to_string();
    let pids = pids_mentioning(&needle);
    assert!(pids.len() >= 5, "devices running");
    // No secret on any command line (`ps` shows them to every local user).
    let secrets = [
        token,
        r["fortigate"]["api_token"].as_str().unwrap(),
        r["fortigate"]["admin"]["password"].as_str().unwrap(),
        r["fortianalyzer"]["api_token"].as_str().unwrap(),
        r["ems"]["admin"]["password"].as_str().unwrap(),
    ];
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        for s in secrets {
            assert!(
                !cmdline.contains(s),
                "pid {pid} shows a secret on its command line"
            );
        }
    }
    support::unsafe_free_kill(child.id(), "INT");
    let status = wait_for("fortilab up to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "fortilab up exit: {status}");
    wait_for(
        "every device process to be gone",
        Duration::from_secs(10),
        || pids_mentioning(&needle).is_empty().then_some(()),
    );
}

#[test]
fn killing_the_orchestrator_takes_every_device_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = start_up(dir.path(), "8");
    let needle = dir.path().display().to_string();
    assert!(!pids_mentioning(&needle).is_empty());
    child.kill().unwrap();
    let _ = child.wait();
    wait_for(
        "devices to follow the orchestrator",
        Duration::from_secs(15),
        || pids_mentioning(&needle).is_empty().then_some(()),
    );
}

#[test]
fn the_same_seed_gives_the_same_identities_and_random_secrets_unless_seeded() {
    let ids = |r: &serde_json::Value| {
        serde_json::json!([
            r["fortigate"]["serial"],
            r["fortianalyzer"]["serial"],
            r["ems"]["serial"],
            r["endpoints"][0]["fctuid"],
            r["endpoints"][0]["mac"]
        ])
    };
    let secrets = |r: &serde_json::Value| {
        serde_json::json!([
            r["fortigate"]["api_token"],
            r["fortigate"]["admin"]["password"],
            r["fortianalyzer"]["api_token"],
            r["fortianalyzer"]["admin"]["password"],
            r["ems"]["admin"]["password"]
        ])
    };
    let run = |lab: Option<&Path>| {
        let d = tempfile::tempdir().unwrap();
        let (mut c, r) = start_up_lab(d.path(), "42", lab);
        support::unsafe_free_kill(c.id(), "TERM");
        let _ = c.wait();
        r
    };
    let (r1, r2) = (run(None), run(None));
    assert_eq!(ids(&r1), ids(&r2));
    for v in [ids(&r1), secrets(&r1), secrets(&r2)] {
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty())),
            "{v}"
        );
    }
    // Credentials and the lab token come from the OS CSPRNG, per lab.
    let (s1, s2) = (secrets(&r1), secrets(&r2));
    for (a, b) in s1.as_array().unwrap().iter().zip(s2.as_array().unwrap()) {
        assert_ne!(a, b, "the same secret in two labs of the same seed");
    }
    assert_ne!(r1["lab_token"], r2["lab_token"]);
    assert_eq!(r1["secrets"], "random");
    // `[lab] secrets = "seeded"`: fixed credentials from the seed; the lab token stays random.
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("seeded.toml");
    std::fs::write(&lab, "[lab]\nsecrets = \"seeded\"\n").unwrap();
    let (r3, r4) = (run(Some(&lab)), run(Some(&lab)));
    assert_eq!(secrets(&r3), secrets(&r4));
    assert_eq!(ids(&r3), ids(&r1));
    assert_eq!(r3["secrets"], "seeded");
    assert_ne!(r3["lab_token"], r4["lab_token"]);
}

/// `fortilab up` with its JSON timeline (stdout) collected line by line in the background.
fn start_up_following(
    dir: &Path,
    seed: &str,
) -> (
    std::process::Child,
    serde_json::Value,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::BufRead;
    let ready = dir.join("ready.json");
    let mut child = Command::new(bin("fortilab"))
        .args(["up", "--seed", seed, "--json", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let report = wait_for("fortilab up ready file", Duration::from_secs(60), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    });
    (child, report, lines)
}

#[test]
fn a_crashed_device_is_reported_and_ctrl_c_still_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, lines) = start_up_following(dir.path(), "9");
    let needle = dir.path().display().to_string();
    // The FortiGate process of this lab (its command line names this lab's data directory).
    let fgt = pids_mentioning(&needle)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("sim-fortigate"))
                .unwrap_or(false)
        })
        .expect("the lab's sim-fortigate process");
    support::unsafe_free_kill(fgt, "KILL");
    let seen = wait_for(
        "fortilab up to report the crashed FortiGate",
        Duration::from_secs(20),
        || {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("device.exited") && l.contains("fortigate"))
                .cloned()
        },
    );
    assert!(seen.contains(".log"), "names the device log file: {seen}");
    // The rest of the lab keeps running until the user stops it, then nothing is left.
    assert!(child.try_wait().unwrap().is_none(), "up keeps running");
    assert!(!pids_mentioning(&needle).contains(&fgt));
    support::unsafe_free_kill(child.id(), "INT");
    wait_for("fortilab up to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    wait_for(
        "every device process to be gone",
        Duration::from_secs(10),
        || pids_mentioning(&needle).is_empty().then_some(()),
    );
}
/// Runs the seed scenario with `seed` and returns its kept merged timeline.
fn seed_flow_timeline(seed: &str) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().unwrap();
    let flow = repo().join("scenarios/library/seed-flow.toml");
    let out = Command::new(bin("fortilab"))
        .args(["run", "--keep-logs", "--seed", seed])
        .arg(&flow)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("timeline.jsonl").exists())
        .expect("the kept run directory with timeline.jsonl");
    std::fs::read_to_string(run_dir.join("timeline.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_event_sequence() {
    use std::collections::BTreeMap;
    // Events that count polling or batching, not the flow: their number depends on timing.
    const ROUTINE: [&str; 5] = [
        "log.received",
        "api.request",
        "endpoint.keepalive",
        "step.start",
        "step.pass",
    ];
    // Fields that identify what happened (never timestamps, ports or sequence numbers).
    const FIELDS: [&str; 17] = [
        "serial",
        "sn",
        "fctuid",
        "ip",
        "srcip",
        "epip",
        "mac",
        "verdict",
        "threat",
        "stitch",
        "status",
        "url",
        "host",
        "hostname",
        "blocked_by",
        "sha256",
        "ems_serial",
    ];
    let signature = |events: &[serde_json::Value]| {
        let mut per_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in events {
            let kind = e["kind"].as_str().unwrap_or("");
            if ROUTINE.contains(&kind) {
                continue;
            }
            // The last step polls http://news.sky.com/ until PC-52 is blocked: the fetches that
            // got through before the quarantine landed (with the FortiGate's logs and the lab
            // Internet's requests) are as many as timing allows, none included (EMS pushes the
            // quarantine at once).
            let polled = e["url"] == "http://news.sky.com/"
                || e["host"] == "news.sky.com"
                || e["hostname"] == "news.sky.com";
            if polled && e["blocked_by"].is_null() {
                continue;
            }
            let mut s = kind.to_string();
            for f in FIELDS {
                if let Some(v) = e.get(f).filter(|v| !v.is_null()) {
                    s.push_str(&format!(" {f}={v}"));
                }
            }
            per_device
                .entry(e["device"].as_str().unwrap_or("?").to_string())
                .or_default()
                .push(s);
        }
        // Independent processes interleave freely; within a device, concurrent causes (the
        // FortiGate's and the FortiClient's log uploads) may also swap, and a step that polls
        // ("PC-52 can no longer reach the Internet") repeats a fetch as often as timing allows.
        // So each device's events are compared as a set: the same events, the same content.
        for v in per_device.values_mut() {
            v.sort();
            v.dedup();
        }
        per_device
    };
    // The causal chain of the seed flow, in the order it must happen in every run.
    let chain = |events: &[serde_json::Value]| -> Vec<String> {
        let steps = [
            ("FGT-LAB", "log.webfilter"),
            ("FAZ-LAB", "ioc.compromised"),
            ("FAZ-LAB", "ioc.notify"),
            ("FGT-LAB", "ioc.detected"),
            ("FGT-LAB", "stitch.run"),
            ("FGT-LAB", "ems.quarantine.request"),
            ("EMS-LAB", "ems.quarantine"),
            ("PC-52", "endpoint.quarantined"),
        ];
        let mut at = 0;
        let mut seen = Vec::new();
        for (dev, kind) in steps {
            let i = events[at..]
                .iter()
                .position(|e| e["device"] == dev && e["kind"] == kind)
                .unwrap_or_else(|| panic!("{dev} {kind} after event {at}"));
            at += i + 1;
            seen.push(format!("{dev} {kind}"));
        }
        seen
    };
    let a = seed_flow_timeline("5");
    let b = seed_flow_timeline("5");
    // Every event of the flow, of every device and the orchestrator, is of a kind the event
    // catalog declares, with the catalog's fields and types.
    for e in &a {
        if let Err(err) = fortilab_core::events::catalog::check_event(e) {
            panic!("{err}: {e}");
        }
    }
    assert_eq!(chain(&a), chain(&b));
    let (sa, sb) = (signature(&a), signature(&b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (dev, ev) in &sa {
        assert_eq!(
            ev, &sb[dev],
            "{dev}: events differ between two runs of seed 5"
        );
    }
    // The lab starts with its fabric linked (PC-52 registered with EMS and uploading to
    // FortiAnalyzer), so FortiAnalyzer knows PC-52's host name when it notifies the FortiGate.
    for run in [&a, &b] {
        let n = run
            .iter()
            .find(|e| e["device"] == "FGT-LAB" && e["kind"] == "ioc.detected")
            .unwrap();
        assert_eq!(n["hostname"], "PC-52", "{n}");
    }
    // Identities come from the seed: the FortiGate serial and the endpoint's FCTUID appear.
    let fctuid = a
        .iter()
        .find_map(|e| (e["kind"] == "endpoint.registered").then(|| e["fctuid"].clone()))
        .unwrap();
    assert!(fctuid.as_str().is_some_and(|s| s.len() == 32), "{fctuid}");
    let c = seed_flow_timeline("6");
    assert_ne!(signature(&c), sa, "another seed gives other identities");
}

/// Every `/_lab/` route in the source (`.route("…_lab…"`) of the crate that serves it, and the
/// dashboard's `/api/` routes: read from the routers' source, so a route added later is in
/// this list without anyone remembering it.
fn lab_routes() -> Vec<(&'static str, String)> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().and_then(|x| x.to_str()) == Some("rs") {
                out.push(p);
            }
        }
    }
    let mut routes = Vec::new();
    for (device, dir) in [
        ("fortigate", "sim-fortigate/src"),
        ("fortianalyzer", "sim-faz/src"),
        ("ems", "sim-ems/src"),
        ("endpoints", "sim-endpoint/src"),
        ("internet", "sim-internet/src"),
        ("dashboard", "scenarios/src/dashboard"),
    ] {
        let mut fs = Vec::new();
        files(&repo().join(dir), &mut fs);
        for f in fs {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + 7..];
                let arg = rest.trim_start();
                let Some(lit) = arg.strip_prefix('"') else {
                    continue;
                };
                let path = &lit[..lit.find('"').unwrap()];
                let wanted =
                    path.contains("/_lab") || (device == "dashboard" && path.starts_with("/api/"));
                if wanted && !routes.iter().any(|(d, p)| *d == device && p == path) {
                    routes.push((device, path.to_string()));
                }
            }
        }
    }
    routes
}

/// `curl` a URL without the lab token: (status, body).
fn curl_status(method: &str, url: &str, ca: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new(support::require_program("curl", "curl"))
        .args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "--cacert",
            ca,
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn every_lab_route_of_every_device_refuses_a_request_without_the_lab_token() {
    let routes = lab_routes();
    // The enumeration found the routers (a sanity floor, not the list).
    for want in [
        "/_lab/config",
        "/_lab/auto-authorize",
        "/endpoints/{name}/_lab/fetch",
        "/_lab/rating",
        "/_lab/inject",
        "/api/device/{device}/{action}",
    ] {
        assert!(
            routes.iter().any(|(_, p)| p == want),
            "{want} not found in {routes:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, r) = start_up(dir.path(), "11");
    let ca = r["ca_cert"].as_str().unwrap();
    let token = r["lab_token"].as_str().unwrap();
    let control = r["endpoints"][0]["control"].as_str().unwrap();
    let base = |device: &str| -> String {
        match device {
            "fortigate" => r["fortigate"]["api"].as_str().unwrap().to_string(),
            "fortianalyzer" => r["fortianalyzer"]["api"].as_str().unwrap().to_string(),
            "ems" => r["ems"]["api"].as_str().unwrap().to_string(),
            "endpoints" => control[..control.find("/endpoints/").unwrap()].to_string(),
            "internet" => r["internet"]["control"]
                .as_str()
                .unwrap()
                .trim_end_matches('/')
                .to_string(),
            "dashboard" => r["dashboard"]
                .as_str()
                .unwrap()
                .trim_end_matches('/')
                .to_string(),
            other => panic!("{other}"),
        }
    };
    let mut checked = 0;
    for (device, path) in &routes {
        let concrete = path
            .replace("{name}", "PC-52")
            .replace("{serial}", "FGVM01TM00000000")
            .replace("{device}", "fortianalyzer")
            .replace("{action}", "restart")
            .replace("{cmd}", "stop");
        let url = format!("{}{concrete}", base(device));
        for method in ["GET", "POST"] {
            let (status, body) = curl_status(
                method,
                &url,
                ca,
                &["-H", "Content-Type: application/json", "-d", "{}"],
            );
            assert_eq!(status, 401, "{method} {url} without the lab token: {body}");
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {body}"));
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("lab token")),
                "{url}: {v}"
            );
            checked += 1;
        }
        // A wrong token is no better.
        let (status, _) = curl_status("GET", &url, ca, &["-H", "X-Fortilab-Token: not-the-token"]);
        assert_eq!(status, 401, "GET {url} with a wrong token");
    }
    assert!(checked >= 2 * 25, "only {checked} requests: {routes:?}");
    // With the token the same surfaces answer (health of every device).
    for device in [
        "fortigate",
        "fortianalyzer",
        "ems",
        "endpoints",
        "internet",
        "dashboard",
    ] {
        let url = format!("{}/_lab/health", base(device));
        let (status, body) = curl_status(
            "GET",
            &url,
            ca,
            &["-H", &format!("X-Fortilab-Token: {token}")],
        );
        assert_eq!(status, 200, "{url}: {body}");
    }
    support::unsafe_free_kill(child.id(), "TERM");
    let _ = child.wait();
}

/// Opens `addr` (TLS with `sni` when given), sends the start of a request head and returns how
/// long the server took to close the connection (`None`: still open after `limit`).
async fn partial_head_closed_after(
    addr: std::net::SocketAddr,
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, String)>,
    proxy_header: bool,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    if proxy_header {
        tcp.write_all(b"PROXY TCP4 10.115.2.52 10.115.2.1 40000 8080\r\n")
            .await
            .unwrap();
    }
    let head = b"GET /_lab/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ";
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    match tls {
        None => {
            tcp.write_all(head).await.unwrap();
            loop {
                match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => return None,
                }
            }
        }
        Some((cfg, name)) => {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            let mut s = tokio_rustls::TlsConnector::from(cfg)
                .connect(sn, tcp)
                .await
                .unwrap();
            let started = std::time::Instant::now();
            s.write_all(head).await.unwrap();
            s.flush().await.unwrap();
            loop {
                match tokio::time::timeout(limit, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => return None,
                }
            }
        }
    }
}

#[test]
fn every_http_listener_closes_a_partial_request_head_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    // A one-second head timeout for this lab (every device and the dashboard read it).
    let mut child = Command::new(bin("fortilab"))
        .args(["up", "--seed", "12", "--json", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("FORTILAB_HTTP_HEADER_TIMEOUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = wait_for("fortilab up ready file", Duration::from_secs(60), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    });
    let ca_pem = std::fs::read_to_string(r["ca_cert"].as_str().unwrap()).unwrap();
    let tls = fortilab_core::tls::client_config_from_pem(&ca_pem, None).unwrap();
    let sock = |u: &str| -> std::net::SocketAddr {
        let rest = u.split("://").nth(1).unwrap_or(u);
        rest.split('/').next().unwrap().parse().unwrap()
    };
    // The lab Internet's site listeners, from the lab map (www.eicar.org's lab address).
    let map: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/labmap.json")).unwrap(),
    )
    .unwrap();
    let eicar_ip = r["internet"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["host"] == "www.eicar.org")
        .unwrap()["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let site = |port: u16| {
        sock(
            map["services"][format!("{eicar_ip}:{port}")]
                .as_str()
                .unwrap(),
        )
    };
    let control = r["endpoints"][0]["control"].as_str().unwrap();
    let https = |u: &str, name: &str| (sock(u), Some((tls.clone(), name.to_string())), false);
    let listeners = vec![
        (
            "fortigate api",
            https(r["fortigate"]["api"].as_str().unwrap(), "127.0.0.1"),
        ),
        (
            "fortianalyzer api",
            https(r["fortianalyzer"]["api"].as_str().unwrap(), "127.0.0.1"),
        ),
        (
            "ems api",
            https(r["ems"]["api"].as_str().unwrap(), "127.0.0.1"),
        ),
        ("endpoint control", https(control, "127.0.0.1")),
        (
            "internet control",
            https(r["internet"]["control"].as_str().unwrap(), "localhost"),
        ),
        (
            "internet https",
            (
                site(443),
                Some((tls.clone(), "www.eicar.org".to_string())),
                false,
            ),
        ),
        ("internet http", (site(80), None, false)),
        (
            "fortigate proxy",
            (sock(r["fortigate"]["proxy"].as_str().unwrap()), None, true),
        ),
        (
            "dashboard",
            (sock(r["dashboard"].as_str().unwrap()), None, false),
        ),
        // Syslog over TCP: a started message has as long as a request head to complete.
        (
            "fortianalyzer syslog tcp",
            (
                sock(r["fortianalyzer"]["syslog"].as_str().unwrap()),
                None,
                false,
            ),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, (addr, tls, proxy)) in listeners {
        let closed = rt.block_on(partial_head_closed_after(
            addr,
            tls,
            proxy,
            Duration::from_secs(15),
        ));
        let t = closed
            .unwrap_or_else(|| panic!("{name} ({addr}) kept a partial request head open for 15 s"));
        eprintln!("{name}: partial head closed after {t:?}");
        assert!(
            t >= Duration::from_millis(900),
            "{name} closed after {t:?}: not the head timeout"
        );
        assert!(t < Duration::from_secs(8), "{name} closed only after {t:?}");
    }
    support::unsafe_free_kill(child.id(), "TERM");
    let _ = child.wait();
}

// ------------------------------------------------------------------------------ snapshots

/// The lab token [`curl_json`] sends (the snapshot test's lab).
static SNAPSHOT_TOKEN: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// `curl` with the lab token and a JSON body (or none): (status, parsed body).
fn curl_json(
    method: &str,
    url: &str,
    ca: &str,
    body: Option<&serde_json::Value>,
    extra: &[&str],
) -> (u16, serde_json::Value) {
    let token = format!("X-Fortilab-Token: {}", SNAPSHOT_TOKEN.lock().unwrap());
    let mut args: Vec<String> = vec!["-H".into(), token];
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data".into(),
            b.to_string(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (st, text) = curl_status(method, url, ca, &refs);
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The first JSON object anywhere in `v` whose `key` is `value`.
fn find_obj<'a>(v: &'a serde_json::Value, key: &str, value: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => {
            if m.get(key).and_then(|x| x.as_str()) == Some(value) {
                return Some(v);
            }
            m.values().find_map(|x| find_obj(x, key, value))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_obj(x, key, value)),
        _ => None,
    }
}

/// Lab time now (ms) on the clock of a ready report.
fn report_lab_now_ms(r: &serde_json::Value) -> i64 {
    let c = &r["clock"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let (epoch, origin, speed) = (
        c["epoch_ms"].as_f64().unwrap(),
        c["origin_ms"].as_f64().unwrap(),
        c["speed"].as_f64().unwrap(),
    );
    (epoch + (now - origin) * speed) as i64
}

#[test]
fn a_snapshot_brings_the_whole_lab_back_and_the_flow_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, r) = start_up(dir.path(), "17");
    let ready = dir.path().join("ready.json");
    let ready_s = ready.display().to_string();
    let ca = r["ca_cert"].as_str().unwrap().to_string();
    *SNAPSHOT_TOKEN.lock().unwrap() = r["lab_token"].as_str().unwrap().to_string();
    let fgt = r["fortigate"]["api"].as_str().unwrap().to_string();
    let fgt_auth = format!(
        "Authorization: Bearer {}",
        r["fortigate"]["api_token"].as_str().unwrap()
    );
    let faz = r["fortianalyzer"]["api"].as_str().unwrap().to_string();
    let faz_auth = format!(
        "Authorization: Bearer {}",
        r["fortianalyzer"]["api_token"].as_str().unwrap()
    );
    let pc52 = r["endpoints"][0]["control"].as_str().unwrap().to_string();
    let dash = r["dashboard"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let ip = "10.115.2.52";

    let fetch = |url: &str| {
        curl_json(
            "POST",
            &format!("{pc52}/_lab/fetch"),
            &ca,
            Some(&serde_json::json!({"url": url})),
            &[],
        )
        .1
    };
    let quarantined = || {
        curl_json("GET", &format!("{pc52}/_lab/status"), &ca, None, &[]).1["quarantined"].as_bool()
    };
    let fgt_hosts = || {
        curl_json(
            "GET",
            &format!("{fgt}/_lab/compromised-hosts"),
            &ca,
            None,
            &[],
        )
        .1
    };
    let stitch_runs = || {
        curl_json(
            "GET",
            &format!("{fgt}/_lab/automation/runs"),
            &ca,
            None,
            &[],
        )
        .1["runs"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
    };
    let faz_host = || {
        let body = serde_json::json!({"id": 1, "jsonrpc": "2.0", "method": "get",
            "params": [{"url": "/ioc/adom/root/compromised-hosts", "apiver": 3}]});
        let (_, v) = curl_json(
            "POST",
            &format!("{faz}/jsonrpc"),
            &ca,
            Some(&body),
            &["-H", &faz_auth],
        );
        find_obj(&v, "epip", ip).cloned()
    };
    let acked = |h: &serde_json::Value| match &h["ack"] {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_i64() != Some(0),
        _ => false,
    };
    let address = || {
        curl_status(
            "GET",
            &format!("{fgt}/api/v2/cmdb/firewall/address/snapshot-e2e"),
            &ca,
            &["-H", &fgt_auth],
        )
        .0
    };
    let dash_post = |path: &str, body: serde_json::Value| {
        curl_json("POST", &format!("{dash}{path}"), &ca, Some(&body), &[])
    };

    // The seed flow up to a quarantined host.
    fetch("http://www.eicar.org/download/eicar.com");
    wait_for("PC-52 quarantined", Duration::from_secs(15), || {
        (quarantined() == Some(true)).then_some(())
    });
    wait_for("the FortiGate lists PC-52", Duration::from_secs(5), || {
        find_obj(&fgt_hosts(), "srcip", ip).map(|_| ())
    });
    let host = faz_host().expect("FortiAnalyzer lists PC-52");
    assert!(!acked(&host));
    assert_eq!(stitch_runs(), 1);

    // Save, in place: an SSH console opened before it is still the same session after it,
    // and no device process restarted.
    let data_s = dir.path().join("data").display().to_string();
    let mut pids_before = pids_mentioning(&data_s);
    pids_before.sort();
    let ssh_addr: std::net::SocketAddr = r["fortigate"]["ssh"].as_str().unwrap().parse().unwrap();
    let mut console = support::sshconsole::SshConsole::open(
        dir.path(),
        ssh_addr,
        "admin",
        r["fortigate"]["admin"]["password"].as_str().unwrap(),
        "# ",
    );
    let at = console.type_line("get system status");
    console.wait_output("get system status", at, |t| t.contains("Version:"));
    let (code, out, err) = run_fortilab(&[
        "snapshot",
        "save",
        "quarantined",
        "--attach",
        &ready_s,
        "--json",
    ]);
    assert_eq!(code, 0, "save: {out}\n{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cut = info["lab_time_ms"].as_i64().unwrap();
    assert_eq!(info["name"], "quarantined");
    assert!(info["devices"].as_array().unwrap().len() >= 5, "{info}");
    assert!(
        info["elapsed_ms"].as_u64().unwrap() < 5_000,
        "a save takes milliseconds: {info}"
    );
    assert!(dir
        .path()
        .join("data/snapshots/quarantined/snapshot.json")
        .exists());
    let mut pids_after = pids_mentioning(&data_s);
    pids_after.sort();
    assert_eq!(pids_after, pids_before, "no device restarted");
    assert!(console.is_open(), "the console session survived the save");
    for line in [
        "config firewall address",
        "edit console-after-save",
        "set subnet 192.0.2.8 255.255.255.255",
        "end",
    ] {
        console.type_line(line);
    }
    wait_for("the console's change", Duration::from_secs(10), || {
        (curl_status(
            "GET",
            &format!("{fgt}/api/v2/cmdb/firewall/address/console-after-save"),
            &ca,
            &["-H", &fgt_auth],
        )
        .0 == 200)
            .then_some(())
    });
    // The lab runs on with its state.
    assert_eq!(quarantined(), Some(true));
    let (code, out, _) = run_fortilab(&["snapshot", "list", "--attach", &ready_s]);
    assert_eq!(code, 0);
    assert!(out.contains("quarantined"), "{out}");
    let (st, v) = curl_json("GET", &format!("{dash}/api/snapshots"), &ca, None, &[]);
    assert_eq!(st, 200);
    assert_eq!(v["snapshots"][0]["name"], "quarantined", "{v}");

    // Release, acknowledge, change the configuration, write more logs.
    let (st, v) = dash_post("/api/ems/unquarantine", serde_json::json!({"ip": ip}));
    assert_eq!(st, 200, "{v}");
    wait_for("PC-52 released", Duration::from_secs(10), || {
        (quarantined() == Some(false)).then_some(())
    });
    let (st, v) = dash_post("/api/faz/ack", serde_json::json!({"ip": ip}));
    assert_eq!(st, 200, "{v}");
    wait_for("acknowledged", Duration::from_secs(5), || {
        faz_host().filter(|h| acked(h)).map(|_| ())
    });
    wait_for(
        "the FortiGate forgets PC-52",
        Duration::from_secs(5),
        || find_obj(&fgt_hosts(), "srcip", ip).is_none().then_some(()),
    );
    let body = serde_json::json!({"name": "snapshot-e2e", "subnet": "192.0.2.7 255.255.255.255"});
    let (st, v) = curl_json(
        "POST",
        &format!("{fgt}/api/v2/cmdb/firewall/address"),
        &ca,
        Some(&body),
        &["-H", &fgt_auth],
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(address(), 200);
    assert_eq!(fetch("http://news.sky.com/")["ok"], true);
    // Let at least 1.5 s of lab time pass since the cut, so the restored clock is seen to go
    // back.
    let pre = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&ready).unwrap())
        .unwrap();
    wait_for("lab time past the cut", Duration::from_secs(10), || {
        (report_lab_now_ms(&pre) > cut + 1_500).then_some(())
    });
    let before_restore = report_lab_now_ms(&pre);

    // Restore.
    let (code, out, err) = run_fortilab(&[
        "snapshot",
        "restore",
        "quarantined",
        "--attach",
        &ready_s,
        "--json",
    ]);
    assert_eq!(code, 0, "restore: {out}\n{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["lab_time_ms"].as_i64(), Some(cut));
    assert!(restored["elapsed_ms"].as_u64().unwrap() < 10_000);
    // The same ports, CA and credentials: the clients built from the first report still work.
    let after =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&ready).unwrap())
            .unwrap();
    assert_eq!(after["fortigate"]["api"], r["fortigate"]["api"]);
    assert_eq!(after["lab_token"], r["lab_token"]);
    // The lab clock continues from the cut.
    assert_eq!(after["clock"]["epoch_ms"].as_i64(), Some(cut));
    let lab_now = report_lab_now_ms(&after);
    assert!(
        lab_now >= cut && lab_now < before_restore,
        "lab time {lab_now}: cut {cut}, before the restore {before_restore}"
    );

    // Every device is back at the cut.
    assert_eq!(address(), 404, "the configuration change is gone");
    assert_eq!(quarantined(), Some(true), "FortiClient quarantined again");
    let blocked = fetch("http://news.sky.com/");
    assert_eq!(blocked["blocked_by"], "quarantine", "{blocked}");
    assert!(
        find_obj(&fgt_hosts(), "srcip", ip).is_some(),
        "the FortiGate lists PC-52 again"
    );
    let host = faz_host().expect("FortiAnalyzer lists PC-52");
    assert!(!acked(&host), "unacknowledged again: {host}");
    assert_eq!(stitch_runs(), 1, "the run history of the cut");
    let (st, logs) = curl_json(
        "GET",
        &format!("{fgt}/api/v2/log/memory/webfilter?rows=100"),
        &ca,
        None,
        &["-H", &fgt_auth],
    );
    assert_eq!(st, 200);
    assert!(
        logs.to_string().contains("www.eicar.org"),
        "the memory log came back"
    );
    // A log written now is stamped on the restored clock.
    let (_, ev) = curl_json(
        "GET",
        &format!("{fgt}/api/v2/log/memory/event/system?rows=1"),
        &ca,
        None,
        &["-H", &fgt_auth],
    );
    let newest = ev.to_string();
    assert!(!newest.is_empty());

    // The flow continues: acknowledge, release, download again, the stitch runs again.
    let (st, v) = dash_post("/api/faz/ack", serde_json::json!({"ip": ip}));
    assert_eq!(st, 200, "{v}");
    wait_for(
        "the FortiGate forgets PC-52",
        Duration::from_secs(10),
        || find_obj(&fgt_hosts(), "srcip", ip).is_none().then_some(()),
    );
    let (st, v) = dash_post("/api/ems/unquarantine", serde_json::json!({"ip": ip}));
    assert_eq!(st, 200, "{v}");
    wait_for("PC-52 released", Duration::from_secs(10), || {
        (quarantined() == Some(false)).then_some(())
    });
    fetch("http://www.eicar.org/download/eicar.com");
    wait_for("the stitch runs again", Duration::from_secs(15), || {
        (stitch_runs() == 2).then_some(())
    });
    wait_for("PC-52 quarantined again", Duration::from_secs(15), || {
        (quarantined() == Some(true)).then_some(())
    });
    let (st, logs) = curl_json(
        "GET",
        &format!("{fgt}/api/v2/log/memory/webfilter?rows=100"),
        &ca,
        None,
        &["-H", &fgt_auth],
    );
    assert_eq!(st, 200);
    let stamps: Vec<i64> = logs["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["hostname"] == "www.eicar.org")
        .filter_map(|l| {
            l["eventtime"]
                .as_i64()
                .or_else(|| l["eventtime"].as_str().and_then(|s| s.parse().ok()))
        })
        .collect();
    assert_eq!(stamps.len(), 2, "{logs}");
    let newest_ms = stamps.iter().max().unwrap() / 1_000_000;
    assert!(
        newest_ms >= cut && newest_ms < before_restore + 30_000,
        "new log at lab time {newest_ms}, cut {cut}"
    );

    // Bad input.
    let (code, _, err) =
        run_fortilab(&["snapshot", "restore", "never-saved", "--attach", &ready_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no snapshot named"), "{err}");
    let (code, _, err) = run_fortilab(&["snapshot", "save", "../escape", "--attach", &ready_s]);
    assert_eq!(code, 2, "{err}");

    support::unsafe_free_kill(child.id(), "INT");
    let status = wait_for("fortilab up to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "fortilab up exit: {status}");
    let data = dir.path().join("data").display().to_string();
    wait_for(
        "every device process to be gone",
        Duration::from_secs(10),
        || pids_mentioning(&data).is_empty().then_some(()),
    );
}
