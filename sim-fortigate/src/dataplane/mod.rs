//! The FortiGate data plane: interface model and routes ([`net`]), policy lookup compiled for
//! speed ([`policy`]), web filter ([`webfilter`]), the explicit HTTP/HTTPS proxy listener that
//! stands for the port3 side ([`proxy`]), and the traffic/web filter logs ([`dlog`]).
//!
//! The compiled state is rebuilt on every configuration change (the store's change events);
//! sessions use the state that was current when they started.

pub mod dlog;
pub mod http1;
pub mod internet;
pub mod net;
pub mod policy;
pub mod proxy;
pub mod sni;
pub mod webfilter;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Query as AxQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fortilab_core::supervise::{share_receiver, SharedReceiver};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::tree::Config;
use crate::device::Device;
use internet::Internet;
use net::Network;
use policy::{Compiled, Query, Resolver, SvcRange};
use webfilter::Profile;

/// Everything a session needs from the configuration, compiled.
#[derive(Debug)]
pub struct State {
    pub compiled: Compiled,
    pub net: Network,
    pub profiles: HashMap<String, Arc<Profile>>,
    /// ssl-ssh-profile name → whether HTTPS is inspected (certificate or deep inspection).
    pub https_inspect: HashMap<String, bool>,
    /// Named services for log `service` fields, in table order.
    pub services: Vec<(String, Vec<SvcRange>)>,
}

impl State {
    /// Compiles the state from a configuration; `fqdn` resolves FQDN addresses.
    pub fn build(cfg: &Config, fqdn: &dyn Fn(&str) -> Vec<Ipv4Addr>) -> State {
        let r = Resolver::new(cfg, fqdn);
        let policies = r.policies();
        let mut profiles = HashMap::new();
        if let Some(t) = cfg.table("webfilter profile") {
            for e in t.entries() {
                if let Some(p) = Profile::from_config(cfg, &e.key) {
                    profiles.insert(e.key.clone(), Arc::new(p));
                }
            }
        }
        let mut https_inspect = HashMap::new();
        if let Some(t) = cfg.table("firewall ssl-ssh-profile") {
            for e in t.entries() {
                let https = e
                    .table("https")
                    .and_then(|h| h.get(""))
                    .and_then(|h| h.scalar("status"))
                    .unwrap_or("deep-inspection");
                let all = e
                    .table("ssl")
                    .and_then(|h| h.get(""))
                    .and_then(|h| h.scalar("inspect-all"))
                    .unwrap_or("disable");
                https_inspect.insert(e.key.clone(), https != "disable" || all != "disable");
            }
        }
        let services = cfg
            .table("firewall service custom")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .filter(|e| !e.key.starts_with("ALL"))
                    .map(|e| (e.key.clone(), r.service(&e.key)))
                    .filter(|(_, v)| v.iter().all(|s| s.proto != 0))
                    .collect()
            })
            .unwrap_or_default();
        State {
            compiled: Compiled::new(policies),
            net: Network::from_config(cfg),
            profiles,
            https_inspect,
            services,
        }
    }

    /// The service name FortiOS logs for a protocol/port (`HTTP`, `HTTPS`, else `tcp/8080`).
    pub fn service_name(&self, proto: u8, port: u16) -> String {
        for (name, ranges) in &self.services {
            if ranges
                .iter()
                .any(|s| s.proto == proto && port >= s.lo && port <= s.hi)
            {
                return name.clone();
            }
        }
        let p = match proto {
            6 => "tcp",
            17 => "udp",
            132 => "sctp",
            _ => return format!("proto/{proto}"),
        };
        format!("{p}/{port}")
    }
}

/// The result of routing and policy lookup for one 5-tuple.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub srcside: net::Side,
    pub dstside: net::Side,
    /// Index into `compiled.policies` (`None`: implicit deny).
    pub index: Option<usize>,
}

/// The data plane of one FortiGate.
pub struct DataPlane {
    pub dev: Arc<Device>,
    pub internet: Internet,
    state: RwLock<Arc<State>>,
    next_session: AtomicU64,
    next_port: AtomicU64,
    /// Counters for the lab surface.
    pub stats: Stats,
    /// Per-interface traffic counters (`monitor/system/interface`).
    intf: std::sync::Mutex<HashMap<String, IntfCounters>>,
    /// Source hosts seen by the data plane (`monitor/user/device/query`).
    hosts: std::sync::Mutex<HashMap<Ipv4Addr, HostSeen>>,
}

