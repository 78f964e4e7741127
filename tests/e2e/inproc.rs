//! Cross-device behaviour with every device of the seed lab in this process
//! (`fortilab_testkit`'s in-process lab: each device's library `start` on port 0, one lab
//! map). What the real binaries add (processes, ready files, signals) is proven by the other
//! modules; these tests prove the flow itself, without process start-up.

use std::time::Duration;

use fortilab_core::http::client::HttpsClient;
use fortilab_testkit::{wait_for_blocking as wait_for, BlockingLab, LabSpec};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);

fn call(
    lab: &BlockingLab,
    client: &HttpsClient,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    lab.block_on(client.json(method, path, body))
        .unwrap()
        .json()
}

/// The KB article's flow: PC-52 downloads the EICAR test file through the FortiGate, the
/// FortiAnalyzer lists it as compromised, the FortiGate's stitch has EMS quarantine it and
/// PC-52 can no longer browse.
#[test]
fn the_seed_flow_quarantines_pc52_after_its_eicar_download() {
    let lab = BlockingLab::start(LabSpec::seed_lab()).unwrap();
    let ctl = lab.client(lab.endpoint_control().unwrap()).unwrap();
    let status = || call(&lab, &ctl, "GET", "/endpoints/PC-52/_lab/status", None);
    let fetch = |url: &str| {
        call(
            &lab,
            &ctl,
            "POST",
            "/endpoints/PC-52/_lab/fetch",
            Some(json!({ "url": url })),
        )
    };
    wait_for("PC-52 registered with EMS", LONG, || {
        status()["registered"] == true
    });

    let f = fetch("http://www.eicar.org/download/eicar.com");
    assert_eq!(
        (f["ok"].clone(), f["status"].clone()),
        (json!(true), json!(200)),
        "{f}"
    );

    wait_for("PC-52 quarantined", LONG, || {
        status()["quarantined"] == true
    });
    let f = fetch("http://news.sky.com/");
    assert_eq!(f["ok"], false, "{f}");
    assert_eq!(f["blocked_by"], "quarantine", "{f}");

    let fgt = lab.fortigate.as_ref().unwrap();
    let runs = fgt.automation.runs();
    assert!(
        runs.iter()
            .any(|r| format!("{r:?}").contains("Compromised Host Quarantine")),
        "{runs:?}"
    );
    let hosts = fgt.automation.compromised_hosts();
    assert!(
        hosts
            .iter()
            .any(|h| format!("{h:?}").contains("10.115.2.52")),
        "{hosts:?}"
    );
}
