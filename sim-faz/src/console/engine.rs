//! The FortiAnalyzer CLI engine: pure command logic over the shared [`Faz`] state, no sockets.
//!
//! One [`Cli`] per logged-in administrator. [`Cli::execute`] runs one line and returns the text
//! the device prints; [`Cli::prompt`], [`Cli::help`] (`?`) and [`Cli::complete`] (TAB) serve
//! the interactive console. Configuration changes are collected while inside `config ...` and
//! committed on `end` (`next` for an admin entry), through the same state and persistence as the
//! JSON-RPC `/cli/global/system/...` objects; `abort` discards them.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::console::schema::{self, Field, Kind, ValueError};
use crate::faz::{AdminUser, Faz};
use crate::ioc::TidbType;
use fortilab_core::EventKind;

/// What a line printed, and whether the session ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub text: String,
    pub close: bool,
}

impl Output {
    fn text(t: impl Into<String>) -> Self {
        Self {
            text: t.into(),
            close: false,
        }
    }
}

/// An object edited with `config`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Obj {
    Global,
    Ioc,
}

impl Obj {
    fn fields(self) -> &'static [Field] {
        match self {
            Obj::Global => schema::GLOBAL,
            Obj::Ioc => schema::IOC,
        }
    }
    fn path(self) -> &'static str {
        match self {
            Obj::Global => "system global",
            Obj::Ioc => "system log ioc",
        }
    }
    fn prompt(self) -> &'static str {
        match self {
            Obj::Global => "global",
            Obj::Ioc => "ioc",
        }
    }
}

/// Pending edits: field → new value (`None`: unset to the default).
type Pending = Vec<(&'static str, Option<String>)>;

#[derive(Debug, Clone)]
enum Mode {
    Top,
    Object {
        obj: Obj,
        pending: Pending,
    },
    /// `config system admin user`.
    Table,
    /// `edit <name>` inside the admin table.
    Entry {
        name: String,
        pending: Pending,
    },
}

/// A CLI session.
pub struct Cli {
    faz: Arc<Faz>,
    user: String,
    /// `ssh(127.0.0.1)`: the user interface named in event logs.
    ui: String,
    mode: Mode,
}

const PARSE: &str = "Command fail. Return code -61";
const VALUE: &str = "Command fail. Return code -651";

/// Whether a command's output reports a failure (`Command fail. Return code ...`, a refused
/// quote).
pub fn is_failure(text: &str) -> bool {
    text.contains("Command fail. Return code") || text.starts_with("token line:")
}

fn parse_error(tok: &str) -> Output {
    Output::text(format!("command parse error before '{tok}'\n{PARSE}\n"))
}

fn incomplete() -> Output {
    Output::text(format!("incomplete command in the end\n{PARSE}\n"))
}

fn value_error(tok: &str) -> Output {
    Output::text(format!("value parse error before '{tok}'\n{VALUE}\n"))
}

fn permission_denied() -> Output {
    Output::text("Permission denied.\nCommand fail. Return code -37\n")
}

/// A static command tree node.
struct Node {
    w: &'static str,
    h: &'static str,
    k: &'static [Node],
}

const fn leaf(w: &'static str, h: &'static str) -> Node {
    Node { w, h, k: &[] }
}

const TOP: &[(&str, &str)] = &[
    ("config", "Configure object."),
    ("diagnose", "Diagnose facility."),
    ("exit", "Exit the CLI."),
    ("get", "Get dynamic and system information."),
    ("show", "Show configuration."),
];

const CONFIG_TREE: &[Node] = &[Node {
    w: "system",
    h: "System settings.",
    k: &[
        Node {
            w: "admin",
            h: "Administrator settings.",
            k: &[leaf("user", "Administrator user.")],
        },
        leaf("global", "Global range attributes."),
        Node {
            w: "log",
            h: "Log settings.",
            k: &[leaf("ioc", "IoC settings.")],
        },
    ],
}];

const GET_TREE: &[Node] = &[Node {
    w: "system",
    h: "System settings.",
    k: &[
        Node {
            w: "admin",
            h: "Administrator settings.",
            k: &[leaf("user", "Administrator user.")],
        },
        leaf("global", "Global range attributes."),
        Node {
            w: "log",
            h: "Log settings.",
            k: &[leaf("ioc", "IoC settings.")],
        },
        leaf("status", "System status."),
    ],
}];

const SHOW_TREE: &[Node] = &[Node {
    w: "system",
    h: "System settings.",
    k: &[
        Node {
            w: "admin",
            h: "Administrator settings.",
            k: &[leaf("user", "Administrator user.")],
        },
        leaf("global", "Global range attributes."),
        Node {
            w: "log",
            h: "Log settings.",
            k: &[leaf("ioc", "IoC settings.")],
        },
    ],
}];

const DIAG_TREE: &[Node] = &[
    Node {
        w: "fortilogd",
        h: "FortiLog daemon.",
        k: &[leaf(
            "lograte",
            "Display the log rate and the log insert lag.",
        )],
    },
    Node {
        w: "dvm",
        h: "Device manager.",
        k: &[Node {
            w: "device",
            h: "Device related settings.",
            k: &[leaf("list", "List devices.")],
        }],
    },
    Node {
        w: "test",
        h: "Test.",
        k: &[Node {
            w: "application",
            h: "Test applications.",
            k: &[Node {
                w: "sqllogd",
                h: "SQL log daemon.",
                k: &[Node {
                    w: "204",
                    h: "IoC engine and threat database (TIDB).",
                    k: &[
                        leaf("stats", "IoC licence and TIDB package."),
                        leaf("tidb", "Look a key up in the TIDB."),
                    ],
                }],
            }],
        }],
    },
];

const OBJ_CMDS: &[(&str, &str)] = &[
    ("abort", "End and discard last config."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("set", "Modify value."),
    ("show", "Show configuration."),
    ("unset", "Set to default value."),
];

const TABLE_CMDS: &[(&str, &str)] = &[
    ("abort", "End and discard last config."),
    ("delete", "Delete an object."),
    ("edit", "Create or edit an object."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("show", "Show configuration."),
];

const ENTRY_CMDS: &[(&str, &str)] = &[
    ("abort", "End and discard last config."),
    ("end", "End and save last config."),
    ("get", "Get dynamic and system information."),
    ("next", "Save last config and continue."),
    ("set", "Modify value."),
    ("show", "Show configuration."),
    ("unset", "Set to default value."),
];

/// Exact word or unique prefix among the candidates.
fn resolve<'a>(word: &str, cands: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let all: Vec<&str> = cands.into_iter().collect();
    if let Some(w) = all.iter().find(|w| **w == word) {
        return Some(w);
    }
    let mut it = all.iter().filter(|w| w.starts_with(word));
    match (it.next(), it.next()) {
        (Some(w), None) if !word.is_empty() => Some(w),
        _ => None,
    }
}

/// Splits a line into words: whitespace separated, `"..."`/`'...'` quoting, `\` escapes.
/// `Err` on an unmatched quote. The second value tells whether the line ends inside a word.
pub fn tokenize(line: &str) -> Result<(Vec<String>, bool), char> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(q);
    }
    if in_word {
        out.push(cur);
    }
    let open = line
        .chars()
        .last()
        .map(|c| !c.is_whitespace())
        .unwrap_or(false);
    Ok((out, open))
}

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Help lines: word column then description.
fn help_lines(items: &[(String, String)]) -> String {
    let w = items
        .iter()
        .map(|(a, _)| a.len())
        .max()
        .unwrap_or(0)
        .max(10)
        + 2;
    let mut s = String::new();
    for (a, b) in items {
        let _ = writeln!(s, "{a:<w$}{b}");
    }
    s
}

