//! The IOC engine: the threat-intelligence database (TIDB) and the compromised-host table.
//!
//! Pure logic, no I/O: the store feeds it every inserted log ([`LogView`]) and persists the
//! hosts it changes; the service turns its [`Change`]s into alerts and notifications.
//!
//! Verdicts (FAZ Admin Guide "Indicators of Compromise"): a blacklist hit (IP, domain, URL) lists
//! the endpoint at once with verdict `Infected` (level high). Suspicious-URL hits accumulate a
//! per-endpoint daily score that is evaluated on the half-hour cycle ([`IocEngine::evaluate`]);
//! above the threshold the endpoint is listed as `Suspicious` (level medium) [P].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Detect methods, as FAZ shows them in the threat drill-down.
pub const INFECTED_DOMAIN: &str = "Infected-domain";
pub const INFECTED_URL: &str = "Infected-url";
pub const INFECTED_IP: &str = "Infected-ip";
pub const SUSPICIOUS_URL: &str = "Suspicious-url";

/// A fast non-cryptographic hasher (the Fx hash) for the TIDB's large sets: indicators come from
/// the lab's own package, so hash flooding is not a concern, and SipHash would dominate a
/// sub-microsecond check.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;
type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// TIDB entries from the lab definition (`[tidb]` in the `--config` TOML).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TidbAdditions {
    /// Package version override (e.g. `"1.00234"`).
    pub version: Option<String>,
    pub black_ip: Vec<String>,
    pub black_domain: Vec<String>,
    pub black_url: Vec<String>,
    /// Suspicious URLs with their score (`{"host/path" = 40}`).
    pub suspicious_url: BTreeMap<String, u32>,
}

/// The threat-intelligence database: blacklists (hash sets) and a scored suspicious-URL list.
#[derive(Debug, Clone, Default)]
pub struct Tidb {
    pub version: String,
    /// Lab time (Unix s) the package was loaded.
    pub loaded_at: i64,
    black_ip: FxSet<IpAddr>,
    black_domain: FxSet<String>,
    black_url: FxSet<String>,
    suspicious_url: FxMap<String, u32>,
    /// Hosts of the black and suspicious URLs: a URL is normalised and looked up only when its
    /// host is here.
    url_hosts: FxSet<String>,
}

/// Which list a key is in (the `diagnose test application sqllogd 204 tidb` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TidbType {
    BlackIp,
    BlackDomain,
    BlackUrl,
    SuspiciousUrl,
}

impl Tidb {
    /// The default lab package: the EICAR download URL and domain as test indicators, the IOC
    /// test address Fortinet uses in its articles, and a few more lab indicators.
    pub fn default_lab() -> Self {
        let mut t = Tidb {
            version: "1.00001".into(),
            ..Default::default()
        };
        for d in [
            "www.eicar.org",
            "ioc-test.example",
            "malware.lab.example",
            "c2.lab.example",
        ] {
            t.add_domain(d);
        }
        for u in [
            "www.eicar.org/download/eicar.com",
            "www.eicar.org/download/eicar.com.txt",
        ] {
            t.add_url(u);
        }
        for ip in ["195.22.28.198", "89.1.66.66"] {
            t.black_ip.insert(ip.parse().expect("valid lab IP"));
        }
        t.add_suspicious("phish.lab.example/login", 60);
        t.add_suspicious("crowd.lab.example/track", 30);
        t.add_suspicious("ads.lab.example/pixel", 10);
        t
    }

    /// An empty package (benchmarks build their own).
    pub fn empty(version: &str) -> Self {
        Tidb {
            version: version.into(),
            ..Default::default()
        }
    }

