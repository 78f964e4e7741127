//! The lab dashboard served by `fortilab up` (the `dashboard` URL of the ready file).
//!
//! Plain HTTP on loopback; the browser talks only to this server, which calls the devices'
//! vendor APIs on behalf of the panels and buttons (with the lab CA). Assets are embedded in
//! the binary: no build step, works offline. Every request passes [`guard`]: the `Host` and
//! `Origin` checks and the sign-in (lab token once in the URL, then an `HttpOnly`
//! `SameSite=Strict` cookie; scripts send `X-Fortilab-Token`).
//!
//! | path | what |
//! |---|---|
//! | `GET /` , `/assets/*` | the page (HTML, CSS, JS) |
//! | `GET /api/lab` | the ready report |
//! | `GET /api/events/catalog` | the event catalog (kinds, fields, dashboard hints; also embedded in the page) |
//! | `GET /api/events` | the merged timeline, server-sent events in batches (`id` = generation:index, resumable with `Last-Event-ID`) |
//! | `GET /api/state`, `/api/state/stream` | device state for panels and topology (polled through the vendor APIs while a browser watches) |
//! | `GET /api/scenarios`, `POST /api/scenario/run`, `POST /api/scenario/{pause,step,resume,stop}` | the scenario player |
//! | `POST /api/lab/reset`, `POST /api/lab/speed` | restart the lab (same seed; new speed) |
//! | `POST /api/device/{device}/{kill,stop,start,restart}` | device control |
//! | `POST /api/faz/ack`, `/api/faz/logsearch`, `/api/ems/{quarantine,unquarantine}`, `/api/endpoint/{name}/{fetch,access-code}` | buttons (vendor APIs; endpoints' lab surface) |
//! | `GET /_lab/exercise`, `POST /_lab/exercise/{hint,restart}` | the running exercise's progress (`fortilab exercise`; the classroom reads it), a hint, start a task over; `GET /api/exercise` is the panel's fuller view |
//! | `POST /_lab/inject` | lab surface of the dashboard itself: synthetic timeline events (load test) |

pub mod guard;
pub mod library;
pub mod player;
pub mod session;
pub mod state;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::player::Player;
use self::session::LabSession;
use self::state::StatePoller;
use fortilab_core::EventKind;

const INDEX: &str = include_str!("../../assets/dashboard.html");
const CSS: &str = include_str!("../../assets/dashboard.css");
const JS: &str = include_str!("../../assets/dashboard.js");

/// Events per server-sent `batch` message at most.
const BATCH: usize = 1000;

#[derive(Clone)]
struct App {
    session: Arc<LabSession>,
    poller: Arc<StatePoller>,
    player: Arc<Player>,
    shutdown: CancellationToken,
}

/// The supervised task that polls the panels' state.
pub const POLLER_TASK: &str = "dashboard: state poller";
/// The supervised task serving the dashboard's HTTP listener.
pub const SERVER_TASK: &str = "dashboard: server";

/// Serves the dashboard on `listener` until `shutdown`.
pub fn serve(
    listener: tokio::net::TcpListener,
    session: Arc<LabSession>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let poller = Arc::new(StatePoller::new());
    {
        let (p, s, stop) = (poller.clone(), session.clone(), shutdown.clone());
        session
            .supervisor
            .spawn(POLLER_TASK, shutdown.clone(), move || {
                p.clone().run(s.clone(), stop.clone())
            });
    }
    let port = listener.local_addr()?.port();
    let token = session.lab_token().clone();
    // `/_lab/tasks` is answered by lab-core's HTTP server from this supervisor.
    let sup = session.supervisor.clone();
    let app = App {
        session,
        poller,
        player: Arc::new(Player::new()),
        shutdown: shutdown.clone(),
    };
    let guard = Arc::new(guard::Guard::new(token.clone(), port));
    let router = router(app).layer(axum::middleware::from_fn_with_state(
        guard,
        guard::middleware,
    ));
    let opts = fortilab_core::http::HttpOptions::from_env(token.clone()).unwrap_or_else(|err| {
        tracing::warn!("{err}; the dashboard keeps the default request head timeout");
        fortilab_core::http::HttpOptions::new(token)
    });
    let opts = opts.with_supervisor(sup.clone());
    // Supervised like the orchestrator's other tasks: a panicked server is reported and
    // restarted on the same listening socket (the player, the poller and the session go on).
    sup.spawn_tcp(SERVER_TASK, listener, shutdown.clone(), move |l| {
        let (router, opts, sd) = (router.clone(), opts.clone(), shutdown.clone());
        async move {
            if let Err(e) = fortilab_core::http::serve_http(l, router, opts, sd).await {
                tracing::error!(error = %e, "dashboard server failed");
            }
        }
    })
}

