//! Device set-up shared by several end-to-end tests: the lab CA, sim-ems with its config,
//! sim-endpoint fleets and sim-faz, each spawned with the same arguments everywhere.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use fortilab_core::http::client::{HttpsClient, Response};
use fortilab_core::logchan::{Hello, LogReceiver, MemorySink};
use fortilab_core::tls::{self, ClientAuth, LabCa};
use serde_json::{json, Value};

use super::Proc;

/// The EMS administrator password written by [`write_ems_config`].
pub const ADMIN_PASSWORD: &str = "lab-Passw0rd";

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new lab CA named `name`, saved under `dir/ca` (`ca.pem`, `ca.key`); returns it with the
/// paths of its certificate and key.
pub fn lab_ca(dir: &Path, name: &str) -> (LabCa, PathBuf, PathBuf) {
    let ca = LabCa::generate(name).unwrap();
    ca.save(&dir.join("ca")).unwrap();
    (ca, dir.join("ca/ca.pem"), dir.join("ca/ca.key"))
}

/// Writes `dir/ems.toml`: hostname EMS-LAB, keep-alive interval `ka_interval` seconds, the
/// admin with [`ADMIN_PASSWORD`], log upload off and, with `faz`, the profile's FortiAnalyzer.
pub fn write_ems_config(dir: &Path, ka_interval: f64, faz: Option<&str>) -> PathBuf {
    let faz = faz.map(|a| format!("faz = \"{a}\"\n")).unwrap_or_default();
    let p = dir.join("ems.toml");
    std::fs::write(
        &p,
        format!(
            "hostname = \"EMS-LAB\"\nka_interval = {ka_interval}\n[admin]\nuser = \"admin\"\npassword = \"{ADMIN_PASSWORD}\"\n[profile]\n{faz}log_upload_enabled = false\n"
        ),
    )
    .unwrap();
    p
}

/// Spawns sim-ems (process dir `dir/ems`, data `dir/ems-data`, the CA of `dir/ca`, fast
/// timing) with its API on `api_port`, telemetry on `tel_port`, config `config`, plus `extra`.
pub fn spawn_ems(dir: &Path, api_port: u16, tel_port: u16, config: &Path, extra: &[&str]) -> Proc {
    let ca = dir.join("ca");
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{api_port}"),
        "--telemetry-listen".into(),
        format!("127.0.0.1:{tel_port}"),
        "--config".into(),
        config.display().to_string(),
        "--data-dir".into(),
        dir.join("ems-data").display().to_string(),
        "--ca-cert".into(),
        ca.join("ca.pem").display().to_string(),
        "--ca-key".into(),
        ca.join("ca.key").display().to_string(),
        "--timing".into(),
        "fast".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn("sim-ems", &dir.join("ems"), &refs)
}

/// Spawns `count` sim-endpoints from 10.115.2.52 (process dir `dir/ep`, data `dir/ep-data`,
/// lab map `dir/labmap.json`, the CA of `dir/ca`, fast timing, no registration spread) that
/// reach EMS telemetry at 10.115.1.30:8013 and browse through 10.115.2.1:8080.
pub fn spawn_endpoints(dir: &Path, count: usize) -> Proc {
    Proc::spawn(
        "sim-endpoint",
        &dir.join("ep"),
        &[
            "--count",
            &count.to_string(),
            "--ip-start",
            "10.115.2.52",
            "--ems",
            "10.115.1.30:8013",
            "--proxy",
            "10.115.2.1:8080",
            "--lab-map",
            dir.join("labmap.json").to_str().unwrap(),
            "--ca-cert",
            dir.join("ca/ca.pem").to_str().unwrap(),
            "--ca-key",
            dir.join("ca/ca.key").to_str().unwrap(),
            "--data-dir",
            dir.join("ep-data").to_str().unwrap(),
            "--timing",
            "fast",
            "--register-spread-ms",
            "0",
        ],
    )
}

