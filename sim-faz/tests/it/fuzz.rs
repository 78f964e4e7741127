//! Property-based fuzzing of the log-line path (syslog header → FortiOS parser → typed row →
//! IOC check → store) and of the JSON-RPC dispatcher: no input panics, every answer is a
//! well-formed envelope.

use std::sync::{Arc, OnceLock};

use fortilab_core::binary::Timing;
use fortilab_core::LabClock;
use fortilab_faz::faz::{Faz, Identity};
use fortilab_faz::ioc::{IocSettings, Tidb};
use fortilab_faz::jsonrpc::{self, ApiState, Caller};
use fortilab_faz::store::{parse_row, Store};
use proptest::prelude::*;
use serde_json::{json, Value};

fn faz() -> &'static (Arc<Faz>, ApiState) {
    static F: OnceLock<(Arc<Faz>, ApiState)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let store = Store::open(dir.path()).unwrap();
        let id = Identity {
            hostname: "FAZ-LAB".into(),
            serial: "FAZ-VMTM00000001".into(),
            version: "6.4.5".into(),
            platform: "FortiAnalyzer-VM64".into(),
            admin_user: "admin".into(),
            admin_password: "pw".into(),
            api_key: "key".into(),
            lab_ip: "10.115.1.20".into(),
            session_timeout: 300,
            max_sessions: 8,
            retention_days: 0,
            max_size_mb: 0,
        };
        let f = Faz::new(
            id,
            LabClock::real(),
            Timing::Fast,
            store,
            Tidb::default_lab(),
            IocSettings::default(),
            true,
            1,
        )
        .unwrap();
        (f, ApiState::default())
    })
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}=[0-9.]{0,15}",
        "[a-z_]{1,8}=\"[^\"]{0,20}\"",
        "[a-z_]{1,8}=\"[^\"]{0,20}",
        Just("srcip=10.115.2.52".to_string()),
        Just("hostname=\"www.eicar.org\"".to_string()),
        Just("url=\"/download/eicar.com\"".to_string()),
        Just("type=\"utm\" subtype=\"webfilter\"".to_string()),
        Just("type=\"traffic\" dstip=195.22.28.198".to_string()),
        Just("eventtime=99999999999999999999".to_string()),
        Just("date=2021-13-45 time=99:99:99 tz=\"+9999\"".to_string()),
        "\\PC{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn log_line_path_never_panics(parts in proptest::collection::vec(fragment(), 0..12), pri in "(<[0-9]{1,4}>)?(1 [^ ]{0,5} [^ ]{0,5} - - - )?") {
        let line = format!("{pri}{}", parts.join(" "));
        if let Some(body) = fortilab_faz::syslog::body_of(&line) {
            let (row, _) = parse_row(body, false, 0, 0);
            let _ = Tidb::default_lab().check(&row.ioc_view());
        }
        let (row, _) = parse_row(&line, true, 0, 0);
        let _ = Tidb::default_lab().check(&row.ioc_view());
        let (f, _) = faz();
        // Every line is stored (unparsable ones as `unknown`), never an error.
        prop_assert!(f.ingest("FGVM01TMFUZZ0001", false, 0, vec![line.clone()]).is_ok());
    }

    #[test]
    fn filter_parser_never_panics(s in "\\PC{0,60}") {
        if let Ok(Some(e)) = fortilab_faz::filter::parse(&s) {
            let _ = fortilab_faz::filter::to_sql(&e, false, 0);
        }
    }

    #[test]
    fn dispatcher_answers_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (f, api) = faz();
        let v = jsonrpc::handle(f, api, &body, &Caller { token: Some("key".into()), peer: String::new() });
        prop_assert!(v.get("result").is_some() || v.get("error").is_some(), "{}", v);
    }

    #[test]
    fn dispatcher_answers_arbitrary_requests(
        method in prop_oneof![Just("get".to_string()), Just("set".to_string()), Just("add".to_string()), Just("update".to_string()), Just("delete".to_string()), Just("exec".to_string()), "[a-z]{0,6}"],
        segs in proptest::collection::vec(prop_oneof![
            Just("sys"), Just("status"), Just("cli"), Just("global"), Just("system"), Just("dvmdb"), Just("adom"),
            Just("root"), Just("device"), Just("logview"), Just("logsearch"), Just("ioc"), Just("events"), Just("ack"),
            Just("eventmgmt"), Just("alerts"), Just("rescan"), Just("run"), Just("task"), Just("1"), Just("count"),
            Just("compromised-hosts"), Just("log"), Just("dvm"), Just("cmd"), Just("add"), Just("x")], 0..7),
        v2 in any::<bool>(),
        filter in "\\PC{0,20}",
        limit in prop_oneof![Just(json!(10)), Just(json!(-5)), Just(json!("abc")), Just(json!(null)), Just(json!(1e18))],
        data in prop_oneof![Just(json!(null)), Just(json!({})), Just(json!([1,2])), Just(json!({"events": [{}]})),
            Just(json!({"events": "x"})), Just(json!({"device": {"sn": "../../x"}})), Just(json!({"jsonapi-log": 7})),
            Just(json!({"alertid": [1, "2"]})), Just(json!({"time-range": {"start": "garbage"}}))],
    ) {
        let (f, api) = faz();
        let mut p = json!({"url": format!("/{}", segs.join("/")), "filter": filter, "limit": limit, "data": data.clone(), "logtype": "traffic"});
        if let (Some(o), Value::Object(d)) = (p.as_object_mut(), &data) {
            for (k, v) in d { o.insert(k.clone(), v.clone()); }
        }
        let mut req = json!({"id": 1, "method": method, "params": [p]});
        if v2 { req["jsonrpc"] = json!("2.0"); }
        let v = jsonrpc::handle(f, api, req.to_string().as_bytes(), &Caller { token: Some("key".into()), peer: String::new() });
        prop_assert!(v.get("result").is_some() || v.get("error").is_some(), "{}", v);
    }
}

