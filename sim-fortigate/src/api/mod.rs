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
pub mod mon_fabric;
pub mod mon_more;
pub mod mon_system;
pub mod monitor;
pub mod query;
pub mod session;
#[cfg(test)]
mod session_tests;
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
use fortilab_core::EventKind;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::config::engine::secret_matches;
use crate::config::Origin;
use crate::device::Device;
use query::Query;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

pub use session::Session;

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
    sessions: Arc<session::Sessions>,
    /// Cookie names (per device; the 7.x CSRF cookie carries the API port).
    cookies: Arc<session::CookieNames>,
    /// Rendered CMDB GET bodies by (revision, URL): repeated reads of an unchanged
    /// configuration skip the JSON rendering.
    get_cache: Arc<Mutex<HashMap<String, (String, bytes::Bytes)>>>,
    /// The running modules the monitor API reads (set by `start`; unset in unit tests).
    parts: Arc<std::sync::OnceLock<Parts>>,
    /// Service time of the vendor API (`/_lab/health` `api`).
    pub timing: Arc<ApiTiming>,
}

/// How much time the vendor API spent answering: requests served and the time from a
/// request's arrival at the router to its response (head and body produced). A client's
/// run (an Ansible playbook) reads it before and after to know the FortiGate's share of its
/// wall time. `/_lab/` requests are not counted.
#[derive(Debug, Default)]
pub struct ApiTiming {
    pub requests: std::sync::atomic::AtomicU64,
    pub busy_ns: std::sync::atomic::AtomicU64,
}

async fn timed(
    State(t): State<Arc<ApiTiming>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if fortilab_core::http::is_lab_path(req.uri().path()) {
        return next.run(req).await;
    }
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    let ns = t0.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    t.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    t.busy_ns
        .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    resp
}

/// The running modules behind the monitor API: the data plane (interface counters,
/// sessions, FortiGuard ratings) and the log forwarder (FortiAnalyzer connection).
#[derive(Clone)]
pub struct Parts {
    pub dataplane: Arc<crate::dataplane::DataPlane>,
    pub forwarder: Arc<crate::forward::Forwarder>,
    /// The automation engine (compromised hosts, stitch runs, config scripts' `diagnose`).
    pub automation: Arc<crate::automation::Engine>,
}

impl Api {
    pub fn new(dev: Arc<Device>, port: u16) -> Self {
        let cookies = session::CookieNames::new(&dev.serial, dev.version.major as u32, port);
        Self {
            dev,
            sessions: Arc::default(),
            cookies: Arc::new(cookies),
            get_cache: Arc::default(),
            parts: Arc::default(),
            timing: Arc::default(),
        }
    }

    /// Gives the monitor API the running data plane and log forwarder.
    pub fn attach(&self, parts: Parts) {
        let _ = self.parts.set(parts);
    }

    pub fn parts(&self) -> Option<&Parts> {
        self.parts.get()
    }

    /// The automation engine, once attached.
    pub fn automation_engine(&self) -> Option<Arc<crate::automation::Engine>> {
        self.parts.get().map(|p| p.automation.clone())
    }

    /// The session settings of the running configuration.
    fn policy(&self) -> session::Policy {
        self.dev.config.with(session::Policy::from_config)
    }

    /// The GUI/REST sessions (`monitor/system/current-admins`).
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.list()
    }
}

