//! The FortiOS REST API (reference §1, §2) and the lab surface (`/_lab/...`).
//!
//! - Authentication: api-user tokens (`Authorization: Bearer`, `?access_token=`) checked
//!   against `config system api-user` (hashed key, trusthosts); GUI sessions from
//!   `POST /logincheck` with `APSCOOKIE_*` and the quoted CSRF cookie (`ccsrftoken` on 6.4,
//!   `ccsrftoken_<port>_<id>` on 7.x) whose value must come back as `X-CSRFTOKEN` on writes.
//! - `/api/v2/cmdb/...` ([`cmdb`]), `/api/v2/monitor/...` ([`monitor`]),
//!   `/api/v2/log/memory/...`.
//! - Envelopes and errors as the real product (reference §1.3/§1.4).

pub mod cmdb;
pub mod config_script;
pub mod monitor;
pub mod query;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fortilab_core::http::ConnInfo;
use rand::Rng;
use serde_json::{json, Map, Value as J};

use crate::config::engine::secret_matches;
use crate::config::Origin;
use crate::device::Device;
use query::Query;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// A logged-in GUI/REST session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub peer: IpAddr,
}

/// Who a request is authenticated as.
#[derive(Debug, Clone)]
pub enum Principal {
    Token { user: String },
    Session { sid: String, session: Session },
}

impl Principal {
    pub fn user(&self) -> &str {
        match self {
            Principal::Token { user } => user,
            Principal::Session { session, .. } => &session.user,
        }
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Api {
    pub dev: Arc<Device>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    rng: Arc<Mutex<rand_chacha::ChaCha8Rng>>,
    /// The API port (7.x CSRF cookie name).
    port: u16,
    /// Rendered CMDB GET bodies by (revision, URL): repeated reads of an unchanged
    /// configuration skip the JSON rendering.
    get_cache: Arc<Mutex<HashMap<String, (String, bytes::Bytes)>>>,
}

impl Api {
    pub fn new(dev: Arc<Device>, port: u16) -> Self {
        let rng = fortilab_core::rng::stream(dev.seed, "fortigate/sessions");
        Self {
            dev,
            sessions: Arc::default(),
            rng: Arc::new(Mutex::new(rng)),
            port,
            get_cache: Arc::default(),
        }
    }

    fn token(&self, n: usize) -> String {
        let mut r = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        fortilab_core::rng::token(&mut *r, n)
    }

    /// `APSCOOKIE_<n>`: a per-device number (FortiOS derives it from the device).
    fn session_cookie_name(&self) -> String {
        let n = self
            .dev
            .serial
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32);
        format!("APSCOOKIE_{}", n % 4_000_000_000)
    }

    fn csrf_cookie_name(&self) -> String {
        if self.dev.version.major >= 7 {
            let n = self
                .dev
                .serial
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            format!("ccsrftoken_{}_{}", self.port, n % 10_000_000)
        } else {
            "ccsrftoken".into()
        }
    }
}

/// The router: vendor surface and lab surface.
pub fn router(api: Api) -> Router {
    let lab_events = Router::new()
        .route("/_lab/events", get(fortilab_core::events::sse_handler))
        .with_state(api.dev.events.clone());
    Router::new()
        .route("/_lab/health", get(lab_health))
        .route("/_lab/config", get(lab_config))
        .route(
            "/logincheck",
            axum::routing::post(logincheck).get(logincheck_get),
        )
        .route("/logout", get(logout).post(logout))
        .fallback(dispatch)
        .with_state(api)
        .merge(lab_events)
}

// ------------------------------------------------------------------------------------------
// Envelopes.

/// Builds FortiOS JSON envelopes.
pub struct Env<'a> {
    pub api: &'a Api,
    pub method: &'a Method,
    pub path: String,
    pub name: String,
    pub vdom: String,
}

