//! `sim-internet`: the lab Internet process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fortilab_core::binary::{self, CommonArgs, UsageError};

use crate::{InternetConfig, Listeners, Sites};

/// The fortilab lab Internet: named sites with FortiGuard categories over HTTP and HTTPS.
#[derive(Debug, Parser)]
#[command(name = "sim-internet", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Site definition (TOML, `[[site]]` tables); without it the built-in sites are served.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The HTTP listener (every site; lab port 80).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen_http: SocketAddr,
    /// The HTTPS listener (every site; lab port 443).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen_https: SocketAddr,
    /// The lab surface (HTTPS): /_lab/health, sites, dns, rating, lab-map, events.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen_control: SocketAddr,
    /// A DNS server (UDP) answering the sites' names with their public lab addresses
    /// (namespaces mode: the endpoints' resolver). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,
}

/// Entry point of the `sim-internet` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    binary::init_tracing(args.common.log_format);
    binary::run("sim-internet", move || run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sites = match &args.config {
        Some(p) => Sites::load(p).map_err(|e| UsageError::new(e.0))?,
        None => Sites::defaults(),
    };
    let (env, data_dir) = args.common.device_env("internet")?;
    let bind = |a: SocketAddr| async move {
        tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| UsageError::new(format!("cannot listen on {a}: {e}")))
    };
    let dns = match args.dns_listen {
        Some(a) => Some(
            tokio::net::UdpSocket::bind(a)
                .await
                .map_err(|e| UsageError::new(format!("--dns-listen {a}: {e}")))?,
        ),
        None => None,
    };
    let listeners = Listeners {
        http: bind(args.listen_http).await?,
        https: bind(args.listen_https).await?,
        control: bind(args.listen_control).await?,
        dns,
    };
    let shutdown = fortilab_core::shutdown::signal_token();
    let running = crate::start(InternetConfig { sites }, env, listeners, shutdown).await?;
    let mut ready = running.ready_json();
    let ca_cert = args.common.ca_cert_path(&data_dir);
    ready["internet"]["ca_cert"] = serde_json::Value::String(ca_cert.display().to_string());
    args.common.write_ready(&ready)?;
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}
