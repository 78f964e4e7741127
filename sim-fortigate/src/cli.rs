//! The `sim-fortigate` binary: flags → [`crate::start`] → ready file → serve until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fortilab_core::binary::{self, CommonArgs, UsageError};

use crate::config::FosVersion;
use crate::{ConfigSource, FortiGateConfig, Listeners, StartError};

/// A FortiGate twin (FortiOS 6.4 / 7.0 / 7.2): configuration engine and REST API.
#[derive(Debug, Parser)]
#[command(name = "sim-fortigate")]
pub struct Args {
    /// FortiOS CLI configuration applied on top of the factory defaults at first boot (a saved
    /// `fgt.conf` under --data-dir takes precedence).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the REST API (HTTPS).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// FortiOS version: 6.4.4 (default), 7.0.x, 7.2.x (or an exact 6.4/7.0/7.2 release).
    #[arg(long = "version", default_value = "6.4.4", value_name = "VERSION")]
    pub fos_version: String,
    /// Turn configuration warnings (not modelled, block without `end`) into errors.
    #[arg(long)]
    pub strict: bool,
    /// Hostname override (default: the configuration's, factory: the serial number).
    #[arg(long)]
    pub name: Option<String>,
    /// Management (lab) address, added to the certificate's SANs.
    #[arg(long, value_name = "IP")]
    pub lab_ip: Option<IpAddr>,
    /// The explicit proxy listener standing for the port3 side (the lab maps 10.115.2.1:8080
    /// to it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub proxy_listen: SocketAddr,
    /// The transparent proxy listener (namespaces mode: the FortiGate's namespace redirects
    /// the LAN's TCP 80/443 here; the original destination is read back with
    /// SO_ORIGINAL_DST). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub transparent_listen: Option<SocketAddr>,
    /// The SSH console (FortiOS CLI); host key kept in <data-dir>/ssh_host_ed25519_key.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub ssh_listen: SocketAddr,
    /// The lab Internet's control base URL (`https://127.0.0.1:P`): lab DNS and FortiGuard
    /// ratings. Without it only IP-literal hosts resolve and every site is Unrated.
    #[arg(long, value_name = "URL")]
    pub internet: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Entry point of the `sim-fortigate` binary.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    binary::init_tracing(args.common.log_format);
    binary::run("sim-fortigate", || run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let version = FosVersion::parse(&args.fos_version)
        .map_err(|e| UsageError::new(format!("--version: {e}")))?;
    let config = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| UsageError::new(format!("--config {}: {e}", p.display())))?;
            Some(ConfigSource {
                name: p.display().to_string(),
                text,
            })
        }
        None => None,
    };
    let (env, data_dir) = args.common.device_env("fortigate")?;
    let ca_cert = args.common.ca_cert_path(&data_dir);
    let shutdown = fortilab_core::shutdown::signal_token();
    let (api, _) = fortilab_core::http::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", args.listen))?;
    let (proxy, _) = fortilab_core::http::bind(args.proxy_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--proxy-listen {}: {e}", args.proxy_listen))?;
    let ssh = tokio::net::TcpListener::bind(args.ssh_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--ssh-listen {}: {e}", args.ssh_listen))?;
    let transparent = match args.transparent_listen {
        Some(a) => Some(
            fortilab_core::http::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("--transparent-listen {a}: {e}"))?
                .0,
        ),
        None => None,
    };
    let config = FortiGateConfig {
        version,
        config,
        strict: args.strict,
        name: args.name.clone(),
        lab_ip: args.lab_ip,
        internet: args.internet.clone(),
    };
    let listeners = Listeners {
        api,
        proxy: Some(proxy),
        transparent,
        ssh: Some(ssh),
    };
    let running = crate::start(config, env, listeners, shutdown)
        .await
        .map_err(|e| match e {
            StartError::Config(c) => anyhow::Error::new(UsageError::new(c.to_string())),
            StartError::Usage(u) => anyhow::Error::new(UsageError::new(u)),
            other => anyhow::anyhow!(other),
        })?;
    for w in &running.warnings {
        eprintln!("sim-fortigate: {w}");
    }
    args.common
        .write_ready(&running.ready_json(Some(&ca_cert)))?;
    running.wait().await
}
