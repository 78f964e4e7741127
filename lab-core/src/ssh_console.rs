//! The device console: an SSH server (russh) with a line editor in front of a device's command
//! engine (the FortiOS CLI on sim-fortigate, the FortiAnalyzer CLI on sim-faz).
//!
//! The device implements [`ConsoleBackend`] (password check → a [`ConsoleSession`]) and the
//! session implements its CLI: prompt, `execute`, `?` help and TAB completion. This module does
//! the rest, as a FortiOS console behaves:
//!
//! - password authentication (and keyboard-interactive with one `Password:` prompt), three failed
//!   attempts per connection and the connection is closed;
//! - an interactive shell (with or without a pty: OpenSSH `ssh -tt` and paramiko `invoke_shell`)
//!   with a line editor: echo, backspace/DEL, Ctrl-U, Ctrl-C cancels the line, Ctrl-V takes the
//!   next character literally, up/down history, left/right/home/end; `?` is not inserted: it
//!   prints [`ConsoleSession::help`] for the line so far and redraws prompt and line (inside a
//!   double-quoted string `?` is literal); TAB calls [`ConsoleSession::complete`]; Enter runs
//!   [`ConsoleSession::execute`]; `exit` or a reply with `close: true` ends the channel;
//! - `exec` requests (`ssh admin@fgt "show firewall policy"`): every `\n`-separated line runs
//!   without prompt or echo, then the channel closes with exit status 0, or 1 when
//!   [`ConsoleSession::last_failed`] reported a failed command.
//!
//! Output from the session uses `\n`; on a pty (and in the interactive shell) the server sends
//! `\r\n`. Control characters in it (other than line breaks and TAB) are shown as `\xHH`
//! ([`crate::text::printable`]): names that came from outside cannot drive the terminal.
//!
//! Limits, as the products have them:
//! - a connection that has not logged in within [`ConsoleBackend::login_grace_time`] (FortiOS
//!   `admin-ssh-grace-time`, 120 s by default) is closed, also one that never sends its SSH
//!   version line;
//! - an interactive session idle for [`ConsoleSession::idle_timeout`] (FortiOS `admintimeout`)
//!   is closed ([`ConsoleSession::on_idle_timeout`] first, for the logout log);
//! - a command line longer than [`MAX_LINE`] characters is refused with an error and the
//!   session goes on (keys beyond the limit are not echoed; the terminal bell rings once).
//!
//! The host key is an ed25519 key generated on first start and kept (OpenSSH PEM) at the path the
//! device passes, normally `<data-dir>/ssh_host_ed25519_key`.
//!
//! The line editor ([`LineEditor`], [`KeyDecoder`]) is pure logic and unit-tested without sockets.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a command printed, and whether the session ends after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleReply {
    /// Output lines separated by `\n` (the server sends `\r\n` on a terminal).
    pub output: String,
    /// End the channel after printing `output` (like `exit`).
    pub close: bool,
}

impl ConsoleReply {
    /// A reply that prints `output` and keeps the session open.
    pub fn text(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            close: false,
        }
    }
}

/// The answer to TAB: the new line and, when still ambiguous, the candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// The line after completion (unchanged when nothing could be completed).
    pub line: String,
    /// Possible continuations; printed below the line when the line did not change.
    pub candidates: Vec<String>,
}

/// One logged-in console session: the device's command interpreter for one SSH connection.
pub trait ConsoleSession: Send + 'static {
    /// The prompt, e.g. `"FGT-LAB # "` or `"FGT-LAB (policy) # "`.
    fn prompt(&self) -> String;
    /// Runs one command line.
    fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply>;
    /// Help for `?` typed after `line` (the text printed below the line).
    fn help(&self, line: &str) -> String;
    /// TAB typed after `line`.
    fn complete(&self, line: &str) -> Completion;
    /// Printed once after login, before the first prompt.
    fn banner(&self) -> String {
        String::new()
    }
    /// Whether the last `execute` failed (exit status of an `exec` request).
    fn last_failed(&self) -> bool {
        false
    }
    /// The connection closed (write the logout log here).
    fn on_close(&mut self) {}
    /// How long an interactive session may stay idle (no key typed) before it is closed
    /// (real time; `None`: never). Asked again after every key, so a changed setting counts.
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }
    /// The session is being closed because it was idle (before [`ConsoleSession::on_close`]).
    fn on_idle_timeout(&mut self) {}
}

/// A device's console: checks passwords and starts sessions.
pub trait ConsoleBackend: Send + Sync + 'static {
    /// Password check; `None` = refused (the backend writes its own failure log, e.g. 0100032002).
    fn login<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        peer: SocketAddr,
    ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>>;

    /// How long a connection may take from TCP accept to a successful login (real time).
    fn login_grace_time(&self) -> Duration {
        DEFAULT_LOGIN_GRACE
    }

    /// Where a session that panics is reported (task `console`). The channel is closed with
    /// an error and the listener goes on; the default reports to counters nobody reads.
    fn supervisor(&self) -> crate::supervise::Supervisor {
        crate::supervise::Supervisor::default()
    }
}

/// FortiOS `admin-ssh-grace-time` default: 120 s to log in.
pub const DEFAULT_LOGIN_GRACE: Duration = Duration::from_secs(120);

/// The longest command line the console accepts, in characters [P]: public material gives no
/// figure for FortiOS; 4096 is well above the longest single-line value the configuration takes
/// (1023-character comments, 511-character URLs) and keeps a pasted megabyte from stalling the
/// session.
pub const MAX_LINE: usize = 4096;

/// A console command line as the lab timeline's `console.command` event carries it: the
/// value of a `set` of a secret (passwords, keys, tokens, PSKs) is replaced with `*`, so
/// that the timeline never holds a secret typed at a console [P].
pub fn redact_command(line: &str) -> String {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let attr = words.next().unwrap_or("").to_ascii_lowercase();
    let secret = ["pass", "secret", "key", "token", "psk"]
        .iter()
        .any(|w| attr.contains(w));
    if first.eq_ignore_ascii_case("set") && secret {
        format!("set {attr} *")
    } else {
        line.chars().take(MAX_LINE).collect()
    }
}

