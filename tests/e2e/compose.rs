//! Scenarios against a running lab (`fortilab run --attach`), the OCI image and the Compose lab
//! (issue 16 items 2-4).
//!
//! The attach test runs against a loopback `fortilab up` (always). The Compose test builds the
//! image from the debug `fortilab` binary the tests already have (no registry: `FROM scratch`
//! plus the binary and the libraries it links), writes the project with `fortilab compose`,
//! brings it up with `docker-compose`, checks that no lab address can leave the machine, runs
//! the seed scenario with `--attach`, and cuts FortiAnalyzer off its network while the
//! FortiGate logs, then checks every log arrives after the reconnect. It is skipped, with a
//! message, only when no Docker engine answers; everything it creates (containers, networks,
//! the lab directory, the image, the host's unreachable routes) is removed, also on failure.

use crate::support;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{bin, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seed_flow() -> PathBuf {
    repo().join("scenarios/library/seed-flow.toml")
}

fn fortilab(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin("fortilab"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Benign browsing and its FortiGate logs, then a device control step, which an attached lab
/// must refuse.
const BROWSE_THEN_KILL: &str = r#"
[scenario]
name = "browse, then kill a device"

[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/", ok = true, status = 200 }

[[step]]
expect_fgt_log = { path = "webfilter", fields = { srcip = "10.115.2.52", hostname = "news.sky.com" } }
within = "2s"

[[step]]
kill = "fortianalyzer"
"#;

#[test]
fn attach_drives_a_running_loopback_lab_from_its_ready_file_and_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut up = Command::new(bin("fortilab"))
        .args(["up", "--json", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report: serde_json::Value = wait_for("fortilab up", Duration::from_secs(60), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    });
    assert!(report["clock"]["speed"].is_number(), "{report}");
    let token = report["lab_token"].as_str().unwrap().to_string();
    let dashboard = report["dashboard"].as_str().unwrap().to_string();
    let url = format!("{dashboard}_lab/ready");

    // The URL form without the token: refused, exit 2, and says what to set.
    let browse = write(dir.path(), "browse.toml", BROWSE_THEN_KILL);
    let b = browse.to_str().unwrap();
    let (code, _, err) = fortilab(&["run", "--attach", &url, b], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FORTILAB_LAB_TOKEN"), "{err}");

    // With the token: the steps act on the running lab; the kill step is refused clearly.
    let (code, out, err) = fortilab(
        &["run", "--attach", &url, b],
        &[("FORTILAB_LAB_TOKEN", &token)],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("✔  1. "), "{out}");
    assert!(out.contains("✔  2. "), "{out}");
    assert!(out.contains("not supported on an attached lab"), "{out}");

    // The ready file form: the seed flow passes against the lab as it is.
    let (code, out, err) = fortilab(
        &[
            "run",
            "--attach",
            ready.to_str().unwrap(),
            seed_flow().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    // The lab it attached to is still running and was not restarted: PC-52 stays quarantined.
    assert!(up.try_wait().unwrap().is_none(), "fortilab up exited");
    support::unsafe_free_kill(up.id(), "TERM");
    let st = up.wait().unwrap();
    assert!(st.success(), "fortilab up: {st:?}");
}

// ---------------------------------------------------------------------------------------------
// Compose

fn docker_ready() -> Option<String> {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !info.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&info.stdout).trim().to_string())
}

/// `docker-compose` (v1) or `docker compose` (v2), whichever exists.
fn compose_cmd() -> Option<Vec<String>> {
    let ok = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(Command::new("docker-compose").arg("version")) {
        return Some(vec!["docker-compose".into()]);
    }
    if ok(Command::new("docker").args(["compose", "version"])) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The lab's ranges that must never leave the machine: the lab's private /16 (every container
/// network is inside it) and each lab Internet site's public address.
fn lab_ranges() -> Vec<String> {
    let mut v = vec!["10.115.0.0/16".to_string()];
    for s in fortilab_internet::sites::default_sites() {
        if let IpAddr::V4(ip) = s.ip {
            let r = format!("{ip}/32");
            if !v.contains(&r) {
                v.push(r);
            }
        }
    }
    v
}

/// Everything the Compose test creates, removed on drop (also when the test fails).
struct ComposeLab {
    compose: Vec<String>,
    project: String,
    file: PathBuf,
    image: String,
    routes: Vec<String>,
    dir: PathBuf,
}

impl ComposeLab {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args);
        c
    }

    fn container(&self, service: &str) -> String {
        let o = run(&mut self.cmd(&["ps", "-q", service]));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}: {}", text(&o));
        id
    }
}

impl Drop for ComposeLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = run(&mut self.cmd(&["logs", "--no-color", "--tail", "40"]));
            eprintln!("compose logs:\n{}", text(&o));
        }
        let o = run(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "15"]));
        if !o.status.success() {
            eprintln!("compose down: {}", text(&o));
        }
        let _ = run(Command::new("docker").args(["image", "rm", "-f", &self.image]));
        // The lab directory holds root-owned files written by the containers.
        let _ = std::fs::remove_dir_all(&self.dir);
        // Routes last: no packet to a lab address may leave while anything of the lab exists.
        for r in &self.routes {
            let _ = run(Command::new("ip").args(["route", "del", "unreachable", r]));
        }
    }
}

