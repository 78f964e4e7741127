//! CLI state machine tests: prompts, commits on `next`/`end`, errors in FortiOS wording,
//! abbreviations, `show`/`get`, `| grep`, `?` help and TAB completion.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cli::{apply_grep, split_pipe, CliSession, Dispatch};
use crate::config::lexer;
use crate::config::{factory, ConfigStore, FosVersion, Origin};

const V64: FosVersion = FosVersion::V6_4_4;

fn store(v: FosVersion) -> Arc<ConfigStore> {
    let cfg = factory(v, "FGT-LAB", &mut ChaCha8Rng::seed_from_u64(1));
    Arc::new(ConfigStore::new(cfg, v, 1, "FGVM01TM00000001"))
}

fn cli(v: FosVersion) -> CliSession {
    CliSession::new(
        store(v),
        Origin {
            user: "admin".into(),
            ui: "ssh(10.115.1.20)".into(),
        },
    )
}

/// Runs one line; the output (operational commands are reported as `OP:<words>`).
fn run(c: &mut CliSession, line: &str) -> (String, bool) {
    let (cmd, filter) = split_pipe(line);
    let lexed = lexer::lex(&cmd).unwrap();
    let mut out = String::new();
    let mut failed = false;
    for k in &lexed.commands {
        match c.dispatch(k) {
            Dispatch::Done(o) => {
                out.push_str(&o.text);
                failed |= o.failed;
            }
            Dispatch::Operational(w) => out.push_str(&format!("OP:{}", w.join(" "))),
        }
    }
    if let Some(f) = filter {
        out = apply_grep(&f, &out).unwrap_or_else(|e| e);
    }
    (out, failed)
}

fn ok(c: &mut CliSession, line: &str) -> String {
    let (out, failed) = run(c, line);
    assert!(!failed, "{line}: {out}");
    out
}

const SEED: &[(&str, &str)] = &[
    ("config firewall policy", "FGT-LAB (policy) # "),
    ("edit 0", "FGT-LAB (0) # "),
    ("set srcintf \"port3\"", "FGT-LAB (0) # "),
    ("set dstintf \"virtual-wan-link\"", "FGT-LAB (0) # "),
    ("set srcaddr \"10.115.2.52/32\"", "FGT-LAB (0) # "),
    ("set dstaddr \"all\"", "FGT-LAB (0) # "),
    ("set action accept", "FGT-LAB (0) # "),
    ("set schedule \"always\"", "FGT-LAB (0) # "),
    ("set service \"ALL\"", "FGT-LAB (0) # "),
    ("set utm-status enable", "FGT-LAB (0) # "),
    (
        "set ssl-ssh-profile \"certificate-inspection\"",
        "FGT-LAB (0) # ",
    ),
    ("set webfilter-profile \"monitor-all\"", "FGT-LAB (0) # "),
    ("set logtraffic all", "FGT-LAB (0) # "),
    ("set nat enable", "FGT-LAB (0) # "),
    ("next", "FGT-LAB (policy) # "),
    ("", "FGT-LAB (policy) # "),
    (
        "config system automation-stitch",
        "FGT-LAB (automation-stitch) # ",
    ),
    (
        "edit \"Compromised Host Quarantine\"",
        "FGT-LAB (Compromised Host Quarantine) # ",
    ),
    (
        "set trigger \"Compromised Host Quarantine\"",
        "FGT-LAB (Compromised Host Quarantine) # ",
    ),
    (
        "set action \"Compromised Host Quarantine_quarantine-forticlient\"",
        "FGT-LAB (Compromised Host Quarantine) # ",
    ),
    ("next", "FGT-LAB (automation-stitch) # "),
    ("end", "FGT-LAB # "),
];

fn with_address(c: &mut CliSession) {
    for l in [
        "config firewall address",
        "edit \"10.115.2.52/32\"",
        "set subnet 10.115.2.52 255.255.255.255",
        "next",
        "end",
    ] {
        ok(c, l);
    }
}

#[test]
fn seed_snippets_change_prompts_and_commit() {
    let mut c = cli(V64);
    assert_eq!(c.prompt(), "FGT-LAB # ");
    with_address(&mut c);
    let mut rx = c.store().subscribe();
    let rev0 = c.store().revision();
    for (line, prompt) in SEED {
        ok(&mut c, line);
        assert_eq!(c.prompt(), *prompt, "after {line:?}");
        if *line == "set nat enable" {
            // Nothing is committed before `next`.
            assert_eq!(c.store().revision(), rev0);
        }
    }
    let (pol, stitch) = c.store().with(|cfg| {
        (
            cfg.table("firewall policy")
                .unwrap()
                .entries()
                .last()
                .cloned()
                .unwrap(),
            cfg.entry("system automation-stitch", "Compromised Host Quarantine")
                .cloned()
                .unwrap(),
        )
    });
    assert_eq!(pol.scalar("webfilter-profile"), Some("monitor-all"));
    assert_ne!(pol.key, "0");
    assert_eq!(
        stitch.list("action"),
        ["Compromised Host Quarantine_quarantine-forticlient".to_string()]
    );
    // The change events carry the console origin (event log 0100044547 uses them).
    let ev = rx.try_recv().unwrap();
    assert_eq!(ev.change.path, "firewall policy");
    assert_eq!(ev.origin.ui, "ssh(10.115.1.20)");
    assert_ne!(c.store().revision(), rev0);
}

