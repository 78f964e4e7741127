//! The FortiGate console: the FortiOS CLI over SSH (`fortilab_core::console`) and the same
//! command engine behind the REST `monitor/system/config-script` upload.
//!
//! - [`cli`]: the CLI state machine (config contexts, prompt, `show`/`get`, `?`/TAB), pure.
//! - [`ops`]: operational commands (`get system status`, `diagnose ...`, `execute ...`).
//! - [`help`]: descriptions printed by `?`.
//! - [`script`]: config scripts (REST upload) run through the same [`FgtSession`].
//!
//! Admin logins write the FortiOS event logs 0100032001 (success), 0100032002 (failure) and
//! 0100032003 (logout) to the memory log, from where they are forwarded like every other log.

pub mod cli;
pub mod help;
pub mod ops;
pub mod script;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use fortilab_core::ssh_console::{
    BoxFuture, Completion, ConsoleBackend, ConsoleReply, ConsoleSession,
};
use fortilab_core::EventKind;
use serde_json::json;

use crate::automation;
use crate::config::engine::secret_matches;
use crate::config::lexer;
use crate::config::Origin;
use crate::device::Device;

use cli::{CliSession, Dispatch};

/// Serves the SSH console of `device` on `listener` until `shutdown` (host key at `host_key`).
pub async fn serve_ssh(
    device: &Arc<Device>,
    automation: &Arc<automation::Engine>,
    listener: tokio::net::TcpListener,
    host_key: &std::path::Path,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<fortilab_core::ssh_console::SshConsole, fortilab_core::ssh_console::ConsoleError> {
    let backend = Arc::new(FgtConsole::new(device.clone(), Some(automation.clone())));
    let ssh = fortilab_core::ssh_console::serve_ssh(listener, host_key, backend, shutdown.clone())
        .await?;
    device.events.emit(
        EventKind::ConsoleReady,
        json!({"ssh": ssh.local_addr.to_string()}),
    );
    Ok(ssh)
}

/// The console backend of one FortiGate.
pub struct FgtConsole {
    dev: Arc<Device>,
    automation: Option<Arc<automation::Engine>>,
}

impl FgtConsole {
    pub fn new(dev: Arc<Device>, automation: Option<Arc<automation::Engine>>) -> Self {
        Self { dev, automation }
    }

    /// A session for `user` without a login (config scripts, tests).
    pub fn session(&self, user: &str, ui: &str, peer: IpAddr) -> FgtSession {
        FgtSession::new(self.dev.clone(), self.automation.clone(), user, ui, peer)
    }

    /// Checks an admin's password (`config system admin`); the access profile if it matches.
    pub fn check_admin(&self, user: &str, password: &str) -> Option<String> {
        self.dev.config.with(|config| {
            let e = config.entry("system admin", user)?;
            let stored = e.scalar("password").unwrap_or("");
            let ok = if stored.is_empty() {
                password.is_empty()
            } else {
                secret_matches(stored, password)
            };
            ok.then(|| e.scalar("accprofile").unwrap_or("super_admin").to_string())
        })
    }
}

impl ConsoleBackend for FgtConsole {
    /// `admin-ssh-grace-time` (seconds, real time: a network timeout, not a product interval).
    fn supervisor(&self) -> fortilab_core::supervise::Supervisor {
        self.dev.supervisor.clone()
    }

    fn login_grace_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs(global_int(&self.dev, "admin-ssh-grace-time", 120))
    }

    fn login<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
        Box::pin(async move {
            let lab_peer = self.dev.lab_map.lab_of_real(peer.ip()).unwrap_or(peer.ip());
            let dst = self.dev.lab_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let ui = format!("ssh({lab_peer})");
            match self.check_admin(user, password) {
                Some(profile) => {
                    self.dev.logs.event_system(
                        "0100032001",
                        "information",
                        "Admin login successful",
                        |record| {
                            record
                                .str("sn", self.dev.clock.now_secs().to_string())
                                .str("user", user)
                                .str("ui", ui.clone())
                                .str("method", "ssh")
                                .ip("srcip", lab_peer)
                                .ip("dstip", dst)
                                .str("action", "login")
                                .str("status", "success")
                                .str("reason", "none")
                                .str("profile", profile.clone())
                                .str(
                                    "msg",
                                    format!(
                                        "Administrator {user} logged in successfully from {ui}"
                                    ),
                                );
                        },
                    );
                    self.dev.events.emit(
                        EventKind::AdminLogin,
                        json!({"user": user, "ui": ui, "status": "success"}),
                    );
                    let s = self.session(user, &ui, lab_peer);
                    Some(Box::new(s) as Box<dyn ConsoleSession>)
                }
                None => {
                    let reason = if self.dev.config.exists("system admin", user) {
                        "passwd_invalid"
                    } else {
                        "name_invalid"
                    };
                    self.dev
                        .logs
                        .event_system("0100032002", "alert", "Admin login failed", |record| {
                            record.str("sn", "0")
                                .str("user", user)
                                .str("ui", ui.clone())
                                .str("method", "ssh")
                                .ip("srcip", lab_peer)
                                .ip("dstip", dst)
                                .str("action", "login")
                                .str("status", "failed")
                                .str("reason", reason)
                                .str(
                                    "msg",
                                    format!(
                                        "Administrator {user} login failed from {ui} because of invalid {}",
                                        if reason == "name_invalid" { "user name" } else { "password" }
                                    ),
                                );
                        });
                    self.dev.events.emit(
                        EventKind::AdminLogin,
                        json!({"user": user, "ui": ui, "status": "failed"}),
                    );
                    None
                }
            }
        })
    }
}

