//! Who may use the dashboard, checked on every request before any handler runs.
//!
//! - **Host**: the `Host` header must name the address the dashboard listens on
//!   (`127.0.0.1:P`, or `localhost:P` / `[::1]:P` for the same port). A page on another site
//!   that rebinds its own DNS name to 127.0.0.1 sends its own name and is refused (`403`).
//! - **Origin**: a request with an `Origin` header must come from the dashboard's own origin;
//!   a state change (any method but GET/HEAD/OPTIONS) signed in by the cookie must carry its
//!   own origin (`Origin`, or `Sec-Fetch-Site: same-origin`). So a cross-origin form or
//!   `fetch` (`text/plain` POSTs need no CORS preflight) is refused (`403`) before it can
//!   restart anything, and the dashboard answers no CORS request.
//! - **Sign-in**: the URL `fortilab up` prints carries the lab token once
//!   (`/?token=<lab_token>`): the answer sets an `HttpOnly; SameSite=Strict` cookie and
//!   redirects (`303`) to the same URL without the token. After that the browser sends the
//!   cookie. Scripts send `X-Fortilab-Token: <lab_token>` instead (a custom header cannot be
//!   sent cross-origin without a CORS preflight, which the dashboard never grants). Anything
//!   else gets `401` (JSON for the API, a short page for the browser).
//!
//! The cookie holds a digest of the lab token, not the token, and its name carries the port
//! (cookies are shared by every port of a host, so two labs must not overwrite each other's).

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use fortilab_core::secrets::{constant_time_eq, LabToken, LAB_TOKEN_HEADER};

/// The dashboard's access rules for one listener.
#[derive(Clone)]
pub struct Guard {
    token: LabToken,
    port: u16,
    cookie_name: String,
    cookie_value: String,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Serve it.
    Allow,
    /// Answer with this (a refusal, or the sign-in redirect).
    Respond(Response),
}

impl Guard {
    pub fn new(token: LabToken, port: u16) -> Self {
        let mut h = Sha256::new();
        h.update(b"fortilab-dashboard-session:");
        h.update(token.as_str().as_bytes());
        Guard {
            cookie_value: hex::encode(h.finalize()),
            cookie_name: format!("fortilab_session_{port}"),
            token,
            port,
        }
    }

