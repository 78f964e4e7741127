//! The EMS REST API (`/api/v1/`), the fabric connector side and the lab surface (`/_lab/`).
//!
//! Vendor surface (faz-ems.md §5.1–5.3): `auth/signin` (JSON or form) sets exactly the two
//! cookies `csrftoken` and `sessionid`; replies use the `{"result":{"retval":1,"message":..},
//! "data":..}` envelope (errors: `retval` ≤ 0, HTTP 401 without a session, 403 on a CSRF
//! failure); unsafe methods need `X-CSRFToken` and a `Referer` whose host matches [P: host
//! match only].
//!
//! Fabric side [P] (FortiGates present their lab-CA certificate, CN = serial, no cookies):
//! `GET system/serial_number`, `GET fabric/status`, `POST fabric/quarantine` and
//! `POST fabric/unquarantine` with `{"ip"|"mac"|"fctuid": .., "reason"?, "source"?}`. An
//! unknown FortiGate is added to `client_certificates` unauthorized on first contact (or
//! authorized with `--auto-authorize`); only authorized ones may quarantine. Authorized
//! FortiGates may also call `clients/quarantine` / `clients/unquarantine` directly, and read
//! the endpoint inventory (`endpoints/index`, `endpoints/{id}/get`: the FortiGate's
//! `endpoint-control/record-list` answers from it); unauthorized ones get 403.

// Handlers return an axum `Response` as their error: it is what they answer with.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use fortilab_core::http::ConnInfo;
use fortilab_core::EventKind;
use serde_json::{json, Map, Value};

use crate::state::{Endpoint, Selector};
use crate::Shared;

/// The state every EMS API handler extracts: the shared device state.
type ApiState = State<Arc<Shared>>;

/// Largest request body accepted.
const BODY_LIMIT: usize = 1024 * 1024;

/// Builds the router.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new();
    let routes: Vec<(&str, axum::routing::MethodRouter<Arc<Shared>>)> = vec![
        ("/api/v1/auth/signin", any(signin)),
        ("/api/v1/auth/signout", any(signout)),
        ("/api/v1/system/serial_number", any(serial_number)),
        ("/api/v1/system/info", any(system_info)),
        ("/api/v1/system/consts/get", any(consts)),
        ("/api/v1/license/get", any(license)),
        ("/api/v1/endpoints/index", any(endpoints_index)),
        (
            "/api/v1/endpoints/device/{id}/details",
            any(endpoint_details),
        ),
        ("/api/v1/endpoints/{id}/get", any(endpoint_details)),
        ("/api/v1/clients/quarantine", any(clients_quarantine)),
        ("/api/v1/clients/unquarantine", any(clients_unquarantine)),
        ("/api/v1/client_certificates/index", any(certs_index)),
        ("/api/v1/client_certificates/{id}/set", any(certs_set)),
        ("/api/v1/client_certificates/{id}/delete", any(certs_delete)),
        ("/api/v1/devices/delete", any(devices_delete)),
        ("/api/v1/fabric/status", any(fabric_status)),
        ("/api/v1/fabric/quarantine", any(fabric_quarantine)),
        ("/api/v1/fabric/unquarantine", any(fabric_unquarantine)),
    ];
    for (path, mr) in routes {
        r = r.route(path, mr.clone()).route(&format!("{path}/"), mr);
    }
    r.route("/_lab/health", get(lab_health))
        .route(
            fortilab_core::snapshot::ROUTE,
            axum::routing::post(lab_snapshot),
        )
        .route("/_lab/auto-authorize", any(lab_auto_authorize))
        .route(
            "/_lab/events",
            get(fortilab_core::events::sse_handler).with_state(shared.bus.clone()),
        )
        .fallback(not_found)
        .with_state(shared)
}

// ---------------------------------------------------------------- envelope and context

/// The EMS envelope.
pub fn envelope(status: StatusCode, retval: i64, message: Option<&str>, data: Value) -> Response {
    let body = json!({"result": {"retval": retval, "message": message}, "data": data});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(message: Option<&str>, data: Value) -> Response {
    envelope(StatusCode::OK, 1, message, data)
}

fn err(status: StatusCode, retval: i64, message: &str) -> Response {
    envelope(status, retval, Some(message), Value::Null)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/api/") {
        err(StatusCode::NOT_FOUND, -1, &format!("Not found: {path}"))
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// What a handler needs from the request.
struct Ctx {
    method: Method,
    headers: HeaderMap,
    conn: Option<ConnInfo>,
    query: Vec<(String, String)>,
    body: Bytes,
}

async fn ctx(req: Request) -> Result<Ctx, Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| err(StatusCode::PAYLOAD_TOO_LARGE, -1, "Request body too large."))?;
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Ctx {
        method: parts.method,
        conn: parts.extensions.get::<ConnInfo>().cloned(),
        headers: parts.headers,
        query,
        body,
    })
}

impl Ctx {
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<String> {
        for h in self.headers.get_all(header::COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            for part in s.split(';') {
                if let Some((k, v)) = part.trim().split_once('=') {
                    if k.trim() == name {
                        return Some(v.trim().to_string());
                    }
                }
            }
        }
        None
    }

