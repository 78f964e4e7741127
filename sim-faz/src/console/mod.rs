//! The FortiAnalyzer console: the CLI engine ([`engine`]) behind lab-core's SSH server, the
//! administrator accounts it logs in with, and the JSON-RPC `/cli/global/system/admin/user`
//! object over the same accounts.
//!
//! - [`FazConsole`] is the SSH server's backend: password login against
//!   `config system admin user` (the ready file's `admin` among them); a wrong password is
//!   refused and written to the FortiAnalyzer event log.
//! - Each login gets a [`engine::Cli`] over the shared [`Faz`] state: what the console commits
//!   is what the JSON-RPC API reads, and both persist through the same store keys.

pub mod engine;
pub mod schema;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use fortilab_core::ssh_console::{
    BoxFuture, Completion, ConsoleBackend, ConsoleReply, ConsoleSession, SshConsole,
};
use fortilab_core::EventKind;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::faz::{AdminUser, Faz};

/// The running SSH console server.
pub type SshConsoleHandle = SshConsole;

/// Starts the SSH console on `listener` (host key at `data_dir/ssh_host_ed25519_key`).
pub async fn serve(
    faz: Arc<Faz>,
    listener: TcpListener,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<SshConsole> {
    let key = data_dir.join("ssh_host_ed25519_key");
    let backend: Arc<dyn ConsoleBackend> = Arc::new(FazConsole { faz });
    Ok(fortilab_core::ssh_console::serve_ssh(listener, &key, backend, shutdown).await?)
}

/// The SSH server's backend.
pub struct FazConsole {
    pub faz: Arc<Faz>,
}

impl ConsoleBackend for FazConsole {
    fn login<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
        Box::pin(async move {
            let faz = self.faz.clone();
            let (user, password) = (user.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || login(&faz, &user, &password, peer))
                .await
                .ok()
                .flatten()
        })
    }

    fn supervisor(&self) -> fortilab_core::supervise::Supervisor {
        self.faz.supervisor.clone()
    }
}

/// Checks the password and opens a session (blocking: writes the event log).
pub fn login(
    faz: &Arc<Faz>,
    user: &str,
    password: &str,
    peer: SocketAddr,
) -> Option<Box<dyn ConsoleSession>> {
    let ok = faz
        .check_admin(user, password)
        .filter(|a| a.profileid != "No_Permission_User")
        .is_some();
    log_login(faz, user, "ssh", Some(peer), ok);
    if !ok {
        return None;
    }
    let ui = format!("ssh({})", peer.ip());
    Some(Box::new(Session {
        cli: Some(engine::Cli::new(faz.clone(), user, &ui)),
        faz: faz.clone(),
        user: user.to_string(),
        ui,
        failed: false,
    }))
}

/// Writes a login (or failed login) to the FortiAnalyzer event log and the lab timeline.
pub fn log_login(faz: &Faz, user: &str, via: &str, peer: Option<SocketAddr>, ok: bool) {
    let ui = match peer {
        Some(p) => format!("{via}({})", p.ip()),
        None => via.to_string(),
    };
    if ok {
        faz.admin_event(
            "0031040034",
            "information",
            "Admin login successful",
            user,
            &ui,
            "login",
            "success",
            &format!("User {user} login successful from {ui}"),
        );
        faz.bus
            .emit(EventKind::ConsoleLogin, json!({"user": user, "ui": ui}));
    } else {
        faz.admin_event(
            "0031040035",
            "warning",
            "Admin login failed",
            user,
            &ui,
            "login",
            "failed",
            &format!("User {user} login failed from {ui}"),
        );
        faz.bus.emit(
            EventKind::ConsoleLoginFailed,
            json!({"user": user, "ui": ui}),
        );
    }
}

/// One logged-in console.
struct Session {
    /// Taken while a command runs on a blocking thread.
    cli: Option<engine::Cli>,
    faz: Arc<Faz>,
    user: String,
    ui: String,
    /// The last command failed (exit status of `ssh host "command"`).
    failed: bool,
}

impl ConsoleSession for Session {
    fn prompt(&self) -> String {
        self.cli.as_ref().map(|c| c.prompt()).unwrap_or_default()
    }

    fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
        Box::pin(async move {
            let Some(mut cli) = self.cli.take() else {
                return ConsoleReply {
                    output: String::new(),
                    close: true,
                };
            };
            if !line.trim().is_empty() {
                // Exercises check that a trainee used a command (lab event, never a product log).
                let resolved = cli
                    .canonical(line)
                    .map(|r| fortilab_core::ssh_console::redact_command(&r));
                self.faz.bus.emit(
                    EventKind::ConsoleCommand,
                    json!({"user": self.user, "ui": self.ui,
                           "command": fortilab_core::ssh_console::redact_command(line),
                           "resolved": resolved}),
                );
            }
            let line = line.to_string();
            let res = tokio::task::spawn_blocking(move || {
                let out = cli.execute(&line);
                (cli, out)
            })
            .await;
            match res {
                Ok((cli, out)) => {
                    self.cli = Some(cli);
                    self.failed = engine::is_failure(&out.text);
                    ConsoleReply {
                        output: out.text,
                        close: out.close,
                    }
                }
                Err(_) => ConsoleReply {
                    output: "Command fail. Return code -1\n".into(),
                    close: true,
                },
            }
        })
    }

    fn last_failed(&self) -> bool {
        self.failed
    }

    fn help(&self, line: &str) -> String {
        self.cli.as_ref().map(|c| c.help(line)).unwrap_or_default()
    }

    fn complete(&self, line: &str) -> Completion {
        match self.cli.as_ref() {
            Some(c) => {
                let (line, candidates) = c.complete(line);
                Completion { line, candidates }
            }
            None => Completion {
                line: line.to_string(),
                candidates: Vec::new(),
            },
        }
    }

    /// The administrator idle timeout (`admintimeout` of `system global` over JSON-RPC, the
    /// config file's `[api] session_timeout`: 300 lab seconds by default) [P].
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        let secs = self.faz.id.session_timeout.max(1) as u64;
        Some(self.faz.clock.to_real(std::time::Duration::from_secs(secs)))
    }

    fn on_idle_timeout(&mut self) {
        self.faz.bus.emit(
            EventKind::ConsoleTimeout,
            json!({"user": self.user, "ui": self.ui}),
        );
    }

    fn on_close(&mut self) {
        let faz = self.faz.clone();
        let (user, ui) = (self.user.clone(), self.ui.clone());
        faz.bus
            .emit(EventKind::ConsoleLogout, json!({"user": user, "ui": ui}));
    }
}

// ------------------------------------------------------------------ JSON-RPC object

fn rpc_err(code: i64, msg: &str) -> (i64, String) {
    (code, msg.to_string())
}

fn admin_json(a: &AdminUser) -> Value {
    json!({"userid": a.name, "profileid": a.profileid, "rpc-permit": a.rpc_permit,
           "description": a.description, "password": ["ENC", schema::admin_get(a, "password").trim_start_matches("ENC ")],
           "user_type": "local"})
}

fn data_of(p: &Map<String, Value>) -> Map<String, Value> {
    match p.get("data") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Array(a)) => a
            .first()
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default(),
        _ => p.clone(),
    }
}

/// `get|add|set|update|delete /cli/global/system/admin/user[/<name>]`: the same accounts the
/// console edits. `caller` must be a Super_User (or the API key).
pub fn admin_rpc(
    faz: &Faz,
    method: &str,
    name: Option<&str>,
    p: &Map<String, Value>,
    caller: &str,
) -> Result<Option<Value>, (i64, String)> {
    if method == "get" {
        return match name {
            None => {
                let v: Vec<Value> = faz.admins.list().iter().map(admin_json).collect();
                Ok(Some(Value::Array(v)))
            }
            Some(n) => faz
                .admin(n)
                .map(|a| Some(admin_json(&a)))
                .ok_or_else(|| rpc_err(-3, "Object does not exist")),
        };
    }
    let allowed = caller == "api-user" || faz.admin(caller).map(|a| a.is_super()) == Some(true);
    if !allowed {
        return Err(rpc_err(-11, "No permission for the resource"));
    }
    match method {
        "delete" => {
            let n = name.ok_or_else(|| rpc_err(-10, "The data is invalid for selected url"))?;
            if n == caller {
                return Err(rpc_err(-10, "Can not delete the current user"));
            }
            match faz.delete_admin(n) {
                Ok(true) => Ok(None),
                Ok(false) => Err(rpc_err(-3, "Object does not exist")),
                Err(e) => Err(rpc_err(-1, &e.to_string())),
            }
        }
        "add" | "set" | "update" | "replace" => {
            let d = data_of(p);
            let n = name
                .map(String::from)
                .or_else(|| d.get("userid").and_then(|v| v.as_str()).map(String::from))
                .ok_or_else(|| rpc_err(-10, "The data is invalid for selected url: userid"))?;
            let existing = faz.admin(&n);
            if method == "add" && existing.is_some() {
                return Err(rpc_err(-2, "Object already exists"));
            }
            if method == "update" && existing.is_none() {
                return Err(rpc_err(-3, "Object does not exist"));
            }
            let mut a = existing.unwrap_or_else(|| AdminUser::new(&n, "Restricted_User"));
            for (k, v) in &d {
                if k == "userid" || k == "user_type" {
                    continue;
                }
                let Some(f) = schema::field(schema::ADMIN_USER, k).filter(|f| f.name == k) else {
                    continue; // fields this lab does not model are accepted and ignored
                };
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(x) => x
                        .iter()
                        .rev()
                        .find_map(|y| y.as_str())
                        .unwrap_or("")
                        .to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(rpc_err(
                            -10,
                            &format!("The data is invalid for selected url: {k}"),
                        ))
                    }
                };
                let s = schema::check(f, &s).map_err(|_| {
                    rpc_err(-10, &format!("The data is invalid for selected url: {k}"))
                })?;
                schema::admin_set(&mut a, f.name, &s, &faz.new_salt());
            }
            faz.save_admin(a).map_err(|e| rpc_err(-1, &e.to_string()))?;
            Ok(None)
        }
        _ => Err(rpc_err(-6, "Invalid url")),
    }
}

#[cfg(test)]
mod tests;
