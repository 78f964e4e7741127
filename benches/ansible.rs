//! The Ansible judge's playbook (tests/ansible/ioc-flow.yml) against a factory lab: wall time
//! of each full run and the lab's share of it. The lab's share is the CPU time every lab
//! process (FortiGate, FortiAnalyzer, EMS, endpoints, lab Internet, orchestrator) used during
//! the run divided by the run's wall time: an upper bound of the time the lab spent serving
//! the playbook (it includes the lab's own background work: keep-alives, log upload). The
//! FortiGate's own server time (its REST API's service time, `/_lab/health` `api.busy_ns`:
//! request at the router → response produced) is reported next to it: the time the 13
//! FortiGate tasks waited for the FortiGate.
//!
//! Run: `cargo xtask bench --bench ansible`
//! (`ANSIBLE_BENCH_RUNS`, default 3 runs after the first, configuring one).

#[allow(dead_code)]
#[path = "../tests/e2e/support/ansible.rs"]
mod ansible_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_ready(path: &Path, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&t) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "lab not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
const HZ: f64 = 100.0;

/// CPU seconds (user + system, the process and its reaped children) of every process whose
/// command line mentions `needle` (the lab's data directory).
fn lab_cpu(needle: &str) -> f64 {
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14–17 of stat (utime, stime, cutime, cstime) are 11–14 after the name.
        ticks += f.get(11..15).map(|s| s.iter().sum()).unwrap_or(0);
    }
    ticks as f64 / HZ
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let runs: usize = std::env::var("ANSIBLE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ready_path = dir.path().join("ready.json");
    let lab_def = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ansible/factory-lab.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fortilab"))
        .arg("up")
        .arg(&lab_def)
        .arg("--ready-file")
        .arg(&ready_path)
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_ready(&ready_path, Duration::from_secs(60));
    let inventory = ansible_support::write_inventory(dir.path(), &ready);
    let needle = data.display().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = fortilab_core::LabCa::load(&data.join("ca/ca.pem"), &data.join("ca/ca.key")).unwrap();
    let token = fortilab_core::secrets::LabToken::new(ready["lab_token"].as_str().unwrap());
    let fgt_api = ready["fortigate"]["api"].as_str().unwrap().to_string();
    // The FortiGate REST API's (requests served, service time in seconds) so far. A new client
    // (connection) each time: a run lasts longer than the server keeps an idle connection.
    let fgt_api_time = || -> (u64, f64) {
        let v: serde_json::Value = rt.block_on(async {
            let client =
                fortilab_scenarios::clients::http_client(&ca, false, Some(&token)).unwrap();
            let r = client
                .get(format!("{fgt_api}/_lab/health"))
                .send()
                .await
                .expect("FortiGate /_lab/health");
            serde_json::from_str(&r.text().await.unwrap()).unwrap()
        });
        (
            v["api"]["requests"].as_u64().unwrap_or(0),
            v["api"]["busy_ns"].as_u64().unwrap_or(0) as f64 / 1e9,
        )
    };
    println!(
        "ansible-playbook: {}; load before: {}",
        ansible_support::ansible_playbook().display(),
        load()
    );
    let mut walls = Vec::new();
    let mut shares = Vec::new();
    let mut server = Vec::new();
    for i in 0..=runs {
        let cpu0 = lab_cpu(&needle);
        let (n0, t0) = fgt_api_time();
        let r = ansible_support::run_playbook(dir.path(), &inventory, &[]);
        let cpu = lab_cpu(&needle) - cpu0;
        let (n1, t1) = fgt_api_time();
        assert!(r.ok, "run {i} failed: {:?}\n{}", r.failed(), r.raw);
        let wall = r.elapsed.as_secs_f64();
        let tasks = r.tasks.len();
        println!(
            "run {i}{}: {wall:.2} s wall for {tasks} task results ({:.2} s/task), lab CPU {cpu:.3} s = {:.2}% of the run, FortiGate API {} requests served in {:.3} s = {:.2}% of the run, {} changed; load {}",
            if i == 0 { " (configuring)" } else { "" },
            wall / tasks.max(1) as f64,
            cpu / wall * 100.0,
            n1 - n0,
            t1 - t0,
            (t1 - t0) / wall * 100.0,
            r.changed().len(),
            load()
        );
        if i > 0 {
            walls.push(wall);
            shares.push(cpu / wall * 100.0);
            server.push((t1 - t0) / wall * 100.0);
        }
    }
    walls.sort_by(|a, b| a.partial_cmp(b).unwrap());
    shares.sort_by(|a, b| a.partial_cmp(b).unwrap());
    server.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if !walls.is_empty() {
        println!(
            "re-runs: wall median {:.2} s (min {:.2}, max {:.2}); lab CPU share median {:.2}% (max {:.2}%); FortiGate server time median {:.2}% (max {:.2}%)",
            walls[walls.len() / 2],
            walls[0],
            walls[walls.len() - 1],
            shares[shares.len() / 2],
            shares[shares.len() - 1],
            server[server.len() / 2],
            server[server.len() - 1]
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
