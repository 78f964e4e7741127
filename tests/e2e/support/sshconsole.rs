//! An interactive OpenSSH console session (`ssh -tt`) kept open across lab operations: lines
//! are typed one at a time and the transcript is read as it arrives, so a test can check that
//! a session opened before an operation (a lab snapshot) still answers after it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `ssh -tt user@127.0.0.1 -p PORT`.
pub struct SshConsole {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
}

impl SshConsole {
    /// Logs in as `user` with `password` (through SSH_ASKPASS; `dir` holds the helper and
    /// the known-hosts file) and waits for the first prompt ending in `prompt_end`.
    pub fn open(
        dir: &Path,
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        prompt_end: &str,
    ) -> SshConsole {
        let askpass = dir.join(format!("askpass-{}.sh", addr.port()));
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut child = Command::new(super::require_program("ssh", "openssh-client"))
            .args(["-F", "/dev/null", "-tt", "-p", &addr.port().to_string()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{user}@{}", addr.ip()))
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let c = SshConsole { child, stdin, out };
        c.wait_output("the console's first prompt", 0, |t| {
            t.trim_end().ends_with(prompt_end.trim_end())
        });
        c
    }

    /// The transcript so far.
    pub fn transcript(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Types `line` (a newline is added); returns the transcript length before it, for
    /// [`SshConsole::wait_output`].
    pub fn type_line(&mut self, line: &str) -> usize {
        let at = self.out.lock().unwrap().len();
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("typing into the console (the session ended?)");
        at
    }

    /// Waits until the transcript after byte `from` satisfies `cond`; returns that part.
    pub fn wait_output(&self, what: &str, from: usize, cond: impl Fn(&str) -> bool) -> String {
        super::wait_for(what, Duration::from_secs(15), || {
            let t = self.out.lock().unwrap();
            let tail = t.get(from..).unwrap_or("");
            cond(tail).then(|| tail.to_string())
        })
    }

    /// Whether the ssh process is still running (the session is open).
    pub fn is_open(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for SshConsole {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"exit\n");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
