//! Idempotent CMDB PUT of one policy in a 10,000-policy table with 50 concurrent clients
//! (keep-alive HTTPS connections, TLS verified against the lab CA): the request an Ansible
//! re-run sends (`PUT /api/v2/cmdb/firewall/policy/<id>?vdom=root` with the full object the
//! table already holds), answered `revision_changed: false`. Target: p99 < 2 ms.
//!
//! `cargo bench -p fortilab-fortigate --bench cmdb_put`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fortilab_core::tls::{self, LabCa};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, DeviceEnv, FortiGateConfig, Listeners};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

const POLICIES: usize = 10_000;
const PER_CLIENT: usize = 400;

fn config() -> String {
    let mut s = String::from("config firewall policy\n");
    for i in 1..=POLICIES {
        s.push_str(&format!(
            "    edit {i}\n        set name \"p{i}\"\n        set srcintf \"port3\"\n        set dstintf \"port1\"\n        set srcaddr \"all\"\n        set dstaddr \"all\"\n        set action accept\n        set schedule \"always\"\n        set service \"HTTP\" \"HTTPS\" \"DNS\"\n        set logtraffic all\n        set nat enable\n    next\n"
        ));
    }
    s.push_str("end\n");
    s
}

/// The body the `fortinet.fortios` policy module sends for policy `id` (hyphenated keys,
/// member lists as `[{"name": ..}]`).
fn body(id: usize) -> String {
    format!(
        r#"{{"action": "accept", "dstaddr": [{{"name": "all"}}], "dstintf": [{{"name": "port1"}}], "logtraffic": "all", "name": "p{id}", "nat": "enable", "policyid": {id}, "schedule": "always", "service": [{{"name": "HTTP"}}, {{"name": "HTTPS"}}, {{"name": "DNS"}}], "srcaddr": [{{"name": "all"}}], "srcintf": [{{"name": "port3"}}], "status": "enable"}}"#
    )
}

/// The configuration engine's share: `ConfigStore::update` of the same body, in process.
fn in_process(text: &str) {
    use fortilab_fortigate::config::{factory, parse_config, ConfigStore, Origin};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let base = factory(FosVersion::V6_4_4, "FGT-LAB", &mut rng);
    let (cfg, _) = parse_config(
        &base,
        text,
        "bench.conf",
        FosVersion::V6_4_4,
        false,
        &mut rng,
    )
    .unwrap();
    let store = ConfigStore::new(cfg, FosVersion::V6_4_4, 1, "FGVM01TM00000001");
    let origin = Origin::system();
    let n = 20_000;
    let bodies: Vec<serde_json::Map<String, serde_json::Value>> = (0..n)
        .map(|i| serde_json::from_str(&body(i * 7 % POLICIES + 1)).unwrap())
        .collect();
    let mut lat = Vec::with_capacity(n);
    for (i, b) in bodies.iter().enumerate() {
        let id = (i * 7 % POLICIES + 1).to_string();
        let t = Instant::now();
        let w = store
            .update("firewall policy", Some(&id), b, &origin)
            .unwrap();
        lat.push(t.elapsed());
        assert!(!w.changed);
    }
    lat.sort();
    println!(
        "in process: ConfigStore::update (idempotent) of one of {POLICIES} policies: p50 {:?}  p99 {:?}",
        lat[n / 2],
        lat[n * 99 / 100]
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = config();
    in_process(&text);
    // The target is 50 clients; fewer show the latency when the CPUs are not saturated.
    for clients in [1, 10, 50] {
        rt.block_on(run(clients, &text));
    }
}

async fn run(clients: usize, text: &str) {
    let ca = LabCa::generate("bench").unwrap();
    let ca_pem = ca.cert_pem().to_string();
    let (listener, addr) = fortilab_core::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let opts = FortiGateConfig {
        config: Some(ConfigSource {
            name: "bench.conf".into(),
            text: text.to_string(),
        }),
        name: Some("FGT-LAB".into()),
        ..FortiGateConfig::new(FosVersion::V6_4_4)
    };
    let env = DeviceEnv::with_ca(std::sync::Arc::new(ca), 1, None);
    let running =
        fortilab_fortigate::start(opts, env, Listeners::api_only(listener), shutdown.clone())
            .await
            .unwrap();
    let token = running.api_token.clone();
    let client_cfg = tls::client_config_from_pem(&ca_pem, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_cfg);

    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..clients {
        let connector = connector.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let tls = connector
                .connect(tls::server_name("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT + 20 {
                // Policies spread over the whole table.
                let id = (c * 7919 + i * 104_729) % POLICIES + 1;
                let req =
                    hyper::Request::put(format!("/api/v2/cmdb/firewall/policy/{id}?vdom=root"))
                        .header("host", "127.0.0.1")
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body(id))))
                        .unwrap();
                let t = Instant::now();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let d = t.elapsed();
                let text = String::from_utf8_lossy(&bytes);
                assert_eq!(status, 200, "{text}");
                assert!(text.contains("\"revision_changed\":false"), "{text}");
                if i >= 20 {
                    lat.push(d); // the first 20 are warm-up
                }
            }
            lat
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "CMDB PUT (idempotent) /api/v2/cmdb/firewall/policy/<id> of {POLICIES} policies, {clients} concurrent clients x {PER_CLIENT}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  ({:.0} req/s; target p99 < 2 ms)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        all[all.len() - 1],
        (all.len() as f64) / wall.as_secs_f64()
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}
