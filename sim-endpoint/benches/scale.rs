//! Scale benchmark: 10,000 endpoints in one sim-endpoint process against one sim-ems process.
//!
//! Measures: time until all 10,000 are registered, keep-alives sustained at KA_INTERVAL = 10 s
//! (every endpoint's `last_seen` stays within one period plus slack, over three periods), the
//! delay until a quarantine of one endpoint is delivered, and the RSS of both processes.
//!
//! The EMS is the real `sim-ems` binary: the bench builds it with `cargo build --release --bin
//! sim-ems` (or takes `SIM_EMS_BIN`). The endpoint process is this bench binary re-executed in
//! the endpoint role (it runs `fortilab_endpoint::cli::main`).
//!
//! Run: `cargo bench -p fortilab-endpoint --bench scale` (`SCALE_COUNT=2000` for a quick run;
//! `SIM_EMS_BIN` / `SIM_ENDPOINT_BIN` to use already built binaries).

/// The allocator every fortilab binary ships with (src/bin/fortilab.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROLE_ENV: &str = "FORTILAB_SCALE_ROLE";

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn ems_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SIM_EMS_BIN") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "sim-ems",
            "--message-format",
            "short",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo build");
    assert!(st.success(), "building sim-ems failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("release").join("sim-ems")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
    }
}

fn wait_ready(path: &std::path::Path, child: &mut Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&t) {
                return v;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("process exited before ready: {st}");
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lab token of the processes this bench starts (`FORTILAB_LAB_TOKEN`), sent on every
/// request.
fn lab_token() -> &'static str {
    static T: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    T.get_or_init(|| fortilab_core::secrets::random_token(32))
}

/// An HTTPS client (lab CA, the lab token), one connection per request.
struct Https(fortilab_core::http::client::HttpsClient);