fn route_get(ip: &str) -> (bool, String) {
    let o = run(Command::new("ip").args(["route", "get", ip]));
    (o.status.success(), text(&o))
}

fn connect_fails(addr: &str) -> bool {
    let a: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_err()
}

/// Five fetches while FortiAnalyzer is cut off (pages the site does not have: 404, logged all
/// the same); after the reconnect FortiAnalyzer must have every one of their web-filter logs.
const DURING_PARTITION: &str = r#"
[scenario]
name = "browse while FortiAnalyzer is unreachable"

[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/partition-1", status = 404 }
[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/partition-2", status = 404 }
[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/partition-3", status = 404 }
[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/partition-4", status = 404 }
[[step]]
fetch = { endpoint = "PC-52", url = "http://news.sky.com/partition-5", status = 404 }

[[step]]
name = "the FortiGate logged them"
expect_fgt_log = { path = "webfilter", fields = { srcip = "10.115.2.52", hostname = "news.sky.com" } }
within = "2s"
"#;

const AFTER_PARTITION: &str = r#"
[scenario]
name = "FortiAnalyzer has every log after the reconnect"

[[step]]
expect_faz_log = { logtype = "webfilter", filter = "srcip==10.115.2.52 hostname=news.sky.com", min = 5 }
within = "60s"
"#;

#[test]
fn compose_lab_runs_the_seed_scenario_attached_and_loses_no_log_across_a_faz_partition() {
    let Some(engine) = docker_ready() else {
        eprintln!("SKIPPED: no Docker engine answers `docker info`");
        return;
    };
    let Some(compose) = compose_cmd() else {
        eprintln!("SKIPPED: Docker engine {engine} but neither docker-compose nor docker compose");
        return;
    };
    // The namespaces tests claim the same host routes and addresses.
    let _host = support::HOST_NETWORK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap().keep();
    let tag = format!("fortilab-test:{}", std::process::id());
    let mut lab = ComposeLab {
        compose,
        project: format!("fortilabtest{}", std::process::id()),
        file: dir.join("compose.yaml"),
        image: tag.clone(),
        routes: Vec::new(),
        dir: dir.clone(),
    };

    // 1. No lab range has a route of its own yet (`fortilab compose up` installs them).
    // Whatever happens, the drop removes them last.
    lab.routes = lab_ranges();

    // 2. The image, from the debug binary the tests use: no registry.
    let o = run(Command::new(repo().join("oci/build-image.sh"))
        .arg(bin("fortilab"))
        .arg(&tag));
    assert!(o.status.success(), "build-image.sh: {}", text(&o));

    // 3. The project.
    let (code, out, err) = fortilab(
        &[
            "compose",
            "--out",
            dir.to_str().unwrap(),
            "--image",
            &tag,
            "--lab-dir",
            "./lab",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    std::fs::create_dir_all(dir.join("lab")).unwrap();
    let o = run(&mut lab.cmd(&["config", "-q"]));
    assert!(o.status.success(), "compose config: {}", text(&o));

    // 4. Up (`fortilab compose up`: the host's unreachable routes for every lab range first,
    // then `compose up -d`), and the ready report once every device is healthy and the fabric
    // has settled.
    let t0 = Instant::now();
    let (code, out, err) = fortilab(
        &["compose", "up", "--out", dir.to_str().unwrap()],
        &[("COMPOSE_PROJECT_NAME", &lab.project)],
    );
    assert_eq!(code, 0, "fortilab compose up: {out}{err}");
    for r in lab_ranges() {
        let o = run(Command::new("ip").args(["route", "show", "type", "unreachable", &r]));
        assert!(
            text(&o).contains(r.trim_end_matches("/32")),
            "after `fortilab compose up`, {r} is not unreachable: {}",
            text(&o)
        );
    }
    let ready = dir.join("lab/ready.json");
    let report: serde_json::Value = wait_for("lab/ready.json", Duration::from_secs(90), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    });
    eprintln!(
        "compose lab ready {:.1} s after `up -d` was started",
        t0.elapsed().as_secs_f64()
    );
    // The devices are at their lab addresses.
    assert_eq!(
        report["fortigate"]["api"], "https://10.115.1.1:443",
        "{report}"
    );
    assert_eq!(report["fortianalyzer"]["api"], "https://10.115.1.20:443");
    assert_eq!(report["ems"]["api"], "https://10.115.1.30:443");
    assert_eq!(report["endpoints"][0]["ip"], "10.115.2.52");

    // 5. No lab address leaves the machine: a public site address is unreachable from the
    // host; the lab's networks go to their (internal) bridges, never the default route; an
    // address with no container behind it refuses.
    for r in lab_ranges().iter().skip(1) {
        let ip = r.trim_end_matches("/32");
        let (ok, t) = route_get(ip);
        assert!(!ok || t.contains("unreachable"), "ip route get {ip}: {t}");
    }
    for ip in ["10.115.1.20", "10.115.2.52", "10.115.0.2"] {
        let (ok, t) = route_get(ip);
        assert!(ok && t.contains(" dev br-"), "ip route get {ip}: {t}");
        assert!(!t.contains(" via "), "ip route get {ip}: {t}");
    }
    let (ok, t) = route_get("10.115.3.7");
    assert!(
        !ok || t.contains("unreachable"),
        "ip route get 10.115.3.7: {t}"
    );
    assert!(connect_fails("10.115.3.7:443"));
    assert!(connect_fails("10.115.1.99:443"));

    // 6. FortiAnalyzer cut off while the FortiGate logs; reconnected at its address.
    let faz = lab.container("fortianalyzer");
    let mgmt = format!("{}_mgmt", lab.project);
    let o = run(Command::new("docker").args(["network", "disconnect", &mgmt, &faz]));
    assert!(o.status.success(), "network disconnect: {}", text(&o));
    let during = write(&dir, "during.toml", DURING_PARTITION);
    let (code, out, err) = fortilab(
        &[
            "run",
            "--attach",
            ready.to_str().unwrap(),
            during.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let o = run(Command::new("docker").args([
        "network",
        "connect",
        "--ip",
        "10.115.1.20",
        &mgmt,
        &faz,
    ]));
    assert!(o.status.success(), "network connect: {}", text(&o));

    // 7. Every log of the partition reaches FortiAnalyzer once it is back; then the seed
    // scenario passes against the Compose lab.
    let after = write(&dir, "after.toml", AFTER_PARTITION);
    let (code, out, err) = fortilab(
        &[
            "run",
            "--attach",
            ready.to_str().unwrap(),
            after.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = fortilab(
        &[
            "run",
            "--attach",
            ready.to_str().unwrap(),
            seed_flow().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");

    // 8. `fortilab compose down`: the lab gone, then its routes.
    let (code, out, err) = fortilab(
        &["compose", "down", "--out", dir.to_str().unwrap()],
        &[("COMPOSE_PROJECT_NAME", &lab.project)],
    );
    assert_eq!(code, 0, "fortilab compose down: {out}{err}");
    let o = run(&mut lab.cmd(&["ps", "-q"]));
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "{}",
        text(&o)
    );
    for r in lab_ranges() {
        let o = run(Command::new("ip").args(["route", "show", "type", "unreachable", &r]));
        assert!(
            !text(&o).contains(r.trim_end_matches("/32")),
            "after `fortilab compose down`, {r} is still routed: {}",
            text(&o)
        );
    }
    let _ = std::io::stderr().flush();
    drop(lab);
}