    /// Adds the lab definition's entries; `Err` names the bad entry.
    pub fn extend(&mut self, add: &TidbAdditions) -> Result<(), String> {
        if let Some(v) = &add.version {
            self.version = v.clone();
        }
        for ip in &add.black_ip {
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| format!("black_ip: bad IP {ip:?}"))?;
            self.black_ip.insert(ip);
        }
        for d in &add.black_domain {
            if d.trim().is_empty() {
                return Err("black_domain: empty entry".into());
            }
            self.add_domain(d);
        }
        for u in &add.black_url {
            if u.trim().is_empty() {
                return Err("black_url: empty entry".into());
            }
            self.add_url(u);
        }
        for (u, score) in &add.suspicious_url {
            self.add_suspicious(u, *score);
        }
        Ok(())
    }

    pub fn add_ip(&mut self, ip: IpAddr) {
        self.black_ip.insert(ip);
    }

    pub fn add_domain(&mut self, d: &str) {
        self.black_domain
            .insert(d.trim().trim_end_matches('.').to_ascii_lowercase());
    }

    pub fn add_url(&mut self, u: &str) {
        let n = normalize_url(u, None);
        self.url_hosts
            .insert(n.split('/').next().unwrap_or("").to_string());
        self.black_url.insert(n);
    }

    pub fn add_suspicious(&mut self, u: &str, score: u32) {
        let n = normalize_url(u, None);
        self.url_hosts
            .insert(n.split('/').next().unwrap_or("").to_string());
        self.suspicious_url.insert(n, score);
    }

    /// Number of indicators.
    pub fn len(&self) -> usize {
        self.black_ip.len()
            + self.black_domain.len()
            + self.black_url.len()
            + self.suspicious_url.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts per list: (black_ip, black_domain, black_url, suspicious_url).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.black_ip.len(),
            self.black_domain.len(),
            self.black_url.len(),
            self.suspicious_url.len(),
        )
    }

    /// Which list holds `key` (an IP, a domain or a URL).
    pub fn lookup(&self, key: &str) -> Option<TidbType> {
        if let Ok(ip) = key.parse::<IpAddr>() {
            return self.black_ip.contains(&ip).then_some(TidbType::BlackIp);
        }
        let k = normalize_url(key, None);
        if self.black_url.contains(&k) {
            return Some(TidbType::BlackUrl);
        }
        if self.black_domain.contains(&k) {
            return Some(TidbType::BlackDomain);
        }
        if self.suspicious_url.contains_key(&k) {
            return Some(TidbType::SuspiciousUrl);
        }
        None
    }

    fn domain_hit(&self, host: &str) -> Option<String> {
        if self.black_domain.is_empty() || host.is_empty() {
            return None;
        }
        // The host itself, then each parent domain (a blacklisted `example.org` covers
        // `www.example.org`). Hosts in logs are lower case already; only lower-case when needed.
        let owned;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            owned = host.to_ascii_lowercase();
            owned.as_str()
        } else {
            host
        };
        let mut h = host.trim_end_matches('.');
        loop {
            if self.black_domain.contains(h) {
                return Some(h.to_string());
            }
            match h.find('.') {
                Some(i) if h[i + 1..].contains('.') => h = &h[i + 1..],
                _ => return None,
            }
        }
    }

    /// Checks one log. Returns at most one blacklist hit (priority domain, URL, IP: the detect
    /// method FAZ shows for web-filter logs is `Infected-domain`), else a suspicious-URL hit.
    pub fn check(&self, log: &LogView<'_>) -> Option<Hit> {
        let kind = log.kind();
        if kind == LogKind::Other {
            return None;
        }
        let host = log.host();
        if matches!(kind, LogKind::Webfilter | LogKind::Dns | LogKind::Client) {
            if let Some(d) = host.and_then(|h| self.domain_hit(h)) {
                return Some(Hit::black(d.clone(), INFECTED_DOMAIN, d));
            }
        }
        let mut norm = String::new();
        if matches!(kind, LogKind::Webfilter | LogKind::Client) {
            if let Some(url) = log.url {
                if self.url_host_listed(url, host) {
                    norm = normalize_url(url, host);
                    if self.black_url.contains(&norm) {
                        return Some(Hit::black(norm.clone(), INFECTED_URL, norm));
                    }
                    if let Some(q) = norm.find('?') {
                        let base = &norm[..q];
                        if self.black_url.contains(base) {
                            let base = base.to_string();
                            return Some(Hit::black(base.clone(), INFECTED_URL, base));
                        }
                    }
                }
            }
        }
        if !self.black_ip.is_empty() {
            for ip in log.ips() {
                if self.black_ip.contains(&ip) {
                    let s = ip.to_string();
                    return Some(Hit::black(s.clone(), INFECTED_IP, s));
                }
            }
        }
        if !norm.is_empty() {
            let base = norm.split('?').next().unwrap_or(&norm);
            if let Some(score) = self.suspicious_url.get(base) {
                return Some(Hit {
                    threat: base.to_string(),
                    method: SUSPICIOUS_URL,
                    pattern: base.to_string(),
                    score: *score,
                    black: false,
                });
            }
        }
        None
    }
}