struct Reply {
    status: u16,
    cookies: Vec<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Https {
    fn new(ca: &fortilab_core::LabCa, addr: std::net::SocketAddr) -> Self {
        let c = fortilab_core::http::client::HttpsClient::new(ca.cert_pem(), None, addr).unwrap();
        Https(c.with_lab_token(lab_token()))
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let r = self
            .0
            .request(method, path, headers, body.map(String::into_bytes))
            .await
            .unwrap();
        Reply {
            status: r.status,
            cookies: r
                .header_all("set-cookie")
                .iter()
                .map(|c| c.split(';').next().unwrap_or("").to_string())
                .collect(),
            body: r.body,
        }
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.request(
            method,
            path,
            &[("content-type", "application/json")],
            body.map(|b| b.to_string()),
        )
        .await
    }
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("endpoint") {
        std::process::exit(match fortilab_endpoint::cli::main() {
            c if c == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: usize = std::env::var("SCALE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let ka_secs = 10u64;
    let ems_bin = ems_binary();
    let dir = tempfile::tempdir().unwrap();
    let ca = fortilab_core::LabCa::generate("scale").unwrap();
    ca.save(&dir.path().join("ca")).unwrap();
    let ca_cert = dir.path().join("ca/ca.pem");
    let ca_key = dir.path().join("ca/ca.key");
    std::fs::write(
        dir.path().join("ems.toml"),
        format!("ka_interval = {ka_secs}\n[admin]\npassword = \"bench\"\n"),
    )
    .unwrap();

    let ems_ready = dir.path().join("ems.json");
    let mut ems = Command::new(&ems_bin)
        .args(["--config", dir.path().join("ems.toml").to_str().unwrap()])
        .args(["--data-dir", dir.path().join("ems").to_str().unwrap()])
        .args(["--ready-file", ems_ready.to_str().unwrap()])
        .args([
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .env("FORTILAB_LAB_TOKEN", lab_token())
        // Lets an optimised `ems_index` bench binary stand in for sim-ems (SIM_EMS_BIN).
        .env("FORTILAB_BENCH_ROLE", "ems")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sim-ems");
    let ems_info = wait_ready(&ems_ready, &mut ems);
    let ems = Kill(ems);
    let tel = ems_info["telemetry"].as_str().unwrap().to_string();
    let api: std::net::SocketAddr = ems_info["api"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    std::fs::write(
        dir.path().join("map.json"),
        json!({"services": {"10.115.1.30:8013": tel}}).to_string(),
    )
    .unwrap();

    let ep_ready = dir.path().join("ep.json");
    let ems_cpu_start = cpu_secs(ems.0.id());
    let started = Instant::now();
    // SIM_ENDPOINT_BIN runs a built sim-endpoint instead of this binary in the endpoint role.
    let ep_bin = std::env::var("SIM_ENDPOINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::current_exe().unwrap());
    let mut ep = Command::new(ep_bin)
        .env(ROLE_ENV, "endpoint")
        .env("RUST_LOG", "warn")
        .env("FORTILAB_LAB_TOKEN", lab_token())
        .args([
            "--count",
            &count.to_string(),
            "--name-pattern",
            "PC-{i}",
            "--ip-start",
            "10.115.2.52",
        ])
        .args([
            "--ems",
            "10.115.1.30:8013",
            "--lab-map",
            dir.path().join("map.json").to_str().unwrap(),
        ])
        .args(["--data-dir", dir.path().join("ep").to_str().unwrap()])
        .args(["--ready-file", ep_ready.to_str().unwrap()])
        .args([
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
        ])
        .args(["--register-spread-ms", "2000"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn endpoints");
    let ep_info = wait_ready(&ep_ready, &mut ep);
    let ep = Kill(ep);
    let control: std::net::SocketAddr = ep_info["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .parse()
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Https::new(&ca, api);
    let health = |c: &Https| rt.block_on(c.json("GET", "/_lab/health", None)).json();
    loop {
        let h = health(&client);
        let n = h["endpoints"].as_u64().unwrap_or(0);
        if n >= count as u64 {
            break;
        }
        if std::env::var("SCALE_VERBOSE").is_ok() {
            eprintln!("{:.2?}: {n} registered", started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "registration stalled: {h}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reg_time = started.elapsed();
    println!("{count} endpoints registered {reg_time:.2?} after the endpoint process started (incl. its start-up)");
    println!(
        "RSS after registration: sim-ems {:.1} MB, sim-endpoint {:.1} MB",
        rss_mb(ems.0.id()),
        rss_mb(ep.0.id())
    );
    let (reg_cpu_ems, reg_cpu_ep) = (cpu_secs(ems.0.id()) - ems_cpu_start, cpu_secs(ep.0.id()));
    println!(
        "CPU during registration: sim-ems {reg_cpu_ems:.2} s, sim-endpoint {reg_cpu_ep:.2} s (incl. its start-up) = {:.0} µs per registration, {:.0}% of one core over the {:.1} s",
        (reg_cpu_ems + reg_cpu_ep) * 1e6 / count as f64,
        (reg_cpu_ems + reg_cpu_ep) * 100.0 / reg_time.as_secs_f64(),
        reg_time.as_secs_f64()
    );

    let r = rt.block_on(client.json(
        "POST",
        "/api/v1/auth/signin",
        Some(json!({"name": "admin", "password": "bench"})),
    ));
    let cookies: Vec<String> = r.cookies.clone();
    let csrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix("csrftoken="))
        .unwrap()
        .to_string();
    let cookie = cookies.join("; ");
    let referer = format!("https://{api}");
    let get = |path: &str| {
        rt.block_on(client.request("GET", path, &[("cookie", &cookie)], None))
            .json()
    };

    // Keep-alives sustained over three periods.
    let ka_before = health(&client)["keepalives"].as_u64().unwrap_or(0);
    let cpu_before = (cpu_secs(ems.0.id()), cpu_secs(ep.0.id()));
    let t0 = Instant::now();
    let mut worst_age_ms = 0i64;
    let mut peak_ems = 0f64;
    let mut peak_ep = 0f64;
    while t0.elapsed() < Duration::from_secs(3 * ka_secs) {
        std::thread::sleep(Duration::from_millis(500));
        // EMS reports the age of its least recently seen endpoint (lab time = real time here).
        let h = health(&client);
        if t0.elapsed() > Duration::from_secs(ka_secs) {
            worst_age_ms = worst_age_ms.max(h["oldest_contact_age_ms"].as_i64().unwrap_or(0));
        }
        peak_ems = peak_ems.max(rss_mb(ems.0.id()));
        peak_ep = peak_ep.max(rss_mb(ep.0.id()));
    }
    let ka_after = health(&client)["keepalives"].as_u64().unwrap_or(0);
    let cpu_ems = cpu_secs(ems.0.id()) - cpu_before.0;
    let cpu_ep = cpu_secs(ep.0.id()) - cpu_before.1;
    let n_ka = (ka_after - ka_before).max(1) as f64;
    println!(
        "CPU per keep-alive exchange: sim-ems {:.0} µs, sim-endpoint {:.0} µs (both include the bench's index polling)",
        cpu_ems * 1e6 / n_ka,
        cpu_ep * 1e6 / n_ka
    );
    let rate = (ka_after - ka_before) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "keep-alives: {rate:.0}/s over {:.0?} (expected {:.0}/s); oldest last contact seen: {:.1} s (KA {ka_secs} s)",
        t0.elapsed(),
        count as f64 / ka_secs as f64,
        worst_age_ms as f64 / 1000.0
    );

    // Quarantine one endpoint in the middle and time its delivery.
    let name = format!("PC-{}", count / 2);
    let target = ep_info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap()
        .clone();
    let ip = target["ip"].as_str().unwrap();
    let q0 = Instant::now();
    let r = rt.block_on(client.request(
        "POST",
        "/api/v1/clients/quarantine",
        &[
            ("cookie", &cookie),
            ("x-csrftoken", &csrf),
            ("referer", &referer),
            ("content-type", "application/json"),
        ],
        Some(json!({"addresses": [{"ip": ip}]}).to_string()),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ctl = Https::new(&ca, control);
    loop {
        let st = rt
            .block_on(ctl.json("GET", &format!("/endpoints/{name}/_lab/status"), None))
            .json();
        if st["quarantined"] == true {
            break;
        }
        assert!(
            q0.elapsed() < Duration::from_secs(3 * ka_secs),
            "quarantine not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "quarantine of {name} applied on the endpoint {:.2?} after the API call (KA {ka_secs} s)",
        q0.elapsed()
    );
    let (re, rp) = (rss_mb(ems.0.id()), rss_mb(ep.0.id()));
    peak_ems = peak_ems.max(re);
    peak_ep = peak_ep.max(rp);
    println!(
        "RSS peak: sim-ems {peak_ems:.1} MB, sim-endpoint {peak_ep:.1} MB, total {:.1} MB",
        peak_ems + peak_ep
    );
    let t = Instant::now();
    let page = get("/api/v1/endpoints/index?offset=5000&count=100");
    println!(
        "endpoints/index page of 100 during the run: {:.2?} ({} total)",
        t.elapsed(),
        page["data"]["total"]
    );
    let t = Instant::now();
    let all = get(&format!("/api/v1/endpoints/index?offset=0&count={count}"));
    let listed = all["data"]["endpoints"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    println!(
        "endpoints/index of all {listed} in one page: {:.2?}; RSS after it: sim-ems {:.1} MB, sim-endpoint {:.1} MB",
        t.elapsed(),
        rss_mb(ems.0.id()),
        rss_mb(ep.0.id())
    );
    drop(ep);
    drop(ems);
}
