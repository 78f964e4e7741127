//! IOC check per log on a TIDB of 1,000,000 indicators (hash sets).

/// The allocator of the `sim-faz` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::Instant;

use fortilab_faz::store::parse_row;

fn main() {
    let tidb = common::big_tidb(1_000_000);
    let rows: Vec<_> = (0..100_000u64)
        .map(|i| parse_row(&common::line(i), false, 0, 0).0)
        .collect();
    let mut hits = 0u64;
    // Warm up.
    for r in &rows {
        hits += tidb.check(&r.ioc_view()).is_some() as u64;
    }
    let rounds = common::env_n("FAZ_BENCH_ROUNDS", 30);
    let start = Instant::now();
    for _ in 0..rounds {
        for r in &rows {
            if tidb.check(std::hint::black_box(&r.ioc_view())).is_some() {
                hits += 1;
            }
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds as f64 * rows.len() as f64);
    println!(
        "ioc: {} indicators, {} checks: {per:.0} ns per log ({hits} hits)",
        tidb.len(),
        rounds * rows.len() as u64
    );
}
