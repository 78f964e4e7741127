//! HTTPS surface: `POST /jsonrpc` (vendor) and `/_lab/*` (lab).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fortilab_core::http::ConnInfo;
use fortilab_core::logchan::LogReceiver;
use fortilab_core::EventKind;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faz::Faz;
use crate::jsonrpc::{self, ApiState, Caller};

/// Shared by the handlers.
pub struct App {
    pub faz: Arc<Faz>,
    pub api: ApiState,
    pub receiver: Option<LogReceiver>,
    /// The data directory (`--data-dir`): what a lab snapshot copies besides the store.
    pub data_dir: Option<std::path::PathBuf>,
}

pub fn router(app: Arc<App>) -> Router {
    let events = Router::new()
        .route("/_lab/events", get(fortilab_core::events::sse_handler))
        .with_state(app.faz.bus.clone());
    Router::new()
        .route("/jsonrpc", post(jsonrpc_handler).get(method_not_allowed))
        .route("/_lab/health", get(health))
        .route("/_lab/stats", get(stats))
        .route("/_lab/auto-authorize", get(auto_get).post(auto_set))
        .route("/_lab/seq/{serial}", get(seq_stats))
        .route("/_lab/ioc/cycle", post(ioc_cycle))
        .route("/_lab/tidb", get(tidb_info))
        .route("/_lab/tidb/lookup", post(tidb_lookup))
        .route(fortilab_core::snapshot::ROUTE, post(snapshot))
        .layer(DefaultBodyLimit::max(4 * jsonrpc::MAX_BODY))
        .with_state(app)
        .merge(events)
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn jsonrpc_handler(
    State(app): State<Arc<App>>,
    Extension(conn): Extension<ConnInfo>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|s| s.trim().to_string());
    if body.len() > jsonrpc::MAX_BODY {
        // The documented answer to an oversized request (fidelity-faz.md): HTTP 413.
        app.faz.counters.oversized.fetch_add(1, Ordering::Relaxed);
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"jsonrpc": "2.0", "error": {"code": -32600,
                    "message": format!("Request body too large (over {} bytes)", jsonrpc::MAX_BODY)},
                    "id": null}),
        );
    }
    let caller = Caller {
        token: bearer.or(q.access_token),
        peer: conn.peer.to_string(),
    };
    let app2 = app.clone();
    let res =
        tokio::task::spawn_blocking(move || jsonrpc::handle(&app2.faz, &app2.api, &body, &caller))
            .await;
    match res {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            tracing::error!(error = %e, "jsonrpc handler panicked");
            app.faz.counters.api_errors.fetch_add(1, Ordering::Relaxed);
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"jsonrpc": "2.0", "error": {"code": -32603, "message": "Internal error"}, "id": null}),
            )
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "use POST /jsonrpc\n",
    )
        .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    Json(
        json!({"ok": true, "device": app.faz.bus.device(), "serial": app.faz.id.serial, "kind": "fortianalyzer"}),
    )
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let faz = app.faz.clone();
    let receiver = app.receiver.clone();
    let v = tokio::task::spawn_blocking(move || {
        let sc = &faz.store.counters;
        let devices: Vec<Value> = faz
            .devices
            .list()
            .iter()
            .map(|d| {
                json!({"sn": d.sn, "name": d.name, "authorized": d.authorized, "connected": d.connected,
                       "device_type": d.device_type, "via": d.via, "last_seq": faz.store.last_seq(&d.sn)})
            })
            .collect();
        let (bi, bd, bu, su) = faz.ioc.engine().tidb.counts();
        let eng = faz.ioc.engine();
        let listed = eng.listed().len();
        let days = eng.days.clone();
        drop(eng);
        let pending: usize = faz.notifications.pending_count();
        json!({
            "counters": faz.counters.snapshot(),
            "rawlog": faz.rawlog.snapshot(),
            "tasks": faz.supervisor.stats(),
            "store": {
                "inserted": sc.inserted.load(Ordering::Relaxed), "duplicates": sc.duplicates.load(Ordering::Relaxed),
                "commits": sc.commits.load(Ordering::Relaxed), "seq_gaps": sc.seq_gaps.load(Ordering::Relaxed), "size_bytes": faz.store.size_bytes().ok(),
            },
            "receiver": receiver.as_ref().map(|r| serde_json::to_value(r.stats()).unwrap_or(Value::Null)),
            "sessions": receiver.as_ref().map(|r| serde_json::to_value(r.sessions()).unwrap_or(Value::Null)),
            "devices": devices,
            "tidb": {"black_ip": bi, "black_domain": bd, "black_url": bu, "suspicious_url": su},
            "compromised_hosts": listed,
            "ioc_days": days,
            "pending_notifications": pending,
            "auto_authorize": faz.devices.auto_authorize(),
        })
    })
    .await
    .unwrap_or(Value::Null);
    Json(v)
}

