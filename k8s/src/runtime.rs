//! What the pods of a Kubernetes lab run besides the devices: `k8s-init` (secrets and the
//! pod's lab map), `k8s-ready-serve` (a device's ready report over HTTPS, lab token required)
//! and `k8s-report` (the lab's ready report for `fortilab run --attach`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use fortilab_core::secrets::{LabToken, Secrets, SecretsMode, SECRETS_FILE};
use fortilab_core::LabMap;

/// `--host LAB_IP=SERVICE`.
pub fn parse_host(s: &str) -> anyhow::Result<(IpAddr, String)> {
    let (ip, svc) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--host {s:?}: expected LAB_IP=SERVICE"))?;
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| anyhow!("--host {s:?}: {ip:?} is not an IP address"))?;
    let svc = svc.trim();
    if svc.is_empty() {
        bail!("--host {s:?}: no service name");
    }
    Ok((ip, svc.to_string()))
}

/// The lab map of a pod: every lab address to its Service's address (`resolved`: service name
/// → cluster IP), the lab Internet as the default route of public addresses when `internet`
/// names its Service.
pub fn lab_map(
    hosts: &[(IpAddr, String)],
    internet: Option<&str>,
    resolved: &HashMap<String, IpAddr>,
) -> anyhow::Result<LabMap> {
    let mut m = LabMap::new();
    for (ip, svc) in hosts {
        let real = resolved
            .get(svc)
            .ok_or_else(|| anyhow!("service {svc} not resolved"))?;
        m.add_host(*ip, *real);
    }
    if let Some(svc) = internet {
        m.internet = Some(
            *resolved
                .get(svc)
                .ok_or_else(|| anyhow!("service {svc} not resolved"))?,
        );
    }
    Ok(m)
}