impl Tidb {
    /// Whether the URL's host has any black or suspicious URL (no allocation for the common
    /// lower-case host).
    fn url_host_listed(&self, url: &str, host: Option<&str>) -> bool {
        if self.url_hosts.is_empty() {
            return false;
        }
        let u = url.trim();
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .or_else(|| u.strip_prefix("HTTP://"))
            .or_else(|| u.strip_prefix("HTTPS://"));
        let h = match rest {
            Some(r) => r.split(['/', '?']).next().unwrap_or(r),
            None if u.starts_with('/') => host.unwrap_or(""),
            None => u.split(['/', '?']).next().unwrap_or(u),
        };
        let h = h.split(':').next().unwrap_or(h);
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            self.url_hosts.contains(&h.to_ascii_lowercase())
        } else {
            self.url_hosts.contains(h)
        }
    }
}

/// `host/path?query` in lower-case host form, without scheme; `url` may be a path only (FortiOS
/// 6.x web-filter logs) when `host` is given.
pub fn normalize_url(url: &str, host: Option<&str>) -> String {
    let u = url.trim();
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .or_else(|| u.strip_prefix("HTTP://"))
        .or_else(|| u.strip_prefix("HTTPS://"));
    let (h, path) = match rest {
        Some(r) => match r.find('/') {
            Some(i) => (&r[..i], &r[i..]),
            None => (r, ""),
        },
        None if u.starts_with('/') => (host.unwrap_or(""), u),
        None => match u.find('/') {
            Some(i) => (&u[..i], &u[i..]),
            None => (u, ""),
        },
    };
    let h = h.split(':').next().unwrap_or(h);
    let path = if path == "/" { "" } else { path };
    let mut out = String::with_capacity(h.len() + path.len());
    for c in h.chars() {
        out.push(c.to_ascii_lowercase());
    }
    out.push_str(path);
    out
}

/// The kind of log, for which fields the IOC engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Webfilter,
    Dns,
    Traffic,
    /// A FortiClient log (any type): URLs, domains and IPs.
    Client,
    Other,
}

/// The fields of one log the IOC engine reads.
#[derive(Debug, Clone, Default)]
pub struct LogView<'a> {
    pub log_type: &'a str,
    pub subtype: &'a str,
    pub from_client: bool,
    pub srcip: Option<&'a str>,
    pub dstip: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub qname: Option<&'a str>,
    pub url: Option<&'a str>,
    /// DNS answers (`ipaddr="1.2.3.4, 5.6.7.8"`).
    pub ipaddr: Option<&'a str>,
}

impl LogView<'_> {
    pub fn kind(&self) -> LogKind {
        if self.from_client {
            return LogKind::Client;
        }
        match (self.log_type, self.subtype) {
            ("utm", "webfilter") | ("webfilter", _) => LogKind::Webfilter,
            ("utm", "dns") | ("dns", _) => LogKind::Dns,
            ("traffic", _) => LogKind::Traffic,
            _ => LogKind::Other,
        }
    }

    fn host(&self) -> Option<&str> {
        match self.kind() {
            LogKind::Dns => self.qname.or(self.hostname),
            _ => self.hostname.or(self.qname),
        }
    }

    fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let dns = if self.kind() == LogKind::Dns {
            self.ipaddr
        } else {
            None
        };
        self.dstip
            .into_iter()
            .chain(dns.into_iter().flat_map(|s| s.split(',')))
            .filter_map(|s| s.trim().parse().ok())
    }
}

/// One TIDB match.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Threat name (the indicator).
    pub threat: String,
    /// `Infected-domain`, `Infected-url`, `Infected-ip` or `Suspicious-url`.
    pub method: &'static str,
    /// The detect pattern (the TIDB entry that matched).
    pub pattern: String,
    pub score: u32,
    pub black: bool,
}

impl Hit {
    fn black(threat: String, method: &'static str, pattern: String) -> Self {
        Hit {
            threat,
            method,
            pattern,
            score: 0,
            black: true,
        }
    }
}

/// Verdict levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    None,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

/// One threat in a host's drill-down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Threat {
    pub threat: String,
    #[serde(rename = "detect-method")]
    pub detect_method: String,
    #[serde(rename = "detect-pattern")]
    pub detect_pattern: String,
    #[serde(rename = "log-type")]
    pub log_type: String,
    #[serde(rename = "event-count")]
    pub event_count: u64,
    #[serde(rename = "first-seen")]
    pub first: i64,
    #[serde(rename = "last-seen")]
    pub last: i64,
    /// Found by a rescan rather than on insert.
    pub rescan: bool,
}

