//! Automation engine benchmarks (in process, plain timing):
//! - IOC notification → stitch run finished (ban-ip + alert), per notification, new host each;
//! - event-log trigger matching per log (20 event-log triggers with wildcard fields);
//! - the whole log path: logs written while event-log stitches are configured;
//! - a burst of 10,000 compromised hosts through the bounded notification queue (the
//!   forwarder's path): all evaluated, p50/p99 from queued to stitch run finished.
//!
//! `cargo bench -p fortilab-fortigate --bench automation`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[path = "support/stitch.rs"]
mod stitch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::labnet::LabMap;
use fortilab_core::logfmt::LogRecord;
use fortilab_fortigate::automation::{self, model, StartOptions};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::device::Device;
use fortilab_fortigate::{load_config, serial_for, ConfigSource, DeviceEnv, FortiGateConfig};
use serde_json::json;
use stitch::{pct, IOC_STITCH_CLI};

fn device(cli: &str) -> Arc<Device> {
    let version = FosVersion::parse("6.4.4").unwrap();
    let opts = FortiGateConfig {
        config: Some(ConfigSource {
            name: "bench.conf".into(),
            text: cli.into(),
        }),
        strict: true,
        name: Some("FGT-LAB".into()),
        ..FortiGateConfig::new(version)
    };
    let env = DeviceEnv::for_tests(1, None).unwrap();
    let serial = serial_for(1);
    let (store, _) =
        load_config(&opts, &env, &serial, "tok3nTOKEN0123456789abcdefghij", "pw").unwrap();
    Arc::new(Device::new(
        serial,
        version,
        1,
        env.clock,
        store,
        LabMap::default(),
        None,
        None,
    ))
}

fn event_log_cli(n: usize) -> String {
    let mut s = String::from("config system automation-trigger\n");
    for i in 0..n {
        s.push_str(&format!(
            "edit \"t{i}\"\nset event-type event-log\nset logid {}\nconfig fields\nedit 1\nset name \"user\"\nset value \"adm*[0-9]\"\nnext\nedit 2\nset name \"srcip\"\nset value \"10.115.*\"\nnext\nend\nnext\n",
            32000 + i
        ));
    }
    s.push_str("end\nconfig system automation-action\nedit \"say\"\nset action-type alert\nnext\nend\nconfig system automation-stitch\n");
    for i in 0..n {
        s.push_str(&format!(
            "edit \"s{i}\"\nset trigger \"t{i}\"\nset action \"say\"\nnext\n"
        ));
    }
    s.push_str("end\n");
    s
}

/// An IOC notification for host `ip` (FortiAnalyzer's wire form).
fn notice(id: u64, ip: &str) -> fortilab_core::logchan::Notification {
    serde_json::from_value(json!({"id": id, "type": "ioc", "verdict": "Infected",
        "ioc_level": "high", "srcip": ip, "threat": "www.eicar.org", "epid": id}))
    .unwrap()
}

/// 4. A burst of `n` compromised hosts handed to the engine's bounded queue as fast as it
///    takes them (what the forwarder does with a FortiAnalyzer burst): every one evaluated,
///    latency from queued to its stitch run finished.
fn burst(rt: &tokio::runtime::Runtime, n: usize) {
    let dev = device(IOC_STITCH_CLI);
    let stop = tokio_util::sync::CancellationToken::new();
    let (ntx, nrx) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
    let engine = {
        let _g = rt.enter();
        automation::start(dev.clone(), StartOptions::default(), nrx, stop.clone())
    };
    let (_, _, mut done_rx) = dev.events.subscribe_since(dev.events.last_seq());
    // Completions are collected on their own thread, as they happen.
    let collector = std::thread::spawn(move || {
        let mut done: Vec<(u64, Instant)> = Vec::with_capacity(n);
        let mut lagged = 0u64;
        while done.len() + (lagged as usize) < n {
            match done_rx.blocking_recv() {
                Ok(e) if e.kind == "stitch.done" => {
                    done.push((e.data["run"].as_u64().unwrap(), Instant::now()));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => lagged += k,
                Err(_) => break,
            }
        }
        (done, lagged)
    });
    let wall = Instant::now();
    let mut queued = Vec::with_capacity(n);
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", 150 + i / 65536, (i / 256) % 256, i % 256);
        // Waits while the queue is full (back-pressure), never drops.
        ntx.blocking_send(notice(i as u64, &ip)).unwrap();
        queued.push(Instant::now());
    }
    while engine.ioc_evaluated() < n as u64 || dev.banned.list().len() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = wall.elapsed();
    let (done, lagged) = collector.join().unwrap();
    // One run per notification, numbered in queue order.
    let first = done.iter().map(|d| d.0).min().unwrap_or(1);
    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(run, at)| {
            queued
                .get((run - first) as usize)
                .map(|q| at.saturating_duration_since(*q))
        })
        .collect();
    println!(
        "burst of {n} compromised hosts -> {} evaluated, {} banned in {:?} ({:.0}/s); queued -> stitch run finished: p50={:?} p99={:?} max={:?} ({} runs timed, {lagged} events lagged)",
        engine.ioc_evaluated(),
        dev.banned.list().len(),
        total,
        n as f64 / total.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        lat.len()
    );
    assert_eq!(
        engine.ioc_evaluated(),
        n as u64,
        "every notification evaluated"
    );
    stop.cancel();
}