async fn resolve(name: &str, deadline: Instant) -> anyhow::Result<IpAddr> {
    loop {
        match tokio::net::lookup_host((name, 0u16)).await {
            Ok(mut addrs) => {
                if let Some(a) = addrs.next() {
                    return Ok(a.ip());
                }
            }
            Err(e) if Instant::now() >= deadline => {
                bail!("service {name}: {e}")
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!("service {name}: no address");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `fortilab k8s-init`: copies the lab CA and secrets from the Secret's volume into the lab
/// volume (mode 0600, `LAB/ca/ca.pem`, `LAB/ca/ca.key`, `LAB/secrets.json`), creates
/// `LAB/ready/`, and writes `LAB/labmap.json` from the Services' addresses.
pub async fn init(
    secrets: &Path,
    lab: &Path,
    hosts: &[(IpAddr, String)],
    internet: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let private = |p: &Path| {
        fortilab_core::secrets::create_private_dir(p).with_context(|| p.display().to_string())
    };
    private(lab)?;
    private(&lab.join("ca"))?;
    private(&lab.join("ready"))?;
    for (from, to) in [
        ("ca.pem", lab.join("ca").join("ca.pem")),
        ("ca.key", lab.join("ca").join("ca.key")),
        (SECRETS_FILE, lab.join(SECRETS_FILE)),
    ] {
        let src = secrets.join(from);
        let data = std::fs::read(&src).with_context(|| src.display().to_string())?;
        fortilab_core::secrets::write_private(&to, &data)
            .with_context(|| to.display().to_string())?;
    }
    let deadline = Instant::now() + timeout;
    let mut resolved = HashMap::new();
    let mut names: Vec<&str> = hosts.iter().map(|(_, s)| s.as_str()).collect();
    names.extend(internet);
    names.sort_unstable();
    names.dedup();
    for n in names {
        resolved.insert(n.to_string(), resolve(n, deadline).await?);
    }
    let map = lab_map(hosts, internet, &resolved)?;
    let path = lab.join("labmap.json");
    std::fs::write(&path, serde_json::to_string_pretty(&map)?)
        .with_context(|| path.display().to_string())?;
    println!(
        "fortilab: {} lab address(es) mapped to {} service(s) in {}",
        hosts.len(),
        resolved.len(),
        path.display()
    );
    Ok(())
}

fn lab_token(lab: &Path) -> anyhow::Result<LabToken> {
    let secrets = Secrets::open(Some(&lab.join(SECRETS_FILE)), None, SecretsMode::Random, 1)?;
    Ok(secrets.lab_token()?)
}

/// `fortilab k8s-ready-serve`: serves FILE (a device's ready report) at `GET /_lab/ready` over
/// HTTPS with a lab-CA certificate, lab token required (`503` until the file exists).
pub async fn ready_serve(
    file: &Path,
    lab: &Path,
    listen: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let token = lab_token(lab)?;
    let ca = fortilab_core::LabCa::load(
        &lab.join("ca").join("ca.pem"),
        &lab.join("ca").join("ca.key"),
    )?;
    let cert = ca.issue("fortilab-ready", &[])?;
    let tls = fortilab_core::tls::server_config(
        &ca,
        &cert,
        fortilab_core::tls::ClientAuth::None,
        &[b"http/1.1"],
    )?;
    let file = file.to_path_buf();
    let t = token.clone();
    let app = axum::Router::new().route(
        "/_lab/ready",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let file = file.clone();
            let t = t.clone();
            async move {
                use axum::response::IntoResponse;
                if let Some(denied) = fortilab_core::http::check_lab_token(&t, &headers) {
                    return denied;
                }
                match std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                {
                    Some(v) => axum::Json(v).into_response(),
                    None => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the device is not ready yet\n",
                    )
                        .into_response(),
                }
            }
        }),
    );
    let (listener, addr) = fortilab_core::http::bind(listen).await?;
    println!(
        "fortilab: ready report of {} on https://{addr}/_lab/ready",
        lab.display()
    );
    fortilab_core::http::serve_https(
        listener,
        tls,
        app,
        fortilab_core::http::HttpOptions::new(token),
        shutdown,
    )
    .await?;
    Ok(())
}

/// A device's ready report as seen from another pod: every listener on an unspecified or
/// loopback address (the device listens on all of its pod's addresses) named by the device's
/// Service instead.
pub fn rewrite_listeners(v: &Value, service: &str) -> Value {
    match v {
        Value::String(s) => {
            let mut out = s.clone();
            for any in ["0.0.0.0", "127.0.0.1", "[::]"] {
                out = out.replace(&format!("//{any}:"), &format!("//{service}:"));
                if let Some(rest) = out.strip_prefix(&format!("{any}:")) {
                    if rest.chars().all(|c| c.is_ascii_digit()) {
                        out = format!("{service}:{rest}");
                    }
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| rewrite_listeners(x, service)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), rewrite_listeners(x, service)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `fortilab k8s-report`: fetches every device's ready report from its Service's `ready`
/// sidecar, assembles the lab's (as Compose's `report` does), waits for the Security Fabric
/// links and writes OUT.
pub async fn report(
    config: &Path,
    lab: &Path,
    out: &Path,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let plan = fortilab_scenarios::compose::read_lab_json(config)?;
    let deadline = Instant::now() + timeout;
    let token = lab_token(lab)?;
    let ca_pem = std::fs::read_to_string(lab.join("ca").join("ca.pem"))?;
    let tls = fortilab_core::tls::client_config_from_pem(&ca_pem, None)?;
    let client = fortilab_scenarios::clients::http_client_tls(&tls, false, Some(&token))?;
    let mut ready = HashMap::new();
    for d in plan["devices"].as_array().into_iter().flatten() {
        let Some(name) = d.as_str() else { continue };
        let url = format!("https://{name}:{}/_lab/ready", crate::READY_PORT);
        loop {
            let got = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            if let Some(v) = got {
                ready.insert(name.to_string(), rewrite_listeners(&v, name));
                break;
            }
            if Instant::now() >= deadline {
                bail!("{url}: no ready report within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let r = fortilab_scenarios::compose::lab_report(
        &plan,
        &ready,
        &ca_pem,
        &token,
        "kubernetes",
        deadline,
    )
    .await?;
    fortilab_core::ready::write_ready(out, &r)?;
    println!("fortilab: lab ready: {}", out.display());
    Ok(r)
}