impl Env<'_> {
    pub(crate) fn tail(&self, m: &mut Map<String, J>) {
        m.insert("serial".into(), J::from(self.api.dev.serial.clone()));
        m.insert(
            "version".into(),
            J::from(self.api.dev.version.rest_string()),
        );
        m.insert("build".into(), J::from(self.api.dev.version.build()));
    }

    /// A CMDB success envelope with `results`.
    pub fn cmdb_ok(&self, results: J, extra: &[(&str, J)]) -> Map<String, J> {
        let mut m = Map::new();
        m.insert("http_method".into(), J::from(self.method.as_str()));
        m.insert("revision".into(), J::from(self.api.dev.config.revision()));
        m.insert("results".into(), results);
        for (k, v) in extra {
            m.insert((*k).into(), v.clone());
        }
        m.insert("vdom".into(), J::from(self.vdom.clone()));
        m.insert("path".into(), J::from(self.path.clone()));
        m.insert("name".into(), J::from(self.name.clone()));
        m.insert("status".into(), J::from("success"));
        m.insert("http_status".into(), J::from(200));
        self.tail(&mut m);
        m
    }

    /// A CMDB write success (`POST`/`PUT`/`DELETE`): `revision_changed` says whether the
    /// write changed anything (a write of what the table already holds does not).
    pub fn write_ok(&self, w: &crate::config::Written, mkey: Option<J>) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), J::from(self.method.as_str()));
        m.insert("revision".into(), J::from(w.revision.clone()));
        m.insert("revision_changed".into(), J::from(w.changed));
        m.insert("old_revision".into(), J::from(w.old_revision.clone()));
        if let Some(k) = mkey {
            m.insert("mkey".into(), k);
        }
        m.insert("status".into(), J::from("success"));
        m.insert("http_status".into(), J::from(200));
        m.insert("vdom".into(), J::from(self.vdom.clone()));
        m.insert("path".into(), J::from(self.path.clone()));
        m.insert("name".into(), J::from(self.name.clone()));
        self.tail(&mut m);
        json_response(StatusCode::OK, J::Object(m))
    }

    /// An error envelope: HTTP `status`, optional FortiOS `error` code and `cli_error`.
    pub fn error(
        &self,
        status: u16,
        code: Option<i32>,
        cli_error: Option<&str>,
        mkey: Option<J>,
    ) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), J::from(self.method.as_str()));
        m.insert("revision".into(), J::from(self.api.dev.config.revision()));
        if let Some(c) = cli_error {
            m.insert("cli_error".into(), J::from(c));
        }
        if let Some(c) = code {
            m.insert("error".into(), J::from(c));
        }
        m.insert("status".into(), J::from("error"));
        m.insert("http_status".into(), J::from(status));
        m.insert("vdom".into(), J::from(self.vdom.clone()));
        m.insert("path".into(), J::from(self.path.clone()));
        m.insert("name".into(), J::from(self.name.clone()));
        if let Some(k) = mkey {
            m.insert("mkey".into(), k);
        }
        self.tail(&mut m);
        json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            J::Object(m),
        )
    }

    /// A monitor success envelope (no `revision`; `http_status` only on actions).
    pub fn monitor_ok(&self, results: Option<J>, action: Option<&str>) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), J::from(self.method.as_str()));
        if let Some(r) = results {
            m.insert("results".into(), r);
        }
        m.insert("vdom".into(), J::from(self.vdom.clone()));
        m.insert("path".into(), J::from(self.path.clone()));
        m.insert("name".into(), J::from(self.name.clone()));
        if let Some(a) = action {
            m.insert("action".into(), J::from(a));
        }
        m.insert("status".into(), J::from("success"));
        if *self.method != Method::GET {
            m.insert("http_status".into(), J::from(200));
        }
        self.tail(&mut m);
        json_response(StatusCode::OK, J::Object(m))
    }
}

pub fn json_response(status: StatusCode, v: J) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A bare status envelope (401, 404 on unknown URLs) for requests outside any table.
fn bare_error(api: &Api, method: &Method, status: u16) -> Response {
    let m = json!({
        "http_method": method.as_str(),
        "status": "error",
        "http_status": status,
        "serial": api.dev.serial,
        "version": api.dev.version.rest_string(),
        "build": api.dev.version.build(),
    });
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        m,
    )
}