    fn unsafe_method(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// The body as JSON: JSON text, or a form (`a=1&ids[]=2&ids[]=3`).
    fn json(&self) -> Result<Value, Response> {
        let text = std::str::from_utf8(&self.body)
            .map_err(|_| err(StatusCode::BAD_REQUEST, -1, "Request body is not UTF-8."))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        let ctype = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.contains("json") || trimmed.starts_with('{') || trimmed.starts_with('[') {
            return serde_json::from_str(trimmed).map_err(|e| {
                err(
                    StatusCode::BAD_REQUEST,
                    -1,
                    &format!("Invalid JSON body: {e}"),
                )
            });
        }
        Ok(form_to_json(
            form_urlencoded::parse(trimmed.as_bytes()).into_owned(),
        ))
    }
}

/// Form pairs → JSON object; `k[]` and repeated keys become arrays.
fn form_to_json(pairs: impl Iterator<Item = (String, String)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let (key, arr) = match k.strip_suffix("[]") {
            Some(base) => (base.to_string(), true),
            None => (k, false),
        };
        match m.get_mut(&key) {
            Some(Value::Array(a)) => a.push(Value::String(v)),
            Some(existing) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, Value::String(v)]);
            }
            None => {
                let val = if arr {
                    Value::Array(vec![Value::String(v)])
                } else {
                    Value::String(v)
                };
                m.insert(key, val);
            }
        }
    }
    Value::Object(m)
}

/// Who is calling.
#[derive(Debug, Clone)]
enum Principal {
    Admin { user: String },
    Fabric { cn: String, authorized: bool },
}

impl Principal {
    fn by(&self) -> String {
        match self {
            Principal::Admin { user } => format!("admin:{user}"),
            Principal::Fabric { cn, .. } => format!("fortigate:{cn}"),
        }
    }
}

fn host_of(s: &str) -> String {
    let s = s.split("://").nth(1).unwrap_or(s);
    let authority = s.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_ascii_lowercase();
    }
    authority
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Records a FortiGate's contact (its certificate CN) and returns its device row.
fn fabric_contact(sh: &Shared, cn: &str, c: &Ctx) -> crate::state::FabricDevice {
    let peer = c
        .conn
        .as_ref()
        .map(|i| i.peer.to_string())
        .unwrap_or_default();
    let auto = sh.auto_authorize.load(Ordering::Relaxed);
    let now = sh.now_ms();
    let (dev, first, was_authorized) = {
        let mut st = sh.lock();
        let before = st.fabric_by_cn(cn).map(|d| d.authorized);
        let (dev, first) = st.fabric_contact(cn, &peer, auto, now);
        (dev, first, before)
    };
    if first || (was_authorized == Some(false) && dev.authorized) {
        sh.bus.emit(
            EventKind::FabricDevice,
            json!({"id": dev.id, "cn": dev.cn, "authorized": dev.authorized,
                   "state": if first { "seen" } else { "authorized" }, "peer": peer}),
        );
    }
    dev
}

/// Authenticates the request: a session cookie (CSRF checked on unsafe methods) or a lab-CA
/// client certificate (a FortiGate).
fn authenticate(sh: &Arc<Shared>, c: &Ctx) -> Result<Principal, Response> {
    if let Some(sid) = c.cookie("sessionid") {
        let session = sh
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sid)
            .cloned();
        if let Some(s) = session {
            if c.unsafe_method() {
                let token = c.headers.get("x-csrftoken").and_then(|v| v.to_str().ok());
                if token != Some(s.csrf.as_str()) {
                    return Err(err(
                        StatusCode::FORBIDDEN,
                        -4,
                        "CSRF Failed: CSRF token missing or incorrect.",
                    ));
                }
                let referer = c.headers.get(header::REFERER).and_then(|v| v.to_str().ok());
                let Some(referer) = referer else {
                    return Err(err(
                        StatusCode::FORBIDDEN,
                        -4,
                        "CSRF Failed: Referer checking failed - no Referer.",
                    ));
                };
                let host = c
                    .headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !host.is_empty() && host_of(referer) != host_of(host) {
                    return Err(err(
                        StatusCode::FORBIDDEN,
                        -4,
                        &format!("CSRF Failed: Referer checking failed - {referer} does not match any trusted origins."),
                    ));
                }
            }
            return Ok(Principal::Admin { user: s.user });
        }
    }
    if let Some(cn) = c.conn.as_ref().and_then(|i| i.client_cn.clone()) {
        let dev = fabric_contact(sh, &cn, c);
        return Ok(Principal::Fabric {
            cn,
            authorized: dev.authorized,
        });
    }
    Err(err(
        StatusCode::UNAUTHORIZED,
        -1,
        "Authentication credentials were not provided.",
    ))
}

fn admin_only(p: &Principal) -> Result<(), Response> {
    match p {
        Principal::Admin { .. } => Ok(()),
        Principal::Fabric { cn, .. } => Err(err(
            StatusCode::FORBIDDEN,
            -3,
            &format!("FortiGate {cn} may not call this API; sign in as an administrator"),
        )),
    }
}

