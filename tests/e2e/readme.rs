//! The README's walkthrough is true: every command it shows, run as written (with the ready
//! file's path substituted), against a real `fortilab up`, gives what the README says it gives.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The walkthrough's shell: the variable block (a ```sh fence) and the commands (indented
/// lines, `\` continuations joined), in README order.
fn walkthrough(readme: &str) -> (String, Vec<String>) {
    let start = readme
        .find("## Walkthrough")
        .expect("README has a Walkthrough section");
    let rest = &readme[start..];
    let end = rest
        .find("The same with the real Python clients")
        .unwrap_or(rest.len());
    let text = &rest[..end];
    let mut prelude = String::new();
    let mut commands = Vec::new();
    let mut in_fence = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence && line.contains("sh");
            continue;
        }
        if in_fence {
            prelude.push_str(line);
            prelude.push('\n');
            continue;
        }
        let indented = line.starts_with("    ");
        let l = line.trim();
        if !pending.is_empty() {
            pending.push(' ');
            pending.push_str(l.trim_end_matches('\\').trim_end());
            if !l.ends_with('\\') {
                commands.push(std::mem::take(&mut pending));
            }
            continue;
        }
        if indented && l.starts_with("curl ") {
            if let Some(c) = l.strip_suffix('\\') {
                pending = c.trim_end().to_string();
            } else {
                commands.push(l.to_string());
            }
        }
    }
    (prelude, commands)
}

/// What the README promises for a command (matched by a piece of the command).
fn promise(cmd: &str) -> &'static str {
    let table: [(&str, &str); 8] = [
        ("cmdb/firewall/policy/1", "\"webfilter-profile\""),
        (
            "automation-stitch/Compromised",
            "Compromised Host Quarantine",
        ),
        ("eicar.com\"}", "\"ok\":true"),
        ("log/memory/webfilter", "www.eicar.org"),
        ("compromised-hosts", "10.115.2.52"),
        ("automation-stitch/stats", "Compromised Host Quarantine"),
        ("news.sky.com", "\"blocked_by\":\"quarantine\""),
        ("events/ack", "\"status\""),
    ];
    table
        .iter()
        .find(|(k, _)| cmd.contains(k))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("the test does not know what the README promises for: {cmd}"))
}

fn bash(prelude: &str, cmd: &str) -> (bool, String) {
    // The walkthrough runs curl and jq as written.
    support::require_program("curl", "curl");
    support::require_program("jq", "jq");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -eu\n{prelude}\n{cmd}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn start_up(dir: &Path) -> (std::process::Child, PathBuf) {
    let ready = dir.join("lab.json");
    let child = Command::new(bin("fortilab"))
        .args(["up", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("fortilab up ready file", Duration::from_secs(60), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    });
    (child, ready)
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (prelude, commands) = walkthrough(&readme);
    assert!(prelude.contains("/tmp/lab.json"), "{prelude}");
    assert!(commands.len() >= 8, "{commands:#?}");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ready) = start_up(dir.path());
    let prelude = prelude.replace("/tmp/lab.json", &ready.display().to_string());
    for cmd in &commands {
        if cmd.contains("<code>") {
            continue; // needs the code EMS shows; the access-code release is tested in tests/lab.rs
        }
        let want = promise(cmd);
        // A person reads each answer before typing the next command; the flow takes a few
        // milliseconds to move on, so each command is repeated until it shows what it promises.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out) = bash(&prelude, cmd);
            if ok && out.contains(want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "README command\n  {cmd}\nshould show {want:?}, it showed:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    support::unsafe_free_kill(child.id(), "TERM");
    let _ = child.wait();
}

#[test]
fn the_walkthrough_parser_reads_continued_lines() {
    let md = "## Walkthrough\n```sh\nA=1\n```\n1. x:\n\n       curl -s a \\\n         -d 'b'\n       curl -s c\n\nThe same with the real Python clients\n    curl -s nope\n";
    let (p, c) = walkthrough(md);
    assert_eq!(p, "A=1\n");
    assert_eq!(
        c,
        vec!["curl -s a -d 'b'".to_string(), "curl -s c".to_string()]
    );
}
