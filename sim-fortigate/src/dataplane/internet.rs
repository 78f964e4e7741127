//! The FortiGate's view of the lab Internet's control surface (`--internet URL`): the lab DNS
//! (`/_lab/dns?name=`) and FortiGuard ratings (`/_lab/rating?host=`), cached. Without a URL,
//! IP-literal hosts are their own lab address and every host is rated 0 (Unrated).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fortilab_core::http::client::{Client, ClientError, Request};

/// A FortiGuard rating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    pub cat: u8,
    pub catdesc: String,
}

impl Rating {
    pub fn unrated() -> Self {
        Rating {
            cat: 0,
            catdesc: "Unrated".into(),
        }
    }
}

/// Client of the lab Internet's control surface.
pub struct Internet {
    base: Mutex<Option<(String, u16)>>,
    /// Keep-alive connections to the control surface (lab CA).
    client: Client,
    /// Sent as `X-Fortilab-Token` (the control surface is a lab surface).
    lab_token: Option<fortilab_core::secrets::LabToken>,
    dns: Mutex<HashMap<String, Option<Ipv4Addr>>>,
    ratings: Mutex<HashMap<String, Rating>>,
    /// FortiGuard rating traffic (`monitor/fortiguard/service-communication-stats`).
    pub stats: RatingStats,
}

/// Rating queries to the FortiGuard service (the lab Internet) and how they went.
#[derive(Debug, Default)]
pub struct RatingStats {
    /// Queries sent to the service (cache misses and probes).
    pub queries: AtomicU64,
    /// Ratings answered from the cache.
    pub cache_hits: AtomicU64,
    /// Queries that failed (unreachable, timeout, bad answer).
    pub failures: AtomicU64,
    /// Round trip of the last successful query, microseconds (0: none yet).
    pub last_rtt_us: AtomicU64,
    /// DNS lookups sent to the lab DNS (cache misses).
    pub dns_queries: AtomicU64,
    /// DNS lookups that failed (unreachable, timeout: a down FortiGate ↔ Internet link).
    pub dns_failures: AtomicU64,
}

impl std::fmt::Debug for Internet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Internet").finish_non_exhaustive()
    }
}

/// Splits `https://host:port[/]` into host and port.
pub fn parse_base(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let auth = rest.split('/').next()?;
    let (h, p) = auth.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?))
}

fn lower(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl Internet {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        lab_token: Option<fortilab_core::secrets::LabToken>,
    ) -> Self {
        Self {
            base: Mutex::new(None),
            client: Client::new(Some(tls)),
            lab_token,
            dns: Mutex::new(HashMap::new()),
            ratings: Mutex::new(HashMap::new()),
            stats: RatingStats::default(),
        }
    }

    /// Sends one uncached rating query to the service now and times it (`POST
    /// monitor/system/fortiguard/test-availability`, `network/fortiguard/live-services-latency`).
    pub async fn probe(&self) -> Result<Duration, String> {
        if !self.configured() {
            return Err("no FortiGuard service (the lab Internet) is configured".into());
        }
        let t0 = Instant::now();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        match self
            .get_json("/_lab/rating?host=service.fortiguard.net")
            .await
        {
            Ok((200, _)) => {
                let rtt = t0.elapsed();
                self.stats
                    .last_rtt_us
                    .store(rtt.as_micros().max(1) as u64, Ordering::Relaxed);
                Ok(rtt)
            }
            Ok((st, _)) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(format!("the rating service answered HTTP {st}"))
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(e.to_string())
            }
        }
    }

    /// Sets the control base URL (`https://127.0.0.1:P`); clears the caches.
    pub fn set_base(&self, url: &str) -> Result<(), String> {
        let b = parse_base(url).ok_or_else(|| format!("not an https://host:port URL: {url}"))?;
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
        self.dns.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.ratings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    pub fn configured(&self) -> bool {
        self.base
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// `GET base+path` over the pooled keep-alive client (lab CA), the JSON answer (`Null`
    /// when the body is not JSON).
    async fn get_json(&self, path: &str) -> std::io::Result<(u16, serde_json::Value)> {
        let Some((host, port)) = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Err(std::io::Error::other("no --internet URL"));
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = Request::get(&format!("https://{authority}{path}"))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(5));
        if let Some(t) = &self.lab_token {
            req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
        }
        let resp = self.client.get(&req).await.map_err(|e| match e {
            ClientError::Timeout(_) => std::io::Error::other("lab Internet control timed out"),
            e => std::io::Error::other(e.to_string()),
        })?;
        let v = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
        Ok((resp.status, v))
    }

    /// The lab address of a host: IP literals as they are, names through the lab DNS (cached).
    /// `Ok(None)`: NXDOMAIN.
    pub async fn resolve(&self, host: &str) -> std::io::Result<Option<Ipv4Addr>> {
        let h = lower(host);
        if let Ok(ip) = h.trim_matches(['[', ']']).parse::<Ipv4Addr>() {
            return Ok(Some(ip));
        }
        if let Some(v) = self.dns.lock().unwrap_or_else(|p| p.into_inner()).get(&h) {
            return Ok(*v);
        }
        let q: String = form_urlencoded::byte_serialize(h.as_bytes()).collect();
        self.stats.dns_queries.fetch_add(1, Ordering::Relaxed);
        let (status, v) = self
            .get_json(&format!("/_lab/dns?name={q}"))
            .await
            .inspect_err(|_| {
                self.stats.dns_failures.fetch_add(1, Ordering::Relaxed);
            })?;
        let ip = match status {
            200 => v["ip"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()),
            404 => None,
            s => return Err(std::io::Error::other(format!("lab DNS answered {s}"))),
        };
        self.dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h, ip);
        Ok(ip)
    }

    /// Cached-only DNS (for compiling FQDN addresses synchronously).
    pub fn cached(&self, host: &str) -> Option<Ipv4Addr> {
        self.dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lower(host))
            .copied()
            .flatten()
    }

    /// The FortiGuard rating of a host (cached; unknown or unreachable → 0 Unrated).
    pub async fn rating(&self, host: &str) -> Rating {
        let h = lower(host);
        if let Some(r) = self
            .ratings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h)
        {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return r.clone();
        }
        if !self.configured() {
            return Rating::unrated();
        }
        let q: String = form_urlencoded::byte_serialize(h.as_bytes()).collect();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let r = match self.get_json(&format!("/_lab/rating?host={q}")).await {
            Ok((200, v)) => {
                self.stats
                    .last_rtt_us
                    .store(t0.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
                Rating {
                    cat: v["category"].as_u64().unwrap_or(0).min(255) as u8,
                    catdesc: v["catdesc"].as_str().unwrap_or("Unrated").to_string(),
                }
            }
            Ok(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Rating::unrated()
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, host = %h, "FortiGuard rating lookup failed");
                return Rating::unrated();
            }
        };
        self.ratings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h, r.clone());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            parse_base("https://127.0.0.1:8443"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(parse_base("https://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(parse_base("http://x:1"), None);
    }
}