fn authorized(p: &Principal) -> Result<(), Response> {
    match p {
        Principal::Fabric {
            cn,
            authorized: false,
        } => Err(err(
            StatusCode::FORBIDDEN,
            -3,
            &format!("FortiGate {cn} is not authorized"),
        )),
        _ => Ok(()),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

fn method_not_allowed(c: &Ctx) -> Response {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        -1,
        &format!("Method \"{}\" not allowed.", c.method),
    )
}

// ---------------------------------------------------------------- auth

async fn signin(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if c.method != Method::POST {
        return method_not_allowed(&c);
    }
    let body = tri!(c.json());
    let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let name = field("name")
        .or_else(|| field("username"))
        .unwrap_or_default();
    let password = field("password").unwrap_or_default();
    if name != sh.cfg.admin_user || password != sh.cfg.admin_password {
        tracing::info!(user = %name, "EMS sign-in refused");
        return err(
            StatusCode::UNAUTHORIZED,
            -1,
            "Invalid username or password.",
        );
    }
    let (sid, csrf) = sh.with_rng(|r| {
        (
            fortilab_core::rng::token(r, 32).to_lowercase(),
            fortilab_core::rng::token(r, 64),
        )
    });
    sh.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            sid.clone(),
            crate::Session {
                user: name.clone(),
                csrf: csrf.clone(),
            },
        );
    sh.bus.emit(EventKind::EmsSignin, json!({"user": name}));
    let mut resp = ok(
        Some("Login successful."),
        json!({"name": name, "site": "default"}),
    );
    let h = resp.headers_mut();
    let csrf_cookie = format!("csrftoken={csrf}; Max-Age=31449600; Path=/; SameSite=Lax; Secure");
    let sid_cookie =
        format!("sessionid={sid}; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax; Secure");
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&csrf_cookie).expect("ascii"),
    );
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&sid_cookie).expect("ascii"),
    );
    resp
}

async fn signout(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if !matches!(c.method, Method::GET | Method::POST) {
        return method_not_allowed(&c);
    }
    if let Some(sid) = c.cookie("sessionid") {
        sh.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    }
    let mut resp = ok(Some("Logout successful."), Value::Null);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
        ),
    );
    resp
}

// ---------------------------------------------------------------- system

async fn serial_number(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let _p = tri!(authenticate(&sh, &c));
    ok(None, Value::String(sh.cfg.serial.clone()))
}

async fn system_info(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let _p = tri!(authenticate(&sh, &c));
    let cfg = &sh.cfg;
    ok(
        None,
        json!({
            "name": cfg.hostname, "hostname": cfg.hostname, "serial_number": cfg.serial,
            "version": cfg.version, "fct_version": cfg.version,
            "license": {"sn": cfg.serial, "type": "EMS", "is_valid": true},
            "system_time": sh.clock.now_secs(),
        }),
    )
}

async fn consts(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let _p = tri!(authenticate(&sh, &c));
    ok(
        None,
        json!({"System": {"VERSION": sh.cfg.version, "SERIAL": sh.cfg.serial,
                          "HOSTNAME": sh.cfg.hostname, "UPDATE_TIME": sh.clock.now_secs()}}),
    )
}

async fn license(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let _p = tri!(authenticate(&sh, &c));
    let used = sh.lock().endpoints.len();
    ok(
        None,
        json!({"sn": sh.cfg.serial, "used": {"epp": used, "ztna": 0, "sandbox": 0},
               "seats": {"epp": 100_000, "ztna": 0, "sandbox": 0}, "is_trial": false}),
    )
}

// ---------------------------------------------------------------- endpoints

/// One endpoint as `endpoints/index` lists it, serialized straight from the record (a page of
/// 10,000 endpoints is written without building a JSON tree per endpoint).
#[derive(serde::Serialize)]
pub struct EndpointRow<'a> {
    device_id: u64,
    name: &'a str,
    host: &'a str,
    ip_addr: &'a str,
    mac_addr: &'a str,
    username: &'a str,
    user_domain: &'a str,
    os_version: &'a str,
    fct_version: &'a str,
    fct_sn: &'a str,
    uid: &'a str,
    group_path: &'a str,
    groups: [GroupRef<'a>; 1],
    last_seen: i64,
    is_ems_online: i32,
    is_ems_onnet: i32,
    is_ems_registered: i32,
    is_registered: i32,
    is_managed: i32,
    is_quarantined: i32,
    quarantine_message: &'a str,
    profile_name: &'static str,
    /// Only while quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine_access_code: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct GroupRef<'a> {
    group_path: &'a str,
}

