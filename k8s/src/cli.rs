//! `fortilab k8s` and the hidden commands a Kubernetes lab's pods run (the `fortilab` binary
//! hands every `k8s*` command here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use fortilab_scenarios::labdef::LabDef;

/// The seed scenario, what the Job runs when no `--scenario` is given.
const SEED_FLOW: &str = include_str!("../../scenarios/library/seed-flow.toml");

#[derive(Debug, Parser)]
#[command(name = "fortilab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write Kubernetes manifests for a lab (the seed lab by default) in one namespace:
    /// `DIR/<namespace>.yaml` (mode 0600: it holds the lab CA key and credentials).
    K8s {
        /// A lab definition or scenario file (TOML).
        file: Option<PathBuf>,
        /// The lab's namespace (default `fortilab-<lab name>`).
        #[arg(long)]
        namespace: Option<String>,
        /// Where to write the manifests.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The image every container runs (`oci/build-image.sh` builds one; push it where the
        /// cluster pulls from).
        #[arg(long, default_value = "fortilab:dev")]
        image: String,
        /// A scenario the Job runs with `fortilab run --attach` (repeatable; default: the seed
        /// flow).
        #[arg(long = "scenario")]
        scenarios: Vec<PathBuf>,
    },
    /// (Kubernetes init container) Copy the lab secrets, write the pod's lab map.
    #[command(hide = true)]
    K8sInit {
        #[arg(long)]
        secrets: PathBuf,
        #[arg(long)]
        lab: PathBuf,
        /// LAB_IP=SERVICE (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The lab Internet's Service (the default route of public lab addresses).
        #[arg(long)]
        internet: Option<String>,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// (Kubernetes sidecar) Serve a device's ready report.
    #[command(hide = true)]
    K8sReadyServe {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// (Kubernetes Job) Assemble the lab's ready report from the devices' sidecars.
    #[command(hide = true)]
    K8sReport {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// Whether `fortilab ARGS` is a command of this crate.
pub fn handles(arg1: Option<&std::ffi::OsStr>) -> bool {
    arg1.and_then(|a| a.to_str())
        .is_some_and(|a| a == "k8s" || a.starts_with("k8s-"))
}

/// Entry point for `fortilab k8s*`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    fortilab_core::binary::init_tracing(fortilab_core::binary::LogFormat::Plain);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fortilab: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::K8s {
                file,
                namespace,
                out,
                image,
                scenarios,
            } => k8s(file, namespace, &out, image, &scenarios),
            Command::K8sInit {
                secrets,
                lab,
                hosts,
                internet,
                timeout,
            } => {
                let parsed: anyhow::Result<Vec<_>> = hosts
                    .iter()
                    .map(|h| crate::runtime::parse_host(h))
                    .collect();
                let r = match parsed {
                    Ok(h) => {
                        crate::runtime::init(
                            &secrets,
                            &lab,
                            &h,
                            internet.as_deref(),
                            Duration::from_secs(timeout),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::binary::exit_for("fortilab k8s-init", &e),
                }
            }
            Command::K8sReadyServe { file, lab, listen } => {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let s = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    s.cancel();
                });
                #[cfg(unix)]
                {
                    let s = shutdown.clone();
                    tokio::spawn(async move {
                        if let Ok(mut t) = tokio::signal::unix::signal(
                            tokio::signal::unix::SignalKind::terminate(),
                        ) {
                            t.recv().await;
                            s.cancel();
                        }
                    });
                }
                match crate::runtime::ready_serve(&file, &lab, listen, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::binary::exit_for("fortilab k8s-ready-serve", &e),
                }
            }
            Command::K8sReport {
                config,
                lab,
                out,
                timeout,
            } => match crate::runtime::report(&config, &lab, &out, Duration::from_secs(timeout))
                .await
            {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fortilab_core::binary::exit_for("fortilab k8s-report", &e),
            },
        }
    })
}

fn k8s(
    file: Option<PathBuf>,
    namespace: Option<String>,
    out: &std::path::Path,
    image: String,
    scenario_files: &[PathBuf],
) -> ExitCode {
    let def = match &file {
        Some(f) => match LabDef::load(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => LabDef::seed(),
    };
    let mut scenarios = Vec::new();
    for f in scenario_files {
        if let Err(e) = fortilab_scenarios::scenario::load(f) {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario.toml".into());
        match std::fs::read_to_string(f) {
            Ok(t) => scenarios.push((name, t)),
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    if scenarios.is_empty() {
        scenarios.push(("seed-flow.toml".into(), SEED_FLOW.into()));
    }
    let opts = crate::K8sOptions {
        namespace: namespace.unwrap_or_else(|| crate::default_namespace(&def)),
        image,
        scenarios,
        clock: fortilab_scenarios::compose::lab_clock_now(&def),
    };
    match crate::write(&def, &opts, out) {
        Ok(p) => {
            println!("{}", p.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fortilab k8s: {e:#}");
            ExitCode::from(2)
        }
    }
}
