//! The lab's links and their fault relays (loopback mode).
//!
//! Every device that calls a peer gets its own lab map (`labmap-<label>.json`) in which the
//! peer's services resolve to a relay of the link between the two ([`LabLinks::relay`]); the
//! relay ([`fortilab_core::linkfault::relay`]) is byte-transparent and applies the link's
//! condition. Links and what they carry:
//!
//! | link | carries |
//! |---|---|
//! | fortigate ↔ fortianalyzer | the FortiGate's log channel (514), its syslog (lab port 5514, TCP and UDP: the relay takes both on one port number; datagrams are dropped while the link is down, lost at its loss rate, delayed by its latency and rate) and calls to the FortiAnalyzer API |
//! | fortigate ↔ ems | the EMS fabric connector (HTTPS 443: status polls, quarantine requests) |
//! | fortigate ↔ internet | every proxied request's upstream connection to a lab Internet site, and the FortiGate's FortiGuard rating and DNS lookups (asked of the lab Internet's control surface: while the link is down a lookup waits and times out, as a FortiGuard or DNS query would) |
//! | endpoints ↔ fortigate | the endpoints' connections to the FortiGate's explicit proxy and API |
//! | endpoints ↔ ems | FortiClient telemetry (8013) and the EMS API |
//! | endpoints ↔ fortianalyzer | the FortiClients' own log channel (514) and syslog (5514, as above) |
//!
//! Not through a relay: the orchestrator's and dashboard's own API calls (they are the
//! administrator's console, not a lab link) and the `/_lab/events` streams.
//!
//! Namespaces mode would replace the relays with `tc netem` on each pair's veth; the
//! [`LinkCondition`] of a link is the seam ([`LabLinks::set`] is where it would be applied).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use fortilab_core::linkfault::relay::Link;
use fortilab_core::linkfault::{parse_rate, LinkCondition, LinkId};
use fortilab_core::LabClock;

/// A link's report in namespaces mode (the relay report's condition keys).
fn netem_report(id: &LinkId, c: &LinkCondition, via: &str) -> Value {
    json!({
        "a": id.a, "b": id.b, "name": id.name(),
        "state": if c.down { "down" } else { "up" },
        "latency_ms": c.latency.as_secs_f64() * 1000.0,
        "loss": c.loss,
        "rate": c.rate_bps.map(fortilab_core::linkfault::format_rate),
        "rate_bps": c.rate_bps,
        "clean": c.is_clean(),
        "via": via,
    })
}

/// A change of a link's condition as a user writes it (scenario step, `/_lab/link`): every
/// field given; what is left out is clean (`state = "up"` alone clears the link).
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub a: String,
    pub b: String,
    /// `"down"` or `"up"` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Added one-way delay, lab time (`"200ms"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Probability (0..1) of losing a TCP segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Bandwidth (`"64kbit"`, `"10mbit"`, `"500kbps"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

impl LinkSpec {
    /// The link and its condition (lab time), or what is wrong.
    pub fn resolve(&self) -> Result<(LinkId, LinkCondition), String> {
        let id = LinkId::new(&self.a, &self.b)?;
        let down = match self.state.as_deref() {
            None | Some("up") => false,
            Some("down") => true,
            Some(other) => return Err(format!("state must be \"up\" or \"down\", got {other:?}")),
        };
        let latency = match &self.latency {
            None => std::time::Duration::ZERO,
            Some(s) => crate::scenario::parse_duration(s)
                .ok_or_else(|| format!("bad latency {s:?} (use e.g. \"200ms\", \"1s\")"))?,
        };
        let rate_bps = match &self.rate {
            None => None,
            Some(r) => Some(parse_rate(r).map_err(|e| e.to_string())?),
        };
        let c = LinkCondition {
            down,
            latency,
            loss: self.loss.unwrap_or(0.0),
            rate_bps,
        };
        c.validate().map_err(|e| e.to_string())?;
        Ok((id, c))
    }
}

