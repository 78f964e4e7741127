//! `sim-ems`: command line, configuration and ready report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fortilab_core::binary::{CommonArgs, UsageError};
use fortilab_core::DeviceEnv;
use serde_json::json;

use crate::{EmsConfig, Listeners};

/// The FortiClient EMS twin.
#[derive(Debug, Parser)]
#[command(
    name = "sim-ems",
    version,
    about = "FortiClient EMS twin (REST API, fabric connector side, telemetry)"
)]
pub struct Args {
    /// API listener (HTTPS).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Telemetry listener (TLS; lab port 8013).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub telemetry_listen: SocketAddr,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Authorize FortiGates on first contact.
    #[arg(long)]
    pub auto_authorize: bool,
    /// The EMS lab address (certificate SAN, ready report).
    #[arg(long, default_value = "10.115.1.30")]
    pub lab_ip: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Entry point of the `sim-ems` binary.
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
    fortilab_core::binary::run("sim-ems", || run(args))
}

/// Resolves the configuration from flags and the file.
pub fn resolve(args: &Args, env: &DeviceEnv) -> anyhow::Result<EmsConfig> {
    let file = match &args.config {
        Some(p) => crate::config::load(p).map_err(|e| UsageError::new(e.to_string()))?,
        None => Default::default(),
    };
    let serial = fortilab_core::rng::serial(
        &mut fortilab_core::rng::stream(env.seed, "ems/serial"),
        "FCTEMS",
    );
    let password = match file.admin.password.clone() {
        Some(p) => p,
        None => env
            .secrets
            .credential("ems/admin-password", 12)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let ka = match file.ka_interval {
        Some(s) => Duration::from_secs_f64(s),
        None => env.timing.delay(
            Duration::from_secs(60),
            fortilab_core::telemetry::FAST_KA_INTERVAL,
        ),
    };
    Ok(EmsConfig {
        hostname: file.hostname.unwrap_or_else(|| "EMS-LAB".into()),
        serial,
        version: file.version.unwrap_or_else(|| "6.4.3".into()),
        admin_user: file.admin.user.unwrap_or_else(|| "admin".into()),
        admin_password: password,
        ka_interval: ka,
        auto_authorize: args.auto_authorize || file.auto_authorize.unwrap_or(false),
        persistent_connections: file.persistent_connections.unwrap_or(true),
        lab_ip: args.lab_ip.clone(),
        profile_name: file.profile.name.unwrap_or_else(|| "Default".into()),
        log_upload_enabled: file.profile.log_upload_enabled.unwrap_or(true),
        faz: file.profile.faz,
        quarantine_message: file
            .profile
            .quarantine_message
            .unwrap_or_else(|| crate::DEFAULT_QUARANTINE_MESSAGE.into()),
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (env, data_dir) = args.common.device_env("ems")?;
    let cfg = resolve(&args, &env)?;
    let ca_cert_path = args.common.ca_cert_path(&data_dir);
    let shutdown = fortilab_core::shutdown::signal_token();
    let (api, api_addr) = fortilab_core::http::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", args.listen))?;
    let (telemetry, tel_addr) = fortilab_core::http::bind(args.telemetry_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--telemetry-listen {}: {e}", args.telemetry_listen))?;
    let running = crate::start(cfg.clone(), env, Listeners { api, telemetry }, shutdown).await?;
    args.common.write_ready(&json!({
        "name": cfg.hostname,
        "serial": cfg.serial,
        "version": cfg.version,
        "api": format!("https://{api_addr}"),
        "admin": {"user": cfg.admin_user, "password": cfg.admin_password},
        "telemetry": tel_addr.to_string(),
        "lab_ip": cfg.lab_ip,
        "ca_cert": ca_cert_path.display().to_string(),
        "ka_interval_ms": cfg.ka_interval.as_millis() as u64,
        "lab_token": running.lab_token.as_str(),
    }))?;
    running.wait().await?;
    tracing::info!("EMS stopped");
    Ok(())
}