/// The URL that signs a browser in once (`fortilab up` prints it): the dashboard URL with
/// `?token=<lab_token>`.
pub fn sign_in_url(dashboard: &str, token: &fortilab_core::secrets::LabToken) -> String {
    format!("{dashboard}?token={}", token.as_str())
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .route("/api/lab", get(lab))
        .route("/api/events", get(events))
        .route("/api/events/catalog", get(event_catalog))
        .route("/api/state", get(state_now))
        .route("/api/state/stream", get(state_stream))
        .route("/api/scenarios", get(scenarios))
        .route("/api/scenario", get(player_state))
        .route("/api/scenario/run", post(scenario_run))
        .route("/api/scenario/{cmd}", post(scenario_control))
        .route("/api/lab/reset", post(lab_reset))
        .route("/api/lab/speed", post(lab_speed))
        .route("/api/device/{device}/{action}", post(device_action))
        .route("/api/faz/ack", post(faz_ack))
        .route("/api/faz/logsearch", post(faz_logsearch))
        .route("/api/ems/{action}", post(ems_action))
        .route("/api/endpoint/{name}/{action}", post(endpoint_action))
        .route("/api/links", get(links_get))
        .route("/api/link", post(link_set))
        .route("/_lab/links", get(links_get))
        .route("/_lab/link", post(link_set))
        .route("/api/exercise", get(exercise_panel))
        .route("/api/exercise/hint", post(exercise_hint))
        .route("/api/exercise/restart", post(exercise_restart))
        .route("/_lab/exercise", get(exercise_status))
        .route("/_lab/exercise/hint", post(exercise_hint))
        .route("/_lab/exercise/restart", post(exercise_restart))
        .route("/_lab/inject", post(inject))
        .route("/_lab/snapshot", post(snapshot_op))
        .route("/_lab/snapshots", get(snapshot_list))
        .route("/api/snapshot", post(snapshot_op))
        .route("/api/snapshots", get(snapshot_list))
        .route("/_lab/ready", get(ready_report))
        .route("/_lab/health", get(|| async { Json(json!({"ok": true})) }))
        .with_state(app)
}

/// Binds the dashboard's listener on loopback.
pub async fn bind() -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    fortilab_core::http::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// The page with its style sheet inlined (no render-blocking second request before the first
/// paint).
fn page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        INDEX
            .replace(
                r#"<link rel="stylesheet" href="/assets/dashboard.css">"#,
                &format!("<style>\n{CSS}</style>"),
            )
            .replace(
                r#"<script id="event-catalog" type="application/json">{}</script>"#,
                &format!(
                    r#"<script id="event-catalog" type="application/json">{}</script>"#,
                    catalog_for_page()
                ),
            )
    })
}

/// The event catalog as JSON safe inside a `<script>` element (no `</`), without the fields'
/// descriptions the script does not use (a smaller page; `/api/events/catalog` has them).
fn catalog_for_page() -> String {
    let mut catalog = fortilab_core::events::catalog::catalog_json();
    if let Some(kinds) = catalog["kinds"].as_object_mut() {
        for kind in kinds.values_mut() {
            if let Some(k) = kind.as_object_mut() {
                k.remove("fields");
            }
        }
    }
    catalog.to_string().replace("</", "<\\/")
}

async fn event_catalog() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(fortilab_core::events::catalog::catalog_json()),
    )
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(page()))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
}

async fn lab(State(s): State<App>) -> Json<Value> {
    Json(s.session.report())
}

