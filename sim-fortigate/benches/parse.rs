//! Parse + validate a generated 10,000-policy configuration (target < 1 s).
//!
//! `cargo bench -p fortilab-fortigate --bench parse`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use fortilab_fortigate::config::{factory, parse_config, FosVersion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn generate(policies: usize, addresses: usize) -> String {
    let mut s = String::with_capacity(policies * 400);
    s.push_str(&FosVersion::V6_4_4.config_header("admin"));
    s.push_str("\nconfig firewall address\n");
    for i in 0..addresses {
        s.push_str(&format!(
            "    edit \"host-{i}\"\n        set subnet 10.{}.{}.{} 255.255.255.255\n        set comment \"generated\"\n    next\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s.push_str("end\nconfig firewall policy\n");
    for i in 0..policies {
        s.push_str(&format!(
            "    edit {}\n        set name \"pol-{i}\"\n        set srcintf \"port3\"\n        set dstintf \"virtual-wan-link\"\n        set srcaddr \"host-{}\" \"host-{}\"\n        set dstaddr \"all\"\n        set action accept\n        set schedule \"always\"\n        set service \"HTTP\" \"HTTPS\" \"DNS\"\n        set utm-status enable\n        set ssl-ssh-profile \"certificate-inspection\"\n        set webfilter-profile \"monitor-all\"\n        set logtraffic all\n        set nat enable\n    next\n",
            i + 1,
            i % addresses,
            (i * 7) % addresses
        ));
    }
    s.push_str("end\n");
    s
}

fn main() {
    let v = FosVersion::V6_4_4;
    let text = generate(10_000, 2_000);
    let base = factory(v, "FGVM01TM00000001", &mut ChaCha8Rng::seed_from_u64(1));
    println!(
        "config: {} lines, {} bytes",
        text.lines().count(),
        text.len()
    );
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let (cfg, applied) = parse_config(
            &base,
            &text,
            "bench.conf",
            v,
            false,
            &mut ChaCha8Rng::seed_from_u64(2),
        )
        .expect("parses");
        times.push(t.elapsed());
        assert_eq!(cfg.table("firewall policy").unwrap().len(), 10_000);
        assert!(applied.warnings.is_empty());
    }
    times.sort();
    println!(
        "parse+validate 10,000 policies (+2,000 addresses): min {:?}  median {:?}  max {:?}  (target < 1 s)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let (cfg, _) = parse_config(
        &base,
        &text,
        "bench.conf",
        v,
        false,
        &mut ChaCha8Rng::seed_from_u64(2),
    )
    .unwrap();
    let t = Instant::now();
    let shown = fortilab_fortigate::config::show::show(&cfg, v, false, None);
    println!(
        "show (serialize) of the same configuration: {:?} ({} bytes)",
        t.elapsed(),
        shown.len()
    );
}
