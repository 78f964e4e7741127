//! Indexed log search: first page of `srcip==...` (and a CIDR and a hostname filter) over
//! `FAZ_BENCH_N` stored logs (default 5,000,000), through the JSON-RPC two-step logsearch.

/// The allocator of the `sim-faz` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::Instant;

use fortilab_faz::jsonrpc::{self, ApiState, Caller};
use serde_json::json;

fn main() {
    let n = common::env_n("FAZ_BENCH_N", 5_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let faz = common::faz(dir.path(), fortilab_faz::ioc::Tidb::default_lab());
    let mut seq = 1;
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < n {
        let m = 5000.min(n - i);
        let lines: Vec<String> = (i..i + m).map(common::line).collect();
        seq = faz
            .ingest("FGVM01TM00000001", false, seq, lines)
            .expect("ingest")
            + 1;
        i += m;
    }
    println!(
        "search: loaded {n} logs in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    faz.store.optimize();
    let api = ApiState::default();
    let caller = Caller {
        token: Some("key".into()),
        peer: String::new(),
    };
    for (logtype, filter) in [
        ("traffic", "srcip==10.115.3.77"),
        ("webfilter", "srcip==10.115.2.52"),
        ("webfilter", "srcip=10.115.4.0/28 and action=passthrough"),
        ("webfilter", "hostname=\"www.eicar.org\""),
        ("traffic", "dstip==89.1.7.8 dstport=443"),
    ] {
        let start = Instant::now();
        let r = jsonrpc::handle(&faz, &api, json!({"jsonrpc":"2.0","id":1,"method":"add","params":[{"apiver":3,"url":"/logview/adom/root/logsearch","logtype":logtype,"filter":filter,"time-order":"desc"}]}).to_string().as_bytes(), &caller);
        let tid = r["result"]["tid"].as_u64().expect("tid");
        let r = jsonrpc::handle(&faz, &api, json!({"jsonrpc":"2.0","id":2,"method":"get","params":[{"apiver":3,"url":format!("/logview/adom/root/logsearch/{tid}"),"limit":50,"offset":0}]}).to_string().as_bytes(), &caller);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!(
            "search: {logtype} \"{filter}\": first page ({} rows, total-count {}) in {ms:.1} ms",
            r["result"]["return-lines"], r["result"]["total-count"]
        );
    }
    println!("search: memory after the searches: {}", common::rss());
}
