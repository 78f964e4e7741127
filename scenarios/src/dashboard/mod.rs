//! The lab dashboard served by `fortilab up` (the `dashboard` URL of the ready file).
//!
//! Assets are embedded in the binary: no build step, works offline. This first version shows
//! the lab's devices and the live merged timeline; `/api/lab` gives the ready report and
//! `/api/events` the timeline as server-sent events.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::timeline::Timeline;

const INDEX: &str = include_str!("../assets/dashboard.html");

#[derive(Clone)]
struct AppState {
    timeline: Timeline,
    report: Arc<Mutex<Value>>,
}

/// Serves the dashboard on `listener` until `shutdown`; `report` is the lab's ready report.
pub async fn serve(
    listener: tokio::net::TcpListener,
    timeline: Timeline,
    report: Arc<Mutex<Value>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/api/lab", get(lab))
        .route("/api/events", get(events))
        .with_state(AppState { timeline, report });
    fortilab_core::http::serve_http(listener, app, shutdown).await
}

/// Binds the dashboard's listener on loopback.
pub async fn bind() -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    fortilab_core::http::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

async fn index() -> impl IntoResponse {
    Html(INDEX)
}

async fn lab(State(s): State<AppState>) -> Json<Value> {
    Json(s.report.lock().unwrap().clone())
}

async fn events(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.timeline.subscribe();
    let past = s.timeline.snapshot();
    let head = stream::iter(
        past.into_iter()
            .map(|e| Ok(Event::default().data(e.to_string()))),
    );
    let live = stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((Ok(Event::default().data(e.to_string())), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let gap = serde_json::json!({"kind": "gap", "device": "fortilab", "summary": format!("{n} events skipped (browser too slow)")});
                Some((Ok(Event::default().data(gap.to_string())), rx))
            }
            Err(_) => None,
        }
    });
    Sse::new(head.chain(live)).keep_alive(KeepAlive::default())
}
