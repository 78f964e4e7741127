//! CMDB GET of one policy with 50 concurrent clients (keep-alive HTTPS connections, TLS
//! verified against the lab CA). Target: p99 < 2 ms.
//!
//! `cargo bench -p fortilab-fortigate --bench cmdb_get`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fortilab_core::tls::{self, LabCa};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, DeviceEnv, FortiGateConfig, Listeners};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

const PER_CLIENT: usize = 400;

const CONFIG: &str = r#"config firewall address
    edit "10.115.2.52/32"
        set subnet 10.115.2.52 255.255.255.255
    next
end
config firewall policy
    edit 0
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "10.115.2.52/32"
        set dstaddr "all"
        set action accept
        set schedule "always"
        set service "ALL"
        set utm-status enable
        set ssl-ssh-profile "certificate-inspection"
        set webfilter-profile "monitor-all"
        set logtraffic all
        set nat enable
    next
end
"#;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The target is 50 clients; fewer show the latency when the CPUs are not saturated.
    for clients in [1, 10, 50] {
        rt.block_on(run(clients));
    }
}

async fn run(clients: usize) {
    let ca = LabCa::generate("bench").unwrap();
    let ca_pem = ca.cert_pem().to_string();
    let (listener, addr) = fortilab_core::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let opts = FortiGateConfig {
        config: Some(ConfigSource {
            name: "bench.conf".into(),
            text: CONFIG.into(),
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
    for _ in 0..clients {
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
                let req = hyper::Request::get("/api/v2/cmdb/firewall/policy/1")
                    .header("host", "127.0.0.1")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let t = Instant::now();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let d = t.elapsed();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
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
        "CMDB GET /api/v2/cmdb/firewall/policy/1, {clients} concurrent clients x {PER_CLIENT}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  ({:.0} req/s; target p99 < 2 ms)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        all[all.len() - 1],
        (all.len() as f64) / wall.as_secs_f64()
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}
