//! Process start to ready (ready file written: CA and certificate generated, configuration
//! loaded, API listening). Target < 150 ms.
//!
//! `cargo bench -p fortilab-fortigate --bench startup` — builds the `sim-fortigate` binary
//! (release) into the same target directory first if it is missing; `FGT_BIN=<path>` measures
//! another build.

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    // <target>/release/deps/startup-<hash>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn binary() -> Option<PathBuf> {
    // FGT_BIN=<path> measures a given build (e.g. the debug binary the tests use).
    if let Some(p) = std::env::var_os("FGT_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = target_dir();
    let bin = target.join("release").join("sim-fortigate");
    if bin.exists() {
        return Some(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    eprintln!("building sim-fortigate (release) into {}", target.display());
    let ok = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "fortilab",
            "--bin",
            "sim-fortigate",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (ok && bin.exists()).then_some(bin)
}

fn once(bin: &Path, args: &[&str]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let data = dir.path().join("data");
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let elapsed = loop {
        if std::fs::metadata(&ready).is_ok() {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("not ready within 20 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    elapsed
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{what}: min {:?}  median {:?}  p90 {:?}  max {:?}  (n={}, target < 150 ms)",
        v[0],
        v[v.len() / 2],
        v[v.len() * 9 / 10],
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let Some(bin) = binary() else {
        eprintln!("sim-fortigate binary not available; skipping");
        return;
    };
    let seed_cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        seed_cfg.path(),
        "config firewall address\n edit \"10.115.2.52/32\"\n set subnet 10.115.2.52 255.255.255.255\n next\nend\n",
    )
    .unwrap();
    let _ = once(&bin, &[]); // warm the page cache
    report(
        "start to ready (first boot: new CA + certificate + factory config)",
        (0..20).map(|_| once(&bin, &[])).collect(),
    );
    let cfg = seed_cfg.path().to_str().unwrap().to_string();
    report(
        "start to ready with --config (seed address)",
        (0..20)
            .map(|_| once(&bin, &["--config", &cfg, "--name", "FGT-LAB"]))
            .collect(),
    );
}
