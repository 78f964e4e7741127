//! Lab-level benchmarks (issue 6): `fortilab up` to ready, and the seed flow from the
//! endpoint's EICAR fetch to the endpoint being blocked, with `timing = "fast"`; then (issue
//! 17) a snapshot save and a restore of that quarantined seed lab through the dashboard's
//! `POST /_lab/snapshot`, as `fortilab snapshot` does (the call returns once the lab is
//! running and settled again).
//!
//! Run: `cargo bench --bench lab` (uses the release build of `fortilab`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fortilab_core::LabCa;
use fortilab_scenarios::attach::post_snapshot;
use fortilab_scenarios::clients::{http_client, Endpoints};
use fortilab_scenarios::snapshot::SnapshotOp;

fn wait_ready(path: &Path, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&t) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "lab not ready");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runs: usize = std::env::var("LAB_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let exe = env!("CARGO_BIN_EXE_fortilab");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ready_ms = Vec::new();
    let mut flow_ms = Vec::new();
    let mut save_ms = Vec::new();
    let mut restore_ms = Vec::new();
    let mut snap_bytes = 0u64;
    for i in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let t0 = Instant::now();
        let mut child = Command::new(exe)
            .args(["up", "--json", "--seed", &i.to_string(), "--ready-file"])
            .arg(&ready)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let report = wait_ready(&ready, Duration::from_secs(30));
        ready_ms.push(t0.elapsed().as_secs_f64() * 1000.0);

        let ca = LabCa::load_or_create(&dir.path().join("data/ca"), "bench").unwrap();
        let eps: Vec<serde_json::Value> =
            report["endpoints"].as_array().cloned().unwrap_or_default();
        let flow = rt.block_on(async {
            let token =
                fortilab_core::secrets::LabToken::new(report["lab_token"].as_str().unwrap());
            let client = http_client(&ca, false, Some(&token)).unwrap();
            let endpoints = Endpoints::new(&eps, client);
            let t = Instant::now();
            let ans = endpoints
                .fetch("PC-52", "http://www.eicar.org/download/eicar.com")
                .await
                .unwrap();
            assert_eq!(ans["ok"], true, "{ans}");
            loop {
                let ans = endpoints
                    .fetch("PC-52", "http://news.sky.com/")
                    .await
                    .unwrap();
                if ans["blocked_by"] == "quarantine" {
                    break t.elapsed();
                }
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "never blocked: {ans}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        flow_ms.push(flow.as_secs_f64() * 1000.0);

        // Snapshot save, then restore, of the quarantined lab (wall clock at the client).
        let dashboard = report["dashboard"].as_str().unwrap().trim_end_matches('/');
        let token = fortilab_core::secrets::LabToken::new(report["lab_token"].as_str().unwrap());
        for (op, out) in [
            (SnapshotOp::Save, &mut save_ms),
            (SnapshotOp::Restore, &mut restore_ms),
        ] {
            let t = Instant::now();
            let (info, _clock) = rt
                .block_on(post_snapshot(dashboard, Some(&token), op, "bench"))
                .unwrap_or_else(|e| panic!("snapshot {}: {e:#}", op.as_str()));
            out.push(t.elapsed().as_secs_f64() * 1000.0);
            snap_bytes = info.bytes;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
    println!("fortilab up → ready (all processes, certificates generated), {runs} runs:");
    println!(
        "  median {:.0} ms, max {:.0} ms",
        percentile(&mut ready_ms.clone(), 0.5),
        percentile(&mut ready_ms, 1.0)
    );
    println!("seed flow, EICAR fetch → endpoint blocked (timing = fast), {runs} runs:");
    println!(
        "  median {:.0} ms, max {:.0} ms",
        percentile(&mut flow_ms.clone(), 0.5),
        percentile(&mut flow_ms, 1.0)
    );
    println!("snapshot save of the quarantined seed lab ({snap_bytes} bytes), {runs} runs:");
    println!(
        "  median {:.0} ms, max {:.0} ms",
        percentile(&mut save_ms.clone(), 0.5),
        percentile(&mut save_ms, 1.0)
    );
    println!("snapshot restore of it, {runs} runs:");
    println!(
        "  median {:.0} ms, max {:.0} ms",
        percentile(&mut restore_ms.clone(), 0.5),
        percentile(&mut restore_ms, 1.0)
    );
}
