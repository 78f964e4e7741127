//! Guided exercises: a starting lab plus tasks a trainee does by hand, each ticked off when its
//! checks hold.
//!
//! An exercise file is a lab definition (often a partial one: a FortiGate with interfaces only,
//! FortiAnalyzer and EMS that do not authorize it by themselves) plus `[exercise]` and
//! `[[task]]`s. Each task has an `id`, a `title`, the trainee's `text` (Markdown), optional
//! `hints` (revealed one at a time on request) and `[[task.check]]`s. A check is one table with
//! exactly one key: any scenario expectation (`expect_faz_log`, `expect_stitch`, `expect_ems`,
//! `expect_compromised`, `expect_event`, ...; see [`crate::scenario`]) or one of the exercise
//! checks of [`check::CheckKind`] (`cmdb`, `faz_device`, `ems_fabric`, `faz_setting`,
//! `console`), with `not = true` to negate it.
//!
//! ```toml
//! [exercise]
//! name = "faz-logging"
//! title = "Send the FortiGate's logs to FortiAnalyzer"
//!
//! [[task]]
//! id = "logging"
//! title = "Enable logging to FortiAnalyzer"
//! text = "Configure `log fortianalyzer setting` on the FortiGate."
//! hints = ["`config log fortianalyzer setting`", "`set server 10.115.1.20`"]
//!
//! [[task.check]]
//! cmdb = { path = "log.fortianalyzer/setting", fields = { status = "enable", server = "10.115.1.20" } }
//! ```
//!
//! Tasks are done in order: the current task (the first not done) is checked on every relevant
//! lab event (and every [`engine::FALLBACK_INTERVAL`]); once all its checks hold at one time it
//! is done for good, and the next one is checked at once. Checks read the devices through their
//! vendor APIs and the lab's event timeline only.

pub mod check;
pub mod engine;
pub mod progress;

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::labdef::{line_col, DefError, LabDef};
use check::{Check, CheckKind};

/// `[exercise]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExerciseMeta {
    /// Short machine name (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// The title a trainee sees.
    #[serde(default)]
    pub title: Option<String>,
    /// Introduction (Markdown).
    #[serde(default)]
    pub description: Option<String>,
}

/// One task.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub title: String,
    /// The trainee's instructions (Markdown).
    pub text: String,
    pub hints: Vec<String>,
    pub checks: Vec<Check>,
    /// Line of the task's `id` in the file.
    pub line: usize,
}

/// A parsed exercise.
#[derive(Debug, Clone)]
pub struct Exercise {
    pub name: String,
    pub title: String,
    pub description: String,
    pub lab: LabDef,
    pub tasks: Vec<Task>,
}

impl Exercise {
    /// The index of the task with this id.
    pub fn task_index(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }
}

/// Whether a loaded definition is an exercise (has `[exercise]` or `[[task]]`).
pub fn is_exercise(def: &LabDef) -> bool {
    def.exercise.is_some() || !def.task.is_empty()
}

/// Loads and checks an exercise file: the lab definition, every task and every check.
pub fn load(path: &Path) -> Result<Exercise, DefError> {
    let def = LabDef::load(path)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "exercise".into());
    from_def(def, &text, &stem)
}

/// Parses exercise text (`file` names it in errors); for tests and `validate`.
pub fn parse(file: &str, text: &str) -> Result<Exercise, DefError> {
    let def = LabDef::parse(file, text)?;
    from_def(def, text, "exercise")
}

fn from_def(mut def: LabDef, text: &str, stem: &str) -> Result<Exercise, DefError> {
    let file = def.source.clone();
    let top = |needle: &str, msg: String| {
        let offset = text.find(needle).unwrap_or(0);
        DefError::at(&file, text, offset, msg)
    };
    if !def.step.is_empty() {
        return Err(top(
            "[[step]]",
            "an exercise has [[task]]s, not [[step]]s (steps belong in a scenario)".into(),
        ));
    }
    if def.task.is_empty() {
        return Err(top(
            "[exercise]",
            "an exercise needs at least one [[task]]".into(),
        ));
    }
    let meta = def.exercise.clone().unwrap_or_default();
    let mut tasks: Vec<Task> = Vec::new();
    for (i, spanned) in def.task.iter().enumerate() {
        let task = parse_task(&file, text, i, spanned)?;
        if let Some(prev) = tasks.iter().find(|t| t.id == task.id) {
            return Err(DefError {
                file: file.clone(),
                line: task.line,
                column: 1,
                message: format!(
                    "task {}: id {:?} is already used by the task on line {}",
                    i + 1,
                    task.id,
                    prev.line
                ),
            });
        }
        tasks.push(task);
    }
    // Endpoints named by checks must exist.
    let names: Vec<String> = def.endpoint_specs().into_iter().map(|e| e.name).collect();
    for t in &tasks {
        for c in &t.checks {
            if let CheckKind::Expect(crate::scenario::StepKind::ExpectFetch { endpoint, .. }) =
                &c.kind
            {
                if !names.contains(endpoint) {
                    return Err(DefError {
                        file: file.clone(),
                        line: c.line,
                        column: 1,
                        message: format!(
                            "task {:?}: no endpoint named {endpoint:?} in this lab (have: {})",
                            t.id,
                            names.join(", ")
                        ),
                    });
                }
            }
        }
    }
    def.task.clear();
    Ok(Exercise {
        name: meta.name.clone().unwrap_or_else(|| stem.to_string()),
        title: meta
            .title
            .clone()
            .unwrap_or_else(|| meta.name.clone().unwrap_or_else(|| stem.to_string())),
        description: meta.description.clone().unwrap_or_default(),
        lab: def,
        tasks,
    })
}

