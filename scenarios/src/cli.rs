//! The `fortilab` command line (ARCHITECTURE.md section 7): `up`, `run`, `validate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::dashboard::session::{LabSession, SessionOptions};
use crate::lab::{Lab, LabOptions};
use crate::labdef::LabDef;
use crate::runner::{self, RunOptions};
use crate::timeline::{self, Timeline};

/// A digital twin of the Fortinet Security Fabric "Compromised Host Quarantine" flow.
#[derive(Debug, Parser)]
#[command(name = "fortilab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Format of fortilab's own diagnostics on stderr.
    #[arg(long, value_enum, default_value_t = fortilab_core::device::LogFormat::Plain, global = true)]
    log_format: fortilab_core::device::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a lab (the seed lab by default), print its URLs and credentials, stream the merged
    /// timeline; Ctrl-C stops every process cleanly.
    Up {
        /// A lab definition or scenario file (TOML).
        file: Option<PathBuf>,
        /// Write the lab's ready report (JSON) here once every device is ready (default:
        /// `$TMPDIR/fortilab-ready.json`, which `fortilab console` reads).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Directory for device state, logs and the lab CA (default: a new temporary one).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override the lab's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the timeline as JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run scenarios end to end with real processes. Exit 0: all passed; 1: a scenario failed;
    /// 2: invalid input.
    Run {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Write a JUnit XML report.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Override every scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Keep device logs and state even when a scenario passes.
        #[arg(long)]
        keep_logs: bool,
        /// Print the merged timeline while running.
        #[arg(long, short)]
        verbose: bool,
        /// Run against a lab that is already running (a `fortilab up`, a Compose lab) instead
        /// of starting one per scenario: its ready report, as a file or an http(s) URL (the
        /// lab token then comes from FORTILAB_LAB_TOKEN). The scenarios' lab definitions are
        /// not applied; device control steps fail ("not supported on an attached lab").
        #[arg(long, value_name = "READY_FILE_OR_URL")]
        attach: Option<String>,
    },
    /// Open a device's SSH console (the FortiOS or FortiAnalyzer CLI) in a running `fortilab up`
    /// lab, with the system `ssh` client.
    Console {
        /// `fortigate` (or `fgt`) or `fortianalyzer` (or `faz`).
        device: String,
        /// The running lab's ready file (default: $FORTILAB_READY_FILE).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check lab and scenario files without running them. Exit 0 valid, 2 invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write a Compose project for a lab (the seed lab by default): `DIR/compose.yaml` and
    /// `DIR/config/`, each device in its own container at its lab addresses. `compose up`
    /// (root) installs the host's unreachable routes for the lab's ranges, then runs
    /// `compose up -d` on the project in DIR; `compose down` stops it and removes them.
    Compose {
        /// A lab definition or scenario file (TOML), or `up` / `down`.
        file: Option<PathBuf>,
        /// Where to write the project.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The image every service runs (`oci/build-image.sh` builds one).
        #[arg(long, default_value = "fortilab:dev")]
        image: String,
        /// The lab directory on the host (CA, secrets, device state, ready report), relative
        /// to the compose file or absolute.
        #[arg(long, default_value = "./lab")]
        lab_dir: String,
    },
    /// (Compose `init` service) Create the lab CA and secrets in the lab directory.
    #[command(hide = true)]
    ComposeInit {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        lab: PathBuf,
    },
    /// (Compose `report` service) Wait for every device, write LAB/ready.json.
    #[command(hide = true)]
    ComposeReport {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        lab: PathBuf,
        /// Seconds to wait for the devices.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// (Compose health check) Exit 0 when FILE holds a device's ready report.
    #[command(hide = true)]
    ReadyCheck { file: PathBuf },
}

/// Entry point of the `fortilab` binary.
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
    fortilab_core::device::init_tracing(cli.log_format);
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
            Command::Validate { files } => validate(&files),
            Command::Compose {
                file,
                out,
                image,
                lab_dir,
            } => match file.as_ref().and_then(|f| f.to_str()) {
                Some("up") => match crate::compose::up(&out) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::device::exit_for("fortilab compose up", &e),
                },
                Some("down") => match crate::compose::down(&out) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::device::exit_for("fortilab compose down", &e),
                },
                _ => compose(file, &out, image, lab_dir),
            },
            Command::ComposeInit { config, lab } => match crate::compose::init(&config, &lab) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fortilab_core::device::exit_for("fortilab compose-init", &e),
            },
            Command::ComposeReport {
                config,
                lab,
                timeout,
            } => {
                match crate::compose::report(&config, &lab, std::time::Duration::from_secs(timeout))
                    .await
                {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::device::exit_for("fortilab compose-report", &e),
                }
            }
            Command::ReadyCheck { file } => {
                if crate::compose::ready_check(&file) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Command::Console { device, ready_file } => crate::console::main(&device, ready_file),
            Command::Run {
                scenarios,
                junit,
                seed,
                keep_logs,
                verbose,
                attach,
            } => {
                run(
                    &scenarios,
                    junit,
                    RunOptions {
                        seed,
                        keep_logs,
                        verbose,
                    },
                    attach.as_deref(),
                )
                .await
            }
            Command::Up {
                file,
                ready_file,
                data_dir,
                seed,
                json,
            } => match up(file, ready_file, data_dir, seed, json).await {
                Ok(code) => code,
                Err(e) => fortilab_core::device::exit_for("fortilab", &e),
            },
        }
    })
}