#[test]
fn errors_use_fortios_wording_and_do_not_commit() {
    let mut c = cli(V64);
    ok(&mut c, "config firewall policy");
    ok(&mut c, "edit 0");
    let (out, failed) = run(&mut c, "set nosuchfield 1");
    assert!(failed);
    assert_eq!(
        out,
        "command parse error before 'nosuchfield'\nCommand fail. Return code -61\n"
    );
    let (out, _) = run(&mut c, "set action maybe");
    assert_eq!(
        out,
        "command parse error before 'maybe'\nCommand fail. Return code -61\n"
    );
    let (out, _) = run(&mut c, "set srcaddr nowhere");
    assert_eq!(
        out,
        "entry not found in datasource\n\nvalue parse error before 'nowhere'\nCommand fail. Return code -3\n"
    );
    // `show` of the incomplete entry being edited.
    ok(&mut c, "set action accept");
    assert_eq!(
        ok(&mut c, "show"),
        "config firewall policy\n    edit 0\n        set action accept\n    next\nend\n"
    );
    assert!(ok(&mut c, "get").contains("action              : accept\n"));
    let (out, _) = run(&mut c, "bogus");
    // Unchanged objects are not committed.
    let mut c2 = cli(V64);
    let rev = c2.store().revision();
    ok(&mut c2, "config system automation-stitch");
    ok(&mut c2, "edit \"Compromised Host Quarantine\"");
    ok(&mut c2, "next");
    ok(&mut c2, "end");
    assert_eq!(c2.store().revision(), rev);
    assert_eq!(
        out,
        "command parse error before 'bogus'\nCommand fail. Return code -61\n"
    );
    assert_eq!(c.prompt(), "FGT-LAB (0) # ");
    ok(&mut c, "abort");
    ok(&mut c, "end");
    // A required attribute missing at `next`: nothing committed, still in the entry.
    ok(&mut c, "config system automation-stitch");
    ok(&mut c, "edit s1");
    let rev = c.store().revision();
    let (out, failed) = run(&mut c, "next");
    assert!(failed);
    assert!(out.contains("Attribute 'trigger' MUST be set."), "{out}");
    assert_eq!(c.prompt(), "FGT-LAB (s1) # ");
    assert_eq!(c.store().revision(), rev);
    assert!(!c.store().exists("system automation-stitch", "s1"));
}

#[test]
fn abbreviations_single_tables_and_show() {
    let mut c = cli(V64);
    ok(&mut c, "conf sys glo");
    assert_eq!(c.prompt(), "FGT-LAB (global) # ");
    ok(&mut c, "set hostname FGT-NEW");
    // Not committed yet; `show` in the context shows the staged value.
    assert!(ok(&mut c, "show").contains("set hostname \"FGT-NEW\""));
    assert_eq!(c.store().hostname(), "FGT-LAB");
    ok(&mut c, "end");
    assert_eq!(c.store().hostname(), "FGT-NEW");
    assert_eq!(c.prompt(), "FGT-NEW # ");
    let out = ok(&mut c, "show system automation-trigger");
    assert!(
        out.starts_with("config system automation-trigger\n"),
        "{out}"
    );
    let out = ok(&mut c, "show firewall policy | grep monitor");
    assert!(!out.contains("config firewall policy"));
    let out = ok(&mut c, "get system global | grep hostname");
    assert!(out.contains("hostname"), "{out}");
    assert!(out.contains(": FGT-NEW"), "{out}");
    assert_eq!(ok(&mut c, "get system status"), "OP:get system status");
    assert_eq!(
        ok(&mut c, "diag automation test x"),
        "OP:diagnose automation test x"
    );
    let full = ok(&mut c, "show full-configuration system global");
    assert!(full.contains("set admintimeout"), "{full}");
}