/// The router: vendor surface and lab surface.
pub fn router(api: Api) -> Router {
    let lab_events = Router::new()
        .route("/_lab/events", get(fortilab_core::events::sse_handler))
        .with_state(api.dev.events.clone());
    let timing = api.timing.clone();
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
        .layer(axum::middleware::from_fn_with_state(timing, timed))
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
    pub(crate) fn tail(&self, m: &mut Map<String, Value>) {
        m.insert("serial".into(), Value::from(self.api.dev.serial.clone()));
        m.insert(
            "version".into(),
            Value::from(self.api.dev.version.rest_string()),
        );
        m.insert("build".into(), Value::from(self.api.dev.version.build()));
    }

    /// A CMDB success envelope with `results`.
    pub fn cmdb_ok(&self, results: Value, extra: &[(&str, Value)]) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("http_method".into(), Value::from(self.method.as_str()));
        m.insert(
            "revision".into(),
            Value::from(self.api.dev.config.revision()),
        );
        m.insert("results".into(), results);
        for (k, v) in extra {
            m.insert((*k).into(), v.clone());
        }
        m.insert("vdom".into(), Value::from(self.vdom.clone()));
        m.insert("path".into(), Value::from(self.path.clone()));
        m.insert("name".into(), Value::from(self.name.clone()));
        m.insert("status".into(), Value::from("success"));
        m.insert("http_status".into(), Value::from(200));
        self.tail(&mut m);
        m
    }

    /// A CMDB write success (`POST`/`PUT`/`DELETE`): `revision_changed` says whether the
    /// write changed anything (a write of what the table already holds does not).
    pub fn write_ok(&self, w: &crate::config::Written, mkey: Option<Value>) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), Value::from(self.method.as_str()));
        m.insert("revision".into(), Value::from(w.revision.clone()));
        m.insert("revision_changed".into(), Value::from(w.changed));
        m.insert("old_revision".into(), Value::from(w.old_revision.clone()));
        if let Some(k) = mkey {
            m.insert("mkey".into(), k);
        }
        m.insert("status".into(), Value::from("success"));
        m.insert("http_status".into(), Value::from(200));
        m.insert("vdom".into(), Value::from(self.vdom.clone()));
        m.insert("path".into(), Value::from(self.path.clone()));
        m.insert("name".into(), Value::from(self.name.clone()));
        self.tail(&mut m);
        json_response(StatusCode::OK, Value::Object(m))
    }

    /// An error envelope: HTTP `status`, optional FortiOS `error` code and `cli_error`.
    pub fn error(
        &self,
        status: u16,
        code: Option<i32>,
        cli_error: Option<&str>,
        mkey: Option<Value>,
    ) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), Value::from(self.method.as_str()));
        m.insert(
            "revision".into(),
            Value::from(self.api.dev.config.revision()),
        );
        if let Some(c) = cli_error {
            m.insert("cli_error".into(), Value::from(c));
        }
        if let Some(c) = code {
            m.insert("error".into(), Value::from(c));
        }
        m.insert("status".into(), Value::from("error"));
        m.insert("http_status".into(), Value::from(status));
        m.insert("vdom".into(), Value::from(self.vdom.clone()));
        m.insert("path".into(), Value::from(self.path.clone()));
        m.insert("name".into(), Value::from(self.name.clone()));
        if let Some(k) = mkey {
            m.insert("mkey".into(), k);
        }
        self.tail(&mut m);
        json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Value::Object(m),
        )
    }

    /// A monitor success envelope (no `revision`; `http_status` only on actions).
    pub fn monitor_ok(&self, results: Option<Value>, action: Option<&str>) -> Response {
        let mut m = Map::new();
        m.insert("http_method".into(), Value::from(self.method.as_str()));
        if let Some(r) = results {
            m.insert("results".into(), r);
        }
        m.insert("vdom".into(), Value::from(self.vdom.clone()));
        m.insert("path".into(), Value::from(self.path.clone()));
        m.insert("name".into(), Value::from(self.name.clone()));
        if let Some(a) = action {
            m.insert("action".into(), Value::from(a));
        }
        m.insert("status".into(), Value::from("success"));
        if *self.method != Method::GET {
            m.insert("http_status".into(), Value::from(200));
        }
        self.tail(&mut m);
        json_response(StatusCode::OK, Value::Object(m))
    }
}

