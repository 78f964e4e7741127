//! The `sim-faz` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fortilab_core::binary::{self, CommonArgs, UsageError};

use crate::{FazConfig, Listeners};

/// The FortiAnalyzer twin: log channel and syslog receiver, log store, IOC engine, JSON-RPC API.
#[derive(Debug, Parser)]
#[command(name = "sim-faz", version)]
pub struct Args {
    /// HTTPS API address (JSON-RPC at /jsonrpc, lab surface under /_lab/).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Log channel (TLS) address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub log_listen: SocketAddr,
    /// Syslog address (UDP and TCP on the same port number).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub syslog_listen: SocketAddr,
    /// SSH console address (the FortiAnalyzer CLI).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub ssh_listen: SocketAddr,
    /// TOML configuration (hostname, admin, api_key, [tidb], [ioc], [store], version).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Authorize unknown devices as they connect (the lab's shortcut).
    #[arg(long)]
    pub auto_authorize: bool,
    /// Lab IP of the FortiAnalyzer (SAN of its certificate).
    #[arg(long, default_value = "10.115.1.20")]
    pub lab_ip: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    binary::init_tracing(args.common.log_format);
    binary::run("sim-faz", || run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => crate::config::load(p).map_err(UsageError::new)?,
        None => crate::config::FileConfig::default(),
    };
    if args.lab_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(
            UsageError::new(format!("--lab-ip {:?}: not an IP address", args.lab_ip)).into(),
        );
    }
    let (env, data_dir) = args.common.device_env("faz")?;
    let ca_cert_path = args.common.ca_cert_path(&data_dir);
    let shutdown = fortilab_core::shutdown::signal_token();
    let (udp, tcp) = crate::bind_syslog(args.syslog_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--syslog-listen {}: {e}", args.syslog_listen))?;
    let listeners = Listeners {
        api: tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {}: {e}", args.listen))?,
        logchan: tokio::net::TcpListener::bind(args.log_listen)
            .await
            .map_err(|e| anyhow::anyhow!("--log-listen {}: {e}", args.log_listen))?,
        syslog_udp: Some(udp),
        syslog_tcp: Some(tcp),
        ssh: Some(
            tokio::net::TcpListener::bind(args.ssh_listen)
                .await
                .map_err(|e| anyhow::anyhow!("--ssh-listen {}: {e}", args.ssh_listen))?,
        ),
    };
    let cfg = FazConfig {
        file,
        auto_authorize: args.auto_authorize,
        lab_ip: args.lab_ip.clone(),
        ca_cert_path: Some(ca_cert_path),
    };
    let running = crate::start(cfg, env, listeners, shutdown.clone()).await?;
    args.common.write_ready(&running.ready_json())?;
    shutdown.cancelled().await;
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}