fn value_candidates(f: &Field) -> Vec<(String, String)> {
    match f.kind {
        Kind::Enum(words) => words
            .iter()
            .map(|(w, h)| (w.to_string(), h.to_string()))
            .collect(),
        Kind::Int(lo, hi) => vec![(
            "<integer>".into(),
            format!(
                "{} ({lo} - {hi}, default = {}).",
                f.help.trim_end_matches('.'),
                f.default
            ),
        )],
        Kind::Str(n) => vec![(
            "<string>".into(),
            format!("{} (character limit = {n}).", f.help.trim_end_matches('.')),
        )],
        Kind::Password => vec![("<passwd>".into(), f.help.to_string())],
    }
}

fn fields_candidates(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (f.name.to_string(), f.help.to_string()))
        .collect()
}

fn cmds(c: &[(&str, &str)]) -> Vec<(String, String)> {
    c.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn enter() -> Vec<(String, String)> {
    vec![("<Enter>".into(), String::new())]
}

/// Walks a command tree; returns the resolved words and the remaining arguments, or the word
/// that did not resolve.
fn walk<'t>(
    tree: &'t [Node],
    toks: &[String],
) -> Result<(Vec<&'static str>, &'t [Node], usize), String> {
    let mut level = tree;
    let mut path = Vec::new();
    let mut i = 0;
    while i < toks.len() && !level.is_empty() {
        let Some(w) = resolve(&toks[i], level.iter().map(|n| n.w)) else {
            return Err(toks[i].clone());
        };
        let node = level.iter().find(|n| n.w == w).expect("resolved");
        path.push(node.w);
        level = node.k;
        i += 1;
    }
    Ok((path, level, i))
}

impl Cli {
    pub fn new(faz: Arc<Faz>, user: &str, ui: &str) -> Self {
        Self {
            faz,
            user: user.to_string(),
            ui: ui.to_string(),
            mode: Mode::Top,
        }
    }

    fn hostname(&self) -> String {
        self.faz.settings.global().hostname
    }

    fn is_super(&self) -> bool {
        self.faz.admin(&self.user).map(|a| a.is_super()) == Some(true)
    }

    /// The prompt: `FAZ-LAB # `, `FAZ-LAB (global)# `, `FAZ-LAB (user)# `, `FAZ-LAB (admin)# `.
    pub fn prompt(&self) -> String {
        let h = self.hostname();
        match &self.mode {
            Mode::Top => format!("{h} # "),
            Mode::Object { obj, .. } => format!("{h} ({})# ", obj.prompt()),
            Mode::Table => format!("{h} (user)# "),
            Mode::Entry { name, .. } => format!("{h} ({name})# "),
        }
    }

    /// Runs one line.
    pub fn execute(&mut self, line: &str) -> Output {
        let toks = match tokenize(line) {
            Ok((t, _)) => t,
            Err('"') => return Output::text("token line: Unmatched double quote.\n"),
            Err(_) => return Output::text("token line: Unmatched single quote.\n"),
        };
        if toks.is_empty() {
            return Output::default();
        }
        match self.mode.clone() {
            Mode::Top => self.top(&toks),
            Mode::Object { obj, pending } => self.object(obj, pending, &toks),
            Mode::Table => self.table(&toks),
            Mode::Entry { name, pending } => self.entry(name, pending, &toks),
        }
    }

