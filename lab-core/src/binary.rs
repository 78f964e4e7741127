//! What every `sim-*` binary shares: common flags, tracing set-up, the runtime and exit codes
//! (ARCHITECTURE.md section 7: 0 after a clean SIGTERM drain, 2 for bad flags or configuration,
//! 1 for failures).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::clock::LabClock;
use crate::env::DeviceEnv;
use crate::http::HttpOptions;
use crate::labnet::LabMap;
use crate::secrets::{LabToken, Secrets, SecretsMode};
use crate::tls::LabCa;

/// Flags every device binary accepts.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory for the device's persistent state (default: a fresh directory under the
    /// system temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the device's ready report (JSON) here once it serves.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Lab network map (JSON: {"hosts": {lab-ip: real-ip}, "services": {lab-ip:port: real}}).
    #[arg(long, value_name = "FILE")]
    pub lab_map: Option<PathBuf>,
    /// Lab CA certificate (PEM). Without it the device creates a CA under its data directory.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Lab CA private key (PEM).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Seed for every random choice (serials, tokens, identities).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lab clock: lab time at the origin (Unix ms). Default: now.
    #[arg(long, value_name = "MS")]
    pub clock_epoch: Option<i64>,
    /// Lab clock: real time of the origin (Unix ms). Default: now.
    #[arg(long, value_name = "MS")]
    pub clock_origin: Option<i64>,
    /// Lab clock: lab seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub clock_speed: f64,
    /// Lab time zone offset from UTC in minutes (FortiOS `tz`).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_tz: i32,
    /// Product delays: `fast` shrinks them to milliseconds, `realistic` keeps the products'
    /// intervals (scaled by the clock speed).
    #[arg(long, value_enum, default_value_t = Timing::Realistic)]
    pub timing: Timing,
    /// Format of the process's own diagnostics on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Where credentials come from: `random` (the OS CSPRNG, kept in the data directory's
    /// `secrets.json`) or `seeded` (derived from `--seed`: fixed credentials).
    #[arg(long, value_enum, default_value_t = SecretsMode::Random)]
    pub secrets: SecretsMode,
    /// A JSON file of secrets to use (the orchestrator's, mode 0600): the lab token
    /// (`lab_token`) and credentials by label. Secrets never travel on the command line; the
    /// lab token may also come from the environment variable FORTILAB_LAB_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Close HTTP connections that have not sent a complete request head within this many
    /// seconds (default 20; also FORTILAB_HTTP_HEADER_TIMEOUT).
    #[arg(long, value_name = "SECS")]
    pub http_header_timeout: Option<f64>,
}

/// Product timing mode (ARCHITECTURE.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    Fast,
    Realistic,
}

impl Timing {
    /// A product delay: its real value under `realistic`, `fast` under `fast` (both lab time).
    pub fn delay(self, realistic: Duration, fast: Duration) -> Duration {
        match self {
            Timing::Realistic => realistic,
            Timing::Fast => fast,
        }
    }
}

