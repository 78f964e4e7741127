//! The lab surface (`/_lab/...`) on the control listener (HTTPS, lab CA).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use fortilab_core::events::{self, EventBus};
use serde::Deserialize;

use crate::sites::Sites;

#[derive(Clone)]
struct St {
    sites: Arc<Sites>,
    lab_map: Arc<serde_json::Value>,
}

#[derive(Deserialize)]
struct DnsQ {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RatingQ {
    host: Option<String>,
    url: Option<String>,
}

/// The router: health, sites, DNS view, ratings, lab map entries and the event stream.
pub fn router(sites: Arc<Sites>, bus: EventBus, lab_map: serde_json::Value) -> Router {
    let st = St {
        sites,
        lab_map: Arc::new(lab_map),
    };
    let events = Router::new()
        .route("/_lab/events", get(events::sse_handler))
        .with_state(bus);
    Router::new()
        .route("/_lab/health", get(health))
        .route("/_lab/sites", get(sites_list))
        .route("/_lab/dns", get(dns))
        .route("/_lab/rating", get(rating))
        .route("/_lab/lab-map", get(lab_map_h))
        .with_state(st)
        .merge(events)
}

async fn health(State(st): State<St>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"ok": true, "device": "internet", "sites": st.sites.all().len()}))
}

async fn sites_list(State(st): State<St>) -> Json<serde_json::Value> {
    Json(serde_json::Value::Array(
        st.sites.all().iter().map(|s| s.summary()).collect(),
    ))
}

async fn lab_map_h(State(st): State<St>) -> Json<serde_json::Value> {
    Json((*st.lab_map).clone())
}

async fn dns(State(st): State<St>, Query(q): Query<DnsQ>) -> axum::response::Response {
    let Some(name) = q.name.filter(|n| !n.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "name is required"})),
        )
            .into_response();
    };
    match st.sites.resolve(&name) {
        Some(ip) => Json(serde_json::json!({"name": name, "type": "A", "ip": ip})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"name": name, "error": "NXDOMAIN"})),
        )
            .into_response(),
    }
}

/// The host part of a URL (`http://h:80/p` → `h`), or the text itself.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    authority.to_string()
}

async fn rating(State(st): State<St>, Query(q): Query<RatingQ>) -> axum::response::Response {
    let Some(host) = q
        .host
        .or(q.url.as_deref().map(host_of))
        .filter(|h| !h.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "host or url is required"})),
        )
            .into_response();
    };
    let (cat, desc) = st.sites.rating(&host);
    let site = st.sites.by_host(&host).map(|s| s.name.clone());
    Json(serde_json::json!({"host": crate::sites::normalize_host(&host), "category": cat, "catdesc": desc, "site": site}))
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_urls() {
        assert_eq!(
            super::host_of("http://www.eicar.org/download/eicar.com"),
            "www.eicar.org"
        );
        assert_eq!(
            super::host_of("https://u@h.example:8443/x?y"),
            "h.example:8443"
        );
        assert_eq!(super::host_of("195.22.28.198"), "195.22.28.198");
    }
}
