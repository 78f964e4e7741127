//! The FortiOS CLI state machine (pure logic, no I/O): the `config`/`edit`/`set`/`next`/`end`
//! context stack, the prompt, abbreviations, `show`/`get` of configuration, and `?`/TAB
//! candidates.
//!
//! Changes go through the configuration [`Engine`](crate::config::engine::Engine) exactly like
//! the REST path: every line typed inside a `config` block is validated at once by replaying
//! the block so far (plus the new line) against the running configuration, without committing;
//! a top-level entry is committed with [`ConfigStore::execute`] on `next`, a table or single
//! object on `end` (same validation, same revision bump, same change events and event log
//! 0100044547 as REST). A failed `next`/`end` commits nothing and stays in the entry.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::engine::{ConfigError, Engine, ExecOptions, Outcome};
use crate::config::lexer::{self, Command, Token};
use crate::config::schema::{FieldSchema, FieldType, Schema, TableSchema};
use crate::config::show;
use crate::config::tree::{Config, Entry, Table, Value};
use crate::config::{ConfigStore, FosVersion, Origin};

use super::help;

/// One level of the context stack.
#[derive(Debug, Clone)]
enum Ctx {
    /// `config <path>` (top level) or `config <field>` (nested). A single table is also its
    /// own entry (`set` works directly).
    Table {
        schema: &'static TableSchema,
        /// The top-level path or the nested field name (the prompt's last word).
        name: String,
    },
    /// `edit <key>`.
    Entry {
        schema: &'static TableSchema,
        key: String,
    },
}

impl Ctx {
    fn schema(&self) -> &'static TableSchema {
        match self {
            Ctx::Table { schema, .. } | Ctx::Entry { schema, .. } => schema,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CliOutput {
    pub text: String,
    pub failed: bool,
}

impl CliOutput {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            failed: false,
        }
    }
    fn fail(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            failed: true,
        }
    }
}

/// The result of dispatching one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Handled here.
    Done(CliOutput),
    /// An operational command (`diagnose`, `execute`, `get system status`...): the words
    /// with the verb expanded, for the device layer.
    Operational(Vec<String>),
}

/// The parse error FortiOS prints for a word it does not understand.
pub fn parse_error(word: &str) -> String {
    format!("command parse error before '{word}'\nCommand fail. Return code -61\n")
}

/// The CLI text of an engine error (FortiOS wording).
pub fn error_text(e: &ConfigError, value_context: bool) -> String {
    let tok = e.token.as_deref();
    match (tok, e.code) {
        (Some(t), -61) => parse_error(t),
        (Some(t), -3) if e.message.contains("datasource") => format!(
            "entry not found in datasource\n\nvalue parse error before '{t}'\nCommand fail. Return code -3\n"
        ),
        (Some(t), c) if e.message == "value parse error" || value_context => {
            let head = if e.message == "value parse error" {
                String::new()
            } else {
                format!("{}\n", e.message)
            };
            format!("{head}value parse error before '{t}'\nCommand fail. Return code {c}\n")
        }
        (_, c) => format!("{}\nCommand fail. Return code {c}\n", e.message),
    }
}

