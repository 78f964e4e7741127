//! Classroom benchmark (issue 17 item 4): `fortilab class up --labs N` (30 seed labs by
//! default) on this machine: time from the command to every lab ready, then the idle CPU of
//! the whole process tree (the class, every lab's `fortilab up` and its devices) over a window,
//! and the memory of the tree (sum of RSS, which counts the shared binary's pages once per
//! process; sum of PSS, which divides them among the processes; and the drop of the machine's
//! `MemAvailable`); then SIGTERM and a check that no process is left.
//!
//! Run: `cargo bench --bench class`. `CLASS_BENCH_LABS` (default 30), `CLASS_BENCH_IDLE_SECS`
//! (the CPU window, default 20), `CLASS_BENCH_SETTLE_SECS` (wait after ready before measuring,
//! default 10), `CLASS_BENCH_EXE` (a `fortilab` to run instead of this build's),
//! `CLASS_BENCH_LAB` (a lab definition for every lab instead of the seed lab).
//! Prints one JSON object.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// (ppid, utime + stime in ticks, rss kB) of every process.
fn procs() -> HashMap<u32, (u32, u64, u64)> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after: Vec<&str> = stat
            .rsplit_once(')')
            .map(|x| x.1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // After the command: state(0) ppid(1) ... utime(11) stime(12) ... rss pages(21).
        let f = |i: usize| {
            after
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let rss_kb = f(21) * 4;
        out.insert(pid, (f(1) as u32, f(11) + f(12), rss_kb));
    }
    out
}

/// Proportional set size of a process in kB (shared pages split between their users, so the
/// sum over processes is the memory they really take; RSS counts the shared binary's pages once
/// per process).
fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The process tree under `root` (root included).
fn tree(root: u32, all: &HashMap<u32, (u32, u64, u64)>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, v)| v.0 == p).map(|(k, _)| *k));
        i += 1;
    }
    out
}

/// `MemAvailable` of `/proc/meminfo`, kB.
fn mem_available_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let labs = env_u64("CLASS_BENCH_LABS", 30);
    let idle = env_u64("CLASS_BENCH_IDLE_SECS", 20);
    let settle = env_u64("CLASS_BENCH_SETTLE_SECS", 10);
    let exe = std::env::var("CLASS_BENCH_EXE")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fortilab").to_string());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("class");
    let ready = dir.path().join("class.ready.json");
    let available_before_kb = mem_available_kb();
    let t0 = Instant::now();
    let mut cmd = Command::new(&exe);
    cmd.args(["class", "up", "--labs", &labs.to_string(), "--data-dir"])
        .arg(&data);
    if let Ok(l) = std::env::var("CLASS_BENCH_LAB") {
        cmd.args(["--lab", &l]);
    }
    let mut child = cmd
        .arg("--ready-file")
        .arg(&ready)
        .env_remove("FORTILAB_LAB_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("class.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let report: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            if let Ok(v) = serde_json::from_str(&t) {
                break v;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "fortilab class exited ({st}):\n{}",
                std::fs::read_to_string(dir.path().join("class.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "class not ready within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let all_ready = t0.elapsed();
    let statuses: Vec<String> = report["status"]["labs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["status"].as_str().unwrap_or("").to_string())
        .collect();
    let n_ready = statuses.iter().filter(|s| *s == "ready").count();
    let ready_ms_reported = report["ready_ms"].as_u64();
    // Per-lab start times (the class measures each from its own start).
    let mut per_lab: Vec<u64> = report["status"]["labs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ready_in_ms"].as_u64())
        .collect();
    per_lab.sort_unstable();

    std::thread::sleep(Duration::from_secs(settle));
    let root = child.id();
    let before = procs();
    let members = tree(root, &before);
    let t_cpu = Instant::now();
    let cpu0: u64 = members
        .iter()
        .filter_map(|p| before.get(p))
        .map(|v| v.1)
        .sum();
    std::thread::sleep(Duration::from_secs(idle));
    let after = procs();
    let wall = t_cpu.elapsed().as_secs_f64();
    let cpu1: u64 = members
        .iter()
        .filter_map(|p| after.get(p))
        .map(|v| v.1)
        .sum();
    let ticks = 100.0; // USER_HZ on Linux
    let idle_cpu_pct = (cpu1.saturating_sub(cpu0)) as f64 / ticks / wall * 100.0;
    let members_now = tree(root, &after);
    let rss_kb: u64 = members_now
        .iter()
        .filter_map(|p| after.get(p))
        .map(|v| v.2)
        .sum();
    let class_rss_kb = after.get(&root).map(|v| v.2).unwrap_or(0);
    let pss_total_kb: u64 = members_now.iter().map(|p| pss_kb(*p)).sum();
    // What the machine lost to the class (every page once, page cache excluded); other
    // processes' allocations in the window count too, so a quiet machine is needed.
    let available_drop_kb = available_before_kb.saturating_sub(mem_available_kb());
    // CPU and RSS by program (argv[0]).
    let mut by_prog: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for p in &members_now {
        let name = std::fs::read(format!("/proc/{p}/cmdline"))
            .ok()
            .and_then(|c| {
                c.split(|b| *b == 0).next().map(|a| {
                    String::from_utf8_lossy(a)
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
            })
            .unwrap_or_default();
        let name = if *p == root {
            "class".to_string()
        } else {
            name
        };
        let e = by_prog.entry(name).or_default();
        e.0 += 1;
        if let (Some(a), Some(b)) = (before.get(p), after.get(p)) {
            e.1 += b.1.saturating_sub(a.1);
            e.2 += b.2;
        }
    }
    let by_prog: serde_json::Map<String, serde_json::Value> = by_prog
        .into_iter()
        .map(|(k, (n, t, r))| {
            (
                k,
                serde_json::json!({"processes": n,
                    "cpu_percent": ((t as f64 / ticks / wall * 100.0) * 10.0).round() / 10.0,
                    "rss_mib": (r as f64 / 1024.0).round()}),
            )
        })
        .collect();

    // Stop: SIGTERM, then every process of the tree must be gone.
    let t_stop = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(root.to_string())
        .status();
    let st = child.wait().unwrap();
    let stop_ms = t_stop.elapsed().as_millis();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left;
    loop {
        left = members_now
            .iter()
            .filter(|p| **p != root && Path::new(&format!("/proc/{p}")).exists())
            .filter(|p| {
                !std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .contains("State:\tZ")
            })
            .count();
        if left == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = serde_json::json!({
        "labs": labs,
        "labs_ready": n_ready,
        "all_ready_ms": all_ready.as_millis(),
        "all_ready_ms_reported_by_class": ready_ms_reported,
        "per_lab_ready_ms_min_median_max": [per_lab.first(), per_lab.get(per_lab.len() / 2), per_lab.last()],
        "processes": members_now.len(),
        "idle_cpu_percent_of_one_core": (idle_cpu_pct * 10.0).round() / 10.0,
        "idle_window_s": idle,
        "total_rss_mib": (rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "total_pss_mib": (pss_total_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "mem_available_drop_mib": (available_drop_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "class_process_rss_mib": (class_rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "by_program": by_prog,
        "stop_ms": stop_ms,
        "exit": st.code(),
        "processes_left": left,
    });
    println!("{out}");
}
