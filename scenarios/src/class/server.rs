//! The class's pages: the instructor page (every lab: trainee, progress per task, last
//! activity, reset and restore, a link to its dashboard) and one trainee page per lab (its
//! credentials and consoles, the exercise). Each is its own loopback listener behind the
//! dashboard's [`Guard`] with its own token: the instructor token opens the instructor page
//! only, a trainee's token that trainee's page only (sign-in URL `?token=`, then an
//! `HttpOnly; SameSite=Strict` cookie named after the port; scripts send `X-Fortilab-Token`).
//!
//! | listener | path | what |
//! |---|---|---|
//! | instructor | `GET /` | the page |
//! | instructor | `GET /api/class` | every lab (JSON; what `fortilab class status` prints) |
//! | instructor | `POST /api/lab/{i}/reset` | restart lab `i` with a fresh data directory |
//! | instructor | `POST /api/lab/{i}/restore` `{"name"}` | the lab dashboard's `/_lab/snapshot` (`op` restore) |
//! | trainee | `GET /` | the page |
//! | trainee | `GET /api/me` | the lab's credentials, consoles, exercise progress |
//! | trainee | `GET /ca.pem` | the lab CA certificate |
//! | trainee | `GET /api/exercise` | the lab's exercise: task texts, revealed hints, starting snapshots (the lab dashboard's `GET /api/exercise`) |
//! | trainee | `POST /api/exercise/hint` `{"task"}` | reveal the task's next hint (the lab's `POST /_lab/exercise/hint`) |
//! | trainee | `POST /api/exercise/restart` `{"task"}` | start the task over: the lab snapshot taken when it began is restored (the lab's `POST /_lab/exercise/restart`) |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use fortilab_core::secrets::LabToken;

use super::labs::{ClassLab, RestoreError, StartSpec};
use crate::dashboard::guard::{self, Guard};

const INSTRUCTOR: &str = include_str!("../../assets/class_instructor.html");
const TRAINEE: &str = include_str!("../../assets/class_trainee.html");

/// A running class.
pub struct Class {
    pub labs: Vec<Arc<ClassLab>>,
    pub spec: StartSpec,
    pub instructor_token: LabToken,
    /// The exercise file's text (shown on the trainee pages).
    pub exercise_text: Option<String>,
    /// Unix ms of the last page view (progress is polled often while someone watches).
    pub last_view_ms: AtomicI64,
}

