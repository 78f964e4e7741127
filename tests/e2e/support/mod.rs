//! Harness for end-to-end tests: spawn the real binaries, wait for their ready files, stop them
//! with SIGTERM and check they exit cleanly.
#![allow(dead_code)]

pub mod ansible;
pub mod devices;
pub mod sshconsole;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Held by the tests that change the host's network (the lab's unreachable routes, Compose
/// networks, namespaces labs' host legs): they claim the same addresses, so one at a time.
pub static HOST_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Path of a binary of the root package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "fortilab" => PathBuf::from(env!("CARGO_BIN_EXE_fortilab")),
        "sim-fortigate" => PathBuf::from(env!("CARGO_BIN_EXE_sim-fortigate")),
        "sim-faz" => PathBuf::from(env!("CARGO_BIN_EXE_sim-faz")),
        "sim-ems" => PathBuf::from(env!("CARGO_BIN_EXE_sim-ems")),
        "sim-endpoint" => PathBuf::from(env!("CARGO_BIN_EXE_sim-endpoint")),
        "sim-internet" => PathBuf::from(env!("CARGO_BIN_EXE_sim-internet")),
        other => panic!("unknown binary {other}"),
    }
}

/// The lab token of every device a test process spawns (`FORTILAB_LAB_TOKEN` in their
/// environment), so devices started one by one share it as a lab's do; `/_lab/` calls send it
/// as `X-Fortilab-Token`.
pub fn lab_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| fortilab_core::secrets::random_token(32))
}

/// The header line curl and raw clients send on `/_lab/` calls.
pub fn lab_header() -> String {
    format!("X-Fortilab-Token: {}", lab_token())
}

/// Polls a condition until it holds or the timeout passes (the one wait helper of the tests).
pub use fortilab_core::wait::wait_for_blocking as wait_for;

/// A spawned device process, SIGTERMed (then killed) on drop.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub ready: serde_json::Value,
    pub dir: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `bin` with `args` plus `--ready-file` and waits for the ready report.
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        Self::spawn_with_env(name, dir, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables for the child (never set them on the
    /// test process: tests run in parallel).
    pub fn spawn_with_env(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        let ready_path = dir.join(format!("{name}.ready.json"));
        let _ = std::fs::remove_file(&ready_path);
        let stderr_path = dir.join(format!("{name}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(bin(name));
        cmd.env(fortilab_core::secrets::LAB_TOKEN_ENV, lab_token())
            .envs(env.iter().copied())
            .args(args)
            .arg("--ready-file")
            .arg(&ready_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    break v;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("{name} exited with {status} before ready:\n{err}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("{name} not ready within 30 s:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Proc {
            name: name.to_string(),
            child: Some(child),
            ready,
            dir: dir.to_path_buf(),
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        unsafe_free_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop within 15 s of SIGTERM:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process with SIGKILL (crash simulation).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_free_kill(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal with the `kill` command (keeps the tests free of `unsafe`).
pub fn unsafe_free_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The Python interpreter of the tests: `FORTILAB_PYTHON` (set by `cargo xtask test`, which
/// builds `<target>/venv` from `tests/python-requirements.txt`), else that venv if an earlier
/// `cargo xtask` run left it. Never a bare `python3`: the system interpreter lacks the clients.
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FORTILAB_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "no Python environment for the tests: FORTILAB_PYTHON is not set and {} does not \
         exist.\nRun the tests with `cargo xtask test` (it creates the environment from \
         tests/python-requirements.txt), or `cargo xtask setup` once before `cargo test`.",
        venv.display()
    );
}

/// A `Command` running the tests' Python interpreter, after checking it has `modules`.
pub fn python_command(modules: &[&str]) -> Command {
    let py = python_path();
    let check = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    if !modules.is_empty() {
        let ok = Command::new(&py)
            .args(["-c", &check])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the Python environment {} lacks {modules:?}: run `cargo xtask setup` (it installs \
             tests/python-requirements.txt), or set FORTILAB_PYTHON to an interpreter that has them",
            py.display()
        );
    }
    Command::new(py)
}

/// Panics with the Debian package to install when `program` is not on PATH (or in an sbin
/// directory), so a missing tool reads as such rather than as a failure deep in a test.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs `{program}`, which is not installed: `apt-get install {package}` \
                 (or run the tests with `cargo xtask test`, which installs it)"
            )
        })
}

/// Runs a Python snippet with the given environment; returns (status ok, stdout, stderr).
pub fn python(script: &str, env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = python_command(&[]);
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(line) = stderr
        .lines()
        .find(|l| l.starts_with("ModuleNotFoundError"))
    {
        panic!(
            "the tests' Python environment {} lacks a package ({line}): run `cargo xtask setup` \
             (it installs tests/python-requirements.txt)",
            python_path().display()
        );
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Process ids (zombies excluded: exited, not yet reaped) whose command line mentions `needle`
/// (a test's own data directory, so other tests' processes never count).
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                // Zombies (already exited, not yet reaped) do not count as running.
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if !status.contains("State:\tZ") {
                    out.push(pid);
                }
            }
        }
    }
    out
}