fn compose(
    file: Option<PathBuf>,
    out: &std::path::Path,
    image: String,
    lab_dir: String,
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
    let opts = crate::compose::ComposeOptions {
        image,
        lab_dir,
        clock: crate::compose::lab_clock_now(&def),
        addressing: crate::compose::Addressing::LabNetworks,
    };
    match crate::compose::write(&def, &opts, out) {
        Ok(p) => {
            println!("{}", p.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fortilab compose: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = false;
    for f in files {
        match crate::scenario::load(f) {
            Ok((_, steps)) => println!("{}: ok ({} step(s))", f.display(), steps.len()),
            Err(e) => {
                eprintln!("{e}");
                bad = true;
            }
        }
    }
    if bad {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(
    files: &[PathBuf],
    junit: Option<PathBuf>,
    opts: RunOptions,
    attach: Option<&str>,
) -> ExitCode {
    // Everything is checked before anything runs: invalid input is exit 2, not a failure.
    let mut loaded = Vec::new();
    let mut bad = false;
    for f in files {
        match crate::scenario::load(f) {
            Ok(x) => loaded.push((f.clone(), x)),
            Err(e) => {
                eprintln!("{e}");
                bad = true;
            }
        }
    }
    if bad {
        return ExitCode::from(2);
    }
    let attached = match attach {
        Some(src) => match crate::attach::Attached::open(src).await {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("fortilab: {e:#}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut outcomes = Vec::new();
    for (path, (def, steps)) in loaded {
        println!("▶ {} ({} step(s))", path.display(), steps.len());
        let o = match &attached {
            Some(lab) => {
                if opts.seed.is_some() {
                    eprintln!("fortilab: --seed does not apply to an attached lab");
                }
                runner::run_attached(&path, &def, steps, lab, &opts).await
            }
            None => runner::run_scenario(&path, def, steps, &opts).await,
        };
        for s in &o.steps {
            let mark = if s.passed { "✔" } else { "✘" };
            println!(
                "  {mark} {:>2}. {} ({:.0} ms)",
                s.step.index,
                s.step.name,
                s.real.as_secs_f64() * 1000.0
            );
            if !s.passed {
                println!(
                    "      {}:{}: {}",
                    o.file,
                    s.step.line,
                    s.message.replace('\n', "\n      ")
                );
            }
        }
        if let Some(e) = &o.error {
            println!("  ✘ {e}");
        }
        if o.passed() {
            println!("  PASS {} in {:.2} s", o.name, o.real.as_secs_f64());
        } else if attached.is_some() {
            println!(
                "  FAIL {} in {:.2} s (attached lab {})",
                o.name,
                o.real.as_secs_f64(),
                o.data_dir.display()
            );
            println!("  timeline tail:");
            for l in &o.timeline_tail {
                println!("    {l}");
            }
        } else {
            println!(
                "  FAIL {} (seed {}) in {:.2} s; logs kept in {}",
                o.name,
                o.seed,
                o.real.as_secs_f64(),
                o.data_dir.display()
            );
            println!("  timeline tail:");
            for l in &o.timeline_tail {
                println!("    {l}");
            }
        }
        outcomes.push(o);
    }
    if let Some(j) = junit {
        if let Err(e) = runner::write_junit(&j, &outcomes) {
            eprintln!("fortilab: {e:#}");
            return ExitCode::from(1);
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Events `fortilab up` keeps in memory (the dashboard's history for a newly opened page; all
/// of them are in the timeline files).
pub const UP_TIMELINE_RING: usize = 10_000;

async fn up(
    file: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    seed: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Without --ready-file the report still goes to a well-known place, for `fortilab console`.
    let default_ready = ready_file.is_none();
    let ready_file = Some(ready_file.unwrap_or_else(crate::console::default_ready_file));
    let def = match &file {
        Some(f) => {
            LabDef::load(f).map_err(|e| fortilab_core::device::UsageError::new(e.to_string()))?
        }
        None => LabDef::seed(),
    };
    let temp = data_dir.is_none();
    let dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fortilab-up-{}", std::process::id()))
    });
    let shutdown = fortilab_core::shutdown::signal_token();
    let t0 = Instant::now();
    let lab = tokio::select! {
        l = Lab::start(def.clone(), LabOptions { data_dir: dir.clone(), seed }) => l?,
        _ = shutdown.cancelled() => return Ok(ExitCode::from(1)),
    };
    let started = t0.elapsed();
    // A long demo must not grow without bound: memory keeps a ring of the last
    // UP_TIMELINE_RING events; the full timeline goes to rotated files under the data
    // directory (`timeline/`).
    let mut timeline = Timeline::new(lab.clock).with_limit(UP_TIMELINE_RING);
    match crate::journal::Journal::open(&dir.join("timeline"), Default::default()) {
        Ok(j) => timeline = timeline.with_journal(j),
        Err(e) => eprintln!("fortilab: warning: no timeline files: {e}"),
    }
    let streams = CancellationToken::new();
    let session = LabSession::new(
        lab,
        def,
        timeline.clone(),
        SessionOptions {
            data_dir: dir.clone(),
            seed,
            ready_file: ready_file.clone(),
        },
        streams.clone(),
    )?;
    let (listener, dash_addr) = crate::dashboard::bind().await?;
    let dashboard = format!("http://{dash_addr}/");
    session.set_dashboard(&dashboard);
    let server = tokio::spawn(crate::dashboard::serve(
        listener,
        session.clone(),
        streams.clone(),
    ));
    let snapshot = session.report();
    session.write_ready_file()?;
    let sign_in = crate::dashboard::sign_in_url(&dashboard, session.lab_token());
    print_summary(&snapshot, &sign_in, started, json);
    for l in crate::lab::non_loopback_listeners(&snapshot) {
        eprintln!(
            "fortilab: warning: listener not on loopback: {l} (anyone who can reach it can try \
             the lab's credentials; the lab surfaces need the lab token)"
        );
    }
    let printer = tokio::spawn(timeline::print_live(
        timeline.clone(),
        json,
        streams.clone(),
    ));

    // Watch for devices that die on their own.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => session.watch_exits(),
        }
    }
    eprintln!("fortilab: stopping the lab");
    // The event streams and the dashboard go first, so that no device waits for an open
    // stream to drain before it exits.
    streams.cancel();
    let bad = session.stop().await;
    let _ = printer.await;
    let _ = server.await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if default_ready {
        if let Some(p) = &ready_file {
            let _ = std::fs::remove_file(p);
        }
    }
    if bad.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("fortilab: not cleanly stopped: {}", bad.join(", "));
        Ok(ExitCode::from(1))
    }
}

fn print_summary(r: &Value, sign_in: &str, started: std::time::Duration, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"kind": "lab.ready", "report": r, "dashboard_sign_in": sign_in,
                               "start_ms": started.as_millis()})
        );
        return;
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!("fortilab: lab ready in {} ms", started.as_millis());
    println!("  dashboard      {sign_in}");
    println!(
        "  lab token      {}  (header X-Fortilab-Token on every /_lab/ route)",
        s(&r["lab_token"])
    );
    println!("  lab CA         {}", s(&r["ca_cert"]));
    let f = &r["fortigate"];
    println!(
        "  FortiGate      {} {} v{}  REST {}  token {}  admin/{}  proxy {}  ssh {}",
        s(&f["name"]),
        s(&f["serial"]),
        s(&f["version"]),
        s(&f["api"]),
        s(&f["api_token"]),
        s(&f["admin"]["password"]),
        s(&f["proxy"]),
        s(&f["ssh"])
    );
    let z = &r["fortianalyzer"];
    println!(
        "  FortiAnalyzer  {} {}  JSON-RPC {}/jsonrpc  token {}  admin/{}  ssh {}",
        s(&z["name"]),
        s(&z["serial"]),
        s(&z["api"]),
        s(&z["api_token"]),
        s(&z["admin"]["password"]),
        s(&z["ssh"])
    );
    let e = &r["ems"];
    println!(
        "  EMS            {} {}  REST {}/api/v1/  admin/{}",
        s(&e["name"]),
        s(&e["serial"]),
        s(&e["api"]),
        s(&e["admin"]["password"])
    );
    if let Some(eps) = r["endpoints"].as_array() {
        for ep in eps.iter().take(10) {
            println!(
                "  endpoint       {} {} {}  control {}",
                s(&ep["name"]),
                s(&ep["ip"]),
                s(&ep["fctuid"]),
                s(&ep["control"])
            );
        }
        if eps.len() > 10 {
            println!("  … and {} more endpoints", eps.len() - 10);
        }
    }
    println!("  Ctrl-C stops the lab.\n");
}