impl<'a> EndpointRow<'a> {
    pub fn new(ep: &'a Endpoint, now_ms: i64, online_window_ms: i64) -> Self {
        let online = now_ms - ep.last_seen_ms <= online_window_ms;
        Self {
            device_id: ep.device_id,
            name: &ep.name,
            host: &ep.host,
            ip_addr: &ep.ip_addr,
            mac_addr: &ep.mac_addr,
            username: &ep.username,
            user_domain: &ep.user_domain,
            os_version: &ep.os_version,
            fct_version: &ep.fct_version,
            fct_sn: &ep.fct_sn,
            uid: &ep.uid,
            group_path: &ep.group_path,
            groups: [GroupRef {
                group_path: &ep.group_path,
            }],
            last_seen: ep.last_seen_ms.div_euclid(1000),
            is_ems_online: i32::from(online),
            is_ems_onnet: i32::from(ep.is_ems_onnet),
            is_ems_registered: 1,
            is_registered: 1,
            is_managed: 1,
            is_quarantined: i32::from(ep.quarantine.is_some()),
            quarantine_message: &ep.quarantine_message,
            profile_name: "Default",
            quarantine_access_code: ep.quarantine.as_ref().map(|q| q.code.as_str()),
        }
    }
}

/// The record as the API shows it (with `details`: as `endpoints/device/{id}/details` does).
pub fn endpoint_json(ep: &Endpoint, now_ms: i64, online_window_ms: i64, details: bool) -> Value {
    let mut v =
        serde_json::to_value(EndpointRow::new(ep, now_ms, online_window_ms)).unwrap_or(Value::Null);
    if details {
        v["registered_at"] = json!(ep.registered_ms.div_euclid(1000));
        v["ec_quarantined"] = json!(i32::from(ep.reported_quarantined));
        if let Some(q) = &ep.quarantine {
            v["quarantine"] = json!({"id": q.id, "by": q.by, "reason": q.reason,
                                     "requested_at": q.at_ms.div_euclid(1000),
                                     "delivered": q.delivered_ms.is_some()});
        }
    }
    v
}

/// The `endpoints/index` answer, written in one pass: the envelope of [`envelope`] around
/// `{"endpoints": [...], "total": n}`.
fn index_page<'a>(rows: impl Iterator<Item = EndpointRow<'a>>, total: usize) -> Response {
    #[derive(serde::Serialize)]
    struct Head {
        retval: i64,
        message: Option<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Page<'a> {
        endpoints: Vec<EndpointRow<'a>>,
        total: usize,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        result: Head,
        data: Page<'a>,
    }
    let body = Body {
        result: Head {
            retval: 1,
            message: None,
        },
        data: Page {
            endpoints: rows.collect(),
            total,
        },
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            &format!("{}:{}: {e}", file!(), line!()),
        ),
    }
}

fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s.eq_ignore_ascii_case(want),
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => (if *b { "1" } else { "0" }) == want || b.to_string() == want,
        _ => false,
    }
}

/// Filters answered from the record's fields directly.
const SIMPLE_FILTERS: &[&str] = &[
    "device_id",
    "ip_addr",
    "mac_addr",
    "name",
    "host",
    "uid",
    "username",
    "is_quarantined",
];

/// The simple `endpoints/index` filters, on the record's fields.
fn field_matches(ep: &Endpoint, key: &str, want: &str) -> bool {
    let text = |s: &str| s.eq_ignore_ascii_case(want.trim());
    match key {
        "device_id" => want.trim().parse::<u64>().is_ok_and(|w| w == ep.device_id),
        "ip_addr" => text(&ep.ip_addr),
        "mac_addr" => crate::proto::mac_colon(want) == ep.mac_addr,
        "name" => text(&ep.name),
        "host" => text(&ep.host),
        "uid" => text(&ep.uid),
        "username" => text(&ep.username),
        "is_quarantined" => {
            let q = ep.quarantine.is_some();
            matches!(
                (want.trim(), q),
                ("1" | "true", true) | ("0" | "false", false)
            )
        }
        _ => true,
    }
}

