//! Parser, validation, serialization and store tests (every syntax rule of reference §3.1).

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

const V64: FosVersion = FosVersion::V6_4_4;
const V72: FosVersion = FosVersion::new(7, 2, 5);

fn base(v: FosVersion) -> Config {
    factory(v, "FGVM01TM00000001", &mut ChaCha8Rng::seed_from_u64(1))
}

fn parse(text: &str) -> Result<(Config, Applied), ConfigError> {
    parse_v(text, V64)
}

fn parse_v(text: &str, v: FosVersion) -> Result<(Config, Applied), ConfigError> {
    parse_config(
        &base(v),
        text,
        "t.conf",
        v,
        false,
        &mut ChaCha8Rng::seed_from_u64(2),
    )
}

fn entry<'a>(c: &'a Config, path: &str, key: &str) -> &'a Entry {
    c.entry(path, key)
        .unwrap_or_else(|| panic!("{path} {key} missing"))
}

pub use super::ARTICLE_SNIPPETS as SEED_SNIPPETS;

#[test]
fn factory_defaults_are_as_the_reference_says() {
    let c = base(V64);
    assert_eq!(
        entry(&c, "system interface", "port1").scalar("role"),
        Some("wan")
    );
    assert_eq!(
        entry(&c, "system interface", "port3").scalar("role"),
        Some("lan")
    );
    assert!(c.entry("firewall address", "all").is_some());
    assert!(c.entry("firewall schedule recurring", "always").is_some());
    for s in ["ALL", "HTTP", "HTTPS", "DNS", "PING"] {
        assert!(c.entry("firewall service custom", s).is_some(), "{s}");
    }
    for p in ["certificate-inspection", "deep-inspection", "no-inspection"] {
        assert!(c.entry("firewall ssl-ssh-profile", p).is_some(), "{p}");
    }
    let ma = entry(&c, "webfilter profile", "monitor-all");
    assert_eq!(ma.scalar("log-all-url"), Some("enable"));
    assert_eq!(
        ma.scalar("comment"),
        Some("Monitor and log all visited URLs, flow-based.")
    );
    let filters = ma
        .table("ftgd-wf")
        .unwrap()
        .get("")
        .unwrap()
        .table("filters")
        .unwrap();
    assert_eq!(filters.len(), defaults::categories(V64).len() + 1);
    assert!(
        filters
            .entries()
            .iter()
            .all(|f| f.scalar("action").is_none()),
        "all monitor"
    );
    assert!(
        filters
            .entries()
            .iter()
            .any(|f| f.scalar("category").is_none()),
        "unrated entry"
    );
    let def = entry(&c, "webfilter profile", "default");
    let df = def
        .table("ftgd-wf")
        .unwrap()
        .get("")
        .unwrap()
        .table("filters")
        .unwrap();
    let blocked: Vec<u32> = df
        .entries()
        .iter()
        .filter(|f| f.scalar("action") == Some("block"))
        .map(|f| f.scalar("category").unwrap().parse().unwrap())
        .collect();
    assert_eq!(blocked, defaults::DEFAULT_BLOCKED);
    let st = entry(
        &c,
        "system automation-stitch",
        "Compromised Host Quarantine",
    );
    assert_eq!(st.scalar("status"), Some("disable"));
    assert_eq!(st.list("action").len(), 2);
    let tr = entry(
        &c,
        "system automation-trigger",
        "Compromised Host Quarantine",
    );
    assert!(
        tr.fields.is_empty(),
        "event-type ioc and ioc-level high are defaults"
    );
    let z = c
        .single("system virtual-wan-link")
        .unwrap()
        .table("zone")
        .unwrap();
    assert!(z.contains("virtual-wan-link"));
    // 7.x names.
    let c7 = base(V72);
    assert!(c7
        .entry("system automation-trigger", "Compromised Host - High")
        .is_some());
    let st7 = entry(
        &c7,
        "system automation-stitch",
        "Compromised Host Quarantine",
    );
    assert_eq!(st7.table("actions").unwrap().len(), 2);
    assert!(c7.single("system sdwan").is_some());
}

