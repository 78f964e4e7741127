//! The running configuration: a [`Config`] with a revision, change events and the generic
//! operations the REST API (and later the SSH console) use. Every operation runs through the
//! [`Engine`], so a change is validated identically whichever surface it comes from.

use std::collections::HashMap;
use std::sync::RwLock;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::engine::{Change, ConfigError, Engine, ExecOptions, Warning};
use super::json::{self, JsonOpts};
use super::lexer::{self, Command};
use super::schema::{Schema, TableSchema};
use super::tree::{Config, Entry, Table};
use super::version::FosVersion;
use super::{defaults, noop, show};

/// Who made a change (for the event log 0100044547 and the lab events).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Origin {
    /// `admin`, an api-user name, `system`.
    pub user: String,
    /// `GUI(10.0.0.1)`, `jsconsole`, `ssh(...)`, `config-file`.
    pub ui: String,
}

impl Origin {
    pub fn system() -> Self {
        Self {
            user: "system".into(),
            ui: "config-file".into(),
        }
    }
}

/// A committed change, broadcast to subscribers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeEvent {
    #[serde(flatten)]
    pub change: Change,
    pub origin: Origin,
    pub revision: String,
}

/// Errors of REST-style operations, with the FortiOS HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("table not found")]
    NoTable,
    #[error("entry not found")]
    NotFound,
    #[error("a duplicate entry already exists")]
    Duplicate,
    #[error("method not allowed")]
    NotAllowed,
    #[error("missing required parameter: {0}")]
    Missing(String),
    #[error("invalid JSON: {0}")]
    BadRequest(String),
    #[error("command failed (return code {code})")]
    Cli { code: i32, cli_error: String },
}

impl OpError {
    pub fn http_status(&self) -> u16 {
        match self {
            OpError::NoTable | OpError::NotFound => 404,
            OpError::NotAllowed => 405,
            OpError::Missing(_) => 424,
            OpError::BadRequest(_) => 400,
            OpError::Duplicate | OpError::Cli { .. } => 500,
        }
    }

    /// The FortiOS `error` code, if the real product reports one.
    pub fn code(&self) -> Option<i32> {
        match self {
            OpError::Duplicate => Some(-5),
            OpError::Cli { code, .. } => Some(*code),
            OpError::NotFound => Some(-3),
            _ => None,
        }
    }

    pub fn cli_error(&self) -> Option<&str> {
        match self {
            OpError::Cli { cli_error, .. } => Some(cli_error),
            _ => None,
        }
    }

    /// A CLI error as the REST API reports it: a missing datasource entry is -651 with the
    /// `node_check_object fail!` text (reference §1.3).
    pub fn from_config(e: ConfigError) -> Self {
        match (e.code, &e.token) {
            (-3, Some(t)) if e.message.contains("datasource") => OpError::Cli {
                code: -651,
                cli_error: format!(
                    "node_check_object fail! for name {t}\n\nvalue parse error before '{t}'\nCommand fail. Return code -651\n"
                ),
            },
            _ => OpError::Cli { code: e.code, cli_error: e.cli_text() },
        }
    }
}

/// What a successful CLI application reports.
#[derive(Debug, Default)]
pub struct Applied {
    pub warnings: Vec<Warning>,
    /// The real changes; empty when the commands left the configuration as it was (then the
    /// revision did not move and nothing was published).
    pub changes: Vec<Change>,
    /// The revision before and after (equal when nothing changed).
    pub old_revision: String,
    pub revision: String,
}

/// What a REST write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The entry's key (`edit 0` resolved, after a rename the new one; `""` for single tables).
    pub key: String,
    /// Whether the configuration changed (`revision_changed`).
    pub changed: bool,
    pub old_revision: String,
    pub revision: String,
}

impl Written {
    fn from_applied(key: String, a: &Applied) -> Self {
        Self {
            key,
            changed: !a.changes.is_empty(),
            old_revision: a.old_revision.clone(),
            revision: a.revision.clone(),
        }
    }
}

struct Inner {
    cfg: Config,
    revision: String,
    counter: u64,
    rng: ChaCha8Rng,
}