fn err(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({"ok": false, "error": msg.to_string()}))).into_response()
}

// ------------------------------------------------------------------------------ timeline

#[derive(Deserialize)]
struct EventsQuery {
    /// `generation:index` to resume from (as `Last-Event-ID`).
    since: Option<String>,
}

fn parse_resume(s: &str) -> Option<(u64, u64)> {
    let (g, i) = s.split_once(':')?;
    Some((g.trim().parse().ok()?, i.trim().parse().ok()?))
}

fn batch_event(events: &[Value], generation: u64, next: u64) -> Event {
    Event::default()
        .event("batch")
        .id(format!("{generation}:{next}"))
        .data(Value::Array(events.to_vec()).to_string())
}

/// The merged timeline as server-sent events: `hello` (generation, resume point), then
/// `batch` messages (JSON arrays of events, `id` = `generation:next index`); a lab reset ends
/// the stream so the browser reconnects into the new generation (`hello` with `reset: true`).
async fn events(
    State(s): State<App>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.since)
        .and_then(|s| parse_resume(&s));
    let (want_gen, since) = resume.unwrap_or((0, 0));
    let timeline = s.session.timeline.clone();
    let a = timeline.attach(want_gen, since);
    let generation = a.generation;
    let reset = resume.is_some() && want_gen != generation;
    let shutdown = s.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        let mut next = a.first + a.events.len() as u64;
        let hello = json!({"generation": generation, "first": a.first, "missed": a.missed,
                           "tz_minutes": timeline.clock().tz_minutes(),
                           "resumed": resume.is_some() && !reset, "reset": reset, "kept": a.events.len()});
        if tx
            .send(
                Event::default()
                    .event("hello")
                    .retry(Duration::from_millis(500))
                    .data(hello.to_string()),
            )
            .await
            .is_err()
        {
            return;
        }
        let mut i = a.first;
        for chunk in a.events.chunks(BATCH) {
            i += chunk.len() as u64;
            if tx.send(batch_event(chunk, generation, i)).await.is_err() {
                return;
            }
        }
        let mut rx = a.rx;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => r,
            };
            let mut buf = Vec::new();
            let mut lagged = 0u64;
            match first {
                Ok(v) => buf.push(v),
                Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                Err(broadcast::error::RecvError::Closed) => return,
            }
            while buf.len() < BATCH {
                match rx.try_recv() {
                    Ok(v) => buf.push(v),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                    Err(_) => break,
                }
            }
            if timeline.generation() != generation {
                // A lab reset: the browser reconnects and starts over.
                return;
            }
            if lagged > 0 {
                next += lagged;
                let gap = json!({"kind": "gap", "device": "fortilab", "ts": timeline.clock().now_ns(),
                                 "missed": lagged, "summary": format!("{lagged} events skipped (this browser connection was too slow)")});
                if tx
                    .send(batch_event(&[gap], generation, next))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            next += buf.len() as u64;
            if !buf.is_empty() && tx.send(batch_event(&buf, generation, next)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a bounded channel (back-pressure: a slow browser slows its
/// own feeder, which then sees `Lagged` and reports a gap).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

// ------------------------------------------------------------------------------ state

fn compose(state: &Value, player: &Value) -> String {
    let mut v = state.clone();
    v["player"] = player.clone();
    v.to_string()
}

async fn state_now(State(s): State<App>) -> Response {
    let st = if s.poller.viewers() > 0 {
        s.poller.latest()
    } else {
        s.poller.poll_now(&s.session).await
    };
    let p = serde_json::to_value(s.player.state()).unwrap_or(Value::Null);
    (
        [(header::CONTENT_TYPE, "application/json")],
        compose(&st, &p),
    )
        .into_response()
}

/// Panel state as server-sent events (`state`), sent whenever a poll or the player changes.
async fn state_stream(State(s): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let guard = s.poller.viewer();
    let mut st_rx = s.poller.subscribe();
    let mut pl_rx = s.player.watch();
    let player = s.player.clone();
    let shutdown = s.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        let _guard = guard;
        loop {
            let st = st_rx.borrow_and_update().clone();
            let _ = pl_rx.borrow_and_update();
            let p = serde_json::to_value(player.state()).unwrap_or(Value::Null);
            if tx
                .send(
                    Event::default()
                        .event("state")
                        .retry(Duration::from_millis(500))
                        .data(compose(&st, &p)),
                )
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = st_rx.changed() => if r.is_err() { return },
                r = pl_rx.changed() => if r.is_err() { return },
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ------------------------------------------------------------------------------ player

async fn scenarios() -> Json<Value> {
    Json(library::list())
}

async fn player_state(State(s): State<App>) -> Json<Value> {
    Json(serde_json::to_value(s.player.state()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
struct RunReq {
    file: String,
    /// Restart the lab with the scenario's own lab first (default true).
    #[serde(default = "yes")]
    fresh: bool,
    /// Wait for `step` / `resume` before the first step.
    #[serde(default)]
    paused: bool,
}

fn yes() -> bool {
    true
}

async fn scenario_run(State(s): State<App>, Json(r): Json<RunReq>) -> Response {
    let entry = match library::get(&r.file) {
        Ok(e) => e,
        Err(e) => return err(StatusCode::NOT_FOUND, e),
    };
    match s.player.start(s.session.clone(), entry, r.fresh, r.paused) {
        Ok(st) => Json(json!({"ok": true, "player": st})).into_response(),
        Err(e) => err(StatusCode::CONFLICT, e),
    }
}

async fn scenario_control(State(s): State<App>, Path(cmd): Path<String>) -> Response {
    match s.player.control(&cmd) {
        Ok(st) => Json(json!({"ok": true, "player": st})).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

// ------------------------------------------------------------------------------ lab control

#[derive(Deserialize, Default)]
struct ResetReq {
    #[serde(default)]
    speed: Option<f64>,
}

fn restart_in_background(s: &App, speed: Option<f64>) -> Response {
    if s.player.state().active() {
        return err(StatusCode::CONFLICT, "a scenario is running: stop it first");
    }
    let session = s.session.clone();
    tokio::spawn(async move {
        if let Err(e) = session.reset(None, speed).await {
            tracing::warn!("lab reset failed: {e:#}");
        }
    });
    Json(json!({"ok": true, "status": "restarting"})).into_response()
}

async fn lab_reset(State(s): State<App>, body: axum::body::Bytes) -> Response {
    let speed = serde_json::from_slice::<ResetReq>(&body)
        .ok()
        .and_then(|b| b.speed);
    restart_in_background(&s, speed)
}

async fn lab_speed(State(s): State<App>, Json(r): Json<ResetReq>) -> Response {
    match r.speed {
        Some(sp) if sp.is_finite() && sp > 0.0 => restart_in_background(&s, Some(sp)),
        _ => err(StatusCode::BAD_REQUEST, "speed must be a positive number"),
    }
}

async fn device_action(
    State(s): State<App>,
    Path((device, action)): Path<(String, String)>,
) -> Response {
    match s.session.device(&device, &action).await {
        Ok(m) => Json(json!({"ok": true, "message": m})).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

#[derive(Deserialize)]
struct SnapshotReq {
    op: String,
    name: String,
}

/// Saves or restores a lab snapshot: `{"op": "save"|"restore", "name"}`; answers the
/// snapshot's description and the lab clock after the operation.
async fn snapshot_op(State(s): State<App>, body: axum::body::Bytes) -> Response {
    let r: SnapshotReq = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("bad snapshot request: {e}"),
            )
        }
    };
    let Some(op) = crate::snapshot::SnapshotOp::parse(&r.op) else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("unknown snapshot operation {:?} (save or restore)", r.op),
        );
    };
    if let Err(e) = crate::snapshot::validate_name(&r.name) {
        return err(StatusCode::BAD_REQUEST, e.to_string());
    }
    match s.session.snapshot(op, &r.name).await {
        Ok(info) => {
            let clock = s.session.report()["clock"].clone();
            Json(json!({"ok": true, "snapshot": info, "clock": clock})).into_response()
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let status = if msg.contains("no snapshot named") || msg.contains("not of this lab") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            err(status, msg)
        }
    }
}

async fn snapshot_list(State(s): State<App>) -> Response {
    Json(json!({"snapshots": s.session.snapshots()})).into_response()
}

// ------------------------------------------------------------------------------ buttons

fn clients(s: &App) -> Option<Arc<session::Clients>> {
    s.session.clients()
}

fn restarting() -> Response {
    err(StatusCode::SERVICE_UNAVAILABLE, "the lab is restarting")
}

/// Records a button's vendor-API call (request and answer) in the timeline.
fn note_call(
    s: &App,
    summary: String,
    api: &str,
    request: Value,
    response: &Result<Value, String>,
) {
    let (ok, resp) = match response {
        Ok(v) => (true, v.clone()),
        Err(e) => (false, json!({"error": e})),
    };
    s.session.timeline.note(
        EventKind::DashboardCall,
        json!({"summary": summary, "api": api, "ok": ok, "request": request, "response": resp}),
    );
    s.session.changed.notify_waiters();
}

/// The lab's links: condition, counters and relays of each.
async fn links_get(State(s): State<App>) -> Response {
    match clients(&s) {
        Some(c) => Json(c.links.report()).into_response(),
        None => restarting(),
    }
}

/// Sets a link's condition: `{"a","b","state","latency","loss","rate"}` (what is left out is
/// clean). Recorded in the timeline as `link.fault`.
async fn link_set(State(s): State<App>, body: axum::body::Bytes) -> Response {
    let spec: crate::links::LinkSpec = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad link request: {e}")),
    };
    let Some(c) = clients(&s) else {
        return restarting();
    };
    match c.links.apply(&spec) {
        Ok(report) => {
            let summary =
                crate::scenario::describe(&crate::scenario::StepKind::Link { spec: spec.clone() });
            s.session.timeline.note(
                EventKind::LinkFault,
                json!({"summary": summary, "link": report}),
            );
            s.session.changed.notify_waiters();
            Json(json!({"ok": true, "link": report})).into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct AckReq {
    ip: String,
    #[serde(default)]
    comment: Option<String>,
}

async fn faz_ack(State(s): State<App>, Json(r): Json<AckReq>) -> Response {
    let Some(c) = clients(&s) else {
        return restarting();
    };
    let comment = r
        .comment
        .unwrap_or_else(|| "acknowledged from the fortilab dashboard".into());
    let params = json!({"events": [{"source-ip": r.ip, "comment": comment}]});
    let url = "/ioc/adom/root/events/ack";
    let body = crate::clients::Faz::rpc_body("update", url, params.clone(), true);
    let res = c
        .faz
        .rpc("update", url, params, true)
        .await
        .map_err(|e| format!("{e:#}"));
    note_call(
        &s,
        format!("FortiAnalyzer: acknowledge compromised host {}", r.ip),
        "FortiAnalyzer JSON-RPC POST /jsonrpc",
        body,
        &res,
    );
    match res {
        Ok(v) => Json(json!({"ok": true, "result": v})).into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

#[derive(Deserialize)]
struct SearchReq {
    #[serde(default = "default_logtype")]
    logtype: String,
    #[serde(default)]
    filter: String,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_logtype() -> String {
    "traffic".into()
}

fn default_limit() -> u64 {
    50
}

async fn faz_logsearch(State(s): State<App>, Json(r): Json<SearchReq>) -> Response {
    let Some(c) = clients(&s) else {
        return restarting();
    };
    let res: anyhow::Result<Value> = async {
        let add = c
            .faz
            .rpc(
                "add",
                "/logview/adom/root/logsearch",
                json!({"logtype": r.logtype, "filter": r.filter, "device": [{"devid": "All_Devices"}], "time-order": "desc"}),
                true,
            )
            .await?;
        let tid = add
            .get("tid")
            .and_then(|t| t.as_u64().map(|n| n.to_string()).or_else(|| t.as_str().map(str::to_string)))
            .ok_or_else(|| anyhow::anyhow!("logsearch gave no tid: {add}"))?;
        let mut got = Value::Null;
        for _ in 0..100 {
            got = c
                .faz
                .rpc(
                    "get",
                    &format!("/logview/adom/root/logsearch/{tid}"),
                    json!({"limit": r.limit.min(500), "offset": 0}),
                    true,
                )
                .await?;
            if got.get("percentage").and_then(Value::as_u64).unwrap_or(100) >= 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(got)
    }
    .await;
    match res {
        Ok(v) => Json(json!({"ok": true, "result": v})).into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    }
}

#[derive(Deserialize)]
struct IpReq {
    ip: String,
}

async fn ems_action(
    State(s): State<App>,
    Path(action): Path<String>,
    Json(r): Json<IpReq>,
) -> Response {
    if action != "quarantine" && action != "unquarantine" {
        return err(
            StatusCode::NOT_FOUND,
            format!("unknown EMS action {action:?}"),
        );
    }
    let Some(c) = clients(&s) else {
        return restarting();
    };
    let rec = match c.ems.endpoint_by_ip(&r.ip).await {
        Ok(Some(rec)) => rec,
        Ok(None) => return err(StatusCode::NOT_FOUND, format!("EMS does not know {}", r.ip)),
        Err(e) => return err(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    };
    let body = json!({"ids": [rec.get("device_id").cloned().unwrap_or(Value::Null)]});
    let path = format!("clients/{action}");
    let res = c
        .ems
        .call("POST", &path, Some(&body))
        .await
        .map_err(|e| format!("{e:#}"));
    // The access code EMS shows for a quarantined endpoint.
    let code = if res.is_ok() && action == "quarantine" {
        c.ems
            .endpoint_by_ip(&r.ip)
            .await
            .ok()
            .flatten()
            .and_then(|e| e.get("quarantine_access_code").cloned())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    note_call(
        &s,
        format!("EMS: {action} {}", r.ip),
        &format!("EMS REST POST /api/v1/{path}"),
        body,
        &res,
    );
    match res {
        Ok(v) => Json(json!({"ok": true, "result": v, "access_code": code})).into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

#[derive(Deserialize)]
struct EndpointReq {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

async fn endpoint_action(
    State(s): State<App>,
    Path((name, action)): Path<(String, String)>,
    Json(r): Json<EndpointReq>,
) -> Response {
    let Some(c) = clients(&s) else {
        return restarting();
    };
    let body = match action.as_str() {
        "fetch" => json!({"url": r.url.unwrap_or_default()}),
        "access-code" => json!({"code": r.code.unwrap_or_default()}),
        other => {
            return err(
                StatusCode::NOT_FOUND,
                format!("unknown endpoint action {other:?}"),
            )
        }
    };
    if action == "fetch" {
        // The start of the fetch (the endpoint reports it when it is over).
        s.session.timeline.note(
            EventKind::DashboardBrowse,
            json!({"summary": format!("{name}: browse {}", body["url"].as_str().unwrap_or("")),
                   "action": "fetch", "endpoint": name, "url": body["url"]}),
        );
    }
    let res = c
        .endpoints
        .post(&name, &action, body.clone())
        .await
        .map_err(|e| format!("{e:#}"));
    let what = if action == "fetch" {
        format!("{name}: browse {}", body["url"].as_str().unwrap_or(""))
    } else {
        format!("{name}: enter quarantine access code")
    };
    note_call(
        &s,
        what,
        &format!("endpoint lab surface POST {{control}}/_lab/{action}"),
        body,
        &res,
    );
    match res {
        Ok(v) => Json(json!({"ok": true, "result": v})).into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

// ------------------------------------------------------------------------------ lab surface

#[derive(Deserialize)]
struct InjectReq {
    /// Events per second.
    #[serde(default = "default_rate")]
    rate: u64,
    /// How many events in all.
    #[serde(default = "default_count")]
    count: u64,
}

fn default_rate() -> u64 {
    1000
}

fn default_count() -> u64 {
    5000
}

/// Synthetic timeline events (`device: "synthetic"`, `kind: "synthetic.tick"`, `n` from 1) at
/// `rate` per second, for the dashboard's load test. Answers at once; the events follow.
/// The lab's ready report with the lab CA certificate inline (`ca_pem`), for `fortilab run
/// --attach http://127.0.0.1:P/_lab/ready` (the lab token is required, as on every `/_lab/`
/// route).
async fn ready_report(State(s): State<App>) -> Response {
    let mut r = s.session.report();
    if let Some(pem) = r["ca_cert"]
        .as_str()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        r["ca_pem"] = json!(pem);
    }
    Json(r).into_response()
}

async fn inject(State(s): State<App>, Json(r): Json<InjectReq>) -> Response {
    if r.rate == 0 || r.rate > 100_000 || r.count > 10_000_000 {
        return err(
            StatusCode::BAD_REQUEST,
            "rate 1..100000, count up to 10,000,000",
        );
    }
    let timeline = s.session.timeline.clone();
    let shutdown = s.shutdown.clone();
    let run = json!(timeline.clock().now_ns());
    let run_id = run.clone();
    tokio::spawn(async move {
        let run = run_id;
        let t0 = tokio::time::Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while sent < r.count {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due = ((t0.elapsed().as_secs_f64() * r.rate as f64) as u64 + 1).min(r.count);
            let clock = timeline.clock();
            while sent < due {
                sent += 1;
                timeline.push(json!({"ts": clock.now_ns(), "device": "synthetic", "kind": EventKind::SyntheticTick.name(),
                                     "n": sent, "of": r.count, "run": run, "summary": format!("synthetic event {sent} of {}", r.count)}));
            }
        }
    });
    Json(json!({"ok": true, "rate": r.rate, "count": r.count, "run": run})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_its_style_sheet() {
        assert!(page().contains("<style>") && page().contains("--fs: 18px"));
        assert!(!page().contains("/assets/dashboard.css"));
        assert!(page().contains("/assets/dashboard.js"));
    }

    #[test]
    fn resume_ids() {
        assert_eq!(parse_resume("3:1200"), Some((3, 1200)));
        assert_eq!(parse_resume("x"), None);
        assert_eq!(parse_resume("1:"), None);
    }
}

// ------------------------------------------------------------------------------ exercise

#[derive(Deserialize)]
struct TaskReq {
    task: String,
}

fn no_exercise() -> Response {
    err(
        StatusCode::NOT_FOUND,
        "no exercise runs in this lab (start one with `fortilab exercise FILE`)",
    )
}

/// `GET /_lab/exercise`: the progress (the classroom reads this shape; keep it).
async fn exercise_status(State(s): State<App>) -> Response {
    match s.session.exercise() {
        Some(x) => Json(x.status_json()).into_response(),
        None => no_exercise(),
    }
}

/// `GET /api/exercise`: the panel's view (texts, revealed hints, what the checks saw).
async fn exercise_panel(State(s): State<App>) -> Response {
    match s.session.exercise() {
        Some(x) => Json(x.panel_json()).into_response(),
        None => Json(json!({"exercise": null})).into_response(),
    }
}

async fn exercise_hint(State(s): State<App>, Json(r): Json<TaskReq>) -> Response {
    let Some(x) = s.session.exercise() else {
        return no_exercise();
    };
    match x.hint(&r.task) {
        Ok((n, text)) => {
            Json(json!({"ok": true, "task": r.task, "hint": n, "text": text})).into_response()
        }
        Err(e) => err(StatusCode::CONFLICT, format!("{e:#}")),
    }
}

async fn exercise_restart(State(s): State<App>, Json(r): Json<TaskReq>) -> Response {
    let Some(x) = s.session.exercise() else {
        return no_exercise();
    };
    if x.exercise.task_index(&r.task).is_none() {
        return err(
            StatusCode::NOT_FOUND,
            format!("no task {:?} in this exercise", r.task),
        );
    }
    match x.restart(&r.task).await {
        Ok(()) => {
            Json(json!({"ok": true, "task": r.task, "progress": x.status_json()})).into_response()
        }
        Err(e) => err(StatusCode::CONFLICT, format!("{e:#}")),
    }
}