/// One relay: a lab service reached over a link.
#[derive(Debug, Clone)]
struct RelayInfo {
    link: LinkId,
    /// The real socket of the service.
    real: SocketAddr,
    /// Where the relay listens.
    relay: SocketAddr,
    /// Lab services routed through it (for the report).
    lab: Vec<SocketAddr>,
    /// It relays UDP datagrams too, on the same port number.
    udp: bool,
    _target: Arc<watch::Sender<Option<SocketAddr>>>,
}

/// The links of one lab and their relays.
pub struct LabLinks {
    links: Mutex<BTreeMap<LinkId, Arc<Link>>>,
    relays: Mutex<Vec<RelayInfo>>,
    clock: Mutex<LabClock>,
    seed: u64,
    shutdown: CancellationToken,
    /// Namespaces mode: links are shaped by `tc netem` on the veths, not by relays.
    netem: Mutex<Option<(crate::netns::NetemSet, BTreeMap<String, LinkCondition>)>>,
}

impl std::fmt::Debug for LabLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabLinks").finish_non_exhaustive()
    }
}

impl LabLinks {
    pub fn new(seed: u64, clock: LabClock) -> Arc<LabLinks> {
        Arc::new(LabLinks {
            links: Mutex::new(BTreeMap::new()),
            relays: Mutex::new(Vec::new()),
            clock: Mutex::new(clock),
            seed,
            shutdown: CancellationToken::new(),
            netem: Mutex::new(None),
        })
    }

    fn link(&self, id: &LinkId) -> Arc<Link> {
        self.links
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert_with(|| Link::new(id.clone(), self.seed))
            .clone()
    }

    /// The relay of `link` for the service `lab` whose real socket is `real` (one relay per
    /// link and real socket); returns the relay's address. Needs a Tokio runtime.
    pub fn relay(
        &self,
        link: &LinkId,
        lab: SocketAddr,
        real: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        self.start_relay(link, lab, real, false)
    }

    /// [`LabLinks::relay`] for a service that takes TCP and UDP on one port number
    /// (FortiAnalyzer's syslog): the relay listens on one port number for both, and the link's
    /// condition drops, loses or delays the datagrams ([`Link::serve_udp`]).
    pub fn relay_tcp_udp(
        &self,
        link: &LinkId,
        lab: SocketAddr,
        real: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        self.start_relay(link, lab, real, true)
    }

    fn start_relay(
        &self,
        link: &LinkId,
        lab: SocketAddr,
        real: SocketAddr,
        udp: bool,
    ) -> std::io::Result<SocketAddr> {
        let mut relays = self.relays.lock().unwrap();
        if let Some(r) = relays
            .iter_mut()
            .find(|r| &r.link == link && r.real == real && r.udp == udp)
        {
            if !r.lab.contains(&lab) {
                r.lab.push(lab);
            }
            return Ok(r.relay);
        }
        let bind: SocketAddr = if real.is_ipv4() {
            "127.0.0.1:0".parse().unwrap()
        } else {
            "[::1]:0".parse().unwrap()
        };
        let (std_l, std_u) = if udp {
            bind_tcp_udp(bind)?
        } else {
            (std::net::TcpListener::bind(bind)?, None)
        };
        std_l.set_nonblocking(true)?;
        let addr = std_l.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(std_l)?;
        let (tx, rx) = watch::channel(Some(real));
        let l = self.link(link);
        if let Some(u) = std_u {
            u.set_nonblocking(true)?;
            let u = tokio::net::UdpSocket::from_std(u)?;
            tokio::spawn(
                l.clone()
                    .serve_udp(u, rx.clone(), self.shutdown.child_token()),
            );
        }
        tokio::spawn(l.serve(listener, rx, self.shutdown.child_token()));
        relays.push(RelayInfo {
            link: link.clone(),
            real,
            relay: addr,
            lab: vec![lab],
            udp,
            _target: Arc::new(tx),
        });
        Ok(addr)
    }

