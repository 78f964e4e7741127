//! `/api/v2/cmdb/<path>/<name>[/<mkey>]`: GET/POST/PUT/DELETE on every modelled table.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::query::{Filter, Sorter};
use super::{bare_error, json_response, Api, Env, Req};
use crate::config::json::{default_json, JsonOpts};
use crate::config::schema::{FieldSchema, FieldType, Schema, TableSchema};
use crate::config::{FosVersion, OpError, Written};
use crate::console::help;

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
        Method::POST => match (mkey.as_deref(), r.query.get("action")) {
            (Some(k), Some("clone")) => clone_entry(api, &r, &env, ts, &table_path, k),
            (Some(_), _) => return env.error(405, None, None, None),
            (None, _) => create(api, &r, &env, ts, &table_path),
        },
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
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut r = json_response(parts.status, Value::Array(vec![v]));
    if let Some(e) = parts.headers.get(header::ETAG) {
        r.headers_mut().insert(header::ETAG, e.clone());
    }
    r
}

fn key_json(ts: &TableSchema, k: &str) -> Value {
    if ts.int_key() {
        k.parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(k))
    } else {
        Value::from(k)
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
    if *env.method == Method::GET {
        return env.error(e.http_status(), code, e.cli_error(), mk);
    }
    write_error(env, e.http_status(), code, e.cli_error(), mk)
}

