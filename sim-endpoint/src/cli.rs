//! `sim-endpoint`: command line and ready report.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fortilab_core::binary::{CommonArgs, UsageError};
use serde_json::json;

use crate::EndpointConfig;

/// FortiClient endpoints (one or many per process).
#[derive(Debug, Parser)]
#[command(name = "sim-endpoint", version, about = "FortiClient endpoint twin")]
pub struct Args {
    /// Number of endpoints.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Name pattern: {n} = last octet of the lab IP, {i} = 1-based index.
    #[arg(long, default_value = "PC-{n}")]
    pub name_pattern: String,
    /// User name pattern ({n}, {i} as for names).
    #[arg(long, default_value = "user{n}")]
    pub user_pattern: String,
    /// Lab IP of the first endpoint; the others count up.
    #[arg(long, default_value = "10.115.2.52")]
    pub ip_start: Ipv4Addr,
    /// EMS telemetry, lab address (resolved through --lab-map).
    #[arg(long, default_value = "10.115.1.30:8013")]
    pub ems: SocketAddr,
    /// FortiGate explicit proxy, lab address (resolved through --lab-map).
    #[arg(long)]
    pub proxy: Option<SocketAddr>,
    /// Control listener (HTTPS) for all endpoints.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Namespaces mode: endpoint `k` (0-based) opens its sockets in the network namespace
    /// `<PREFIX><START + k>` (`/run/netns`; one namespace per endpoint).
    #[arg(long)]
    pub netns_prefix: Option<String>,
    /// See `--netns-prefix`.
    #[arg(long, default_value_t = 1)]
    pub netns_start: usize,
    /// Spread the first registrations over this many milliseconds (real time); default: 0 for
    /// one endpoint, 1000 for more.
    #[arg(long)]
    pub register_spread_ms: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Entry point of the `sim-endpoint` binary.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    fortilab_core::binary::init_tracing(args.common.log_format);
    fortilab_core::binary::run("sim-endpoint", || run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identities = crate::identity::identities(
        args.count,
        &args.name_pattern,
        &args.user_pattern,
        args.ip_start,
        args.common.seed,
    )
    .map_err(UsageError::new)?;
    let (env, _) = args.common.device_env("endpoint")?;
    let spread = args
        .register_spread_ms
        .unwrap_or(if args.count > 1 { 1000 } else { 0 });
    let cfg = EndpointConfig {
        identities,
        ems: args.ems,
        proxy: args.proxy,
        default_ka: args
            .common
            .timing
            .delay(Duration::from_secs(60), Duration::from_millis(200)),
        register_spread: Duration::from_millis(spread),
        // FortiClient uploads its logs on a schedule (90 min by default), the FortiGate in real
        // time: FortiGate logs stay the IOC engine's first input, as in production [P: fast].
        log_upload_every: args
            .common
            .timing
            .delay(Duration::from_secs(90 * 60), Duration::from_secs(5)),
        netns: match &args.netns_prefix {
            Some(p) => (0..args.count)
                .map(|k| format!("{p}{}", args.netns_start + k))
                .collect(),
            None => Vec::new(),
        },
    };
    let shutdown = fortilab_core::shutdown::signal_token();
    let (control, _) = fortilab_core::http::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", args.listen))?;
    let running = crate::start(cfg, env, crate::Listeners { control }, shutdown).await?;
    let endpoints: Vec<_> = running
        .shared
        .endpoints
        .iter()
        .map(|e| {
            json!({"name": e.id.name, "ip": e.id.ip.to_string(), "mac": e.id.mac, "fctuid": e.id.fctuid,
                   "control": running.control_url(&e.id.name)})
        })
        .collect();
    args.common.write_ready(&json!({
        "endpoints": endpoints,
        "control": format!("https://{}", running.control_addr),
        "lab_token": running.shared.lab_token.as_str(),
    }))?;
    running.wait().await;
    tracing::info!("endpoints stopped");
    Ok(())
}