    /// Sets a link's condition (lab time; applied in real time through the lab clock's
    /// speed). Errors when the lab has no traffic on that link.
    pub fn set(&self, id: &LinkId, cond: LinkCondition) -> Result<Value, String> {
        if let Some((set, state)) = self.netem.lock().unwrap().as_mut() {
            let name = id.name();
            if !set.link_names().contains(&name) {
                return Err(format!(
                    "no traffic between {} and {} in this lab (links: {})",
                    id.a,
                    id.b,
                    set.link_names().join(", ")
                ));
            }
            cond.validate().map_err(|e| e.to_string())?;
            let speed = self.clock.lock().unwrap().speed();
            set.set_link(&name, &cond.to_real(speed))
                .map_err(|e| format!("{e:#}"))?;
            state.insert(name, cond);
            return Ok(netem_report(id, &cond, set.via()));
        }
        let found = self.links.lock().unwrap().get(id).cloned();
        let link = found.ok_or_else(|| {
            format!(
                "no traffic between {} and {} in this lab (links: {})",
                id.a,
                id.b,
                self.names().join(", ")
            )
        })?;
        cond.validate().map_err(|e| e.to_string())?;
        let speed = self.clock.lock().unwrap().speed();
        link.set(cond, cond.to_real(speed));
        Ok(link.report())
    }

    /// Applies a user's link change; the report of the link afterwards.
    pub fn apply(&self, spec: &LinkSpec) -> Result<Value, String> {
        let (id, cond) = spec.resolve()?;
        self.set(&id, cond)
    }

    /// Namespaces mode: link faults go to `tc netem` on the lab's veths.
    pub fn use_netem(&self, set: crate::netns::NetemSet) {
        *self.netem.lock().unwrap() = Some((set, BTreeMap::new()));
    }

    /// A link's condition (lab time).
    pub fn condition(&self, id: &LinkId) -> Option<LinkCondition> {
        if let Some((set, state)) = self.netem.lock().unwrap().as_ref() {
            let name = id.name();
            return set
                .link_names()
                .contains(&name)
                .then(|| state.get(&name).copied().unwrap_or_default());
        }
        self.links.lock().unwrap().get(id).map(|l| l.condition())
    }

    /// The names of the lab's links (`fortigate-fortianalyzer`, …).
    pub fn names(&self) -> Vec<String> {
        if let Some((set, _)) = self.netem.lock().unwrap().as_ref() {
            return set.link_names();
        }
        self.links
            .lock()
            .unwrap()
            .keys()
            .map(LinkId::name)
            .collect()
    }

    /// Every link with its condition, counters and relays.
    pub fn report(&self) -> Value {
        if let Some((set, state)) = self.netem.lock().unwrap().as_ref() {
            let out: Vec<Value> = set
                .link_names()
                .iter()
                .filter_map(|n| {
                    let (a, b) = n.split_once('-')?;
                    let id = LinkId::new(a, b).ok()?;
                    Some(netem_report(
                        &id,
                        &state.get(n).copied().unwrap_or_default(),
                        set.via(),
                    ))
                })
                .collect();
            return json!({ "links": out });
        }
        let relays = self.relays.lock().unwrap().clone();
        let links = self.links.lock().unwrap().clone();
        let out: Vec<Value> = links
            .iter()
            .map(|(id, l)| {
                let mut r = l.report();
                r["relays"] = relays
                    .iter()
                    .filter(|x| &x.link == id)
                    .map(|x| {
                        json!({"relay": x.relay.to_string(), "real": x.real.to_string(),
                               "udp": x.udp,
                               "lab": x.lab.iter().map(|a| a.to_string()).collect::<Vec<_>>()})
                    })
                    .collect();
                r
            })
            .collect();
        json!({ "links": out })
    }

    /// Holds every relayed link (a lab snapshot's pause: no bytes and no new connection pass
    /// between devices until [`LabLinks::release_all`]; conditions and reports unchanged).
    /// Returns how many links are held: none in namespaces mode, whose links are veths.
    pub fn hold_all(&self) -> usize {
        if self.netem.lock().unwrap().is_some() {
            return 0;
        }
        let links = self.links.lock().unwrap();
        for l in links.values() {
            l.hold();
        }
        links.len()
    }

    /// Ends [`LabLinks::hold_all`].
    pub fn release_all(&self) {
        for l in self.links.lock().unwrap().values() {
            l.release();
        }
    }