impl Class {
    pub fn viewed(&self) {
        self.last_view_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether a page was viewed in the last `secs` seconds.
    pub fn watched(&self, secs: i64) -> bool {
        now_ms() - self.last_view_ms.load(Ordering::Relaxed) < secs * 1000
    }

    pub fn json(&self) -> Value {
        json!({
            "labs": self.labs.iter().map(|l| l.instructor_json()).collect::<Vec<_>>(),
            "exercise": self.spec.exercise.as_ref().map(|p| p.display().to_string()),
            "note": self.spec.mode_note(),
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

fn err(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({"ok": false, "error": msg.to_string()}))).into_response()
}

/// Binds a loopback listener on a free port.
pub async fn bind() -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    fortilab_core::http::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    token: LabToken,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let g = Arc::new(Guard::new(token.clone(), port));
    let router = router.layer(axum::middleware::from_fn_with_state(g, guard::middleware));
    let opts = fortilab_core::http::HttpOptions::new(token);
    fortilab_core::http::serve_http(listener, router, opts, shutdown).await
}

// ------------------------------------------------------------------------------ instructor

/// Serves the instructor page until `shutdown`.
pub async fn serve_instructor(
    listener: tokio::net::TcpListener,
    class: Arc<Class>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let token = class.instructor_token.clone();
    let router = Router::new()
        .route("/", get(|| async { page(INSTRUCTOR) }))
        .route("/api/class", get(class_get))
        .route("/api/lab/{index}/reset", post(lab_reset))
        .route("/api/lab/{index}/restore", post(lab_restore))
        .route("/_lab/health", get(|| async { Json(json!({"ok": true})) }))
        .with_state(class);
    serve(listener, router, token, shutdown).await
}

async fn class_get(State(c): State<Arc<Class>>) -> Json<Value> {
    c.viewed();
    Json(c.json())
}

fn lab_of(c: &Class, index: usize) -> Option<Arc<ClassLab>> {
    c.labs.iter().find(|l| l.index == index).cloned()
}

fn no_lab(index: usize) -> Response {
    err(StatusCode::NOT_FOUND, format!("no lab {index}"))
}

async fn lab_reset(State(c): State<Arc<Class>>, Path(index): Path<usize>) -> Response {
    let Some(lab) = lab_of(&c, index) else {
        return no_lab(index);
    };
    tracing::info!(lab = index, "instructor: reset");
    match lab.reset(&c.spec).await {
        Ok(()) => Json(json!({"ok": true, "lab": lab.instructor_json()})).into_response(),
        Err(e) => err(StatusCode::CONFLICT, format!("{e:#}")),
    }
}

#[derive(Deserialize)]
struct RestoreBody {
    name: String,
}

async fn lab_restore(
    State(c): State<Arc<Class>>,
    Path(index): Path<usize>,
    Json(b): Json<RestoreBody>,
) -> Response {
    let Some(lab) = lab_of(&c, index) else {
        return no_lab(index);
    };
    tracing::info!(lab = index, snapshot = %b.name, "instructor: restore");
    match lab.restore(&b.name).await {
        Ok(v) => Json(json!({"ok": true, "result": v})).into_response(),
        Err(e @ RestoreError::NotAvailable) => (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error": e.to_string(), "available": false})),
        )
            .into_response(),
        Err(e @ RestoreError::NoSuchSnapshot(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error": e.to_string(), "available": true})),
        )
            .into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

// ------------------------------------------------------------------------------ trainee

#[derive(Clone)]
struct TraineeApp {
    class: Arc<Class>,
    lab: Arc<ClassLab>,
}

/// Serves one lab's trainee page until `shutdown`.
pub async fn serve_trainee(
    listener: tokio::net::TcpListener,
    class: Arc<Class>,
    lab: Arc<ClassLab>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let token = lab.token.clone();
    let router = Router::new()
        .route("/", get(|| async { page(TRAINEE) }))
        .route("/api/me", get(me))
        .route("/ca.pem", get(ca_pem))
        .route("/api/exercise", get(exercise_get))
        .route("/api/exercise/hint", post(exercise_hint))
        .route("/api/exercise/restart", post(exercise_restart))
        .route("/_lab/health", get(|| async { Json(json!({"ok": true})) }))
        .with_state(TraineeApp { class, lab });
    serve(listener, router, token, shutdown).await
}

async fn me(State(a): State<TraineeApp>) -> Json<Value> {
    a.class.viewed();
    let ready: Option<PathBuf> = a.lab.ready_file().await;
    let mut v = a.lab.trainee_json(ready.as_deref());
    v["exercise"] = json!({
        "file": a.class.spec.exercise.as_ref().map(|p| p.display().to_string()),
        "text": a.class.exercise_text,
        "note": a.class.spec.mode_note(),
    });
    Json(v)
}

async fn ca_pem(State(a): State<TraineeApp>) -> Response {
    let path = a.lab.trainee_json(None)["ca_cert"]
        .as_str()
        .map(PathBuf::from);
    match path.and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        None => err(StatusCode::NOT_FOUND, "the lab CA is not available"),
    }
}

#[derive(Deserialize)]
struct TaskBody {
    task: String,
}

/// The lab's answer passed on (its status and JSON), or `502` when the lab did not answer.
fn relay(r: Result<(reqwest::StatusCode, Value), String>) -> Response {
    match r {
        Ok((status, v)) => (
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(v),
        )
            .into_response(),
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

async fn exercise_get(State(a): State<TraineeApp>) -> Response {
    a.class.viewed();
    relay(
        a.lab
            .exercise_call(reqwest::Method::GET, "/api/exercise", None)
            .await,
    )
}

async fn exercise_hint(State(a): State<TraineeApp>, Json(b): Json<TaskBody>) -> Response {
    tracing::info!(lab = a.lab.index, task = %b.task, "trainee: hint");
    let r = a
        .lab
        .exercise_call(
            reqwest::Method::POST,
            "/_lab/exercise/hint",
            Some(&json!({"task": b.task})),
        )
        .await;
    a.lab.poll_progress().await;
    relay(r)
}

async fn exercise_restart(State(a): State<TraineeApp>, Json(b): Json<TaskBody>) -> Response {
    tracing::info!(lab = a.lab.index, task = %b.task, "trainee: start the task over");
    let r = a
        .lab
        .exercise_call(
            reqwest::Method::POST,
            "/_lab/exercise/restart",
            Some(&json!({"task": b.task})),
        )
        .await;
    a.lab.poll_progress().await;
    relay(r)
}
