//! No input panics the FortiGate: the console (TAB completion, `?` help, command lines), the
//! configuration lexer and parser, REST query strings (`filter`, `sort`, `format`, `start`,
//! `count`, …) and REST bodies. Inputs mix each format's words with `HOSTILE_PIECES`
//! (multi-byte characters next to every delimiter). A REST answer must be a well-formed
//! FortiOS JSON error or result (never a 500 from a panic). Bounded: a few seconds in debug.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use crate::api::query::{parse_cond, Filter};
use crate::api::{router, Api};
use crate::config::FosVersion;
use crate::console::FgtConsole;
use crate::device::Device;
use crate::{load_config, serial_for, ConfigSource, DeviceEnv, FortiGateConfig};
use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use fortilab_core::labnet::LabMap;
use fortilab_core::text::HOSTILE_PIECES;
use proptest::prelude::*;
use tower::ServiceExt;

const TOKEN: &str = "tok3nTOKEN0123456789abcdefghij";

fn device() -> Arc<Device> {
    let opts = FortiGateConfig {
        config: Some(ConfigSource {
            name: "t.conf".into(),
            text: "config firewall address\nedit \"PC-52\"\nset subnet 10.115.2.52 255.255.255.255\nnext\nend\n".into(),
        }),
        name: Some("FGT-LAB".into()),
        ..FortiGateConfig::new(FosVersion::V6_4_4)
    };
    let env = DeviceEnv::for_tests(7, None).unwrap();
    let serial = serial_for(7);
    let (store, _) = load_config(&opts, &env, &serial, TOKEN, "adminpw").unwrap();
    Arc::new(Device::new(
        serial,
        FosVersion::V6_4_4,
        7,
        env.clock,
        store,
        LabMap::default(),
        None,
        None,
    ))
}

struct Env {
    rt: tokio::runtime::Runtime,
    app: Router,
    console: FgtConsole,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dev = rt.block_on(async { device() });
        let app = router(Api::new(dev.clone(), 443));
        Env {
            rt,
            app,
            console: FgtConsole::new(dev, None),
        }
    })
}

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

const CLI_WORDS: &[&str] = &[
    "config ",
    "edit ",
    "set ",
    "unset ",
    "next",
    "end",
    "show ",
    "get ",
    "diagnose ",
    "execute ",
    "firewall ",
    "policy ",
    "address ",
    "system ",
    "global ",
    "log ",
    "\"",
    "'",
    " ",
    "\t",
    "\\",
    "1",
    "name ",
    "|",
    "grep ",
    "?",
    "abort",
    "purge",
    "append ",
    "select ",
    "comments ",
];

const QUERY_KEYS: &[&str] = &[
    "filter",
    "sort",
    "format",
    "start",
    "count",
    "skip",
    "with_meta",
    "datasource",
    "vdom",
    "global",
    "action",
    "key",
    "pattern",
    "exclude-default-values",
    "primary_keys",
    "scope",
];