/// A compromised-host entry (the reference's section 2.2 proposal, plus the drill-down).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    pub epid: u64,
    pub epip: String,
    pub epname: Option<String>,
    pub user: Option<String>,
    pub mac: Option<String>,
    pub verdict: String,
    pub level: Level,
    /// Listed (a blacklist hit, or a suspicious score above the threshold).
    pub listed: bool,
    pub threats: Vec<Threat>,
    pub event_count: u64,
    pub first_detected: i64,
    pub last_detected: i64,
    pub ack: bool,
    pub ack_time: Option<i64>,
    pub ack_by: Option<String>,
    pub comment: String,
    pub devid: String,
    pub vdom: String,
    /// The device that sent the log of the latest hit (notification target).
    pub last_sender: String,
    pub rescan: bool,
    /// Lab day (days since epoch, lab-local) of the suspicious score below.
    pub score_day: i64,
    /// Suspicious URLs seen today with their score.
    pub suspicious_today: BTreeMap<String, u32>,
    pub last_notified: Option<i64>,
}

impl Host {
    pub fn threat_count(&self) -> usize {
        self.threats.len()
    }

    pub fn score_today(&self) -> u32 {
        self.suspicious_today.values().sum()
    }
}

/// What a hit did to the host table.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Newly listed (or re-listed after an acknowledgement), or its level rose.
    Listed {
        epip: String,
        new_threat: bool,
        threat: String,
        detect_method: String,
    },
    /// A threat new to an already-listed host.
    NewThreat {
        epip: String,
        threat: String,
        detect_method: String,
    },
}

/// Who logged a hit.
#[derive(Debug, Clone, Default)]
pub struct Source<'a> {
    pub epip: &'a str,
    pub epname: Option<&'a str>,
    pub user: Option<&'a str>,
    pub mac: Option<&'a str>,
    pub devid: &'a str,
    pub vdom: &'a str,
    /// The logchan serial that delivered the log.
    pub sender: &'a str,
    pub log_type: &'a str,
}

/// IOC settings (`config system log ioc`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IocSettings {
    pub status: bool,
    pub notification: bool,
    /// Minutes (lab clock).
    pub notification_throttle: u32,
    pub rescan_status: bool,
    /// Hour of the day (lab-local) of the scheduled rescan.
    pub rescan_run_at: u32,
    pub rescan_max_runner: u32,
    /// Daily suspicious score above which an endpoint is listed (level medium) [P].
    pub suspicious_threshold: u32,
    /// Days of logs a rescan covers by default.
    pub rescan_days: u32,
}

impl Default for IocSettings {
    fn default() -> Self {
        Self {
            status: true,
            notification: true,
            notification_throttle: 1440,
            rescan_status: true,
            rescan_run_at: 1,
            rescan_max_runner: 8,
            suspicious_threshold: 80,
            rescan_days: 14,
        }
    }
}

/// A day's fixed summary (the daily roll-over).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaySummary {
    pub day: i64,
    pub date: String,
    pub hosts: usize,
    pub infected: usize,
    pub suspicious: usize,
    pub threats: usize,
    pub events: u64,
}

/// The compromised-host table.
#[derive(Debug, Clone, Default)]
pub struct IocEngine {
    pub tidb: Tidb,
    hosts: HashMap<String, Host>,
    next_epid: u64,
    pub current_day: i64,
    pub days: Vec<DaySummary>,
}

impl IocEngine {
    pub fn new(tidb: Tidb) -> Self {
        Self {
            tidb,
            hosts: HashMap::new(),
            next_epid: 1025,
            current_day: 0,
            days: Vec::new(),
        }
    }

    /// Restores persisted hosts.
    pub fn restore(&mut self, hosts: Vec<Host>) {
        for h in hosts {
            self.next_epid = self.next_epid.max(h.epid + 1);
            self.hosts.insert(h.epip.clone(), h);
        }
    }

    pub fn host(&self, epip: &str) -> Option<&Host> {
        self.hosts.get(epip)
    }

    pub fn host_by_epid(&self, epid: u64) -> Option<&Host> {
        self.hosts.values().find(|h| h.epid == epid)
    }