// ------------------------------------------------------------------------------------------
// Authentication.

fn peer_of(req_ext: Option<&ConnInfo>) -> IpAddr {
    req_ext
        .map(|c| c.peer.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn in_trusthost(ipmask: &str, ip: IpAddr) -> bool {
    let mut it = ipmask.split_whitespace();
    let (Some(a), Some(m)) = (it.next(), it.next()) else {
        return true;
    };
    let (Ok(a), Ok(m), IpAddr::V4(ip)) = (a.parse::<Ipv4Addr>(), m.parse::<Ipv4Addr>(), ip) else {
        return false;
    };
    let (a, m, ip) = (u32::from(a), u32::from(m), u32::from(ip));
    a & m == ip & m
}

impl Api {
    /// A cached CMDB GET body for `url` at `revision`.
    pub(crate) fn cached(&self, url: &str, revision: &str) -> Option<bytes::Bytes> {
        let c = self.get_cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(url)
            .filter(|(rev, _)| rev == revision)
            .map(|(_, b)| b.clone())
    }

    pub(crate) fn cache(&self, url: &str, revision: &str, body: bytes::Bytes) {
        let mut c = self.get_cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= 512 {
            c.clear();
        }
        c.insert(url.to_string(), (revision.to_string(), body));
    }

    /// The api-user owning `token`, if the peer is within its trusthosts.
    fn check_token(&self, token: &str, peer: IpAddr) -> Option<String> {
        let lab_peer = self.dev.lab_map.lab_of_real(peer).unwrap_or(peer);
        self.dev.config.with(|c| {
            let t = c.table("system api-user")?;
            t.entries().iter().find_map(|e| {
                let key = e.scalar("api-key")?;
                if !secret_matches(key, token) {
                    return None;
                }
                if let Some(th) = e.table("trusthost") {
                    let ok = th.entries().iter().any(|h| {
                        let m = h.scalar("ipv4-trusthost").unwrap_or("0.0.0.0 0.0.0.0");
                        in_trusthost(m, peer) || in_trusthost(m, lab_peer)
                    });
                    if !th.is_empty() && !ok {
                        return None;
                    }
                }
                Some(e.key.clone())
            })
        })
    }

    fn authenticate(&self, headers: &HeaderMap, q: &Query, peer: IpAddr) -> Option<Principal> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|s| s.trim().to_string());
        if let Some(tok) = bearer.or_else(|| q.get("access_token").map(String::from)) {
            return self
                .check_token(&tok, peer)
                .map(|user| Principal::Token { user });
        }
        let name = self.session_cookie_name();
        let sid = cookies(headers)
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)?;
        let s = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sid)
            .cloned()?;
        Some(Principal::Session { sid, session: s })
    }

    fn origin(&self, p: &Principal, peer: IpAddr) -> Origin {
        let lab = self.dev.lab_map.lab_of_real(peer).unwrap_or(peer);
        Origin {
            user: p.user().to_string(),
            ui: format!("GUI({lab})"),
        }
    }

    /// Checks an admin's password (`config system admin`).
    fn check_admin(&self, user: &str, password: &str) -> Option<String> {
        self.dev.config.with(|c| {
            let e = c.entry("system admin", user)?;
            let stored = e.scalar("password").unwrap_or("");
            let ok = if stored.is_empty() {
                password.is_empty()
            } else {
                secret_matches(stored, password)
            };
            ok.then(|| e.scalar("accprofile").unwrap_or("super_admin").to_string())
        })
    }
}

// ------------------------------------------------------------------------------------------
// Login / logout.

async fn logincheck_get() -> Response {
    // Ansible probes `GET /logincheck` and ignores the answer.
    (StatusCode::OK, "").into_response()
}

