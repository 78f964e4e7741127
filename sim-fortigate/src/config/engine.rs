//! Executes CLI commands against a configuration: the one place where changes are validated,
//! whether they come from a configuration file, the REST API or (later) the SSH console.
//!
//! Top-level tables are copy-on-write: the engine reads the base configuration and clones a
//! table only when it changes it, so a failed operation leaves the running configuration
//! untouched and a change to one address does not copy 10,000 policies.

use std::collections::HashMap;
use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::diff::{self, AttrChange};
use super::lexer::{Command, Token};
use super::schema::{FieldSchema, FieldType, Schema, TableSchema};
use super::tree::{Config, Entry, Table, Value};
use super::version::FosVersion;

/// A configuration error: where, the FortiOS return code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// FortiOS return code (-3 entry not found, -5 duplicate, -23 in use, -61 command error,
    /// -651 invalid value, ...).
    pub code: i32,
    pub message: String,
    /// The word the error is about (`value parse error before '<token>'`).
    pub token: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if let Some(t) = &self.token {
            write!(f, " (before '{t}')")?;
        }
        write!(f, " [return code {}]", self.code)
    }
}

impl ConfigError {
    /// The error as the FortiOS CLI prints it.
    pub fn cli_text(&self) -> String {
        match (&self.token, self.code) {
            (Some(t), -3) => format!(
                "{}\n\nvalue parse error before '{t}'\nCommand fail. Return code -3\n",
                self.message
            ),
            (Some(t), -61) => {
                format!("command parse error before '{t}'\nCommand fail. Return code -61\n")
            }
            (Some(t), c) => {
                format!(
                    "{}\nvalue parse error before '{t}'\nCommand fail. Return code {c}\n",
                    self.message
                )
            }
            (None, c) => format!("{}\nCommand fail. Return code {c}\n", self.message),
        }
    }
}

/// A warning (a block closed without `end`, something not modelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Add,
    Edit,
    Delete,
    Move,
    Rename,
}

impl ChangeAction {
    /// The FortiOS event log wording (`action="Add"`).
    pub fn log_word(&self) -> &'static str {
        match self {
            ChangeAction::Add => "Add",
            ChangeAction::Edit => "Edit",
            ChangeAction::Delete => "Delete",
            ChangeAction::Move => "Move",
            ChangeAction::Rename => "Rename",
        }
    }
}

/// One change to a top-level entry. Only real changes are reported: a write that leaves
/// an entry the same (see [`super::diff`]) produces none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Table path (`firewall policy`).
    pub path: String,
    /// Entry key (after `edit 0` resolution; `""` for single tables).
    pub key: String,
    pub action: ChangeAction,
    /// The attributes that changed (`subnet`, `srcaddr`, `ftgd-wf.filters.1.action`, ...);
    /// for an added entry the attributes it sets.
    pub attrs: Vec<String>,
    /// The FortiOS `cfgattr` text (`dstintf[port1->port2]`, `name[x]srcintf[port5]`).
    pub cfgattr: String,
    /// The entry's UUID, if its table has one (the `uuid` field of the change log).
    pub uuid: Option<String>,
}

impl Change {
    fn new(path: String, key: String, action: ChangeAction) -> Self {
        Self {
            path,
            key,
            action,
            attrs: Vec::new(),
            cfgattr: String::new(),
            uuid: None,
        }
    }

    fn with_attrs(mut self, changes: &[AttrChange]) -> Self {
        self.attrs = changes.iter().map(|c| c.path.clone()).collect();
        self.cfgattr = diff::cfgattr(changes);
        self
    }

    fn with_uuid(mut self, e: Option<&Entry>) -> Self {
        self.uuid = e.and_then(|e| e.scalar("uuid")).map(String::from);
        self
    }
}

/// Options of one execution.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// File name for messages (`seed.conf`, `<rest>`).
    pub file: String,
    /// Turn warnings into errors.
    pub strict: bool,
}

/// The outcome of a successful execution.
#[derive(Debug, Default)]
pub struct Outcome {
    pub staged: HashMap<String, Table>,
    pub warnings: Vec<Warning>,
    pub changes: Vec<Change>,
}

enum Store {
    /// A top-level table (in `staged` or the base).
    Top(String),
    /// A staged copy of a sub-table, written back to the parent entry on `end`.
    Nested { field: &'static str, table: Table },
}

enum Frame {
    Table {
        schema: &'static TableSchema,
        line: usize,
        store: Store,
    },
    Entry {
        schema: &'static TableSchema,
        entry: Entry,
        auto_id: bool,
        line: usize,
    },
    Skip {
        depth: usize,
    },
}

/// The command executor.
pub struct Engine<'a> {
    base: &'a Config,
    version: FosVersion,
    schema: &'static Schema,
    opts: ExecOptions,
    rng: &'a mut dyn RngCore,
    stack: Vec<Frame>,
    out: Outcome,
}

type Res<T = ()> = Result<T, ConfigError>;

/// Hashes a secret the way the twin stores it (`ENC SH2<hex sha256>`).
pub fn hash_secret(plain: &str) -> String {
    let d = Sha256::digest(plain.as_bytes());
    format!("ENC SH2{}", hex::encode(d))
}

/// Whether `plain` matches a stored secret (hashed, or plain text if not `ENC`).
pub fn secret_matches(stored: &str, plain: &str) -> bool {
    if stored.starts_with("ENC ") {
        stored == hash_secret(plain)
    } else {
        stored == plain
    }
}