    /// Listed hosts, most recently detected first.
    pub fn listed(&self) -> Vec<&Host> {
        let mut v: Vec<&Host> = self.hosts.values().filter(|h| h.listed).collect();
        v.sort_by(|a, b| {
            b.last_detected
                .cmp(&a.last_detected)
                .then(a.epid.cmp(&b.epid))
        });
        v
    }

    pub fn all_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    fn host_entry(&mut self, src: &Source<'_>, now: i64) -> &mut Host {
        let epid = &mut self.next_epid;
        self.hosts.entry(src.epip.to_string()).or_insert_with(|| {
            let id = *epid;
            *epid += 1;
            Host {
                epid: id,
                epip: src.epip.to_string(),
                epname: None,
                user: None,
                mac: None,
                verdict: String::new(),
                level: Level::None,
                listed: false,
                threats: Vec::new(),
                event_count: 0,
                first_detected: now,
                last_detected: now,
                ack: false,
                ack_time: None,
                ack_by: None,
                comment: String::new(),
                devid: src.devid.to_string(),
                vdom: src.vdom.to_string(),
                last_sender: src.sender.to_string(),
                rescan: false,
                score_day: 0,
                suspicious_today: BTreeMap::new(),
                last_notified: None,
            }
        })
    }

    /// Applies a hit found in a log at lab time `now` (Unix s), on lab day `day`.
    pub fn apply(
        &mut self,
        hit: &Hit,
        src: &Source<'_>,
        now: i64,
        day: i64,
        rescan: bool,
    ) -> Option<Change> {
        let h = self.host_entry(src, now);
        if let Some(n) = src.epname {
            h.epname = Some(n.to_string());
        }
        if let Some(u) = src.user {
            h.user = Some(u.to_string());
        }
        if let Some(m) = src.mac {
            h.mac = Some(m.to_string());
        }
        if h.ack && h.ack_time.is_some_and(|acked| now < acked) {
            // A log from before the acknowledgement that arrives after it (a FortiClient's
            // scheduled upload, a resend) does not list the host again [P].
            return None;
        }
        if !hit.black {
            if h.score_day != day {
                h.score_day = day;
                h.suspicious_today.clear();
            }
            h.suspicious_today.insert(hit.threat.clone(), hit.score);
            // Counted into the host when the half-hour evaluation lists it.
            if h.listed {
                return Self::count_threat(h, hit, src, now, rescan);
            }
            return None;
        }
        h.devid = src.devid.to_string();
        h.vdom = src.vdom.to_string();
        h.last_sender = src.sender.to_string();
        let relist = !h.listed || h.ack || h.level < Level::High;
        h.listed = true;
        h.level = Level::High;
        h.verdict = "Infected".into();
        let change = Self::count_threat(h, hit, src, now, rescan);
        if relist {
            if h.ack {
                h.ack = false;
                h.ack_time = None;
                h.ack_by = None;
                h.first_detected = now;
            }
            h.rescan = rescan;
            let new_threat = matches!(change, Some(Change::NewThreat { .. }));
            return Some(Change::Listed {
                epip: h.epip.clone(),
                new_threat,
                threat: hit.threat.clone(),
                detect_method: hit.method.into(),
            });
        }
        change
    }

    fn count_threat(
        h: &mut Host,
        hit: &Hit,
        src: &Source<'_>,
        now: i64,
        rescan: bool,
    ) -> Option<Change> {
        h.event_count += 1;
        h.last_detected = h.last_detected.max(now);
        if let Some(t) = h.threats.iter_mut().find(|t| t.threat == hit.threat) {
            t.event_count += 1;
            t.last = t.last.max(now);
            return None;
        }
        h.threats.push(Threat {
            threat: hit.threat.clone(),
            detect_method: hit.method.into(),
            detect_pattern: hit.pattern.clone(),
            log_type: src.log_type.to_string(),
            event_count: 1,
            first: now,
            last: now,
            rescan,
        });
        Some(Change::NewThreat {
            epip: h.epip.clone(),
            threat: hit.threat.clone(),
            detect_method: hit.method.into(),
        })
    }