async fn logincheck(State(api): State<Api>, req: Request) -> Response {
    let peer = peer_of(req.extensions().get::<ConnInfo>());
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "").into_response(),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let user = form.get("username").cloned().unwrap_or_default();
    let pass = form.get("secretkey").cloned().unwrap_or_default();
    let lab_peer = api.dev.lab_map.lab_of_real(peer).unwrap_or(peer);
    let dst = api.dev.lab_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let ui = format!("https({lab_peer})");
    match api.check_admin(&user, &pass) {
        Some(profile) => {
            let sid = api.token(40);
            let csrf = api.token(30);
            api.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    sid.clone(),
                    Session {
                        user: user.clone(),
                        csrf: csrf.clone(),
                        peer,
                    },
                );
            api.dev
                .logs
                .event_system("0100032001", "information", "Admin login successful", |r| {
                    r.str("sn", api.dev.clock.now_secs().to_string())
                        .str("user", user.clone())
                        .str("ui", ui.clone())
                        .str("method", "https")
                        .ip("srcip", lab_peer)
                        .ip("dstip", dst)
                        .str("action", "login")
                        .str("status", "success")
                        .str("reason", "none")
                        .str("profile", profile.clone())
                        .str(
                            "msg",
                            format!("Administrator {user} logged in successfully from {ui}"),
                        );
                });
            api.dev.events.emit(
                "admin.login",
                json!({"user": user, "ui": ui, "status": "success"}),
            );
            let mut r = (StatusCode::OK, "1document.location=\"/ng/\";\n").into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            let c1 = format!(
                "{}={sid}; path=/; secure; httponly; SameSite=Strict",
                api.session_cookie_name()
            );
            let c2 = format!("{}=\"{csrf}\"; path=/; secure", api.csrf_cookie_name());
            for c in [c1, c2] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            r
        }
        None => {
            api.dev.logs.event_system("0100032002", "alert", "Admin login failed", |r| {
                r.str("sn", "0")
                    .str("user", user.clone())
                    .str("ui", ui.clone())
                    .str("method", "https")
                    .ip("srcip", lab_peer)
                    .ip("dstip", dst)
                    .str("action", "login")
                    .str("status", "failed")
                    .str("reason", if api.dev.config.exists("system admin", &user) { "passwd_invalid" } else { "name_invalid" })
                    .str("msg", format!("Administrator {user} login failed from {ui} because of invalid password"));
            });
            api.dev.events.emit(
                "admin.login",
                json!({"user": user, "ui": ui, "status": "failed"}),
            );
            let mut r = (
                StatusCode::OK,
                "0document.location=\"/login?redir=%2Fng\";\n",
            )
                .into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
    }
}