    /// Stops every relay (the lab is stopping).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// A TCP listener and a UDP socket on the same free port number of `bind`'s address (a few
/// tries: the number the TCP listener got may be taken for UDP).
fn bind_tcp_udp(
    bind: SocketAddr,
) -> std::io::Result<(std::net::TcpListener, Option<std::net::UdpSocket>)> {
    let mut last = None;
    for _ in 0..20 {
        let l = std::net::TcpListener::bind(bind)?;
        let port = l.local_addr()?.port();
        match std::net::UdpSocket::bind(SocketAddr::new(bind.ip(), port)) {
            Ok(u) => return Ok((l, Some(u))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both TCP and UDP")))
}

impl Drop for LabLinks {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_to_conditions_with_clear_errors() {
        let s = LinkSpec {
            a: "fortigate".into(),
            b: "fortianalyzer".into(),
            state: Some("down".into()),
            ..Default::default()
        };
        let (id, c) = s.resolve().unwrap();
        assert_eq!(id.name(), "fortigate-fortianalyzer");
        assert!(c.down);
        let s = LinkSpec {
            a: "faz".into(),
            b: "fgt".into(),
            latency: Some("200ms".into()),
            loss: Some(0.1),
            rate: Some("64kbit".into()),
            ..Default::default()
        };
        let (_, c) = s.resolve().unwrap();
        assert_eq!(c.latency, std::time::Duration::from_millis(200));
        assert_eq!(c.rate_bps, Some(64_000));
        assert!(!c.down);
        let bad = |f: &dyn Fn(&mut LinkSpec)| {
            let mut s = LinkSpec {
                a: "fortigate".into(),
                b: "ems".into(),
                ..Default::default()
            };
            f(&mut s);
            s.resolve().unwrap_err()
        };
        assert!(bad(&|s| s.state = Some("sideways".into())).contains("state"));
        assert!(bad(&|s| s.loss = Some(2.0)).contains("loss"));
        assert!(bad(&|s| s.rate = Some("fast".into())).contains("rate"));
        assert!(bad(&|s| s.latency = Some("soon".into())).contains("latency"));
        assert!(bad(&|s| s.b = "router".into()).contains("unknown device"));
    }

    /// A syslog relay takes TCP and UDP on one port number; datagrams over a down link are
    /// dropped and counted in the link's report.
    #[tokio::test]
    async fn a_syslog_relay_takes_tcp_and_udp_on_one_port_and_drops_datagrams_while_down() {
        let links = LabLinks::new(1, LabClock::new(0, 0, 1.0, 0));
        let id = LinkId::new("fortigate", "fortianalyzer").unwrap();
        let service = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let real = service.local_addr().unwrap();
        let relay = links
            .relay_tcp_udp(&id, "10.115.1.20:5514".parse().unwrap(), real)
            .unwrap();
        // TCP is served on the same number.
        tokio::net::TcpStream::connect(relay).await.unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"<189>up", relay).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = service.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"<189>up");
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        links.set(&id, down).unwrap();
        client.send_to(b"<189>down", relay).await.unwrap();
        let got = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            service.recv_from(&mut buf),
        )
        .await;
        assert!(got.is_err(), "a datagram crossed a down link");
        let rep = links.report();
        let l = &rep["links"][0];
        assert_eq!(l["datagrams"], 1, "{rep}");
        assert_eq!(l["datagrams_dropped"], 1, "{rep}");
        assert_eq!(l["relays"][0]["udp"], true, "{rep}");
    }

    #[tokio::test]
    async fn links_without_traffic_cannot_be_set_and_relays_are_shared_per_service() {
        let clock = LabClock::new(0, 0, 1.0, 0);
        let links = LabLinks::new(1, clock);
        let id = LinkId::new("fortigate", "fortianalyzer").unwrap();
        let real: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r1 = links
            .relay(&id, "10.115.1.20:514".parse().unwrap(), real)
            .unwrap();
        let r2 = links
            .relay(&id, "10.115.1.21:514".parse().unwrap(), real)
            .unwrap();
        assert_eq!(r1, r2);
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        let rep = links.set(&id, down).unwrap();
        assert_eq!(rep["state"], "down");
        let e = links
            .set(&LinkId::new("ems", "internet").unwrap(), down)
            .unwrap_err();
        assert!(e.contains("no traffic"), "{e}");
        assert_eq!(
            links.report()["links"][0]["relays"][0]["lab"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