impl<'a> Engine<'a> {
    pub fn new(
        base: &'a Config,
        version: FosVersion,
        opts: ExecOptions,
        rng: &'a mut dyn RngCore,
    ) -> Self {
        Self {
            base,
            version,
            schema: Schema::get(),
            opts,
            rng,
            stack: Vec::new(),
            out: Outcome::default(),
        }
    }

    /// Runs commands, then closes open blocks (with a warning) and returns the staged tables.
    pub fn run(mut self, cmds: &[Command]) -> Res<Outcome> {
        for c in cmds {
            self.exec(c)?;
        }
        if !self.stack.is_empty() {
            let line = cmds.last().map(|c| c.line).unwrap_or(0);
            self.close_all(line, "end of input")?;
        }
        Ok(self.out)
    }

    /// Runs commands without closing open blocks; returns the outcome so far and the entries
    /// being edited (outermost first). The console shows an entry being edited with this.
    pub fn run_partial(mut self, cmds: &[Command]) -> Res<(Outcome, Vec<Entry>)> {
        for c in cmds {
            self.exec(c)?;
        }
        let open = self
            .stack
            .iter()
            .filter_map(|f| match f {
                Frame::Entry { entry, .. } => Some(entry.clone()),
                _ => None,
            })
            .collect();
        Ok((self.out, open))
    }

    // ------------------------------------------------------------------ helpers

