//! No input panics EMS: telemetry frames (registration and keep-alive fields, host names with
//! control characters and markup) and REST query strings and bodies, signed in as the admin.
//! Inputs mix each format's words with `HOSTILE_PIECES`. REST answers must be the EMS envelope
//! (JSON with `result.retval`), never a 500 from a panic. Bounded: a few seconds in debug.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::proto::{self, Frame};
use crate::{telemetry, Shared};
use axum::body::Body;
use axum::http::{header, Request};
use fortilab_core::http::ConnInfo;
use fortilab_core::text::HOSTILE_PIECES;
use proptest::prelude::*;
use tower::ServiceExt;

struct Env {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    app: axum::Router,
    cookie: String,
    csrf: String,
    _dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (shared, app) = rt.block_on(async {
            let ca = std::sync::Arc::new(fortilab_core::LabCa::generate("t").unwrap());
            let cfg = crate::EmsConfig::for_tests();
        let env = fortilab_core::DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path()));
            let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let telemetry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let running = crate::start(cfg, env, crate::Listeners { api, telemetry },
                tokio_util::sync::CancellationToken::new(),
            )
            .await
            .unwrap();
            let shared = running.shared.clone();
            std::mem::forget(running);
            let app = crate::api::router(shared.clone());
            (shared, app)
        });
        let body = serde_json::json!({"name": shared.cfg.admin_user, "password": shared.cfg.admin_password}).to_string();
        let req = Request::post("/api/v1/auth/signin")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = rt.block_on(app.clone().oneshot(with_conn(req))).unwrap();
        let mut cookie = Vec::new();
        let mut csrf = String::new();
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let kv = v.to_str().unwrap().split(';').next().unwrap().to_string();
            if let Some(t) = kv.strip_prefix("csrftoken=") {
                csrf = t.to_string();
            }
            cookie.push(kv);
        }
        assert!(!csrf.is_empty(), "signed in");
        Env {
            rt,
            shared,
            app,
            cookie: cookie.join("; "),
            csrf,
            _dir: dir,
        }
    })
}

fn with_conn(mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut().insert(ConnInfo {
        peer: "127.0.0.1:50000".parse().unwrap(),
        client_cn: None,
        tls: true,
    });
    req
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

fn percent(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn call(method: &str, uri: &str, body: Option<String>) -> (u16, String) {
    let e = env();
    let Ok(req) = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, &e.cookie)
        .header("X-CSRFToken", &e.csrf)
        .header(header::REFERER, "https://127.0.0.1/")
        .header(header::HOST, "127.0.0.1")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
    else {
        return (400, String::new());
    };
    e.rt.block_on(async {
        let resp = e.app.clone().oneshot(with_conn(req)).await.unwrap();
        let status = resp.status().as_u16();
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&b).into_owned())
    })
}

fn telemetry_reply(frame: &Frame) -> Frame {
    let e = env();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    e.rt.block_on(telemetry::handle(&e.shared, frame, peer))
}

const FRAME_WORDS: &[&str] = &[
    "MSG_HEADER: ",
    "FCTUID=",
    "IP=",
    "MAC=",
    "EC_QUARANTINED=",
    "SIZE=",
    "\r\n",
    "\r\n\r\n",
    "|",
    "=",
    "REGISTER",
    "KEEPALIVE",
    "SYSINFO",
    "HOSTNAME",
    "0",
    "1",
    "A1B2C3",
    "10.115.2.52",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn telemetry_frames_are_answered(
        verb in proptest::sample::select(&["REGISTER", "KEEPALIVE", "PROBE", "SYSINFO", "LOGOUT", "€", ""][..]),
        uid in mixed(&["A1B2C3D4", "0", "F"], 4),
        ip in mixed(&["10.115.2.52", ".", "300", ":"], 4),
        mac in mixed(&["02-50-56-11-22-33", "-", ":", "ZZ"], 4),
        host in mixed(&["PC-52", "<b>", "\x1b[31m", "\n", "&amp;"], 6),
        ka in mixed(&["0", "1", "-1", "99999999999999999999"], 2),
        raw in mixed(FRAME_WORDS, 16),
    ) {
        let mut f = Frame::new("FCTUID", &uid, verb, "SYSINFO")
            .head("IP", &ip)
            .head("MAC", &mac)
            .head("EC_QUARANTINED", &ka)
            .head("KA_INTERVAL", &ka);
        f.put("HOSTNAME", &host).put("USER", &host).put("OS", &host);
        let reply = telemetry_reply(&f);
        prop_assert!(!reply.verb.is_empty());
        if let Ok(Some((g, _))) = proto::parse_frame(raw.as_bytes()) {
            let _ = telemetry_reply(&g);
        }
    }

    #[test]
    fn rest_queries_and_bodies_get_the_envelope(
        path in proptest::sample::select(&[
            "/api/v1/endpoints/index", "/api/v1/endpoints/device/1/details", "/api/v1/endpoints/€/get",
            "/api/v1/clients/quarantine", "/api/v1/clients/unquarantine", "/api/v1/client_certificates/index",
            "/api/v1/client_certificates/1/set", "/api/v1/devices/delete", "/api/v1/system/consts/get",
            "/api/v1/fabric/quarantine",
        ][..]),
        method in proptest::sample::select(&["GET", "POST", "PUT"][..]),
        params in proptest::collection::vec(
            (proptest::sample::select(&["name", "host", "ip_addr", "offset", "count", "ids", "ids[]", "sort", "filter", "€"][..]),
             mixed(&["1", "-1", "PC", ",", "[", "]", "99999999999999999999"], 5)),
            0..4,
        ),
        body in prop_oneof![
            mixed(&["{", "}", "\"ids\":", "\"addresses\":", "[", "]", ",", "\"ip\":", "1", "null", "\"€\"", "ids=", "&", "ids[]="], 14),
            Just(String::new()),
        ],
    ) {
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", percent(k), percent(v))).collect();
        let (status, resp) = call(method, &format!("{path}?{}", q.join("&")), Some(body));
        prop_assert!(status != 500, "{status} {resp}");
        if resp.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&resp).expect("JSON");
            prop_assert!(v.get("result").is_some(), "{resp}");
        }
    }
}
