//! The `fortilab` command line (ARCHITECTURE.md section 7): `up`, `run`, `validate`,
//! `exercise`, `class`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::dashboard::session::{LabSession, SessionOptions};
use crate::lab::{Lab, LabOptions};
use crate::labdef::{LabDef, NetworkMode};
use crate::runner::{self, RunOptions};
use crate::timeline::{self, Timeline};

/// A digital twin of the Fortinet Security Fabric "Compromised Host Quarantine" flow.
#[derive(Debug, Parser)]
#[command(name = "fortilab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Format of fortilab's own diagnostics on stderr.
    #[arg(long, value_enum, default_value_t = fortilab_core::binary::LogFormat::Plain, global = true)]
    log_format: fortilab_core::binary::LogFormat,
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
        /// `loopback` (default) or `namespaces` (root: each device in its own network
        /// namespace at its real lab addresses); overrides `[lab] network`.
        #[arg(long, value_enum)]
        network: Option<NetworkMode>,
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
        /// Run every scenario's lab in this network mode (`namespaces`: root).
        #[arg(long, value_enum)]
        network: Option<NetworkMode>,
    },
    /// Run a command as a lab host of the running namespaces lab (`fortilab exec PC-52 --
    /// curl http://www.eicar.org/`): in that host's network namespace, with the lab's DNS.
    /// Hosts: endpoint names or addresses, `fortigate`, `fortianalyzer`, `ems`, `internet`.
    Exec {
        host: String,
        /// Which namespaces lab (its prefix, `fl<pid><letter>`) when several run.
        #[arg(long)]
        lab: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove the network namespaces, interfaces and routes of namespaces labs whose
    /// orchestrator is gone (`fortilab up` does this at every start), or of one named lab.
    NetnsClean {
        /// Only this lab (its prefix, `fl<pid><letter>`); it must not be running.
        lab: Option<String>,
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
    /// Start a guided exercise (its lab, then the tasks, checked as the trainee works; the
    /// dashboard shows the exercise panel), or `fortilab exercise status` to print the
    /// progress of a running one.
    Exercise(ExerciseArgs),
    /// Save, restore or list snapshots of a running `fortilab up` lab: its whole state (every
    /// device's configuration, logs, IOC results, quarantines, endpoint state) and lab clock,
    /// under `<data-dir>/snapshots/NAME/`. Exit 0 done, 1 failed, 2 bad usage.
    Snapshot {
        /// `save`, `restore` or `list`.
        op: String,
        /// The snapshot's name (letters, digits, `.`, `_`, `-`).
        name: Option<String>,
        /// The running lab: its ready file or its dashboard's ready URL
        /// (`http://127.0.0.1:PORT/_lab/ready`; the lab token then comes from
        /// FORTILAB_LAB_TOKEN). Default: $FORTILAB_READY_FILE, else the ready file `up` writes.
        #[arg(long, value_name = "READY_FILE_OR_URL")]
        attach: Option<String>,
        /// Print the snapshot's description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check lab, scenario and exercise files without running them. Exit 0 valid, 2 invalid.
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
    /// A classroom: N isolated labs on this machine, an instructor page and a trainee page per
    /// lab (`class up`); the instructor's table of a running class (`class status`).
    Class {
        #[command(subcommand)]
        command: ClassCommand,
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

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ExerciseArgs {
    #[command(subcommand)]
    command: Option<ExerciseCommand>,
    /// The exercise file (TOML).
    file: Option<PathBuf>,
    /// Write the lab's ready report (JSON) here once every device is ready (default:
    /// `$TMPDIR/fortilab-ready.json`).
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
}

#[derive(Debug, Subcommand)]
enum ExerciseCommand {
    /// Print the progress of a running exercise. Exit 0 when every task is done, 3 while
    /// some are not, 1 when the lab cannot be asked.
    Status {
        /// The running lab's ready file (default: $FORTILAB_READY_FILE, else
        /// `$TMPDIR/fortilab-ready.json`).
        #[arg(long, conflicts_with = "url")]
        ready_file: Option<PathBuf>,
        /// The lab's dashboard URL instead (the lab token then comes from FORTILAB_LAB_TOKEN
        /// or the URL's `?token=`).
        url: Option<String>,
        /// Print the progress JSON (`GET /_lab/exercise`) as it is.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClassCommand {
    /// Start the labs (concurrently), the instructor page and the trainee pages; print their
    /// sign-in links; Ctrl-C or SIGTERM stops every lab.
    Up {
        /// Labs to start on this machine (each its own `fortilab up`: own ports, lab CA,
        /// random credentials).
        #[arg(long, default_value_t = 0)]
        labs: usize,
        /// The lab definition every started lab runs (default: the seed lab).
        #[arg(long)]
        lab: Option<PathBuf>,
        /// An exercise file: each lab runs `fortilab exercise FILE` (when this fortilab has
        /// that command) and the trainee pages show it.
        #[arg(long)]
        exercise: Option<PathBuf>,
        /// Trainee names, one a line, lab 1 first.
        #[arg(long)]
        names: Option<PathBuf>,
        /// A lab that runs elsewhere (its ready report, a file or an http(s) URL), repeatable;
        /// attached labs come after the started ones.
        #[arg(long, value_name = "READY_FILE_OR_URL")]
        attach: Vec<String>,
        /// The class directory: the class file (links and tokens, mode 0600) and every lab's
        /// data (default: $TMPDIR/fortilab-class).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write the class report (JSON, mode 0600) here once every lab has started.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the instructor's table of the class running in --data-dir.
    Status {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The instructor's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `fortilab` binary.
pub fn main() -> ExitCode {
    // Before any thread exists: a second namespaces lab's re-executed orchestrator moves
    // into a network namespace of its own.
    crate::netns::enter_own_netns_if_asked();
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
    fortilab_core::binary::init_tracing(cli.log_format);
    let rt = match fortilab_core::binary::runtime() {
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
                    Err(e) => fortilab_core::binary::exit_for("fortilab compose up", &e),
                },
                Some("down") => match crate::compose::down(&out) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fortilab_core::binary::exit_for("fortilab compose down", &e),
                },
                _ => compose(file, &out, image, lab_dir),
            },
            Command::ComposeInit { config, lab } => match crate::compose::init(&config, &lab) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fortilab_core::binary::exit_for("fortilab compose-init", &e),
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
                    Err(e) => fortilab_core::binary::exit_for("fortilab compose-report", &e),
                }
            }
            Command::Class { command } => {
                let r = match command {
                    ClassCommand::Up {
                        labs,
                        lab,
                        exercise,
                        names,
                        attach,
                        data_dir,
                        ready_file,
                        json,
                    } => {
                        crate::class::run::up(crate::class::run::UpOptions {
                            labs,
                            lab,
                            exercise,
                            names,
                            attach,
                            data_dir,
                            ready_file,
                            json,
                        })
                        .await
                    }
                    ClassCommand::Status { data_dir, json } => {
                        crate::class::run::status(data_dir, json).await
                    }
                };
                match r {
                    Ok(code) => code,
                    Err(e) => fortilab_core::binary::exit_for("fortilab class", &e),
                }
            }
            Command::ReadyCheck { file } => {
                if crate::compose::ready_check(&file) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Command::Console { device, ready_file } => {
                crate::open_console::main(&device, ready_file)
            }
            Command::Snapshot {
                op,
                name,
                attach,
                json,
            } => snapshot_cmd(&op, name.as_deref(), attach, json).await,
            Command::Run {
                scenarios,
                junit,
                seed,
                keep_logs,
                verbose,
                attach,
                network,
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
                    network,
                )
                .await
            }
            Command::Exec { host, lab, command } => exec(&host, lab.as_deref(), &command),
            Command::NetnsClean { lab: Some(p) } => match crate::netns::clean_one(&p) {
                Ok(()) => {
                    println!("fortilab: removed the network of dead lab {p}");
                    ExitCode::SUCCESS
                }
                Err(e) => fortilab_core::binary::exit_for("fortilab netns-clean", &e),
            },
            Command::NetnsClean { lab: None } => {
                for p in crate::netns::clean_stale() {
                    println!("fortilab: removed the network of dead lab {p}");
                }
                ExitCode::SUCCESS
            }
            Command::Up {
                file,
                ready_file,
                data_dir,
                seed,
                json,
                network,
            } => match up(file, ready_file, data_dir, seed, json, network, None).await {
                Ok(code) => code,
                Err(e) => fortilab_core::binary::exit_for("fortilab", &e),
            },
            Command::Exercise(args) => exercise(args).await,
        }
    })
}

/// `fortilab snapshot save|restore|list [NAME] [--attach READY]`: asks the lab's dashboard
/// (`POST /_lab/snapshot`, `GET /_lab/snapshots`, lab token), which holds the lab.
async fn snapshot_cmd(
    op: &str,
    name: Option<&str>,
    attach: Option<String>,
    json: bool,
) -> ExitCode {
    let usage = |m: String| {
        eprintln!("fortilab snapshot: {m}");
        ExitCode::from(2)
    };
    let parsed = crate::snapshot::SnapshotOp::parse(op);
    if parsed.is_none() && op != "list" {
        return usage(format!("unknown operation {op:?} (save, restore or list)"));
    }
    let name = match (parsed, name) {
        (Some(_), None) => return usage(format!("`{op}` needs a snapshot name")),
        (_, Some(n)) => match crate::snapshot::validate_name(n) {
            Ok(()) => Some(n),
            Err(e) => return usage(e.to_string()),
        },
        (None, None) => None,
    };
    let src = attach
        .or_else(|| std::env::var(crate::open_console::READY_ENV).ok())
        .unwrap_or_else(|| {
            crate::open_console::default_ready_file()
                .display()
                .to_string()
        });
    let result = async {
        let lab = crate::attach::Attached::open(&src).await?;
        match parsed {
            Some(op) => {
                let info = lab
                    .snapshot_via_dashboard(op, name.unwrap_or_default())
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else {
                    println!(
                        "snapshot {} {}: lab time {}, {} devices, {} bytes, {} ms",
                        info.name,
                        op.past(),
                        info.lab_time,
                        info.devices.len(),
                        info.bytes,
                        info.elapsed_ms
                    );
                }
            }
            None => {
                let list = lab.snapshot_list().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if list.is_empty() {
                    println!("no snapshots");
                } else {
                    for i in list {
                        println!("{:<24} lab time {}  {} bytes", i.name, i.lab_time, i.bytes);
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fortilab snapshot: {e:#}");
            ExitCode::from(1)
        }
    }
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

async fn exercise(args: ExerciseArgs) -> ExitCode {
    match args.command {
        Some(ExerciseCommand::Status {
            ready_file,
            url,
            json,
        }) => exercise_status(ready_file, url, json).await,
        None => {
            let Some(file) = args.file else {
                eprintln!("fortilab exercise: give an exercise FILE, or `status`");
                return ExitCode::from(2);
            };
            let ex = match crate::exercise::load(&file) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match up(
                Some(file),
                args.ready_file,
                args.data_dir,
                args.seed,
                args.json,
                None,
                Some(ex),
            )
            .await
            {
                Ok(code) => code,
                Err(e) => fortilab_core::binary::exit_for("fortilab", &e),
            }
        }
    }
}

/// `fortilab exercise status`.
async fn exercise_status(ready_file: Option<PathBuf>, url: Option<String>, json: bool) -> ExitCode {
    let (base, token) = match url {
        Some(u) => {
            let mut token = std::env::var(crate::attach::TOKEN_ENV).ok();
            let (u, query) = match u.split_once('?') {
                Some((a, q)) => (a.to_string(), q.to_string()),
                None => (u.clone(), String::new()),
            };
            for (k, v) in form_pairs(&query) {
                if k == "token" {
                    token = Some(v);
                }
            }
            (u, token)
        }
        None => {
            let path = ready_file
                .or_else(|| std::env::var_os(crate::open_console::READY_ENV).map(PathBuf::from))
                .unwrap_or_else(crate::open_console::default_ready_file);
            let report: Value = match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(e) => {
                    eprintln!(
                        "fortilab exercise status: no running lab: {}: {e} (pass the lab's --ready-file or its dashboard URL)",
                        path.display()
                    );
                    return ExitCode::from(1);
                }
            };
            let Some(dash) = report["dashboard"].as_str() else {
                eprintln!(
                    "fortilab exercise status: {} has no dashboard URL",
                    path.display()
                );
                return ExitCode::from(1);
            };
            (
                dash.to_string(),
                report["lab_token"].as_str().map(str::to_string),
            )
        }
    };
    let url = if base.contains("/_lab/exercise") {
        base
    } else {
        format!("{}/_lab/exercise", base.trim_end_matches('/'))
    };
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fortilab exercise status: {e}");
            return ExitCode::from(1);
        }
    };
    let mut req = client.get(&url);
    if let Some(t) = &token {
        req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t);
    }
    let v: Value = match req.send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
        Ok(r) => {
            let st = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            eprintln!(
                "fortilab exercise status: GET {url}: HTTP {st}{}",
                body["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("fortilab exercise status: GET {url}: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{v}");
    } else {
        print!("{}", format_progress(&v));
    }
    if v["done"].as_u64().is_some() && v["done"] == v["total"] {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The progress of `GET /_lab/exercise` as lines for a terminal.
pub fn format_progress(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!(
        "{} ({}): {}/{} task(s) done\n",
        s(&v["exercise"]["title"]),
        s(&v["exercise"]["name"]),
        v["done"].as_u64().unwrap_or(0),
        v["total"].as_u64().unwrap_or(0)
    );
    let current = v["current"].as_str();
    for (i, t) in v["tasks"].as_array().into_iter().flatten().enumerate() {
        let mark = if t["done"] == Value::Bool(true) {
            "✔"
        } else if t["id"].as_str() == current {
            "▶"
        } else {
            "·"
        };
        let mut line = format!(
            "  {mark} {:>2}. {} ({})",
            i + 1,
            s(&t["title"]),
            s(&t["id"])
        );
        if let Some(at) = t["done_at"].as_str() {
            line.push_str(&format!("  done {at}"));
        }
        let shown = t["hints_shown"].as_u64().unwrap_or(0);
        if shown > 0 {
            line.push_str(&format!(
                "  hints {shown}/{}",
                t["hints_total"].as_u64().unwrap_or(0)
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(a) = v["last_activity"].as_str() {
        out.push_str(&format!("  last activity {a}\n"));
    }
    out
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = false;
    for f in files {
        let exercise = LabDef::load(f)
            .map(|d| crate::exercise::is_exercise(&d))
            .unwrap_or(false);
        if exercise {
            match crate::exercise::load(f) {
                Ok(x) => println!("{}: ok (exercise, {} task(s))", f.display(), x.tasks.len()),
                Err(e) => {
                    eprintln!("{e}");
                    bad = true;
                }
            }
            continue;
        }
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
    network: Option<NetworkMode>,
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
    let namespaces = loaded
        .iter()
        .any(|(_, (d, _))| network.unwrap_or(d.lab.network) == NetworkMode::Namespaces);
    if attach.is_none() && namespaces {
        if let Err(e) = crate::netns::claim_host_or_reexec() {
            eprintln!("fortilab: {e:#}");
            return ExitCode::from(2);
        }
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
    for (path, (mut def, steps)) in loaded {
        if let Some(n) = network {
            def.lab.network = n;
        }
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
    network: Option<NetworkMode>,
    exercise: Option<crate::exercise::Exercise>,
) -> anyhow::Result<ExitCode> {
    // Without --ready-file the report still goes to a well-known place, for `fortilab console`.
    let default_ready = ready_file.is_none();
    let ready_file = Some(ready_file.unwrap_or_else(crate::open_console::default_ready_file));
    let def = match (&exercise, &file) {
        (Some(x), _) => x.lab.clone(),
        (None, Some(f)) => {
            LabDef::load(f).map_err(|e| fortilab_core::binary::UsageError::new(e.to_string()))?
        }
        (None, None) => LabDef::seed(),
    };
    let mut def = def;
    if let Some(n) = network {
        def.lab.network = n;
    }
    if def.lab.network == NetworkMode::Namespaces {
        crate::netns::check_privileges()
            .map_err(|e| fortilab_core::binary::UsageError::new(e.to_string()))?;
        crate::netns::claim_host_or_reexec()?;
    }
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
    if let Some(x) = exercise {
        let run = crate::exercise::engine::ExerciseRun::new(x, session.clone());
        session.set_exercise(run.clone());
        // Supervised (`/_lab/tasks` on the dashboard): a panicked runner is reported and
        // restarted; it re-reads the devices, so progress resumes where the lab is.
        let stop = streams.clone();
        session.supervisor.spawn(
            crate::exercise::engine::RUNNER_TASK,
            streams.clone(),
            move || run.clone().run(stop.clone()),
        );
    }
    let (listener, dash_addr) = crate::dashboard::bind().await?;
    let dashboard = format!("http://{dash_addr}/");
    session.set_dashboard(&dashboard);
    let server = crate::dashboard::serve(listener, session.clone(), streams.clone())?;
    let snapshot = session.report();
    session.write_ready_file()?;
    let sign_in = crate::dashboard::sign_in_url(&dashboard, session.lab_token());
    print_summary(&snapshot, &sign_in, started, json);
    if let Some(x) = session.exercise() {
        if !json {
            println!("exercise: {} ({} task(s)); progress in the dashboard's Exercise panel and `fortilab exercise status`", x.exercise.title, x.exercise.tasks.len());
            for (i, t) in x.exercise.tasks.iter().enumerate() {
                println!("  {:>2}. {} ({})", i + 1, t.title, t.id);
            }
            println!();
        }
    }
    let on_loopback = def_network_loopback(&snapshot);
    for l in crate::lab::non_loopback_listeners(&snapshot)
        .into_iter()
        .filter(|_| on_loopback)
    {
        eprintln!(
            "fortilab: warning: listener not on loopback: {l} (anyone who can reach it can try \
             the lab's credentials; the lab surfaces need the lab token)"
        );
    }
    // Supervised with the orchestrator's other tasks (`/_lab/tasks` on the dashboard).
    let printer = {
        let (tl, stop) = (timeline.clone(), streams.clone());
        session
            .supervisor
            .spawn(PRINTER_TASK, streams.clone(), move || {
                timeline::print_live(tl.clone(), json, stop.clone())
            })
    };

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

/// The supervised task of `fortilab up` that prints the timeline to the terminal.
pub const PRINTER_TASK: &str = "terminal timeline";

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

/// Whether a ready report is a loopback lab's (namespaces labs listen on their lab addresses).
fn def_network_loopback(report: &Value) -> bool {
    report.get("network").and_then(Value::as_str) != Some("namespaces")
}

/// `fortilab exec HOST -- CMD…`.
fn exec(host: &str, lab: Option<&str>, command: &[String]) -> ExitCode {
    let ns = match crate::netns::find_host(host, lab) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fortilab exec: {e:#}");
            return ExitCode::from(2);
        }
    };
    match std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(command)
        .status()
    {
        Ok(st) => match st.code() {
            Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
            None => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("fortilab exec: ip netns exec {ns}: {e}");
            ExitCode::from(1)
        }
    }
}