/// The running configuration.
pub struct ConfigStore {
    version: FosVersion,
    salt: String,
    inner: RwLock<Inner>,
    /// `Inner::counter`, readable without the lock.
    generation: std::sync::atomic::AtomicU64,
    tx: broadcast::Sender<ChangeEvent>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Parses `text` (CLI) on top of `base`, returning the resulting configuration.
pub fn parse_config(
    base: &Config,
    text: &str,
    file: &str,
    version: FosVersion,
    strict: bool,
    rng: &mut ChaCha8Rng,
) -> Result<(Config, Applied), ConfigError> {
    let lexed = lexer::lex(text).map_err(|e| ConfigError {
        file: file.to_string(),
        line: e.line,
        col: e.col,
        code: -61,
        message: e.message,
        token: None,
    })?;
    let opts = ExecOptions {
        file: file.to_string(),
        strict,
    };
    let out = Engine::new(base, version, opts, rng).run(&lexed.commands)?;
    let mut cfg = base.clone();
    for (k, t) in out.staged {
        cfg.tables.insert(k, t);
    }
    Ok((
        cfg,
        Applied {
            warnings: out.warnings,
            changes: out.changes,
            ..Applied::default()
        },
    ))
}

/// The factory configuration at `version` (hostname `hostname`).
pub fn factory(version: FosVersion, hostname: &str, rng: &mut ChaCha8Rng) -> Config {
    let text = defaults::factory_config(version, hostname);
    match parse_config(&Config::default(), &text, "<factory>", version, true, rng) {
        Ok((cfg, _)) => cfg,
        Err(e) => panic!("factory configuration does not parse: {e}"),
    }
}

impl ConfigStore {
    /// A store holding `cfg`. `seed` drives generated UUIDs; `salt` (the serial) the revisions.
    pub fn new(cfg: Config, version: FosVersion, seed: u64, salt: &str) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let mut s = Self {
            version,
            salt: salt.to_string(),
            inner: RwLock::new(Inner {
                cfg,
                revision: String::new(),
                counter: 0,
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0f1),
            }),
            generation: std::sync::atomic::AtomicU64::new(0),
            tx,
        };
        let r = s.make_revision(0);
        s.inner.get_mut().expect("fresh lock").revision = r;
        s
    }

    pub fn version(&self) -> FosVersion {
        self.version
    }

    /// A number that changes with every committed change, read without locking (hot paths
    /// that only need to know whether the configuration changed since they last looked).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current revision (32 hex digits, changes on every change).
    pub fn revision(&self) -> String {
        self.read().revision.clone()
    }

    fn make_revision(&self, counter: u64) -> String {
        let d = Sha256::digest(format!("{}:{counter}", self.salt).as_bytes());
        hex::encode(&d[..16])
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.tx.subscribe()
    }

    /// Runs `f` with read access to the configuration.
    pub fn with<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.read().cfg)
    }

    /// A copy of the configuration.
    pub fn snapshot(&self) -> Config {
        self.read().cfg.clone()
    }

    /// The table schema of `path` at this version.
    pub fn table_schema(&self, path: &str) -> Option<&'static TableSchema> {
        Schema::get().table(path, self.version)
    }

    /// `show` / `show full-configuration` with the `#config-version` header.
    pub fn show(&self, full: bool, user: &str) -> String {
        let header = self.version.config_header(user);
        show::show(&self.read().cfg, self.version, full, Some(&header))
    }

    /// Runs commands; on success commits the staged tables and publishes the changes. When
    /// the commands change nothing (every entry the same as before), nothing is committed:
    /// the revision stays and no change event is published.
    pub fn execute(
        &self,
        cmds: &[Command],
        file: &str,
        strict: bool,
        origin: &Origin,
    ) -> Result<Applied, ConfigError> {
        let opts = ExecOptions {
            file: file.to_string(),
            strict,
        };
        // Re-runs of automation mostly change nothing: find that out under the read lock, so
        // such writes run in parallel with each other and with reads. The throw-away RNG only
        // matters for new entries (UUIDs), and a new entry is a change, run again below.
        {
            let g = self.read();
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let out = Engine::new(&g.cfg, self.version, opts.clone(), &mut rng).run(cmds)?;
            if out.changes.is_empty() {
                return Ok(Applied {
                    warnings: out.warnings,
                    changes: Vec::new(),
                    old_revision: g.revision.clone(),
                    revision: g.revision.clone(),
                });
            }
        }
        let mut g = self.write();
        let inner = &mut *g;
        let old_revision = inner.revision.clone();
        let out = Engine::new(&inner.cfg, self.version, opts, &mut inner.rng).run(cmds)?;
        if !out.changes.is_empty() {
            for (k, t) in out.staged {
                inner.cfg.tables.insert(k, t);
            }
            inner.counter += 1;
            inner.revision = self.make_revision(inner.counter);
            self.generation
                .store(inner.counter, std::sync::atomic::Ordering::Release);
            for c in &out.changes {
                let _ = self.tx.send(ChangeEvent {
                    change: c.clone(),
                    origin: origin.clone(),
                    revision: inner.revision.clone(),
                });
            }
        }
        Ok(Applied {
            warnings: out.warnings,
            changes: out.changes,
            old_revision,
            revision: inner.revision.clone(),
        })
    }

    /// Applies CLI text (a config script, a console paste). All or nothing.
    pub fn apply_cli(
        &self,
        text: &str,
        file: &str,
        strict: bool,
        origin: &Origin,
    ) -> Result<Applied, ConfigError> {
        let lexed = lexer::lex(text).map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.line,
            col: e.col,
            code: -61,
            message: e.message,
            token: None,
        })?;
        self.execute(&lexed.commands, file, strict, origin)
    }

    fn schema_of(&self, path: &str) -> Result<&'static TableSchema, OpError> {
        self.table_schema(path).ok_or(OpError::NoTable)
    }

    /// GET: the results of a table (array) or of one entry (array of one); a single table
    /// gives an object.
    pub fn get_json(
        &self,
        path: &str,
        mkey: Option<&str>,
        opts: &JsonOpts,
    ) -> Result<Value, OpError> {
        let ts = self.schema_of(path)?;
        let g = self.read();
        let empty = Table::new();
        let t = g.cfg.table(path).unwrap_or(&empty);
        if ts.is_single() {
            let e0 = Entry::new("");
            let e = t.get("").unwrap_or(&e0);
            return Ok(Value::Object(json::entry_to_json(
                &g.cfg,
                ts,
                e,
                self.version,
                opts,
                None,
            )));
        }
        let refs: Option<HashMap<String, usize>> = opts
            .with_meta
            .then(|| json::ref_counts(&g.cfg, self.version, path));
        match mkey {
            Some(k) => {
                let e = t.get(&normalize_key(ts, k)).ok_or(OpError::NotFound)?;
                Ok(Value::Array(vec![Value::Object(json::entry_to_json(
                    &g.cfg,
                    ts,
                    e,
                    self.version,
                    opts,
                    refs.as_ref(),
                ))]))
            }
            None => Ok(Value::Array(
                t.entries()
                    .iter()
                    .map(|e| {
                        Value::Object(json::entry_to_json(
                            &g.cfg,
                            ts,
                            e,
                            self.version,
                            opts,
                            refs.as_ref(),
                        ))
                    })
                    .collect(),
            )),
        }
    }

    /// Whether the entry exists.
    pub fn exists(&self, path: &str, mkey: &str) -> bool {
        let Some(ts) = self.table_schema(path) else {
            return false;
        };
        self.read()
            .cfg
            .entry(path, &normalize_key(ts, mkey))
            .is_some()
    }

    /// POST: creates an entry from a JSON body; the key is `edit 0` resolved.
    pub fn create(
        &self,
        path: &str,
        body: &Map<String, Value>,
        origin: &Origin,
    ) -> Result<Written, OpError> {
        let ts = self.schema_of(path)?;
        if ts.is_single() {
            return Err(OpError::NotAllowed);
        }
        let key = match json::body_key(ts, body) {
            Some(k) => normalize_key(ts, &k),
            None if ts.int_key() => "0".to_string(),
            None => return Err(OpError::Missing(ts.mkey().unwrap_or("name").to_string())),
        };
        if key != "0" && self.exists(path, &key) {
            return Err(OpError::Duplicate);
        }
        let mut cmds = vec![
            Command::from_words(&["config".to_string(), path.to_string()]),
            Command::from_words(&["edit", &key]),
        ];
        json::json_to_commands(ts, body, self.version, &mut cmds).map_err(json_err)?;
        cmds.push(Command::from_words(&["next"]));
        cmds.push(Command::from_words(&["end"]));
        let applied = self
            .execute(&split_path(cmds), "<rest>", false, origin)
            .map_err(OpError::from_config)?;
        let key = applied
            .changes
            .iter()
            .rev()
            .find(|c| c.path == path)
            .map(|c| c.key.clone())
            .unwrap_or(key);
        Ok(Written::from_applied(key, &applied))
    }

    /// PUT: updates an entry (or a single table when `mkey` is `None`); a different key in the
    /// body renames the entry.
    pub fn update(
        &self,
        path: &str,
        mkey: Option<&str>,
        body: &Map<String, Value>,
        origin: &Origin,
    ) -> Result<Written, OpError> {
        self.update_with(path, mkey, body, origin, true)
    }

    /// [`Self::update`] always through the engine (the reference the fast path is tested
    /// against).
    #[cfg(test)]
    pub(crate) fn update_by_engine(
        &self,
        path: &str,
        mkey: Option<&str>,
        body: &Map<String, Value>,
        origin: &Origin,
    ) -> Result<Written, OpError> {
        self.update_with(path, mkey, body, origin, false)
    }

    fn update_with(
        &self,
        path: &str,
        mkey: Option<&str>,
        body: &Map<String, Value>,
        origin: &Origin,
        fast: bool,
    ) -> Result<Written, OpError> {
        let ts = self.schema_of(path)?;
        let mut cmds = vec![Command::from_words(&[
            "config".to_string(),
            path.to_string(),
        ])];
        let mut renamed = false;
        let key = match (ts.is_single(), mkey) {
            (true, _) => String::new(),
            (false, None) => return Err(OpError::NotAllowed),
            (false, Some(k)) => {
                let k = normalize_key(ts, k);
                if !self.exists(path, &k) {
                    return Err(OpError::NotFound);
                }
                let mut key = k.clone();
                if let Some(new) = json::body_key(ts, body).map(|n| normalize_key(ts, &n)) {
                    if new != k {
                        if self.exists(path, &new) {
                            return Err(OpError::Duplicate);
                        }
                        cmds.push(Command::from_words(&["rename", &k, "to", &new]));
                        key = new;
                        renamed = true;
                    }
                }
                cmds.push(Command::from_words(&["edit", &key]));
                key
            }
        };
        // A re-run sending what the entry already holds: answered without the engine.
        if fast && !renamed {
            if let Some(w) = self.unchanged_write(ts, path, &key, body) {
                return Ok(w);
            }
        }
        json::json_to_commands(ts, body, self.version, &mut cmds).map_err(json_err)?;
        if !ts.is_single() {
            cmds.push(Command::from_words(&["next"]));
        }
        cmds.push(Command::from_words(&["end"]));
        let applied = self
            .execute(&split_path(cmds), "<rest>", false, origin)
            .map_err(OpError::from_config)?;
        Ok(Written::from_applied(key, &applied))
    }

    /// The answer to a PUT of `body` on entry `key` when [`noop::body_unchanged`] proves it
    /// changes nothing (the revision stays; nothing is published, logged or saved); `None`
    /// when not proven (the engine decides).
    fn unchanged_write(
        &self,
        ts: &TableSchema,
        path: &str,
        key: &str,
        body: &Map<String, Value>,
    ) -> Option<Written> {
        let g = self.read();
        let empty = Entry::new("");
        let e = match g.cfg.entry(path, key) {
            Some(e) => e,
            // A single table without an entry holds its defaults (as the engine's prior).
            None if ts.is_single() => &empty,
            None => return None,
        };
        noop::body_unchanged(&g.cfg, ts, e, body, self.version).then(|| Written {
            key: key.to_string(),
            changed: false,
            old_revision: g.revision.clone(),
            revision: g.revision.clone(),
        })
    }

    /// DELETE one entry.
    pub fn delete(&self, path: &str, mkey: &str, origin: &Origin) -> Result<Written, OpError> {
        let ts = self.schema_of(path)?;
        if ts.is_single() {
            return Err(OpError::NotAllowed);
        }
        let key = normalize_key(ts, mkey);
        if !self.exists(path, &key) {
            return Err(OpError::NotFound);
        }
        let cmds = vec![
            Command::from_words(&["config".to_string(), path.to_string()]),
            Command::from_words(&["delete", &key]),
            Command::from_words(&["end"]),
        ];
        let applied = self
            .execute(&split_path(cmds), "<rest>", false, origin)
            .map_err(OpError::from_config)?;
        Ok(Written::from_applied(key, &applied))
    }

    /// Moves an entry before/after another (`action=move`); an entry already in place is no
    /// change.
    pub fn move_entry(
        &self,
        path: &str,
        mkey: &str,
        before: bool,
        target: &str,
        origin: &Origin,
    ) -> Result<Written, OpError> {
        let ts = self.schema_of(path)?;
        if ts.is_single() {
            return Err(OpError::NotAllowed);
        }
        let key = normalize_key(ts, mkey);
        let target = normalize_key(ts, target);
        if !self.exists(path, &key) || !self.exists(path, &target) {
            return Err(OpError::NotFound);
        }
        let cmds = vec![
            Command::from_words(&["config".to_string(), path.to_string()]),
            Command::from_words(&[
                "move",
                &key,
                if before { "before" } else { "after" },
                &target,
            ]),
            Command::from_words(&["end"]),
        ];
        let applied = self
            .execute(&split_path(cmds), "<rest>", false, origin)
            .map_err(OpError::from_config)?;
        Ok(Written::from_applied(key, &applied))
    }

    /// Clones an entry under a new key (`action=clone&nkey=`; CLI `clone <a> to <b>`).
    pub fn clone_entry(
        &self,
        path: &str,
        mkey: &str,
        nkey: &str,
        origin: &Origin,
    ) -> Result<Written, OpError> {
        let ts = self.schema_of(path)?;
        if ts.is_single() {
            return Err(OpError::NotAllowed);
        }
        let key = normalize_key(ts, mkey);
        let nkey = normalize_key(ts, nkey);
        if !self.exists(path, &key) {
            return Err(OpError::NotFound);
        }
        if self.exists(path, &nkey) {
            return Err(OpError::Duplicate);
        }
        let cmds = vec![
            Command::from_words(&["config".to_string(), path.to_string()]),
            Command::from_words(&["clone", &key, "to", &nkey]),
            Command::from_words(&["end"]),
        ];
        let applied = self
            .execute(&split_path(cmds), "<rest>", false, origin)
            .map_err(OpError::from_config)?;
        Ok(Written::from_applied(nkey, &applied))
    }

    // ---------------------------------------------------------------- typed accessors

    /// `system global` hostname.
    pub fn hostname(&self) -> String {
        self.with(|config| {
            config
                .single("system global")
                .and_then(|e| e.scalar("hostname"))
                .unwrap_or("")
                .to_string()
        })
    }

    /// The firewall policies in evaluation order.
    pub fn policies(&self) -> Vec<Policy> {
        self.with(|config| {
            config
                .table("firewall policy")
                .map(|t| t.entries().iter().map(Policy::from_entry).collect())
                .unwrap_or_default()
        })
    }
}

