//! Memory of a long-running `fortilab up` (issue 15 item 4): starts the lab (release build),
//! drives the FortiGate's explicit proxy with many concurrent keep-alive clients (as PC-52,
//! through a PROXY v2 header) to a lab Internet site, and samples `VmRSS` of the orchestrator
//! and of FortiAnalyzer from `/proc/<pid>/status` as the requests go by. Prints one line per
//! sample and a summary.
//!
//! Run: `cargo bench --bench up_memory`. `UP_BENCH_REQUESTS` (default 1,000,000),
//! `UP_BENCH_CLIENTS` (default 64), `UP_BENCH_SECS` (stop after this many seconds even if not
//! all requests were sent; default 1800), `UP_BENCH_SAMPLE` (requests between samples; default
//! 50,000).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::proxy::{encode_v2, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(d)
}

fn wait_ready(path: &Path, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                if v.get("dashboard").is_some_and(|d| !d.is_null()) {
                    return v;
                }
            }
        }
        assert!(Instant::now() < deadline, "lab not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `VmRSS` of a process in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The pid of the child of `parent` whose command line names `exe`.
fn child_pid(parent: u32, exe: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised command) is the parent pid.
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != parent {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(exe) {
            return Some(pid);
        }
    }
    None
}

async fn client(
    proxy: SocketAddr,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    total: u64,
    stop: Instant,
) {
    let req = b"GET http://news.sky.com/ HTTP/1.1\r\nHost: news.sky.com\r\nUser-Agent: up-memory-bench\r\n\r\n";
    'conn: loop {
        let Ok(mut s) = TcpStream::connect(proxy).await else {
            errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let local = s.local_addr().unwrap();
        let hdr = ProxyHeader {
            src: SocketAddr::new("10.115.2.52".parse().unwrap(), local.port()),
            dst: "10.115.2.1:8080".parse().unwrap(),
        };
        if s.write_all(&encode_v2(&hdr)).await.is_err() {
            continue;
        }
        let mut buf = Vec::with_capacity(8192);
        let mut tmp = [0u8; 8192];
        loop {
            if done.load(Ordering::Relaxed) >= total || Instant::now() > stop {
                return;
            }
            if s.write_all(req).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
                continue 'conn;
            }
            loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= p + 4 + len {
                        if !head.starts_with("http/1.1 200") {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        buf.drain(..p + 4 + len);
                        break;
                    }
                }
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue 'conn;
                    }
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let total = env_u64("UP_BENCH_REQUESTS", 1_000_000);
    let clients = env_u64("UP_BENCH_CLIENTS", 64);
    let secs = env_u64("UP_BENCH_SECS", 1800);
    let every = env_u64("UP_BENCH_SAMPLE", 50_000).max(1);
    let exe = env!("CARGO_BIN_EXE_fortilab");
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut child = Command::new(exe)
        .args(["up", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let report = wait_ready(&ready, Duration::from_secs(60));
    let up_pid = child.id();
    let faz_pid = child_pid(up_pid, "sim-faz").expect("FortiAnalyzer process");
    let proxy: SocketAddr = report["fortigate"]["proxy"]
        .as_str()
        .and_then(|s| s.rsplit("://").next())
        .and_then(|s| s.parse().ok())
        .expect("proxy address");
    println!(
        "fortilab up pid {up_pid}, FortiAnalyzer pid {faz_pid}; {total} requests through {proxy} with {clients} keep-alive clients (time limit {secs} s)"
    );
    let (up0, faz0) = (
        rss_mib(up_pid).unwrap_or(0.0),
        rss_mib(faz_pid).unwrap_or(0.0),
    );
    println!("requests        elapsed    req/s   orchestrator RSS   FortiAnalyzer RSS");
    println!(
        "{:>9} {:>9.1}s {:>8} {:>15.1} MiB {:>15.1} MiB",
        0, 0.0, "-", up0, faz0
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs(secs);
    let mut max_up = up0;
    let mut max_faz = faz0;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            tasks.push(tokio::spawn(client(
                proxy,
                done.clone(),
                errors.clone(),
                total,
                stop,
            )));
        }
        let mut next = every;
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = done.load(Ordering::Relaxed);
            let finished = n >= total || Instant::now() > stop;
            if n >= next || finished {
                let (u, f) = (
                    rss_mib(up_pid).unwrap_or(0.0),
                    rss_mib(faz_pid).unwrap_or(0.0),
                );
                max_up = max_up.max(u);
                max_faz = max_faz.max(f);
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                println!(
                    "{n:>9} {:>9.1}s {rate:>8.0} {u:>15.1} MiB {f:>15.1} MiB",
                    t0.elapsed().as_secs_f64()
                );
                while next <= n {
                    next += every;
                }
            }
            if finished {
                break;
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let n = done.load(Ordering::Relaxed);
    // Let the FortiAnalyzer finish storing, then a last sample.
    std::thread::sleep(Duration::from_secs(5));
    let (u, f) = (
        rss_mib(up_pid).unwrap_or(0.0),
        rss_mib(faz_pid).unwrap_or(0.0),
    );
    let up_log = std::fs::metadata(dir.path().join("up.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    let journal: u64 = std::fs::read_dir(dir.path().join("data/timeline"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "done: {n} requests in {:.1} s ({:.0}/s), {} errors; RSS after 5 s idle: orchestrator {u:.1} MiB (peak {max_up:.1}), FortiAnalyzer {f:.1} MiB (peak {max_faz:.1}); up.log {} KiB ({:.2} bytes a request), timeline files {} MiB",
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
        up_log / 1024,
        up_log as f64 / n.max(1) as f64,
        journal >> 20
    );
    // SIGTERM by closing stdin? `up` stops on SIGINT/SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &up_pid.to_string()])
        .status();
    let _ = child.wait();
}