async fn endpoints_index(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let p = tri!(authenticate(&sh, &c));
    // A FortiGate's connector reads the inventory only once authorized.
    tri!(authorized(&p));
    let offset: usize = c.q("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let count: usize = c
        .q("count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(10_000);
    let json_filters: Option<Map<String, Value>> = match c.q("filters") {
        Some(f) if !f.trim().is_empty() => match serde_json::from_str::<Value>(f) {
            Ok(Value::Object(m)) => Some(m),
            _ => return err(StatusCode::BAD_REQUEST, -1, "filters must be a JSON object"),
        },
        _ => None,
    };
    let field_filters: Vec<(&str, &str)> = c
        .query
        .iter()
        .filter(|(k, _)| SIMPLE_FILTERS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let connection = c.q("connection").map(str::to_ascii_lowercase);
    let event_type = c.q("event_type").map(str::to_ascii_lowercase);
    let status = c.q("status").map(str::to_ascii_lowercase);
    let management = c.q("management").map(str::to_ascii_lowercase);
    let now = sh.now_ms();
    let window = sh.online_window_ms();
    let simple = json_filters.is_none()
        && field_filters.is_empty()
        && connection.is_none()
        && event_type.is_none()
        && status.is_none()
        && management.is_none();

    let st = sh.lock();
    if simple {
        let total = st.endpoints.len();
        let rows = st
            .endpoints
            .values()
            .skip(offset)
            .take(count)
            .map(|e| EndpointRow::new(e, now, window));
        return index_page(rows, total);
    }
    let mut total = 0usize;
    let mut page = Vec::new();
    for ep in st.endpoints.values() {
        let online = now - ep.last_seen_ms <= window;
        let keep = match connection.as_deref() {
            Some("online") => online,
            Some("offline") | Some("offlinenominal") | Some("offlinerecent") => !online,
            _ => true,
        } && match event_type.as_deref() {
            Some("quarantined") => ep.quarantine.is_some(),
            Some(_) => false,
            None => true,
        } && !matches!(status.as_deref(), Some("outofsync"))
            && !matches!(management.as_deref(), Some("unmanaged"));
        if !keep {
            continue;
        }
        // Field filters compare the record's own fields (no JSON built per endpoint); the
        // `filters` JSON object may name any field of the record, so it builds the record.
        let ok_fields = field_filters
            .iter()
            .all(|(k, want)| field_matches(ep, k, want));
        if !ok_fields {
            continue;
        }
        let mut v = None;
        if let Some(m) = &json_filters {
            let ok_json = m.iter().all(|(k, want)| {
                let want = match want {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if SIMPLE_FILTERS.contains(&k.as_str()) {
                    return field_matches(ep, k, &want);
                }
                let rec = v.get_or_insert_with(|| endpoint_json(ep, now, window, false));
                rec.get(k).is_some_and(|x| value_matches(x, &want))
            });
            if !ok_json {
                continue;
            }
        }
        if total >= offset && page.len() < count {
            page.push(ep);
        }
        total += 1;
    }
    index_page(
        page.into_iter().map(|ep| EndpointRow::new(ep, now, window)),
        total,
    )
}

async fn endpoint_details(State(sh): ApiState, Path(id): Path<String>, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let p = tri!(authenticate(&sh, &c));
    tri!(authorized(&p));
    let Ok(id) = id.parse::<u64>() else {
        return err(
            StatusCode::BAD_REQUEST,
            -1,
            &format!("Invalid device id {id:?}"),
        );
    };
    let now = sh.now_ms();
    let window = sh.online_window_ms();
    match sh.lock().endpoints.get(&id) {
        Some(ep) => ok(None, endpoint_json(ep, now, window, true)),
        None => err(
            StatusCode::NOT_FOUND,
            -1,
            &format!("Endpoint {id} not found."),
        ),
    }
}

/// Reads `ids` / `addresses[].ip` (and for the fabric `ip`/`mac`/`fctuid`) from a body.
fn selectors(body: &Value) -> Result<Vec<Selector>, String> {
    let mut out = Vec::new();
    let id_of = |v: &Value| -> Result<u64, String> {
        match v {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("bad id {n}")),
            Value::String(s) => s.trim().parse().map_err(|_| format!("bad id {s:?}")),
            other => Err(format!("bad id {other}")),
        }
    };
    match body.get("ids") {
        Some(Value::Array(a)) => {
            for v in a {
                out.push(Selector::Id(id_of(v)?));
            }
        }
        Some(Value::String(s)) => {
            for part in s.trim_matches(|c| c == '[' || c == ']').split(',') {
                let p = part.trim().trim_matches('"');
                if !p.is_empty() {
                    out.push(Selector::Id(
                        p.parse().map_err(|_| format!("bad id {p:?}"))?,
                    ));
                }
            }
        }
        Some(v @ Value::Number(_)) => out.push(Selector::Id(id_of(v)?)),
        Some(other) => return Err(format!("ids must be a list of device ids, got {other}")),
        None => {}
    }
    if let Some(addrs) = body.get("addresses") {
        let Value::Array(a) = addrs else {
            return Err("addresses must be a list".into());
        };
        for v in a {
            match v.get("ip").and_then(|x| x.as_str()) {
                Some(ip) => out.push(Selector::Ip(ip.to_string())),
                None => match v.get("mac").and_then(|x| x.as_str()) {
                    Some(mac) => out.push(Selector::Mac(mac.to_string())),
                    None => return Err("each address needs \"ip\" (or \"mac\")".into()),
                },
            }
        }
    }
    for (key, mk) in [
        ("ip", Selector::Ip as fn(String) -> Selector),
        ("mac", Selector::Mac),
        ("fctuid", Selector::Fctuid),
        ("uid", Selector::Fctuid),
    ] {
        if let Some(v) = body.get(key).and_then(|v| v.as_str()) {
            out.push(mk(v.to_string()));
        }
    }
    Ok(out)
}

/// Quarantines (or releases) the endpoints the body selects; durable before replying.
async fn apply_quarantine(
    sh: &Arc<Shared>,
    p: &Principal,
    body: &Value,
    quarantine: bool,
    via: &str,
) -> Response {
    let sels = match selectors(body) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                -1,
                "Nothing selected: give \"ids\" or \"addresses\":[{\"ip\":..}] (fabric: \"ip\", \"mac\" or \"fctuid\")",
            )
        }
        Err(e) => return err(StatusCode::BAD_REQUEST, -1, &e),
    };
    let reason = body
        .get("reason")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let by = p.by();
    let now = sh.now_ms();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    {
        let mut st = sh.lock();
        for sel in &sels {
            let ids = st.select(sel);
            if ids.is_empty() {
                missing.push(format!("{sel:?}"));
            }
            for id in ids {
                let r = if quarantine {
                    let msg = sh.cfg.quarantine_message.clone();
                    sh.with_rng(|rng| st.quarantine(id, &by, reason.clone(), &msg, rng, now))
                } else {
                    st.unquarantine(id)
                };
                if let Some(r) = r {
                    if !results
                        .iter()
                        .any(|x: &crate::state::QuarantineResult| x.device_id == r.device_id)
                    {
                        results.push(r);
                    }
                }
            }
        }
    }
    if results.is_empty() {
        return err(
            StatusCode::NOT_FOUND,
            -1,
            &format!("No matching endpoint: {}", missing.join(", ")),
        );
    }
    if let Err(e) = sh.persist().await {
        tracing::error!(error = %e, "writing the EMS state failed");
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "Could not save the EMS state.",
        );
    }
    let kind = if quarantine {
        EventKind::EmsQuarantine
    } else {
        EventKind::EmsUnquarantine
    };
    let mut rows = Vec::new();
    for r in &results {
        if r.changed {
            sh.bus.emit(
                kind,
                json!({"device_id": r.device_id, "fctuid": r.uid, "ip": r.ip_addr, "hostname": r.host,
                       "quarantine_id": r.quarantine_id, "by": by, "via": via, "reason": reason}),
            );
            // Delivered now through the endpoint's persistent connection, not at its next
            // keep-alive.
            sh.push(&r.uid);
        }
        rows.push(
            json!({"device_id": r.device_id, "uid": r.uid, "ip_addr": r.ip_addr, "host": r.host,
                         "is_quarantined": i32::from(quarantine), "changed": r.changed,
                         "quarantine_id": r.quarantine_id}),
        );
    }
    let msg = if quarantine {
        "Quarantine request accepted."
    } else {
        "Unquarantine request accepted."
    };
    ok(
        Some(msg),
        json!({"endpoints": rows, "total": rows.len(), "not_found": missing}),
    )
}

