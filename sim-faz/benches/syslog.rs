//! Syslog over TCP, one sender at full speed, `FAZ_BENCH_N` FortiOS lines (default 1,000,000)
//! over one connection (newline framing, `<189>` + the FortiOS body): the FortiAnalyzer twin
//! (syslog input → ingest → durable store, IOC on) against Debian's rsyslog (imtcp → omfile)
//! fed by the same sender in the same run. Prints stored lines/s of each, the lines lost (must
//! be 0) and the ratio FortiAnalyzer / rsyslog.
//!
//! `cargo xtask bench -p fortilab-faz --bench syslog` (needs `rsyslogd`, Debian package
//! `rsyslog`; `FORTILAB_RSYSLOGD` names another binary).

/// The allocator of the `sim-faz` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One pass of the sender: `n` lines from the pool over one TCP connection, as fast as the
/// receiver takes them. Returns when everything is written.
fn send_all(addr: SocketAddr, pool: &[Vec<u8>], n: u64) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut buf = Vec::with_capacity(512 * 1024);
    for i in 0..n {
        buf.extend_from_slice(&pool[(i as usize) % pool.len()]);
        if buf.len() >= 256 * 1024 {
            s.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    s.write_all(&buf).expect("write");
    s.flush().expect("flush");
}

fn rsyslogd() -> PathBuf {
    if let Ok(p) = std::env::var("FORTILAB_RSYSLOGD") {
        return p.into();
    }
    for d in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(d).join("rsyslogd");
        if p.is_file() {
            return p;
        }
    }
    panic!("rsyslogd not found: install the Debian package rsyslog (or set FORTILAB_RSYSLOGD)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// rsyslog imtcp → omfile: seconds until the file holds every line, and the lines it holds.
fn run_rsyslog(dir: &Path, pool: &[Vec<u8>], n: u64) -> (f64, u64) {
    let port = free_port();
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let out = dir.join("rsyslog.out");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\" maxMessageSize=\"64k\")\nmodule(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n*.* action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
            work.display(),
            out.display()
        ),
    )
    .unwrap();
    let _child = Child(
        std::process::Command::new(rsyslogd())
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start rsyslogd"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rsyslog not listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every line is written as it was sent (the pool's lines end with LF).
    let want: u64 = (0..n)
        .map(|i| pool[(i as usize) % pool.len()].len() as u64)
        .sum();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| send_all(addr, pool, n));
    });
    let mut last = (0u64, Instant::now());
    loop {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if size >= want {
            break;
        }
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break; // stalled: report what arrived
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = start.elapsed().as_secs_f64();
    let lines = std::fs::read(&out)
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0);
    (secs, lines)
}

/// What the FortiAnalyzer twin's run measured.
struct FazRun {
    /// Seconds until every line was stored (appended to the raw log file), and the lines.
    raw_secs: f64,
    raw_lines: u64,
    /// Seconds until every line was in the SQL store (indexed), and the lines.
    indexed_secs: f64,
    indexed_lines: u64,
    /// The insert lag when the last line was stored: seconds and lines.
    lag_at_stored: (f64, u64),
    dropped: u64,
}

/// Waits until `count()` reaches `n` or stops moving for 10 s; returns when.
fn wait_count(n: u64, count: impl Fn() -> u64) -> Instant {
    let mut last = (0u64, Instant::now());
    loop {
        let now = count();
        if now >= n {
            return Instant::now();
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The FortiAnalyzer twin's syslog input: until every line is stored (raw log file), then
/// until every line is indexed (SQL store).
fn run_faz(dir: &Path, pool: &[Vec<u8>], n: u64) -> FazRun {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let faz = common::faz(dir, fortilab_faz::ioc::Tidb::default_lab());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut opts = fortilab_faz::syslog::SyslogOptions::new(Duration::from_secs(20));
    opts.sync_window = Duration::from_millis(common::env_n(
        "FAZ_BENCH_SYNC_WINDOW_MS",
        opts.sync_window.as_millis() as u64,
    ));
    let addr = rt.block_on(async {
        let (udp, tcp) = fortilab_faz::bind_syslog("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = tcp.local_addr().unwrap();
        fortilab_faz::syslog::start_with(faz.clone(), udp, tcp, opts, stop.clone());
        addr
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| send_all(addr, pool, n));
    });
    // Stored = appended to the device's raw log file (fsynced within the sync window, as
    // rsyslog's omfile writes); indexed = committed into the SQL store.
    let r = &faz.rawlog;
    let stored_at = wait_count(n, || r.lines.load(Ordering::Relaxed));
    let raw_lines = r.lines.load(Ordering::Relaxed);
    let lag_at_stored = (
        r.lag().as_secs_f64(),
        raw_lines.saturating_sub(r.indexed_lines.load(Ordering::Relaxed)),
    );
    let indexed_at = wait_count(n, || r.indexed_lines.load(Ordering::Relaxed));
    let dropped = faz.counters.syslog_dropped.load(Ordering::Relaxed);
    let c = &faz.store.counters;
    println!(
        "fortilab FAZ store: {} commits, {} batches, {} rows",
        c.commits.load(Ordering::Relaxed),
        c.batches.load(Ordering::Relaxed),
        c.inserted.load(Ordering::Relaxed)
    );
    let run = FazRun {
        raw_secs: (stored_at - start).as_secs_f64(),
        raw_lines,
        indexed_secs: (indexed_at - start).as_secs_f64(),
        indexed_lines: r.indexed_lines.load(Ordering::Relaxed),
        lag_at_stored,
        dropped,
    };
    stop.cancel();
    drop(rt);
    run
}

fn main() {
    let n = common::env_n("FAZ_BENCH_N", 1_000_000);
    let pool: Vec<Vec<u8>> = (0..20_000u64)
        .map(|i| format!("<189>{}\n", common::line(i)).into_bytes())
        .collect();
    let avg = pool.iter().map(|l| l.len()).sum::<usize>() / pool.len();
    let dir = tempfile::tempdir().expect("tempdir");
    let (rs_secs, rs_lines) = run_rsyslog(dir.path(), &pool, n);
    let rs_rate = rs_lines as f64 / rs_secs;
    println!(
        "rsyslog imtcp -> omfile: {rs_lines} of {n} lines ({avg} B avg) in {rs_secs:.2} s = {rs_rate:.0} lines/s"
    );
    let fdir = dir.path().join("faz");
    std::fs::create_dir_all(&fdir).unwrap();
    let f = run_faz(&fdir, &pool, n);
    let f_rate = f.raw_lines as f64 / f.raw_secs;
    println!(
        "fortilab FAZ syslog tcp -> raw log file: {} of {n} lines in {:.2} s = {f_rate:.0} lines/s; lost {} (dropped {})",
        f.raw_lines,
        f.raw_secs,
        n - f.raw_lines.min(n),
        f.dropped
    );
    println!(
        "fortilab FAZ raw log -> SQL store (indexed): {} of {n} lines in {:.2} s = {:.0} lines/s; insert lag when the last line was stored: {:.2} s, {} lines",
        f.indexed_lines,
        f.indexed_secs,
        f.indexed_lines as f64 / f.indexed_secs,
        f.lag_at_stored.0,
        f.lag_at_stored.1
    );
    println!("ratio FAZ stored / rsyslog = {:.2}", f_rate / rs_rate);
    assert_eq!(f.raw_lines, n, "every line stored");
    assert_eq!(f.indexed_lines, n, "every line indexed");
}