#[test]
fn seed_snippets_load_with_a_warning_for_the_missing_end() {
    let (c, a) = parse(SEED_SNIPPETS).unwrap();
    let p = entry(&c, "firewall policy", "1");
    assert_eq!(p.list("srcintf"), ["port3"]);
    assert_eq!(p.list("dstintf"), ["virtual-wan-link"]);
    assert_eq!(p.list("srcaddr"), ["10.115.2.52/32"]);
    assert_eq!(p.scalar("action"), Some("accept"));
    assert_eq!(p.scalar("webfilter-profile"), Some("monitor-all"));
    assert_eq!(p.scalar("logtraffic"), Some("all"));
    assert_eq!(p.scalar("nat"), Some("enable"));
    assert!(p.scalar("uuid").is_some());
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    let w = a.warnings[0].to_string();
    assert!(w.starts_with("t.conf:22:1: warning:"), "{w}");
    assert!(
        w.contains("config firewall policy") && w.contains("line 6"),
        "{w}"
    );
    let st = entry(
        &c,
        "system automation-stitch",
        "Compromised Host Quarantine",
    );
    assert_eq!(
        st.list("action"),
        ["Compromised Host Quarantine_quarantine-forticlient"]
    );
    assert_eq!(
        st.scalar("status"),
        Some("disable"),
        "unchanged fields keep their value"
    );
}

#[test]
fn block_without_end_at_eof_is_closed_with_a_warning() {
    let (c, a) =
        parse("config firewall address\n    edit \"h1\"\n        set subnet 10.1.1.1/32\n")
            .unwrap();
    assert_eq!(
        entry(&c, "firewall address", "h1").scalar("subnet"),
        Some("10.1.1.1 255.255.255.255")
    );
    assert_eq!(a.warnings.len(), 1);
    assert!(a.warnings[0].message.contains("not closed"));
    // Strict mode refuses it.
    let e = parse_config(
        &base(V64),
        "config firewall address\n edit a\n next\n",
        "s.conf",
        V64,
        true,
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("s.conf:3:"), "{e}");
}

#[test]
fn edit_zero_assigns_the_next_free_id_on_next_and_end() {
    let text = "config firewall policy
edit 7
set srcintf port3
set dstintf port1
set srcaddr all
set dstaddr all
set schedule always
set service ALL
next
edit 0
set srcintf port3
set dstintf port1
set srcaddr all
set dstaddr all
set schedule always
set service ALL
end";
    let (c, a) = parse(text).unwrap();
    let keys: Vec<&str> = c
        .table("firewall policy")
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["7", "8"]);
    assert_eq!(a.changes.last().unwrap().key, "8");
    assert!(a.warnings.is_empty());
}

#[test]
fn set_unset_append_unselect_select_clear() {
    let text = r#"config firewall addrgrp
    edit "g"
        set member "all" "none"
        append member "gmail.com"
        unselect member "none"
    next
end
config firewall policy
    edit 1
        select srcintf "port3"
        set dstintf "port1"
        set srcaddr "g"
        set dstaddr "all"
        set schedule "always"
        set service "HTTP" "HTTPS"
        set comments "temp"
        clear comments
        set nat enable
        unset nat
    next
end
config system interface
    edit "port2"
        set allowaccess ping
        append allowaccess https ssh
        unselect allowaccess ping
    next
end"#;
    let (c, _) = parse(text).unwrap();
    assert_eq!(
        entry(&c, "firewall addrgrp", "g").list("member"),
        ["all", "gmail.com"]
    );
    let p = entry(&c, "firewall policy", "1");
    assert_eq!(p.list("srcintf"), ["port3"]);
    assert_eq!(p.list("service"), ["HTTP", "HTTPS"]);
    assert_eq!(p.scalar("comments"), None);
    assert_eq!(p.scalar("nat"), None);
    assert_eq!(
        entry(&c, "system interface", "port2").scalar("allowaccess"),
        Some("https ssh")
    );
}

#[test]
fn delete_move_rename_clone_purge() {
    let mut text = String::from("config firewall policy\n");
    for id in 1..=3 {
        text.push_str(&format!("edit {id}\nset srcintf port3\nset dstintf port1\nset srcaddr all\nset dstaddr all\nset schedule always\nset service ALL\nnext\n"));
    }
    text.push_str("move 3 before 1\ndelete 2\nclone 1 to 9\nend\n");
    text.push_str("config firewall address\nedit a1\nnext\nrename a1 to a2\nend\n");
    text.push_str("config webfilter urlfilter\nedit 1\nconfig entries\nedit 1\nset url x\nnext\nedit 2\nset url y\nnext\npurge\nend\nnext\nend\n");
    let (c, _) = parse(&text).unwrap();
    let keys: Vec<&str> = c
        .table("firewall policy")
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["3", "1", "9"]);
    assert_ne!(
        entry(&c, "firewall policy", "9").scalar("uuid"),
        entry(&c, "firewall policy", "1").scalar("uuid")
    );
    assert!(c.entry("firewall address", "a2").is_some());
    assert!(c.entry("firewall address", "a1").is_none());
    assert!(entry(&c, "webfilter urlfilter", "1")
        .table("entries")
        .is_none());
}