async fn clients_quarantine(State(sh): ApiState, req: Request) -> Response {
    clients_q(sh, req, true).await
}

async fn clients_unquarantine(State(sh): ApiState, req: Request) -> Response {
    clients_q(sh, req, false).await
}

async fn clients_q(sh: Arc<Shared>, req: Request, quarantine: bool) -> Response {
    let c = tri!(ctx(req).await);
    if !matches!(c.method, Method::POST | Method::PUT | Method::PATCH) {
        return method_not_allowed(&c);
    }
    let p = tri!(authenticate(&sh, &c));
    tri!(authorized(&p));
    let body = tri!(c.json());
    apply_quarantine(&sh, &p, &body, quarantine, "api").await
}

async fn devices_delete(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if !matches!(c.method, Method::DELETE | Method::POST) {
        return method_not_allowed(&c);
    }
    let p = tri!(authenticate(&sh, &c));
    tri!(admin_only(&p));
    let mut body = form_to_json(c.query.clone().into_iter());
    if let Ok(Value::Object(b)) = c.json() {
        if let Value::Object(m) = &mut body {
            m.extend(b);
        }
    }
    let ids: Vec<u64> =
        match selectors(&json!({"ids": body.get("ids").cloned().unwrap_or(Value::Null)})) {
            Ok(s) => s
                .into_iter()
                .filter_map(|s| {
                    if let Selector::Id(i) = s {
                        Some(i)
                    } else {
                        None
                    }
                })
                .collect(),
            Err(e) => return err(StatusCode::BAD_REQUEST, -1, &e),
        };
    if ids.is_empty() {
        return err(
            StatusCode::BAD_REQUEST,
            -1,
            "Give ids[]=<device_id> (or ids=<device_id>).",
        );
    }
    let removed = sh.lock().delete(&ids);
    if let Err(e) = sh.persist().await {
        tracing::error!(error = %e, "writing the EMS state failed");
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "Could not save the EMS state.",
        );
    }
    if removed.is_empty() {
        return err(StatusCode::NOT_FOUND, -1, "No matching endpoint.");
    }
    sh.bus
        .emit(EventKind::EmsDevicesDeleted, json!({"ids": removed}));
    ok(Some("Deleted."), json!({"ids": removed}))
}

// ---------------------------------------------------------------- fabric devices

fn cert_json(d: &crate::state::FabricDevice) -> Value {
    json!({"id": d.id, "cn": d.cn, "name": d.cn, "sn": d.cn, "type": "FortiGate",
           "authorized": d.authorized, "ip": d.peer,
           "first_seen": d.first_seen_ms.div_euclid(1000), "last_seen": d.last_seen_ms.div_euclid(1000)})
}

async fn certs_index(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let p = tri!(authenticate(&sh, &c));
    tri!(admin_only(&p));
    let rows: Vec<Value> = sh.lock().fabric.values().map(cert_json).collect();
    ok(None, Value::Array(rows))
}

