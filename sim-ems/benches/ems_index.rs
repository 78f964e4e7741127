//! `endpoints/index` latency over 10,000 endpoints (one page of 100), in process, over HTTPS
//! with a fresh TLS connection per request (as a script without keep-alive would do).
//!
//! Run: `cargo bench -p fortilab-ems --bench ems_index`. With `FORTILAB_BENCH_ROLE=ems` the
//! binary runs as `sim-ems` instead (used by sim-endpoint's scale benchmark).

/// The allocator every fortilab binary ships with (src/bin/fortilab.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use fortilab_core::http::client::HttpsClient;
use fortilab_ems::state::SysInfo;
use fortilab_ems::{EmsConfig, Listeners};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // The scale benchmark of sim-endpoint runs this optimised binary as its EMS process.
    if std::env::var("FORTILAB_BENCH_ROLE").as_deref() == Ok("ems") {
        let code = fortilab_ems::cli::main();
        std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::sync::Arc::new(fortilab_core::LabCa::generate("bench").unwrap());
        let cfg = EmsConfig::for_tests();
        let env = fortilab_core::DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path()));
        let sd = tokio_util::sync::CancellationToken::new();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let telemetry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = fortilab_ems::start(cfg, env, Listeners { api, telemetry }, sd.clone())
            .await
            .unwrap();
        let now = running.shared.now_ms();
        {
            let mut st = running.shared.lock();
            for i in 0..10_000u32 {
                let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 115, 2, 52)) + i);
                st.register(
                    &SysInfo {
                        fctuid: format!("{:032X}", i as u128 * 7919 + 1),
                        ip: ip.to_string(),
                        mac: format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                        hostname: format!("PC-{i}"),
                        user: format!("user{i}"),
                        os: "Microsoft Windows 10 Professional Edition, 64-bit".into(),
                        fct_version: "6.4.3.1608".into(),
                        ..Default::default()
                    },
                    now,
                );
            }
        }
        let client = HttpsClient::new(ca.cert_pem(), None, running.api_addr).unwrap();
        let r = client
            .json("POST", "/api/v1/auth/signin", Some(serde_json::json!({"name": "admin", "password": "fortilab"})))
            .await
            .unwrap();
        let cookie = r
            .header_all("set-cookie")
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        for (label, path) in [
            ("page of 100 at offset 5000", "/api/v1/endpoints/index?offset=5000&count=100"),
            ("filtered (connection=online), page of 100", "/api/v1/endpoints/index?offset=5000&count=100&connection=online"),
            ("filter by ip_addr", "/api/v1/endpoints/index?ip_addr=10.115.30.1"),
        ] {
            let mut times = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let r = client.request("GET", path, &[("cookie", &cookie)], None).await.unwrap();
                times.push(t.elapsed());
                assert_eq!(r.status, 200);
                assert!(r.json()["data"]["total"].as_u64().is_some());
            }
            println!(
                "endpoints/index over 10,000 endpoints, {label}: median {:?}, p95 {:?}, max {:?} (incl. TLS handshake)",
                pct(&mut times, 0.5),
                pct(&mut times, 0.95),
                pct(&mut times, 1.0)
            );
        }
        // The handler alone (no TLS): build the JSON page under the lock.
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let st = running.shared.lock();
            let page: Vec<_> = st
                .endpoints
                .values()
                .skip(5000)
                .take(100)
                .map(|e| fortilab_ems::api::endpoint_json(e, now, 3000, false))
                .collect();
            let body = serde_json::to_vec(&page).unwrap();
            drop(st);
            assert!(!body.is_empty());
            times.push(t.elapsed());
        }
        println!("page of 100 built in process: median {:?}, p95 {:?}", pct(&mut times, 0.5), pct(&mut times, 0.95));
        sd.cancel();
    });
}