#[test]
fn rename_updates_references() {
    let text = "config firewall address\nedit h\nset subnet 10.0.0.1/32\nnext\nend\nconfig firewall policy\nedit 1\nset srcintf port3\nset dstintf port1\nset srcaddr h\nset dstaddr all\nset schedule always\nset service ALL\nnext\nend\nconfig firewall address\nrename h to host\nend\n";
    let (c, _) = parse(text).unwrap();
    assert_eq!(entry(&c, "firewall policy", "1").list("srcaddr"), ["host"]);
}

#[test]
fn nested_tables_and_single_sub_tables() {
    let text = r#"config webfilter profile
    edit "wf"
        config ftgd-wf
            config filters
                edit 0
                    set category 26
                    set action block
                next
                edit 0
                    set category 61
                    set action warning
                next
            end
        end
        set log-all-url enable
    next
end"#;
    let (c, _) = parse(text).unwrap();
    let f = entry(&c, "webfilter profile", "wf")
        .table("ftgd-wf")
        .unwrap()
        .get("")
        .unwrap()
        .table("filters")
        .unwrap();
    let keys: Vec<&str> = f.entries().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["1", "2"]);
    assert_eq!(f.get("2").unwrap().scalar("action"), Some("warning"));
}

#[test]
fn quoting_and_escapes_in_values() {
    let text = "config firewall address\nedit \"my host\"\nset comment 'it\\'s \"quoted\"'\nnext\nedit with\\ space\nnext\nend\n";
    let (c, _) = parse(text).unwrap();
    assert_eq!(
        entry(&c, "firewall address", "my host").scalar("comment"),
        Some("it's \"quoted\"")
    );
    assert!(c.entry("firewall address", "with space").is_some());
}

#[test]
fn config_version_header_is_accepted() {
    let text = format!(
        "{}\nconfig system global\nset hostname \"FGT-LAB\"\nend\n",
        V64.config_header("admin")
    );
    let (c, a) = parse(&text).unwrap();
    assert!(a.warnings.is_empty());
    assert_eq!(
        c.single("system global").unwrap().scalar("hostname"),
        Some("FGT-LAB")
    );
}

#[test]
fn missing_reference_is_refused_with_the_fortios_error() {
    let text = "config firewall policy\n    edit 1\n        set srcintf \"port3\"\n        set srcaddr \"10.9.9.9/32\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!((e.line, e.col, e.code), (4, 21, -3));
    assert_eq!(e.message, "entry not found in datasource");
    assert_eq!(e.cli_text(), "entry not found in datasource\n\nvalue parse error before '10.9.9.9/32'\nCommand fail. Return code -3\n");
    assert!(e
        .to_string()
        .starts_with("t.conf:4:21: entry not found in datasource"));
}

#[test]
fn delete_of_an_object_in_use_is_refused() {
    let (c, _) = parse(SEED_SNIPPETS).unwrap();
    let e = parse_config(
        &c,
        "config firewall address\ndelete \"10.115.2.52/32\"\nend\n",
        "d.conf",
        V64,
        false,
        &mut ChaCha8Rng::seed_from_u64(3),
    )
    .unwrap_err();
    assert_eq!((e.code, e.line), (-23, 2));
    let e = parse_config(
        &c,
        "config firewall address\ndelete nope\nend\n",
        "d.conf",
        V64,
        false,
        &mut ChaCha8Rng::seed_from_u64(3),
    )
    .unwrap_err();
    assert_eq!(e.code, -3);
}

