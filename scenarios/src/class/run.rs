//! `fortilab class up` and `fortilab class status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use fortilab_core::binary::UsageError;
use fortilab_core::secrets::LabToken;

use super::labs::{ClassLab, Source, StartSpec};
use super::server::{self, Class};

/// Options of `fortilab class up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub labs: usize,
    pub lab: Option<PathBuf>,
    pub exercise: Option<PathBuf>,
    pub names: Option<PathBuf>,
    pub attach: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub ready_file: Option<PathBuf>,
    pub json: bool,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError::new(msg.into()).into()
}

/// Runs a class until SIGINT/SIGTERM, then stops every lab.
pub async fn up(o: UpOptions) -> anyhow::Result<ExitCode> {
    let names = match &o.names {
        Some(p) => super::parse_names(
            &std::fs::read_to_string(p)
                .map_err(|e| usage(format!("--names {}: {e}", p.display())))?,
        ),
        None => Vec::new(),
    };
    let n = super::class_size(o.labs, o.attach.len(), names.len()).map_err(usage)?;
    let exercise_text = match &o.exercise {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| usage(format!("--exercise {}: {e}", p.display())))?,
        ),
        None => None,
    };
    if o.lab.is_some() && o.exercise.is_some() {
        return Err(usage(
            "--lab and --exercise: an exercise names its own starting lab",
        ));
    }
    let lab = match &o.lab {
        Some(p) => {
            crate::labdef::LabDef::load(p).map_err(|e| usage(e.to_string()))?;
            Some(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        }
        None => None,
    };
    let dir = o.data_dir.clone().unwrap_or_else(super::default_dir);
    if let Ok(old) = super::read_class_file(&dir) {
        if let Some(pid) = old["pid"].as_u64() {
            if pid != u64::from(std::process::id()) && super::pid_alive(pid) {
                return Err(usage(format!(
                    "a class is already running in {} (pid {pid}); give another --data-dir",
                    dir.display()
                )));
            }
        }
    }
    fortilab_core::secrets::create_private_dir(&dir)
        .with_context(|| format!("--data-dir {}", dir.display()))?;
    let exe = crate::procs::device_executable()?;
    let exercise = o
        .exercise
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let spec = StartSpec {
        dir: dir.clone(),
        lab,
        exercise_command: exercise.is_some() && super::labs::has_exercise_command(&exe),
        exercise,
    };
    let shutdown = fortilab_core::shutdown::signal_token();
    let labs_stop = CancellationToken::new();
    let mut labs = Vec::new();
    for i in 1..=n {
        let source = if i <= o.labs {
            Source::Started
        } else {
            Source::Attached(o.attach[i - o.labs - 1].clone())
        };
        labs.push(ClassLab::new(
            i,
            super::trainee_name(&names, i),
            source,
            &spec,
            labs_stop.clone(),
        ));
    }
    let class = Arc::new(Class {
        labs,
        spec: spec.clone(),
        instructor_token: LabToken::generate(),
        exercise_text,
        last_view_ms: AtomicI64::new(0),
    });

    // The pages: one listener for the instructor, one per trainee.
    let pages = CancellationToken::new();
    let (listener, addr) = server::bind().await?;
    let instructor_url = format!("http://{addr}/");
    let mut servers = vec![tokio::spawn(server::serve_instructor(
        listener,
        class.clone(),
        pages.clone(),
    ))];
    let mut lab_entries = Vec::new();
    for lab in &class.labs {
        let (listener, addr) = server::bind().await?;
        let url = format!("http://{addr}/");
        *lab.page.lock().unwrap_or_else(|e| e.into_inner()) = url.clone();
        lab_entries.push(json!({
            "index": lab.index,
            "trainee": lab.trainee,
            "url": url,
            "token": lab.token.as_str(),
            "sign_in": format!("{url}?token={}", lab.token.as_str()),
        }));
        servers.push(tokio::spawn(server::serve_trainee(
            listener,
            class.clone(),
            lab.clone(),
            pages.clone(),
        )));
    }
    let file = super::class_file_json(
        std::process::id(),
        &instructor_url,
        class.instructor_token.as_str(),
        &lab_entries,
    );
    let class_file = dir.join(super::CLASS_FILE);
    fortilab_core::secrets::write_private(&class_file, &serde_json::to_vec_pretty(&file)?)?;
    print_pages(&file, &class_file, &spec, o.json);

    // Every lab at once.
    let t0 = Instant::now();
    let starts = class.labs.iter().map(|l| {
        let spec = spec.clone();
        async move { (l.index, l.start(&spec).await) }
    });
    let results = tokio::select! {
        r = futures::future::join_all(starts) => Some(r),
        _ = shutdown.cancelled() => None,
    };
    let elapsed = t0.elapsed();
    if let Some(results) = &results {
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("lab {i}: {e:#}")))
            .collect();
        for f in &failed {
            eprintln!("fortilab class: {f}");
        }
        let ready = results.len() - failed.len();
        if o.json {
            println!(
                "{}",
                json!({"kind": "class.ready", "ready": ready, "labs": n, "ms": elapsed.as_millis()})
            );
        } else {
            println!(
                "fortilab class: {ready}/{n} labs ready in {} ms. Ctrl-C stops the class.",
                elapsed.as_millis()
            );
        }
        if let Some(p) = &o.ready_file {
            let mut r = file.clone();
            r["ready_ms"] = json!(elapsed.as_millis());
            r["status"] = class.json();
            fortilab_core::ready::write_ready(p, &r)?;
        }
    }

    // Supervision until Ctrl-C / SIGTERM.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n_tick: u64 = 0;
    while results.is_some() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        n_tick += 1;
        for lab in &class.labs {
            lab.watch_exit().await;
        }
        // Progress: every second while a page is watched, else every 10 s.
        if class.watched(10) || n_tick % 10 == 0 {
            let polls = class.labs.iter().map(|l| l.poll_progress());
            futures::future::join_all(polls).await;
        }
    }
    eprintln!("fortilab class: stopping {n} lab(s)");
    labs_stop.cancel();
    let stops = class.labs.iter().map(|l| l.stop());
    let bad: Vec<String> = futures::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect();
    pages.cancel();
    for s in servers {
        let _ = s.await;
    }
    let _ = std::fs::remove_file(&class_file);
    let _ = std::fs::remove_dir_all(spec.labs_dir());
    if let Some(p) = &o.ready_file {
        let _ = std::fs::remove_file(p);
    }
    if bad.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("fortilab class: not cleanly stopped: {}", bad.join(", "));
        Ok(ExitCode::from(1))
    }
}

