//! Sustained ingest: FortiOS lines → parse → IOC check (1M-indicator TIDB) → durable commit
//! (WAL, synchronous=FULL) in log-channel-sized batches, through `Faz::ingest` (the code path
//! the log channel's `store` calls). `FAZ_BENCH_N` lines (default 5,000,000),
//! `FAZ_BENCH_SENDERS` concurrent senders (default 2: two FortiGates / connections).

/// The allocator of the `sim-faz` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::Instant;

fn main() {
    let n = common::env_n("FAZ_BENCH_N", 5_000_000);
    let senders = common::env_n("FAZ_BENCH_SENDERS", 2).max(1);
    let batch = common::env_n("FAZ_BENCH_BATCH", 5000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let faz = common::faz(dir.path(), common::big_tidb(1_000_000));
    // A pool of distinct lines, cloned per batch (the receiver allocates each line too).
    let pool: Vec<String> = (0..200_000).map(common::line).collect();
    let rss_before = common::rss();
    let per = n / senders;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for k in 0..senders {
            let faz = faz.clone();
            let pool = &pool;
            scope.spawn(move || {
                let serial = format!("FGVM01TM0000000{k}");
                let mut seq = 1u64;
                let mut done = 0u64;
                while done < per {
                    let m = (batch as u64).min(per - done) as usize;
                    let lines: Vec<String> = (0..m)
                        .map(|j| pool[((done as usize + j) * 7 + k as usize) % pool.len()].clone())
                        .collect();
                    let last = faz.ingest(&serial, false, seq, lines).expect("ingest");
                    seq = last + 1;
                    done += m as u64;
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let total = per * senders;
    let stored = faz.store.total().expect("count");
    assert_eq!(stored, total, "every line stored once");
    let hosts = faz.ioc.engine().listed().len();
    let size = faz.store.size_bytes().unwrap_or(0);
    println!(
        "ingest: {total} lines, {senders} sender(s), batch {batch}: {secs:.2} s = {:.0} logs/s (durable, IOC on 1M indicators); {hosts} compromised hosts; db {:.0} MiB",
        total as f64 / secs,
        size as f64 / 1048576.0
    );
    println!(
        "ingest: memory before {rss_before}, after {}",
        common::rss()
    );
}
