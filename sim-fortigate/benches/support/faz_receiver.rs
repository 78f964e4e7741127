//! A local log-channel receiver standing for the FortiAnalyzer (counting sink, lab-CA TLS),
//! shared by the benches that forward logs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use fortilab_core::clock::LabClock;
use fortilab_core::logchan::{Hello, LogReceiver, MemorySink};
use fortilab_core::tls::{self, ClientAuth, LabCa};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The FortiAnalyzer's lab address the FortiGate's `log fortianalyzer setting` names.
pub const FAZ_LAB: &str = "10.115.1.20:514";

/// The FortiGate configuration that forwards every log to it in real time.
pub const FAZ_CLI: &str = "config log fortianalyzer setting\nset status enable\nset server 10.115.1.20\nset upload-option realtime\nset reliable enable\nend\n";

/// Starts the receiver; returns its counting sink, its real address (map [`FAZ_LAB`] to it)
/// and the lab CA (loaded from `ca_dir`) for the FortiGate's own certificate.
#[allow(dead_code)]
pub async fn start(ca_dir: &Path, stop: CancellationToken) -> (Arc<MemorySink>, SocketAddr, LabCa) {
    let (sink, addr, ca, _) = start_receiver(ca_dir, stop).await;
    (sink, addr, ca)
}

/// [`start`], also returning the receiver (to send notifications to the FortiGate).
#[allow(dead_code)]
pub async fn start_receiver(
    ca_dir: &Path,
    stop: CancellationToken,
) -> (Arc<MemorySink>, SocketAddr, LabCa, LogReceiver) {
    let ca = LabCa::load_or_create(ca_dir, "bench").unwrap();
    let sink = Arc::new(MemorySink::counting());
    let rl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr: SocketAddr = rl.local_addr().unwrap();
    let cert = ca.issue("FAZ-BENCH", &["10.115.1.20".into()]).unwrap();
    let scfg = tls::server_config(&ca, &cert, ClientAuth::Required, &[]).unwrap();
    let rx = LogReceiver::new(
        sink.clone(),
        Hello::fortianalyzer("FAZ-BENCH", "FAZ", "6.4.5"),
        LabClock::real(),
    );
    let serving = rx.clone();
    tokio::spawn(async move { serving.serve(rl, scfg, stop).await });
    (
        sink,
        raddr,
        LabCa::load_or_create(ca_dir, "bench").unwrap(),
        rx,
    )
}