    /// The half-hour evaluation of suspicious scores: lists endpoints whose daily score reached
    /// the threshold (verdict `Suspicious`, level medium).
    pub fn evaluate(&mut self, threshold: u32, now: i64, day: i64) -> Vec<Change> {
        let mut out = Vec::new();
        for h in self.hosts.values_mut() {
            if h.score_day != day {
                continue;
            }
            let score = h.score_today();
            if score < threshold.max(1) || (h.listed && !h.ack) {
                continue;
            }
            h.listed = true;
            h.ack = false;
            h.ack_time = None;
            if h.level < Level::Medium {
                h.level = Level::Medium;
                h.verdict = "Suspicious".into();
            }
            let mut first = None;
            for (url, score) in h.suspicious_today.clone() {
                let hit = Hit {
                    threat: url.clone(),
                    method: SUSPICIOUS_URL,
                    pattern: url.clone(),
                    score,
                    black: false,
                };
                let src = Source {
                    epip: &h.epip.clone(),
                    log_type: "webfilter",
                    ..Default::default()
                };
                Self::count_threat(h, &hit, &src, now, false);
                first.get_or_insert(url);
            }
            h.last_detected = now;
            out.push(Change::Listed {
                epip: h.epip.clone(),
                new_threat: true,
                threat: first.unwrap_or_default(),
                detect_method: SUSPICIOUS_URL.into(),
            });
        }
        out
    }

    /// Acknowledges a host (by epid and/or IP). Returns the host's IP when one matched.
    pub fn ack(
        &mut self,
        epid: Option<u64>,
        epip: Option<&str>,
        now: i64,
        by: &str,
        comment: Option<&str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.hosts.values_mut() {
            let m = match (epid, epip) {
                (Some(id), Some(ip)) => h.epid == id && h.epip == ip,
                (Some(id), None) => h.epid == id,
                (None, Some(ip)) => h.epip == ip,
                (None, None) => false,
            };
            if m && h.listed {
                h.ack = true;
                h.ack_time = Some(now);
                h.ack_by = Some(by.to_string());
                if let Some(c) = comment {
                    h.comment = c.to_string();
                }
                h.last_notified = None;
                out.push(h.epip.clone());
            }
        }
        out
    }

    /// Whether a notification for this host is due under the throttle; records it if so.
    pub fn take_notification(&mut self, epip: &str, now: i64, throttle_min: u32) -> bool {
        let Some(h) = self.hosts.get_mut(epip) else {
            return false;
        };
        let due = match h.last_notified {
            None => true,
            Some(t) => now - t >= throttle_min as i64 * 60,
        };
        if due {
            h.last_notified = Some(now);
        }
        due
    }

    /// Forgets the notification time (a level raise notifies regardless of the throttle).
    pub fn reset_throttle(&mut self, epip: &str) {
        if let Some(h) = self.hosts.get_mut(epip) {
            h.last_notified = None;
        }
    }

    /// Daily roll-over: fixes the finished day's summary and starts a new one.
    pub fn roll_over(&mut self, day: i64, date_of: impl Fn(i64) -> String) -> Option<DaySummary> {
        if self.current_day == day {
            return None;
        }
        let prev = self.current_day;
        self.current_day = day;
        if prev == 0 {
            return None;
        }
        let listed: Vec<&Host> = self.hosts.values().filter(|h| h.listed).collect();
        let s = DaySummary {
            day: prev,
            date: date_of(prev),
            hosts: listed.len(),
            infected: listed.iter().filter(|h| h.level == Level::High).count(),
            suspicious: listed.iter().filter(|h| h.level == Level::Medium).count(),
            threats: listed.iter().map(|h| h.threats.len()).sum(),
            events: listed.iter().map(|h| h.event_count).sum(),
        };
        self.days.push(s.clone());
        for h in self.hosts.values_mut() {
            if h.score_day < day {
                h.suspicious_today.clear();
            }
        }
        Some(s)
    }