    fn err(
        &self,
        at: Option<&Token>,
        line: usize,
        code: i32,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.opts.file.clone(),
            line: at.map(|t| t.line).unwrap_or(line),
            col: at.map(|t| t.col).unwrap_or(1),
            code,
            message: msg.into(),
            token: None,
        }
    }

    fn err_tok(&self, tok: &Token, code: i32, msg: impl Into<String>) -> ConfigError {
        let mut e = self.err(Some(tok), tok.line, code, msg);
        e.token = Some(tok.text.clone());
        e
    }

    fn parse_error(&self, tok: &Token) -> ConfigError {
        self.err_tok(tok, -61, "command parse error")
    }

    fn warn(&mut self, line: usize, col: usize, msg: String) -> Res {
        if self.opts.strict {
            return Err(ConfigError {
                file: self.opts.file.clone(),
                line,
                col,
                code: -61,
                message: format!("{msg} (strict mode)"),
                token: None,
            });
        }
        self.out.warnings.push(Warning {
            file: self.opts.file.clone(),
            line,
            col,
            message: msg,
        });
        Ok(())
    }

    fn top_table(&self, path: &str) -> Option<&Table> {
        self.out.staged.get(path).or_else(|| self.base.table(path))
    }

    fn top_table_mut(&mut self, path: &str) -> &mut Table {
        if !self.out.staged.contains_key(path) {
            let t = self.base.table(path).cloned().unwrap_or_default();
            self.out.staged.insert(path.to_string(), t);
        }
        self.out.staged.get_mut(path).expect("staged")
    }

    /// Whether `name` exists in one of the datasource tables.
    fn ref_exists(&self, ds: &[&str], builtins: &[&str], name: &str) -> bool {
        if builtins.contains(&name) {
            return true;
        }
        ds.iter().any(|d| {
            let (t, sub) = Schema::split_ds(d);
            match sub {
                None => self.top_table(t).is_some_and(|tb| tb.contains(name)),
                Some(sub) => {
                    // A sub-table of a single table: look at the staged entry first.
                    for f in self.stack.iter().rev() {
                        if let Frame::Entry { schema, entry, .. } = f {
                            if schema.path == t {
                                return entry.table(sub).is_some_and(|tb| tb.contains(name));
                            }
                        }
                    }
                    self.top_table(t)
                        .and_then(|tb| tb.get(""))
                        .and_then(|e| e.table(sub))
                        .is_some_and(|tb| tb.contains(name))
                }
            }
        })
    }

    // ------------------------------------------------------------------ dispatch

    fn exec(&mut self, c: &Command) -> Res {
        let Some(first) = c.tokens.first() else {
            return Ok(());
        };
        let verb = first.text.as_str();
        if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
            match verb {
                "config" => *depth += 1,
                "end" => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        match verb {
            "config" => self.cmd_config(c),
            "edit" => self.cmd_edit(c),
            "set" | "select" => self.cmd_set(c, SetMode::Set),
            "append" => self.cmd_set(c, SetMode::Append),
            "unselect" => self.cmd_set(c, SetMode::Unselect),
            "unset" | "clear" => self.cmd_unset(c),
            "next" => self.cmd_next(c),
            "end" => self.cmd_end(c),
            "abort" => self.cmd_abort(c),
            "delete" => self.cmd_delete(c),
            "purge" => self.cmd_purge(c),
            "move" => self.cmd_move(c),
            "rename" => self.cmd_rename(c),
            "clone" => self.cmd_clone(c),
            "show" | "get" => Ok(()),
            _ => Err(self.parse_error(first)),
        }
    }

    fn cmd_config(&mut self, c: &Command) -> Res {
        let args = &c.tokens[1..];
        let Some(a0) = args.first() else {
            return Err(self.err(
                c.tokens.first(),
                c.line,
                -61,
                "command parse error: config needs a path",
            ));
        };
        let path: String = args
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        match self.stack.last() {
            None => self.open_top(&path, c),
            Some(Frame::Entry { schema, .. }) => {
                let schema: &'static TableSchema = schema;
                if args.len() == 1 {
                    if let Some(f) = schema.field(&a0.text, self.version) {
                        if let FieldType::Table(sub) = &f.ty {
                            return self.open_nested(f.name, sub, c.line);
                        }
                        return Err(self.parse_error(a0));
                    }
                    if schema.field_other_version(&a0.text) {
                        return Err(self.parse_error(a0));
                    }
                }
                if self.schema.knows(&path) {
                    self.implicit_close(c)?;
                    return self.open_top(&path, c);
                }
                self.warn(
                    a0.line,
                    a0.col,
                    format!(
                        "not modelled: config {path} (inside {}); block skipped",
                        schema.path
                    ),
                )?;
                self.stack.push(Frame::Skip { depth: 1 });
                Ok(())
            }
            Some(Frame::Table { .. }) => {
                if self.schema.knows(&path) {
                    self.implicit_close(c)?;
                    return self.open_top(&path, c);
                }
                Err(self.parse_error(&c.tokens[0]))
            }
            Some(Frame::Skip { .. }) => unreachable!("skip handled in exec"),
        }
    }

    fn open_top(&mut self, path: &str, c: &Command) -> Res {
        let schema = self.schema;
        match schema.table(path, self.version) {
            Some(t) => {
                self.stack.push(Frame::Table {
                    schema: t,
                    line: c.line,
                    store: Store::Top(t.path.clone()),
                });
                if t.is_single() {
                    let entry = self.top_table(&t.path).and_then(|tb| tb.get("")).cloned();
                    self.stack.push(Frame::Entry {
                        schema: t,
                        entry: entry.unwrap_or_else(|| Entry::new("")),
                        auto_id: false,
                        line: c.line,
                    });
                }
                Ok(())
            }
            None if schema.knows(path) => {
                // The table exists at other versions only.
                Err(self.parse_error(&c.tokens[c.tokens.len() - 1]))
            }
            None => {
                let t = &c.tokens[1];
                self.warn(
                    t.line,
                    t.col,
                    format!("not modelled: config {path}; block skipped"),
                )?;
                self.stack.push(Frame::Skip { depth: 1 });
                Ok(())
            }
        }
    }

    fn open_nested(&mut self, field: &'static str, sub: &'static TableSchema, line: usize) -> Res {
        let table = match self.stack.last() {
            Some(Frame::Entry { entry, .. }) => entry.table(field).cloned().unwrap_or_default(),
            _ => Table::new(),
        };
        let single = sub.is_single();
        let existing = if single { table.get("").cloned() } else { None };
        self.stack.push(Frame::Table {
            schema: sub,
            line,
            store: Store::Nested { field, table },
        });
        if single {
            self.stack.push(Frame::Entry {
                schema: sub,
                entry: existing.unwrap_or_else(|| Entry::new("")),
                auto_id: false,
                line,
            });
        }
        Ok(())
    }

    /// A top-level `config` while blocks are open: the previous block was not closed with
    /// `end` (the seed article's first snippet). Close everything, with a warning.
    fn implicit_close(&mut self, c: &Command) -> Res {
        let at = format!(
            "'config {}' at line {}",
            c.tokens[1..]
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            c.line
        );
        self.close_all(c.line, &at)
    }

    fn close_all(&mut self, line: usize, at: &str) -> Res {
        let opened = self
            .stack
            .iter()
            .find_map(|f| match f {
                Frame::Table { schema, line, .. } => Some((schema.path.clone(), *line)),
                _ => None,
            })
            .unwrap_or_default();
        self.warn(
            line,
            1,
            format!(
                "config block 'config {}' opened at line {} was not closed with 'end'; closed at {at}",
                opened.0, opened.1
            ),
        )?;
        while let Some(top) = self.stack.last() {
            match top {
                Frame::Entry { .. } => {
                    self.commit_entry(line)?;
                }
                Frame::Table { .. } => {
                    self.end_table();
                }
                Frame::Skip { .. } => {
                    self.stack.pop();
                }
            }
        }
        Ok(())
    }

    fn cmd_edit(&mut self, c: &Command) -> Res {
        let Some(Frame::Table { schema, store, .. }) = self.stack.last() else {
            return Err(self.parse_error(&c.tokens[0]));
        };
        let schema: &'static TableSchema = schema;
        if schema.is_single() {
            return Err(self.parse_error(&c.tokens[0]));
        }
        let Some(k) = c.tokens.get(1) else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: edit needs a key",
            ));
        };
        if let Some(extra) = c.tokens.get(2) {
            return Err(self.parse_error(extra));
        }
        let mut key = k.text.clone();
        let mut auto_id = false;
        if schema.int_key() {
            match key.parse::<u64>() {
                Ok(0) => auto_id = true,
                Ok(n) => key = n.to_string(),
                Err(_) => return Err(self.err_tok(k, -651, "value parse error")),
            }
        } else {
            if key.is_empty() {
                return Err(self.err_tok(k, -651, "empty entry name"));
            }
            if let Some(FieldType::Str(max)) = schema
                .mkey()
                .and_then(|m| schema.field(m, self.version))
                .map(|f| &f.ty)
            {
                if key.chars().count() > *max {
                    return Err(self.err_tok(k, -1, "Invalid length of value"));
                }
            }
        }
        let existing = if auto_id {
            None
        } else {
            match store {
                Store::Top(p) => self.top_table(p).and_then(|t| t.get(&key)).cloned(),
                Store::Nested { table, .. } => table.get(&key).cloned(),
            }
        };
        self.stack.push(Frame::Entry {
            schema,
            entry: existing.unwrap_or_else(|| Entry::new(key)),
            auto_id,
            line: c.line,
        });
        Ok(())
    }

    fn field_for(
        &mut self,
        schema: &'static TableSchema,
        tok: &Token,
    ) -> Res<Option<&'static FieldSchema>> {
        match schema.field(&tok.text, self.version) {
            Some(f) => Ok(Some(f)),
            None if schema.field_other_version(&tok.text) => Err(self.parse_error(tok)),
            None => {
                self.warn(
                    tok.line,
                    tok.col,
                    format!("not modelled: {} field '{}' ignored", schema.path, tok.text),
                )?;
                Ok(None)
            }
        }
    }

    fn cmd_set(&mut self, c: &Command, mode: SetMode) -> Res {
        let Some(Frame::Entry { schema, .. }) = self.stack.last() else {
            return Err(self.parse_error(&c.tokens[0]));
        };
        let schema: &'static TableSchema = schema;
        let Some(ftok) = c.tokens.get(1) else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: set needs a field",
            ));
        };
        let Some(field) = self.field_for(schema, ftok)? else {
            return Ok(());
        };
        if schema.mkey() == Some(field.name) {
            // The key is set by `edit`; `set name <same>` is accepted.
            return Ok(());
        }
        let vals = &c.tokens[2..];
        let new = self.parse_value(field, vals, ftok, mode)?;
        let Some(Frame::Entry { entry, .. }) = self.stack.last_mut() else {
            unreachable!()
        };
        match new {
            Some(v) if !is_default(field, &v) => {
                entry.fields.insert(field.name.to_string(), v);
            }
            _ => {
                entry.fields.remove(field.name);
            }
        }
        Ok(())
    }

    fn cmd_unset(&mut self, c: &Command) -> Res {
        let Some(Frame::Entry { schema, .. }) = self.stack.last() else {
            return Err(self.parse_error(&c.tokens[0]));
        };
        let schema: &'static TableSchema = schema;
        let Some(ftok) = c.tokens.get(1) else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: unset needs a field",
            ));
        };
        let Some(field) = self.field_for(schema, ftok)? else {
            return Ok(());
        };
        let Some(Frame::Entry { entry, .. }) = self.stack.last_mut() else {
            unreachable!()
        };
        entry.fields.remove(field.name);
        Ok(())
    }

    fn cmd_next(&mut self, c: &Command) -> Res {
        match self.stack.last() {
            Some(Frame::Entry { schema, .. }) if !schema.is_single() => self.commit_entry(c.line),
            Some(Frame::Entry { .. }) => Ok(()),
            _ => Err(self.parse_error(&c.tokens[0])),
        }
    }

    fn cmd_abort(&mut self, c: &Command) -> Res {
        match self.stack.last() {
            Some(Frame::Entry { schema, .. }) if !schema.is_single() => {
                self.stack.pop();
                Ok(())
            }
            _ => Err(self.parse_error(&c.tokens[0])),
        }
    }

    fn cmd_end(&mut self, c: &Command) -> Res {
        match self.stack.last() {
            None => Err(self.parse_error(&c.tokens[0])),
            Some(Frame::Entry { .. }) => {
                self.commit_entry(c.line)?;
                self.end_table();
                Ok(())
            }
            Some(Frame::Table { .. }) => {
                self.end_table();
                Ok(())
            }
            Some(Frame::Skip { .. }) => unreachable!(),
        }
    }

    /// Validates and stores the entry on top of the stack. An entry that holds the same
    /// configuration as before is left as it was and reports no change.
    fn commit_entry(&mut self, line: usize) -> Res {
        let Some(Frame::Entry {
            schema,
            mut entry,
            auto_id,
            line: eline,
        }) = self.stack.pop()
        else {
            return Ok(());
        };
        for f in schema.fields_at(self.version) {
            if f.required && f.default.is_empty() && !entry.fields.contains_key(f.name) {
                return Err(ConfigError {
                    file: self.opts.file.clone(),
                    line,
                    col: 1,
                    code: -56,
                    message: format!("Attribute '{}' MUST be set.", f.name),
                    token: None,
                });
            }
        }
        let Some(Frame::Table { store, .. }) = self.stack.last() else {
            unreachable!("an entry frame sits on a table frame")
        };
        let top_path = match store {
            Store::Top(p) => Some(p.clone()),
            Store::Nested { .. } => None,
        };
        if schema.field("uuid", self.version).is_some() && !entry.fields.contains_key("uuid") {
            let mut b = [0u8; 16];
            self.rng.fill_bytes(&mut b);
            entry
                .fields
                .insert("uuid".into(), Value::Scalar(uuid_from(b)));
        }
        // The entry as stored before this edit (none for `edit 0` and new keys); a single
        // table without an entry holds its defaults, so editing it is an edit.
        let empty = Entry::new("");
        let prior: Option<&Entry> = if auto_id {
            None
        } else {
            match self.stack.last() {
                Some(Frame::Table {
                    store: Store::Top(p),
                    ..
                }) => self.top_table(p).and_then(|t| t.get(&entry.key)),
                Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) => table.get(&entry.key),
                _ => None,
            }
        };
        let prior = prior.or(schema.is_single().then_some(&empty));
        let (entry, action, attrs) = match prior {
            Some(old) => match diff::merge_edit(schema, old, entry, self.version) {
                None => return Ok(()),
                Some((merged, changes)) => (merged, ChangeAction::Edit, changes),
            },
            None => {
                let mut changes = Vec::new();
                diff::describe_added(schema, &entry, self.version, "", &mut changes);
                (entry, ChangeAction::Add, changes)
            }
        };
        let mut entry = entry;
        if auto_id {
            let max = match self.stack.last() {
                Some(Frame::Table {
                    store: Store::Top(p),
                    ..
                }) => {
                    let p = p.clone();
                    self.top_table(&p).map(|t| t.max_int_key()).unwrap_or(0)
                }
                Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) => table.max_int_key(),
                _ => 0,
            };
            entry.key = (max + 1).to_string();
        }
        let key = entry.key.clone();
        let _ = eline;
        match top_path {
            Some(p) => {
                let change = Change::new(p.clone(), key, action)
                    .with_attrs(&attrs)
                    .with_uuid(Some(&entry));
                if schema.is_single() && entry.fields.is_empty() {
                    // A single table with every field at its default holds no entry.
                    self.top_table_mut(&p).remove("");
                } else {
                    self.top_table_mut(&p).upsert(entry);
                }
                self.out.changes.push(change);
            }
            None => {
                let Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) = self.stack.last_mut()
                else {
                    unreachable!()
                };
                // A nested change is an edit of the enclosing entry, found when that one
                // is compared with its stored form.
                table.upsert(entry);
            }
        }
        Ok(())
    }

    /// Pops a table frame; a nested table is written back into its parent entry.
    fn end_table(&mut self) {
        let Some(Frame::Table { store, .. }) = self.stack.pop() else {
            return;
        };
        if let Store::Nested { field, table } = store {
            if let Some(Frame::Entry { entry, .. }) = self.stack.last_mut() {
                let all_default = table
                    .entries()
                    .iter()
                    .all(|e| e.key.is_empty() && e.fields.is_empty());
                if table.is_empty() || all_default {
                    entry.fields.remove(field);
                } else {
                    entry.fields.insert(field.to_string(), Value::Table(table));
                }
            }
        }
    }

    fn table_frame(&self, c: &Command) -> Res<(&'static TableSchema, Option<String>)> {
        match self.stack.last() {
            Some(Frame::Table { schema, store, .. }) if !schema.is_single() => Ok((
                schema,
                match store {
                    Store::Top(p) => Some(p.clone()),
                    Store::Nested { .. } => None,
                },
            )),
            _ => Err(self.parse_error(&c.tokens[0])),
        }
    }

    fn with_table<R>(&mut self, top: &Option<String>, f: impl FnOnce(&mut Table) -> R) -> R {
        match top {
            Some(p) => f(self.top_table_mut(p)),
            None => match self.stack.last_mut() {
                Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) => f(table),
                _ => unreachable!("table frame checked"),
            },
        }
    }

    fn table_has(&self, top: &Option<String>, key: &str) -> bool {
        match top {
            Some(p) => self.top_table(p).is_some_and(|t| t.contains(key)),
            None => match self.stack.last() {
                Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) => table.contains(key),
                _ => false,
            },
        }
    }

    fn key_arg(&self, schema: &TableSchema, tok: &Token) -> Res<String> {
        if schema.int_key() {
            tok.text
                .parse::<u64>()
                .map(|n| n.to_string())
                .map_err(|_| self.err_tok(tok, -651, "value parse error"))
        } else {
            Ok(tok.text.clone())
        }
    }

    fn cmd_delete(&mut self, c: &Command) -> Res {
        let (schema, top) = self.table_frame(c)?;
        let Some(k) = c.tokens.get(1) else {
            return Err(self.parse_error(&c.tokens[0]));
        };
        let key = self.key_arg(schema, k)?;
        if !self.table_has(&top, &key) {
            return Err(self.err_tok(k, -3, "entry not found"));
        }
        if let Some(p) = &top {
            let users = self.references_to(p, &key);
            if !users.is_empty() {
                return Err(self.err_tok(
                    k,
                    -23,
                    format!("The entry is used by other {} entries", users.len()),
                ));
            }
        }
        let removed = self.with_table(&top, |t| t.remove(&key));
        if let Some(p) = top {
            self.out
                .changes
                .push(Change::new(p, key, ChangeAction::Delete).with_uuid(removed.as_ref()));
        }
        Ok(())
    }

    fn cmd_purge(&mut self, c: &Command) -> Res {
        let (_, top) = self.table_frame(c)?;
        if let Some(p) = &top {
            let keys: Vec<String> = self
                .top_table(p)
                .map(|t| t.entries().iter().map(|e| e.key.clone()).collect())
                .unwrap_or_default();
            for k in &keys {
                if !self.references_to(p, k).is_empty() {
                    return Err(self.err(
                        Some(&c.tokens[0]),
                        c.line,
                        -23,
                        format!("entry '{k}' is used"),
                    ));
                }
            }
            if keys.is_empty() {
                return Ok(());
            }
            let old = std::mem::take(self.top_table_mut(p));
            for k in keys {
                self.out.changes.push(
                    Change::new(p.clone(), k.clone(), ChangeAction::Delete).with_uuid(old.get(&k)),
                );
            }
        } else {
            self.with_table(&top, |t| t.clear());
        }
        Ok(())
    }

    fn cmd_move(&mut self, c: &Command) -> Res {
        let (schema, top) = self.table_frame(c)?;
        let (Some(k), Some(pos), Some(t)) = (c.tokens.get(1), c.tokens.get(2), c.tokens.get(3))
        else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: move <id> before|after <id>",
            ));
        };
        let before = match pos.text.as_str() {
            "before" => true,
            "after" => false,
            _ => return Err(self.parse_error(pos)),
        };
        let key = self.key_arg(schema, k)?;
        let target = self.key_arg(schema, t)?;
        if !self.table_has(&top, &key) {
            return Err(self.err_tok(k, -3, "entry not found"));
        }
        if !self.table_has(&top, &target) {
            return Err(self.err_tok(t, -3, "entry not found"));
        }
        // Already in place (or moved relative to itself): the order does not change.
        let in_place = {
            let pos = |k: &str| match &top {
                Some(p) => self.top_table(p).and_then(|t| t.position(k)),
                None => match self.stack.last() {
                    Some(Frame::Table {
                        store: Store::Nested { table, .. },
                        ..
                    }) => table.position(k),
                    _ => None,
                },
            };
            let (pk, pt) = (pos(&key), pos(&target));
            key == target
                || match (pk, pt) {
                    (Some(a), Some(b)) if before => a + 1 == b,
                    (Some(a), Some(b)) => a == b + 1,
                    _ => false,
                }
        };
        if in_place {
            return Ok(());
        }
        self.with_table(&top, |tb| tb.move_entry(&key, before, &target));
        if let Some(p) = top {
            let mut ch = Change::new(p, key, ChangeAction::Move);
            ch.cfgattr = format!("{}[{}]", if before { "before" } else { "after" }, target);
            self.out.changes.push(ch);
        }
        Ok(())
    }

    fn cmd_rename(&mut self, c: &Command) -> Res {
        let (schema, top) = self.table_frame(c)?;
        let (Some(k), Some(to), Some(n)) = (c.tokens.get(1), c.tokens.get(2), c.tokens.get(3))
        else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: rename <old> to <new>",
            ));
        };
        if to.text != "to" {
            return Err(self.parse_error(to));
        }
        let key = self.key_arg(schema, k)?;
        let new = self.key_arg(schema, n)?;
        if !self.table_has(&top, &key) {
            return Err(self.err_tok(k, -3, "entry not found"));
        }
        if self.table_has(&top, &new) {
            return Err(self.err_tok(n, -5, "A duplicate entry already exists"));
        }
        self.with_table(&top, |tb| tb.rename(&key, &new));
        if let Some(p) = top {
            self.rename_references(&p, &key, &new);
            let uuid = self
                .top_table(&p)
                .and_then(|t| t.get(&new))
                .and_then(|e| e.scalar("uuid"))
                .map(String::from);
            let mkey = schema.mkey().unwrap_or("name").to_string();
            let mut ch =
                Change::new(p, new.clone(), ChangeAction::Rename).with_attrs(&[AttrChange {
                    path: mkey,
                    old: Some(key),
                    new,
                }]);
            ch.uuid = uuid;
            self.out.changes.push(ch);
        }
        Ok(())
    }

    fn cmd_clone(&mut self, c: &Command) -> Res {
        let (schema, top) = self.table_frame(c)?;
        let (Some(k), Some(to), Some(n)) = (c.tokens.get(1), c.tokens.get(2), c.tokens.get(3))
        else {
            return Err(self.err(
                Some(&c.tokens[0]),
                c.line,
                -61,
                "command parse error: clone <old> to <new>",
            ));
        };
        if to.text != "to" {
            return Err(self.parse_error(to));
        }
        let key = self.key_arg(schema, k)?;
        let new = self.key_arg(schema, n)?;
        if self.table_has(&top, &new) {
            return Err(self.err_tok(n, -5, "A duplicate entry already exists"));
        }
        let src = match &top {
            Some(p) => self.top_table(p).and_then(|t| t.get(&key)).cloned(),
            None => match self.stack.last() {
                Some(Frame::Table {
                    store: Store::Nested { table, .. },
                    ..
                }) => table.get(&key).cloned(),
                _ => None,
            },
        };
        let Some(mut e) = src else {
            return Err(self.err_tok(k, -3, "entry not found"));
        };
        e.key = new.clone();
        if e.fields.contains_key("uuid") {
            let mut b = [0u8; 16];
            self.rng.fill_bytes(&mut b);
            e.fields.insert("uuid".into(), Value::Scalar(uuid_from(b)));
        }
        let mut added = Vec::new();
        diff::describe_added(schema, &e, self.version, "", &mut added);
        let change = top.as_ref().map(|p| {
            Change::new(p.clone(), new.clone(), ChangeAction::Add)
                .with_attrs(&added)
                .with_uuid(Some(&e))
        });
        self.with_table(&top, |tb| tb.upsert(e));
        if let Some(ch) = change {
            self.out.changes.push(ch);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ references

    /// Entries referring to `key` of the top-level table `path`: (table, entry key, field).
    pub fn references_to(&self, path: &str, key: &str) -> Vec<(String, String, String)> {
        let mut found = Vec::new();
        let version = self.version;
        let names: Vec<&str> = {
            let mut v: Vec<&str> = self.base.tables.keys().map(|s| s.as_str()).collect();
            for k in self.out.staged.keys() {
                if !v.contains(&k.as_str()) {
                    v.push(k);
                }
            }
            v
        };
        for tpath in names {
            let Some(ts) = self.schema.table(tpath, version) else {
                continue;
            };
            let Some(tb) = self.top_table(tpath) else {
                continue;
            };
            for e in tb.entries() {
                if tpath == path && e.key == key {
                    continue;
                }
                scan_refs(ts, e, version, &mut |f, v| {
                    if f.datasources().contains(&path) && value_names(v).any(|n| n == key) {
                        found.push((tpath.to_string(), e.key.clone(), f.name.to_string()));
                    }
                });
            }
        }
        found
    }

    fn rename_references(&mut self, path: &str, old: &str, new: &str) {
        let version = self.version;
        let mut tables: Vec<String> = self.base.tables.keys().cloned().collect();
        for k in self.out.staged.keys() {
            if !tables.contains(k) {
                tables.push(k.clone());
            }
        }
        for tpath in tables {
            let Some(ts) = self.schema.table(&tpath, version) else {
                continue;
            };
            let uses = self
                .top_table(&tpath)
                .map(|tb| {
                    tb.entries().iter().any(|e| {
                        let mut hit = false;
                        scan_refs(ts, e, version, &mut |f, v| {
                            hit |=
                                f.datasources().contains(&path) && value_names(v).any(|n| n == old)
                        });
                        hit
                    })
                })
                .unwrap_or(false);
            if !uses {
                continue;
            }
            let tb = self.top_table_mut(&tpath);
            let entries: Vec<Entry> = tb.entries().to_vec();
            for mut e in entries {
                rename_in_entry(ts, &mut e, version, path, old, new);
                tb.upsert(e);
            }
        }
    }

    // ------------------------------------------------------------------ values

    fn parse_value(
        &mut self,
        field: &'static FieldSchema,
        vals: &[Token],
        ftok: &Token,
        mode: SetMode,
    ) -> Res<Option<Value>> {
        let current = match self.stack.last() {
            Some(Frame::Entry { entry, .. }) => entry.fields.get(field.name).cloned(),
            _ => None,
        };
        let one = |me: &Self| -> Res<&Token> {
            match vals {
                [] => Err(me.err(
                    Some(ftok),
                    ftok.line,
                    -61,
                    format!("value missing for '{}'", field.name),
                )),
                [v] => Ok(v),
                [_, extra, ..] => Err(me.parse_error(extra)),
            }
        };
        if mode != SetMode::Set
            && !matches!(
                field.ty,
                FieldType::Multi { .. } | FieldType::MultiInt { .. } | FieldType::Words(_)
            )
        {
            return Err(self.parse_error(ftok));
        }
        let v = match &field.ty {
            FieldType::Str(max) => {
                let t = one(self)?;
                if t.text.chars().count() > *max {
                    return Err(self.err_tok(t, -1, "Invalid length of value"));
                }
                Value::Scalar(t.text.clone())
            }
            FieldType::Password => {
                let text: Vec<&str> = vals.iter().map(|t| t.text.as_str()).collect();
                match text.as_slice() {
                    [] => return Err(self.err(Some(ftok), ftok.line, -61, "value missing")),
                    ["ENC", h] => Value::Scalar(format!("ENC {h}")),
                    // The stored form as GET shows it, sent back as one value.
                    [p] if p.starts_with("ENC ") && !p[4..].contains(' ') => {
                        Value::Scalar(p.to_string())
                    }
                    [p] => Value::Scalar(hash_secret(p)),
                    [_, _, ..] => return Err(self.parse_error(&vals[1])),
                }
            }
            FieldType::Int(min, max) => {
                let t = one(self)?;
                match t.text.parse::<i64>() {
                    Ok(n) if n >= *min && n <= *max => Value::Scalar(n.to_string()),
                    _ => return Err(self.err_tok(t, -651, "value parse error")),
                }
            }
            FieldType::Enum(opts) => {
                let t = one(self)?;
                match opts.iter().find(|o| o.eq_ignore_ascii_case(&t.text)) {
                    Some(o) => Value::Scalar(o.to_string()),
                    None => return Err(self.parse_error(t)),
                }
            }
            FieldType::Ip => {
                let t = one(self)?;
                match t.text.parse::<std::net::Ipv4Addr>() {
                    Ok(a) => Value::Scalar(a.to_string()),
                    Err(_) => return Err(self.err_tok(t, -8, "Invalid IP address")),
                }
            }
            FieldType::IpMask => {
                let words: Vec<Token> = split_words(vals);
                match parse_ipmask(&words) {
                    Ok(s) => Value::Scalar(s),
                    Err(i) => {
                        let t = words.get(i).cloned().unwrap_or_else(|| ftok.clone());
                        return Err(self.err_tok(
                            &t,
                            if i == 0 { -8 } else { -9 },
                            if i == 0 {
                                "Invalid IP address"
                            } else {
                                "Invalid netmask"
                            },
                        ));
                    }
                }
            }
            FieldType::Uuid => {
                let t = one(self)?;
                if !is_uuid(&t.text) {
                    return Err(self.err_tok(t, -651, "value parse error"));
                }
                Value::Scalar(t.text.to_ascii_lowercase())
            }
            FieldType::Ref { ds, builtins } => {
                let t = one(self)?;
                if t.text.is_empty() {
                    return Ok(None);
                }
                if !self.ref_exists(ds, builtins, &t.text) {
                    return Err(self.err_tok(t, -3, "entry not found in datasource"));
                }
                Value::Scalar(t.text.clone())
            }
            FieldType::Multi { ds, builtins, .. } => {
                let mut members: Vec<String> = match (&current, mode) {
                    (Some(Value::List(l)), SetMode::Append | SetMode::Unselect) => l.clone(),
                    _ => Vec::new(),
                };
                if vals.is_empty() {
                    return Err(self.err(
                        Some(ftok),
                        ftok.line,
                        -61,
                        format!("value missing for '{}'", field.name),
                    ));
                }
                for t in vals {
                    if t.text.is_empty() {
                        continue;
                    }
                    match mode {
                        SetMode::Unselect => members.retain(|m| m != &t.text),
                        _ => {
                            if !ds.is_empty() && !self.ref_exists(ds, builtins, &t.text) {
                                return Err(self.err_tok(t, -3, "entry not found in datasource"));
                            }
                            if !members.contains(&t.text) {
                                members.push(t.text.clone());
                            }
                        }
                    }
                }
                if members.is_empty() {
                    return Ok(None);
                }
                Value::List(members)
            }
            FieldType::MultiInt { min, max, .. } => {
                let mut members: Vec<String> = match (&current, mode) {
                    (Some(Value::List(l)), SetMode::Append | SetMode::Unselect) => l.clone(),
                    _ => Vec::new(),
                };
                for t in &split_words(vals) {
                    let n = match t.text.parse::<i64>() {
                        Ok(n) if n >= *min && n <= *max => n.to_string(),
                        _ => return Err(self.err_tok(t, -651, "value parse error")),
                    };
                    match mode {
                        SetMode::Unselect => members.retain(|m| m != &n),
                        _ if !members.contains(&n) => members.push(n),
                        _ => {}
                    }
                }
                if members.is_empty() {
                    return Ok(None);
                }
                Value::List(members)
            }
            FieldType::Words(opts) => {
                let mut members: Vec<String> = match (&current, mode) {
                    (Some(Value::Scalar(s)), SetMode::Append | SetMode::Unselect) => {
                        s.split_whitespace().map(String::from).collect()
                    }
                    (None, SetMode::Append | SetMode::Unselect) => {
                        field.default.split_whitespace().map(String::from).collect()
                    }
                    _ => Vec::new(),
                };
                for t in &split_words(vals) {
                    let w = if opts.is_empty() {
                        t.text.clone()
                    } else {
                        match opts.iter().find(|o| o.eq_ignore_ascii_case(&t.text)) {
                            Some(o) => o.to_string(),
                            None => return Err(self.parse_error(t)),
                        }
                    };
                    match mode {
                        SetMode::Unselect => members.retain(|m| m != &w),
                        _ if !members.contains(&w) => members.push(w),
                        _ => {}
                    }
                }
                Value::Scalar(members.join(" "))
            }
            FieldType::Table(_) => return Err(self.parse_error(ftok)),
        };
        Ok(Some(v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetMode {
    Set,
    Append,
    Unselect,
}

fn is_default(field: &FieldSchema, v: &Value) -> bool {
    match v {
        Value::Scalar(s) => s == field.default,
        Value::List(l) => l.is_empty(),
        Value::Table(t) => t.is_empty(),
    }
}

/// Splits tokens containing blanks (REST passes `"10.0.0.0 255.0.0.0"` as one value).
fn split_words(vals: &[Token]) -> Vec<Token> {
    let mut out = Vec::new();
    for t in vals {
        if t.text.contains(char::is_whitespace) {
            for w in t.text.split_whitespace() {
                out.push(Token {
                    text: w.to_string(),
                    ..t.clone()
                });
            }
        } else {
            out.push(t.clone());
        }
    }
    out
}

/// `a.b.c.d m.m.m.m`, `a.b.c.d/len` or `a.b.c.d` (/32) → canonical `a.b.c.d m.m.m.m`.
/// On error, the index of the bad word.
pub fn parse_ipmask(words: &[Token]) -> Result<String, usize> {
    match words {
        [one] => {
            let (a, len) = match one.text.split_once('/') {
                Some((a, l)) => (a, l.parse::<u32>().map_err(|_| 0usize)?),
                None => (one.text.as_str(), 32),
            };
            let ip: std::net::Ipv4Addr = a.parse().map_err(|_| 0usize)?;
            if len > 32 {
                return Err(0);
            }
            let mask = if len == 0 {
                0u32
            } else {
                u32::MAX << (32 - len)
            };
            Ok(format!("{ip} {}", std::net::Ipv4Addr::from(mask)))
        }
        [a, m] => {
            let ip: std::net::Ipv4Addr = a.text.parse().map_err(|_| 0usize)?;
            let mask: std::net::Ipv4Addr = m.text.parse().map_err(|_| 1usize)?;
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(1);
            }
            Ok(format!("{ip} {mask}"))
        }
        [] => Err(0),
        _ => Err(2),
    }
}

/// A UUID in its hyphenated form (`8-4-4-4-12` hex digits), as FortiOS shows them.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// A version-4 UUID (RFC 4122 variant) from 16 random bytes of the seeded stream.
fn uuid_from(b: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// The referenced names of a value.
pub fn value_names(v: &Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match v {
        Value::Scalar(s) => Box::new(std::iter::once(s.as_str())),
        Value::List(l) => Box::new(l.iter().map(|s| s.as_str())),
        Value::Table(_) => Box::new(std::iter::empty()),
    }
}

/// Calls `f` for every reference-typed field value of `e`, recursing into sub-tables.
pub fn scan_refs(
    ts: &TableSchema,
    e: &Entry,
    version: FosVersion,
    f: &mut dyn FnMut(&FieldSchema, &Value),
) {
    for (name, v) in &e.fields {
        let Some(fs) = ts.field(name, version) else {
            continue;
        };
        match (&fs.ty, v) {
            (FieldType::Ref { .. } | FieldType::Multi { .. }, _) => f(fs, v),
            (FieldType::Table(sub), Value::Table(t)) => {
                for se in t.entries() {
                    scan_refs(sub, se, version, f);
                }
            }
            _ => {}
        }
    }
}

fn rename_in_entry(
    ts: &TableSchema,
    e: &mut Entry,
    version: FosVersion,
    path: &str,
    old: &str,
    new: &str,
) {
    for (name, v) in e.fields.iter_mut() {
        let Some(fs) = ts.field(name, version) else {
            continue;
        };
        match (&fs.ty, v) {
            (FieldType::Ref { ds, .. }, Value::Scalar(s)) if ds.contains(&path) && s == old => {
                *s = new.to_string();
            }
            (FieldType::Multi { ds, .. }, Value::List(l)) if ds.contains(&path) => {
                for m in l.iter_mut() {
                    if m == old {
                        *m = new.to_string();
                    }
                }
            }
            (FieldType::Table(sub), Value::Table(t)) => {
                let mut entries: Vec<Entry> = t.entries().to_vec();
                for se in entries.iter_mut() {
                    rename_in_entry(sub, se, version, path, old, new);
                }
                *t = entries.into_iter().collect();
            }
            _ => {}
        }
    }
}