// ---- Hostile input (issue 15): multi-byte characters next to every delimiter. ----

use fortilab_core::text::HOSTILE_PIECES;

fn mixed(words: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(words).prop_map(str::to_string),
            3 => proptest::sample::select(HOSTILE_PIECES).prop_map(str::to_string),
            1 => "\\PC{0,4}",
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

const SYSLOG_WORDS: &[&str] = &[
    "<189>",
    "<13>",
    "<",
    ">",
    "1 ",
    "Mar  4 10:11:22 ",
    "Mar",
    " 4",
    "10:11:22",
    " ",
    "-",
    "[",
    "]",
    "ex@1 a=\"x]y\"",
    "fgt-lab ",
    "fortigate: ",
    "devid=\"FGVM01\" ",
    "devname=FGT ",
    "type=\"traffic\" ",
    "tz=\"",
    "tz=",
    "+0100",
    "date=2021-03-04 ",
    "time=10:00:00 ",
    "\"",
];

const CONSOLE_WORDS: &[&str] = &[
    "config ",
    "system ",
    "global ",
    "set ",
    "get ",
    "show ",
    "end",
    "next",
    "edit ",
    "diagnose ",
    "execute ",
    "\"",
    "'",
    "\\",
    " ",
    "\t",
    "timezone ",
    "hostname ",
    "admin ",
    "user ",
    "?",
];

fn console_cli() -> &'static std::sync::Mutex<fortilab_faz::console::engine::Cli> {
    static C: OnceLock<std::sync::Mutex<fortilab_faz::console::engine::Cli>> = OnceLock::new();
    C.get_or_init(|| {
        let (f, _) = faz();
        std::sync::Mutex::new(fortilab_faz::console::engine::Cli::new(
            f.clone(),
            "admin",
            "ssh(127.0.0.1)",
        ))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

    #[test]
    fn syslog_headers_and_rows_never_panic(msg in mixed(SYSLOG_WORDS, 16)) {
        if let Some(body) = fortilab_faz::syslog::body_of(&msg) {
            let (row, _) = parse_row(body, false, 0, 0);
            let _ = Tidb::default_lab().check(&row.ioc_view());
        }
        let _ = parse_row(&msg, false, 0, 0);
    }

    #[test]
    fn console_tokens_help_and_completion_never_panic(line in mixed(CONSOLE_WORDS, 10)) {
        let _ = fortilab_faz::console::engine::tokenize(&line);
        let cli = console_cli().lock().unwrap();
        let _ = cli.help(&line);
        let _ = cli.complete(&line);
    }

    #[test]
    fn config_files_and_time_zones_never_panic(
        text in mixed(&["[api]\n", "[store]\n", "[tidb]\n", "hostname = ", "\"", "=", "\n", "[", "]", "session_timeout = ", "1", "-1", "99999999999999999999", "{", "}"], 16),
        code in mixed(&["0", "4", "80", " "], 4),
    ) {
        let _ = fortilab_faz::config::parse(&text);
        let _ = fortilab_faz::tz::by_code(&code);
        let _ = fortilab_faz::tz::display(&code);
        let _ = fortilab_faz::filter::parse(&text);
    }
}

/// The inputs of issue 15, exactly: an RFC 3164 header with a multi-byte character around byte
/// 16 (it took the UDP listener down) and a `tz` value with one (it panicked the row parser).
#[test]
fn issue_15_regressions() {
    for msg in [
        "<13>Mar  4 10:11:2€ host tag: devid=FGT1 type=traffic",
        "<13>Mar  4 10:11:22€host tag: devid=FGT1",
        "<13>Mar  4 10:11:€",
        "Mar  4 10:11:2€",
        "<13>Mar €",
    ] {
        let _ = fortilab_faz::syslog::body_of(msg);
    }
    let (row, ok) = parse_row(
        "date=2021-03-04 time=10:00:00 tz=\"x€\" devid=\"FGT1\" type=\"traffic\"",
        false,
        7,
        0,
    );
    assert!(ok);
    assert!(row.etime != 0);
    for tz in ["€", "+€", "-x€", "+00€", "€€"] {
        let _ = parse_row(
            &format!("date=2021-03-04 time=10:00:00 tz=\"{tz}\""),
            false,
            7,
            0,
        );
    }
    let cli = console_cli().lock().unwrap();
    for line in [
        "€\"x\"",
        "get\u{3000}sys",
        "config\u{3000}",
        "€\"x\"\t",
        "\"",
        "'a",
    ] {
        let _ = cli.help(line);
        let _ = cli.complete(line);
    }
}
