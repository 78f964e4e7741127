//! The console's CLI engine: the seed article's policy + stitch typed line by line (every line
//! validated by replaying its block, commits on `next`/`end`), on the factory configuration
//! and on one holding 10,000 policies; `?` candidates for `set ` in a policy.
//!
//! `cargo bench -p fortilab-fortigate --bench console`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_fortigate::config::lexer;
use fortilab_fortigate::config::{factory, parse_config, ConfigStore, FosVersion, Origin};
use fortilab_fortigate::console::cli::{CliSession, Dispatch};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: &[&str] = &[
    "config firewall policy",
    "edit 0",
    "set srcintf \"port3\"",
    "set dstintf \"virtual-wan-link\"",
    "set srcaddr \"all\"",
    "set dstaddr \"all\"",
    "set action accept",
    "set schedule \"always\"",
    "set service \"ALL\"",
    "set utm-status enable",
    "set ssl-ssh-profile \"certificate-inspection\"",
    "set webfilter-profile \"monitor-all\"",
    "set logtraffic all",
    "set nat enable",
    "next",
    "end",
    "config system automation-stitch",
    "edit \"Compromised Host Quarantine\"",
    "set trigger \"Compromised Host Quarantine\"",
    "set action \"Compromised Host Quarantine_quarantine-forticlient\"",
    "next",
    "end",
];

fn store(policies: usize) -> Arc<ConfigStore> {
    let v = FosVersion::V6_4_4;
    let base = factory(v, "FGT-LAB", &mut ChaCha8Rng::seed_from_u64(1));
    let mut text = String::from("config firewall policy\n");
    for i in 0..policies {
        text.push_str(&format!(
            "edit {}\nset srcintf \"port3\"\nset dstintf \"virtual-wan-link\"\nset srcaddr \"all\"\nset dstaddr \"all\"\nset action accept\nset schedule \"always\"\nset service \"HTTP\"\nnext\n",
            i + 1
        ));
    }
    text.push_str("end\n");
    let (cfg, _) = parse_config(
        &base,
        &text,
        "b",
        v,
        false,
        &mut ChaCha8Rng::seed_from_u64(2),
    )
    .expect("parses");
    Arc::new(ConfigStore::new(cfg, v, 1, "FGVM01TM00000001"))
}

fn run_seed(store: &Arc<ConfigStore>) {
    let mut c = CliSession::new(
        store.clone(),
        Origin {
            user: "admin".into(),
            ui: "ssh(127.0.0.1)".into(),
        },
    );
    for l in SEED {
        let cmd = &lexer::lex(l).unwrap().commands[0];
        match c.dispatch(cmd) {
            Dispatch::Done(o) => assert!(!o.failed, "{l}: {}", o.text),
            Dispatch::Operational(_) => unreachable!(),
        }
    }
}

fn report(name: &str, lines: usize, mut times: Vec<Duration>) {
    times.sort();
    let med = times[times.len() / 2];
    println!(
        "{name}: median {:.2} ms per run of {lines} lines ({:.1} µs/line), min {:.2} ms, max {:.2} ms",
        med.as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e6 / lines as f64,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

fn main() {
    for policies in [0usize, 10_000] {
        let s = store(policies);
        let mut times = Vec::new();
        let runs = if policies == 0 { 200 } else { 15 };
        for _ in 0..runs {
            let t = Instant::now();
            run_seed(&s);
            times.push(t.elapsed());
        }
        report(
            &format!("seed snippets typed, {policies} policies"),
            SEED.len(),
            times,
        );
    }
    let s = store(0);
    let mut c = CliSession::new(s, Origin::system());
    for l in ["config firewall policy", "edit 0"] {
        c.dispatch(&lexer::lex(l).unwrap().commands[0]);
    }
    let words = vec!["set".to_string()];
    let mut times = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let n = c.candidates(&words).len();
        times.push(t.elapsed());
        assert!(n > 10);
    }
    report("`set ?` candidates in a policy", 1, times);
}