/// A source host the data plane has seen (the FortiGate's device detection, from traffic).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostSeen {
    pub ip: Ipv4Addr,
    /// The interface its sessions entered by.
    pub interface: String,
    /// Lab time, Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    pub sessions: u64,
    pub sent_bytes: u64,
    pub rcvd_bytes: u64,
}

/// Traffic through one interface, counted at session end (the proxy sees sessions, not
/// packets: packets are derived from bytes as in the traffic logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntfCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Sessions that entered (`src`) or left (`dst`) through the interface.
    pub sessions: u64,
}

/// Data plane counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    pub blocked: AtomicU64,
    pub banned_drops: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub rebuilds: AtomicU64,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Builds the data plane and keeps it compiled as the configuration changes (until
    /// `shutdown`). `tls`: client configuration trusting the lab CA (for `--internet`).
    pub fn new(
        dev: Arc<Device>,
        tls: Arc<rustls::ClientConfig>,
        shutdown: CancellationToken,
    ) -> Arc<DataPlane> {
        let internet = Internet::new(tls, dev.lab_token());
        let state = dev
            .config
            .with(|c| State::build(c, &|n| internet.cached(n).into_iter().collect()));
        let mut rng = fortilab_core::rng::stream(dev.seed, "fortigate/sessions");
        let dp = Arc::new(DataPlane {
            next_session: AtomicU64::new(rng.gen_range(100_000..900_000)),
            next_port: AtomicU64::new(rng.gen_range(0..60_000)),
            dev: dev.clone(),
            internet,
            state: RwLock::new(Arc::new(state)),
            stats: Stats::default(),
            intf: Default::default(),
            hosts: Default::default(),
        });
        // Supervised (`/_lab/tasks`, `task.*` events): a panicking rebuild is reported and the
        // task started again on the same subscription.
        let rx = share_receiver(dev.config.subscribe());
        let weak = Arc::downgrade(&dp);
        let stop = shutdown.clone();
        dev.supervisor.spawn(Self::REBUILD_TASK, shutdown, move || {
            rebuild_loop(weak.clone(), rx.clone(), stop.clone())
        });
        dp
    }

    /// The name of the supervised task that recompiles the data plane after configuration
    /// changes.
    pub const REBUILD_TASK: &'static str = "data plane: rebuild";

    /// Points the data plane at the lab Internet's control URL and recompiles (FQDNs).
    pub async fn set_internet(&self, url: &str) -> Result<(), String> {
        self.internet.set_base(url)?;
        self.rebuild().await;
        Ok(())
    }

    /// Resolves FQDN addresses, then recompiles.
    pub async fn rebuild(&self) {
        let names = self.dev.config.with(policy::fqdn_names);
        if self.internet.configured() {
            for n in names.iter().filter(|n| !n.contains('*')) {
                let _ = self.internet.resolve(n).await;
            }
        }
        let internet = &self.internet;
        let state = self
            .dev
            .config
            .with(|c| State::build(c, &|n| internet.cached(n).into_iter().collect()));
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session's bytes on its ingress (`src`) and egress (`dst`) interfaces:
    /// `sent` bytes flow client → server (received on `src`, transmitted on `dst`).
    pub fn count_interfaces(&self, src: &str, dst: &str, sent: u64, rcvd: u64, opened: bool) {
        let mut m = self.intf.lock().unwrap_or_else(|p| p.into_inner());
        let pk = |b: u64| if opened { dlog::packets(b) } else { 1 };
        let a = m.entry(src.to_string()).or_default();
        a.rx_bytes += sent;
        a.tx_bytes += rcvd;
        a.rx_packets += pk(sent);
        a.tx_packets += if opened { pk(rcvd) } else { 0 };
        a.sessions += 1;
        if opened && !dst.is_empty() {
            let b = m.entry(dst.to_string()).or_default();
            b.tx_bytes += sent;
            b.rx_bytes += rcvd;
            b.tx_packets += pk(sent);
            b.rx_packets += pk(rcvd);
            b.sessions += 1;
        }
    }

    /// Records a session of source host `ip` entering by `intf`.
    pub fn saw_host(&self, ip: Ipv4Addr, intf: &str, sent: u64, rcvd: u64) {
        let now = self.dev.clock.now_secs();
        let mut m = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let h = m.entry(ip).or_insert_with(|| HostSeen {
            ip,
            interface: intf.to_string(),
            first_seen: now,
            last_seen: now,
            sessions: 0,
            sent_bytes: 0,
            rcvd_bytes: 0,
        });
        h.interface = intf.to_string();
        h.last_seen = now;
        h.sessions += 1;
        h.sent_bytes += sent;
        h.rcvd_bytes += rcvd;
    }

    /// The hosts seen so far, by address.
    pub fn hosts_seen(&self) -> Vec<HostSeen> {
        let mut v: Vec<HostSeen> = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|h| h.ip);
        v
    }

    /// The per-interface counters so far.
    pub fn interface_counters(&self) -> HashMap<String, IntfCounters> {
        self.intf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A source port for NAT (1024–65535).
    pub fn next_nat_port(&self) -> u16 {
        (1024 + self.next_port.fetch_add(1, Ordering::Relaxed) % 64_512) as u16
    }

    fn local_secs(&self) -> i64 {
        self.dev.clock.now_secs() + self.dev.clock.tz_minutes() as i64 * 60
    }

    /// Route + policy lookup for a new session.
    pub fn lookup(
        &self,
        st: &State,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        dport: u16,
        srcintf: Option<&str>,
    ) -> (Lookup, Query) {
        let mut srcside = st.net.ingress(src);
        if let Some(i) = srcintf {
            if let Some(x) = st.net.interfaces.iter().find(|x| x.name == i) {
                let mut names = vec![x.name.clone()];
                names.extend(x.zones.iter().cloned());
                srcside = net::Side {
                    intf: x.name.clone(),
                    role: x.role.clone(),
                    names,
                    ip: x.ip,
                };
            } else {
                srcside.intf = i.to_string();
                srcside.names = vec![i.to_string()];
            }
        }
        let dstside = st.net.route(dst);
        let q = Query {
            srcintf: srcside.names.clone(),
            dstintf: dstside.names.clone(),
            src,
            dst,
            proto,
            dport,
            local_secs: self.local_secs(),
        };
        let index = st.compiled.lookup(&q);
        (
            Lookup {
                srcside,
                dstside,
                index,
            },
            q,
        )
    }

    /// The lab surface: `GET|POST /_lab/policy-lookup`, `GET /_lab/dataplane`.
    pub fn lab_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/_lab/policy-lookup",
                get(policy_lookup_get).post(policy_lookup_post),
            )
            .route("/_lab/dataplane", get(dataplane_stats))
            .with_state(self.clone())
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct LookupParams {
    srcip: Option<String>,
    dstip: Option<String>,
    dstport: Option<serde_json::Value>,
    proto: Option<serde_json::Value>,
    srcintf: Option<String>,
}

fn proto_number(v: Option<&serde_json::Value>) -> Option<u8> {
    match v {
        None => Some(6),
        Some(serde_json::Value::Number(n)) => n.as_u64().filter(|n| *n <= 255).map(|n| n as u8),
        Some(serde_json::Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(6),
            "udp" => Some(17),
            "icmp" => Some(1),
            "sctp" => Some(132),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

fn lookup_answer(dp: &DataPlane, p: LookupParams) -> Response {
    let bad = |m: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": m})),
        )
            .into_response()
    };
    let Some(src) = p.srcip.as_deref().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
        return bad("srcip (IPv4) is required");
    };
    let Some(dst) = p.dstip.as_deref().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
        return bad("dstip (IPv4) is required");
    };
    let port = match &p.dstport {
        None => Some(80),
        Some(serde_json::Value::Number(n)) => n.as_u64().filter(|n| *n <= 65535).map(|n| n as u16),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let Some(port) = port else {
        return bad("dstport must be 0-65535");
    };
    let Some(proto) = proto_number(p.proto.as_ref()) else {
        return bad("proto must be tcp, udp, icmp, sctp or a number");
    };
    let st = dp.state();
    let (lk, q) = dp.lookup(&st, src, dst, proto, port, p.srcintf.as_deref());
    let (naive, skipped) = policy::explain(&st.compiled.policies, &q);
    let matched = lk.index.map(|i| &st.compiled.policies[i]);
    Json(serde_json::json!({
        "srcip": src.to_string(), "dstip": dst.to_string(), "dstport": port, "proto": proto,
        "srcintf": lk.srcside.intf, "srcintf_match": lk.srcside.names,
        "dstintf": lk.dstside.intf, "dstintf_match": lk.dstside.names,
        "policyid": matched.map(|p| p.policyid).unwrap_or(0),
        "action": matched.map(|p| p.action.as_str()).unwrap_or("deny"),
        "implicit_deny": matched.is_none(),
        "name": matched.map(|p| p.name.clone()),
        "webfilter_profile": matched.filter(|p| p.utm).map(|p| p.webfilter_profile.clone()),
        "nat": matched.map(|p| p.nat),
        "skipped": skipped.iter().map(|(id, f)| serde_json::json!({"policyid": id, "field": f})).collect::<Vec<_>>(),
        "compiled_agrees": naive == lk.index,
    }))
    .into_response()
}

async fn policy_lookup_get(
    AxState(dp): AxState<Arc<DataPlane>>,
    AxQuery(p): AxQuery<HashMap<String, String>>,
) -> Response {
    let s = |k: &str| p.get(k).cloned();
    lookup_answer(
        &dp,
        LookupParams {
            srcip: s("srcip"),
            dstip: s("dstip"),
            dstport: s("dstport").map(serde_json::Value::String),
            proto: s("proto").map(serde_json::Value::String),
            srcintf: s("srcintf"),
        },
    )
}

async fn policy_lookup_post(
    AxState(dp): AxState<Arc<DataPlane>>,
    body: axum::body::Bytes,
) -> Response {
    match serde_json::from_slice::<LookupParams>(&body) {
        Ok(p) => lookup_answer(&dp, p),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn dataplane_stats(AxState(dp): AxState<Arc<DataPlane>>) -> Json<serde_json::Value> {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let s = &dp.stats;
    let st = dp.state();
    Json(serde_json::json!({
        "policies": st.compiled.len(),
        "connections": g(&s.connections), "requests": g(&s.requests), "denied": g(&s.denied),
        "blocked": g(&s.blocked), "banned_drops": g(&s.banned_drops),
        "upstream_errors": g(&s.upstream_errors), "rebuilds": g(&s.rebuilds),
        "internet": dp.internet.configured(),
        // Lookups of the lab Internet (FortiGuard ratings, DNS) and how many failed (a down
        // FortiGate ↔ Internet link makes them time out).
        "lookups": {
            "rating_queries": g(&dp.internet.stats.queries),
            "rating_failures": g(&dp.internet.stats.failures),
            "dns_queries": g(&dp.internet.stats.dns_queries),
            "dns_failures": g(&dp.internet.stats.dns_failures),
        },
    }))
}

/// Whether an address is IPv4 (the data plane models IPv4 only).
pub fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(v) => v.to_ipv4_mapped(),
    }
}

/// Serves the explicit proxy (the port3 side) on `listener` until `shutdown`.
pub fn serve_proxy(
    dp: &Arc<DataPlane>,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    serve_supervised(
        dp,
        listener,
        shutdown,
        "proxy",
        "explicit proxy",
        proxy::serve,
    )
}

/// Serves the transparent proxy on `listener` until `shutdown`: connections redirected to it
/// keep their original destination (`SO_ORIGINAL_DST`).
pub fn serve_transparent(
    dp: &Arc<DataPlane>,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    serve_supervised(
        dp,
        listener,
        shutdown,
        "transparent proxy",
        "transparent proxy",
        proxy::serve_transparent,
    )
}

/// Runs `serve` on `listener` as the device supervisor's task `task` (started again on the
/// same socket if it ends before `shutdown`); logs `what` ready with its address.
fn serve_supervised<Fut>(
    dp: &Arc<DataPlane>,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    task: &str,
    what: &str,
    serve: fn(Arc<DataPlane>, tokio::net::TcpListener, CancellationToken) -> Fut,
) -> std::io::Result<std::net::SocketAddr>
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let (dp2, stop) = (dp.clone(), shutdown.clone());
    dp.dev
        .supervisor
        .spawn_tcp(task, listener, shutdown.clone(), move |l| {
            serve(dp2.clone(), l, stop.clone())
        })?;
    tracing::info!(%addr, "{what} (port3 side) ready");
    Ok(addr)
}

/// Recompiles the data plane after each burst of configuration changes, until shutdown (also
/// once the configuration store or the data plane is gone: a supervised task that returned
/// early would be started again).
async fn rebuild_loop(
    dp: std::sync::Weak<DataPlane>,
    rx: SharedReceiver<tokio::sync::broadcast::Receiver<crate::config::ChangeEvent>>,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = rx.lock().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    if !rx.is_empty() { continue; }
                    let Some(dp) = dp.upgrade() else { break };
                    dp.rebuild().await;
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
    shutdown.cancelled().await;
}
