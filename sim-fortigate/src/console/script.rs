//! Config scripts (`POST /api/v2/monitor/system/config-script/upload`): a CLI text run
//! command by command through the console's [`FgtSession`], with a history the monitor API
//! lists (`GET /api/v2/monitor/system/config-script`) [P: history entry shape].

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::lexer;

use super::FgtSession;

/// One run of a script.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptRun {
    pub id: u64,
    pub name: String,
    /// `success` (no command failed) or `error`.
    pub status: String,
    /// Lab time, Unix seconds.
    pub start_time: i64,
    pub end_time: i64,
    /// Commands run / failed.
    pub commands: usize,
    pub failed: usize,
    /// The transcript (prompt, command, output), as the console shows it.
    pub output: String,
}

/// The script history (most recent last).
#[derive(Debug, Default)]
pub struct ScriptHistory {
    inner: Mutex<(u64, VecDeque<ScriptRun>)>,
}

/// Runs kept in the history.
pub const HISTORY_MAX: usize = 100;

impl ScriptHistory {
    pub fn record(&self, mut run: ScriptRun) -> ScriptRun {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        run.id = g.0;
        g.1.push_back(run.clone());
        if g.1.len() > HISTORY_MAX {
            g.1.pop_front();
        }
        run
    }

    pub fn list(&self) -> Vec<ScriptRun> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .iter()
            .cloned()
            .collect()
    }

    /// Deletes runs by id; returns how many were removed.
    pub fn delete(&self, ids: &[u64]) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = g.1.len();
        g.1.retain(|r| !ids.contains(&r.id));
        before - g.1.len()
    }
}

/// Runs `text` through `session`; an open block at the end is closed with `end` (committed),
/// as when a script file ends.
pub async fn run_script(session: &mut FgtSession, name: &str, text: &str, now: i64) -> ScriptRun {
    let mut out = String::new();
    let mut commands = 0;
    let mut failed = 0;
    let lexed = match lexer::lex(text) {
        Ok(l) => l,
        Err(e) => {
            return ScriptRun {
                id: 0,
                name: name.to_string(),
                status: "error".into(),
                start_time: now,
                end_time: now,
                commands: 0,
                failed: 1,
                output: format!(
                    "line {}: {}\nCommand fail. Return code -61\n",
                    e.line, e.message
                ),
            };
        }
    };
    for c in &lexed.commands {
        let shown: Vec<String> = c
            .tokens
            .iter()
            .map(|t| {
                if t.quoted || t.text.contains(char::is_whitespace) || t.text.is_empty() {
                    lexer::quote(&t.text)
                } else {
                    t.text.clone()
                }
            })
            .collect();
        out.push_str(&session.cli.prompt());
        out.push_str(&shown.join(" "));
        out.push('\n');
        commands += 1;
        let (text, f, close) = session.run_commands(std::slice::from_ref(c)).await;
        out.push_str(&text);
        if f {
            failed += 1;
        }
        if close {
            break;
        }
    }
    while session.cli.in_config() {
        out.push_str(&session.cli.prompt());
        out.push_str("end\n");
        let (text, f, _) = session.run_line("end").await;
        out.push_str(&text);
        if f {
            failed += 1;
            session.cli.reset();
        }
    }
    ScriptRun {
        id: 0,
        name: name.to_string(),
        status: if failed == 0 { "success" } else { "error" }.into(),
        start_time: now,
        end_time: now,
        commands,
        failed,
        output: out,
    }
}