    /// Replaces the TIDB (a new package makes the old one obsolete).
    pub fn load_package(&mut self, tidb: Tidb) {
        self.tidb = tidb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf<'a>(host: &'a str, url: &'a str, dst: &'a str) -> LogView<'a> {
        LogView {
            log_type: "utm",
            subtype: "webfilter",
            srcip: Some("10.115.2.52"),
            dstip: Some(dst),
            hostname: Some(host),
            url: Some(url),
            ..Default::default()
        }
    }

    fn src(ip: &str) -> Source<'_> {
        Source {
            epip: ip,
            devid: "FGVM01",
            vdom: "root",
            sender: "FGVM01",
            log_type: "webfilter",
            ..Default::default()
        }
    }

    #[test]
    fn default_package_matches_eicar_domain_url_and_ioc_ip() {
        let t = Tidb::default_lab();
        let h = t
            .check(&wf("www.eicar.org", "/download/eicar.com", "89.1.1.1"))
            .unwrap();
        assert_eq!(
            (h.threat.as_str(), h.method),
            ("www.eicar.org", INFECTED_DOMAIN)
        );
        assert!(h.black);
        // A URL hit when the domain itself is not listed.
        let mut t2 = Tidb::empty("x");
        t2.add_url("https://files.example/bad.exe");
        let h = t2
            .check(&wf("files.example", "/bad.exe?x=1", "1.1.1.1"))
            .unwrap();
        assert_eq!(
            (h.threat.as_str(), h.method),
            ("files.example/bad.exe", INFECTED_URL)
        );
        let h = t2
            .check(&wf(
                "FILES.example",
                "http://files.example/bad.exe",
                "1.1.1.1",
            ))
            .unwrap();
        assert_eq!(h.method, INFECTED_URL);
        // Traffic logs: IPs only.
        let tr = LogView {
            log_type: "traffic",
            subtype: "forward",
            dstip: Some("195.22.28.198"),
            hostname: Some("www.eicar.org"),
            ..Default::default()
        };
        let h = t.check(&tr).unwrap();
        assert_eq!(
            (h.threat.as_str(), h.method),
            ("195.22.28.198", INFECTED_IP)
        );
        let benign = wf("www.example.com", "/", "89.1.1.2");
        assert_eq!(t.check(&benign), None);
        // Event logs are not inspected.
        let ev = LogView {
            log_type: "event",
            subtype: "system",
            dstip: Some("195.22.28.198"),
            ..Default::default()
        };
        assert_eq!(t.check(&ev), None);
    }

    #[test]
    fn parent_domains_dns_answers_and_lookup() {
        let mut t = Tidb::empty("1");
        t.add_domain("evil.example");
        t.add_ip("203.0.113.9".parse().unwrap());
        let dns = LogView {
            log_type: "utm",
            subtype: "dns",
            qname: Some("a.b.evil.example"),
            ..Default::default()
        };
        assert_eq!(t.check(&dns).unwrap().threat, "evil.example");
        let dns2 = LogView {
            log_type: "utm",
            subtype: "dns",
            qname: Some("ok.example"),
            ipaddr: Some("1.1.1.1, 203.0.113.9"),
            ..Default::default()
        };
        assert_eq!(t.check(&dns2).unwrap().method, INFECTED_IP);
        assert_eq!(t.lookup("evil.example"), Some(TidbType::BlackDomain));
        assert_eq!(t.lookup("203.0.113.9"), Some(TidbType::BlackIp));
        assert_eq!(t.lookup("example"), None);
        // "example" alone is never matched as a parent (no TLD matching).
        t.add_domain("example");
        assert_eq!(
            t.check(&LogView {
                log_type: "utm",
                subtype: "dns",
                qname: Some("x.example"),
                ..Default::default()
            }),
            None
        );
    }

    #[test]
    fn extend_rejects_bad_entries() {
        let mut t = Tidb::default_lab();
        let add = TidbAdditions {
            black_ip: vec!["nope".into()],
            ..Default::default()
        };
        assert!(t.extend(&add).unwrap_err().contains("nope"));
        let add = TidbAdditions {
            version: Some("2.0".into()),
            black_domain: vec!["Bad.Example".into()],
            suspicious_url: [("http://s.example/p".to_string(), 50)].into(),
            ..Default::default()
        };
        t.extend(&add).unwrap();
        assert_eq!(t.version, "2.0");
        assert_eq!(t.lookup("bad.example"), Some(TidbType::BlackDomain));
        assert_eq!(t.lookup("s.example/p"), Some(TidbType::SuspiciousUrl));
    }

    #[test]
    fn blacklist_hit_lists_infected_and_counts_threats_and_events() {
        let mut e = IocEngine::new(Tidb::default_lab());
        let hit = e
            .tidb
            .check(&wf("www.eicar.org", "/download/eicar.com", "89.1.1.1"))
            .unwrap();
        let c = e.apply(&hit, &src("10.115.2.52"), 100, 1, false).unwrap();
        assert!(matches!(c, Change::Listed { ref threat, .. } if threat == "www.eicar.org"));
        // Same threat again: counted, no change.
        assert_eq!(e.apply(&hit, &src("10.115.2.52"), 101, 1, false), None);
        let ip_hit = Hit::black("195.22.28.198".into(), INFECTED_IP, "195.22.28.198".into());
        assert!(matches!(
            e.apply(&ip_hit, &src("10.115.2.52"), 102, 1, false),
            Some(Change::NewThreat { .. })
        ));
        let h = e.host("10.115.2.52").unwrap();
        assert_eq!(
            (h.verdict.as_str(), h.level, h.threat_count(), h.event_count),
            ("Infected", Level::High, 2, 3)
        );
        assert_eq!(h.threats[0].event_count, 2);
        assert_eq!((h.first_detected, h.last_detected), (100, 102));
        assert_eq!(h.epid, 1025);
    }

    #[test]
    fn ack_then_new_hit_relists_and_throttle() {
        let mut e = IocEngine::new(Tidb::default_lab());
        let hit = Hit::black(
            "www.eicar.org".into(),
            INFECTED_DOMAIN,
            "www.eicar.org".into(),
        );
        e.apply(&hit, &src("10.115.2.52"), 100, 1, false).unwrap();
        assert!(e.take_notification("10.115.2.52", 100, 1440));
        assert!(!e.take_notification("10.115.2.52", 200, 1440));
        assert!(e.take_notification("10.115.2.52", 100 + 1440 * 60, 1440));
        assert_eq!(
            e.ack(None, Some("10.115.2.52"), 300, "admin", Some("cleaned")),
            vec!["10.115.2.52"]
        );
        assert!(e.ack(Some(9999), None, 300, "admin", None).is_empty());
        let h = e.host("10.115.2.52").unwrap();
        assert!(h.ack && h.ack_time == Some(300) && h.comment == "cleaned");
        // A late log of what happened before the acknowledgement does not re-list it.
        assert_eq!(e.apply(&hit, &src("10.115.2.52"), 250, 1, false), None);
        assert!(e.host("10.115.2.52").unwrap().ack);
        let c = e.apply(&hit, &src("10.115.2.52"), 400, 1, false).unwrap();
        assert!(matches!(c, Change::Listed { .. }));
        let h = e.host("10.115.2.52").unwrap();
        assert!(!h.ack);
        assert!(e.take_notification("10.115.2.52", 400, 1440));
    }

    #[test]
    fn suspicious_scores_list_medium_on_evaluation_and_reset_daily() {
        let mut e = IocEngine::new(Tidb::default_lab());
        let s1 = Hit {
            threat: "phish.lab.example/login".into(),
            method: SUSPICIOUS_URL,
            pattern: "p".into(),
            score: 60,
            black: false,
        };
        let s2 = Hit {
            threat: "crowd.lab.example/track".into(),
            method: SUSPICIOUS_URL,
            pattern: "p".into(),
            score: 30,
            black: false,
        };
        assert_eq!(e.apply(&s1, &src("10.115.2.60"), 10, 5, false), None);
        assert!(e.evaluate(80, 20, 5).is_empty());
        e.apply(&s2, &src("10.115.2.60"), 30, 5, false);
        let ch = e.evaluate(80, 40, 5);
        assert_eq!(ch.len(), 1);
        let h = e.host("10.115.2.60").unwrap();
        assert_eq!(
            (h.verdict.as_str(), h.level, h.threat_count()),
            ("Suspicious", Level::Medium, 2)
        );
        // Already listed: no second listing.
        assert!(e.evaluate(80, 50, 5).is_empty());
        // A blacklist hit raises the level.
        let b = Hit::black(
            "www.eicar.org".into(),
            INFECTED_DOMAIN,
            "www.eicar.org".into(),
        );
        assert!(matches!(
            e.apply(&b, &src("10.115.2.60"), 60, 5, false),
            Some(Change::Listed { .. })
        ));
        assert_eq!(e.host("10.115.2.60").unwrap().level, Level::High);
        // Roll-over fixes the summary and clears the daily scores.
        e.current_day = 5;
        let s = e.roll_over(6, |d| format!("day{d}")).unwrap();
        assert_eq!((s.hosts, s.infected), (1, 1));
        assert!(e.host("10.115.2.60").unwrap().suspicious_today.is_empty());
        // A score from another day does not count.
        e.apply(&s1, &src("10.115.2.61"), 10, 6, false);
        assert!(e.evaluate(50, 10, 7).is_empty());
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_url("https://WWW.Eicar.org:443/download/eicar.com", None),
            "www.eicar.org/download/eicar.com"
        );
        assert_eq!(normalize_url("/x?y", Some("h.example")), "h.example/x?y");
        assert_eq!(normalize_url("h.example/", None), "h.example");
    }
}
