//! Device processes: spawn, wait for the ready report, stop, kill, restart.
//!
//! Every device is a separate process. They are started from this very executable with argv[0]
//! set to the device name (the `fortilab` binary carries every device), with a piped stdin and
//! `FORTILAB_EXIT_WITH_STDIN=1`: if the orchestrator dies, even by SIGKILL, the pipe closes and
//! each device drains and exits. No process outlives its lab.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

/// How a device process ended or stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Exited(Option<i32>),
}

/// mimalloc's switch for transparent huge pages. mimalloc asks for huge pages on its arenas
/// (`madvise(MADV_HUGEPAGE)`), so every 2 MiB region an idle device touches was backed whole: an
/// idle seed lab took 138 MiB PSS with them and 60 MiB without (debug build). The lab's processes
/// (devices, and a class's labs) run with `MIMALLOC_ALLOW_THP=0` unless the environment sets it.
pub const MIMALLOC_THP_ENV: &str = "MIMALLOC_ALLOW_THP";

/// One device process.
pub struct DeviceProc {
    /// The binary name (`sim-fortigate`, ...), also argv[0].
    pub program: String,
    /// A label for messages (`fortigate`, `endpoints-1`).
    pub label: String,
    pub args: Vec<String>,
    pub ready_file: PathBuf,
    pub stderr_file: PathBuf,
    child: Option<tokio::process::Child>,
    stdin: Option<tokio::process::ChildStdin>,
    /// The last ready report.
    pub ready: Value,
    /// The network namespace it runs in (namespaces mode: `ip netns exec NS` of a link named
    /// after the device, so argv[0] still selects it).
    pub netns: Option<String>,
    /// Environment variables the process must not inherit (a class's labs drop
    /// `FORTILAB_LAB_TOKEN`, so each lab makes its own token).
    pub env_remove: Vec<String>,
}

impl std::fmt::Debug for DeviceProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceProc")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The executable that carries every device: this one.
pub fn device_executable() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the fortilab executable")
}

impl DeviceProc {
    pub fn new(program: &str, label: &str, dir: &Path, args: Vec<String>) -> Self {
        Self {
            program: program.to_string(),
            label: label.to_string(),
            args,
            ready_file: dir.join(format!("{label}.ready.json")),
            stderr_file: dir.join(format!("{label}.log")),
            child: None,
            stdin: None,
            ready: Value::Null,
            netns: None,
            env_remove: Vec::new(),
        }
    }

    /// Spawns the process (without waiting for ready).
    pub fn spawn(&mut self, extra: &[String]) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.ready_file);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_file)
            .with_context(|| format!("{}", self.stderr_file.display()))?;
        let exe = device_executable()?;
        let std_cmd = match &self.netns {
            None => {
                let mut c = std::process::Command::new(&exe);
                c.arg0(&self.program);
                c
            }
            Some(ns) => {
                // `ip netns exec` executes a path: a symlink named after the device.
                let bin = self
                    .ready_file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("bin");
                std::fs::create_dir_all(&bin)?;
                let link = bin.join(&self.program);
                if std::fs::read_link(&link).ok().as_deref() != Some(exe.as_path()) {
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&exe, &link)
                        .with_context(|| format!("{}", link.display()))?;
                }
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&link);
                c
            }
        };
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.args(&self.args)
            .args(extra)
            .arg("--ready-file")
            .arg(&self.ready_file)
            .env(fortilab_core::shutdown::EXIT_WITH_STDIN_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        if std::env::var_os(MIMALLOC_THP_ENV).is_none() {
            cmd.env(MIMALLOC_THP_ENV, "0");
        }
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.program))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the ready report (or the process's death).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<&Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.ready_file) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    self.ready = v;
                    return Ok(&self.ready);
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "{} exited ({status}) before it was ready; its log ({}) ends:\n{}",
                        self.label,
                        self.stderr_file.display(),
                        tail(&self.stderr_file, 20)
                    );
                }
            } else {
                bail!("{} is not running", self.label);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {timeout:?}; its log ends:\n{}",
                    self.label,
                    tail(&self.stderr_file, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn state(&mut self) -> ProcState {
        match self.child.as_mut() {
            None => ProcState::Exited(None),
            Some(c) => match c.try_wait() {
                Ok(None) => ProcState::Running,
                Ok(Some(st)) => ProcState::Exited(st.code()),
                Err(_) => ProcState::Exited(None),
            },
        }
    }

    /// Whether the process is on its way out: its main thread has exited (a zombie in
    /// `/proc/<pid>/stat`) while other threads are still being torn down, so it cannot be
    /// reaped yet and [`DeviceProc::state`] still says `Running` (what a `kill -9` from outside
    /// looks like for a few milliseconds).
    pub fn dying(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        )
    }

    /// The process's state once a dying process (see [`DeviceProc::dying`]) has been reaped,
    /// waiting up to `within` for it.
    pub async fn settled_state(&mut self, within: Duration) -> ProcState {
        let deadline = Instant::now() + within;
        loop {
            let st = self.state();
            if st != ProcState::Running || !self.dying() || Instant::now() > deadline {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then wait up to `grace` for a clean exit, then SIGKILL. Returns the exit code.
    pub async fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        self.stdin = None;
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(st)) => st.code(),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// SIGKILL (a crash).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.stdin = None;
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
