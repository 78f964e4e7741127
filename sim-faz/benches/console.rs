//! The FortiAnalyzer console engine: lines per second for read commands, `?` help, TAB, the
//! TIDB lookup, and a committed (durably persisted) `config system global` change.

/// The allocator of the `sim-faz` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::Instant;

use fortilab_faz::console::engine::Cli;
use fortilab_faz::ioc::Tidb;

fn time(label: &str, n: u64, mut f: impl FnMut(u64)) {
    for i in 0..n.min(50) {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let el = start.elapsed();
    println!(
        "console: {label:<44} {:>9.1} µs per line ({n} lines, {:.0} lines/s)",
        el.as_secs_f64() * 1e6 / n as f64,
        n as f64 / el.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faz = common::faz(dir.path(), Tidb::default_lab());
    for i in 0..50 {
        faz.device_hello(
            &format!("FGVM01TM190{i:05}"),
            &format!("FGT-{i}"),
            "FortiGate-VM64",
            "6.4.4",
            "fortigate",
            "root",
            &format!("10.115.1.{}", i + 1),
        );
    }
    let mut cli = Cli::new(faz.clone(), "admin", "ssh(127.0.0.1)");
    let n = common::env_n("FAZ_BENCH_CONSOLE_LINES", 20_000);
    time("get system status", n, |_| {
        std::hint::black_box(cli.execute("get system status"));
    });
    time("diagnose ... sqllogd 204 tidb type=2 (hit)", n, |_| {
        std::hint::black_box(
            cli.execute("diagnose test application sqllogd 204 tidb type=2, key=www.eicar.org"),
        );
    });
    time("diagnose dvm device list (50 devices)", n / 10, |_| {
        std::hint::black_box(cli.execute("diagnose dvm device list"));
    });
    time("? after 'config system '", n, |_| {
        std::hint::black_box(cli.help("config system "));
    });
    time("TAB after 'diag test app sqll'", n, |_| {
        std::hint::black_box(cli.complete("diag test app sqll"));
    });
    let commits = common::env_n("FAZ_BENCH_CONSOLE_COMMITS", 200);
    time("config system global/set jsonapi-log/end", commits, |i| {
        cli.execute("config system global");
        cli.execute(if i % 2 == 0 {
            "set jsonapi-log all"
        } else {
            "set jsonapi-log disable"
        });
        cli.execute("end");
    });
}