fn percent(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A FortiOS answer: JSON with the `http_status` FortiOS reports (FortiOS itself answers a
/// CLI error such as -56 with HTTP 500, so the status alone says nothing; a handler panic
/// would fail the test before any answer).
fn assert_fortios_answer(status: u16, body: &str) -> Result<(), TestCaseError> {
    if body.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        if let Some(h) = v.get("http_status") {
            prop_assert_eq!(h.as_u64(), Some(u64::from(status)), "{}", body);
        }
    } else {
        prop_assert!(status != 500, "500 without a FortiOS body: {body}");
    }
    Ok(())
}

fn call(method: &str, uri: &str, body: Option<String>) -> (u16, String) {
    let e = env();
    let mut b = Request::builder()
        .method(method)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    b = b.uri(uri);
    let req = match b.body(body.map(Body::from).unwrap_or_else(Body::empty)) {
        Ok(r) => r,
        Err(_) => return (400, String::new()),
    };
    e.rt.block_on(async {
        let resp = e.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn console_completion_help_and_lines(line in mixed(CLI_WORDS, 10)) {
        let e = env();
        let mut s = e.console.session("admin", "ssh", IpAddr::V4(Ipv4Addr::LOCALHOST));
        let _ = s.complete_line(&line);
        let _ = s.help_text(&line);
        // Run read-only lines only: a random `purge` must not empty the shared device.
        if !line.contains("purge") && !line.contains("execute") && !line.contains("delete") {
            let _ = e.rt.block_on(s.run_line(&line));
        }
    }

    #[test]
    fn config_lexer(text in mixed(CLI_WORDS, 30)) {
        let _ = crate::config::lexer::lex(&text);
    }

    #[test]
    fn filter_conditions(c in mixed(&["name", "==", "!=", "=@", "!@", "<", "<=", ">", ">=", ",", "policyid", "1"], 8)) {
        let _ = parse_cond(&c);
        let _ = Filter::parse(c.split('&'));
    }

    #[test]
    fn rest_query_strings(
        path in proptest::sample::select(&[
            "/api/v2/cmdb/firewall/address", "/api/v2/cmdb/firewall/policy",
            "/api/v2/cmdb/firewall/address/PC-52", "/api/v2/cmdb/system/global",
            "/api/v2/monitor/system/status", "/api/v2/monitor/log/memory",
            "/api/v2/log/memory/event/system", "/api/v2/monitor/user/banned",
            "/api/v2/cmdb/system/automation-stitch", "/api/v2/monitor/system/interface",
        ][..]),
        params in proptest::collection::vec(
            (proptest::sample::select(QUERY_KEYS), mixed(&["name", "==", "=@", ",", "policyid", "1", "dsc", "|", "-1"], 6)),
            0..4,
        ),
        raw in mixed(&["&", "=", "%", "+"], 6),
    ) {
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", percent(v))).collect();
        let uri = format!("{path}?{}&{}", q.join("&"), percent(&raw));
        let (status, body) = call("GET", &uri, None);
        assert_fortios_answer(status, &body)?;
    }

    #[test]
    fn rest_bodies(
        path in proptest::sample::select(&[
            "/api/v2/cmdb/firewall/address", "/api/v2/cmdb/firewall/address/PC-52",
            "/api/v2/cmdb/firewall/policy", "/api/v2/cmdb/system/global",
            "/api/v2/monitor/user/banned/add_users", "/api/v2/monitor/system/config-script/upload",
        ][..]),
        method in proptest::sample::select(&["POST", "PUT"][..]),
        body in prop_oneof![
            mixed(&["{", "}", "\"name\":", "\"subnet\":", "\"ip_addresses\":", "[", "]", ",", "\"", "null", "1", "true", "\"€\""], 16),
            Just("{\"name\": \"x€\", \"subnet\": \"10.0.0.1 255.255.255.255\"}".to_string()),
            Just("{\"name\": \"€\\\"x\\\"\\t\", \"comment\": \"\\u0000\"}".to_string()),
        ],
    ) {
        let (status, resp) = call(method, &format!("{path}?vdom=root"), Some(body));
        assert_fortios_answer(status, &resp)?;
    }
}

/// The inputs of issue 15, exactly.
#[test]
fn issue_15_regressions() {
    let e = env();
    let s = e
        .console
        .session("admin", "ssh", IpAddr::V4(Ipv4Addr::LOCALHOST));
    for line in [
        "€\"x\"",
        "€\"x\" ",
        "set €\"x\"",
        "config firewall address\nedit €\"x\"",
        "é'y'",
    ] {
        let _ = s.complete_line(line);
        let _ = s.help_text(line);
    }
    for q in [
        "filter=€",
        "filter=%E2%82%AC",
        "filter=name%3D%3D€",
        "filter=x€=",
        "sort=€",
        "filter=€%3D%3D",
        "format=€|name",
    ] {
        let (status, body) = call("GET", &format!("/api/v2/cmdb/firewall/address?{q}"), None);
        assert!(
            status == 200 || status == 400 || status == 424,
            "{q}: {status} {body}"
        );
    }
    assert_eq!(parse_cond("€"), None);
    assert_eq!(parse_cond("n€==€").map(|c| c.value), Some("€".to_string()));
}