/// Format of tracing output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// An error meaning "bad flags or configuration": exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl CommonArgs {
    /// The lab clock these flags describe.
    pub fn clock(&self) -> LabClock {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let origin = self.clock_origin.unwrap_or(now_ms);
        let epoch = self.clock_epoch.unwrap_or(origin);
        LabClock::new(epoch, origin, self.clock_speed, self.clock_tz)
    }

    /// The data directory, created if needed.
    pub fn data_dir(&self, device: &str) -> anyhow::Result<PathBuf> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("fortilab-{device}-{}", std::process::id())),
        };
        crate::secrets::create_private_dir(&dir)
            .map_err(|e| UsageError::new(format!("--data-dir {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// The device's secrets: `--secrets-file` (given), `data_dir/secrets.json` (kept), the
    /// `--secrets` mode and the seed.
    pub fn secrets(&self, data_dir: &Path) -> anyhow::Result<Secrets> {
        Secrets::open(
            Some(&data_dir.join(crate::secrets::SECRETS_FILE)),
            self.secrets_file.as_deref(),
            self.secrets,
            self.seed,
        )
        .map_err(|e| UsageError::new(format!("secrets: {e}")).into())
    }

    /// The HTTP options of the device's servers (`--http-header-timeout`, else the
    /// environment, else the default).
    pub fn http_options(&self, lab_token: LabToken) -> anyhow::Result<HttpOptions> {
        let mut o = HttpOptions::from_env(lab_token).map_err(UsageError::new)?;
        if let Some(s) = self.http_header_timeout {
            o.header_read_timeout = crate::http::parse_timeout(&s.to_string())
                .map_err(|e| UsageError::new(format!("--http-header-timeout {s}: {e}")))?;
        }
        Ok(o)
    }

    /// The lab CA: the one given with `--ca-cert/--ca-key`, else one kept under `data_dir/ca`.
    pub fn lab_ca(&self, data_dir: &Path) -> anyhow::Result<LabCa> {
        match (&self.ca_cert, &self.ca_key) {
            (Some(c), Some(k)) => {
                Ok(LabCa::load(c, k).map_err(|e| UsageError::new(e.to_string()))?)
            }
            _ => Ok(LabCa::load_or_create(&data_dir.join("ca"), "fortilab")?),
        }
    }

    /// The lab map (empty without `--lab-map`).
    pub fn lab_map(&self) -> anyhow::Result<LabMap> {
        match &self.lab_map {
            Some(p) => Ok(LabMap::load(p).map_err(|e| UsageError::new(e.to_string()))?),
            None => Ok(LabMap::default()),
        }
    }

    /// The lab CA certificate's path for the ready report: `--ca-cert`, else the CA kept
    /// under `data_dir/ca`.
    pub fn ca_cert_path(&self, data_dir: &Path) -> PathBuf {
        self.ca_cert
            .clone()
            .unwrap_or_else(|| data_dir.join("ca").join("ca.pem"))
    }

    /// The environment `device`'s `start` runs in (creates its data directory, CA and
    /// secrets as needed). Returns the data directory too.
    pub fn device_env(&self, device: &str) -> anyhow::Result<(DeviceEnv, PathBuf)> {
        let data_dir = self.data_dir(device)?;
        let secrets = self.secrets(&data_dir)?;
        let http = self.http_options(secrets.lab_token()?)?;
        let env = DeviceEnv {
            ca: std::sync::Arc::new(self.lab_ca(&data_dir)?),
            clock: self.clock(),
            lab_map: self.lab_map()?,
            seed: self.seed,
            timing: self.timing,
            data_dir: Some(data_dir.clone()),
            secrets: std::sync::Arc::new(secrets),
            http,
        };
        Ok((env, data_dir))
    }

    /// Writes the ready report if `--ready-file` was given.
    pub fn write_ready(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        if let Some(p) = &self.ready_file {
            crate::ready::write_ready(p, value)
                .map_err(|e| anyhow::anyhow!("--ready-file {}: {e}", p.display()))?;
        }
        Ok(())
    }
}

/// Initialises tracing to stderr. `RUST_LOG` overrides the default filter.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `FORTILAB_WORKER_THREADS=N`: the runtime's worker threads (default: one per core).
pub const WORKER_THREADS_ENV: &str = "FORTILAB_WORKER_THREADS";

/// The multi-threaded runtime every process runs on, with [`WORKER_THREADS_ENV`] applied.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var(WORKER_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        b.worker_threads(n);
    }
    b.enable_all().build()
}

/// Runs a device main on a multi-threaded runtime and maps its result to the exit code.
pub fn run<F, Fut>(name: &str, f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_for(name, &e),
    }
}

/// Prints `err` and returns 2 for usage/configuration errors, 1 otherwise.
pub fn exit_for(name: &str, err: &anyhow::Error) -> ExitCode {
    eprintln!("{name}: error: {err:#}");
    if err
        .chain()
        .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Parses a `--listen` style address, `127.0.0.1:0` by default.
pub fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