async fn certs_set(State(sh): ApiState, Path(id): Path<String>, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if !matches!(c.method, Method::PATCH | Method::POST | Method::PUT) {
        return method_not_allowed(&c);
    }
    let p = tri!(authenticate(&sh, &c));
    tri!(admin_only(&p));
    let body = tri!(c.json());
    let Ok(id) = id.parse::<u64>() else {
        return err(StatusCode::BAD_REQUEST, -1, &format!("Invalid id {id:?}"));
    };
    let want = match body.get("authorized") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                -1,
                "Body must be {\"authorized\": true|false}",
            )
        }
    };
    let dev = sh.lock().fabric_authorize(id, want);
    let Some(dev) = dev else {
        return err(
            StatusCode::NOT_FOUND,
            -1,
            &format!("Fabric device {id} not found."),
        );
    };
    if let Err(e) = sh.persist().await {
        tracing::error!(error = %e, "writing the EMS state failed");
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "Could not save the EMS state.",
        );
    }
    sh.bus.emit(
        EventKind::FabricDevice,
        json!({"id": dev.id, "cn": dev.cn, "authorized": dev.authorized,
               "state": if dev.authorized { "authorized" } else { "deauthorized" }, "by": p.by()}),
    );
    ok(Some("Updated."), cert_json(&dev))
}

async fn certs_delete(State(sh): ApiState, Path(id): Path<String>, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if !matches!(c.method, Method::DELETE | Method::POST) {
        return method_not_allowed(&c);
    }
    let p = tri!(authenticate(&sh, &c));
    tri!(admin_only(&p));
    let Ok(id) = id.parse::<u64>() else {
        return err(StatusCode::BAD_REQUEST, -1, &format!("Invalid id {id:?}"));
    };
    if !sh.lock().fabric_delete(id) {
        return err(
            StatusCode::NOT_FOUND,
            -1,
            &format!("Fabric device {id} not found."),
        );
    }
    let _ = sh.persist().await;
    ok(Some("Deleted."), Value::Null)
}

// ---------------------------------------------------------------- fabric connector side [P]

fn fabric_principal(sh: &Arc<Shared>, c: &Ctx) -> Result<(String, bool), Response> {
    match c.conn.as_ref().and_then(|i| i.client_cn.clone()) {
        Some(cn) => {
            let dev = fabric_contact(sh, &cn, c);
            Ok((cn, dev.authorized))
        }
        None => Err(err(
            StatusCode::UNAUTHORIZED,
            -1,
            "A FortiGate must present its lab-CA client certificate (CN = serial number).",
        )),
    }
}

async fn fabric_status(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    let (cn, authorized) = tri!(fabric_principal(&sh, &c));
    let msg = if authorized {
        format!("FortiGate {cn} is authorized")
    } else {
        format!("FortiGate {cn} is not authorized")
    };
    ok(
        Some(&msg),
        json!({"serial": cn, "authorized": authorized, "ems_serial": sh.cfg.serial,
               "ems_hostname": sh.cfg.hostname, "ems_version": sh.cfg.version,
               "status": if authorized { "authorized" } else { "pending" }}),
    )
}

async fn fabric_quarantine(State(sh): ApiState, req: Request) -> Response {
    fabric_q(sh, req, true).await
}

async fn fabric_unquarantine(State(sh): ApiState, req: Request) -> Response {
    fabric_q(sh, req, false).await
}

async fn fabric_q(sh: Arc<Shared>, req: Request, quarantine: bool) -> Response {
    let c = tri!(ctx(req).await);
    if c.method != Method::POST {
        return method_not_allowed(&c);
    }
    let (cn, ok_) = tri!(fabric_principal(&sh, &c));
    let p = Principal::Fabric {
        cn: cn.clone(),
        authorized: ok_,
    };
    if !ok_ {
        sh.bus.emit(
            EventKind::EmsQuarantineRefused,
            json!({"by": p.by(), "reason": "not authorized", "quarantine": quarantine}),
        );
    }
    tri!(authorized(&p));
    let body = tri!(c.json());
    if !body.is_object() {
        return err(StatusCode::BAD_REQUEST, -1, "Body must be a JSON object");
    }
    if body.get("ids").is_some() || body.get("addresses").is_some() {
        return apply_quarantine(&sh, &p, &body, quarantine, "fabric").await;
    }
    let one = json!({"ip": body.get("ip"), "mac": body.get("mac"), "fctuid": body.get("fctuid"),
                     "reason": body.get("reason")});
    let cleaned: Map<String, Value> = one
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    apply_quarantine(&sh, &p, &Value::Object(cleaned), quarantine, "fabric").await
}

// ---------------------------------------------------------------- lab surface

/// `POST /_lab/snapshot` (`{"dir"}`): EMS's state into a new directory, while it runs on
/// ([`Shared::snapshot_to`]).
async fn lab_snapshot(State(sh): ApiState, body: Bytes) -> Response {
    fortilab_core::snapshot::handle(&body, |dir| async move {
        tokio::task::spawn_blocking(move || sh.snapshot_to(&dir))
            .await
            .map_err(|e| format!("snapshot task: {e}"))?
            .map_err(|e| format!("EMS state: {e}"))
    })
    .await
}