async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    let name = api.session_cookie_name();
    if let Some((_, sid)) = cookies(&headers).into_iter().find(|(k, _)| *k == name) {
        let removed = api
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sid);
        if let Some(s) = removed {
            api.dev.logs.event_system(
                "0100032003",
                "information",
                "Admin logout successful",
                |r| {
                    r.str("user", s.user.clone())
                        .str("ui", format!("https({})", s.peer))
                        .str("action", "logout")
                        .str("status", "success")
                        .str(
                            "msg",
                            format!("Administrator {} logged out from https({})", s.user, s.peer),
                        );
                },
            );
        }
    }
    let mut r = (
        StatusCode::OK,
        "<html><body><script>document.location=\"/login\";</script></body></html>",
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    for c in [
        format!("{name}=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        format!(
            "{}=\"0%260\"; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT",
            api.csrf_cookie_name()
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

// ------------------------------------------------------------------------------------------
// Lab surface.

/// `GET /_lab/health`: identity, configuration revision and the Security Fabric links the
/// configuration asks for (`links.fortianalyzer` null when log upload is off; one `links.ems`
/// row per EMS connector), so an orchestrator can wait until the fabric is up.
async fn lab_health(State(api): State<Api>) -> Response {
    let (faz_on, ems) = api.dev.config.with(|c| {
        (
            crate::forward::FazSettings::from_config(c).is_some(),
            crate::automation::ems::configured(c, api.dev.version),
        )
    });
    let fabric = api.dev.fabric();
    let faz = faz_on.then(|| {
        let st = fabric.faz();
        json!({"connected": st.connected, "registration": st.registration})
    });
    let ems: Vec<J> = ems
        .iter()
        .map(|e| {
            let st = fabric.ems(&e.name);
            json!({"name": e.name, "connected": st.connected, "status": st.status})
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({"ok": true, "device": api.dev.hostname(), "serial": api.dev.serial,
               "version": api.dev.version.to_string(), "revision": api.dev.config.revision(),
               "links": {"fortianalyzer": faz, "ems": ems}}),
    )
}

async fn lab_config(State(api): State<Api>, uri: axum::http::Uri) -> Response {
    let q = Query::parse(uri.query());
    let text = api.dev.config.show(q.flag("full"), "admin");
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

// ------------------------------------------------------------------------------------------
// Dispatch of /api/v2/...

/// A decoded API request.
pub struct Req {
    /// Path and query as received (cache key).
    pub raw: String,
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub peer: IpAddr,
    pub principal: Principal,
}

impl Req {
    /// The body as a JSON object (an empty body is `{}`).
    pub fn json_object(&self) -> Result<Map<String, J>, String> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<J>(&self.body) {
            Ok(J::Object(m)) => Ok(m),
            Ok(_) => Err("the body must be a JSON object".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn dispatch(State(api): State<Api>, req: Request) -> Response {
    let method = req.method().clone();
    let peer = peer_of(req.extensions().get::<ConnInfo>());
    let uri = req.uri().clone();
    let raw_path = uri.path().to_string();
    let Some(rest) = raw_path.strip_prefix("/api/v2/") else {
        return not_found_plain();
    };
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let mut segments = segments;
    while segments.last().is_some_and(|s| s.is_empty()) && segments.len() > 1 {
        segments.pop();
    }
    let query = Query::parse(uri.query());
    let headers = req.headers().clone();
    let Some(principal) = api.authenticate(&headers, &query, peer) else {
        if segments.first().map(String::as_str) == Some("authentication") {
            // 6.4–7.2 have no /api/v2/authentication (7.4+); clients fall back to /logincheck.
            return bare_error(&api, &method, 404);
        }
        return bare_error(&api, &method, 401);
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            // Read (and drop) what the client sends so it sees the 413 rather than a reset.
            let _ = axum::body::to_bytes(req.into_body(), 16 * MAX_BODY).await;
            return bare_error(&api, &method, 413);
        }
    }
    if method != Method::GET && method != Method::HEAD {
        if let Principal::Session { session, .. } = &principal {
            let sent = headers
                .get("x-csrftoken")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim_matches('"'));
            if sent != Some(session.csrf.as_str()) {
                return bare_error(&api, &method, 403);
            }
        }
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return bare_error(&api, &method, 413),
    };
    let r = Req {
        raw: uri.to_string(),
        method,
        segments,
        query,
        headers,
        body,
        peer,
        principal,
    };
    if r.segments.first().map(String::as_str) == Some("monitor")
        && config_script::matches(&r.segments)
    {
        return config_script::handle(&api, r).await;
    }
    match r.segments.first().map(String::as_str) {
        Some("cmdb") => cmdb::handle(&api, r),
        Some("monitor") => monitor::handle(&api, r),
        Some("log") => monitor::handle_log(&api, r),
        Some("authentication") => bare_error(&api, &r.method, 404),
        _ => bare_error(&api, &r.method, 404),
    }
}

fn not_found_plain() -> Response {
    let mut r = (
        StatusCode::NOT_FOUND,
        "<html><body><h1>404 Not Found</h1></body></html>",
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// A fresh random-looking id (used for the log API session ids).
pub fn session_id(api: &Api) -> u32 {
    let mut r = api.rng.lock().unwrap_or_else(|p| p.into_inner());
    r.gen_range(1..u32::MAX)
}