/// What the console prints for a line over [`MAX_LINE`] [P].
pub fn line_too_long_message() -> String {
    format!("Command line too long (more than {MAX_LINE} characters): nothing was run.")
}

/// Errors starting the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("ssh host key {path}: {message}")]
    HostKey { path: PathBuf, message: String },
    #[error("ssh listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A running SSH console.
#[derive(Debug)]
pub struct SshConsole {
    /// The address the server listens on.
    pub local_addr: SocketAddr,
    /// SHA-256 fingerprint of the host key (`SHA256:...`, as OpenSSH prints it).
    pub host_key_fingerprint: String,
    /// The host key's public half in OpenSSH format (`ssh-ed25519 AAAA...`), for known_hosts.
    pub host_public_key: String,
    /// The accept loop; finishes after shutdown.
    pub task: tokio::task::JoinHandle<()>,
}

/// The host key's file name under a device's data directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Failed password attempts allowed per connection before it is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Loads the ed25519 host key at `path`, or generates and stores one (mode 0600).
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, ConsoleError> {
    let err = |m: String| ConsoleError::HostKey {
        path: path.to_path_buf(),
        message: m,
    };
    if path.exists() {
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        return PrivateKey::from_openssh(pem.as_bytes()).map_err(|e| err(e.to_string()));
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
    }
    crate::secrets::write_private(path, pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    Ok(key)
}

/// Serves the console on `listener` until `shutdown`; open connections are disconnected then.
pub async fn serve_ssh(
    listener: TcpListener,
    host_key_path: &Path,
    backend: Arc<dyn ConsoleBackend>,
    shutdown: CancellationToken,
) -> Result<SshConsole, ConsoleError> {
    let key = load_or_create_host_key(host_key_path)?;
    let public = key.public_key();
    let host_key_fingerprint = public.fingerprint(HashAlg::Sha256).to_string();
    let host_public_key = public.to_openssh().map_err(|e| ConsoleError::HostKey {
        path: host_key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let local_addr = listener.local_addr()?;
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-FortiSSH_fortilab".into()),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::KeyboardInteractive][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Our own counter closes the connection after MAX_AUTH_FAILURES; this is a backstop
        // ("none" probes count here too).
        max_auth_attempts: 10,
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keys: vec![key],
        nodelay: true,
        ..Default::default()
    });
    let sup = backend.supervisor();
    let stop = shutdown.clone();
    let task = sup.spawn_tcp("ssh console", listener, shutdown, move |l| {
        accept_loop(l, config.clone(), backend.clone(), stop.clone())
    })?;
    tracing::info!(addr = %local_addr, fingerprint = %host_key_fingerprint, "ssh console listening");
    Ok(SshConsole {
        local_addr,
        host_key_fingerprint,
        host_public_key,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    backend: Arc<dyn ConsoleBackend>,
    shutdown: CancellationToken,
) {
    while let Some((tcp, peer)) = crate::http::accept_next(&listener, &shutdown, "ssh").await {
        let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = ConnHandler {
            backend: backend.clone(),
            peer,
            failures: 0,
            session: None,
            pty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            channels: Vec::new(),
            kbd_user: None,
            authenticated: authenticated.clone(),
        };
        let config = config.clone();
        let shutdown = shutdown.clone();
        let grace = tokio::time::Instant::now() + backend.login_grace_time();
        backend.supervisor().spawn_once("ssh connection", async move {
            // The version exchange counts against the grace time too: a client that connects
            // and says nothing is closed.
            let running = match tokio::time::timeout_at(
                grace,
                russh::server::run_stream(config, tcp, handler),
            )
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "ssh handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "ssh: no version line within the login grace time");
                    return;
                }
            };
            let handle = running.handle();
            tokio::pin!(running);
            let mut grace_checked = false;
            loop {
                tokio::select! {
                    res = &mut running => {
                        if let Err(e) = res {
                            tracing::debug!(%peer, error = %e, "ssh session ended with an error");
                        }
                        return;
                    }
                    _ = shutdown.cancelled() => {
                        let _ = handle
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "system is shutting down".into(),
                                String::new(),
                            )
                            .await;
                        return;
                    }
                    _ = tokio::time::sleep_until(grace), if !grace_checked => {
                        grace_checked = true;
                        if !authenticated.load(std::sync::atomic::Ordering::SeqCst) {
                            tracing::info!(%peer, "ssh: not logged in within the login grace time");
                            let _ = handle
                                .disconnect(
                                    russh::Disconnect::ByApplication,
                                    "login grace time exceeded".into(),
                                    String::new(),
                                )
                                .await;
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The logged-in session shared by the channels of one connection; `on_close` runs when the
/// last of them (and the connection) is gone.
struct SessionCell(Box<dyn ConsoleSession>);

impl Drop for SessionCell {
    fn drop(&mut self) {
        self.0.on_close();
    }
}

type SharedSession = Arc<Mutex<SessionCell>>;

struct ConnHandler {
    backend: Arc<dyn ConsoleBackend>,
    peer: SocketAddr,
    failures: u32,
    session: Option<SharedSession>,
    pty: Arc<std::sync::atomic::AtomicBool>,
    /// Channels opened but not started yet (waiting for shell/exec).
    channels: Vec<Channel<Msg>>,
    kbd_user: Option<String>,
    /// Set once a password was accepted (the login grace timer checks it).
    authenticated: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnHandler {
    async fn check_password(&mut self, user: &str, password: &str) -> Result<Auth, russh::Error> {
        match self.backend.login(user, password, self.peer).await {
            Some(s) => {
                self.session = Some(Arc::new(Mutex::new(SessionCell(s))));
                self.authenticated
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(Auth::Accept)
            }
            None => {
                self.failures += 1;
                if self.failures >= MAX_AUTH_FAILURES {
                    tracing::info!(peer = %self.peer, "ssh: too many authentication failures");
                    return Err(russh::Error::Disconnect);
                }
                // A wrong password may be retried with either method (OpenSSH and FortiOS
                // offer both again); dropping `password` from the list would send clients such
                // as paramiko into a keyboard-interactive fallback instead of a clear failure.
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::Password, MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: false,
                })
            }
        }
    }

    fn take_channel(&mut self, id: ChannelId) -> Option<Channel<Msg>> {
        let pos = self.channels.iter().position(|c| c.id() == id)?;
        Some(self.channels.swap_remove(pos))
    }
}

impl russh::server::Handler for ConnHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.check_password(user, password).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        match response {
            Some(mut r) if self.kbd_user.as_deref() == Some(user) => {
                self.kbd_user = None;
                let answer = r
                    .next()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                self.check_password(user, &answer).await
            }
            _ => {
                self.kbd_user = Some(user.to_string());
                Ok(Auth::Partial {
                    name: "".into(),
                    instructions: "".into(),
                    prompts: vec![("Password: ".into(), false)].into(),
                })
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.session.is_none() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pty.store(true, std::sync::atomic::Ordering::SeqCst);
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (self.take_channel(channel), self.session.clone()) {
            (Some(ch), Some(s)) => {
                session.channel_success(channel)?;
                tokio::spawn(guarded(ch, self.backend.supervisor(), |ch| {
                    Box::pin(run_shell(ch, s))
                }));
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (self.take_channel(channel), self.session.clone()) {
            (Some(ch), Some(s)) => {
                session.channel_success(channel)?;
                let command = String::from_utf8_lossy(data).into_owned();
                let pty = self.pty.load(std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(guarded(ch, self.backend.supervisor(), move |ch| {
                    Box::pin(run_exec(ch, s, command, pty))
                }));
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// `\n` → `\r\n` (an existing `\r\n` stays as it is).
pub fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev = '\0';
    for c in text.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

async fn send(ch: &Channel<Msg>, text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    ch.data_bytes(text.as_bytes().to_vec()).await.is_ok()
}

async fn finish(ch: &Channel<Msg>, status: u32) {
    let _ = ch.exit_status(status).await;
    let _ = ch.eof().await;
    let _ = ch.close().await;
}

/// Runs a channel's shell or exec; if it panics, the panic is reported, the client is told
/// and the channel is closed (exit status 1) instead of left hanging.
async fn guarded<F>(mut ch: Channel<Msg>, supervisor: crate::supervise::Supervisor, run: F)
where
    F: for<'c> FnOnce(&'c mut Channel<Msg>) -> BoxFuture<'c, ()>,
{
    use futures::FutureExt;
    let res = std::panic::AssertUnwindSafe(run(&mut ch))
        .catch_unwind()
        .await;
    if let Err(payload) = res {
        let msg = crate::supervise::panic_message(&*payload);
        supervisor.report_panic("console", &msg);
        let _ = send(&ch, "\r\nInternal error: the session is closed.\r\n").await;
        finish(&ch, 1).await;
    }
}

async fn run_exec(ch: &mut Channel<Msg>, session: SharedSession, command: String, pty: bool) {
    let mut failed = false;
    for line in command.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "exit" {
            break;
        }
        let (reply, f) = if line.chars().count() > MAX_LINE {
            (ConsoleReply::text(line_too_long_message()), true)
        } else {
            let mut s = session.lock().await;
            let reply = s.0.execute(line).await;
            (reply, s.0.last_failed())
        };
        failed |= f;
        let mut out = crate::text::printable(&reply.output, true).into_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let out = if pty { crlf(&out) } else { out };
        if !send(ch, &out).await {
            return;
        }
        if reply.close {
            break;
        }
    }
    finish(ch, u32::from(failed)).await;
    drop(session);
}

async fn run_shell(ch: &mut Channel<Msg>, session: SharedSession) {
    let mut decoder = KeyDecoder::default();
    let mut editor = LineEditor::default();
    let mut idle = {
        let s = session.lock().await;
        let banner = crate::text::printable(&s.0.banner(), true).into_owned();
        let mut first = String::new();
        if !banner.is_empty() {
            first.push_str(&crlf(&banner));
            if !banner.ends_with('\n') {
                first.push_str("\r\n");
            }
        }
        first.push_str(&crate::text::printable(&s.0.prompt(), false));
        if !send(ch, &first).await {
            return;
        }
        s.0.idle_timeout()
    };
    loop {
        let msg = match idle {
            Some(d) => match tokio::time::timeout(d, ch.wait()).await {
                Ok(m) => m,
                Err(_) => {
                    // admintimeout: the session ends as if the administrator logged out.
                    session.lock().await.0.on_idle_timeout();
                    let _ = send(ch, "\r\n").await;
                    finish(ch, 0).await;
                    return;
                }
            },
            None => ch.wait().await,
        };
        let Some(msg) = msg else { return };
        match msg {
            ChannelMsg::Data { data } => {
                // The echo of a whole chunk goes out as one message (a pasted megabyte is not a
                // million channel writes); output is flushed before each command runs.
                let mut out = String::new();
                let mut s = session.lock().await;
                for key in decoder.feed(&data) {
                    let step = editor.key(key, &*s.0);
                    out.push_str(&step.output);
                    let Some(line) = step.submit else { continue };
                    if line.trim() == "exit" {
                        drop(s);
                        let _ = send(ch, &out).await;
                        finish(ch, 0).await;
                        return;
                    }
                    if !send(ch, &out).await {
                        return;
                    }
                    out.clear();
                    let reply = if line.trim().is_empty() {
                        ConsoleReply::default()
                    } else {
                        s.0.execute(&line).await
                    };
                    out = crlf(&crate::text::printable(&reply.output, true));
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push_str("\r\n");
                    }
                    if reply.close {
                        drop(s);
                        let _ = send(ch, &out).await;
                        finish(ch, 0).await;
                        return;
                    }
                    out.push_str(&crate::text::printable(&s.0.prompt(), false));
                }
                idle = s.0.idle_timeout();
                drop(s);
                if !send(ch, &out).await {
                    return;
                }
            }
            ChannelMsg::Eof => {
                finish(ch, 0).await;
                return;
            }
            ChannelMsg::Close => return,
            _ => {}
        }
    }
}

/// A key (or control) from the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    KillLine,
    Cancel,
    Tab,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    /// Ctrl-V: the next character is taken literally.
    Literal,
}

/// Turns terminal bytes into [`Key`]s (UTF-8, `\r\n`, ANSI cursor sequences).
#[derive(Debug, Default)]
pub struct KeyDecoder {
    pending: Vec<u8>,
    after_cr: bool,
}

impl KeyDecoder {
    /// Decodes `bytes`; an incomplete UTF-8 or escape sequence waits for the next call.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Key> {
        self.pending.extend_from_slice(bytes);
        let mut keys = Vec::new();
        let mut i = 0;
        let buf = std::mem::take(&mut self.pending);
        while i < buf.len() {
            let b = buf[i];
            let was_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\r' => {
                    keys.push(Key::Enter);
                    self.after_cr = true;
                    i += 1;
                }
                b'\n' => {
                    if !was_cr {
                        keys.push(Key::Enter);
                    }
                    i += 1;
                }
                0x7f | 0x08 => {
                    keys.push(Key::Backspace);
                    i += 1;
                }
                0x15 => {
                    keys.push(Key::KillLine);
                    i += 1;
                }
                0x03 => {
                    keys.push(Key::Cancel);
                    i += 1;
                }
                0x09 => {
                    keys.push(Key::Tab);
                    i += 1;
                }
                0x16 => {
                    keys.push(Key::Literal);
                    i += 1;
                }
                0x01 => {
                    keys.push(Key::Home);
                    i += 1;
                }
                0x05 => {
                    keys.push(Key::End);
                    i += 1;
                }
                0x10 => {
                    keys.push(Key::Up);
                    i += 1;
                }
                0x0e => {
                    keys.push(Key::Down);
                    i += 1;
                }
                0x02 => {
                    keys.push(Key::Left);
                    i += 1;
                }
                0x06 => {
                    keys.push(Key::Right);
                    i += 1;
                }
                0x1b => {
                    // ESC [ X, ESC O X, ESC [ n ~
                    if i + 1 >= buf.len() {
                        self.pending = buf[i..].to_vec();
                        return keys;
                    }
                    if buf[i + 1] != b'[' && buf[i + 1] != b'O' {
                        i += 1; // lone ESC: ignore
                        continue;
                    }
                    let mut j = i + 2;
                    while j < buf.len() && (buf[j].is_ascii_digit() || buf[j] == b';') {
                        j += 1;
                    }
                    if j >= buf.len() {
                        self.pending = buf[i..].to_vec();
                        return keys;
                    }
                    let params = &buf[i + 2..j];
                    let key = match (buf[j], params) {
                        (b'A', _) => Some(Key::Up),
                        (b'B', _) => Some(Key::Down),
                        (b'C', _) => Some(Key::Right),
                        (b'D', _) => Some(Key::Left),
                        (b'H', _) => Some(Key::Home),
                        (b'F', _) => Some(Key::End),
                        (b'~', b"1") | (b'~', b"7") => Some(Key::Home),
                        (b'~', b"4") | (b'~', b"8") => Some(Key::End),
                        (b'~', b"3") => Some(Key::Delete),
                        _ => None,
                    };
                    keys.extend(key);
                    i = j + 1;
                }
                b if b < 0x20 => i += 1,
                _ => {
                    let len = utf8_len(b);
                    if i + len > buf.len() {
                        self.pending = buf[i..].to_vec();
                        return keys;
                    }
                    match std::str::from_utf8(&buf[i..i + len]) {
                        Ok(s) => keys.extend(s.chars().map(Key::Char)),
                        Err(_) => keys.push(Key::Char('\u{fffd}')),
                    }
                    i += len;
                }
            }
        }
        keys
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// What one key did: bytes to send back and, on Enter, the line to run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EditStep {
    pub output: String,
    pub submit: Option<String>,
}

/// The console's line editor (one per shell channel).
#[derive(Debug, Default)]
pub struct LineEditor {
    buf: Vec<char>,
    cursor: usize,
    history: VecDeque<String>,
    /// Position while browsing history (`history.len()` = the line being edited).
    hist_pos: Option<usize>,
    saved: Vec<char>,
    literal_next: bool,
    /// Keys were dropped because the line reached [`MAX_LINE`]: Enter refuses the line.
    overflow: bool,
}

/// History entries kept per session.
pub const HISTORY_MAX: usize = 100;

impl LineEditor {
    /// The line being edited.
    pub fn line(&self) -> String {
        self.buf.iter().collect()
    }

    fn in_quotes(&self) -> bool {
        self.buf[..self.cursor]
            .iter()
            .filter(|c| **c == '"')
            .count()
            % 2
            == 1
    }

    fn insert(&mut self, c: char, out: &mut String) {
        if self.buf.len() >= MAX_LINE {
            if !self.overflow {
                self.overflow = true;
                out.push('\x07');
            }
            return;
        }
        self.buf.insert(self.cursor, c);
        self.cursor += 1;
        let tail: String = self.buf[self.cursor - 1..].iter().collect();
        out.push_str(&tail);
        back(out, self.buf.len() - self.cursor);
    }

    fn replace_line(&mut self, new: Vec<char>, out: &mut String) {
        // Move to the start of the line being edited, overwrite, clear the rest.
        back(out, self.cursor);
        let text: String = new.iter().collect();
        out.push_str(&text);
        out.push_str("\x1b[K");
        self.buf = new;
        self.cursor = self.buf.len();
    }

    /// Applies one key; `session` answers `?` and TAB.
    pub fn key(&mut self, key: Key, session: &dyn ConsoleSession) -> EditStep {
        let mut out = String::new();
        if self.literal_next {
            self.literal_next = false;
            if let Key::Char(c) = key {
                self.insert(c, &mut out);
                return EditStep {
                    output: out,
                    submit: None,
                };
            }
        }
        let mut submit = None;
        match key {
            Key::Char('?') if !self.in_quotes() => {
                let line: String = self.buf[..self.cursor].iter().collect();
                let help = session.help(&line);
                out.push_str("\r\n");
                if !help.is_empty() {
                    out.push_str(&crlf(&help));
                    if !help.ends_with('\n') {
                        out.push_str("\r\n");
                    }
                }
                out.push_str(&session.prompt());
                out.push_str(&self.line());
                back(&mut out, self.buf.len() - self.cursor);
            }
            Key::Char(c) => self.insert(c, &mut out),
            Key::Literal => self.literal_next = true,
            Key::Enter if self.overflow => {
                out.push_str("\r\n");
                out.push_str(&line_too_long_message());
                out.push_str("\r\n");
                out.push_str(&session.prompt());
                self.buf.clear();
                self.cursor = 0;
                self.hist_pos = None;
                self.overflow = false;
            }
            Key::Enter => {
                out.push_str("\r\n");
                let line = self.line();
                if !line.trim().is_empty() && self.history.back() != Some(&line) {
                    self.history.push_back(line.clone());
                    if self.history.len() > HISTORY_MAX {
                        self.history.pop_front();
                    }
                }
                self.buf.clear();
                self.cursor = 0;
                self.hist_pos = None;
                submit = Some(line);
            }
            Key::Backspace => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.buf.remove(self.cursor);
                    out.push('\x08');
                    let tail: String = self.buf[self.cursor..].iter().collect();
                    out.push_str(&tail);
                    out.push(' ');
                    back(&mut out, self.buf.len() - self.cursor + 1);
                }
            }
            Key::Delete => {
                if self.cursor < self.buf.len() {
                    self.buf.remove(self.cursor);
                    let tail: String = self.buf[self.cursor..].iter().collect();
                    out.push_str(&tail);
                    out.push(' ');
                    back(&mut out, self.buf.len() - self.cursor + 1);
                }
            }
            Key::KillLine => {
                self.overflow = false;
                self.replace_line(Vec::new(), &mut out)
            }
            Key::Cancel => {
                out.push_str("^C\r\n");
                out.push_str(&session.prompt());
                self.buf.clear();
                self.cursor = 0;
                self.hist_pos = None;
                self.overflow = false;
            }
            Key::Tab => {
                let line: String = self.buf[..self.cursor].iter().collect();
                let c = session.complete(&line);
                if c.line != line {
                    let mut new: Vec<char> = c.line.chars().collect();
                    let tail = self.buf[self.cursor..].to_vec();
                    let cursor = new.len();
                    new.extend(tail);
                    self.replace_line(new, &mut out);
                    back(&mut out, self.buf.len() - cursor);
                    self.cursor = cursor;
                } else if !c.candidates.is_empty() {
                    out.push_str("\r\n");
                    out.push_str(&c.candidates.join("  "));
                    out.push_str("\r\n");
                    out.push_str(&session.prompt());
                    out.push_str(&self.line());
                    back(&mut out, self.buf.len() - self.cursor);
                }
            }
            Key::Up => {
                let pos = self.hist_pos.unwrap_or(self.history.len());
                if pos > 0 {
                    if self.hist_pos.is_none() {
                        self.saved = self.buf.clone();
                    }
                    self.hist_pos = Some(pos - 1);
                    let new = self.history[pos - 1].chars().collect();
                    self.replace_line(new, &mut out);
                }
            }
            Key::Down => {
                if let Some(pos) = self.hist_pos {
                    if pos + 1 < self.history.len() {
                        self.hist_pos = Some(pos + 1);
                        let new = self.history[pos + 1].chars().collect();
                        self.replace_line(new, &mut out);
                    } else {
                        self.hist_pos = None;
                        let new = std::mem::take(&mut self.saved);
                        self.replace_line(new, &mut out);
                    }
                }
            }
            Key::Left => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    out.push('\x08');
                }
            }
            Key::Right => {
                if self.cursor < self.buf.len() {
                    out.push(self.buf[self.cursor]);
                    self.cursor += 1;
                }
            }
            Key::Home => {
                back(&mut out, self.cursor);
                self.cursor = 0;
            }
            Key::End => {
                let tail: String = self.buf[self.cursor..].iter().collect();
                out.push_str(&tail);
                self.cursor = self.buf.len();
            }
        }
        EditStep {
            output: out,
            submit,
        }
    }
}

fn back(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push('\x08');
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_typed_at_a_console_are_redacted_in_the_event() {
        use super::redact_command;
        assert_eq!(
            redact_command("  diagnose test application fgfmd 1 "),
            "diagnose test application fgfmd 1"
        );
        assert_eq!(redact_command("set password Hunter2"), "set password *");
        assert_eq!(redact_command("SET psksecret abc"), "set psksecret *");
        assert_eq!(
            redact_command("set server \"10.115.1.20\""),
            "set server \"10.115.1.20\""
        );
    }

    use super::*;

    struct Fake;
    impl ConsoleSession for Fake {
        fn prompt(&self) -> String {
            "FGT # ".into()
        }
        fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
            Box::pin(async move { ConsoleReply::text(format!("ran {line}")) })
        }
        fn help(&self, line: &str) -> String {
            format!("help for [{line}]")
        }
        fn complete(&self, line: &str) -> Completion {
            if line == "con" {
                Completion {
                    line: "config ".into(),
                    candidates: vec![],
                }
            } else {
                Completion {
                    line: line.into(),
                    candidates: vec!["a".into(), "b".into()],
                }
            }
        }
    }

    fn run(keys: &[Key]) -> (LineEditor, Vec<EditStep>) {
        let mut e = LineEditor::default();
        let steps = keys.iter().map(|k| e.key(*k, &Fake)).collect();
        (e, steps)
    }

    fn typed(s: &str) -> Vec<Key> {
        KeyDecoder::default().feed(s.as_bytes())
    }

    #[test]
    fn decoder_handles_crlf_escapes_and_split_utf8() {
        let mut d = KeyDecoder::default();
        assert_eq!(
            d.feed(b"a\r\nb\n"),
            vec![Key::Char('a'), Key::Enter, Key::Char('b'), Key::Enter]
        );
        assert_eq!(
            d.feed(b"\x1b[A\x1bOB\x1b[3~"),
            vec![Key::Up, Key::Down, Key::Delete]
        );
        assert_eq!(d.feed(b"\x1b"), vec![]);
        assert_eq!(d.feed(b"[D"), vec![Key::Left]);
        let e = "é".as_bytes();
        assert_eq!(d.feed(&e[..1]), vec![]);
        assert_eq!(d.feed(&e[1..]), vec![Key::Char('é')]);
        assert_eq!(
            d.feed(b"\x7f\x15\x03\t"),
            vec![Key::Backspace, Key::KillLine, Key::Cancel, Key::Tab]
        );
    }

    #[test]
    fn typing_echoes_and_enter_submits() {
        let (_, steps) = run(&typed("show\r"));
        let echoed: String = steps.iter().map(|s| s.output.as_str()).collect();
        assert_eq!(echoed, "show\r\n");
        assert_eq!(steps.last().unwrap().submit.as_deref(), Some("show"));
    }

    #[test]
    fn backspace_and_kill_line() {
        let mut keys = typed("shox");
        keys.push(Key::Backspace);
        keys.extend(typed("w"));
        let (e, _) = run(&keys);
        assert_eq!(e.line(), "show");
        let mut keys = typed("garbage");
        keys.push(Key::KillLine);
        keys.extend(typed("get"));
        let (e, _) = run(&keys);
        assert_eq!(e.line(), "get");
    }

    #[test]
    fn question_mark_prints_help_and_redraws_without_inserting() {
        let (e, steps) = run(&typed("config ?"));
        assert_eq!(e.line(), "config ");
        let out = &steps.last().unwrap().output;
        assert_eq!(out, "\r\nhelp for [config ]\r\nFGT # config ");
        // Inside quotes '?' is literal.
        let (e, _) = run(&typed("set url \"a?b\""));
        assert_eq!(e.line(), "set url \"a?b\"");
        // Ctrl-V makes it literal too.
        let mut keys = typed("x");
        keys.push(Key::Literal);
        keys.push(Key::Char('?'));
        let (e, _) = run(&keys);
        assert_eq!(e.line(), "x?");
    }

    #[test]
    fn tab_completes_or_lists() {
        let (e, steps) = run(&typed("con\t"));
        assert_eq!(e.line(), "config ");
        assert!(steps.last().unwrap().output.contains("config "));
        let (e, steps) = run(&typed("x\t"));
        assert_eq!(e.line(), "x");
        assert_eq!(steps.last().unwrap().output, "\r\na  b\r\nFGT # x");
    }

    #[test]
    fn ctrl_c_cancels_and_history_recalls() {
        let mut keys = typed("first\rhalf");
        keys.push(Key::Cancel);
        keys.push(Key::Up);
        let (e, steps) = run(&keys);
        assert_eq!(e.line(), "first");
        assert!(steps.iter().any(|s| s.output == "^C\r\nFGT # "));
        let mut keys = typed("one\rtwo\rdraft");
        keys.extend([Key::Up, Key::Up, Key::Down, Key::Down]);
        let (e, _) = run(&keys);
        assert_eq!(e.line(), "draft");
    }

    #[test]
    fn cursor_movement_inserts_in_the_middle() {
        let mut keys = typed("shw");
        keys.push(Key::Left);
        keys.extend(typed("o"));
        keys.push(Key::Home);
        keys.extend(typed("x"));
        keys.push(Key::Delete);
        let (e, _) = run(&keys);
        assert_eq!(e.line(), "xhow");
    }

    #[test]
    fn crlf_does_not_double() {
        assert_eq!(crlf("a\nb\r\nc"), "a\r\nb\r\nc");
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_editor_goes_on() {
        let mut e = LineEditor::default();
        let mut echoed = 0;
        let mut bells = 0;
        for _ in 0..MAX_LINE + 1000 {
            let st = e.key(Key::Char('x'), &Fake);
            echoed += st.output.chars().filter(|c| *c == 'x').count();
            bells += st.output.matches('\x07').count();
        }
        assert_eq!(echoed, MAX_LINE, "keys beyond the limit are not echoed");
        assert_eq!(bells, 1);
        let st = e.key(Key::Enter, &Fake);
        assert_eq!(st.submit, None, "nothing runs");
        assert!(
            st.output.contains(&line_too_long_message()),
            "{:?}",
            st.output
        );
        assert!(st.output.ends_with("FGT # "));
        // The next line is a normal one.
        let (mut e2, _) = (e, ());
        for k in typed("show\r") {
            let st = e2.key(k, &Fake);
            if let Some(l) = st.submit {
                assert_eq!(l, "show");
                return;
            }
        }
        panic!("the line after the refused one was not submitted");
    }

    #[test]
    fn host_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ssh_host_ed25519_key");
        let k1 = load_or_create_host_key(&p).unwrap();
        let k2 = load_or_create_host_key(&p).unwrap();
        assert_eq!(k1.public_key(), k2.public_key());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    }

    // ----------------------------------------------------------------- the server, end to end

    struct Backend;
    struct Sess {
        n: usize,
        closed: Arc<std::sync::atomic::AtomicUsize>,
    }
    struct ClosingBackend(Arc<std::sync::atomic::AtomicUsize>);

    impl ConsoleSession for Sess {
        fn prompt(&self) -> String {
            format!("DEV ({}) # ", self.n)
        }
        fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
            Box::pin(async move {
                self.n += 1;
                if line == "bye" {
                    return ConsoleReply {
                        output: "bye\n".into(),
                        close: true,
                    };
                }
                ConsoleReply::text(format!("echo:{line}\nsecond line"))
            })
        }
        fn help(&self, line: &str) -> String {
            format!("help[{line}]")
        }
        fn complete(&self, line: &str) -> Completion {
            Completion {
                line: format!("{line}X"),
                candidates: vec![],
            }
        }
        fn last_failed(&self) -> bool {
            self.n == 2
        }
        fn on_close(&mut self) {
            self.closed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl ConsoleBackend for ClosingBackend {
        fn login<'a>(
            &'a self,
            user: &'a str,
            password: &'a str,
            _peer: SocketAddr,
        ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
            Box::pin(async move {
                (user == "admin" && password == "pw").then(|| {
                    Box::new(Sess {
                        n: 0,
                        closed: self.0.clone(),
                    }) as Box<dyn ConsoleSession>
                })
            })
        }
    }

    impl ConsoleBackend for Backend {
        fn login<'a>(
            &'a self,
            _user: &'a str,
            _password: &'a str,
            _peer: SocketAddr,
        ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
            Box::pin(async move { None })
        }
    }

    struct Client(String);
    impl russh::client::Handler for Client {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(match key {
                russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                    key.to_openssh().map(|k| k == self.0).unwrap_or(false)
                }
                _ => false,
            })
        }
    }

    async fn start(
        backend: Arc<dyn ConsoleBackend>,
    ) -> (SshConsole, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sd = CancellationToken::new();
        let c = serve_ssh(l, &dir.path().join(HOST_KEY_FILE), backend, sd.clone())
            .await
            .unwrap();
        (c, sd, dir)
    }

    async fn connect(c: &SshConsole) -> russh::client::Handle<Client> {
        let cfg = Arc::new(russh::client::Config::default());
        russh::client::connect(cfg, c.local_addr, Client(c.host_public_key.clone()))
            .await
            .unwrap()
    }

    async fn read_until(ch: &mut Channel<russh::client::Msg>, buf: &mut String, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !buf.contains(want) {
            match tokio::time::timeout_at(deadline, ch.wait()).await {
                Ok(Some(ChannelMsg::Data { data })) => {
                    buf.push_str(&String::from_utf8_lossy(&data))
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("channel closed waiting for {want:?}; got {buf:?}"),
                Err(_) => panic!("timed out waiting for {want:?}; got {buf:?}"),
            }
        }
    }

    /// A backend whose sessions panic on TAB (as the FortiGate's did on `€"x"` TAB).
    struct PanickyBackend(crate::supervise::Supervisor);
    struct Panicky;
    impl ConsoleSession for Panicky {
        fn prompt(&self) -> String {
            "P # ".into()
        }
        fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
            Box::pin(async move { ConsoleReply::text(format!("ran {line}")) })
        }
        fn help(&self, _line: &str) -> String {
            String::new()
        }
        fn complete(&self, line: &str) -> Completion {
            let _ = &line[..line.len() - 1];
            panic!("byte index is not a char boundary");
        }
    }
    impl ConsoleBackend for PanickyBackend {
        fn login<'a>(
            &'a self,
            _user: &'a str,
            _password: &'a str,
            _peer: SocketAddr,
        ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
            Box::pin(async move { Some(Box::new(Panicky) as Box<dyn ConsoleSession>) })
        }
        fn supervisor(&self) -> crate::supervise::Supervisor {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn a_session_that_panics_is_closed_with_an_error_and_the_console_goes_on() {
        let sup = crate::supervise::Supervisor::new(None);
        let (c, sd, _d) = start(Arc::new(PanickyBackend(sup.clone()))).await;
        for round in 0..2 {
            let mut h = connect(&c).await;
            assert!(h
                .authenticate_password("admin", "pw")
                .await
                .unwrap()
                .success());
            let mut ch = h.channel_open_session().await.unwrap();
            ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
                .await
                .unwrap();
            ch.request_shell(true).await.unwrap();
            let mut buf = String::new();
            read_until(&mut ch, &mut buf, "P # ").await;
            ch.data_bytes("€\"x\"\t".as_bytes()).await.unwrap();
            read_until(&mut ch, &mut buf, "Internal error: the session is closed.").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut status = None;
            loop {
                match tokio::time::timeout_at(deadline, ch.wait()).await {
                    Ok(None) | Ok(Some(ChannelMsg::Close)) => break,
                    Ok(Some(ChannelMsg::ExitStatus { exit_status })) => status = Some(exit_status),
                    Ok(Some(_)) => {}
                    Err(_) => panic!("the channel of a panicked session hangs"),
                }
            }
            assert_eq!(status, Some(1));
            assert_eq!(sup.stats().tasks["console"].panicked, round + 1);
        }
        sd.cancel();
    }

    #[tokio::test]
    async fn shell_session_with_help_completion_and_close() {
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, sd, _d) = start(Arc::new(ClosingBackend(closed.clone()))).await;
        let mut h = connect(&c).await;
        assert!(!h
            .authenticate_password("admin", "bad")
            .await
            .unwrap()
            .success());
        assert!(h
            .authenticate_password("admin", "pw")
            .await
            .unwrap()
            .success());
        let mut ch = h.channel_open_session().await.unwrap();
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        ch.request_shell(true).await.unwrap();
        let mut buf = String::new();
        read_until(&mut ch, &mut buf, "DEV (0) # ").await;
        ch.data_bytes(&b"show?"[..]).await.unwrap();
        read_until(&mut ch, &mut buf, "help[show]\r\nDEV (0) # show").await;
        ch.data_bytes(&b"\t\r"[..]).await.unwrap();
        read_until(&mut ch, &mut buf, "echo:showX\r\nsecond line\r\nDEV (1) # ").await;
        ch.data_bytes(&b"bye\r"[..]).await.unwrap();
        read_until(&mut ch, &mut buf, "bye\r\n").await;
        // The channel closes after `close: true`.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, ch.wait()).await {
                Ok(None) | Ok(Some(ChannelMsg::Close)) => break,
                Ok(Some(_)) => {}
                Err(_) => panic!("channel not closed"),
            }
        }
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        drop(h);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while closed.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "on_close not called");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sd.cancel();
    }

    /// A backend whose sessions time out after `idle` and whose logins must come within
    /// `grace`.
    struct TimedBackend {
        idle: Duration,
        grace: Duration,
        timed_out: Arc<std::sync::atomic::AtomicUsize>,
    }
    struct TimedSess(Arc<std::sync::atomic::AtomicUsize>, Duration);
    impl ConsoleSession for TimedSess {
        fn prompt(&self) -> String {
            "T # ".into()
        }
        fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
            Box::pin(async move { ConsoleReply::text(format!("ran {} chars", line.len())) })
        }
        fn help(&self, _line: &str) -> String {
            String::new()
        }
        fn complete(&self, line: &str) -> Completion {
            Completion {
                line: line.into(),
                candidates: vec![],
            }
        }
        fn idle_timeout(&self) -> Option<Duration> {
            Some(self.1)
        }
        fn on_idle_timeout(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    impl ConsoleBackend for TimedBackend {
        fn login<'a>(
            &'a self,
            _user: &'a str,
            password: &'a str,
            _peer: SocketAddr,
        ) -> BoxFuture<'a, Option<Box<dyn ConsoleSession>>> {
            Box::pin(async move {
                (password == "pw").then(|| {
                    Box::new(TimedSess(self.timed_out.clone(), self.idle))
                        as Box<dyn ConsoleSession>
                })
            })
        }
        fn login_grace_time(&self) -> Duration {
            self.grace
        }
    }

    async fn shell(h: &mut russh::client::Handle<Client>) -> Channel<russh::client::Msg> {
        assert!(h
            .authenticate_password("admin", "pw")
            .await
            .unwrap()
            .success());
        let ch = h.channel_open_session().await.unwrap();
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        ch.request_shell(true).await.unwrap();
        ch
    }

    async fn wait_closed(ch: &mut Channel<russh::client::Msg>, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, ch.wait()).await {
                Ok(None) | Ok(Some(ChannelMsg::Close)) => return,
                Ok(Some(_)) => {}
                Err(_) => panic!("the session was not closed within {within:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_idle_session_is_closed_after_its_idle_timeout_and_activity_keeps_it() {
        let timed_out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, sd, _d) = start(Arc::new(TimedBackend {
            idle: Duration::from_secs(2),
            grace: Duration::from_secs(30),
            timed_out: timed_out.clone(),
        }))
        .await;
        let mut h = connect(&c).await;
        let mut ch = shell(&mut h).await;
        let mut buf = String::new();
        read_until(&mut ch, &mut buf, "T # ").await;
        // Typing resets the timer: keys 500 ms apart keep the session for 2.5 s (longer than
        // the 2 s idle timeout; each gap is a quarter of it, so a loaded machine does not flake).
        for k in ["a", "b", "c", "d", "\r"] {
            tokio::time::sleep(Duration::from_millis(500)).await;
            ch.data_bytes(k.as_bytes().to_vec()).await.unwrap();
        }
        read_until(&mut ch, &mut buf, "ran 4 chars").await;
        assert_eq!(timed_out.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Then nothing: closed after the idle timeout.
        let idle_from = std::time::Instant::now();
        wait_closed(&mut ch, Duration::from_secs(10)).await;
        assert!(idle_from.elapsed() >= Duration::from_millis(1900));
        assert_eq!(timed_out.load(std::sync::atomic::Ordering::SeqCst), 1);
        sd.cancel();
    }

    #[tokio::test]
    async fn a_connection_that_does_not_log_in_is_closed_after_the_grace_time() {
        let (c, sd, _d) = start(Arc::new(TimedBackend {
            idle: Duration::from_secs(60),
            grace: Duration::from_millis(500),
            timed_out: Arc::default(),
        }))
        .await;
        // Silent after TCP connect (not even the SSH version line).
        let mut tcp = tokio::net::TcpStream::connect(c.local_addr).await.unwrap();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
        )
        .await;
        assert!(read.is_ok(), "the silent connection was not closed");
        // Version exchange done, never authenticating.
        let h = connect(&c).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !h.is_closed() {
            assert!(tokio::time::Instant::now() < deadline, "not disconnected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sd.cancel();
    }

    #[tokio::test]
    async fn a_pasted_megabyte_line_gets_an_error_quickly_and_the_session_goes_on() {
        let (c, sd, _d) = start(Arc::new(TimedBackend {
            idle: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            timed_out: Arc::default(),
        }))
        .await;
        let mut h = connect(&c).await;
        let mut ch = shell(&mut h).await;
        let mut buf = String::new();
        read_until(&mut ch, &mut buf, "T # ").await;
        let mut line = vec![b'x'; 1024 * 1024];
        line.push(b'\r');
        ch.data_bytes(line).await.unwrap();
        read_until(&mut ch, &mut buf, &line_too_long_message()).await;
        ch.data_bytes(&b"ok\r"[..]).await.unwrap();
        read_until(&mut ch, &mut buf, "ran 2 chars").await;
        sd.cancel();
    }

    #[tokio::test]
    async fn exec_runs_lines_and_reports_failure() {
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, sd, _d) = start(Arc::new(ClosingBackend(closed))).await;
        let mut h = connect(&c).await;
        assert!(h
            .authenticate_password("admin", "pw")
            .await
            .unwrap()
            .success());
        let mut ch = h.channel_open_session().await.unwrap();
        ch.exec(true, "a\nb").await.unwrap();
        let mut out = String::new();
        let mut status = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, ch.wait()).await {
                Ok(Some(ChannelMsg::Data { data })) => {
                    out.push_str(&String::from_utf8_lossy(&data))
                }
                Ok(Some(ChannelMsg::ExitStatus { exit_status })) => status = Some(exit_status),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => panic!("exec did not finish: {out:?}"),
            }
        }
        assert_eq!(out, "echo:a\nsecond line\necho:b\nsecond line\n");
        // The fake session reports its second command as failed.
        assert_eq!(status, Some(1));
        sd.cancel();
    }

    #[tokio::test]
    async fn three_failed_passwords_close_the_connection() {
        let (c, sd, _d) = start(Arc::new(Backend)).await;
        let mut h = connect(&c).await;
        assert!(!h
            .authenticate_password("admin", "a")
            .await
            .unwrap()
            .success());
        assert!(!h
            .authenticate_password("admin", "b")
            .await
            .unwrap()
            .success());
        // The third failure disconnects: an error or a failure, and no fourth attempt.
        let third = h.authenticate_password("admin", "c").await;
        assert!(third.map(|r| !r.success()).unwrap_or(true));
        assert!(h.authenticate_password("admin", "d").await.is_err());
        sd.cancel();
    }

    #[tokio::test]
    async fn openssh_client_exec_and_keyboard_interactive() {
        assert!(
            std::process::Command::new("ssh").arg("-V").output().is_ok(),
            "this test needs OpenSSH's `ssh`, which is not installed: `apt-get install \
             openssh-client` (or run the tests with `cargo xtask test`, which installs it)"
        );
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, sd, dir) = start(Arc::new(ClosingBackend(closed))).await;
        let askpass = dir.path().join("askpass.sh");
        std::fs::write(&askpass, "#!/bin/sh\necho pw\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            format!(
                "[127.0.0.1]:{} {}\n",
                c.local_addr.port(),
                c.host_public_key
            ),
        )
        .unwrap();
        for method in ["password", "keyboard-interactive"] {
            let out = tokio::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-p", &c.local_addr.port().to_string()])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", kh.display()))
                .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=no"])
                .arg("-o")
                .arg(format!("PreferredAuthentications={method}"))
                .args([
                    "-o",
                    "NumberOfPasswordPrompts=1",
                    "admin@127.0.0.1",
                    "hello",
                ])
                .env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                stdout,
                "echo:hello\nsecond line\n",
                "{method}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{method}");
        }
        sd.cancel();
    }
}