/// Verbs valid in each context, with their help text.
const TOP_VERBS: &[(&str, &str)] = &[
    ("config", "Configure object."),
    ("get", "Get dynamic and system information."),
    ("show", "Show configuration."),
    ("diagnose", "Diagnose facility."),
    ("execute", "Execute static commands."),
    ("exit", "Exit the CLI."),
];
const TABLE_VERBS: &[(&str, &str)] = &[
    ("delete", "Delete an object."),
    ("edit", "Create/edit an object."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("move", "Move an object."),
    ("purge", "Purge all objects."),
    ("rename", "Rename an object."),
    ("show", "Show configuration."),
    ("clone", "Clone an object."),
];
const ENTRY_VERBS: &[(&str, &str)] = &[
    ("abort", "End and discard last config."),
    ("append", "Append values to an option."),
    ("config", "Configure object."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("next", "Configure next table entry."),
    ("select", "Select values for an option."),
    ("set", "Modify value."),
    ("show", "Show configuration."),
    ("unselect", "Unselect values from an option."),
    ("unset", "Set to default value."),
];
const SINGLE_VERBS: &[(&str, &str)] = &[
    ("abort", "End and discard last config."),
    ("append", "Append values to an option."),
    ("config", "Configure object."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("select", "Select values for an option."),
    ("set", "Modify value."),
    ("show", "Show configuration."),
    ("unselect", "Unselect values from an option."),
    ("unset", "Set to default value."),
];

/// Line number of the synthetic commands closing a dry run (errors there are not the user's).
const SYNTHETIC_LINE: usize = 1_000_000;

/// One console's CLI state.
pub struct CliSession {
    store: Arc<ConfigStore>,
    version: FosVersion,
    /// Who commits (`admin`, `ssh(10.115.1.20)`).
    pub origin: Origin,
    stack: Vec<Ctx>,
    /// The commands of the open top-level block (from its `config` line).
    buffer: Vec<Command>,
}

impl std::fmt::Debug for CliSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliSession")
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

fn cmd(words: &[&str]) -> Command {
    let mut c = Command::from_words(words);
    for t in &mut c.tokens {
        t.quoted = false;
    }
    c
}

fn renumber(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| Command {
            line: i + 1,
            tokens: c
                .tokens
                .iter()
                .map(|t| Token {
                    line: i + 1,
                    ..t.clone()
                })
                .collect(),
        })
        .collect()
}

fn with_line(mut c: Command, line: usize) -> Command {
    c.line = line;
    for t in &mut c.tokens {
        t.line = line;
    }
    c
}

/// Picks `word` among `options` by exact match or unique prefix.
pub fn resolve<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let opts: Vec<&str> = options.into_iter().collect();
    if let Some(o) = opts.iter().find(|o| **o == word) {
        return Some(o);
    }
    let lw = word.to_ascii_lowercase();
    let mut hits = opts
        .iter()
        .filter(|o| o.to_ascii_lowercase().starts_with(&lw));
    match (hits.next(), hits.next()) {
        (Some(o), None) => Some(o),
        _ => None,
    }
}

impl CliSession {
    pub fn new(store: Arc<ConfigStore>, origin: Origin) -> Self {
        let version = store.version();
        Self {
            store,
            version,
            origin,
            stack: Vec::new(),
            buffer: Vec::new(),
        }
    }

    pub fn version(&self) -> FosVersion {
        self.version
    }

    pub fn store(&self) -> &Arc<ConfigStore> {
        &self.store
    }

    /// Whether a `config` block is open.
    pub fn in_config(&self) -> bool {
        !self.stack.is_empty()
    }

    /// `FGT-LAB # `, `FGT-LAB (policy) # `, `FGT-LAB (1) # `, `FGT-LAB (global) # `.
    pub fn prompt(&self) -> String {
        let host = self.store.hostname();
        match self.stack.last() {
            None => format!("{host} # "),
            Some(Ctx::Table { name, .. }) => {
                let last = name.rsplit(' ').next().unwrap_or(name);
                format!("{host} ({last}) # ")
            }
            Some(Ctx::Entry { key, .. }) => format!("{host} ({key}) # "),
        }
    }

    fn verbs(&self) -> &'static [(&'static str, &'static str)] {
        match self.stack.last() {
            None => TOP_VERBS,
            Some(Ctx::Table { schema, .. }) if schema.is_single() => SINGLE_VERBS,
            Some(Ctx::Table { .. }) => TABLE_VERBS,
            Some(Ctx::Entry { .. }) => ENTRY_VERBS,
        }
    }

    /// Expands an abbreviated verb for the current context.
    pub fn resolve_verb(&self, word: &str) -> Option<&'static str> {
        let extra: &[&str] = match self.stack.last() {
            // Accepted though not listed: `select`/`clear` aliases, `config` to switch tables.
            Some(Ctx::Table { schema, .. }) if !schema.is_single() => &["config"],
            Some(_) => &["clear"],
            None => &[],
        };
        let all: Vec<&'static str> = self
            .verbs()
            .iter()
            .map(|(v, _)| *v)
            .chain(extra.iter().copied())
            .collect();
        resolve(word, all)
    }

    // --------------------------------------------------------------------- dispatch

    /// Runs one command (already lexed).
    pub fn dispatch(&mut self, c: &Command) -> Dispatch {
        let Some(first) = c.tokens.first() else {
            return Dispatch::Done(CliOutput::default());
        };
        let Some(verb) = self.resolve_verb(&first.text) else {
            return Dispatch::Done(CliOutput::fail(parse_error(&first.text)));
        };
        let args: Vec<Token> = c.tokens[1..].to_vec();
        match verb {
            "diagnose" | "execute" | "exit" => {
                let mut w = vec![verb.to_string()];
                w.extend(args.iter().map(|t| t.text.clone()));
                Dispatch::Operational(w)
            }
            "get" if self.stack.is_empty() && self.is_operational_get(&args) => {
                let mut w = vec!["get".to_string()];
                w.extend(self.expand_op_words(&args));
                Dispatch::Operational(w)
            }
            "show" | "get" => Dispatch::Done(self.show(verb == "get", &args)),
            "config" => Dispatch::Done(self.cmd_config(&args, first)),
            _ => Dispatch::Done(self.config_cmd(verb, &args)),
        }
    }

    /// The command as this CLI understands it in the current context, every abbreviated word
    /// expanded along its tree (`diag deb app fgfmd -1` → `diagnose debug application fgfmd
    /// -1`, `sh fire pol 1` → `show firewall policy 1`); words after the tree are kept as
    /// typed. `None` when the first word is no verb here (the CLI refuses the command).
    /// Exercise checks match console commands against it.
    pub fn canonical(&self, c: &Command) -> Option<String> {
        let verb = self.resolve_verb(&c.tokens.first()?.text)?;
        let args = &c.tokens[1..];
        let typed = |from: usize| args[from..].iter().map(|t| t.text.clone());
        let mut words = vec![verb.to_string()];
        match verb {
            "diagnose" | "execute" => {
                words.extend(typed(0));
                let (path, used) = super::ops::resolve_path(self.version, &words);
                let mut out = vec![path];
                out.extend(words[used..].iter().cloned());
                words = out;
            }
            "get" if self.stack.is_empty() && self.is_operational_get(args) => {
                words.extend(self.expand_op_words(args));
            }
            "show" | "get" | "config" => match self.resolve_path(args) {
                Ok((path, used)) if used > 0 => {
                    words.push(path);
                    words.extend(typed(used));
                }
                _ => words.extend(typed(0)),
            },
            _ => words.extend(typed(0)),
        }
        Some(words.join(" "))
    }

    fn is_operational_get(&self, args: &[Token]) -> bool {
        let words = self.expand_op_words(args);
        words.len() >= 2 && words[0] == "system" && words[1] == "status"
    }

    fn expand_op_words(&self, args: &[Token]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = args.first() {
            out.push(resolve(&a.text, ["system"]).unwrap_or(&a.text).to_string());
        }
        if let Some(a) = args.get(1) {
            if out[0] == "system" {
                let paths: Vec<&str> = self.path_words_after(&["system"]);
                let mut opts = paths;
                opts.push("status");
                out.push(resolve(&a.text, opts).unwrap_or(&a.text).to_string());
            } else {
                out.push(a.text.clone());
            }
        }
        out.extend(args.iter().skip(2).map(|t| t.text.clone()));
        out
    }

    /// The distinct words following `prefix` among the table paths at this version.
    fn path_words_after(&self, prefix: &[&str]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for t in Schema::get().tables_at(self.version) {
            let words: Vec<&'static str> = t.path.split(' ').collect();
            if words.len() > prefix.len() && words[..prefix.len()] == *prefix {
                let w = words[prefix.len()];
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Resolves (possibly abbreviated) path words to a table path; `Err(word)` names the
    /// word that does not fit. Returns the path and how many words it used.
    fn resolve_path(&self, words: &[Token]) -> Result<(String, usize), String> {
        let mut path: Vec<&'static str> = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let opts = self.path_words_after(&path);
            if opts.is_empty() {
                let p = path.join(" ");
                return match Schema::get().table(&p, self.version) {
                    Some(_) => Ok((p, i)),
                    None => Err(w.text.clone()),
                };
            }
            match resolve(&w.text, opts.iter().copied()) {
                Some(x) => path.push(x),
                None => {
                    // A complete path followed by more words (`show firewall policy 1`).
                    let p = path.join(" ");
                    if Schema::get().table(&p, self.version).is_some() {
                        return Ok((p, i));
                    }
                    return Err(w.text.clone());
                }
            }
        }
        let p = path.join(" ");
        match Schema::get().table(&p, self.version) {
            Some(_) => Ok((p, words.len())),
            None => Err(words.last().map(|t| t.text.clone()).unwrap_or_default()),
        }
    }

    // --------------------------------------------------------------------- engine runs

    fn closing(&self, commit: bool) -> Vec<Command> {
        let mut out = Vec::new();
        for ctx in self.stack.iter().rev() {
            let w = match ctx {
                Ctx::Entry { .. } if commit => "next",
                Ctx::Entry { .. } => "abort",
                Ctx::Table { .. } => "end",
            };
            out.push(with_line(cmd(&[w]), SYNTHETIC_LINE));
        }
        out
    }

    /// Replays the block plus `extra` and the closing commands without committing.
    fn dry_run(&self, extra: &[Command], commit_close: bool) -> Result<Outcome, ConfigError> {
        let mut cmds: Vec<Command> = self.buffer.clone();
        cmds.extend(extra.iter().cloned());
        let mut cmds = renumber(&cmds);
        cmds.extend(self.closing(commit_close));
        self.with_engine(|_, engine| engine.run(&cmds))
    }

    /// Runs `f` with a throw-away engine on the current configuration (console options, a
    /// fixed seed: nothing it stages is kept).
    fn with_engine<R>(&self, f: impl for<'e> FnOnce(&'e Config, Engine<'e>) -> R) -> R {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let opts = ExecOptions {
            file: "<console>".into(),
            strict: false,
        };
        self.store
            .with(|cfg| f(cfg, Engine::new(cfg, self.version, opts, &mut rng)))
    }

    /// Validates `c` in the current block; the error text if it fails.
    fn validate(&self, c: &Command, value_context: bool) -> Result<(), String> {
        match self.dry_run(std::slice::from_ref(c), false) {
            Ok(_) => Ok(()),
            Err(e) if e.line >= SYNTHETIC_LINE => Ok(()),
            Err(e) => Err(error_text(&e, value_context)),
        }
    }

    /// Commits the block plus `extra` (which must close what it commits).
    fn commit(&self, extra: &[Command]) -> Result<(), String> {
        let mut cmds = self.buffer.clone();
        cmds.extend(extra.iter().cloned());
        let cmds = renumber(&cmds);
        // A block that changes nothing (`edit x` / `end`, `set` to the current value) commits
        // nothing: `execute` keeps the revision and publishes no change (no change log).
        self.store
            .execute(&cmds, "<console>", false, &self.origin)
            .map(|_| ())
            .map_err(|e| error_text(&e, false))
    }

    // --------------------------------------------------------------------- config verbs

    fn cmd_config(&mut self, args: &[Token], first: &Token) -> CliOutput {
        if args.is_empty() {
            return CliOutput::fail(parse_error(&first.text));
        }
        // A nested table of the current entry.
        if let Some(ctx) = self.stack.last() {
            let entry_like = matches!(ctx, Ctx::Entry { .. })
                || matches!(ctx, Ctx::Table { schema, .. } if schema.is_single());
            if entry_like && args.len() == 1 {
                let schema = ctx.schema();
                let names: Vec<&'static str> = schema
                    .fields_at(self.version)
                    .filter(|f| matches!(f.ty, FieldType::Table(_)))
                    .map(|f| f.name)
                    .collect();
                if let Some(name) = resolve(&args[0].text, names) {
                    let f = schema.field(name, self.version).expect("field exists");
                    let FieldType::Table(sub) = &f.ty else {
                        unreachable!()
                    };
                    let sub: &'static TableSchema = sub;
                    let c = cmd(&["config", name]);
                    if let Err(e) = self.validate(&c, false) {
                        return CliOutput::fail(e);
                    }
                    self.buffer.push(c);
                    self.stack.push(Ctx::Table {
                        schema: sub,
                        name: name.to_string(),
                    });
                    return CliOutput::default();
                }
            }
        }
        let (path, used) = match self.resolve_path(args) {
            Ok(x) => x,
            Err(w) => return CliOutput::fail(parse_error(&w)),
        };
        if let Some(extra) = args.get(used) {
            return CliOutput::fail(parse_error(&extra.text));
        }
        let schema = Schema::get()
            .table(&path, self.version)
            .expect("resolved path");
        // Another top-level table while a block is open: close (commit) it first, as a
        // configuration file does (the seed's first snippet has no `end`).
        if !self.stack.is_empty() {
            if let Err(e) = self.commit(&self.closing(true)) {
                return CliOutput::fail(e);
            }
            self.stack.clear();
            self.buffer.clear();
        }
        let words: Vec<&str> = std::iter::once("config").chain(path.split(' ')).collect();
        self.buffer = vec![cmd(&words)];
        self.stack.push(Ctx::Table { schema, name: path });
        CliOutput::default()
    }

    fn config_cmd(&mut self, verb: &str, args: &[Token]) -> CliOutput {
        let Some(ctx) = self.stack.last().cloned() else {
            return CliOutput::fail(parse_error(verb));
        };
        let schema = ctx.schema();
        match verb {
            "edit" => self.cmd_edit(schema, args),
            "set" | "select" | "append" | "unselect" | "unset" | "clear" => {
                self.cmd_set(verb, schema, args)
            }
            "next" => self.cmd_next(),
            "end" => self.cmd_end(),
            "abort" => self.cmd_abort(),
            "delete" | "purge" | "move" | "rename" | "clone" => {
                let mut words: Vec<String> = vec![verb.to_string()];
                words.extend(args.iter().map(|t| t.text.clone()));
                if verb == "move" {
                    if let Some(pos) = args.get(1) {
                        if let Some(p) = resolve(&pos.text, ["before", "after"]) {
                            words[2] = p.to_string();
                        }
                    }
                }
                let mut c = Command::from_words(&words);
                c.tokens[0].quoted = false;
                if let Err(e) = self.validate(&c, false) {
                    return CliOutput::fail(e);
                }
                self.buffer.push(c);
                // Table operations on a top-level table take effect at once (FortiOS commits
                // `delete` immediately).
                if self.stack.len() == 1 {
                    let extra = vec![cmd(&["end"])];
                    if let Err(e) = self.commit(&extra) {
                        self.buffer.pop();
                        return CliOutput::fail(e);
                    }
                    self.buffer.truncate(1);
                }
                CliOutput::default()
            }
            _ => CliOutput::fail(parse_error(verb)),
        }
    }

    fn cmd_edit(&mut self, schema: &'static TableSchema, args: &[Token]) -> CliOutput {
        let Some(k) = args.first() else {
            return CliOutput::fail(parse_error("edit"));
        };
        if let Some(extra) = args.get(1) {
            return CliOutput::fail(parse_error(&extra.text));
        }
        let c = Command {
            line: 0,
            tokens: vec![
                Token {
                    text: "edit".into(),
                    line: 0,
                    col: 1,
                    quoted: false,
                },
                k.clone(),
            ],
        };
        if let Err(e) = self.validate(&c, true) {
            return CliOutput::fail(e);
        }
        let key = if schema.int_key() {
            k.text
                .parse::<u64>()
                .map(|n| n.to_string())
                .unwrap_or_default()
        } else {
            k.text.clone()
        };
        self.buffer.push(c);
        self.stack.push(Ctx::Entry { schema, key });
        CliOutput::default()
    }

    fn cmd_set(&mut self, verb: &str, schema: &'static TableSchema, args: &[Token]) -> CliOutput {
        let entry_like = matches!(self.stack.last(), Some(Ctx::Entry { .. })) || schema.is_single();
        if !entry_like {
            return CliOutput::fail(parse_error(verb));
        }
        let Some(ftok) = args.first() else {
            return CliOutput::fail(format!(
                "command parse error before '{verb}'\nCommand fail. Return code -61\n"
            ));
        };
        let names: Vec<&'static str> = schema
            .fields_at(self.version)
            .filter(|f| !matches!(f.ty, FieldType::Table(_)))
            .map(|f| f.name)
            .collect();
        let Some(fname) = resolve(&ftok.text, names) else {
            return CliOutput::fail(parse_error(&ftok.text));
        };
        let field = schema.field(fname, self.version).expect("resolved field");
        let mut tokens = vec![
            Token {
                text: verb.to_string(),
                line: 0,
                col: 1,
                quoted: false,
            },
            Token {
                text: fname.to_string(),
                ..ftok.clone()
            },
        ];
        for v in &args[1..] {
            let mut v = v.clone();
            if let FieldType::Enum(opts) = &field.ty {
                if !v.quoted {
                    if let Some(o) = resolve(&v.text, opts.iter().copied()) {
                        v.text = o.to_string();
                    }
                }
            }
            tokens.push(v);
        }
        if matches!(verb, "unset" | "clear") {
            if let Some(extra) = args.get(1) {
                return CliOutput::fail(parse_error(&extra.text));
            }
        } else if args.len() < 2 {
            return CliOutput::fail(format!(
                "value parse error before '{fname}'\nCommand fail. Return code -651\n"
            ));
        }
        let c = Command { line: 0, tokens };
        if let Err(e) = self.validate(&c, true) {
            return CliOutput::fail(e);
        }
        self.buffer.push(c);
        CliOutput::default()
    }

    fn cmd_next(&mut self) -> CliOutput {
        match self.stack.last() {
            Some(Ctx::Entry { .. }) => {}
            _ => return CliOutput::fail(parse_error("next")),
        }
        let c = cmd(&["next"]);
        if self.stack.len() == 2 {
            // A top-level entry: commit it now.
            if let Err(e) = self.commit(&[c, cmd(&["end"])]) {
                return CliOutput::fail(e);
            }
            self.buffer.truncate(1);
        } else {
            // A nested entry is part of its parent: validate only.
            if let Err(e) = self.validate_closing(&c, 1) {
                return CliOutput::fail(e);
            }
            self.buffer.push(c);
        }
        self.stack.pop();
        CliOutput::default()
    }

    fn clone_shallow(&self) -> CliSession {
        CliSession {
            store: self.store.clone(),
            version: self.version,
            origin: self.origin.clone(),
            stack: self.stack.clone(),
            buffer: self.buffer.clone(),
        }
    }

    fn cmd_end(&mut self) -> CliOutput {
        let Some(top) = self.stack.last().cloned() else {
            return CliOutput::fail(parse_error("end"));
        };
        let c = cmd(&["end"]);
        // How many frames `end` closes: an entry of a multi table closes entry + table.
        let closes = match top {
            Ctx::Entry { .. } => 2,
            Ctx::Table { .. } => 1,
        };
        if self.stack.len() <= closes {
            if let Err(e) = self.commit(&[c]) {
                return CliOutput::fail(e);
            }
            self.stack.clear();
            self.buffer.clear();
        } else {
            if let Err(e) = self.validate_closing(&c, closes) {
                return CliOutput::fail(e);
            }
            self.buffer.push(c);
            for _ in 0..closes {
                self.stack.pop();
            }
        }
        CliOutput::default()
    }

    /// Validates a `next`/`end` that closes `closes` frames of a nested block (its errors count,
    /// unlike the synthetic close of a plain validation).
    fn validate_closing(&self, c: &Command, closes: usize) -> Result<(), String> {
        let mut after = self.clone_shallow();
        for _ in 0..closes {
            after.stack.pop();
        }
        let mut cmds = self.buffer.clone();
        cmds.push(c.clone());
        let n = cmds.len();
        let mut cmds = renumber(&cmds);
        cmds.extend(after.closing(false));
        match self.with_engine(|_, engine| engine.run(&cmds)) {
            Ok(_) => Ok(()),
            Err(e) if e.line > n => Ok(()),
            Err(e) => Err(error_text(&e, false)),
        }
    }

    fn cmd_abort(&mut self) -> CliOutput {
        match self.stack.last() {
            Some(Ctx::Entry { .. }) => {
                self.buffer.push(cmd(&["abort"]));
                self.stack.pop();
                if self.stack.len() == 1 {
                    self.buffer.truncate(1);
                }
                CliOutput::default()
            }
            Some(Ctx::Table { schema, .. }) if schema.is_single() => {
                // Discard the single object's changes and leave it.
                if self.stack.len() == 1 {
                    self.stack.clear();
                    self.buffer.clear();
                    return CliOutput::default();
                }
                // A nested single table: drop back to the state before its `config` line.
                while let Some(c) = self.buffer.pop() {
                    if c.word(0) == Some("config") {
                        break;
                    }
                }
                self.stack.pop();
                CliOutput::default()
            }
            _ => CliOutput::fail(parse_error("abort")),
        }
    }

    /// Abandons any open block (connection closed).
    pub fn reset(&mut self) {
        self.stack.clear();
        self.buffer.clear();
    }

    // --------------------------------------------------------------------- show / get

    fn show(&self, get: bool, args: &[Token]) -> CliOutput {
        let mut args: Vec<Token> = args.to_vec();
        let mut full = get;
        if !get {
            if let Some(a) = args.first() {
                if resolve(&a.text, ["full-configuration"]).is_some() && a.text.len() >= 2 {
                    full = true;
                    args.remove(0);
                }
            }
        }
        if !self.stack.is_empty() {
            return self.show_context(get, full, &args);
        }
        if args.is_empty() {
            if get {
                return CliOutput::fail(
                    "command parse error before 'get'\nCommand fail. Return code -61\n",
                );
            }
            return CliOutput::ok(self.store.show(full, &self.origin.user));
        }
        let (path, used) = match self.resolve_path(&args) {
            Ok(x) => x,
            Err(w) => return CliOutput::fail(parse_error(&w)),
        };
        let schema = Schema::get().table(&path, self.version).expect("resolved");
        let key = args.get(used).map(|t| t.text.clone());
        let table = self
            .store
            .with(|c| c.table(&path).cloned())
            .unwrap_or_default();
        render(
            schema,
            &path,
            &table,
            key.as_deref(),
            get,
            full,
            self.version,
        )
    }

    fn show_context(&self, get: bool, full: bool, args: &[Token]) -> CliOutput {
        // An entry being edited: show it as it stands (uncommitted, possibly incomplete).
        if let Some(Ctx::Entry { schema, key }) = self.stack.last() {
            if args.is_empty() {
                if let Some(e) = self.open_entry() {
                    if get {
                        return CliOutput::ok(get_fields(schema, &e, self.version));
                    }
                    let name = self.stack[..self.stack.len() - 1]
                        .iter()
                        .rev()
                        .find_map(|c| match c {
                            Ctx::Table { name, .. } => Some(name.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    let mut e = e;
                    e.key = key.clone();
                    let mut t = Table::new();
                    t.upsert(e);
                    let mut out = String::new();
                    show_any(&mut out, schema, &name, &t, self.version, full);
                    return CliOutput::ok(out);
                }
            }
        }
        // The staged state: the block so far, committed in a dry run.
        let staged = self.dry_run(&[], true);
        let top = match &self.stack[0] {
            Ctx::Table { name, .. } => name.clone(),
            Ctx::Entry { .. } => unreachable!("the stack starts with a table"),
        };
        let top_schema = self.stack[0].schema();
        let table = match staged {
            Ok(mut out) => out.staged.remove(&top),
            Err(_) => None,
        }
        .or_else(|| self.store.with(|c| c.table(&top).cloned()))
        .unwrap_or_default();
        // Walk down the stack to the current object.
        let mut schema = top_schema;
        let mut cur_table = table;
        let mut key: Option<String> = args.first().map(|t| t.text.clone());
        let mut path_name = top.clone();
        let mut i = 1;
        while i < self.stack.len() {
            match &self.stack[i] {
                Ctx::Entry { key: k, .. } => {
                    let k = if k == "0" {
                        cur_table
                            .entries()
                            .last()
                            .map(|e| e.key.clone())
                            .unwrap_or_default()
                    } else {
                        k.clone()
                    };
                    // A deeper table follows: descend.
                    if let Some(Ctx::Table { schema: sub, name }) = self.stack.get(i + 1) {
                        let e = cur_table.get(&k).cloned().unwrap_or_else(|| Entry::new(&k));
                        cur_table = e.table(name).cloned().unwrap_or_default();
                        schema = sub;
                        path_name = name.clone();
                        i += 2;
                        continue;
                    }
                    key = Some(k);
                }
                Ctx::Table { schema: sub, name } => {
                    // A nested table of a single table.
                    let e = cur_table.get("").cloned().unwrap_or_default();
                    cur_table = e.table(name).cloned().unwrap_or_default();
                    schema = sub;
                    path_name = name.clone();
                }
            }
            i += 1;
        }
        render(
            schema,
            &path_name,
            &cur_table,
            key.as_deref(),
            get,
            full,
            self.version,
        )
    }

    /// The entry being edited, as the engine holds it (the block replayed, not closed).
    fn open_entry(&self) -> Option<Entry> {
        let cmds = renumber(&self.buffer);
        self.with_engine(|_, engine| engine.run_partial(&cmds))
            .ok()
            .and_then(|(_, mut open)| open.pop())
    }

    // --------------------------------------------------------------------- help / completion

    /// Candidates `(word, description)` for the word after `words` in the current context
    /// (`None`: the command cannot take more words here).
    pub fn candidates(&self, words: &[String]) -> Vec<(String, String)> {
        if words.is_empty() {
            return self
                .verbs()
                .iter()
                .map(|(v, d)| (v.to_string(), d.to_string()))
                .collect();
        }
        let Some(verb) = self.resolve_verb(&words[0]) else {
            return Vec::new();
        };
        let rest = &words[1..];
        match verb {
            "config" if !self.stack.is_empty() && rest.is_empty() => {
                let schema = self.stack.last().expect("non-empty").schema();
                schema
                    .fields_at(self.version)
                    .filter(|f| matches!(f.ty, FieldType::Table(_)))
                    .map(|f| (f.name.to_string(), help::field_desc(schema, f)))
                    .collect()
            }
            "config" => self.path_candidates(rest),
            "show" | "get" => {
                if !self.stack.is_empty() {
                    return if rest.is_empty() && verb == "show" {
                        vec![(
                            "full-configuration".into(),
                            "Show full configuration.".into(),
                        )]
                    } else {
                        Vec::new()
                    };
                }
                let mut rest = rest;
                let mut out = Vec::new();
                if verb == "show" {
                    if rest.first().is_some_and(|w| {
                        resolve(w, ["full-configuration"]).is_some() && w.len() >= 2
                    }) {
                        rest = &rest[1..];
                    } else if rest.is_empty() {
                        out.push((
                            "full-configuration".into(),
                            "Show full configuration.".into(),
                        ));
                    }
                }
                if verb == "get" && rest.len() == 1 && resolve(&rest[0], ["system"]).is_some() {
                    out.push(("status".into(), "System status.".into()));
                }
                let toks: Vec<Token> = rest.iter().map(|w| tok(w)).collect();
                if let Ok((path, used)) = self.resolve_path(&toks) {
                    if used == toks.len() {
                        let more = self.path_candidates(rest);
                        if more.is_empty() {
                            return self.key_candidates_of(&path);
                        }
                    }
                }
                out.extend(self.path_candidates(rest));
                out.sort();
                out.dedup_by(|a, b| a.0 == b.0);
                out
            }
            "edit" | "delete" | "move" | "rename" | "clone" => {
                let Some(Ctx::Table { schema, .. }) = self.stack.last() else {
                    return Vec::new();
                };
                let keys = self.current_keys();
                match (verb, rest.len()) {
                    ("edit", 0) => {
                        let mut out = vec![help::key_placeholder(schema)];
                        out.extend(keys.into_iter().map(|k| (k, String::new())));
                        out
                    }
                    ("move", 1) => vec![
                        ("before".into(), "Move before the entry.".into()),
                        ("after".into(), "Move after the entry.".into()),
                    ],
                    ("rename" | "clone", 1) => vec![("to".into(), String::new())],
                    ("rename" | "clone", 2) => vec![help::key_placeholder(schema)],
                    ("delete", 0) | ("move", 0 | 2) | ("rename" | "clone", 0) => {
                        keys.into_iter().map(|k| (k, String::new())).collect()
                    }
                    _ => Vec::new(),
                }
            }
            "set" | "select" | "append" | "unselect" | "unset" | "clear" => {
                let schema = match self.stack.last() {
                    Some(Ctx::Entry { schema, .. }) => *schema,
                    Some(Ctx::Table { schema, .. }) if schema.is_single() => *schema,
                    _ => return Vec::new(),
                };
                if rest.is_empty() {
                    return schema
                        .fields_at(self.version)
                        .filter(|f| !matches!(f.ty, FieldType::Table(_)))
                        .filter(|f| schema.mkey() != Some(f.name) || verb == "set")
                        .map(|f| (f.name.to_string(), help::field_desc(schema, f)))
                        .collect();
                }
                if matches!(verb, "unset" | "clear") {
                    return Vec::new();
                }
                let names: Vec<&'static str> =
                    schema.fields_at(self.version).map(|f| f.name).collect();
                let Some(fname) = resolve(&rest[0], names) else {
                    return Vec::new();
                };
                let f = schema.field(fname, self.version).expect("field");
                if rest.len() > 1 && !f.is_list() && !matches!(f.ty, FieldType::Words(_)) {
                    return Vec::new();
                }
                self.value_candidates(f)
            }
            _ => Vec::new(),
        }
    }

    fn path_candidates(&self, rest: &[String]) -> Vec<(String, String)> {
        let mut prefix: Vec<&'static str> = Vec::new();
        for w in rest {
            let opts = self.path_words_after(&prefix);
            match resolve(w, opts.iter().copied()) {
                Some(x) => prefix.push(x),
                None => return Vec::new(),
            }
        }
        self.path_words_after(&prefix)
            .into_iter()
            .map(|w| {
                let mut p = prefix.clone();
                p.push(w);
                (w.to_string(), help::path_desc(&p.join(" ")))
            })
            .collect()
    }

    fn key_candidates_of(&self, path: &str) -> Vec<(String, String)> {
        self.store.with(|config| {
            config
                .table(path)
                .map(|table| {
                    table
                        .entries()
                        .iter()
                        .filter(|e| !e.key.is_empty())
                        .map(|e| (e.key.clone(), String::new()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Keys of the table of the current context (staged).
    fn current_keys(&self) -> Vec<String> {
        let Some(Ctx::Table { name, .. }) = self.stack.last() else {
            return Vec::new();
        };
        if self.stack.len() == 1 {
            return self
                .key_candidates_of(name)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        }
        // A nested table: ask a dry run for the staged parent.
        match self.show_context_table() {
            Some(t) => t.entries().iter().map(|e| e.key.clone()).collect(),
            None => Vec::new(),
        }
    }

    fn show_context_table(&self) -> Option<Table> {
        let out = self.dry_run(&[], true).ok()?;
        let top = match &self.stack[0] {
            Ctx::Table { name, .. } => name.clone(),
            _ => return None,
        };
        let mut t = out
            .staged
            .get(&top)
            .cloned()
            .or_else(|| self.store.with(|c| c.table(&top).cloned()))?;
        let mut i = 1;
        while i < self.stack.len() {
            match &self.stack[i] {
                Ctx::Entry { key, .. } => {
                    let e = t.get(key).cloned().unwrap_or_default();
                    if let Some(Ctx::Table { name, .. }) = self.stack.get(i + 1) {
                        t = e.table(name).cloned().unwrap_or_default();
                        i += 2;
                        continue;
                    }
                    return Some(t);
                }
                Ctx::Table { name, .. } => {
                    let e = t.get("").cloned().unwrap_or_default();
                    t = e.table(name).cloned().unwrap_or_default();
                }
            }
            i += 1;
        }
        Some(t)
    }

    fn value_candidates(&self, f: &FieldSchema) -> Vec<(String, String)> {
        match &f.ty {
            FieldType::Enum(opts) | FieldType::Words(opts) if !opts.is_empty() => opts
                .iter()
                .map(|o| (o.to_string(), help::option_desc(f.name, o)))
                .collect(),
            FieldType::Ref { ds, builtins } | FieldType::Multi { ds, builtins, .. } => {
                let mut out = vec![help::value_placeholder(f)];
                for b in builtins.iter() {
                    out.push((b.to_string(), String::new()));
                }
                for d in ds.iter() {
                    let (t, sub) = Schema::split_ds(d);
                    let keys: Vec<String> = self.store.with(|c| match sub {
                        None => c
                            .table(t)
                            .map(|tb| tb.entries().iter().map(|e| e.key.clone()).collect())
                            .unwrap_or_default(),
                        Some(sub) => c
                            .table(t)
                            .and_then(|tb| tb.get(""))
                            .and_then(|e| e.table(sub))
                            .map(|tb| tb.entries().iter().map(|e| e.key.clone()).collect())
                            .unwrap_or_default(),
                    });
                    for k in keys {
                        if !out.iter().any(|(w, _)| *w == k) {
                            out.push((k, String::new()));
                        }
                    }
                }
                out
            }
            _ => vec![help::value_placeholder(f)],
        }
    }
}

fn tok(w: &str) -> Token {
    Token {
        text: w.to_string(),
        line: 0,
        col: 0,
        quoted: false,
    }
}

/// Renders a table (or one entry of it) as `show` or `get` output.
fn render(
    schema: &TableSchema,
    path: &str,
    table: &Table,
    key: Option<&str>,
    get: bool,
    full: bool,
    version: FosVersion,
) -> CliOutput {
    if let Some(k) = key {
        let Some(e) = table.get(k) else {
            return CliOutput::fail(
                "entry not found in datasource\nCommand fail. Return code -3\n",
            );
        };
        if get {
            return CliOutput::ok(get_fields(schema, e, version));
        }
        let mut one = Table::new();
        one.upsert(e.clone());
        let mut out = String::new();
        show_any(&mut out, schema, path, &one, version, full);
        return CliOutput::ok(out);
    }
    if get {
        if schema.is_single() {
            let empty = Entry::new("");
            return CliOutput::ok(get_fields(schema, table.get("").unwrap_or(&empty), version));
        }
        let mkey = schema.mkey().unwrap_or("name");
        let mut out = String::new();
        for e in table.entries() {
            out.push_str(&format!("== [ {} ]\n{mkey}: {}    \n", e.key, e.key));
        }
        return CliOutput::ok(out);
    }
    let mut out = String::new();
    show_any(&mut out, schema, path, table, version, full);
    CliOutput::ok(out)
}

fn show_any(
    out: &mut String,
    schema: &TableSchema,
    path: &str,
    table: &Table,
    version: FosVersion,
    full: bool,
) {
    if schema.path == path {
        show::show_table(out, schema, table, version, full);
    } else {
        // A nested table: render under its field name.
        let mut tmp = schema.clone();
        tmp.path = path.to_string();
        show::show_table(out, &tmp, table, version, full);
    }
    if out.is_empty() {
        out.push_str(&format!("config {path}\nend\n"));
    }
}

/// `get` of one object: `name                : value` lines.
fn get_fields(schema: &TableSchema, e: &Entry, version: FosVersion) -> String {
    let mut out = String::new();
    for f in schema.fields_at(version) {
        let v = if schema.mkey() == Some(f.name) {
            Some(e.key.clone())
        } else {
            match (&f.ty, e.fields.get(f.name)) {
                (FieldType::Table(_), Some(Value::Table(t))) => Some(
                    t.entries()
                        .iter()
                        .map(|x| format!("\"{}\"", x.key))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                (FieldType::Table(_), _) => Some(String::new()),
                (_, Some(Value::List(l))) => Some(
                    l.iter()
                        .map(|m| format!("\"{m}\""))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                (FieldType::Password, Some(_)) => Some("*".into()),
                (_, Some(Value::Scalar(s))) => Some(s.clone()),
                (_, _) => Some(f.default.to_string()),
            }
        };
        out.push_str(&format!("{:<20}: {}\n", f.name, v.unwrap_or_default()));
    }
    out
}

/// Splits a console line into the command and an optional `| grep` filter.
pub fn split_pipe(line: &str) -> (String, Option<String>) {
    let mut in_q: Option<char> = None;
    let mut esc = false;
    for (i, c) in line.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' | '\'' => match in_q {
                Some(q) if q == c => in_q = None,
                None => in_q = Some(c),
                _ => {}
            },
            '|' if in_q.is_none() => {
                return (
                    line[..i].to_string(),
                    Some(line[i + 1..].trim().to_string()),
                );
            }
            _ => {}
        }
    }
    (line.to_string(), None)
}

/// Applies `grep [-i] [-v] [-c] [-f] <pattern>` (FortiOS CLI grep: `-f` prints the whole
/// `config`/`edit` block around a match). `Err` is the error text.
pub fn apply_grep(filter: &str, text: &str) -> Result<String, String> {
    let lexed = lexer::lex(filter).map_err(|_| parse_error(filter))?;
    let words: Vec<String> = lexed
        .commands
        .first()
        .map(|c| c.tokens.iter().map(|t| t.text.clone()).collect())
        .unwrap_or_default();
    if words.first().map(String::as_str) != Some("grep") {
        return Err(parse_error(
            words.first().map(String::as_str).unwrap_or("|"),
        ));
    }
    let (mut ci, mut inv, mut count, mut block) = (false, false, false, false);
    let mut pattern: Option<String> = None;
    for w in &words[1..] {
        match w.as_str() {
            "-i" => ci = true,
            "-v" => inv = true,
            "-c" => count = true,
            "-f" => block = true,
            _ if pattern.is_none() => pattern = Some(w.clone()),
            _ => return Err(parse_error(w)),
        }
    }
    let Some(pattern) = pattern else {
        return Err(parse_error("grep"));
    };
    let re = regex::RegexBuilder::new(&pattern)
        .case_insensitive(ci)
        .build()
        .or_else(|_| {
            regex::RegexBuilder::new(&regex::escape(&pattern))
                .case_insensitive(ci)
                .build()
        })
        .map_err(|_| parse_error(&pattern))?;
    let lines: Vec<&str> = text.lines().collect();
    let hit = |l: &str| re.is_match(l) != inv;
    if count {
        return Ok(format!("{}\n", lines.iter().filter(|l| hit(l)).count()));
    }
    if !block {
        let mut out = String::new();
        for l in lines.iter().filter(|l| hit(l)) {
            out.push_str(l);
            out.push('\n');
        }
        return Ok(out);
    }
    // -f: print every `edit` block (with its `config` line and `end`) that has a match, with
    // the matching lines marked `<---`.
    let mut out = String::new();
    let mut i = 0;
    let mut config_line: Option<&str> = None;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if t.starts_with("config ") && l.len() - t.len() == 0 {
            config_line = Some(l);
        }
        if t.starts_with("edit ") && l.len() - t.len() == 4 {
            let start = i;
            let mut end = i;
            while end < lines.len()
                && !(lines[end].trim_start() == "next" && lines[end].len() - 4 == 4)
            {
                end += 1;
            }
            let block_lines = &lines[start..end.min(lines.len() - 1) + 1];
            if block_lines.iter().any(|x| hit(x)) {
                if let Some(c) = config_line.take() {
                    out.push_str(c);
                    out.push('\n');
                }
                for x in block_lines {
                    out.push_str(x);
                    if hit(x) {
                        out.push_str(" <---");
                    }
                    out.push('\n');
                }
            }
            i = end + 1;
            continue;
        }
        if t == "end" && l.len() == 3 && config_line.is_none() {
            out.push_str("end\n");
        }
        if t == "end" && l.len() == 3 {
            config_line = None;
        }
        i += 1;
    }
    Ok(out)
}