    /// The line as this CLI understands it in the current mode, every abbreviated word
    /// expanded along its tree (`diag dvm dev li` → `diagnose dvm device list`); words after
    /// the tree are kept as typed. `None` when the line is no command here (the CLI refuses
    /// it). Exercise checks match console commands against it.
    pub fn canonical(&self, line: &str) -> Option<String> {
        let (toks, _) = tokenize(line).ok()?;
        let first = toks.first()?;
        let cmds: &[(&str, &str)] = match &self.mode {
            Mode::Top => TOP,
            Mode::Object { .. } => OBJ_CMDS,
            Mode::Table => TABLE_CMDS,
            Mode::Entry { .. } => ENTRY_CMDS,
        };
        let cmd = resolve(first, cmds.iter().map(|c| c.0))?;
        let rest = &toks[1..];
        let tree = match (&self.mode, cmd) {
            (Mode::Top, "config") => CONFIG_TREE,
            (Mode::Top, "get") => GET_TREE,
            (Mode::Top, "show") => SHOW_TREE,
            (Mode::Top, "diagnose") => DIAG_TREE,
            _ => &[],
        };
        let mut words = vec![cmd.to_string()];
        match walk(tree, rest) {
            Ok((path, _, used)) => {
                words.extend(path.iter().map(|w| w.to_string()));
                words.extend(rest[used..].iter().cloned());
            }
            Err(_) => words.extend(rest.iter().cloned()),
        }
        Some(words.join(" "))
    }

    // ------------------------------------------------------------------ top level

    fn top(&mut self, toks: &[String]) -> Output {
        let Some(cmd) = resolve(&toks[0], TOP.iter().map(|c| c.0)) else {
            return parse_error(&toks[0]);
        };
        let rest = &toks[1..];
        match cmd {
            "exit" => Output {
                text: String::new(),
                close: true,
            },
            "config" => {
                let (path, level, used) = match walk(CONFIG_TREE, rest) {
                    Ok(x) => x,
                    Err(t) => return parse_error(&t),
                };
                if !level.is_empty() {
                    return incomplete();
                }
                if let Some(t) = rest.get(used) {
                    return parse_error(t);
                }
                if !self.is_super() {
                    return permission_denied();
                }
                self.mode = match path.as_slice() {
                    [_, "global"] => Mode::Object {
                        obj: Obj::Global,
                        pending: Vec::new(),
                    },
                    [_, _, "ioc"] => Mode::Object {
                        obj: Obj::Ioc,
                        pending: Vec::new(),
                    },
                    _ => Mode::Table,
                };
                Output::default()
            }
            "get" => {
                let (path, level, used) = match walk(GET_TREE, rest) {
                    Ok(x) => x,
                    Err(t) => return parse_error(&t),
                };
                if !level.is_empty() {
                    return incomplete();
                }
                let args = &rest[used..];
                match path.as_slice() {
                    [_, "status"] => self.no_args(args, |s| Output::text(s.system_status())),
                    [_, "global"] => self.no_args(args, |s| Output::text(s.get_obj(Obj::Global))),
                    [_, _, "ioc"] => self.no_args(args, |s| Output::text(s.get_obj(Obj::Ioc))),
                    _ => match args {
                        [] => Output::text(self.get_admin_table()),
                        [name] => match self.faz.admin(name) {
                            Some(a) => Output::text(self.get_admin(&a)),
                            None => Output::text(format!("entry not found in datasource\n\nvalue parse error before '{name}'\n{VALUE}\n")),
                        },
                        [_, extra, ..] => parse_error(extra),
                    },
                }
            }
            "show" => {
                if rest.is_empty() {
                    return Output::text(self.show_all(false));
                }
                if rest.len() == 1 && resolve(&rest[0], ["full-configuration"]).is_some() {
                    return Output::text(self.show_all(true));
                }
                let (path, level, used) = match walk(SHOW_TREE, rest) {
                    Ok(x) => x,
                    Err(t) => return parse_error(&t),
                };
                if !level.is_empty() {
                    return incomplete();
                }
                let full = match &rest[used..] {
                    [] => false,
                    [x] if resolve(x, ["full-configuration"]).is_some() => true,
                    [x, ..] => return parse_error(x),
                };
                Output::text(match path.as_slice() {
                    [_, "global"] => self.show_obj(Obj::Global, &[], full),
                    [_, _, "ioc"] => self.show_obj(Obj::Ioc, &[], full),
                    _ => self.show_admins(full),
                })
            }
            "diagnose" => {
                let (path, level, used) = match walk(DIAG_TREE, rest) {
                    Ok(x) => x,
                    Err(t) => return parse_error(&t),
                };
                if !level.is_empty() {
                    return incomplete();
                }
                let args = &rest[used..];
                match path.as_slice() {
                    ["dvm", "device", "list"] => {
                        self.no_args(args, |s| Output::text(s.dvm_device_list()))
                    }
                    [.., "stats"] => self.no_args(args, |s| Output::text(s.sqllogd_stats())),
                    ["fortilogd", "lograte"] => {
                        self.no_args(args, |s| Output::text(s.fortilogd_lograte()))
                    }
                    _ => Output::text(self.tidb_lookup(&args.join(" "))),
                }
            }
            _ => parse_error(&toks[0]),
        }
    }

