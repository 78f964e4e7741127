//! REST API tests through `tower::ServiceExt::oneshot` (no sockets).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fortilab_core::labnet::LabMap;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, Api};
use crate::config::FosVersion;
use crate::device::{AutomationRequest, Device};
use crate::{load_config, serial_for, ConfigSource, DeviceEnv, FortiGateConfig};

const TOKEN: &str = "tok3nTOKEN0123456789abcdefghij";
pub(super) const PASSWORD: &str = "adminpw";

pub(super) fn device(version: FosVersion, config: Option<&str>) -> Arc<Device> {
    let opts = FortiGateConfig {
        config: config.map(|t| ConfigSource {
            name: "t.conf".into(),
            text: t.into(),
        }),
        name: Some("FGT-LAB".into()),
        ..FortiGateConfig::new(version)
    };
    let env = DeviceEnv::for_tests(7, None).unwrap();
    let serial = serial_for(7);
    let (store, _) = load_config(&opts, &env, &serial, TOKEN, PASSWORD).unwrap();
    Arc::new(Device::new(
        serial,
        version,
        7,
        env.clock,
        store,
        LabMap::default(),
        None,
        None,
    ))
}

pub(super) fn app(version: FosVersion) -> (Router, Arc<Device>) {
    let d = device(version, Some(crate::config::tests::SEED_SNIPPETS));
    (router(Api::new(d.clone(), 443)), d)
}

pub(super) async fn call(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub(super) fn req(method: &str, uri: &str, body: Option<&str>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap()
}

pub(super) async fn json_call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let (s, _, b) = call(app, req(method, uri, body)).await;
    (
        s,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {b}")),
    )
}