const TASK_KEYS: &[&str] = &["id", "title", "text", "hints", "check"];

fn parse_task(
    file: &str,
    text: &str,
    i: usize,
    spanned: &toml::Spanned<toml::Table>,
) -> Result<Task, DefError> {
    // The task's text: from its `[[task]]` header to the next one (its `[[task.check]]`
    // tables are separate headers, outside the table's own span).
    let headers = header_offsets(text, "[[task]]");
    let (start, end) = match headers.get(i) {
        Some(&s) => (s, headers.get(i + 1).copied().unwrap_or(text.len())),
        None => {
            let s = spanned.span().start.min(text.len());
            (s, spanned.span().end.min(text.len()).max(s))
        }
    };
    let region = &text[start..end];
    let at = |needle: &str, msg: String| {
        let off = region.find(needle).map(|p| start + p).unwrap_or(start);
        DefError::at(file, text, off, format!("task {}: {msg}", i + 1))
    };
    let table = spanned.get_ref();
    for k in table.keys() {
        if !TASK_KEYS.contains(&k.as_str()) {
            return Err(at(
                k,
                format!(
                    "unknown key `{k}` (expected one of: {})",
                    TASK_KEYS.join(", ")
                ),
            ));
        }
    }
    let string = |k: &str, required: bool| -> Result<String, DefError> {
        match table.get(k) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(at(k, format!("`{k}` must be a string"))),
            None if required => Err(at("[[task]]", format!("missing `{k}`"))),
            None => Ok(String::new()),
        }
    };
    let id = string("id", true)?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(at(
            "id",
            format!("id {id:?} must be letters, digits, - or _ (it goes in URLs)"),
        ));
    }
    let title = string("title", true)?;
    let body = string("text", false)?;
    let hints = match table.get("hints") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|h| {
                h.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| at("hints", "`hints` must be a list of strings".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(at("hints", "`hints` must be a list of strings".into())),
    };
    let line = line_col(text, region.find("id").map(|p| start + p).unwrap_or(start)).0;
    let checks = match table.get("check") {
        None => return Err(at("[[task]]", "has no [[task.check]]".into())),
        Some(toml::Value::Array(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(at(
                "check",
                "`check` must be [[task.check]] tables (at least one)".into(),
            ))
        }
    };
    // Each check's place: the n-th `[[task.check]]` (or `check =`) inside this task's text.
    let check_offsets: Vec<usize> = header_offsets(region, "[[task.check]]")
        .into_iter()
        .map(|p| start + p)
        .collect();
    let mut parsed = Vec::new();
    for (n, c) in checks.iter().enumerate() {
        let c_off = check_offsets.get(n).copied().unwrap_or(start);
        let c_end = check_offsets.get(n + 1).copied().unwrap_or(end);
        let c_region = &text[c_off..c_end.max(c_off)];
        let c_at = |needle: &str, msg: String| {
            let off = c_region.find(needle).map(|p| c_off + p).unwrap_or(c_off);
            DefError::at(
                file,
                text,
                off,
                format!("task {} ({id}), check {}: {msg}", i + 1, n + 1),
            )
        };
        let Some(t) = c.as_table() else {
            return Err(c_at("check", "a check is a table".into()));
        };
        let mut key: Option<&str> = None;
        for k in t.keys() {
            match k.as_str() {
                "not" | "name" => {}
                k if check::CHECK_KEYS.contains(&k) => {
                    if let Some(prev) = key {
                        return Err(c_at(k, format!("has two checks, `{prev}` and `{k}`")));
                    }
                    key = Some(k);
                }
                other => {
                    return Err(c_at(
                        other,
                        format!(
                            "unknown key `{other}` (expected one of: {})",
                            check::CHECK_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        let Some(key) = key else {
            return Err(c_at("check", "has no check key".into()));
        };
        let json = crate::scenario::toml_to_json(&toml::Value::Table(t.clone()));
        let body = json.get(key).cloned().unwrap_or(Value::Null);
        let kind =
            check::parse_check(key, &body).map_err(|m| c_at(key, format!("`{key}`: {m}")))?;
        let negate = match t.get("not") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err(c_at("not", "`not` must be true or false".into())),
        };
        let name = match t.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => check::describe(&kind),
        };
        let line = line_col(text, c_region.find(key).map(|p| c_off + p).unwrap_or(c_off)).0;
        parsed.push(Check {
            name,
            kind,
            negate,
            line,
        });
    }
    Ok(Task {
        id,
        title,
        text: body,
        hints,
        checks: parsed,
        line,
    })
}

/// Byte offsets of the lines that are exactly `header` (leading and trailing blanks aside).
fn header_offsets(text: &str, header: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let t = t.split('#').next().unwrap_or("").trim();
        if t == header {
            out.push(off + (line.len() - line.trim_start().len()));
        }
        off += line.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[exercise]
name = "t"
title = "A test exercise"

[fortianalyzer]
auto_authorize = false

[[task]]
id = "logging"
title = "Enable logging"
text = "Do it."
hints = ["one", "two"]

[[task.check]]
cmdb = { path = "log.fortianalyzer/setting", fields = { status = "enable" } }

[[task]]
id = "authorize"
title = "Authorize"

[[task.check]]
faz_device = { name = "FGT-LAB" }

[[task.check]]
expect_stitch = { stitch = "Compromised Host Quarantine" }
not = true
"#;

    #[test]
    fn parses_tasks_hints_and_checks() {
        let ex = parse("e.toml", GOOD).unwrap();
        assert_eq!(ex.name, "t");
        assert_eq!(ex.tasks.len(), 2);
        assert_eq!(ex.tasks[0].hints, ["one", "two"]);
        assert_eq!(ex.tasks[0].line, 10);
        assert_eq!(ex.tasks[1].checks.len(), 2);
        assert!(ex.tasks[1].checks[1].negate);
        assert_eq!(ex.tasks[1].checks[1].line, 26);
        assert!(!ex.lab.fortianalyzer.auto_authorize);
        assert!(matches!(
            ex.tasks[1].checks[0].kind,
            CheckKind::FazDevice {
                authorized: true,
                ..
            }
        ));
    }

    #[test]
    fn errors_name_the_line() {
        let bad = GOOD.replace("faz_device = {", "faz_devise = {");
        let e = parse("e.toml", &bad).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("e.toml", 23));
        assert!(
            e.message.contains("unknown key `faz_devise`"),
            "{}",
            e.message
        );

        let bad = GOOD.replace("fields = { status = \"enable\" }", "fields = 3");
        let e = parse("e.toml", &bad).unwrap_err();
        assert_eq!(e.line, 16);
        assert!(
            e.message.contains("`fields` must be a table"),
            "{}",
            e.message
        );

        let bad = GOOD.replace("id = \"authorize\"", "id = \"logging\"");
        let e = parse("e.toml", &bad).unwrap_err();
        assert_eq!(e.line, 19);
        assert!(e.message.contains("already used"), "{}", e.message);

        let bad = GOOD.replace(
            "title = \"Authorize\"\n",
            "title = \"Authorize\"\nwhen = 1\n",
        );
        let e = parse("e.toml", &bad).unwrap_err();
        assert_eq!(e.line, 21);

        let e = parse("e.toml", "[exercise]\nname = \"x\"\n").unwrap_err();
        assert!(e.message.contains("at least one [[task]]"), "{}", e.message);

        let bad = GOOD.replace(
            "expect_stitch = { stitch = \"Compromised Host Quarantine\" }",
            "fgt_cli = \"show\"",
        );
        let e = parse("e.toml", &bad).unwrap_err();
        assert_eq!(e.line, 26);
    }

    /// Every exercise shipped in `scenarios/exercises` is valid.
    #[test]
    fn library_exercises_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("exercises");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) == Some("toml") {
                let ex = load(&p).unwrap_or_else(|e| panic!("{e}"));
                assert!(!ex.tasks.is_empty());
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} exercises in {}", dir.display());
    }
}