/// A failed write: the error envelope with `revision_changed: false` after `revision`
/// (reference §1.3, POST failure). Nothing was applied.
fn write_error(
    env: &Env<'_>,
    status: u16,
    code: Option<i32>,
    cli_error: Option<&str>,
    mkey: Option<Value>,
) -> Response {
    let mut m = Map::new();
    m.insert("http_method".into(), Value::from(env.method.as_str()));
    m.insert(
        "revision".into(),
        Value::from(env.api.dev.config.revision()),
    );
    m.insert("revision_changed".into(), Value::from(false));
    if let Some(c) = cli_error {
        m.insert("cli_error".into(), Value::from(c));
    }
    if let Some(c) = code {
        m.insert("error".into(), Value::from(c));
    }
    m.insert("status".into(), Value::from("error"));
    m.insert("http_status".into(), Value::from(status));
    m.insert("vdom".into(), Value::from(env.vdom.clone()));
    m.insert("path".into(), Value::from(env.path.clone()));
    m.insert("name".into(), Value::from(env.name.clone()));
    if let Some(k) = mkey {
        m.insert("mkey".into(), k);
    }
    env.tail(&mut m);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Value::Object(m),
    )
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
                Value::Object(env.cmdb_ok(
                    schema_json(ts, version),
                    &[("action", Value::from("schema"))],
                )),
            );
        }
        Some("default") => {
            let d = api.dev.config.with(|c| default_json(c, ts, version));
            return json_response(
                StatusCode::OK,
                Value::Object(env.cmdb_ok(Value::Object(d), &[])),
            );
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
    let sorters = Sorter::parse(r.query.all("sort"));
    let skip = r.query.flag("skip");
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
        Value::Array(items) => {
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
            let mut items: Vec<Value> = items
                .into_iter()
                .filter(|i| filter.is_empty() || filter.matches(i))
                .collect();
            if !sorters.is_empty() {
                items.sort_by(|a, b| Sorter::compare(&sorters, a, b));
            }
            let items: Vec<Value> = items
                .into_iter()
                .skip(start)
                .take(count)
                .map(|i| if skip { skip_fields(i, ts, version) } else { i })
                .map(|i| project(i, format.as_deref(), ts))
                .collect();
            Value::Array(items)
        }
        obj => {
            let obj = if skip {
                skip_fields(obj, ts, version)
            } else {
                obj
            };
            project(obj, format.as_deref(), ts)
        }
    };
    let body = bytes::Bytes::from(Value::Object(env.cmdb_ok(results, &[])).to_string());
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
fn project(v: Value, format: Option<&[String]>, ts: &TableSchema) -> Value {
    let (Some(f), Value::Object(m)) = (format, &v) else {
        return v;
    };
    let keep = |k: &str| k == "q_origin_key" || ts.mkey() == Some(k) || f.iter().any(|x| x == k);
    Value::Object(
        m.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// Saves the configuration after a write that changed it (a write of what the table
/// already holds leaves the saved file alone).
fn after_write(api: &Api, w: &Written) {
    if !w.changed {
        return;
    }
    if let Err(e) = api.dev.persist() {
        tracing::warn!(error = %e, "could not save the configuration");
    }
}

fn create(api: &Api, r: &Req, env: &Env<'_>, ts: &TableSchema, path: &str) -> Response {
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return write_error(env, 400, None, None, None),
    };
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.create(path, &body, &origin) {
        Ok(w) => {
            after_write(api, &w);
            env.write_ok(&w, Some(key_json(ts, &w.key)))
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
        Err(_) => return write_error(env, 400, None, None, None),
    };
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.update(path, mkey, &body, &origin) {
        Ok(w) => {
            after_write(api, &w);
            env.write_ok(&w, (!ts.is_single()).then(|| key_json(ts, &w.key)))
        }
        Err(e) => op_error(env, &e, ts, mkey),
    }
}

fn delete(api: &Api, r: &Req, env: &Env<'_>, ts: &TableSchema, path: &str, mkey: &str) -> Response {
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.delete(path, mkey, &origin) {
        Ok(w) => {
            after_write(api, &w);
            env.write_ok(&w, Some(key_json(ts, mkey)))
        }
        Err(e) => op_error(env, &e, ts, Some(mkey)),
    }
}

fn move_entry(api: &Api, r: &Req, env: &Env<'_>, path: &str, mkey: Option<&str>) -> Response {
    let Some(ts) = api.dev.config.table_schema(path) else {
        return env.error(404, None, None, None);
    };
    let Some(k) = mkey else {
        return write_error(env, 405, None, None, None);
    };
    let (before, target) = match (r.query.get("before"), r.query.get("after")) {
        (Some(t), _) => (true, t.to_string()),
        (None, Some(t)) => (false, t.to_string()),
        _ => return write_error(env, 424, None, None, None),
    };
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.move_entry(path, k, before, &target, &origin) {
        Ok(w) => {
            after_write(api, &w);
            env.write_ok(&w, Some(key_json(ts, k)))
        }
        Err(e) => op_error(env, &e, ts, Some(k)),
    }
}

/// `POST .../<mkey>?action=clone&nkey=<new>`: a copy of the entry under the new key.
fn clone_entry(
    api: &Api,
    r: &Req,
    env: &Env<'_>,
    ts: &TableSchema,
    path: &str,
    mkey: &str,
) -> Response {
    let Some(nkey) = r.query.get("nkey").filter(|n| !n.is_empty()) else {
        return write_error(env, 424, None, None, None);
    };
    let origin = api.origin(&r.principal, r.peer);
    match api.dev.config.clone_entry(path, mkey, nkey, &origin) {
        Ok(w) => {
            after_write(api, &w);
            env.write_ok(&w, Some(key_json(ts, &w.key)))
        }
        Err(e) => op_error(env, &e, ts, Some(mkey)),
    }
}

/// `skip=1`: the CLI skip operator hides the attributes that do not apply to this entry
/// (`subnet` of an `fqdn` address, UTM profiles of a policy without `utm-status`, ...).
fn skip_fields(v: Value, ts: &TableSchema, version: FosVersion) -> Value {
    let Value::Object(mut m) = v else {
        return v;
    };
    let text = |j: Option<&Value>| match j {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let hidden: Vec<&str> = ts
        .fields_at(version)
        .filter(|f| f.skipped_by(|other| text(m.get(other))))
        .map(|f| f.name)
        .collect();
    for h in hidden {
        m.remove(h);
    }
    Value::Object(m)
}

/// The `datasource` names of a reference (`firewall.address.name`).
fn ds_names(ds: &[&str], version: FosVersion) -> Value {
    Value::from(
        ds.iter()
            .map(|d| {
                let (t, sub) = Schema::split_ds(d);
                let key = Schema::get()
                    .table(t, version)
                    .and_then(|ts| match sub {
                        Some(f) => ts.field(f, version)?.sub_table()?.mkey(),
                        None => ts.mkey(),
                    })
                    .unwrap_or("name");
                format!("{}.{key}", d.replace(' ', "."))
            })
            .collect::<Vec<_>>(),
    )
}

fn type_name(f: &FieldSchema) -> &'static str {
    match f.ty {
        FieldType::Str(_) if matches!(f.name, "comment" | "comments" | "description") => {
            "var-string"
        }
        _ => f.type_name(),
    }
}

/// The table attributes FortiOS adds to every table node.
fn table_sizes(m: &mut Map<String, Value>) {
    m.insert("max_table_size_global".into(), Value::from(0));
    m.insert("max_table_size_item".into(), Value::from(0));
    m.insert("max_table_size_vdom".into(), Value::from(0));
}

/// One attribute node of `action=schema` (keys in FortiOS's order, alphabetical).
fn field_schema_json(ts: &TableSchema, f: &FieldSchema, version: FosVersion) -> Value {
    let mut c = Map::new();
    match &f.ty {
        FieldType::Table(sub) => return table_schema_json(sub, version, Some(f), false),
        FieldType::Multi { key, .. } | FieldType::MultiInt { key, .. } => {
            let int = matches!(f.ty, FieldType::MultiInt { .. });
            let ds = f.datasources();
            let mut k = Map::new();
            k.insert("category".into(), Value::from("unitary"));
            if !ds.is_empty() {
                k.insert("datasource".into(), ds_names(ds, version));
            }
            k.insert(
                "default".into(),
                if int { Value::from(0) } else { Value::from("") },
            );
            k.insert("help".into(), Value::from(help::field_desc(ts, f)));
            if let FieldType::MultiInt { min, max, .. } = f.ty {
                k.insert("max-value".into(), Value::from(max));
                k.insert("min-value".into(), Value::from(min));
            }
            k.insert("multiple_values".into(), Value::from(false));
            k.insert("name".into(), Value::from(*key));
            if !int {
                k.insert("size".into(), Value::from(79));
            }
            k.insert(
                "type".into(),
                Value::from(if int { "integer" } else { "string" }),
            );
            let mut children = Map::new();
            children.insert((*key).to_string(), Value::Object(k));
            c.insert("category".into(), Value::from("table"));
            c.insert("children".into(), Value::Object(children));
            c.insert("help".into(), Value::from(help::field_desc(ts, f)));
            table_sizes(&mut c);
            c.insert("member_table".into(), Value::from(true));
            c.insert("mkey".into(), Value::from(*key));
            c.insert(
                "mkey_type".into(),
                Value::from(if int { "integer" } else { "string" }),
            );
            c.insert("name".into(), Value::from(f.name));
            if f.required {
                c.insert("required".into(), Value::from(true));
            }
            return Value::Object(c);
        }
        _ => {}
    }
    c.insert("category".into(), Value::from("unitary"));
    if let FieldType::Ref { ds, .. } = &f.ty {
        c.insert("datasource".into(), ds_names(ds, version));
    }
    let default = match f.ty {
        FieldType::Int(..) => f
            .default
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(f.default)),
        _ => Value::from(f.default),
    };
    if !(f.default.is_empty() && matches!(f.ty, FieldType::Str(_) | FieldType::Password)) {
        c.insert("default".into(), default);
    }
    c.insert("help".into(), Value::from(help::field_desc(ts, f)));
    if let FieldType::Int(lo, hi) = f.ty {
        c.insert("max-value".into(), Value::from(hi));
        c.insert("min-value".into(), Value::from(lo));
    }
    c.insert(
        "multiple_values".into(),
        Value::from(matches!(f.ty, FieldType::Words(_))),
    );
    c.insert("name".into(), Value::from(f.name));
    if let FieldType::Enum(o) | FieldType::Words(o) = &f.ty {
        if !o.is_empty() {
            c.insert(
                "options".into(),
                Value::from(
                    o.iter()
                        .map(|n| json!({"help": help::option_desc(f.name, n), "name": n}))
                        .collect::<Vec<_>>(),
                ),
            );
        }
    }
    if f.required || ts.mkey() == Some(f.name) {
        c.insert("required".into(), Value::from(true));
    }
    if let FieldType::Str(n) = f.ty {
        c.insert("size".into(), Value::from(n));
    }
    c.insert("type".into(), Value::from(type_name(f)));
    Value::Object(c)
}

/// A table node: the top-level `results` of `action=schema`, or a sub-table attribute.
fn table_schema_json(
    ts: &TableSchema,
    version: FosVersion,
    field: Option<&FieldSchema>,
    top: bool,
) -> Value {
    let mut children = Map::new();
    for f in ts.fields_at(version) {
        children.insert(f.name.to_string(), field_schema_json(ts, f, version));
    }
    let mut m = Map::new();
    if top {
        m.insert("access_group".into(), Value::from(access_group(&ts.path)));
    }
    m.insert(
        "category".into(),
        Value::from(if ts.is_single() { "complex" } else { "table" }),
    );
    m.insert("children".into(), Value::Object(children));
    let help_text = match field {
        Some(f) => format!("Configure {}.", f.name),
        None => help::path_desc(&ts.path),
    };
    m.insert("help".into(), Value::from(help_text));
    if !ts.is_single() {
        table_sizes(&mut m);
    }
    if let Some(k) = ts.mkey() {
        m.insert("mkey".into(), Value::from(k));
        m.insert(
            "mkey_type".into(),
            Value::from(if ts.int_key() { "integer" } else { "string" }),
        );
    }
    let name = ts.path.rsplit(' ').next().unwrap_or(&ts.path);
    m.insert("name".into(), Value::from(name));
    if top {
        m.insert("object_range".into(), Value::from(object_range(&ts.path)));
        let (p, _) = ts.rest_path_name();
        m.insert("path".into(), Value::from(p));
    }
    Value::Object(m)
}

/// The access-profile group guarding a table (`fwgrp`, `sysgrp`, ...) [P: per path prefix].
fn access_group(path: &str) -> &'static str {
    match path.split(' ').next().unwrap_or("") {
        "firewall" => "fwgrp",
        "log" => "loggrp",
        "webfilter" => "utmgrp",
        "user" | "endpoint-control" => "authgrp",
        _ if path == "system interface" || path == "system zone" => "netgrp",
        _ => "sysgrp",
    }
}

/// Whether a table is per-VDOM or global.
fn object_range(path: &str) -> &'static str {
    match path {
        "system global"
        | "system vdom"
        | "system interface"
        | "system admin"
        | "system api-user"
        | "system accprofile"
        | "system email-server" => "global",
        _ => "vdom",
    }
}

/// `action=schema` for one table, in FortiOS's shape (attributes under `children` keyed by
/// name; member lists as `member_table` sub-tables whose key attribute carries the
/// `datasource`; `options` with `help`).
pub fn schema_json(ts: &TableSchema, version: FosVersion) -> Value {
    table_schema_json(ts, version, None, true)
}

fn schema_list(api: &Api, r: &Req) -> Response {
    let version = api.dev.version;
    let results: Vec<Value> = Schema::get()
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
        Value::Object(env.cmdb_ok(Value::Array(results), &[])),
    )
}

#[cfg(test)]
#[path = "cmdb_tests.rs"]
mod tests;