    fn no_args(&self, args: &[String], f: impl FnOnce(&Self) -> Output) -> Output {
        match args.first() {
            Some(t) => parse_error(t),
            None => f(self),
        }
    }

    // ------------------------------------------------------------ config objects

    fn effective_obj(
        &self,
        obj: Obj,
        pending: &[(&'static str, Option<String>)],
    ) -> Vec<(&'static Field, String)> {
        let g = self.faz.settings.global();
        let s = self.faz.ioc.settings();
        obj.fields()
            .iter()
            .map(|f| {
                let cur = match obj {
                    Obj::Global => schema::global_get(&g, f.name),
                    Obj::Ioc => schema::ioc_get(&s, f.name),
                };
                let v = match pending.iter().rev().find(|(n, _)| *n == f.name) {
                    Some((_, Some(v))) => v.clone(),
                    Some((_, None)) => self.default_of(f),
                    None => cur,
                };
                (f, v)
            })
            .collect()
    }

    fn default_of(&self, f: &Field) -> String {
        if f.name == "hostname" {
            return self.faz.id.hostname.clone();
        }
        f.default.to_string()
    }

    /// `set FIELD VALUE` / `unset FIELD` against a field list: the pending change, or the error.
    fn edit_field(
        &self,
        fields: &'static [Field],
        pending: &mut Pending,
        toks: &[String],
    ) -> Option<Output> {
        let is_set = toks[0] != "unset" && resolve(&toks[0], ["set", "unset"]) == Some("set");
        let Some(name) = toks.get(1) else {
            return Some(incomplete());
        };
        let Some(f) = schema::field(fields, name) else {
            return Some(parse_error(name));
        };
        if !is_set {
            if let Some(t) = toks.get(2) {
                return Some(parse_error(t));
            }
            pending.push((f.name, None));
            return None;
        }
        let Some(v) = toks.get(2) else {
            return Some(incomplete());
        };
        if let Some(t) = toks.get(3) {
            return Some(parse_error(t));
        }
        match schema::check(f, v) {
            Ok(v) if f.name == "hostname" && v.trim().is_empty() => Some(value_error(&v)),
            Ok(v) => {
                pending.push((f.name, Some(v)));
                None
            }
            Err(ValueError::Invalid) | Err(ValueError::OutOfRange) => Some(value_error(v)),
        }
    }

    fn object(&mut self, obj: Obj, mut pending: Pending, toks: &[String]) -> Output {
        let Some(cmd) = resolve(&toks[0], OBJ_CMDS.iter().map(|c| c.0)) else {
            return parse_error(&toks[0]);
        };
        match cmd {
            "set" | "unset" => {
                let mut t = toks.to_vec();
                t[0] = cmd.to_string();
                if let Some(err) = self.edit_field(obj.fields(), &mut pending, &t) {
                    return err;
                }
                self.mode = Mode::Object { obj, pending };
                Output::default()
            }
            "get" => self.no_args(&toks[1..], |s| {
                Output::text(s.format_get(&s.effective_obj(obj, &pending)))
            }),
            "show" => {
                let full = match toks.get(1) {
                    None => false,
                    Some(x) if resolve(x, ["full-configuration"]).is_some() => true,
                    Some(x) => return parse_error(x),
                };
                Output::text(self.show_obj(obj, &pending, full))
            }
            "abort" => {
                self.mode = Mode::Top;
                Output::default()
            }
            _ => {
                // end
                self.mode = Mode::Top;
                match self.commit_obj(obj, &pending) {
                    Ok(()) => Output::default(),
                    Err(e) => Output::text(format!("{e}\nCommand fail. Return code -1\n")),
                }
            }
        }
    }

    fn commit_obj(&self, obj: Obj, pending: &Pending) -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let eff = self.effective_obj(obj, pending);
        let mut changes = Vec::new();
        match obj {
            Obj::Global => self.faz.save_global(apply_fields(
                self.faz.settings.global(),
                &eff,
                schema::global_get,
                schema::global_set,
                &mut changes,
            ))?,
            Obj::Ioc => self.faz.save_ioc_settings(apply_fields(
                self.faz.ioc.settings(),
                &eff,
                schema::ioc_get,
                schema::ioc_set,
                &mut changes,
            ))?,
        }
        if !changes.is_empty() {
            self.config_event(obj.path(), &changes.join(" "));
        }
        Ok(())
    }

    fn config_event(&self, path: &str, what: &str) {
        self.faz.admin_event(
            "0031040033",
            "notice",
            "Configuration changed",
            &self.user,
            &self.ui,
            "edit",
            "success",
            &format!("User {} changed {path}: {what}", self.user),
        );
        self.faz.bus.emit(
            EventKind::ConsoleConfig,
            serde_json::json!({"user": self.user, "path": path, "changes": what}),
        );
    }

    fn format_get(&self, rows: &[(&'static Field, String)]) -> String {
        let w = rows.iter().map(|(f, _)| f.name.len()).max().unwrap_or(0) + 1;
        let mut s = String::new();
        for (f, v) in rows {
            let _ = writeln!(s, "{:<w$}: {v}", f.name);
        }
        s
    }

    fn get_obj(&self, obj: Obj) -> String {
        self.format_get(&self.effective_obj(obj, &Vec::new()))
    }

    fn show_obj(&self, obj: Obj, pending: &[(&'static str, Option<String>)], full: bool) -> String {
        let mut s = format!("config {}\n", obj.path());
        for (f, v) in self.effective_obj(obj, pending) {
            if !full && v == self.default_of(f) && f.name != "hostname" {
                continue;
            }
            let shown = match f.kind {
                Kind::Str(_) => quote(&v),
                _ => v,
            };
            let _ = writeln!(s, "    set {} {shown}", f.name);
        }
        s.push_str("end\n");
        s
    }

    fn show_all(&self, full: bool) -> String {
        let mut s = self.show_obj(Obj::Global, &Vec::new(), full);
        s.push_str(&self.show_admins(full));
        s.push_str(&self.show_obj(Obj::Ioc, &Vec::new(), full));
        s
    }

    // ------------------------------------------------------------- admin table

    fn admins(&self) -> Vec<AdminUser> {
        self.faz.admins.list()
    }

    fn admin_lines(&self, a: &AdminUser, full: bool, indent: &str) -> String {
        let mut s = String::new();
        for f in schema::ADMIN_USER {
            let v = schema::admin_get(a, f.name);
            if !full && f.kind != Kind::Password && v == f.default {
                continue;
            }
            let shown = match f.kind {
                Kind::Str(_) | Kind::Enum(schema::PROFILES) => quote(&v),
                _ => v,
            };
            let _ = writeln!(s, "{indent}set {} {shown}", f.name);
        }
        s
    }

    fn show_admins(&self, full: bool) -> String {
        let mut s = String::from("config system admin user\n");
        for a in self.admins() {
            let _ = writeln!(s, "    edit {}", quote(&a.name));
            s.push_str(&self.admin_lines(&a, full, "        "));
            s.push_str("    next\n");
        }
        s.push_str("end\n");
        s
    }

    fn get_admin_table(&self) -> String {
        let mut s = String::new();
        for a in self.admins() {
            let _ = writeln!(s, "== [ {} ]", a.name);
            let _ = writeln!(s, "userid: {}    profileid: {}", a.name, a.profileid);
        }
        s
    }

    fn get_admin(&self, a: &AdminUser) -> String {
        let mut rows = vec![("userid".to_string(), a.name.clone())];
        for f in schema::ADMIN_USER {
            let v = if f.kind == Kind::Password {
                "*".into()
            } else {
                schema::admin_get(a, f.name)
            };
            rows.push((f.name.to_string(), v));
        }
        let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 1;
        rows.iter().fold(String::new(), |mut s, (n, v)| {
            let _ = writeln!(s, "{n:<w$}: {v}");
            s
        })
    }

    fn table(&mut self, toks: &[String]) -> Output {
        let Some(cmd) = resolve(&toks[0], TABLE_CMDS.iter().map(|c| c.0)) else {
            return parse_error(&toks[0]);
        };
        match cmd {
            "edit" => {
                let Some(name) = toks.get(1) else {
                    return incomplete();
                };
                if let Some(t) = toks.get(2) {
                    return parse_error(t);
                }
                if name.is_empty()
                    || name.len() > 35
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                {
                    return value_error(name);
                }
                self.mode = Mode::Entry {
                    name: name.clone(),
                    pending: Vec::new(),
                };
                Output::default()
            }
            "delete" => {
                let Some(name) = toks.get(1) else {
                    return incomplete();
                };
                if *name == self.user {
                    return Output::text(format!(
                        "Can not delete the current user.\n{}\n",
                        "Command fail. Return code -1"
                    ));
                }
                match self.faz.delete_admin(name) {
                    Ok(true) => {
                        self.config_event("system admin user", &format!("delete {name}"));
                        Output::default()
                    }
                    Ok(false) => Output::text(format!(
                        "entry not found in datasource\n\nvalue parse error before '{name}'\n{VALUE}\n"
                    )),
                    Err(e) => Output::text(format!("{e}\nCommand fail. Return code -1\n")),
                }
            }
            "get" => Output::text(self.get_admin_table()),
            "show" => Output::text(self.show_admins(toks.len() > 1)),
            _ => {
                // end / abort
                self.mode = Mode::Top;
                Output::default()
            }
        }
    }

    fn effective_admin(&self, name: &str, pending: &Pending) -> AdminUser {
        let mut a = self
            .faz
            .admin(name)
            .unwrap_or_else(|| AdminUser::new(name, "Restricted_User"));
        for (f, v) in pending {
            match v {
                Some(v) => schema::admin_set(&mut a, f, v, &self.faz.new_salt()),
                None => {
                    let d = schema::field(schema::ADMIN_USER, f)
                        .map(|x| x.default)
                        .unwrap_or("");
                    schema::admin_set(&mut a, f, d, &self.faz.new_salt());
                }
            }
        }
        a
    }

    fn entry(&mut self, name: String, mut pending: Pending, toks: &[String]) -> Output {
        let Some(cmd) = resolve(&toks[0], ENTRY_CMDS.iter().map(|c| c.0)) else {
            return parse_error(&toks[0]);
        };
        match cmd {
            "set" | "unset" => {
                let mut t = toks.to_vec();
                t[0] = cmd.to_string();
                if let Some(err) = self.edit_field(schema::ADMIN_USER, &mut pending, &t) {
                    return err;
                }
                self.mode = Mode::Entry { name, pending };
                Output::default()
            }
            "get" => {
                let a = self.effective_admin(&name, &pending);
                Output::text(self.get_admin(&a))
            }
            "show" => {
                let a = self.effective_admin(&name, &pending);
                let mut s = format!("config system admin user\n    edit {}\n", quote(&name));
                s.push_str(&self.admin_lines(&a, toks.len() > 1, "        "));
                s.push_str("    next\nend\n");
                Output::text(s)
            }
            "abort" => {
                self.mode = Mode::Top;
                Output::default()
            }
            _ => {
                // next / end: commit the entry.
                self.mode = if cmd == "next" {
                    Mode::Table
                } else {
                    Mode::Top
                };
                let exists = self.faz.admin(&name).is_some();
                if pending.is_empty() && exists {
                    return Output::default();
                }
                let a = self.effective_admin(&name, &pending);
                if a.name == self.user && !a.is_super() {
                    return Output::text(
                        "Can not change the profile of the current user.\nCommand fail. Return code -1\n",
                    );
                }
                match self.faz.save_admin(a) {
                    Ok(()) => {
                        let fields: Vec<&str> = pending.iter().map(|(f, _)| *f).collect();
                        self.config_event(
                            "system admin user",
                            &format!(
                                "{} {name} {}",
                                if exists { "edit" } else { "add" },
                                fields.join(",")
                            ),
                        );
                        Output::default()
                    }
                    Err(e) => Output::text(format!("{e}\nCommand fail. Return code -1\n")),
                }
            }
        }
    }

    // ---------------------------------------------------------------- operations

    /// `get system status`.
    fn system_status(&self) -> String {
        let f = &self.faz;
        let v = &f.id.version;
        let mut it = v.split('.');
        let (ma, mi) = (it.next().unwrap_or("6"), it.next().unwrap_or("4"));
        let rows: Vec<(&str, String)> = vec![
            ("Platform Type", "FAZVM64".into()),
            ("Platform Full Name", f.id.platform.clone()),
            ("Version", format!("v{v}-build2405 210419 (GA)")),
            ("Serial Number", f.id.serial.clone()),
            ("BIOS version", "04000002".into()),
            ("Hostname", self.hostname()),
            ("Max Number of Admin Domains", "5".into()),
            (
                "Admin Domain Configuration",
                if f.settings.global().adom_status == "enable" {
                    "Enabled".into()
                } else {
                    "Disabled".into()
                },
            ),
            ("FIPS Mode", "Disabled".into()),
            ("HA Mode", "Stand Alone".into()),
            ("Branch Point", "2405".into()),
            ("Release Version Information", "GA".into()),
            ("Current Time", f.display_time(f.now())),
            ("Daylight Time Saving", "Yes".into()),
            (
                "Time Zone",
                format!("(GMT{}) lab time", f.clock.tz_string()),
            ),
            ("x86-64 Applications", "Yes".into()),
            ("Disk Usage", disk_usage(f)),
            ("File System", "Ext4".into()),
            ("License Status", "Valid".into()),
            (
                "Image Signature",
                format!("Build {ma}.{mi} signed by Fortinet"),
            ),
        ];
        rows.iter().fold(String::new(), |mut s, (k, v)| {
            let _ = writeln!(s, "{k:<32}: {v}");
            s
        })
    }

    /// `diagnose fortilogd lograte` ([P]: the product's output format is not public): syslog
    /// lines stored in the raw log files, inserted into the SQL database, and the log insert
    /// lag (how far the database is behind).
    fn fortilogd_lograte(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let r = &self.faz.rawlog;
        let (stored, indexed) = (r.lines.load(Relaxed), r.indexed_lines.load(Relaxed));
        format!(
            "raw logs received (since start)  : {stored}\n\
             logs inserted into SQL database  : {indexed}\n\
             log insert lag                   : {} seconds ({} bytes)\n",
            r.lag().as_secs(),
            r.lag_bytes()
        )
    }

    /// `diagnose test application sqllogd 204 stats`.
    fn sqllogd_stats(&self) -> String {
        let eng = self.faz.ioc.engine();
        let (bi, bd, bu, su) = eng.tidb.counts();
        let version = tidb_version(&eng.tidb.version, eng.tidb.loaded_at, &self.faz);
        let loaded = self.faz.display_time(eng.tidb.loaded_at);
        let status = self.faz.ioc.settings().status;
        format!(
            "License of post breach detection installed.\nLicense expiration : 2038-Jan-01\n\
             TIDB version : {version}\nTIDB load time : {loaded}\n\
             IoC status : {}\n\
             TIDB entries : black_ip={bi} black_domain={bd} black_url={bu} suspicious_url={su}\n",
            if status { "enabled" } else { "disabled" }
        )
    }

    /// `diagnose test application sqllogd 204 tidb type=N, key=VALUE`.
    fn tidb_lookup(&self, args: &str) -> String {
        let usage = "Usage: diagnose test application sqllogd 204 tidb type=<1:url|2:domain|3:ip>, key=<value>\n";
        let mut ty = None;
        let mut key = None;
        for part in args.split([',', ' ']).filter(|p| !p.is_empty()) {
            if let Some(v) = part.strip_prefix("type=") {
                ty = v.parse::<u8>().ok();
            } else if let Some(v) = part.strip_prefix("key=") {
                key = Some(v.to_string());
            } else if key.is_some() {
                return usage.into();
            }
        }
        let (Some(ty), Some(key)) = (ty, key) else {
            return usage.into();
        };
        let want = match ty {
            1 => "black_url",
            2 => "black_domain",
            3 => "black_ip",
            _ => return usage.into(),
        };
        let hit = self.faz.ioc.engine().tidb.lookup(&key);
        let found = match (ty, hit) {
            (1, Some(TidbType::BlackUrl)) => Some("black_url"),
            (1, Some(TidbType::SuspiciousUrl)) => Some("suspicious_url"),
            (2, Some(TidbType::BlackDomain)) => Some("black_domain"),
            (3, Some(TidbType::BlackIp)) => Some("black_ip"),
            _ => None,
        };
        match found {
            Some(t) => {
                let h = fnv1a(&key.to_ascii_lowercase());
                format!("{key} is in tidb type {t}. id={} hash={h}\n", h % 1_000_000)
            }
            None => format!("{key} is not in tidb type {want}.\n"),
        }
    }

    /// `diagnose dvm device list`.
    fn dvm_device_list(&self) -> String {
        let devs: Vec<crate::faz::Device> = self.faz.devices.list();
        let managed = devs.iter().filter(|d| d.authorized).count();
        let mut s = format!(
            "--- There are currently {managed} devices/vdoms managed ---\n\
             --- There are currently {managed} devices/vdoms count for license ---\n\n"
        );
        let _ = writeln!(
            s,
            "{:<16}{:<7}{:<17}{:<8}{:<16}{:<49}{:<49}{:<19}FIRMWARE",
            "TYPE", "OID", "SN", "HA", "IP", "NAME", "ADOM", "IPS"
        );
        for (i, d) in devs.iter().enumerate() {
            let ty = if d.authorized { "faz" } else { "unregistered" };
            let mut v = d.version.split('.');
            let (ma, mi) = (v.next().unwrap_or("0"), v.next().unwrap_or("0"));
            let fw = if d.version.is_empty() {
                "-".to_string()
            } else {
                format!("{ma}.0 MR{mi} ({})", d.version)
            };
            let ip = if d.ip.is_empty() { "-" } else { &d.ip };
            let _ = writeln!(
                s,
                "{:<16}{:<7}{:<17}{:<8}{:<16}{:<49}{:<49}{:<19}{fw}",
                ty,
                150 + i,
                d.sn,
                "-",
                ip,
                d.name,
                d.adom,
                "N/A"
            );
            let conn = if d.connected { "up" } else { "down" };
            let _ = writeln!(
                s,
                "\t\t|- STATUS: dev-db: {}; conf: in sync; cond: {}; dm: {}; conn: {conn}",
                if d.authorized {
                    "not modified"
                } else {
                    "unknown"
                },
                if d.authorized { "OK" } else { "pending" },
                if d.authorized {
                    "autoupdated"
                } else {
                    "unregistered"
                },
            );
            let _ = writeln!(
                s,
                "\t\t|- vdom:[3]{} flags:0 adom:{} pkg:[never-installed]",
                d.vdom, d.adom
            );
        }
        s.push_str("\n--- End device list ---\n");
        s
    }

    // ------------------------------------------------------------ help and TAB

    /// The words valid after `done` in the current mode (word, help).
    fn candidates(&self, done: &[String]) -> Vec<(String, String)> {
        match &self.mode {
            Mode::Top => self.top_candidates(done),
            Mode::Object { obj, .. } => field_cmd_candidates(OBJ_CMDS, obj.fields(), done),
            Mode::Entry { .. } => field_cmd_candidates(ENTRY_CMDS, schema::ADMIN_USER, done),
            Mode::Table => {
                if done.is_empty() {
                    return cmds(TABLE_CMDS);
                }
                let cmd = resolve(&done[0], TABLE_CMDS.iter().map(|c| c.0));
                match (cmd, done.len()) {
                    (Some("edit"), 1) | (Some("delete"), 1) => {
                        let mut v: Vec<(String, String)> = self
                            .admins()
                            .into_iter()
                            .map(|a| (a.name, String::new()))
                            .collect();
                        if cmd == Some("edit") {
                            v.push(("<name>".into(), "Administrator name.".into()));
                        }
                        v
                    }
                    (Some(_), _) => enter(),
                    _ => Vec::new(),
                }
            }
        }
    }

    fn top_candidates(&self, done: &[String]) -> Vec<(String, String)> {
        if done.is_empty() {
            return cmds(TOP);
        }
        let Some(cmd) = resolve(&done[0], TOP.iter().map(|c| c.0)) else {
            return Vec::new();
        };
        let tree = match cmd {
            "config" => CONFIG_TREE,
            "get" => GET_TREE,
            "show" => SHOW_TREE,
            "diagnose" => DIAG_TREE,
            _ => return enter(),
        };
        let rest = &done[1..];
        let Ok((path, level, used)) = walk(tree, rest) else {
            return Vec::new();
        };
        if !level.is_empty() {
            let mut v: Vec<(String, String)> = level
                .iter()
                .map(|n| (n.w.to_string(), n.h.to_string()))
                .collect();
            if cmd == "show" && rest.is_empty() {
                v.push((
                    "full-configuration".into(),
                    "Show full configuration.".into(),
                ));
                v.extend(enter());
            }
            return v;
        }
        let args = &rest[used..];
        match (cmd, path.last().copied(), args.len()) {
            ("get", Some("user"), 0) => {
                let mut v: Vec<(String, String)> = self
                    .admins()
                    .into_iter()
                    .map(|a| (a.name, String::new()))
                    .collect();
                v.extend(enter());
                v
            }
            ("show", _, 0) => {
                let mut v = vec![(
                    "full-configuration".into(),
                    "Show full configuration.".into(),
                )];
                v.extend(enter());
                v
            }
            ("diagnose", Some("tidb"), 0) => vec![
                ("type=1,".into(), "URL (black_url).".into()),
                ("type=2,".into(), "Domain (black_domain).".into()),
                ("type=3,".into(), "IP address (black_ip).".into()),
            ],
            ("diagnose", Some("tidb"), 1) => {
                vec![(
                    "key=".into(),
                    "The URL, domain or IP address to look up.".into(),
                )]
            }
            _ => enter(),
        }
    }

    /// `?` typed after `line`.
    pub fn help(&self, line: &str) -> String {
        let (toks, open) = match tokenize(line) {
            Ok(x) => x,
            Err(_) => return "token line: Unmatched double quote.\n".into(),
        };
        let (done, partial) = split_partial(&toks, open);
        let items: Vec<(String, String)> = self
            .candidates(done)
            .into_iter()
            .filter(|(w, _)| w.starts_with('<') || w.starts_with(partial))
            .collect();
        if items.is_empty() {
            return format!("command parse error before '{partial}'\n");
        }
        help_lines(&items)
    }

    /// TAB typed after `line`: the completed line and the candidates when ambiguous.
    pub fn complete(&self, line: &str) -> (String, Vec<String>) {
        let Ok((toks, open)) = tokenize(line) else {
            return (line.to_string(), Vec::new());
        };
        let (done, partial) = split_partial(&toks, open);
        let words: Vec<String> = self
            .candidates(done)
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| !w.starts_with('<') && w.starts_with(partial))
            .collect();
        let base = if open {
            // Remove the partial word (as typed) from the end.
            match line.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
                Some((i, c)) => line[..i + c.len_utf8()].to_string(),
                None => String::new(),
            }
        } else {
            line.to_string()
        };
        match words.as_slice() {
            [] => (line.to_string(), Vec::new()),
            [w] => {
                let sep = if w.ends_with('=') { "" } else { " " };
                (format!("{base}{w}{sep}"), Vec::new())
            }
            many => {
                let mut common = many[0].clone();
                for w in &many[1..] {
                    let n = common
                        .chars()
                        .zip(w.chars())
                        .take_while(|(a, b)| a == b)
                        .count();
                    common = common.chars().take(n).collect();
                }
                let completed = if common.len() > partial.len() {
                    format!("{base}{common}")
                } else {
                    line.to_string()
                };
                (completed, many.to_vec())
            }
        }
    }

    /// Number of pending (uncommitted) edits: for tests and the session's close handler.
    pub fn pending(&self) -> usize {
        match &self.mode {
            Mode::Object { pending, .. } | Mode::Entry { pending, .. } => pending.len(),
            _ => 0,
        }
    }
}

fn split_partial(toks: &[String], open: bool) -> (&[String], &str) {
    match toks.split_last() {
        Some((last, done)) if open => (done, last.as_str()),
        _ => (toks, ""),
    }
}

fn field_cmd_candidates(
    commands: &[(&str, &str)],
    fields: &'static [Field],
    done: &[String],
) -> Vec<(String, String)> {
    if done.is_empty() {
        return cmds(commands);
    }
    let Some(cmd) = resolve(&done[0], commands.iter().map(|c| c.0)) else {
        return Vec::new();
    };
    match (cmd, done.len()) {
        ("set", 1) | ("unset", 1) => fields_candidates(fields),
        ("set", 2) => match schema::field(fields, &done[1]) {
            Some(f) => value_candidates(f),
            None => Vec::new(),
        },
        ("show", 1) => {
            let mut v = vec![(
                "full-configuration".into(),
                "Show full configuration.".into(),
            )];
            v.extend(enter());
            v
        }
        _ => enter(),
    }
}

fn disk_usage(f: &Faz) -> String {
    let used = f.store.size_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0 * 1024.0);
    format!("Free {:.2}GB, Total 58.80GB", (58.80 - used).max(0.0))
}

/// `00001.00001-2611281022`: the package version padded as FortiGuard prints it, then the
/// load time (yymmddHHMM, lab time).
fn tidb_version(v: &str, loaded_at: i64, faz: &Faz) -> String {
    let (d, t) = faz.clock.date_time(loaded_at * 1_000_000_000);
    let stamp: String = format!("{}{}", &d[2..], &t[..5])
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let mut parts = v.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) if a.chars().all(|c| c.is_ascii_digit()) => {
            format!("{:0>5}.{:0>5}-{stamp}", a, b)
        }
        _ => v.to_string(),
    }
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A copy of the settings `old` with the effective values `eff` set; each value that
/// differs from the current one is pushed to `changes` as `field[value]`.
fn apply_fields<T: Clone>(
    old: T,
    eff: &[(&'static Field, String)],
    get: fn(&T, &str) -> String,
    set: fn(&mut T, &str, &str),
    changes: &mut Vec<String>,
) -> T {
    let mut new = old.clone();
    for (f, v) in eff {
        if get(&old, f.name) != *v {
            changes.push(format!("{}[{}]", f.name, v));
        }
        set(&mut new, f.name, v);
    }
    new
}
