//! `/api/v2/cmdb/<path>/<name>[/<mkey>]`: GET/POST/PUT/DELETE on every modelled table.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as J};

use super::query::Filter;
use super::{bare_error, json_response, Api, Env, Req};
use crate::config::json::{default_json, JsonOpts};
use crate::config::schema::{FieldType, Schema, TableSchema};
use crate::config::{FosVersion, OpError};

pub fn handle(api: &Api, r: Req) -> Response {
    let segs: Vec<&str> = r.segments[1..]
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if segs.is_empty() {
        if r.method == Method::GET && r.query.get("action") == Some("schema") {
            return schema_list(api, &r);
        }
        return bare_error(api, &r.method, 404);
    }
    if segs.len() < 2 {
        return bare_error(api, &r.method, 404);
    }
    if segs[0] == "system" && segs[1] == "status" && r.method == Method::GET {
        // The probe fortigate-api and others use to validate a token.
        return super::monitor::status(api, &r);
    }
    let vdom_param = r.query.get("vdom").unwrap_or("root").to_string();
    let array_mode = vdom_param.contains('*') || vdom_param.contains(',') || r.query.flag("global");
    let vdoms: Vec<String> = if vdom_param.contains('*') {
        vec!["root".into()]
    } else {
        vdom_param
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let env = Env {
        api,
        method: &r.method,
        path: segs[0].to_string(),
        name: segs[1].to_string(),
        vdom: if r.query.flag("global") {
            "global".into()
        } else {
            vdoms.first().cloned().unwrap_or_else(|| "root".into())
        },
    };
    if let Some(bad) = vdoms.iter().find(|v| v.as_str() != "root") {
        let env = Env {
            vdom: bad.clone(),
            ..env
        };
        return env.error(404, Some(-3), None, None);
    }
    let table_path = format!("{} {}", segs[0].replace('.', " "), segs[1]);
    let Some(ts) = api.dev.config.table_schema(&table_path) else {
        return env.error(404, None, None, None);
    };
    if segs.len() > 3 {
        // Child-table member URLs are not modelled.
        return env.error(404, None, None, None);
    }
    let mkey = segs.get(2).map(|s| s.to_string());
    let resp = match r.method {
        Method::GET => get(api, &r, &env, ts, &table_path, mkey.as_deref()),
        Method::POST => {
            if mkey.is_some() {
                return env.error(405, None, None, None);
            }
            create(api, &r, &env, ts, &table_path)
        }
        Method::PUT => {
            if r.query.get("action") == Some("move") {
                move_entry(api, &r, &env, &table_path, mkey.as_deref())
            } else {
                update(api, &r, &env, ts, &table_path, mkey.as_deref())
            }
        }
        Method::DELETE => match mkey.as_deref() {
            None => env.error(405, None, None, None),
            Some(k) => delete(api, &r, &env, ts, &table_path, k),
        },
        _ => env.error(405, None, None, None),
    };
    if array_mode && r.method == Method::GET && resp.status() == StatusCode::OK {
        return wrap_array(resp);
    }
    resp
}

/// `vdom=*` / `global=1`: the envelope inside a JSON array.
fn wrap_array(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let fut = axum::body::to_bytes(body, usize::MAX);
    // The body is an in-memory string: resolving it never waits.
    let bytes = futures::executor::block_on(fut).unwrap_or_default();
    let v: J = serde_json::from_slice(&bytes).unwrap_or(J::Null);
    let mut r = json_response(parts.status, J::Array(vec![v]));
    if let Some(e) = parts.headers.get(header::ETAG) {
        r.headers_mut().insert(header::ETAG, e.clone());
    }
    r
}

fn key_json(ts: &TableSchema, k: &str) -> J {
    if ts.int_key() {
        k.parse::<u64>().map(J::from).unwrap_or_else(|_| J::from(k))
    } else {
        J::from(k)
    }
}

fn op_error(env: &Env<'_>, e: &OpError, ts: &TableSchema, mkey: Option<&str>) -> Response {
    let mk = match e {
        OpError::NotFound => mkey.map(|k| key_json(ts, k)),
        _ => None,
    };
    let code = match e {
        OpError::NotFound => None,
        other => other.code(),
    };
    env.error(e.http_status(), code, e.cli_error(), mk)
}

fn get(
    api: &Api,
    r: &Req,
    env: &Env<'_>,
    ts: &TableSchema,
    path: &str,
    mkey: Option<&str>,
) -> Response {
    let version = api.dev.version;
    match r.query.get("action") {
        Some("schema") => {
            return json_response(
                StatusCode::OK,
                J::Object(env.cmdb_ok(schema_json(ts, version), &[])),
            );
        }
        Some("default") => {
            let d = api.dev.config.with(|c| default_json(c, ts, version));
            return json_response(StatusCode::OK, J::Object(env.cmdb_ok(J::Object(d), &[])));
        }
        _ => {}
    }
    let revision = api.dev.config.revision();
    let etag = format!("\"{revision}\"");
    if let Some(inm) = r
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm == etag {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            return resp;
        }
    }
    if let Some(body) = api.cached(&r.raw, &revision) {
        return body_response(body, &etag);
    }
    let filter = match Filter::parse(r.query.all("filter")) {
        Ok(f) => f,
        Err(_) => return env.error(400, None, None, None),
    };
    let opts = JsonOpts {
        with_meta: r.query.flag("with_meta"),
        datasource: r.query.flag("datasource"),
        format: None,
    };
    let results = match api.dev.config.get_json(path, mkey, &opts) {
        Ok(v) => v,
        Err(e) => return op_error(env, &e, ts, mkey),
    };
    let format: Option<Vec<String>> = r
        .query
        .get("format")
        .map(|f| f.split('|').map(String::from).collect());
    let results = match results {
        J::Array(items) => {
            let start: usize = r
                .query
                .get("start")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let count: usize = r
                .query
                .get("count")
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            let items: Vec<J> = items
                .into_iter()
                .filter(|i| filter.is_empty() || filter.matches(i))
                .skip(start)
                .take(count)
                .map(|i| project(i, format.as_deref(), ts))
                .collect();
            J::Array(items)
        }
        obj => project(obj, format.as_deref(), ts),
    };
    let body = bytes::Bytes::from(J::Object(env.cmdb_ok(results, &[])).to_string());
    // Cached only if the configuration did not change while rendering.
    if api.dev.config.revision() == revision {
        api.cache(&r.raw, &revision, body.clone());
    }
    body_response(body, &etag)
}