/// A typed view of a firewall policy (for the data plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub policyid: u64,
    pub name: String,
    pub enabled: bool,
    pub srcintf: Vec<String>,
    pub dstintf: Vec<String>,
    pub srcaddr: Vec<String>,
    pub dstaddr: Vec<String>,
    pub service: Vec<String>,
    pub schedule: String,
    /// `accept`, `deny`, `ipsec`.
    pub action: String,
    pub utm_status: bool,
    pub ssl_ssh_profile: String,
    pub webfilter_profile: String,
    /// `all`, `utm`, `disable`.
    pub logtraffic: String,
    pub nat: bool,
    pub uuid: String,
}

impl Policy {
    pub fn from_entry(e: &Entry) -> Self {
        let s = |f: &str, d: &str| e.scalar(f).unwrap_or(d).to_string();
        Policy {
            policyid: e.key.parse().unwrap_or(0),
            name: s("name", ""),
            enabled: s("status", "enable") == "enable",
            srcintf: e.list("srcintf").to_vec(),
            dstintf: e.list("dstintf").to_vec(),
            srcaddr: e.list("srcaddr").to_vec(),
            dstaddr: e.list("dstaddr").to_vec(),
            service: e.list("service").to_vec(),
            schedule: s("schedule", ""),
            action: s("action", "deny"),
            utm_status: s("utm-status", "disable") == "enable",
            ssl_ssh_profile: s("ssl-ssh-profile", "no-inspection"),
            webfilter_profile: s("webfilter-profile", ""),
            logtraffic: s("logtraffic", "utm"),
            nat: s("nat", "disable") == "enable",
            uuid: s("uuid", ""),
        }
    }
}

/// Integer keys are normalized (`007` → `7`).
fn normalize_key(ts: &TableSchema, k: &str) -> String {
    if ts.int_key() {
        k.trim()
            .parse::<u64>()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| k.to_string())
    } else {
        k.to_string()
    }
}

/// `config <path>` built with the path as one word → one word per path element.
fn split_path(mut cmds: Vec<Command>) -> Vec<Command> {
    if let Some(c) = cmds.first_mut() {
        if c.word(0) == Some("config") && c.tokens.len() == 2 {
            let words: Vec<String> = std::iter::once("config".to_string())
                .chain(c.tokens[1].text.split(' ').map(String::from))
                .collect();
            *c = Command::from_words(&words);
        }
    }
    cmds
}

fn json_err(e: json::JsonError) -> OpError {
    OpError::Cli {
        code: e.code,
        cli_error: format!(
            "{}\nvalue parse error before '{}'\nCommand fail. Return code {}\n",
            e.message, e.field, e.code
        ),
    }
}