/// One CLI session: the config state machine plus the device for operational commands.
pub struct FgtSession {
    pub cli: CliSession,
    dev: Arc<Device>,
    automation: Option<Arc<automation::Engine>>,
    user: String,
    ui: String,
    log_filter: ops::LogFilter,
    failed: bool,
    logged_in: bool,
    /// Why the session ended, for the logout log (`exit`, `timeout`).
    logout_reason: &'static str,
}

/// An integer of `config system global`, or `default` when unset.
fn global_int(dev: &Device, name: &str, default: u64) -> u64 {
    dev.config.with(|config| {
        config
            .single("system global")
            .and_then(|e| e.scalar(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    })
}

impl FgtSession {
    pub fn new(
        dev: Arc<Device>,
        automation: Option<Arc<automation::Engine>>,
        user: &str,
        ui: &str,
        _peer: IpAddr,
    ) -> Self {
        let origin = Origin {
            user: user.to_string(),
            ui: ui.to_string(),
        };
        Self {
            cli: CliSession::new(dev.config.clone(), origin),
            dev,
            automation,
            user: user.to_string(),
            ui: ui.to_string(),
            log_filter: ops::LogFilter::default(),
            failed: false,
            logged_in: true,
            logout_reason: "exit",
        }
    }

    /// Marks the session as not an interactive login (no logout log on close).
    pub fn without_logout_log(mut self) -> Self {
        self.logged_in = false;
        self
    }

    /// Runs one console line (with an optional `| grep`). Returns the output, whether it
    /// failed, and whether the session ends.
    pub async fn run_line(&mut self, line: &str) -> (String, bool, bool) {
        let (cmdline, filter) = cli::split_pipe(line);
        let lexed = match lexer::lex(&cmdline) {
            Ok(l) => l,
            Err(_) => {
                let last = cmdline.split_whitespace().last().unwrap_or("").to_string();
                return (cli::parse_error(&last), true, false);
            }
        };
        let (mut out, mut failed, close) = self.run_commands(&lexed.commands).await;
        if let Some(f) = filter {
            match cli::apply_grep(&f, &out) {
                Ok(t) => out = t,
                Err(e) => {
                    out = e;
                    failed = true;
                }
            }
        }
        (out, failed, close)
    }

    /// Runs lexed commands; returns output, whether one failed, whether the session ends.
    pub async fn run_commands(&mut self, cmds: &[lexer::Command]) -> (String, bool, bool) {
        let mut out = String::new();
        let mut failed = false;
        let mut close = false;
        for c in cmds {
            match self.cli.dispatch(c) {
                Dispatch::Done(o) => {
                    out.push_str(&o.text);
                    failed |= o.failed;
                }
                Dispatch::Operational(words) => {
                    if words.first().map(String::as_str) == Some("exit") {
                        close = true;
                        break;
                    }
                    let ctx = ops::OpsCtx {
                        dev: &self.dev,
                        automation: self.automation.as_ref(),
                        user: &self.user,
                    };
                    let o = ops::run(&ctx, &mut self.log_filter, &words).await;
                    out.push_str(&o.text);
                    failed |= o.failed;
                }
            }
        }
        (out, failed, close)
    }

    /// The line's (first) command as the CLI understands it here, abbreviations expanded;
    /// `None` when it is no command (see [`CliSession::canonical`]).
    pub fn resolved(&self, line: &str) -> Option<String> {
        let (cmdline, _) = cli::split_pipe(line);
        let lexed = lexer::lex(&cmdline).ok()?;
        self.cli.canonical(lexed.commands.first()?)
    }

    fn words_of(line: &str) -> (Vec<String>, bool) {
        let (words, trailing, _) = Self::words_at(line);
        (words, trailing)
    }

    /// The words of the last command of `line`, whether it ends in a blank, and the byte
    /// offset where its last word starts as typed (quotes and escapes included).
    fn words_at(line: &str) -> (Vec<String>, bool, usize) {
        let trailing = line.is_empty() || line.ends_with(char::is_whitespace);
        match lexer::lex(line) {
            Ok(l) => {
                let toks = l
                    .commands
                    .last()
                    .map(|c| c.tokens.as_slice())
                    .unwrap_or(&[]);
                let start = toks
                    .last()
                    .and_then(|t| byte_offset(line, t.line, t.col))
                    .unwrap_or(line.len());
                (
                    toks.iter().map(|t| t.text.clone()).collect(),
                    trailing,
                    start,
                )
            }
            Err(_) => {
                // An open quote: plain blank-separated words; the last is a suffix of the line.
                let start = line
                    .char_indices()
                    .rev()
                    .find(|(_, c)| c.is_whitespace())
                    .map(|(i, c)| i + c.len_utf8())
                    .unwrap_or(0);
                (
                    line.split_whitespace().map(String::from).collect(),
                    trailing,
                    start,
                )
            }
        }
    }

    /// Candidates for the word after `words` (ops tree for `diagnose`/`execute`/`get system`).
    fn candidates(&self, words: &[String]) -> Vec<(String, String)> {
        if let Some(first) = words.first() {
            if let Some(v) = self.cli.resolve_verb(first) {
                if matches!(v, "diagnose" | "execute") {
                    let mut w = words.to_vec();
                    w[0] = v.to_string();
                    return ops::candidates(self.cli.version(), &w);
                }
            }
        }
        self.cli.candidates(words)
    }

    /// `?` help for the text typed so far.
    pub fn help_text(&self, line: &str) -> String {
        let (mut words, trailing) = Self::words_of(line);
        let partial = if trailing { None } else { words.pop() };
        let mut items = self.candidates(&words);
        if let Some(p) = &partial {
            let lp = p.to_ascii_lowercase();
            let placeholders: Vec<(String, String)> = items
                .iter()
                .filter(|(w, _)| w.starts_with('<') || w.starts_with('*'))
                .cloned()
                .collect();
            items.retain(|(w, _)| w.to_ascii_lowercase().starts_with(&lp));
            if items.is_empty() {
                items = placeholders;
            }
        }
        if items.is_empty() {
            return if words.is_empty() && partial.is_none() {
                String::new()
            } else {
                "<Enter>\n".into()
            };
        }
        help::format_help(&items)
    }

    /// TAB completion.
    pub fn complete_line(&self, line: &str) -> Completion {
        let (mut words, trailing, start) = Self::words_at(line);
        let partial = if trailing {
            String::new()
        } else {
            words.pop().unwrap_or_default()
        };
        let lp = partial.to_ascii_lowercase();
        let cands: Vec<String> = self
            .candidates(&words)
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| !w.starts_with('<') && !w.starts_with('*'))
            .filter(|w| w.to_ascii_lowercase().starts_with(&lp))
            .collect();
        // The line up to the partial word as typed: the lexed word can be shorter than its
        // text (quotes, escapes), so its length says nothing about where it starts.
        let base = if trailing { line } else { &line[..start] };
        match cands.as_slice() {
            [] => Completion {
                line: line.to_string(),
                candidates: vec![],
            },
            [one] => Completion {
                line: format!("{base}{} ", quote_if_needed(one)),
                candidates: vec![],
            },
            many => {
                let prefix = common_prefix(many);
                if prefix.len() > partial.len() && !prefix.contains(' ') {
                    Completion {
                        line: format!("{base}{prefix}"),
                        candidates: vec![],
                    }
                } else {
                    Completion {
                        line: line.to_string(),
                        candidates: many.to_vec(),
                    }
                }
            }
        }
    }
}

/// The byte offset of 1-based `line` and character column `col` in `text`.
fn byte_offset(text: &str, line: usize, col: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let rest = &text[start..];
    rest.char_indices()
        .nth(col.checked_sub(1)?)
        .map(|(i, _)| start + i)
}

fn quote_if_needed(w: &str) -> String {
    if w.contains(char::is_whitespace) || w.is_empty() {
        lexer::quote(w)
    } else {
        w.to_string()
    }
}

fn common_prefix(words: &[String]) -> String {
    let first = &words[0];
    let mut n = first.len();
    for w in &words[1..] {
        n = n.min(
            first
                .char_indices()
                .zip(w.chars())
                .take_while(|((_, a), b)| a == b)
                .count(),
        );
    }
    first.chars().take(n).collect()
}

impl ConsoleSession for FgtSession {
    fn prompt(&self) -> String {
        self.cli.prompt()
    }

    fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
        Box::pin(async move {
            if !line.trim().is_empty() {
                // Exercises check that a trainee used a command (lab event, never a product log).
                self.dev.events.emit(
                    EventKind::ConsoleCommand,
                    json!({"user": self.user, "ui": self.ui,
                           "command": fortilab_core::ssh_console::redact_command(line),
                           "resolved": self.resolved(line)
                               .map(|r| fortilab_core::ssh_console::redact_command(&r))}),
                );
            }
            let (output, failed, close) = self.run_line(line).await;
            self.failed = failed;
            ConsoleReply { output, close }
        })
    }

    fn help(&self, line: &str) -> String {
        self.help_text(line)
    }

    fn complete(&self, line: &str) -> Completion {
        self.complete_line(line)
    }

    fn last_failed(&self) -> bool {
        self.failed
    }

    /// `admintimeout` (minutes of lab time: a lab running at ×60 times out a 1-minute
    /// setting after one real second).
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        let minutes = global_int(&self.dev, "admintimeout", 5).max(1);
        Some(
            self.dev
                .clock
                .to_real(std::time::Duration::from_secs(minutes * 60)),
        )
    }

    fn on_idle_timeout(&mut self) {
        self.logout_reason = "timeout";
    }

    fn on_close(&mut self) {
        self.cli.reset();
        if !self.logged_in {
            return;
        }
        let (user, ui) = (self.user.clone(), self.ui.clone());
        let reason = self.logout_reason;
        let msg = if reason == "timeout" {
            format!("Administrator {user} timed out on {ui}")
        } else {
            format!("Administrator {user} logged out from {ui}")
        };
        self.dev.logs.event_system(
            "0100032003",
            "information",
            "Admin logout successful",
            |record| {
                record
                    .str("sn", self.dev.clock.now_secs().to_string())
                    .str("user", user.clone())
                    .str("ui", ui.clone())
                    .str("method", "ssh")
                    .str("action", "logout")
                    .str("status", "success")
                    .str("reason", reason)
                    .str("msg", msg.clone());
            },
        );
        self.dev.events.emit(
            EventKind::AdminLogout,
            json!({"user": self.user, "ui": self.ui, "reason": reason}),
        );
    }
}