#[test]
fn value_errors_carry_line_column_and_code() {
    let cases: &[(&str, i32, usize, usize)] = &[
        ("config firewall policy\nedit 1\nset action maybe\n", -61, 3, 12),
        ("config firewall policy\nedit 1\nset tcp-mss-sender 99999\n", -651, 3, 20),
        ("config firewall address\nedit a\nset subnet 10.0.0.300 255.0.0.0\n", -8, 3, 12),
        ("config firewall address\nedit a\nset subnet 10.0.0.0 255.0.255.0\n", -9, 3, 21),
        ("config firewall address\nedit a\nset comment one two\n", -61, 3, 17),
        ("config firewall address\nedit aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", -1, 2, 6),
        ("config firewall policy\nedit x\n", -651, 2, 6),
        ("config firewall policy\nedit 1\nset srcintf port3\nnext\n", -56, 4, 1),
        ("edit 1\n", -61, 1, 1),
        ("config firewall policy\nfrobnicate\n", -61, 2, 1),
        ("config firewall address\nedit a\nset comment \"unterminated\n", -61, 3, 13),
        ("end\n", -61, 1, 1),
    ];
    for (text, code, line, col) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(
            (e.code, e.line, e.col),
            (*code, *line, *col),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn unknown_tables_and_fields_are_warned_not_dropped_silently() {
    let text = "config router static\n    edit 1\n        set gateway 10.0.0.1\n    next\nend\nconfig firewall address\n    edit a\n        set frobnicate yes\n    next\nend\n";
    let (c, a) = parse(text).unwrap();
    assert!(c.entry("firewall address", "a").is_some());
    let w: Vec<String> = a.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("t.conf:1:8: warning: not modelled: config router static"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("t.conf:8:13: warning: not modelled: firewall address field 'frobnicate'"),
        "{w:?}"
    );
    let e = parse_config(
        &base(V64),
        text,
        "t.conf",
        V64,
        true,
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap_err();
    assert_eq!((e.line, e.col), (1, 8));
}

#[test]
fn stitch_syntax_depends_on_the_version() {
    // 7.x syntax on 6.4: parse error.
    let t7 = "config system automation-stitch\nedit s\nset trigger \"Compromised Host Quarantine\"\nconfig actions\nedit 1\nset action \"Compromised Host Quarantine_quarantine\"\nnext\nend\nnext\nend\n";
    let e = parse(t7).unwrap_err();
    assert_eq!((e.code, e.line), (-61, 4));
    // 6.4 syntax on 7.2: parse error.
    let t6 = "config system automation-stitch\nedit s\nset trigger \"Compromised Host - High\"\nset action \"Quarantine FortiClient EMS Endpoint\"\nnext\nend\n";
    let e = parse_v(t6, V72).unwrap_err();
    assert_eq!((e.code, e.line), (-61, 4));
    // Each on its own version works.
    let t7ok = "config system automation-stitch\nedit s\nset trigger \"Compromised Host - High\"\nconfig actions\nedit 0\nset action \"Quarantine FortiClient EMS Endpoint\"\nset delay 5\nset required enable\nnext\nend\nnext\nend\n";
    let (c, _) = parse_v(t7ok, V72).unwrap();
    let a = entry(&c, "system automation-stitch", "s")
        .table("actions")
        .unwrap();
    assert_eq!(a.get("1").unwrap().scalar("delay"), Some("5"));
    // logid: integer in 6.4, list in 7.x.
    assert!(
        parse("config system automation-trigger\nedit t\nset logid 32102 32103\nnext\nend\n")
            .is_err()
    );
    assert!(parse_v(
        "config system automation-trigger\nedit t\nset logid 32102 32103\nnext\nend\n",
        V72
    )
    .is_ok());
}

/// A realistic full configuration: factory + lab objects of every modelled table.
fn realistic() -> String {
    format!(
        "{}\n{SEED_SNIPPETS}{}",
        V64.config_header("admin"),
        r#"config system global
    set hostname "FGT-LAB"
    set admintimeout 30
end
config system interface
    edit "port3"
        set ip 10.115.2.1 255.255.255.0
        set allowaccess ping https ssh
    next
end
config system api-user
    edit "automation"
        set api-key secret-token
        set accprofile "super_admin"
        set vdom "root"
        config trusthost
            edit 1
                set ipv4-trusthost 10.115.0.0 255.255.0.0
            next
        end
    next
end
config firewall addrgrp
    edit "lab hosts"
        set member "10.115.2.52/32" "all"
    next
end
config firewall service custom
    edit "web-8080"
        set tcp-portrange 8080 8443
    next
end
config firewall service group
    edit "webs"
        set member "HTTP" "web-8080"
    next
end
config firewall schedule recurring
    edit "workhours"
        set start "08:00"
        set end "18:00"
        set day monday tuesday
    next
end
config webfilter urlfilter
    edit 1
        set name "lab-list"
        config entries
            edit 1
                set url "www.eicar.org"
                set action block
            next
        end
    next
end
config system automation-trigger
    edit "ioc medium"
        set ioc-level medium
    next
end
config system automation-action
    edit "ban"
        set action-type ban-ip
    next
end
config log fortianalyzer setting
    set status enable
    set server "10.115.1.20"
    set upload-option realtime
    set reliable enable
end
config log syslogd setting
    set status enable
    set server "10.115.1.30"
end
config endpoint-control fctems
    edit "ems"
        set server "10.115.1.40"
    next
end
config user quarantine
    config targets
        edit "PC-52"
            config macs
                edit "02:00:00:00:00:52"
                next
            end
        next
    end
end
"#
    )
}

#[test]
fn round_trip_is_stable_over_a_realistic_configuration() {
    let text = realistic();
    let (c1, a) = parse(&text).unwrap();
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    for full in [false, true] {
        let s1 = show::show(&c1, V64, full, None);
        let (c2, a2) = parse_config(
            &Config::default(),
            &s1,
            "show.conf",
            V64,
            true,
            &mut ChaCha8Rng::seed_from_u64(9),
        )
        .unwrap();
        assert!(a2.warnings.is_empty());
        let s2 = show::show(&c2, V64, full, None);
        assert_eq!(s1, s2, "full={full}");
        assert!(c1 == c2, "configs differ after round trip, full={full}");
    }
    let s = show::show(&c1, V64, false, None);
    assert!(s.contains("    edit 1\n        set uuid "), "{s}");
    assert!(s.contains("        set srcintf \"port3\"\n"));
    assert!(s.contains("        set action accept\n"));
    assert!(s.contains("        set api-key ENC SH2"));
    assert!(!s.contains("secret-token"));
    let full = show::show(&c1, V64, true, None);
    assert!(full.contains("        set comments ''\n"));
    assert!(full.contains("        set logtraffic-start disable\n"));
}

#[test]
fn store_operations_validate_like_the_cli() {
    let store = ConfigStore::new(base(V64), V64, 1, "FGVM01TM00000001");
    let mut rx = store.subscribe();
    let o = Origin {
        user: "admin".into(),
        ui: "GUI(127.0.0.1)".into(),
    };
    let r0 = store.revision();
    let body = |s: &str| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(s).unwrap()
    };
    let k = store
        .create(
            "firewall address",
            &body(r#"{"name":"h1","subnet":"10.0.0.1 255.255.255.255"}"#),
            &o,
        )
        .unwrap()
        .key;
    assert_eq!(k, "h1");
    assert_ne!(store.revision(), r0);
    assert_eq!(rx.try_recv().unwrap().change.action, ChangeAction::Add);
    assert_eq!(
        store
            .create("firewall address", &body(r#"{"name":"h1"}"#), &o)
            .unwrap_err(),
        OpError::Duplicate
    );
    let pol = r#"{"srcintf":[{"name":"port3"}],"dstintf":[{"name":"port1"}],"srcaddr":[{"name":"h1"}],"dstaddr":[{"name":"all"}],"schedule":"always","service":[{"name":"ALL"}],"action":"accept"}"#;
    let id = store.create("firewall policy", &body(pol), &o).unwrap().key;
    assert_eq!(id, "1");
    let bad = r#"{"srcintf":[{"name":"port3"}],"dstintf":[{"name":"port1"}],"srcaddr":[{"name":"homeNetwork"}],"dstaddr":[{"name":"all"}],"schedule":"always","service":[{"name":"ALL"}]}"#;
    let e = store.create("firewall policy", &body(bad), &o).unwrap_err();
    assert_eq!(e.code(), Some(-651));
    assert!(e
        .cli_error()
        .unwrap()
        .starts_with("node_check_object fail! for name homeNetwork"));
    let e = store.delete("firewall address", "h1", &o).unwrap_err();
    assert_eq!(e.code(), Some(-23));
    assert_eq!(
        store
            .update("firewall address", Some("nope"), &body("{}"), &o)
            .unwrap_err(),
        OpError::NotFound
    );
    store
        .update(
            "firewall address",
            Some("h1"),
            &body(r#"{"comment":"x"}"#),
            &o,
        )
        .unwrap();
    let j = store
        .get_json("firewall address", Some("h1"), &JsonOpts::default())
        .unwrap();
    assert_eq!(j[0]["comment"], "x");
    assert_eq!(j[0]["subnet"], "10.0.0.1 255.255.255.255");
    store
        .update(
            "system global",
            None,
            &body(r#"{"hostname":"FGT-LAB"}"#),
            &o,
        )
        .unwrap();
    assert_eq!(store.hostname(), "FGT-LAB");
    assert_eq!(store.policies()[0].srcaddr, ["h1"]);
    store.delete("firewall policy", "1", &o).unwrap();
    store.delete("firewall address", "h1", &o).unwrap();
    assert!(!store.exists("firewall address", "h1"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The parser never panics, whatever the input.
    #[test]
    fn parser_never_panics(text in "\\PC{0,400}") {
        let _ = parse(&text);
    }

    /// Nor on inputs made of CLI words.
    #[test]
    fn parser_never_panics_on_cli_words(words in proptest::collection::vec(prop_oneof![
        Just("config"), Just("edit"), Just("set"), Just("unset"), Just("next"), Just("end"),
        Just("append"), Just("unselect"), Just("delete"), Just("move"), Just("rename"),
        Just("clone"), Just("purge"), Just("firewall"), Just("policy"), Just("address"),
        Just("0"), Just("1"), Just("\"all\""), Just("srcaddr"), Just("before"), Just("to"),
        Just("\n"), Just("ftgd-wf"), Just("filters"), Just("webfilter"), Just("profile"),
        Just("system"), Just("automation-stitch"), Just("action"), Just("'"), Just("\\"),
    ], 0..80)) {
        let _ = parse(&words.join(" "));
    }
}

#[test]
fn writes_that_change_nothing_keep_the_revision() {
    let store = ConfigStore::new(base(V64), V64, 1, "FGVM01TM00000001");
    let o = Origin::system();
    let a = store
        .apply_cli(
            "config firewall address\nedit h1\nset subnet 10.0.0.1/32\nnext\nend\nconfig firewall policy\nedit 1\nset srcintf port3\nset dstintf port1\nset srcaddr h1 all\nset dstaddr all\nset schedule always\nset service ALL\nnext\nedit 2\nset srcintf port3\nset dstintf port1\nset srcaddr all\nset dstaddr all\nset schedule always\nset service ALL\nnext\nend\n",
            "t",
            false,
            &o,
        )
        .unwrap();
    assert_eq!(a.changes.len(), 3);
    assert_ne!(a.old_revision, a.revision);
    let mut rx = store.subscribe();
    let r0 = store.revision();
    for text in [
        // Same values in other notations; defaults set explicitly; `edit` + `next` only.
        "config firewall address\nedit h1\nset subnet 10.0.0.1 255.255.255.255\nset color 0\nnext\nend",
        "config firewall policy\nedit 1\nset srcaddr all h1\nset action deny\nset status ENABLE\nnext\nedit 2\nnext\nend",
        // A move to where the entry already is; a purge of an empty table.
        "config firewall policy\nmove 1 before 2\nend",
        "config firewall policy\nmove 2 after 1\nend",
        "config user quarantine\nconfig targets\npurge\nend\nend",
        "config system global\nset hostname FGVM01TM00000001\nend",
    ] {
        let a = store.apply_cli(text, "t", false, &o).unwrap();
        assert!(a.changes.is_empty(), "{text}: {:?}", a.changes);
        assert_eq!(a.revision, r0);
    }
    assert!(rx.try_recv().is_err(), "nothing published");
    assert_eq!(store.revision(), r0);
    // A real change names only what changed.
    let a = store
        .apply_cli(
            "config firewall policy\nedit 1\nset srcaddr all h1\nset action accept\nnext\nend",
            "t",
            false,
            &o,
        )
        .unwrap();
    assert_eq!(a.changes.len(), 1);
    assert_eq!(a.changes[0].cfgattr, "action[deny->accept]");
    assert_eq!(a.changes[0].attrs, ["action"]);
    assert_eq!(
        store.policies()[0].srcaddr,
        ["h1", "all"],
        "the equivalent list kept its order"
    );
    let a = store
        .apply_cli(
            "config firewall policy\nmove 2 before 1\nend",
            "t",
            false,
            &o,
        )
        .unwrap();
    assert_eq!(a.changes[0].action, ChangeAction::Move);
    assert_eq!(a.changes[0].cfgattr, "before[1]");
}

// ------------------------------------------------------------------ REST no-change fast path

/// The realistic configuration, parsed once.
fn realistic_config() -> &'static Config {
    static CFG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CFG.get_or_init(|| parse(&realistic()).unwrap().0)
}

/// Two identical stores: one answers PUTs with the fast path, the other only through the
/// engine.
fn twin_stores() -> (ConfigStore, ConfigStore) {
    let mk = || ConfigStore::new(realistic_config().clone(), V64, 1, "FGVM01TM00000001");
    (mk(), mk())
}

/// Every (table, key) of the realistic configuration (`None` for single tables).
fn realistic_entries() -> Vec<(String, Option<String>)> {
    let cfg = realistic_config();
    let mut out = Vec::new();
    for (path, t) in &cfg.tables {
        let Some(ts) = Schema::get().table(path, V64) else {
            continue;
        };
        for e in t.entries() {
            out.push((path.clone(), (!ts.is_single()).then(|| e.key.clone())));
        }
    }
    out
}

/// The body a client re-sends: the entry as GET shows it.
fn get_body(
    store: &ConfigStore,
    path: &str,
    key: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let v = store.get_json(path, key, &JsonOpts::default()).unwrap();
    let v = if key.is_some() { v[0].clone() } else { v };
    v.as_object().unwrap().clone()
}

/// The fast path and the engine give the same answer and leave the same configuration.
fn assert_twins_agree(
    fast: &ConfigStore,
    engine: &ConfigStore,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<Written, OpError> {
    let o = Origin::system();
    let a = fast.update(path, key, body, &o);
    let b = engine.update_by_engine(path, key, body, &o);
    assert_eq!(a, b, "{path} {key:?} {body:?}");
    assert_eq!(fast.revision(), engine.revision());
    assert!(
        fast.snapshot() == engine.snapshot(),
        "{path} {key:?} {body:?}"
    );
    a
}

#[test]
fn rest_reput_of_every_entry_takes_the_fast_path_and_changes_nothing() {
    let (fast, engine) = twin_stores();
    let mut rx = fast.subscribe();
    let r0 = fast.revision();
    let mut fast_hits = 0;
    for (path, key) in realistic_entries() {
        let body = get_body(&fast, &path, key.as_deref());
        let ts = Schema::get().table(&path, V64).unwrap();
        let proven = fast.with(|c| {
            let empty = Entry::new("");
            let e = c
                .entry(&path, key.as_deref().unwrap_or(""))
                .unwrap_or(&empty);
            noop::body_unchanged(c, ts, e, &body, V64)
        });
        fast_hits += usize::from(proven);
        let w = assert_twins_agree(&fast, &engine, &path, key.as_deref(), &body).unwrap();
        assert!(!w.changed, "{path} {key:?}");
        if [
            "firewall policy",
            "firewall address",
            "system interface",
            "system global",
        ]
        .contains(&path.as_str())
        {
            assert!(
                proven,
                "{path} {key:?}: the GET body is proven unchanged: {body:?}"
            );
        }
    }
    assert!(fast_hits > 20, "{fast_hits}");
    assert_eq!(fast.revision(), r0);
    assert!(rx.try_recv().is_err(), "nothing published");
}

#[test]
fn rest_reput_in_other_notations_and_after_changes_elsewhere() {
    let (fast, engine) = twin_stores();
    let body = |s: &str| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(s).unwrap()
    };
    let o = Origin::system();
    let r0 = fast.revision();
    // Equivalent notations: a prefix length, another member order with a duplicate, option
    // words in another order and case, an enum in capitals, an integer sent as a string.
    for (path, key, b) in [
        (
            "firewall address",
            Some("10.115.2.52/32"),
            r#"{"subnet": "10.115.2.52/32"}"#,
        ),
        (
            "firewall addrgrp",
            Some("lab hosts"),
            r#"{"member": [{"name": "all"}, {"name": "10.115.2.52/32"}, {"name": "all"}]}"#,
        ),
        (
            "system interface",
            Some("port3"),
            r#"{"allowaccess": "ssh ping https https", "ip": "10.115.2.1/24"}"#,
        ),
        (
            "system global",
            None,
            r#"{"hostname": "FGT-LAB", "admintimeout": "30"}"#,
        ),
        (
            "log fortianalyzer setting",
            None,
            r#"{"status": "ENABLE", "server": "10.115.1.20"}"#,
        ),
    ] {
        let w = assert_twins_agree(&fast, &engine, path, key, &body(b)).unwrap();
        assert!(!w.changed, "{path}: {b}");
        assert_eq!(w.revision, r0);
    }
    // A change through the CLI (console, config script), then the old body again: a real
    // change, through the engine, logged with only what changed.
    let policy = get_body(&fast, "firewall policy", Some("1"));
    assert_eq!(policy["action"], "accept");
    for s in [&fast, &engine] {
        s.apply_cli(
            "config firewall policy\nedit 1\nset action deny\nnext\nend",
            "t",
            false,
            &o,
        )
        .unwrap();
    }
    let mut rx = fast.subscribe();
    let w = assert_twins_agree(&fast, &engine, "firewall policy", Some("1"), &policy).unwrap();
    assert!(w.changed);
    assert_ne!(w.revision, w.old_revision);
    assert_eq!(
        rx.try_recv().unwrap().change.cfgattr,
        "action[deny->accept]"
    );
    // Sent again it is no change; naming a missing object it is the same error in both.
    let w = assert_twins_agree(&fast, &engine, "firewall policy", Some("1"), &policy).unwrap();
    assert!(!w.changed);
    let mut gone = policy.clone();
    gone.insert(
        "srcaddr".into(),
        serde_json::json!([{"name": "no-such-address"}]),
    );
    let e = assert_twins_agree(&fast, &engine, "firewall policy", Some("1"), &gone).unwrap_err();
    assert_eq!(e.code(), Some(-651));
    // A rename in the body is never a no-change write.
    let mut renamed = get_body(&fast, "firewall address", Some("10.115.2.52/32"));
    renamed.insert("name".into(), "h52".into());
    assert!(
        assert_twins_agree(
            &fast,
            &engine,
            "firewall address",
            Some("10.115.2.52/32"),
            &renamed
        )
        .unwrap()
        .changed
    );
}

/// A JSON value turned into a neighbour: an equivalent notation, a real change, or a bad
/// value (`kind` picks which).
fn mutate(v: &serde_json::Value, kind: u8) -> serde_json::Value {
    use serde_json::{json, Value as J};
    match (v, kind) {
        (_, 0) => v.clone(),
        (_, 1) => J::Null,
        (_, 2) => json!(""),
        (_, 3) => json!(true),
        (J::String(s), 4) => J::from(s.to_ascii_uppercase()),
        (J::String(s), 5) => J::from(format!("{s}/32")),
        (J::String(s), 6) => J::from(format!(" {s} ")),
        (J::String(s), 7) => J::from(s.split_whitespace().rev().collect::<Vec<_>>().join(" ")),
        (J::String(_), 8) => json!("all"),
        (J::String(s), 9) => J::from(format!("{s}x")),
        (J::Number(n), 4) => J::from(n.as_i64().unwrap_or(0) + 1),
        (J::Number(n), 5) => J::from(n.to_string()),
        (J::Number(n), 6) => J::from(format!("0{n}")),
        (J::Number(_), 7) => json!(99_999_999_999i64),
        (J::Number(_), 8) => json!(-1),
        (J::Array(a), 4) => J::Array(a.iter().rev().cloned().collect()),
        (J::Array(a), 5) => J::Array(a.iter().chain(a.first()).cloned().collect()),
        (J::Array(_), 6) => json!([]),
        (J::Array(a), 7) => J::Array(
            a.iter()
                .map(|m| m.get("q_origin_key").cloned().unwrap_or(J::Null))
                .collect(),
        ),
        (J::Array(a), 8) => J::Array(a.iter().cloned().chain([json!({"name": "all"})]).collect()),
        (J::Array(a), 9) => J::Array(a.iter().cloned().chain([json!({"name": "nope"})]).collect()),
        (J::Array(_), 10) => json!("all"),
        (J::Object(_), 4) => json!({}),
        _ => v.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Whatever the body (an entry's GET form with up to four attributes mutated, unknown and
    /// meta attributes added), the fast path answers exactly as the engine does.
    #[test]
    fn rest_put_fast_path_agrees_with_the_engine(
        which in any::<prop::sample::Index>(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..12), 0..4),
        extra in 0u8..3,
        twice in any::<bool>(),
    ) {
        let entries = realistic_entries();
        let (path, key) = &entries[which.index(entries.len())];
        let (fast, engine) = twin_stores();
        let mut body = get_body(&fast, path, key.as_deref());
        let names: Vec<String> = body.keys().cloned().collect();
        for (i, kind) in muts {
            let k = &names[i.index(names.len())];
            if Some(k.as_str()) == Schema::get().table(path, V64).unwrap().mkey() {
                continue;
            }
            let v = mutate(&body[k], kind);
            body.insert(k.clone(), v);
        }
        match extra {
            1 => { body.insert("no-such-attribute".into(), serde_json::json!(1)); }
            2 => { body.insert("q_ref".into(), serde_json::json!(3)); }
            _ => {}
        }
        assert_twins_agree(&fast, &engine, path, key.as_deref(), &body).ok();
        if twice {
            // The same write again (after a change, mostly a no-change write).
            assert_twins_agree(&fast, &engine, path, key.as_deref(), &body).ok();
        }
    }
}