/// Spawns sim-faz in `dir` (data `dir/data`, the CA of `dir/ca`, fast timing) with `extra`
/// arguments and `env` for the child.
pub fn spawn_faz(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let (cert, key) = (dir.join("ca/ca.pem"), dir.join("ca/ca.key"));
    let mut args = vec![
        "--data-dir".to_string(),
        dir.join("data").display().to_string(),
        "--ca-cert".into(),
        cert.display().to_string(),
        "--ca-key".into(),
        key.display().to_string(),
        "--timing".into(),
        "fast".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn_with_env("sim-faz", dir, &refs, env)
}

/// A FortiAnalyzer JSON-RPC call through curl with the API key of the ready report (verifying
/// the server against the lab CA).
pub fn faz_rpc(faz: &Proc, body: &Value) -> Value {
    let api = faz.ready["api"].as_str().unwrap();
    let out = Command::new(super::require_program("curl", "curl"))
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(faz.ready["ca_cert"].as_str().unwrap())
        .arg("-H")
        .arg(format!(
            "Authorization: Bearer {}",
            faz.ready["api_token"].as_str().unwrap()
        ))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("{api}/jsonrpc"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(body.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "bad JSON from FAZ ({err}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A signed-in EMS administrator: the session cookie, CSRF token and referer the EMS API wants
/// on each call.
pub struct EmsSession {
    pub cookie: String,
    pub csrf: String,
    pub referer: String,
}

impl EmsSession {
    /// Signs in as `admin` with [`ADMIN_PASSWORD`] on the EMS API at 127.0.0.1:`port` through
    /// `client` (panics unless EMS answers 200 with the two session cookies).
    pub async fn signin(client: &HttpsClient, port: u16) -> EmsSession {
        let r = client
            .json(
                "POST",
                "/api/v1/auth/signin",
                Some(json!({"name": "admin", "password": ADMIN_PASSWORD})),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let cookies = r.header_all("set-cookie");
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        let pair = |name: &str| {
            cookies
                .iter()
                .find_map(|c| {
                    c.split(';')
                        .next()
                        .and_then(|kv| kv.strip_prefix(&format!("{name}=")))
                })
                .unwrap()
                .to_string()
        };
        let (csrf, sid) = (pair("csrftoken"), pair("sessionid"));
        EmsSession {
            cookie: format!("csrftoken={csrf}; sessionid={sid}"),
            csrf,
            referer: format!("https://127.0.0.1:{port}"),
        }
    }

    /// An EMS API call in this session (JSON body, `ems-call-type: 2` as the console sends).
    pub async fn call(
        &self,
        client: &HttpsClient,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        Ok(client
            .request(
                method,
                path,
                &[
                    ("cookie", &self.cookie),
                    ("x-csrftoken", &self.csrf),
                    ("referer", &self.referer),
                    ("content-type", "application/json"),
                    ("ems-call-type", "2"),
                ],
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?)
    }
}

/// The EMS record of the endpoint with lab address `ip` in the first page of
/// `endpoints/index` (`data.endpoints` of `index`).
pub fn endpoint_in_index(index: &Value, ip: &str) -> Option<Value> {
    index["data"]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["ip_addr"] == ip)
        .cloned()
}

/// A FortiOS REST call to the FortiGate `fgt` with the API token of its ready report (HTTPS,
/// verified against the lab CA `ca_pem`): the JSON reply.
pub async fn fgt_rest(
    fgt: &Proc,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let api = fgt.ready["api"].as_str().unwrap();
    let addr: SocketAddr = api.trim_start_matches("https://").parse().unwrap();
    let client = HttpsClient::new(ca_pem, None, addr)
        .unwrap()
        .with_lab_token(super::lab_token());
    let auth = format!("Bearer {}", fgt.ready["api_token"].as_str().unwrap());
    let r = client
        .request(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap();
    r.json()
}

/// The FortiGate's event logs in memory with `logid` (the last 1000, through [`fgt_rest`]).
pub async fn fgt_event_logs(fgt: &Proc, ca_pem: &str, logid: &str) -> Vec<Value> {
    let v = fgt_rest(
        fgt,
        ca_pem,
        "GET",
        "/api/v2/log/memory/event/system?rows=1000",
        None,
    )
    .await;
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {v}"))
        .iter()
        .filter(|l| l["logid"] == logid)
        .cloned()
        .collect()
}

/// A shared two-thread runtime for in-test servers and HTTPS clients (the tests themselves
/// are plain blocking code).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs `f` to completion on [`rt`].
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(f)
}

/// The serial of the FortiAnalyzer stand-in of [`faz_stand_in`].
pub const FAZ_SERIAL: &str = "FAZ-VM0000000001";

/// A FortiAnalyzer stand-in: a log channel receiver into a sink, and how to stop it.
pub struct FazStandIn {
    pub rx: LogReceiver,
    pub stop: Box<dyn FnOnce() + Send>,
}

/// Starts a FortiAnalyzer stand-in ([`FAZ_SERIAL`], FAZ-LAB, 6.4.5) on `addr`: the log channel
/// with a lab-CA certificate for 10.115.1.20, client certificates required, lines into `sink`.
/// Runs on the current runtime until `stop` (or SIGINT/SIGTERM).
pub async fn faz_stand_in(ca: &LabCa, sink: Arc<MemorySink>, addr: SocketAddr) -> FazStandIn {
    let cert = ca.issue(FAZ_SERIAL, &["10.115.1.20".into()]).unwrap();
    let cfg = tls::server_config(ca, &cert, ClientAuth::Required, &[]).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let rx = LogReceiver::new(
        sink,
        Hello::fortianalyzer(FAZ_SERIAL, "FAZ-LAB", "6.4.5"),
        fortilab_core::clock::LabClock::real(),
    );
    // A cancellation token (the test crate has no tokio-util dependency to create one).
    let stop = fortilab_core::shutdown::signal_token();
    let (r2, s2) = (rx.clone(), stop.clone());
    tokio::spawn(async move { r2.serve(listener, cfg, s2).await });
    FazStandIn {
        rx,
        stop: Box::new(move || stop.cancel()),
    }
}
