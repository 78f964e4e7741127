//! The FortiGate → origin hop of the explicit proxy alone, two ways, against the same
//! in-process origin (issue 18.5: the lab's one HTTP client stack, "unless a measured reason
//! says otherwise"):
//! - `relay`: what `dataplane/proxy.rs` does — the upstream request written from the client's
//!   head (`http1::upstream_request`), the answer's head read by `http1::Reader::head`, relayed
//!   (re-serialized) and its body copied with its framing;
//! - `hyper`: the same on hyper's HTTP/1.1 client connection (`hyper::client::conn::http1`,
//!   connection opened by `fortilab_core::http::client::connect` with the PROXY v2 header), the
//!   head re-serialized from hyper's parsed response and the body collected from its frames.
//!
//! Both write what the client would get to a sink. 100 keep-alive upstream connections, each
//! sending its next request when the previous answer is in (closed loop), `SECS` seconds a
//! round, rounds alternating between the two (`UPSTREAM_HOP_ROUNDS`, default 3 each).
//!
//! `cargo bench -p fortilab-fortigate --bench upstream_hop`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[path = "support/origin.rs"]
mod lab_origin;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fortilab_core::http::client::{connect, Route};
use fortilab_core::proxy::{encode_v2, ProxyHeader};
use fortilab_fortigate::dataplane::http1::{self, BodyKind, Reader};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use lab_origin::origin;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 100;
const SECS: u64 = 3;
/// The client's request as the proxy receives it (absolute form).
const CLIENT_HEAD: &[u8] =
    b"GET http://www.eicar.org/ HTTP/1.1\r\nHost: www.eicar.org\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";

fn header(i: usize) -> ProxyHeader {
    ProxyHeader {
        src: SocketAddr::from(([10, 115, 1, 1], 40_000 + i as u16)),
        dst: "89.238.73.97:80".parse().unwrap(),
    }
}

/// The proxy's hand-written relay; latencies in µs.
async fn relay(origin: SocketAddr, i: usize, until: Instant) -> Vec<u32> {
    let mut tcp = TcpStream::connect(origin).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(&encode_v2(&header(i))).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let mut up = Reader::new(r);
    let head = http1::parse_head(CLIENT_HEAD).unwrap();
    let mut sink = tokio::io::sink();
    let mut lat = Vec::new();
    while Instant::now() < until {
        let t0 = Instant::now();
        let req = http1::upstream_request(&head, "www.eicar.org", 80, "/");
        w.write_all(&req).await.unwrap();
        let resp = up.head().await.unwrap().unwrap();
        let kind = match resp.body() {
            BodyKind::None => BodyKind::UntilClose,
            k => k,
        };
        let mut out = format!("{} {} {}\r\n", resp.line[0], resp.line[1], resp.line[2]);
        for (k, v) in &resp.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        sink.write_all(out.as_bytes()).await.unwrap();
        up.copy_body(kind, &mut sink).await.unwrap();
        lat.push(t0.elapsed().as_micros() as u32);
    }
    lat
}

/// The same hop on hyper's client connection; latencies in µs.
async fn hyper_hop(origin: SocketAddr, i: usize, until: Instant) -> Vec<u32> {
    let io = connect(&Route::to(origin).proxy_header(header(i)))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let head = http1::parse_head(CLIENT_HEAD).unwrap();
    let mut sink = tokio::io::sink();
    let mut lat = Vec::new();
    while Instant::now() < until {
        let t0 = Instant::now();
        let mut req = hyper::Request::builder().method("GET").uri("/");
        for (k, v) in &head.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            resp.status().as_u16(),
            resp.status().canonical_reason().unwrap_or("")
        );
        for (k, v) in resp.headers() {
            out.push_str(k.as_str());
            out.push_str(": ");
            out.push_str(v.to_str().unwrap_or(""));
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        sink.write_all(out.as_bytes()).await.unwrap();
        let mut body = resp.into_body();
        while let Some(f) = body.frame().await {
            if let Ok(data) = f.unwrap().into_data() {
                sink.write_all(&data).await.unwrap();
            }
        }
        lat.push(t0.elapsed().as_micros() as u32);
    }
    driver.abort();
    lat
}

fn report(name: &str, mut lat: Vec<u32>) -> f64 {
    lat.sort_unstable();
    let n = lat.len();
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)];
    let rate = n as f64 / SECS as f64;
    println!(
        "{name:>6}: {rate:>9.0} req/s  p50 {} µs  p99 {} µs  p99.9 {} µs",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    rate
}

fn main() {
    let rounds: usize = std::env::var("UPSTREAM_HOP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(origin(l));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for hop in ["relay", "hyper"] {
                let until = Instant::now() + Duration::from_secs(SECS);
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|i| match hop {
                        "relay" => tokio::spawn(relay(addr, i, until)),
                        _ => tokio::spawn(hyper_hop(addr, i, until)),
                    })
                    .collect();
                let mut lat = Vec::new();
                for t in tasks {
                    lat.extend(t.await.unwrap());
                }
                let rate = report(hop, lat);
                if hop == "relay" {
                    a.push(rate)
                } else {
                    b.push(rate)
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "mean over {rounds} rounds: relay {:.0} req/s, hyper {:.0} req/s (hyper / relay = {:.2})",
            mean(&a),
            mean(&b),
            mean(&b) / mean(&a)
        );
    });
}