fn print_pages(file: &Value, class_file: &std::path::Path, spec: &StartSpec, json_out: bool) {
    if json_out {
        println!(
            "{}",
            json!({"kind": "class.pages", "class": file, "class_file": class_file.display().to_string()})
        );
        return;
    }
    println!(
        "fortilab class: starting {} lab(s)",
        file["labs"].as_array().map_or(0, Vec::len)
    );
    println!(
        "  instructor     {}",
        file["instructor"]["sign_in"].as_str().unwrap_or("-")
    );
    for l in file["labs"].as_array().into_iter().flatten() {
        println!(
            "  lab {:<3} {:<16} {}",
            l["index"].as_u64().unwrap_or(0),
            l["trainee"].as_str().unwrap_or("-"),
            l["sign_in"].as_str().unwrap_or("-")
        );
    }
    println!(
        "  class file     {} (mode 0600: these links and tokens)",
        class_file.display()
    );
    if let Some(note) = spec.mode_note() {
        println!("  note           {note}");
    }
}

/// `fortilab class status`: the instructor's table of a running class.
pub async fn status(data_dir: Option<PathBuf>, json_out: bool) -> anyhow::Result<ExitCode> {
    let dir = data_dir.unwrap_or_else(super::default_dir);
    let file = super::read_class_file(&dir).map_err(|e| usage(format!("{e:#}")))?;
    if let Some(pid) = file["pid"].as_u64() {
        if !super::pid_alive(pid) {
            bail!(
                "the class in {} is not running (pid {pid} is gone)",
                dir.display()
            );
        }
    }
    let url = file["instructor"]["url"].as_str().unwrap_or("");
    let token = file["instructor"]["token"].as_str().unwrap_or("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = client
        .get(format!("{}api/class", url))
        .header(fortilab_core::secrets::LAB_TOKEN_HEADER, token)
        .send()
        .await
        .with_context(|| format!("GET {url}api/class"))?;
    if !resp.status().is_success() {
        bail!("GET {url}api/class: HTTP {}", resp.status());
    }
    let class: Value = resp.json().await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&class)?);
    } else {
        print!("{}", super::render_table(&class));
        if let Some(n) = class["note"].as_str() {
            println!("note: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