    /// The name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn allowed_host(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let port = self.port;
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]
        .contains(&host)
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| {
                k == self.cookie_name
                    && constant_time_eq(v.trim().as_bytes(), self.cookie_value.as_bytes())
            })
    }

    /// Decides on a request (pure: no I/O; unit-tested below).
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Decision {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.allowed_host(host) {
            return Decision::Respond(refuse(
                StatusCode::FORBIDDEN,
                "forbidden host",
                &format!(
                    "the dashboard answers only to Host 127.0.0.1:{} or localhost:{} (got {host:?})",
                    self.port, self.port
                ),
            ));
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if let Some(o) = origin {
            let same = o
                .strip_prefix("http://")
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host.trim()));
            if !same {
                return Decision::Respond(refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused",
                    &format!("Origin {o:?} is not this dashboard's origin"),
                ));
            }
        }
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes_state && matches!(fetch_site, Some(s) if s != "same-origin" && s != "none") {
            return Decision::Respond(refuse(
                StatusCode::FORBIDDEN,
                "cross-origin request refused",
                "state changes are accepted from the dashboard's own pages only",
            ));
        }
        // Scripts: the lab token in its header.
        if let Some(t) = headers.get(LAB_TOKEN_HEADER) {
            return if self.token.matches(t.as_bytes()) {
                Decision::Allow
            } else {
                Decision::Respond(refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid lab token",
                    "the X-Fortilab-Token header does not match this lab's token",
                ))
            };
        }
        // Browsers: the sign-in URL, once.
        if let Some(t) = query_token(uri) {
            if *method == Method::GET && self.token.matches(t.as_bytes()) {
                return Decision::Respond(self.sign_in(uri));
            }
            return Decision::Respond(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid lab token",
                "the token in this URL is not this lab's: open the URL fortilab up printed",
            ));
        }
        if self.cookie_ok(headers) {
            if changes_state && origin.is_none() && fetch_site != Some("same-origin") {
                return Decision::Respond(refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused",
                    "a state change must come from the dashboard's own page (Origin header)",
                ));
            }
            return Decision::Allow;
        }
        Decision::Respond(self.unauthorized(uri, headers))
    }

    fn sign_in(&self, uri: &Uri) -> Response {
        let location = without_token(uri);
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name, self.cookie_value
        );
        let mut r = StatusCode::SEE_OTHER.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::SET_COOKIE, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }

    fn unauthorized(&self, uri: &Uri, headers: &HeaderMap) -> Response {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if wants_html && !uri.path().starts_with("/api/") {
            let page = "<!doctype html><meta charset=utf-8><title>fortilab: sign in</title>\
                <h1>fortilab dashboard</h1><p>This dashboard needs the lab token. Open the \
                dashboard URL that <code>fortilab up</code> printed (it carries the token once), \
                or take <code>lab_token</code> from the ready file and open \
                <code>/?token=&lt;lab_token&gt;</code>.</p>";
            let mut r = (StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        refuse(
            StatusCode::UNAUTHORIZED,
            "lab token required",
            "sign in with the URL fortilab up printed, or send X-Fortilab-Token: <lab_token>",
        )
    }
}

fn refuse(status: StatusCode, error: &str, detail: &str) -> Response {
    let body = serde_json::json!({"ok": false, "status": status.as_u16(), "error": error, "detail": detail});
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (p.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn query_token(uri: &Uri) -> Option<String> {
    query_pairs(uri)
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// The request's path and query without the `token` parameter.
fn without_token(uri: &Uri) -> String {
    let rest: Vec<String> = query_pairs(uri)
        .into_iter()
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") })
        .collect();
    if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    }
}

/// The axum middleware around every dashboard route.
pub async fn middleware(
    axum::extract::State(guard): axum::extract::State<std::sync::Arc<Guard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match guard.check(req.method(), req.uri(), req.headers()) {
        Decision::Allow => next.run(req).await,
        Decision::Respond(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(LabToken::new("tok3n"), 4242)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Allow => 200,
            Decision::Respond(r) => r.status().as_u16(),
        }
    }

    #[test]
    fn sign_in_sets_a_strict_http_only_cookie_and_drops_the_token_from_the_url() {
        let g = guard();
        let uri: Uri = "/?token=tok3n&x=1".parse().unwrap();
        let Decision::Respond(r) =
            g.check(&Method::GET, &uri, &headers(&[("host", "127.0.0.1:4242")]))
        else {
            panic!("expected the sign-in redirect")
        };
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/?x=1");
        let cookie = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains("tok3n"),
            "the cookie is not the token: {cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_string();
        // The cookie signs the browser in, for reads and same-origin state changes.
        let h = headers(&[("host", "127.0.0.1:4242"), ("cookie", &pair)]);
        assert_eq!(
            status(g.check(&Method::GET, &"/api/lab".parse().unwrap(), &h)),
            200
        );
        let h = headers(&[
            ("host", "127.0.0.1:4242"),
            ("cookie", &pair),
            ("origin", "http://127.0.0.1:4242"),
        ]);
        assert_eq!(
            status(g.check(&Method::POST, &"/api/lab/reset".parse().unwrap(), &h)),
            200
        );
        // A wrong token in the URL signs nobody in.
        let bad = g.check(
            &Method::GET,
            &"/?token=nope".parse().unwrap(),
            &headers(&[("host", "127.0.0.1:4242")]),
        );
        assert_eq!(status(bad), 401);
    }

    #[test]
    fn cross_origin_state_changes_and_foreign_hosts_are_refused() {
        let g = guard();
        let pair = format!("{}={}", g.cookie_name, g.cookie_value);
        let reset: Uri = "/api/device/fortianalyzer/restart".parse().unwrap();
        // A page elsewhere posting text/plain (the browser would not even send the strict
        // cookie; if it did, the Origin still refuses it).
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            let h = headers(&[
                ("host", "127.0.0.1:4242"),
                ("cookie", &pair),
                ("origin", origin),
                ("content-type", "text/plain"),
            ]);
            assert_eq!(status(g.check(&Method::POST, &reset, &h)), 403, "{origin}");
        }
        // Cookie but no origin information at all on a state change: refused.
        let h = headers(&[("host", "127.0.0.1:4242"), ("cookie", &pair)]);
        assert_eq!(status(g.check(&Method::POST, &reset, &h)), 403);
        let h = headers(&[
            ("host", "127.0.0.1:4242"),
            ("cookie", &pair),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(status(g.check(&Method::POST, &reset, &h)), 403);
        // DNS rebinding: the right cookie and token, a foreign Host.
        for host in ["evil.example:4242", "127.0.0.1:80", ""] {
            let h = headers(&[("host", host), ("x-fortilab-token", "tok3n")]);
            assert_eq!(
                status(g.check(&Method::GET, &"/api/lab".parse().unwrap(), &h)),
                403,
                "{host}"
            );
        }
        // localhost names the same listener.
        let h = headers(&[("host", "localhost:4242"), ("x-fortilab-token", "tok3n")]);
        assert_eq!(status(g.check(&Method::POST, &reset, &h)), 200);
    }

    #[test]
    fn without_credentials_the_api_gets_json_401_and_the_browser_a_page() {
        let g = guard();
        let Decision::Respond(r) = g.check(
            &Method::GET,
            &"/api/lab".parse().unwrap(),
            &headers(&[("host", "127.0.0.1:4242")]),
        ) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let Decision::Respond(r) = g.check(
            &Method::GET,
            &"/".parse().unwrap(),
            &headers(&[("host", "127.0.0.1:4242"), ("accept", "text/html")]),
        ) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let h = headers(&[("host", "127.0.0.1:4242"), ("x-fortilab-token", "wrong")]);
        assert_eq!(
            status(g.check(&Method::GET, &"/api/lab".parse().unwrap(), &h)),
            401
        );
    }
}