fn main() {
    if std::env::var("FGT_BENCH_ONLY").as_deref() == Ok("burst") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        burst(&rt, 10_000);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. IOC notification → run finished.
    let dev = device(IOC_STITCH_CLI);
    let stop = tokio_util::sync::CancellationToken::new();
    let (ntx, nrx) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
    let engine = {
        let _g = rt.enter();
        automation::start(dev.clone(), StartOptions::default(), nrx, stop.clone())
    };
    let n = 2000;
    let mut lat = Vec::with_capacity(n);
    // Wait for each run's `stitch.done` lab event (emitted when its last action has finished)
    // rather than polling `engine.runs()`: a polling thread would compete with the two
    // workers for the two cores and set the tail itself.
    let (_, _, mut done_rx) = dev.events.subscribe_since(dev.events.last_seq());
    let wall = Instant::now();
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        let t = Instant::now();
        ntx.blocking_send(notice(i as u64, &ip)).unwrap();
        let run = rt.block_on(async {
            loop {
                let e = done_rx.recv().await.expect("event bus open");
                if e.kind == "stitch.done" {
                    break e.data["run"].as_u64().expect("run number");
                }
            }
        });
        lat.push(t.elapsed());
        let rec = engine.runs().into_iter().find(|r| r.run == run).unwrap();
        assert_eq!(
            rec.srcip.as_deref(),
            Some(ip.as_str()),
            "the run of this notification"
        );
    }
    let total = wall.elapsed();
    println!(
        "ioc notification -> stitch run finished (ban-ip + alert): n={n} p50={:?} p99={:?} max={:?} ({:.0}/s sequential)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        n as f64 / total.as_secs_f64()
    );
    assert_eq!(dev.banned.list().len(), n);
    stop.cancel();

    // 2. event-log matching per log.
    let triggers = 20;
    let dev2 = device(&event_log_cli(triggers));
    let m = dev2
        .config
        .with(|c| model::Model::from_config(c, dev2.version));
    let hit = LogRecord::parse("date=2021-03-04 time=10:11:22 logid=\"0100032010\" type=\"event\" subtype=\"system\" level=\"alert\" vd=\"root\" user=\"admin7\" srcip=10.115.2.52").unwrap();
    let miss = LogRecord::parse("date=2021-03-04 time=10:11:22 logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip=10.115.2.52 dstip=89.1.1.1").unwrap();
    for (name, rec, want) in [
        ("matching log", &hit, 1usize),
        ("non-matching log", &miss, 0),
    ] {
        let iters = 200_000;
        let t = Instant::now();
        let mut found = 0;
        for _ in 0..iters {
            found += m.matching(&model::Event::Log(rec)).len();
        }
        let el = t.elapsed();
        assert_eq!(found, want * iters);
        println!(
            "event-log matching, {triggers} triggers, {name}: {:.0} ns/log",
            el.as_nanos() as f64 / iters as f64
        );
    }
    let iters = 1_000_000;
    let t = Instant::now();
    let mut k = 0;
    for i in 0..iters {
        if model::wildcard_match("adm*[0-9]", if i % 2 == 0 { "admin7" } else { "guest" }) {
            k += 1;
        }
    }
    assert_eq!(k, iters / 2);
    println!(
        "wildcard match: {:.0} ns/op",
        t.elapsed().as_nanos() as f64 / iters as f64
    );

    // 3. The log path with the engine running: 100k traffic logs while 20 event-log stitches
    //    are configured (none match), then one that matches.
    let stop = tokio_util::sync::CancellationToken::new();
    let (_ntx2, nrx2) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
    let engine2 = {
        let _g = rt.enter();
        automation::start(dev2.clone(), StartOptions::default(), nrx2, stop.clone())
    };
    let logs = 100_000;
    let t = Instant::now();
    for i in 0..logs {
        dev2.logs.write(
            fortilab_fortigate::logs::LogKind {
                logid: "0000000013",
                log_type: "traffic",
                subtype: "forward",
                eventtype: None,
                level: "notice",
            },
            |r| {
                r.ip("srcip", "10.115.2.52".parse().unwrap())
                    .int("sessionid", i);
            },
        );
        if i % 1000 == 0 {
            // Let the engine keep up (the broadcast holds 4096).
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    dev2.logs
        .event_system("0100032010", "alert", "Admin login failed", |record| {
            record
                .str("user", "admin7")
                .ip("srcip", "10.115.2.52".parse().unwrap());
        });
    while engine2.runs().is_empty() {
        std::thread::yield_now();
    }
    println!(
        "{logs} traffic logs + 1 matching event log through the engine: {:?} ({:.0} logs/s)",
        t.elapsed(),
        logs as f64 / t.elapsed().as_secs_f64()
    );
    stop.cancel();

    // 4. The notification burst.
    burst(&rt, 10_000);
}