pub fn json_response(status: StatusCode, v: Value) -> Response {
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
        self.dev.config.with(|config| {
            let t = config.table("system api-user")?;
            t.entries().iter().find_map(|entry| {
                let key = entry.scalar("api-key")?;
                if !secret_matches(key, token) {
                    return None;
                }
                if let Some(th) = entry.table("trusthost") {
                    let ok = th.entries().iter().any(|h| {
                        let m = h.scalar("ipv4-trusthost").unwrap_or("0.0.0.0 0.0.0.0");
                        in_trusthost(m, peer) || in_trusthost(m, lab_peer)
                    });
                    if !th.is_empty() && !ok {
                        return None;
                    }
                }
                Some(entry.key.clone())
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
        let name = &self.cookies.session;
        let sid = cookies(headers)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)?;
        let now = self.dev.clock.now_ns();
        match self.sessions.touch(&sid, now, &self.policy()) {
            session::Lookup::Valid(s) => Some(Principal::Session { sid, session: s }),
            session::Lookup::Expired(s) => {
                self.log_logout(&s, "timeout");
                None
            }
            session::Lookup::Unknown => None,
        }
    }

    /// Event log 0100032003 for a session that ended (`reason`: `exit` for `/logout`,
    /// `timeout` for an idle session).
    fn log_logout(&self, s: &Session, reason: &str) {
        let ui = format!("https({})", s.lab_peer);
        let now = self.dev.clock.now_ns();
        let dur = (now - s.since_ns).max(0) / 1_000_000_000;
        let msg = if reason == "timeout" {
            format!("Administrator {} timed out on {ui}", s.user)
        } else {
            format!("Administrator {} logged out from {ui}", s.user)
        };
        self.dev.logs.event_system(
            "0100032003",
            "information",
            "Admin logout successful",
            |record| {
                record
                    .str("sn", s.sn.to_string())
                    .str("user", s.user.clone())
                    .str("ui", ui.clone())
                    .str("method", "https")
                    .ip("srcip", s.lab_peer)
                    .ip("dstip", self.mgmt_ip())
                    .int("duration", dur)
                    .str("action", "logout")
                    .str("status", "success")
                    .str(
                        "state",
                        if reason == "timeout" {
                            "Timeout"
                        } else {
                            "Exit"
                        },
                    )
                    .str("reason", reason)
                    .str("msg", msg);
            },
        );
        self.dev.events.emit(
            EventKind::AdminLogout,
            json!({"user": s.user, "ui": ui, "reason": reason}),
        );
    }

    fn mgmt_ip(&self) -> IpAddr {
        self.dev.lab_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
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
        self.dev.config.with(|config| {
            let e = config.entry("system admin", user)?;
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
    let query = req.uri().query().map(String::from);
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "").into_response(),
    };
    // The form fields, from the body (any content type) or the query string.
    let mut form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()).into_owned() {
            form.entry(k).or_insert(v);
        }
    }
    let user = form.get("username").cloned().unwrap_or_default();
    let pass = form.get("secretkey").cloned().unwrap_or_default();
    let ajax = form.get("ajax").is_some_and(|v| v == "1");
    let lab_peer = api.dev.lab_map.lab_of_real(peer).unwrap_or(peer);
    let dst = api.mgmt_ip();
    let ui = format!("https({lab_peer})");
    let now = api.dev.clock.now_ns();
    let policy = api.policy();
    let page = |ok: bool, cookies: Vec<String>| {
        let mut r = (StatusCode::OK, session::login_body(ok, ajax)).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        r
    };
    if let Some(left) = api.sessions.locked(lab_peer, now) {
        // A locked-out source is refused without checking the password [P: body].
        api.dev.events.emit(
            EventKind::AdminLogin,
            json!({"user": user, "ui": ui, "status": "locked", "seconds_left": left}),
        );
        return page(false, Vec::new());
    }
    match api.check_admin(&user, &pass) {
        Some(profile) => {
            api.sessions.succeeded(lab_peer);
            let (sid, csrf) = session::new_secrets();
            let sn = api.dev.clock.now_secs();
            api.sessions.insert(
                sid.clone(),
                Session {
                    user: user.clone(),
                    csrf: csrf.clone(),
                    peer,
                    lab_peer,
                    profile: profile.clone(),
                    sn,
                    since_ns: now,
                    last_ns: now,
                },
            );
            api.dev.logs.event_system(
                "0100032001",
                "information",
                "Admin login successful",
                |record| {
                    record
                        .str("sn", sn.to_string())
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
                },
            );
            api.dev.events.emit(
                EventKind::AdminLogin,
                json!({"user": user, "ui": ui, "status": "success"}),
            );
            page(true, api.cookies.login(&sid, &csrf))
        }
        None => {
            let known = api.dev.config.exists("system admin", &user);
            let reason = if known {
                "passwd_invalid"
            } else {
                "name_invalid"
            };
            let why = if known {
                "invalid password"
            } else {
                "invalid user name"
            };
            api.dev
                .logs
                .event_system("0100032002", "alert", "Admin login failed", |record| {
                    record
                        .str("sn", "0")
                        .str("user", user.clone())
                        .str("ui", ui.clone())
                        .str("method", "https")
                        .ip("srcip", lab_peer)
                        .ip("dstip", dst)
                        .str("action", "login")
                        .str("status", "failed")
                        .str("reason", reason)
                        .str(
                            "msg",
                            format!("Administrator {user} login failed from {ui} because of {why}"),
                        );
                });
            api.dev.events.emit(
                EventKind::AdminLogin,
                json!({"user": user, "ui": ui, "status": "failed"}),
            );
            if let session::Failure::LockedOut { failures, secs } =
                api.sessions.fail(lab_peer, now, &policy)
            {
                // FortiOS 0100032021 "Admin login disabled" [P: msg wording].
                api.dev.logs.event_system("0100032021", "alert", "Admin login disabled", |record| {
                    record.str("user", user.clone())
                        .str("ui", ui.clone())
                        .str("method", "https")
                        .ip("srcip", lab_peer)
                        .ip("dstip", dst)
                        .str("action", "login")
                        .str("status", "failed")
                        .str("reason", "exceed_limit")
                        .str(
                            "msg",
                            format!(
                                "Login disabled from IP {lab_peer} for {secs} seconds because of {failures} bad attempts"
                            ),
                        );
                });
                api.dev.events.emit(
                    EventKind::AdminLockout,
                    json!({"srcip": lab_peer.to_string(), "seconds": secs, "failures": failures}),
                );
            }
            page(false, Vec::new())
        }
    }
}

async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    let name = &api.cookies.session;
    if let Some((_, sid)) = cookies(&headers).into_iter().find(|(k, _)| k == name) {
        if let Some(s) = api.sessions.remove(&sid) {
            api.log_logout(&s, "exit");
        }
    }
    let mut r = (
        StatusCode::OK,
        "<html><body><script>document.location=\"/login\";</script></body></html>",
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    for c in api.cookies.logout() {
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
    let (faz_on, ems) = api.dev.config.with(|config| {
        (
            crate::forward::FazSettings::from_config(config).is_some(),
            crate::automation::ems::configured(config, api.dev.version),
        )
    });
    let fabric = api.dev.fabric();
    let faz = faz_on.then(|| {
        let st = fabric.faz();
        json!({"connected": st.connected, "registration": st.registration})
    });
    let ems: Vec<Value> = ems
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
               "links": {"fortianalyzer": faz, "ems": ems},
               "api": {"requests": api.timing.requests.load(std::sync::atomic::Ordering::Relaxed),
                       "busy_ns": api.timing.busy_ns.load(std::sync::atomic::Ordering::Relaxed)}}),
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
    pub fn json_object(&self) -> Result<Map<String, Value>, String> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("the body must be a JSON object".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn dispatch(State(api): State<Api>, req: Request) -> Response {
    let query = Query::parse(req.uri().query());
    // `global=1`, `vdom=*` and `vdom=a,b` answer a JSON array of per-VDOM envelopes, whatever
    // the path and whatever the outcome (clients read `[0]` of it at login).
    let array = query.flag("global")
        || query
            .get("vdom")
            .is_some_and(|v| v.contains('*') || v.contains(','));
    let resp = dispatch_inner(&api, req, query).await;
    if array {
        as_vdom_array(resp).await
    } else {
        resp
    }
}

/// Wraps a JSON object answer in a one-element array (answers already in array form, and
/// non-JSON answers such as raw logs or a configuration backup, are left alone).
async fn as_vdom_array(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if bytes.first() != Some(&b'{') {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'[');
    out.extend_from_slice(&bytes);
    out.push(b']');
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

async fn dispatch_inner(api: &Api, req: Request, query: Query) -> Response {
    let method = req.method().clone();
    let peer = peer_of(req.extensions().get::<ConnInfo>());
    let uri = req.uri().clone();
    let raw_path = uri.path().to_string();
    let Some(rest) = raw_path.strip_prefix("/api/v2/") else {
        return not_found_plain();
    };
    let mut segments: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    while segments.last().is_some_and(|s| s.is_empty()) && segments.len() > 1 {
        segments.pop();
    }
    let headers = req.headers().clone();
    // The body is read before anything is answered, so a refused request (401, 403, 413)
    // completes normally on HTTP/2 too instead of ending in a stream reset.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = if declared.is_some_and(|n| n > MAX_BODY) {
        // Read (and drop) what the client sends so it sees the answer rather than a reset.
        let _ = axum::body::to_bytes(req.into_body(), 16 * MAX_BODY).await;
        None
    } else {
        axum::body::to_bytes(req.into_body(), MAX_BODY).await.ok()
    };
    let Some(principal) = api.authenticate(&headers, &query, peer) else {
        if segments.first().map(String::as_str) == Some("authentication") {
            // 6.4–7.2 have no /api/v2/authentication (7.4+); clients fall back to /logincheck.
            return bare_error(api, &method, 404);
        }
        return bare_error(api, &method, 401);
    };
    let Some(body) = body else {
        return bare_error(api, &method, 413);
    };
    if method != Method::GET && method != Method::HEAD {
        if let Principal::Session { session, .. } = &principal {
            let sent = headers
                .get("x-csrftoken")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().trim_matches('"'));
            if sent != Some(session.csrf.as_str()) {
                return bare_error(api, &method, 403);
            }
        }
    }
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
        return config_script::handle(api, r).await;
    }
    match r.segments.first().map(String::as_str) {
        Some("cmdb") => cmdb::handle(api, r),
        Some("monitor") => monitor::handle(api, r).await,
        Some("log") => monitor::handle_log(api, r),
        Some("authentication") => bare_error(api, &r.method, 404),
        _ => bare_error(api, &r.method, 404),
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
pub fn session_id(_api: &Api) -> u32 {
    fortilab_core::secrets::csprng().gen_range(1..u32::MAX)
}