async fn auto_get(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"enabled": app.faz.devices.auto_authorize()}))
}

async fn auto_set(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            app.faz.counters.bad_json.fetch_add(1, Ordering::Relaxed);
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("bad JSON: {e}")}),
            );
        }
    };
    let Some(on) = v.get("enabled").and_then(|b| b.as_bool()) else {
        app.faz
            .counters
            .bad_requests
            .fetch_add(1, Ordering::Relaxed);
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "expected {\"enabled\": bool}"}),
        );
    };
    app.faz.devices.set_auto_authorize(on);
    app.faz
        .bus
        .emit(EventKind::LabAutoAuthorize, json!({"enabled": on}));
    if on {
        // Authorize every device waiting now.
        let waiting: Vec<String> = app
            .faz
            .devices
            .list()
            .into_iter()
            .filter(|d| !d.authorized)
            .map(|d| d.sn.clone())
            .collect();
        let faz = app.faz.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for sn in waiting {
                faz.authorize_device(&sn, None, None, "root");
            }
        })
        .await;
    }
    json_response(StatusCode::OK, &json!({"enabled": on}))
}

async fn seq_stats(State(app): State<Arc<App>>, Path(serial): Path<String>) -> Response {
    let faz = app.faz.clone();
    let r = tokio::task::spawn_blocking(move || {
        let last = faz.store.last_seq(&serial);
        faz.store.seq_stats(&serial).map(|(rows, distinct, min, max)| {
            json!({"serial": serial, "rows": rows, "distinct_seq": distinct, "min_seq": min, "max_seq": max, "last_seq": last})
        })
    })
    .await;
    match r {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "panicked"}),
        ),
    }
}

async fn ioc_cycle(State(app): State<Arc<App>>) -> Json<Value> {
    let faz = app.faz.clone();
    let _ = tokio::task::spawn_blocking(move || faz.ioc_cycle()).await;
    Json(json!({"ok": true}))
}

/// `POST /_lab/snapshot` (`{"dir"}`): the FortiAnalyzer's whole state into a new directory
/// while it runs on: a copy of the SQLite store (`store/logs.db`, `VACUUM INTO` between two
/// commits: logs, sequences, IOC results, compromised hosts, settings, registrations, the raw
/// log indexer's cursors) and then the other files of the data directory (the SSH host key,
/// the raw log files: copied after the store, so they hold at least every line the copied
/// cursors point past; the rest is indexed after a restore).
async fn snapshot(State(app): State<Arc<App>>, body: Bytes) -> Response {
    fortilab_core::snapshot::handle(&body, |dir| async move {
        tokio::task::spawn_blocking(move || {
            app.faz
                .store
                .backup_into(&dir.join("store"))
                .map(|_| ())
                .map_err(|e| e.to_string())?;
            if let Some(src) = &app.data_dir {
                fortilab_core::snapshot::copy_dir_except(src, &dir, &["store"])
                    .map_err(|e| format!("copying {}: {e}", src.display()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("snapshot task: {e}"))?
    })
    .await
}

async fn tidb_info(State(app): State<Arc<App>>) -> Json<Value> {
    let eng = app.faz.ioc.engine();
    let (bi, bd, bu, su) = eng.tidb.counts();
    Json(
        json!({"version": eng.tidb.version, "load_time": app.faz.display_time(eng.tidb.loaded_at),
                "black_ip": bi, "black_domain": bd, "black_url": bu, "suspicious_url": su}),
    )
}

/// `diagnose test application sqllogd 204 tidb`-style lookup.
async fn tidb_lookup(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let key = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(String::from));
    let Some(key) = key else {
        app.faz
            .counters
            .bad_requests
            .fetch_add(1, Ordering::Relaxed);
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "expected {\"key\": \"...\"}"}),
        );
    };
    let t = app.faz.ioc.engine().tidb.lookup(&key);
    let msg = match t {
        Some(t) => format!("{key} is in tidb type {}", tidb_type(t)),
        None => format!("{key} is not in tidb"),
    };
    json_response(
        StatusCode::OK,
        &json!({"key": key, "type": t.map(tidb_type), "message": msg}),
    )
}

fn tidb_type(t: crate::ioc::TidbType) -> &'static str {
    match t {
        crate::ioc::TidbType::BlackIp => "black_ip",
        crate::ioc::TidbType::BlackDomain => "black_domain",
        crate::ioc::TidbType::BlackUrl => "black_url",
        crate::ioc::TidbType::SuspiciousUrl => "suspicious_url",
    }
}