#[test]
fn nested_tables_and_table_ops() {
    let mut c = cli(FosVersion::new(7, 2, 5));
    ok(&mut c, "config system automation-stitch");
    ok(&mut c, "edit st");
    ok(&mut c, "set trigger \"Compromised Host - High\"");
    ok(&mut c, "config actions");
    assert_eq!(c.prompt(), "FGT-LAB (actions) # ");
    ok(&mut c, "edit 0");
    ok(&mut c, "set action \"Quarantine FortiClient EMS Endpoint\"");
    ok(&mut c, "next");
    ok(&mut c, "end");
    assert_eq!(c.prompt(), "FGT-LAB (st) # ");
    assert!(!c.store().exists("system automation-stitch", "st"));
    ok(&mut c, "next");
    ok(&mut c, "end");
    let e = c
        .store()
        .with(|cfg| cfg.entry("system automation-stitch", "st").cloned())
        .unwrap();
    assert_eq!(e.table("actions").unwrap().len(), 1);
    // delete / rename on a top-level table commit at once.
    ok(&mut c, "config firewall address");
    ok(&mut c, "edit a1");
    ok(&mut c, "set subnet 10.0.0.1/32");
    ok(&mut c, "next");
    ok(&mut c, "rename a1 to a2");
    assert!(c.store().exists("firewall address", "a2"));
    let (out, failed) = run(&mut c, "delete nope");
    assert!(failed, "{out}");
    ok(&mut c, "delete a2");
    assert!(!c.store().exists("firewall address", "a2"));
    ok(&mut c, "end");
}

#[test]
fn help_and_completion_candidates() {
    let mut c = cli(V64);
    let top: Vec<String> = c.candidates(&[]).into_iter().map(|x| x.0).collect();
    assert!(top.contains(&"config".to_string()) && top.contains(&"diagnose".to_string()));
    let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let sys: Vec<String> = c
        .candidates(&w(&["config", "system"]))
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert!(sys.contains(&"automation-stitch".to_string()), "{sys:?}");
    ok(&mut c, "config firewall policy");
    let verbs: Vec<String> = c.candidates(&[]).into_iter().map(|x| x.0).collect();
    assert!(verbs.contains(&"edit".to_string()) && !verbs.contains(&"set".to_string()));
    let edit = c.candidates(&w(&["edit"]));
    assert_eq!(edit[0].0, "<policyid>");
    ok(&mut c, "edit 0");
    let fields = c.candidates(&w(&["set"]));
    let act = fields.iter().find(|(f, _)| f == "action").unwrap();
    assert_eq!(act.1, "Policy action (allow/deny/ipsec).");
    let vals: Vec<String> = c
        .candidates(&w(&["set", "action"]))
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(vals, ["accept", "deny", "ipsec"]);
    let refs: Vec<String> = c
        .candidates(&w(&["set", "webfilter-profile"]))
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert!(refs.contains(&"monitor-all".to_string()), "{refs:?}");
}

#[test]
fn grep_options() {
    let text = "config firewall policy\n    edit 1\n        set name \"a\"\n    next\n    edit 2\n        set name \"B\"\n    next\nend\n";
    assert_eq!(
        apply_grep("grep -i b", text).unwrap(),
        "        set name \"B\"\n"
    );
    assert_eq!(apply_grep("grep -c edit", text).unwrap(), "2\n");
    let f = apply_grep("grep -f 'name \"a\"'", text).unwrap();
    assert_eq!(
        f,
        "config firewall policy\n    edit 1\n        set name \"a\" <---\n    next\nend\n"
    );
    assert_eq!(split_pipe("show | grep x").1.as_deref(), Some("grep x"));
    assert_eq!(split_pipe("set comments \"a|b\"").1, None);
}

/// The command as the CLI understood it (what exercise checks match): abbreviations expanded
/// along the CLI's own trees in the current context, refused lines give `None`.
#[test]
fn canonical_commands_expand_abbreviations_as_the_cli_resolves_them() {
    let canon = |c: &CliSession, line: &str| {
        let lexed = lexer::lex(line).unwrap();
        c.canonical(&lexed.commands[0])
    };
    let mut c = cli(V64);
    assert_eq!(
        canon(&c, "diag test app fcnacd 7").as_deref(),
        Some("diagnose test application fcnacd 7")
    );
    assert_eq!(
        canon(&c, "diag end fctems status").as_deref(),
        Some("diagnose endpoint fctems status")
    );
    assert_eq!(
        canon(&c, "sh fire pol 1").as_deref(),
        Some("show firewall policy 1")
    );
    assert_eq!(
        canon(&c, "conf log fortianalyzer setting").as_deref(),
        Some("config log fortianalyzer setting")
    );
    assert_eq!(
        canon(&c, "get sys stat").as_deref(),
        Some("get system status")
    );
    // `e` is `execute` or `exit`: the CLI refuses it, so it is no command.
    assert_eq!(canon(&c, "e"), None);
    assert_eq!(canon(&c, "frobnicate"), None);
    // An unknown word stops the expansion; the rest is kept as typed.
    assert_eq!(
        canon(&c, "diag nosuch thing").as_deref(),
        Some("diagnose nosuch thing")
    );
    // Inside a table, the verbs are the table's.
    ok(&mut c, "config firewall address");
    assert_eq!(canon(&c, "ed x").as_deref(), Some("edit x"));
    assert_eq!(canon(&c, "diag test"), None);
}