fn body_response(body: bytes::Bytes, etag: &str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// `format=a|b`: keep only these fields (and the key and `q_origin_key`).
fn project(v: J, format: Option<&[String]>, ts: &TableSchema) -> J {
    let (Some(f), J::Object(m)) = (format, &v) else {
        return v;
    };
    let keep = |k: &str| k == "q_origin_key" || ts.mkey() == Some(k) || f.iter().any(|x| x == k);
    J::Object(
        m.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

fn after_write(api: &Api) {
    if let Err(e) = api.dev.persist() {
        tracing::warn!(error = %e, "could not save the configuration");
    }
}

fn create(api: &Api, r: &Req, env: &Env<'_>, ts: &TableSchema, path: &str) -> Response {
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return env.error(400, None, None, None),
    };
    let old = api.dev.config.revision();
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.create(path, &body, &origin) {
        Ok(k) => {
            after_write(api);
            env.write_ok(&old, Some(key_json(ts, &k)))
        }
        Err(e) => op_error(env, &e, ts, None),
    }
}

fn update(
    api: &Api,
    r: &Req,
    env: &Env<'_>,
    ts: &TableSchema,
    path: &str,
    mkey: Option<&str>,
) -> Response {
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return env.error(400, None, None, None),
    };
    let old = api.dev.config.revision();
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.update(path, mkey, &body, &origin) {
        Ok(k) => {
            after_write(api);
            env.write_ok(&old, (!ts.is_single()).then(|| key_json(ts, &k)))
        }
        Err(e) => op_error(env, &e, ts, mkey),
    }
}

fn delete(api: &Api, r: &Req, env: &Env<'_>, ts: &TableSchema, path: &str, mkey: &str) -> Response {
    let old = api.dev.config.revision();
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.delete(path, mkey, &origin) {
        Ok(()) => {
            after_write(api);
            env.write_ok(&old, Some(key_json(ts, mkey)))
        }
        Err(e) => op_error(env, &e, ts, Some(mkey)),
    }
}

fn move_entry(api: &Api, r: &Req, env: &Env<'_>, path: &str, mkey: Option<&str>) -> Response {
    let Some(ts) = api.dev.config.table_schema(path) else {
        return env.error(404, None, None, None);
    };
    let Some(k) = mkey else {
        return env.error(405, None, None, None);
    };
    let (before, target) = match (r.query.get("before"), r.query.get("after")) {
        (Some(t), _) => (true, t.to_string()),
        (None, Some(t)) => (false, t.to_string()),
        _ => return env.error(424, None, None, None),
    };
    let old = api.dev.config.revision();
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.move_entry(path, k, before, &target, &origin) {
        Ok(()) => {
            after_write(api);
            env.write_ok(&old, Some(key_json(ts, k)))
        }
        Err(e) => op_error(env, &e, ts, Some(k)),
    }
}

/// `action=schema` for one table.
pub fn schema_json(ts: &TableSchema, version: FosVersion) -> J {
    let mut children = Map::new();
    for f in ts.fields_at(version) {
        let mut c = Map::new();
        c.insert("name".into(), J::from(f.name));
        match &f.ty {
            FieldType::Table(sub) => {
                c.insert("category".into(), J::from("table"));
                if let J::Object(s) = schema_json(sub, version) {
                    for (k, v) in s {
                        if k != "name" && k != "category" {
                            c.insert(k, v);
                        }
                    }
                }
            }
            FieldType::Multi { ds, key, .. } => {
                c.insert("category".into(), J::from("table"));
                c.insert("mkey".into(), J::from(*key));
                c.insert("mkey_type".into(), J::from("string"));
                if !ds.is_empty() {
                    c.insert(
                        "datasource".into(),
                        J::from(ds.iter().map(|d| d.replace(' ', ".")).collect::<Vec<_>>()),
                    );
                }
            }
            FieldType::MultiInt { key, .. } => {
                c.insert("category".into(), J::from("table"));
                c.insert("mkey".into(), J::from(*key));
                c.insert("mkey_type".into(), J::from("integer"));
            }
            other => {
                c.insert("category".into(), J::from("unitary"));
                c.insert("type".into(), J::from(f.type_name()));
                match other {
                    FieldType::Str(n) => {
                        c.insert("size".into(), J::from(*n));
                    }
                    FieldType::Int(lo, hi) => {
                        c.insert("min-value".into(), J::from(*lo));
                        c.insert("max-value".into(), J::from(*hi));
                    }
                    FieldType::Enum(o) | FieldType::Words(o) => {
                        c.insert(
                            "options".into(),
                            J::from(
                                o.iter()
                                    .map(|n| json!({"name": n, "help": n}))
                                    .collect::<Vec<_>>(),
                            ),
                        );
                    }
                    FieldType::Ref { ds, .. } => {
                        c.insert(
                            "datasource".into(),
                            J::from(ds.iter().map(|d| d.replace(' ', ".")).collect::<Vec<_>>()),
                        );
                    }
                    _ => {}
                }
                if !f.default.is_empty() {
                    c.insert("default".into(), J::from(f.default));
                }
            }
        }
        children.insert(f.name.to_string(), J::Object(c));
    }
    let name = ts.path.rsplit(' ').next().unwrap_or(&ts.path);
    let mut m = Map::new();
    m.insert("name".into(), J::from(name));
    m.insert(
        "category".into(),
        J::from(if ts.is_single() { "complex" } else { "table" }),
    );
    if let Some(k) = ts.mkey() {
        m.insert("mkey".into(), J::from(k));
        m.insert(
            "mkey_type".into(),
            J::from(if ts.int_key() { "integer" } else { "string" }),
        );
    }
    m.insert("children".into(), J::Object(children));
    J::Object(m)
}

fn schema_list(api: &Api, r: &Req) -> Response {
    let version = api.dev.version;
    let results: Vec<J> = Schema::get()
        .tables_at(version)
        .map(|ts| {
            let (p, n) = ts.rest_path_name();
            json!({"path": p, "name": n, "category": if ts.is_single() { "complex" } else { "table" },
                   "mkey": ts.mkey()})
        })
        .collect();
    let env = Env {
        api,
        method: &r.method,
        path: String::new(),
        name: String::new(),
        vdom: "root".into(),
    };
    json_response(
        StatusCode::OK,
        J::Object(env.cmdb_ok(J::Array(results), &[])),
    )
}
