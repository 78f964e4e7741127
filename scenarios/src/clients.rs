//! Clients of the devices' vendor APIs (FortiOS REST, FortiAnalyzer JSON-RPC, EMS REST) and of
//! the lab surfaces, as a scenario (or the dashboard) uses them. TLS trusts the lab CA only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use fortilab_core::secrets::LabToken;
use fortilab_core::LabCa;

/// The default headers of a lab client: `X-Fortilab-Token` when the lab has a token. Every
/// client the orchestrator makes talks only to the lab's own devices, so the lab-surface calls
/// and the vendor-API calls share it.
fn lab_headers(token: Option<&LabToken>) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(t.as_str())?;
        v.set_sensitive(true);
        h.insert(fortilab_core::secrets::LAB_TOKEN_HEADER, v);
    }
    Ok(h)
}

/// A client builder that trusts only the lab CA and sends the lab token (when given).
pub fn lab_client_builder(
    ca: &LabCa,
    token: Option<&LabToken>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let tls = fortilab_core::tls::client_config(ca, None)?;
    client_builder_tls(&tls, token)
}

/// A client builder with a given TLS configuration (e.g. trusting a CA known only by its
/// certificate: an attached lab) that sends the lab token (when given).
pub fn client_builder_tls(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    token: Option<&LabToken>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls((**tls).clone())
        .default_headers(lab_headers(token)?))
}

/// [`http_client`] for a TLS configuration of its own (see [`client_builder_tls`]).
pub fn http_client_tls(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    cookies: bool,
    token: Option<&LabToken>,
) -> anyhow::Result<reqwest::Client> {
    let mut b = client_builder_tls(tls, token)?
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4);
    if cookies {
        b = b.cookie_store(true);
    }
    Ok(b.build()?)
}

/// [`stream_client`] for a TLS configuration of its own.
pub fn stream_client_tls(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    token: Option<&LabToken>,
) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder_tls(tls, token)?
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// An HTTP client that trusts only the lab CA (and sends the lab token, when given).
pub fn http_client(
    ca: &LabCa,
    cookies: bool,
    token: Option<&LabToken>,
) -> anyhow::Result<reqwest::Client> {
    let mut b = lab_client_builder(ca, token)?
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4);
    if cookies {
        b = b.cookie_store(true);
    }
    Ok(b.build()?)
}

/// A client for long-lived streams (no overall timeout).
pub fn stream_client(ca: &LabCa, token: Option<&LabToken>) -> anyhow::Result<reqwest::Client> {
    Ok(lab_client_builder(ca, token)?
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// FortiOS REST with an API token.
#[derive(Clone)]
pub struct FortiOs {
    pub base: String,
    token: String,
    client: reqwest::Client,
}

impl FortiOs {
    pub fn new(base: &str, token: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client,
        }
    }

    /// A request; returns the HTTP status and the JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.client.request(m, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (st, v) = self.call("GET", path, None).await?;
        if st != 200 {
            bail!("GET {path}: HTTP {st}: {v}");
        }
        Ok(v)
    }
}

/// FortiAnalyzer JSON-RPC with an API key.
#[derive(Clone)]
pub struct Faz {
    pub base: String,
    token: String,
    client: reqwest::Client,
}