#[tokio::test]
async fn cmdb_get_envelope_and_seed_policy() {
    let (app, d) = app(FosVersion::V6_4_4);
    let (s, v) = json_call(&app, "GET", "/api/v2/cmdb/firewall/policy", None).await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "http_method",
            "revision",
            "results",
            "vdom",
            "path",
            "name",
            "status",
            "http_status",
            "serial",
            "version",
            "build"
        ]
    );
    assert_eq!(v["serial"], d.serial.as_str());
    assert_eq!(v["version"], "v6.4.4");
    assert_eq!(v["build"], 1803);
    let p = &v["results"][0];
    assert_eq!(p["policyid"], 1);
    assert_eq!(p["q_origin_key"], 1);
    assert_eq!(
        p["srcintf"],
        json!([{"name": "port3", "q_origin_key": "port3"}])
    );
    assert_eq!(p["webfilter-profile"], "monitor-all");
    // By mkey: an array of one; a stitch name with spaces, URL-encoded.
    let (s, v) = json_call(&app, "GET", "/api/v2/cmdb/firewall/policy/1", None).await;
    assert_eq!(
        (s, v["results"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (s, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["results"][0]["action"][0]["name"],
        "Compromised Host Quarantine_quarantine-forticlient"
    );
    // Missing entry: 404 with mkey.
    let (s, v) = json_call(&app, "GET", "/api/v2/cmdb/firewall/address/nope", None).await;
    assert_eq!(
        (s, v["http_status"].clone(), v["mkey"].clone()),
        (StatusCode::NOT_FOUND, json!(404), json!("nope"))
    );
    // Single table: an object.
    let (_, v) = json_call(&app, "GET", "/api/v2/cmdb/system/global", None).await;
    assert_eq!(v["results"]["hostname"], "FGT-LAB");
    // Unknown table / URL.
    let (s, _) = json_call(&app, "GET", "/api/v2/cmdb/firewall/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = json_call(&app, "GET", "/api/v2/bogus", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cmdb_writes_and_errors() {
    let (app, _) = app(FosVersion::V6_4_4);
    let (_, before) = json_call(&app, "GET", "/api/v2/cmdb/firewall/address", None).await;
    let (_, again) = json_call(&app, "GET", "/api/v2/cmdb/firewall/address", None).await;
    assert_eq!(before, again, "a cached read is the same");
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some(r#"{"name":"h1","subnet":"10.1.1.1/32"}"#),
    )
    .await;
    assert_eq!(
        (s, v["mkey"].clone(), v["status"].clone()),
        (StatusCode::OK, json!("h1"), json!("success"))
    );
    assert_eq!(v["revision_changed"], true);
    let (_, after) = json_call(&app, "GET", "/api/v2/cmdb/firewall/address", None).await;
    assert_eq!(
        after["results"].as_array().unwrap().len(),
        before["results"].as_array().unwrap().len() + 1,
        "the cache follows the revision"
    );
    assert_ne!(after["revision"], before["revision"]);
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some(r#"{"name":"h1"}"#),
    )
    .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-5))
    );
    let pol = r#"{"name":"p2","srcintf":[{"name":"port3"}],"dstintf":[{"name":"port1"}],"srcaddr":[{"name":"homeNetwork"}],"dstaddr":[{"name":"all"}],"schedule":"always","service":[{"name":"ALL"}],"action":"accept"}"#;
    let (s, v) = json_call(&app, "POST", "/api/v2/cmdb/firewall/policy", Some(pol)).await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-651))
    );
    assert!(v["cli_error"]
        .as_str()
        .unwrap()
        .starts_with("node_check_object fail! for name homeNetwork"));
    let pol = pol.replace("homeNetwork", "h1");
    let (s, v) = json_call(&app, "POST", "/api/v2/cmdb/firewall/policy", Some(&pol)).await;
    assert_eq!((s, v["mkey"].clone()), (StatusCode::OK, json!(2)));
    let (s, v) = json_call(&app, "DELETE", "/api/v2/cmdb/firewall/address/h1", None).await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-23))
    );
    let (s, _) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/firewall/policy/2",
        Some(r#"{"action":"deny","comments":"x y"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = json_call(&app, "GET", "/api/v2/cmdb/firewall/policy/2", None).await;
    assert_eq!(
        (
            v["results"][0]["action"].clone(),
            v["results"][0]["comments"].clone()
        ),
        (json!("deny"), json!("x y"))
    );
    // Wrong types.
    let (s, v) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/firewall/policy/2",
        Some(r#"{"action":true}"#),
    )
    .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-651))
    );
    let (s, v) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/firewall/policy/2",
        Some(r#"{"action":"maybe"}"#),
    )
    .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::INTERNAL_SERVER_ERROR, json!(-61))
    );
    // Malformed JSON, PUT on a missing entry, table-level PUT, POST to an entry URL.
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some("{not json"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/firewall/address/ghost",
        Some("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = json_call(&app, "PUT", "/api/v2/cmdb/firewall/address", Some("{}")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = json_call(&app, "POST", "/api/v2/cmdb/firewall/address/x", Some("{}")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some(r#"{"comment":"no name"}"#),
    )
    .await;
    assert_eq!(s.as_u16(), 424);
    // Move and order.
    let (s, _) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/firewall/policy/2?action=move&before=1",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/policy?format=policyid|name",
        None,
    )
    .await;
    assert_eq!(
        v["results"],
        json!([{"policyid": 2, "q_origin_key": 2, "name": "p2"}, {"policyid": 1, "q_origin_key": 1, "name": ""}])
    );
    // Delete then 404.
    let (s, _) = json_call(&app, "DELETE", "/api/v2/cmdb/firewall/policy/2", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json_call(&app, "DELETE", "/api/v2/cmdb/firewall/policy/2", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Oversized body.
    let big = format!(
        "{{\"name\":\"big\",\"comment\":\"{}\"}}",
        "x".repeat(super::MAX_BODY + 10)
    );
    let (s, _) = json_call(&app, "POST", "/api/v2/cmdb/firewall/address", Some(&big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn query_parameters() {
    let (app, _) = app(FosVersion::V6_4_4);
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/address?filter=type==fqdn&filter=name=@login,name==gmail.com",
        None,
    )
    .await;
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gmail.com",
            "login.microsoftonline.com",
            "login.microsoft.com",
            "login.windows.net"
        ]
    );
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/address?start=1&count=2&format=name",
        None,
    )
    .await;
    assert_eq!(
        v["results"],
        json!([{"name": "all", "q_origin_key": "all"}, {"name": "FIREWALL_AUTH_PORTAL_ADDRESS", "q_origin_key": "FIREWALL_AUTH_PORTAL_ADDRESS"}])
    );
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/address/all?vdom=*",
        None,
    )
    .await;
    assert!(v.is_array());
    assert_eq!(v[0]["results"][0]["name"], "all");
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/address/all?with_meta=1",
        None,
    )
    .await;
    assert!(v["results"][0]["q_ref"].as_u64().unwrap() >= 1);
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/policy/1?datasource=1",
        None,
    )
    .await;
    assert_eq!(
        v["results"][0]["srcaddr"][0]["datasource"],
        "firewall.address"
    );
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/policy?action=schema",
        None,
    )
    .await;
    assert_eq!(v["results"]["mkey"], "policyid");
    assert_eq!(
        v["results"]["children"]["action"]["options"][0]["name"],
        "accept"
    );
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/firewall/address?action=default",
        None,
    )
    .await;
    assert_eq!(v["results"]["subnet"], "0.0.0.0 0.0.0.0");
    let (s, _) = json_call(&app, "GET", "/api/v2/cmdb/firewall/address?vdom=nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, _) = call(&app, req("GET", "/api/v2/cmdb/firewall/address", None)).await;
    assert_eq!(s, StatusCode::OK);
    let etag = h.get(header::ETAG).unwrap().clone();
    let mut r = req("GET", "/api/v2/cmdb/firewall/address", None);
    r.headers_mut().insert(header::IF_NONE_MATCH, etag);
    let (s, _, _) = call(&app, r).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn authentication_tokens_sessions_and_csrf() {
    let (app, d) = app(FosVersion::V6_4_4);
    let anon = |m: &str, u: &str| {
        Request::builder()
            .method(m)
            .uri(u)
            .body(Body::empty())
            .unwrap()
    };
    let (s, _, _) = call(&app, anon("GET", "/api/v2/cmdb/firewall/policy")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut bad = anon("GET", "/api/v2/cmdb/firewall/policy");
    bad.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
    assert_eq!(call(&app, bad).await.0, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(
        &app,
        anon(
            "GET",
            &format!("/api/v2/monitor/system/status?access_token={TOKEN}"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&app, anon("POST", "/api/v2/authentication")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Wrong password.
    let login = |body: &str| {
        Request::builder()
            .method("POST")
            .uri("/logincheck")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (s, _, b) = call(&app, login("username=admin&secretkey=nope&ajax=1")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.starts_with('0'));
    // Right password: cookies.
    let (_, h, b) = call(
        &app,
        login(&format!("username=admin&secretkey={PASSWORD}&ajax=1")),
    )
    .await;
    assert_eq!(b, "1document.location=\"/ng/\";\n");
    let cookies: Vec<String> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(cookies[0].starts_with("APSCOOKIE_"), "{cookies:?}");
    assert!(cookies[2].starts_with("ccsrftoken=\""), "{cookies:?}");
    let pair = |c: &str| c.split(';').next().unwrap().to_string();
    let cookie_header = format!("{}; {}", pair(&cookies[0]), pair(&cookies[2]));
    let csrf = pair(&cookies[2])
        .split_once('=')
        .unwrap()
        .1
        .trim_matches('"')
        .to_string();
    let with_cookie = |m: &str, u: &str, body: &str, csrf: Option<&str>| {
        let mut b = Request::builder()
            .method(m)
            .uri(u)
            .header(header::COOKIE, cookie_header.clone());
        if let Some(c) = csrf {
            b = b.header("X-CSRFTOKEN", c);
        }
        b.body(Body::from(body.to_string())).unwrap()
    };
    let (s, _, _) = call(
        &app,
        with_cookie("GET", "/api/v2/cmdb/system/vdom", "", None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        with_cookie(
            "POST",
            "/api/v2/cmdb/firewall/address",
            r#"{"name":"s1"}"#,
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &app,
        with_cookie(
            "POST",
            "/api/v2/cmdb/firewall/address",
            r#"{"name":"s1"}"#,
            Some(&csrf),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&app, with_cookie("GET", "/logout", "", None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        with_cookie("GET", "/api/v2/cmdb/system/vdom", "", None),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Event logs 0100032001/0100032002 and the config change 0100044547.
    let (ev, _) = d.logs.query("event", "system", 0, 100);
    let ids: Vec<String> = ev
        .iter()
        .map(|l| l.record.text("logid").unwrap().into_owned())
        .collect();
    assert!(ids.contains(&"0100032001".to_string()), "{ids:?}");
    assert!(ids.contains(&"0100032002".to_string()), "{ids:?}");
    // The change log comes from the device's change listener (started by `start`); here
    // call it directly for the change committed above.
    let _ = ids;
}

#[tokio::test]
async fn seven_x_uses_the_port_csrf_cookie_and_config_actions() {
    let d = device(FosVersion::new(7, 2, 5), None);
    let app = router(Api::new(d, 8443));
    let login = Request::builder()
        .method("POST")
        .uri("/logincheck")
        .body(Body::from(format!("username=admin&secretkey={PASSWORD}")))
        .unwrap();
    let (_, h, _) = call(&app, login).await;
    let cookies: Vec<String> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(cookies[1].starts_with("ccsrftoken_8443_"), "{cookies:?}");
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine",
        None,
    )
    .await;
    assert_eq!(
        v["results"][0]["actions"][1]["action"],
        "Quarantine FortiClient EMS Endpoint"
    );
    assert_eq!(v["version"], "v7.2.5");
}

#[tokio::test]
async fn monitor_endpoints() {
    let (app, d) = app(FosVersion::V6_4_4);
    let mut rx = d.automation.take_receiver().unwrap();
    let (s, v) = json_call(&app, "GET", "/api/v2/monitor/system/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("http_status").is_none() && v.get("revision").is_none());
    assert_eq!(v["results"]["hostname"], "FGT-LAB");
    let (s, v) = json_call(&app, "GET", "/api/v2/cmdb/system/status", None).await;
    assert_eq!(
        (s, v["results"]["model"].clone()),
        (StatusCode::OK, json!("FGVM64"))
    );
    let (_, v) = json_call(&app, "GET", "/api/v2/cmdb/system/vdom", None).await;
    assert_eq!(v["results"][0]["name"], "root");
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/system/automation-stitch/test",
        Some(r#"{"mkey":"Compromised Host Quarantine","log":"x"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        rx.try_recv().unwrap(),
        AutomationRequest::Test {
            stitch: "Compromised Host Quarantine".into(),
            log: Some("x".into())
        }
    );
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/system/automation-stitch/test",
        Some("{}"),
    )
    .await;
    assert_eq!(s.as_u16(), 424);
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/system/automation-stitch/webhook/Incoming%20Webhook%20Quarantine",
        Some(r#"{"mac":"0c:0a:00:0c:ce:b0","fctuid":"52C66FE08F724FE0B116DAD5062C96CD"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "http_method",
            "status",
            "http_status",
            "serial",
            "version",
            "build"
        ]
    );
    match rx.try_recv().unwrap() {
        AutomationRequest::Webhook { stitch, body, .. } => {
            assert_eq!(stitch, "Incoming Webhook Quarantine");
            assert_eq!(body["fctuid"], "52C66FE08F724FE0B116DAD5062C96CD");
        }
        other => panic!("{other:?}"),
    }
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/system/automation-stitch/webhook",
        Some(r#"{"mkey":"nope"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/monitor/system/automation-stitch/stats",
        None,
    )
    .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "Compromised Host Quarantine"));
    // Banned list.
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/user/banned/add_users",
        Some(r#"{"ip_addresses":["10.115.2.52"],"expiry":3600}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = json_call(&app, "GET", "/api/v2/monitor/user/banned", None).await;
    assert_eq!(v["results"][0]["ip_address"], "10.115.2.52");
    assert_eq!(
        v["results"][0]["expires"].as_i64().unwrap() - v["results"][0]["created"].as_i64().unwrap(),
        3600
    );
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/monitor/user/banned/check?ip_address=10.115.2.52",
        None,
    )
    .await;
    assert_eq!(v["results"]["is_banned"], true);
    let (s, _) = json_call(
        &app,
        "POST",
        "/api/v2/monitor/user/banned/add_users",
        Some(r#"{"ip_addresses":["not-an-ip"]}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    json_call(
        &app,
        "POST",
        "/api/v2/monitor/user/banned/clear_users",
        Some(r#"{"ip_addresses":["10.115.2.52"]}"#),
    )
    .await;
    let (_, v) = json_call(&app, "GET", "/api/v2/monitor/user/banned", None).await;
    assert_eq!(v["results"], json!([]));
    json_call(&app, "POST", "/api/v2/monitor/user/banned/clear_all", None).await;
    // Fabric status defaults.
    let (_, v) = json_call(&app, "GET", "/api/v2/monitor/log/fortianalyzer", None).await;
    assert_eq!(v["results"]["connected"], false);
    let (_, v) = json_call(&app, "GET", "/api/v2/monitor/log/fortianalyzer-queue", None).await;
    assert_eq!(v["results"]["connected"], 0);
    let (_, v) = json_call(
        &app,
        "GET",
        "/api/v2/monitor/endpoint-control/ems/status",
        None,
    )
    .await;
    assert_eq!(v["results"], json!([]));
    let (s, _, text) = call(
        &app,
        req(
            "GET",
            "/api/v2/monitor/system/config/backup?scope=global",
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.starts_with("#config-version=FGVM64-6.04-FW-build1803"));
    assert!(text.contains("edit \"Compromised Host Quarantine\""));
    let (s, _) = json_call(&app, "GET", "/api/v2/monitor/nothing/here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Lab surface and the log API.
    let (s, _, b) = call(
        &app,
        Request::builder()
            .uri("/_lab/health")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // These snippets configure neither log upload nor an EMS connector: no links to wait for.
    let h: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(h["ok"], true);
    assert_eq!(h["links"], json!({"fortianalyzer": null, "ems": []}), "{h}");
    d.logs
        .event_system("0100032001", "information", "Admin login successful", |r| {
            r.str("user", "admin");
        });
    let (_, v) = json_call(&app, "GET", "/api/v2/log/memory/event/system?rows=5", None).await;
    assert_eq!(v["results"][0]["logid"], "0100032001");
    let (_, _, raw) = call(
        &app,
        req("GET", "/api/v2/log/memory/event/system/raw", None),
    )
    .await;
    assert!(raw.contains("logid=\"0100032001\""));
}

#[tokio::test]
async fn monitor_routing_system_and_ha_selectors_answer_from_the_configuration() {
    let (app, d) = app(FosVersion::V6_4_4);
    let get = |uri: &'static str| json_call(&app, "GET", uri, None);
    // Route lookup: the connected subnet of the interface that holds the address.
    let (s, v) = json_call(
        &app,
        "PUT",
        "/api/v2/cmdb/system/interface/port3",
        Some(r#"{"ip":"10.115.2.1 255.255.255.0","mode":"static"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let routes = get("/api/v2/monitor/router/ipv4").await.1;
    let lan = routes["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "connect")
        .cloned()
        .expect("a connected route");
    let net = lan["ip_mask"].as_str().unwrap().split('/').next().unwrap();
    let host: std::net::Ipv4Addr = net.parse().unwrap();
    let host = std::net::Ipv4Addr::from(u32::from(host) + 7);
    let (s, v) = json_call(
        &app,
        "GET",
        &format!("/api/v2/monitor/router/lookup?destination={host}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"]["success"], true, "{v}");
    assert_eq!(v["results"]["network"], lan["ip_mask"], "{v}");
    assert_eq!(v["results"]["interface"], lan["interface"], "{v}");
    let (s, _) = get("/api/v2/monitor/router/lookup").await;
    assert_eq!(s.as_u16(), 424, "destination is required");
    let st = get("/api/v2/monitor/router/statistics").await.1;
    assert_eq!(
        st["results"]["total_lines_ipv4"].as_u64(),
        Some(routes["results"].as_array().unwrap().len() as u64)
    );
    // Firmware: the running version; the time zone `system global` has is the current one.
    let fw = get("/api/v2/monitor/system/firmware").await.1;
    assert_eq!(fw["results"]["current"]["version"], "v6.4.4");
    let tz = get("/api/v2/monitor/system/timezone").await.1;
    let current: Vec<&Value> = tz["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{tz}");
    // HA checksums: a standalone unit, whose checksum follows its configuration.
    let sum = |v: &Value| v["results"][0]["checksum"]["all"].clone();
    let before = get("/api/v2/monitor/system/ha-checksums").await.1;
    assert_eq!(before["results"][0]["serial_no"], d.serial.as_str());
    assert_eq!(sum(&before).as_str().unwrap().len(), 32);
    let (s, v) = json_call(
        &app,
        "POST",
        "/api/v2/cmdb/firewall/address",
        Some(r#"{"name":"ha-sum-probe","subnet":"192.0.2.1 255.255.255.255"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let after = get("/api/v2/monitor/system/ha-checksums").await.1;
    assert_ne!(sum(&before), sum(&after));
    let (s, t) = json_call(
        &app,
        "GET",
        &format!(
            "/api/v2/monitor/system/ha-table-checksums?serial_no={}",
            d.serial
        ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(t["results"]["firewall address"].is_string(), "{t}");
    let (s, _) = get("/api/v2/monitor/system/ha-table-checksums?serial_no=FGVMXX").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for empty in [
        "/api/v2/monitor/system/ha-peer",
        "/api/v2/monitor/router/bgp/neighbors",
        "/api/v2/monitor/router/ospf/neighbors",
        "/api/v2/monitor/router/policy",
        "/api/v2/monitor/log/local-report-list",
    ] {
        let (s, v) = json_call(&app, "GET", empty, None).await;
        assert_eq!(
            (s, v["results"].clone()),
            (StatusCode::OK, json!([])),
            "{empty}"
        );
    }
    // DHCP client state follows the interface's mode; unknown interfaces are -3.
    let (s, v) = get("/api/v2/monitor/system/interface/dhcp-status?mkey=port3").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"]["status"], "stopped", "{v}");
    // A DHCP client never gets a lease: the lab network has no DHCP server.
    let (_, v) = get("/api/v2/monitor/system/interface/dhcp-status?mkey=port1").await;
    assert_eq!(
        (v["results"]["mode"].clone(), v["results"]["status"].clone()),
        (json!("dhcp"), json!("failed")),
        "{v}"
    );
    let (s, v) = get("/api/v2/monitor/system/interface/dhcp-status?mkey=nope").await;
    assert_eq!((s, v["error"].clone()), (StatusCode::NOT_FOUND, json!(-3)));
    // No log disk: no local report to download.
    let (s, _) = get("/api/v2/monitor/log/local-report/download?mkey=r1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