async fn lab_health(State(sh): ApiState) -> Response {
    let now = sh.now_ms();
    let (n, f, oldest) = {
        let st = sh.lock();
        let oldest = st.endpoints.values().map(|e| e.last_seen_ms).min();
        (st.endpoints.len(), st.fabric.len(), oldest)
    };
    // Lab time since the least recently seen endpoint's last contact (keep-alive health).
    let oldest_age_ms = oldest.map(|t| (now - t).max(0));
    axum::Json(
        json!({"ok": true, "device": sh.cfg.hostname, "serial": sh.cfg.serial,
                      "endpoints": n, "fabric_devices": f,
                      "oldest_contact_age_ms": oldest_age_ms,
                      "keepalives": sh.keepalives.load(Ordering::Relaxed),
                      "auto_authorize": sh.auto_authorize.load(Ordering::Relaxed)}),
    )
    .into_response()
}

async fn lab_auto_authorize(State(sh): ApiState, req: Request) -> Response {
    let c = tri!(ctx(req).await);
    if c.method == Method::POST || c.method == Method::PUT {
        let body = tri!(c.json());
        let Some(enabled) = body.get("enabled").and_then(|v| v.as_bool()) else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "body must be {\"enabled\": bool}"})),
            )
                .into_response();
        };
        sh.auto_authorize.store(enabled, Ordering::Relaxed);
        if enabled {
            let newly: Vec<crate::state::FabricDevice> = {
                let mut st = sh.lock();
                let ids: Vec<u64> = st
                    .fabric
                    .values()
                    .filter(|d| !d.authorized)
                    .map(|d| d.id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| st.fabric_authorize(id, true))
                    .collect()
            };
            let _ = sh.persist().await;
            for d in newly {
                sh.bus.emit(EventKind::FabricDevice, json!({"id": d.id, "cn": d.cn, "authorized": true, "state": "authorized", "by": "lab"}));
            }
        }
    }
    axum::Json(json!({"enabled": sh.auto_authorize.load(Ordering::Relaxed)})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_forms() {
        assert_eq!(host_of("https://127.0.0.1:8443/api/v1/"), "127.0.0.1");
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("https://[::1]:1/x"), "::1");
        let v = form_to_json(form_urlencoded::parse(b"ids[]=1&ids[]=2&name=a").into_owned());
        assert_eq!(v, json!({"ids": ["1", "2"], "name": "a"}));
        let v = form_to_json(form_urlencoded::parse(b"ids=3").into_owned());
        assert_eq!(selectors(&v).unwrap(), vec![Selector::Id(3)]);
        let v = json!({"addresses": [{"ip": "10.0.0.1"}], "ids": [4, "5"]});
        assert_eq!(
            selectors(&v).unwrap(),
            vec![
                Selector::Id(4),
                Selector::Id(5),
                Selector::Ip("10.0.0.1".into())
            ]
        );
        assert!(selectors(&json!({"ids": [{}]})).is_err());
        assert_eq!(
            selectors(&json!({"ids": "[\"7\", \"8\"]"})).unwrap(),
            vec![Selector::Id(7), Selector::Id(8)]
        );
    }

    #[test]
    fn endpoint_rows_keep_the_listing_shape() {
        let mut ep = Endpoint {
            device_id: 7,
            uid: "A1B2".into(),
            name: "PC-1".into(),
            host: "PC-1".into(),
            ip_addr: "10.115.2.52".into(),
            mac_addr: "00:0c:29:00:00:01".into(),
            username: "alice".into(),
            group_path: "All Groups".into(),
            last_seen_ms: 99_500,
            ..Endpoint::default()
        };
        let v = endpoint_json(&ep, 100_000, 60_000, false);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "device_id",
                "name",
                "host",
                "ip_addr",
                "mac_addr",
                "username",
                "user_domain",
                "os_version",
                "fct_version",
                "fct_sn",
                "uid",
                "group_path",
                "groups",
                "last_seen",
                "is_ems_online",
                "is_ems_onnet",
                "is_ems_registered",
                "is_registered",
                "is_managed",
                "is_quarantined",
                "quarantine_message",
                "profile_name"
            ]
        );
        assert_eq!(v["groups"], json!([{"group_path": "All Groups"}]));
        assert_eq!(v["last_seen"], 99);
        assert_eq!(v["is_ems_online"], 1);
        assert_eq!(
            endpoint_json(&ep, 200_000, 60_000, false)["is_ems_online"],
            0
        );
        ep.quarantine = Some(crate::state::Quarantine {
            id: 3,
            code: "123456".into(),
            ..Default::default()
        });
        let v = endpoint_json(&ep, 100_000, 60_000, true);
        assert_eq!(v["is_quarantined"], 1);
        assert_eq!(v["quarantine_access_code"], "123456");
        assert_eq!(v["quarantine"]["id"], 3);
    }
}