impl Faz {
    pub fn new(base: &str, token: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client,
        }
    }

    /// The `data` rows of a JSON-RPC 2.0 `get` of `url` (none when it has no list).
    pub async fn get_rows(&self, url: &str) -> anyhow::Result<Vec<Value>> {
        let r = self
            .rpc("get", url, Value::Object(Default::default()), true)
            .await?;
        Ok(match r.get("data") {
            Some(Value::Array(rows)) => rows.clone(),
            _ => Vec::new(),
        })
    }

    /// One JSON-RPC call; `params` are merged beside `url`. Returns the first result (classic
    /// list form) or the result object (2.0 form).
    pub async fn rpc(
        &self,
        method: &str,
        url: &str,
        params: Value,
        v2: bool,
    ) -> anyhow::Result<Value> {
        let body = Self::rpc_body(method, url, params, v2);
        let resp = self
            .client
            .post(format!("{}/jsonrpc", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("FortiAnalyzer {method} {url}"))?;
        let v: Value = resp
            .json()
            .await
            .with_context(|| format!("FortiAnalyzer {method} {url}: not JSON"))?;
        if let Some(err) = v.get("error") {
            bail!("FortiAnalyzer {method} {url}: {err}");
        }
        let r = match v.get("result") {
            Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        if let Some(code) = r.pointer("/status/code").and_then(Value::as_i64) {
            if code != 0 {
                bail!("FortiAnalyzer {method} {url}: status {}", r["status"]);
            }
        }
        Ok(r)
    }
}

impl Faz {
    /// The JSON-RPC request body [`Faz::rpc`] sends (the dashboard shows it as raw data).
    pub fn rpc_body(method: &str, url: &str, params: Value, v2: bool) -> Value {
        let mut p = json!({"url": url});
        if let (Value::Object(dst), Value::Object(src)) = (&mut p, params) {
            dst.extend(src);
        }
        if v2 {
            p["apiver"] = json!(3);
        }
        let mut body = json!({"id": 1, "method": method, "params": [p]});
        if v2 {
            body["jsonrpc"] = json!("2.0");
        }
        body
    }
}

/// EMS REST with an admin session (signin, cookies, CSRF).
pub struct Ems {
    pub base: String,
    user: String,
    password: String,
    client: reqwest::Client,
    csrf: Mutex<Option<String>>,
}

impl Ems {
    pub fn new(base: &str, user: &str, password: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            user: user.into(),
            password: password.into(),
            client,
            csrf: Mutex::new(None),
        }
    }

    async fn signin(&self) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(format!("{}/api/v1/auth/signin", self.base))
            .json(&json!({"name": self.user, "password": self.password}))
            .send()
            .await
            .context("EMS signin")?;
        let token = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                c.strip_prefix("csrftoken=")
                    .map(|r| r.split(';').next().unwrap_or("").to_string())
            });
        if !resp.status().is_success() {
            bail!("EMS signin: HTTP {}", resp.status());
        }
        *self.csrf.lock().unwrap() = token;
        Ok(())
    }

    /// A request under the admin session (signs in when needed).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            if self.csrf.lock().unwrap().is_none() {
                self.signin().await?;
            }
            let csrf = self.csrf.lock().unwrap().clone().unwrap_or_default();
            let m = reqwest::Method::from_bytes(method.as_bytes())?;
            let mut req = self
                .client
                .request(
                    m,
                    format!("{}/api/v1/{}", self.base, path.trim_start_matches('/')),
                )
                .header("Referer", &self.base)
                .header("X-CSRFToken", csrf)
                .header("Ems-Call-Type", "2");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("EMS {method} {path}"))?;
            if resp.status().as_u16() == 401 && attempt == 0 {
                *self.csrf.lock().unwrap() = None;
                continue;
            }
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success()
                || v.pointer("/result/retval").and_then(Value::as_i64) != Some(1)
            {
                bail!("EMS {method} {path}: HTTP {status}: {v}");
            }
            return Ok(v);
        }
        Err(anyhow!("EMS {method} {path}: session refused"))
    }

    /// Every endpoint record, page by page (EMS answers at most `PAGE` a request).
    pub async fn endpoints(&self) -> anyhow::Result<Vec<Value>> {
        self.endpoints_where("").await
    }

    /// Every endpoint record matching `query` (extra `endpoints/index` parameters such as
    /// `&ip_addr=10.115.2.52`), following `offset` until `total` records have been read.
    async fn endpoints_where(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        const PAGE: usize = 1000;
        let mut all = Vec::new();
        loop {
            let path = format!("endpoints/index?offset={}&count={PAGE}{query}", all.len());
            let v = self.call("GET", &path, None).await?;
            let page = v
                .pointer("/data/endpoints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = v
                .pointer("/data/total")
                .and_then(Value::as_u64)
                .map_or(0, |t| t as usize);
            let got = page.len();
            all.extend(page);
            if got == 0 || all.len() >= total {
                return Ok(all);
            }
        }
    }

    /// The endpoint record with this lab IP (asked for by the EMS's `ip_addr` filter, so it
    /// is found however many endpoints the EMS holds).
    pub async fn endpoint_by_ip(&self, ip: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .endpoints_where(&format!("&ip_addr={ip}"))
            .await?
            .into_iter()
            .find(|e| e.get("ip_addr").and_then(Value::as_str) == Some(ip)))
    }
}

/// The endpoints' lab surfaces.
#[derive(Clone)]
pub struct Endpoints {
    controls: HashMap<String, String>,
    client: reqwest::Client,
}

impl Endpoints {
    pub fn new(ready: &[Value], client: reqwest::Client) -> Self {
        let controls = ready
            .iter()
            .filter_map(|e| {
                Some((
                    e.get("name")?.as_str()?.to_string(),
                    e.get("control")?.as_str()?.to_string(),
                ))
            })
            .collect();
        Self { controls, client }
    }

    /// The HTTP client (lab CA) these calls use.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Names of the endpoints, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.controls.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn control(&self, name: &str) -> anyhow::Result<&str> {
        self.controls
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no endpoint named {name}"))
    }

    pub async fn post(&self, name: &str, what: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/_lab/{what}", self.control(name)?);
        let resp = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            bail!("POST {url}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    pub async fn fetch(&self, name: &str, url: &str) -> anyhow::Result<Value> {
        self.post(name, "fetch", json!({"url": url})).await
    }
}
