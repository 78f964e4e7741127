//! Policy lookups/s over a 10,000-policy table: compiled index vs the naive top-down scan.
//! `cargo bench -p fortilab-fortigate --bench policy_lookup`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::Ipv4Addr;
use std::time::Instant;

use fortilab_fortigate::dataplane::policy::{
    lookup_naive, normalize, CPolicy, Compiled, IntfMatch, Query, Schedule, SvcRange,
};

fn policy(i: u32) -> CPolicy {
    // Sources: a /32 or a /24 in 10.0.0.0/8; destinations: /16s; services: one port or range.
    let src = if i % 3 == 0 {
        let a = 0x0a00_0000 + i * 7;
        (a, a)
    } else {
        let a = 0x0a00_0000 + (i << 8);
        (a, a | 0xff)
    };
    let dst_base = 0x5900_0000u32 + ((i % 500) << 16);
    CPolicy {
        policyid: i as u64 + 1,
        name: String::new(),
        uuid: String::new(),
        enabled: i % 17 != 0,
        srcintf: IntfMatch::Names(vec![if i % 5 == 0 { "port2" } else { "port3" }.into()]),
        dstintf: IntfMatch::Names(vec!["virtual-wan-link".into()]),
        src: normalize(vec![src]),
        src_negate: false,
        dst: normalize(vec![(dst_base, dst_base | 0xffff)]),
        dst_negate: i % 97 == 0,
        svc: vec![SvcRange {
            proto: 6,
            lo: (i % 1000) as u16 + 1,
            hi: (i % 1000) as u16 + 1 + (i % 7) as u16,
        }],
        svc_negate: false,
        schedule_name: "always".into(),
        schedule: Some(Schedule::ALWAYS),
        action: "accept".into(),
        utm: false,
        ssl_ssh_profile: String::new(),
        webfilter_profile: String::new(),
        logtraffic: "all".into(),
        nat: true,
    }
}

fn main() {
    let n = 10_000u32;
    let t0 = Instant::now();
    let policies: Vec<CPolicy> = (0..n).map(policy).collect();
    let compiled = Compiled::new(policies.clone());
    println!("compile 10,000 policies: {:?}", t0.elapsed());
    // Queries: half hit policies spread over the table (many near the end), half miss.
    let mut queries = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..4096u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % n as u64) as u32;
        let p = &policies[i as usize];
        let (src, dst, port) = if k % 2 == 0 {
            (p.src[0].0, p.dst[0].0 + 5, p.svc[0].lo)
        } else {
            (0x0b00_0000 + k, 0x0800_0000 + k, 443)
        };
        queries.push(Query {
            srcintf: vec!["port3".into()],
            dstintf: vec!["virtual-wan-link".into()],
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            proto: 6,
            dport: port,
            local_secs: 1_600_000_000,
        });
    }
    for q in queries.iter().take(512) {
        assert_eq!(compiled.lookup(q), lookup_naive(&policies, q));
    }
    let iters = 2_000_000usize;
    let t = Instant::now();
    let mut hits = 0usize;
    for i in 0..iters {
        if compiled.lookup(&queries[i % queries.len()]).is_some() {
            hits += 1;
        }
    }
    let el = t.elapsed();
    println!(
        "compiled: {iters} lookups in {el:?} = {:.0} lookups/s ({hits} matched)",
        iters as f64 / el.as_secs_f64()
    );
    let iters = 20_000usize;
    let t = Instant::now();
    let mut hits = 0usize;
    for i in 0..iters {
        if lookup_naive(&policies, &queries[i % queries.len()]).is_some() {
            hits += 1;
        }
    }
    let el = t.elapsed();
    println!(
        "naive:    {iters} lookups in {el:?} = {:.0} lookups/s ({hits} matched)",
        iters as f64 / el.as_secs_f64()
    );
}
