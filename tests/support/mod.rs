//! Harness for end-to-end tests: spawn the real binaries, wait for their ready files, stop them
//! with SIGTERM and check they exit cleanly.
#![allow(dead_code)]

pub mod ansible;
pub mod devices;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Polls `cond` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        cmd.envs(env.iter().copied())
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

/// Runs a Python snippet with the given environment; returns (status ok, stdout, stderr).
pub fn python(script: &str, env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
