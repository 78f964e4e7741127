//! `monitor/system/config-script`: upload-and-run a CLI script (JSON `{"filename",
//! "file_content": base64}` as the Ansible/fortios clients send it, or a multipart upload with
//! a `file` part), list the history, delete entries. Scripts run through the console's
//! command engine ([`crate::console`]) as the calling user, so validation, revisions and the
//! config-change log are those of the CLI and REST.

use axum::http::{header, Method};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{bare_error, Api, Env, Req};
use crate::console::{script, FgtSession};
use fortilab_core::EventKind;

fn env<'a>(api: &'a Api, r: &'a Req) -> Env<'a> {
    Env {
        api,
        method: &r.method,
        path: "system".into(),
        name: "config-script".into(),
        vdom: r.query.get("vdom").unwrap_or("root").to_string(),
    }
}

/// Whether `segments` (after `monitor`) name this endpoint.
pub fn matches(segments: &[String]) -> bool {
    segments.len() >= 3 && segments[1] == "system" && segments[2] == "config-script"
}

pub async fn handle(api: &Api, r: Req) -> Response {
    let s: Vec<&str> = r.segments[3..].iter().map(String::as_str).collect();
    match (&r.method, s.as_slice()) {
        (&Method::GET, []) => {
            let runs: Vec<Value> = api
                .dev
                .scripts
                .list()
                .into_iter()
                .map(|x| serde_json::to_value(x).unwrap_or_default())
                .collect();
            env(api, &r).monitor_ok(Some(Value::Array(runs)), None)
        }
        (&Method::POST, ["upload"]) => upload(api, &r).await,
        (&Method::POST, ["delete"]) => {
            let body = r.json_object().unwrap_or_default();
            let ids: Vec<u64> = body
                .get("id_list")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let n = api.dev.scripts.delete(&ids);
            env(api, &r).monitor_ok(Some(json!({"deleted": n})), Some("delete"))
        }
        (_, [] | ["upload"] | ["delete"]) => env(api, &r).error(405, None, None, None),
        _ => bare_error(api, &r.method, 404),
    }
}

async fn upload(api: &Api, r: &Req) -> Response {
    let (name, text) = match script_of(r) {
        Ok(x) => x,
        Err(status) => return env(api, r).error(status, None, None, None),
    };
    let user = r.principal.user().to_string();
    let lab = api.dev.lab_map.lab_of_real(r.peer).unwrap_or(r.peer);
    let mut session = FgtSession::new(
        api.dev.clone(),
        api.automation_engine(),
        &user,
        &format!("jsconsole({lab})"),
        lab,
    )
    .without_logout_log();
    let now = api.dev.clock.now_secs();
    let mut run = script::run_script(&mut session, &name, &text, now).await;
    run.end_time = api.dev.clock.now_secs();
    let run = api.dev.scripts.record(run);
    api.dev.events.emit(
        EventKind::ConfigScript,
        json!({"id": run.id, "name": run.name, "status": run.status, "user": user,
               "commands": run.commands, "failed": run.failed}),
    );
    env(api, r).monitor_ok(
        Some(json!({"id": run.id, "name": run.name, "status": run.status,
                    "commands": run.commands, "failed": run.failed, "output": run.output})),
        Some("upload"),
    )
}

/// The script name and text of an upload request; an HTTP status on error.
fn script_of(r: &Req) -> Result<(String, String), u16> {
    let ctype = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ctype.starts_with("multipart/form-data") {
        let boundary = ctype
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').to_string())
            .ok_or(400u16)?;
        let parts = multipart(&r.body, &boundary);
        let mut name = None;
        let mut content = None;
        for (disp, data) in parts {
            let field = disp_param(&disp, "name").unwrap_or_default();
            let fname = disp_param(&disp, "filename");
            if field == "filename" && fname.is_none() {
                name = Some(String::from_utf8_lossy(&data).trim().to_string());
            } else if fname.is_some() || field == "file" || field == "file_content" {
                if name.is_none() {
                    name = fname;
                }
                content = Some(String::from_utf8_lossy(&data).into_owned());
            }
        }
        let content = content.ok_or(424u16)?;
        return Ok((name.unwrap_or_else(|| "script".into()), content));
    }
    let body = r.json_object().map_err(|_| 400u16)?;
    let content = body
        .get("file_content")
        .and_then(Value::as_str)
        .ok_or(424u16)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content.trim())
        .map_err(|_| 400u16)?;
    let name = body
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("script")
        .to_string();
    Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
}

fn disp_param(disp: &str, key: &str) -> Option<String> {
    disp.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a multipart body into (Content-Disposition, data) parts.
fn multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + d.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(hdr_end) = part.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..hdr_end]).into_owned();
        let mut data = part[hdr_end + 4..].to_vec();
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let disp = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        out.push((disp, data));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn multipart_parts() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nconfig system global\nend\n\r\n--XX--\r\n";
        let parts = super::multipart(body, "XX");
        assert_eq!(parts.len(), 1);
        assert_eq!(
            super::disp_param(&parts[0].0, "filename").as_deref(),
            Some("a.txt")
        );
        assert_eq!(parts[0].1, b"config system global\nend\n");
    }
}
