//! Firewall policy matching (reference §4): a typed, resolved view of `config firewall policy`
//! and the objects it names, a naive top-down evaluator that also explains why earlier policies
//! did not match, and a compiled index (per-dimension bitsets) giving the same first match.
//!
//! Pure code: no I/O. FQDN addresses are resolved by the caller (a `resolve` function).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::tree::{Config, Entry};

/// An inclusive IPv4 range.
pub type Range = (u32, u32);

/// Interface match of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntfMatch {
    Any,
    Names(Vec<String>),
}

impl IntfMatch {
    fn matches(&self, names: &[String]) -> bool {
        match self {
            IntfMatch::Any => true,
            IntfMatch::Names(v) => v.iter().any(|n| names.iter().any(|m| m == n)),
        }
    }
}

/// One port range of a service for one protocol (`proto` 0 = every IP protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcRange {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

impl SvcRange {
    fn matches(&self, proto: u8, port: u16) -> bool {
        if self.proto == 0 {
            return true;
        }
        if self.proto != proto {
            return false;
        }
        if matches!(proto, 6 | 17 | 132) {
            port >= self.lo && port <= self.hi
        } else {
            true
        }
    }
}

/// A recurring schedule (`config firewall schedule recurring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Days 0 = Sunday .. 6 = Saturday.
    pub days: [bool; 7],
    /// Minutes after midnight.
    pub start: u32,
    pub end: u32,
}

impl Schedule {
    pub const ALWAYS: Schedule = Schedule {
        days: [true; 7],
        start: 0,
        end: 0,
    };

    /// Whether it is active at lab time `unix_secs` (already shifted to local time).
    pub fn active_at(&self, local_secs: i64) -> bool {
        let wd = fortilab_core::clock::weekday_from_days(local_secs.div_euclid(86_400)) as usize;
        let min = (local_secs.rem_euclid(86_400) / 60) as u32;
        if self.start == self.end {
            return self.days[wd];
        }
        if self.start < self.end {
            self.days[wd] && min >= self.start && min < self.end
        } else {
            // Spans midnight: the part after midnight belongs to the previous day.
            (self.days[wd] && min >= self.start) || (self.days[(wd + 6) % 7] && min < self.end)
        }
    }

    pub fn is_always(&self) -> bool {
        self.days.iter().all(|d| *d) && self.start == self.end
    }
}

/// A resolved policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CPolicy {
    pub policyid: u64,
    pub name: String,
    pub uuid: String,
    pub enabled: bool,
    pub srcintf: IntfMatch,
    pub dstintf: IntfMatch,
    pub src: Vec<Range>,
    pub src_negate: bool,
    pub dst: Vec<Range>,
    pub dst_negate: bool,
    pub svc: Vec<SvcRange>,
    pub svc_negate: bool,
    pub schedule_name: String,
    /// `None`: the schedule does not exist (never active).
    pub schedule: Option<Schedule>,
    pub action: String,
    pub utm: bool,
    pub ssl_ssh_profile: String,
    pub webfilter_profile: String,
    pub logtraffic: String,
    pub nat: bool,
}

/// What a lookup is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The interface names the source side matches (interface and its zones).
    pub srcintf: Vec<String>,
    pub dstintf: Vec<String>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub dport: u16,
    /// Local lab time (seconds, time zone applied) for schedules.
    pub local_secs: i64,
}

fn in_ranges(r: &[Range], ip: u32) -> bool {
    r.iter().any(|(a, b)| ip >= *a && ip <= *b)
}

/// The first field of a policy that does not match, or `None` when it matches.
pub fn first_mismatch(p: &CPolicy, q: &Query) -> Option<&'static str> {
    if !p.enabled {
        return Some("status");
    }
    if !p.srcintf.matches(&q.srcintf) {
        return Some("srcintf");
    }
    if !p.dstintf.matches(&q.dstintf) {
        return Some("dstintf");
    }
    if in_ranges(&p.src, u32::from(q.src)) == p.src_negate {
        return Some("srcaddr");
    }
    if in_ranges(&p.dst, u32::from(q.dst)) == p.dst_negate {
        return Some("dstaddr");
    }
    if p.svc.iter().any(|s| s.matches(q.proto, q.dport)) == p.svc_negate {
        return Some("service");
    }
    match &p.schedule {
        Some(s) if s.active_at(q.local_secs) => None,
        _ => Some("schedule"),
    }
}

/// Naive top-down lookup: the index of the first matching policy.
pub fn lookup_naive(policies: &[CPolicy], q: &Query) -> Option<usize> {
    policies.iter().position(|p| first_mismatch(p, q).is_none())
}

/// Naive lookup with the reason each earlier policy did not match.
pub fn explain(policies: &[CPolicy], q: &Query) -> (Option<usize>, Vec<(u64, &'static str)>) {
    let mut skipped = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        match first_mismatch(p, q) {
            None => return (Some(i), skipped),
            Some(f) => skipped.push((p.policyid, f)),
        }
    }
    (None, skipped)
}

// ---------------------------------------------------------------------------------------------
// Resolution from the configuration.

/// Parses `a.b.c.d m.m.m.m` or `a.b.c.d/len` into a range.
pub fn parse_subnet(s: &str) -> Option<Range> {
    let s = s.trim();
    let (ip, mask) = if let Some((a, b)) = s.split_once('/') {
        let len: u32 = b.parse().ok()?;
        if len > 32 {
            return None;
        }
        let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (a.parse::<Ipv4Addr>().ok()?, m)
    } else {
        let mut it = s.split_whitespace();
        let ip: Ipv4Addr = it.next()?.parse().ok()?;
        let m: Ipv4Addr = it.next().unwrap_or("255.255.255.255").parse().ok()?;
        (ip, u32::from(m))
    };
    let base = u32::from(ip) & mask;
    Some((base, base | !mask))
}

/// Sorts and merges ranges.
pub fn normalize(mut v: Vec<Range>) -> Vec<Range> {
    v.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for (a, b) in v {
        if let Some(last) = out.last_mut() {
            if a as u64 <= last.1 as u64 + 1 {
                last.1 = last.1.max(b);
                continue;
            }
        }
        out.push((a, b));
    }
    out
}

/// `a` minus `b` (both normalized).
fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(lo, hi) in a {
        let mut cur = lo as u64;
        let hi = hi as u64;
        for &(x, y) in b {
            let (x, y) = (x as u64, y as u64);
            if y < cur || x > hi {
                continue;
            }
            if x > cur {
                out.push((cur as u32, (x - 1) as u32));
            }
            cur = y + 1;
            if cur > hi {
                break;
            }
        }
        if cur <= hi {
            out.push((cur as u32, hi as u32));
        }
    }
    out
}

/// Resolves names against a configuration snapshot.
pub struct Resolver<'a> {
    cfg: &'a Config,
    fqdn: &'a dyn Fn(&str) -> Vec<Ipv4Addr>,
}

impl<'a> Resolver<'a> {
    pub fn new(cfg: &'a Config, fqdn: &'a dyn Fn(&str) -> Vec<Ipv4Addr>) -> Self {
        Self { cfg, fqdn }
    }

    fn address_entry(&self, e: &Entry) -> Vec<Range> {
        match e.scalar("type").unwrap_or("ipmask") {
            "ipmask" => parse_subnet(e.scalar("subnet").unwrap_or("0.0.0.0 0.0.0.0"))
                .into_iter()
                .collect(),
            "iprange" => {
                let a = e
                    .scalar("start-ip")
                    .and_then(|s| s.parse::<Ipv4Addr>().ok());
                let b = e.scalar("end-ip").and_then(|s| s.parse::<Ipv4Addr>().ok());
                match (a, b) {
                    (Some(a), Some(b)) if u32::from(a) <= u32::from(b) => {
                        vec![(u32::from(a), u32::from(b))]
                    }
                    (Some(a), None) => vec![(u32::from(a), u32::from(a))],
                    _ => vec![],
                }
            }
            "fqdn" => e
                .scalar("fqdn")
                .map(|f| {
                    (self.fqdn)(f)
                        .into_iter()
                        .map(|ip| (u32::from(ip), u32::from(ip)))
                        .collect()
                })
                .unwrap_or_default(),
            "interface-subnet" => e
                .scalar("interface")
                .and_then(|i| self.cfg.entry("system interface", i))
                .and_then(|i| i.scalar("ip"))
                .and_then(parse_subnet)
                .into_iter()
                .collect(),
            // geography, wildcard (non-contiguous masks), dynamic, mac: not modelled.
            _ => vec![],
        }
    }

    /// The addresses of an address or (nested) group name.
    pub fn address(&self, name: &str) -> Vec<Range> {
        let mut seen = HashSet::new();
        normalize(self.address_rec(name, &mut seen))
    }

    fn address_rec(&self, name: &str, seen: &mut HashSet<String>) -> Vec<Range> {
        if !seen.insert(name.to_string()) {
            return vec![];
        }
        if let Some(e) = self.cfg.entry("firewall address", name) {
            return self.address_entry(e);
        }
        if let Some(g) = self.cfg.entry("firewall addrgrp", name) {
            let mut v = Vec::new();
            for m in g.list("member") {
                v.extend(self.address_rec(m, seen));
            }
            let v = normalize(v);
            if g.scalar("exclude") == Some("enable") {
                let mut ex = Vec::new();
                for m in g.list("exclude-member") {
                    let mut s2 = seen.clone();
                    ex.extend(self.address_rec(m, &mut s2));
                }
                return subtract(&v, &normalize(ex));
            }
            return v;
        }
        if name == "all" {
            return vec![(0, u32::MAX)];
        }
        vec![]
    }

    fn service_entry(e: &Entry) -> Vec<SvcRange> {
        let proto = e.scalar("protocol").unwrap_or("TCP/UDP/SCTP");
        match proto {
            "ALL" => vec![SvcRange {
                proto: 0,
                lo: 0,
                hi: 65535,
            }],
            "IP" => {
                let n: u8 = e
                    .scalar("protocol-number")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                vec![SvcRange {
                    proto: n,
                    lo: 0,
                    hi: 65535,
                }]
            }
            "ICMP" => vec![SvcRange {
                proto: 1,
                lo: 0,
                hi: 65535,
            }],
            "ICMP6" => vec![SvcRange {
                proto: 58,
                lo: 0,
                hi: 65535,
            }],
            "TCP/UDP/SCTP" | "HTTP" | "CONNECT" | "FTP" | "SOCKS-TCP" => {
                let mut v = Vec::new();
                for (field, p) in [
                    ("tcp-portrange", 6u8),
                    ("udp-portrange", 17),
                    ("sctp-portrange", 132),
                ] {
                    if let Some(r) = e.scalar(field) {
                        for part in r.split_whitespace() {
                            let dst = part.split(':').next().unwrap_or(part);
                            let (lo, hi) = match dst.split_once('-') {
                                Some((a, b)) => (a.parse().ok(), b.parse().ok()),
                                None => (dst.parse().ok(), dst.parse().ok()),
                            };
                            if let (Some(lo), Some(hi)) = (lo, hi) {
                                if lo <= hi {
                                    v.push(SvcRange { proto: p, lo, hi });
                                }
                            }
                        }
                    }
                }
                v
            }
            _ => vec![],
        }
    }

    /// The port ranges of a service or (nested) service group.
    pub fn service(&self, name: &str) -> Vec<SvcRange> {
        let mut seen = HashSet::new();
        self.service_rec(name, &mut seen)
    }

    fn service_rec(&self, name: &str, seen: &mut HashSet<String>) -> Vec<SvcRange> {
        if !seen.insert(name.to_string()) {
            return vec![];
        }
        if let Some(e) = self.cfg.entry("firewall service custom", name) {
            return Self::service_entry(e);
        }
        if let Some(g) = self.cfg.entry("firewall service group", name) {
            let mut v = Vec::new();
            for m in g.list("member") {
                v.extend(self.service_rec(m, seen));
            }
            return v;
        }
        if name == "ALL" {
            return vec![SvcRange {
                proto: 0,
                lo: 0,
                hi: 65535,
            }];
        }
        vec![]
    }

    pub fn schedule(&self, name: &str) -> Option<Schedule> {
        let e = self.cfg.entry("firewall schedule recurring", name);
        let Some(e) = e else {
            return (name == "always").then_some(Schedule::ALWAYS);
        };
        let mut days = [false; 7];
        let names = [
            "sunday",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
        ];
        for d in e.scalar("day").unwrap_or("none").split_whitespace() {
            if let Some(i) = names.iter().position(|n| *n == d) {
                days[i] = true;
            }
        }
        let hm = |s: Option<&str>| -> u32 {
            let s = s.unwrap_or("00:00");
            let (h, m) = s.split_once(':').unwrap_or((s, "0"));
            h.trim().parse::<u32>().unwrap_or(0) * 60 + m.trim().parse::<u32>().unwrap_or(0)
        };
        Some(Schedule {
            days,
            start: hm(e.scalar("start")),
            end: hm(e.scalar("end")),
        })
    }

    fn intf(list: &[String]) -> IntfMatch {
        if list.is_empty() || list.iter().any(|s| s == "any") {
            IntfMatch::Any
        } else {
            IntfMatch::Names(list.to_vec())
        }
    }

    /// Every policy of the configuration, in evaluation order, resolved.
    pub fn policies(&self) -> Vec<CPolicy> {
        let Some(t) = self.cfg.table("firewall policy") else {
            return vec![];
        };
        t.entries().iter().map(|e| self.policy(e)).collect()
    }

    pub fn policy(&self, e: &Entry) -> CPolicy {
        let p = crate::config::store::Policy::from_entry(e);
        let addrs = |names: &[String]| {
            let mut v = Vec::new();
            for n in names {
                v.extend(self.address(n));
            }
            normalize(v)
        };
        let mut svc = Vec::new();
        for s in &p.service {
            svc.extend(self.service(s));
        }
        let flag = |f: &str| e.scalar(f) == Some("enable");
        CPolicy {
            policyid: p.policyid,
            name: p.name.clone(),
            uuid: p.uuid.clone(),
            enabled: p.enabled,
            srcintf: Self::intf(&p.srcintf),
            dstintf: Self::intf(&p.dstintf),
            src: addrs(&p.srcaddr),
            src_negate: flag("srcaddr-negate"),
            dst: addrs(&p.dstaddr),
            dst_negate: flag("dstaddr-negate"),
            svc,
            svc_negate: flag("service-negate"),
            schedule: self.schedule(&p.schedule),
            schedule_name: p.schedule,
            action: p.action,
            utm: p.utm_status,
            ssl_ssh_profile: p.ssl_ssh_profile,
            webfilter_profile: p.webfilter_profile,
            logtraffic: p.logtraffic,
            nat: p.nat,
        }
    }
}

/// The FQDN names the address objects reference (to resolve before compiling).
pub fn fqdn_names(cfg: &Config) -> BTreeSet<String> {
    cfg.table("firewall address")
        .map(|table| {
            table
                .entries()
                .iter()
                .filter(|e| e.scalar("type") == Some("fqdn"))
                .filter_map(|e| e.scalar("fqdn").map(str::to_lowercase))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The compiled index.

/// A fixed-size bitset over policy indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bits(Box<[u64]>);

impl Bits {
    fn zeros(words: usize) -> Self {
        Bits(vec![0; words].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn or(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a |= *b;
        }
    }
    fn xor(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a ^= *b;
        }
    }
}

/// Elementary intervals of a 32-bit (or 16-bit) key space with the policies matching each.
#[derive(Debug, Clone)]
struct IntervalIndex {
    starts: Vec<u32>,
    sets: Vec<Arc<Bits>>,
}

impl IntervalIndex {
    /// `per_policy[i]`: the ranges of policy `i`; `negate`: policies whose match is inverted.
    fn build(per_policy: &[&[Range]], negate: &Bits, words: usize, max: u32) -> Self {
        let mut events: Vec<(u64, usize, i32)> = Vec::new();
        for (i, ranges) in per_policy.iter().enumerate() {
            for &(a, b) in ranges.iter() {
                let b = b.min(max);
                if a > b {
                    continue;
                }
                events.push((a as u64, i, 1));
                events.push((b as u64 + 1, i, -1));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut counts = vec![0i32; per_policy.len()];
        let mut cur = Bits::zeros(words);
        let mut starts = Vec::new();
        let mut sets: Vec<Arc<Bits>> = Vec::new();
        let push = |start: u64, cur: &Bits, starts: &mut Vec<u32>, sets: &mut Vec<Arc<Bits>>| {
            if start > max as u64 {
                return;
            }
            let mut b = cur.clone();
            b.xor(negate);
            if sets.last().is_some_and(|l| **l == b) {
                return;
            }
            starts.push(start as u32);
            sets.push(Arc::new(b));
        };
        let mut k = 0;
        if events.first().map(|e| e.0) != Some(0) {
            push(0, &cur, &mut starts, &mut sets);
        }
        while k < events.len() {
            let at = events[k].0;
            while k < events.len() && events[k].0 == at {
                let (_, i, d) = events[k];
                counts[i] += d;
                if counts[i] > 0 {
                    cur.set(i);
                } else {
                    cur.clear(i);
                }
                k += 1;
            }
            push(at, &cur, &mut starts, &mut sets);
        }
        IntervalIndex { starts, sets }
    }

    fn get(&self, key: u32) -> &Bits {
        let i = self.starts.partition_point(|s| *s <= key);
        &self.sets[i.saturating_sub(1)]
    }
}

/// The compiled policy table.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub policies: Vec<CPolicy>,
    words: usize,
    enabled: Bits,
    srcintf_any: Bits,
    srcintf: HashMap<String, Bits>,
    dstintf_any: Bits,
    dstintf: HashMap<String, Bits>,
    src: IntervalIndex,
    dst: IntervalIndex,
    /// Per port-based protocol (6, 17, 132).
    ports: HashMap<u8, IntervalIndex>,
    /// Other protocols: policies matching them (negation applied).
    other_proto: HashMap<u8, Bits>,
    /// Protocols not listed: policies with an any-protocol service (negation applied).
    proto_default: Bits,
    /// Non-trivial schedules and their policies.
    schedules: Vec<(Option<Schedule>, Bits)>,
}

impl Compiled {
    pub fn new(policies: Vec<CPolicy>) -> Self {
        let n = policies.len();
        let words = n.div_ceil(64).max(1);
        let mut enabled = Bits::zeros(words);
        let mut srcintf_any = Bits::zeros(words);
        let mut dstintf_any = Bits::zeros(words);
        let mut srcintf: HashMap<String, Bits> = HashMap::new();
        let mut dstintf: HashMap<String, Bits> = HashMap::new();
        let mut src_neg = Bits::zeros(words);
        let mut dst_neg = Bits::zeros(words);
        let mut svc_neg = Bits::zeros(words);
        let mut scheds: HashMap<String, (Option<Schedule>, Bits)> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            if p.enabled {
                enabled.set(i);
            }
            for (m, any, map) in [
                (&p.srcintf, &mut srcintf_any, &mut srcintf),
                (&p.dstintf, &mut dstintf_any, &mut dstintf),
            ] {
                match m {
                    IntfMatch::Any => any.set(i),
                    IntfMatch::Names(v) => {
                        for name in v {
                            map.entry(name.clone())
                                .or_insert_with(|| Bits::zeros(words))
                                .set(i);
                        }
                    }
                }
            }
            if p.src_negate {
                src_neg.set(i);
            }
            if p.dst_negate {
                dst_neg.set(i);
            }
            if p.svc_negate {
                svc_neg.set(i);
            }
            if !p.schedule.as_ref().is_some_and(Schedule::is_always) {
                scheds
                    .entry(p.schedule_name.clone())
                    .or_insert_with(|| (p.schedule.clone(), Bits::zeros(words)))
                    .1
                    .set(i);
            }
        }
        for b in srcintf.values_mut() {
            b.or(&srcintf_any);
        }
        for b in dstintf.values_mut() {
            b.or(&dstintf_any);
        }
        let srcs: Vec<&[Range]> = policies.iter().map(|p| p.src.as_slice()).collect();
        let dsts: Vec<&[Range]> = policies.iter().map(|p| p.dst.as_slice()).collect();
        let src = IntervalIndex::build(&srcs, &src_neg, words, u32::MAX);
        let dst = IntervalIndex::build(&dsts, &dst_neg, words, u32::MAX);
        // Services.
        let mut any_proto = Bits::zeros(words);
        let mut protos: BTreeSet<u8> = BTreeSet::new();
        for (i, p) in policies.iter().enumerate() {
            for s in &p.svc {
                if s.proto == 0 {
                    any_proto.set(i);
                } else {
                    protos.insert(s.proto);
                }
            }
        }
        let mut ports = HashMap::new();
        for proto in [6u8, 17, 132] {
            let per: Vec<Vec<Range>> = policies
                .iter()
                .map(|p| {
                    p.svc
                        .iter()
                        .filter(|s| s.proto == 0 || s.proto == proto)
                        .map(|s| {
                            if s.proto == 0 {
                                (0, 65535)
                            } else {
                                (s.lo as u32, s.hi as u32)
                            }
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[Range]> = per.iter().map(Vec::as_slice).collect();
            ports.insert(proto, IntervalIndex::build(&refs, &svc_neg, words, 65535));
        }
        let mut other_proto = HashMap::new();
        for proto in protos.iter().filter(|p| !matches!(p, 6 | 17 | 132)) {
            let mut b = any_proto.clone();
            for (i, p) in policies.iter().enumerate() {
                if p.svc.iter().any(|s| s.proto == *proto) {
                    b.set(i);
                }
            }
            b.xor(&svc_neg);
            other_proto.insert(*proto, b);
        }
        let mut proto_default = any_proto;
        proto_default.xor(&svc_neg);
        let mut schedules: Vec<(Option<Schedule>, Bits)> = scheds.into_values().collect();
        schedules.sort_by_key(|(_, b)| b.0.iter().position(|w| *w != 0));
        Compiled {
            policies,
            words,
            enabled,
            srcintf_any,
            srcintf,
            dstintf_any,
            dstintf,
            src,
            dst,
            ports,
            other_proto,
            proto_default,
            schedules,
        }
    }

    fn intf_bits(any: &Bits, map: &HashMap<String, Bits>, names: &[String], words: usize) -> Bits {
        let mut found: Option<Bits> = None;
        for n in names {
            if let Some(b) = map.get(n) {
                match &mut found {
                    None => found = Some(b.clone()),
                    Some(f) => f.or(b),
                }
            }
        }
        found.unwrap_or_else(|| {
            let mut b = Bits::zeros(words);
            b.or(any);
            b
        })
    }

    /// The index of the first matching policy (same answer as [`lookup_naive`]).
    pub fn lookup(&self, q: &Query) -> Option<usize> {
        // Interface sets: single-name queries avoid allocation.
        let si_owned;
        let si: &Bits = match q.srcintf.as_slice() {
            [one] => self.srcintf.get(one).unwrap_or(&self.srcintf_any),
            names => {
                si_owned = Self::intf_bits(&self.srcintf_any, &self.srcintf, names, self.words);
                &si_owned
            }
        };
        let di_owned;
        let di: &Bits = match q.dstintf.as_slice() {
            [one] => self.dstintf.get(one).unwrap_or(&self.dstintf_any),
            names => {
                di_owned = Self::intf_bits(&self.dstintf_any, &self.dstintf, names, self.words);
                &di_owned
            }
        };
        let sa = self.src.get(u32::from(q.src));
        let da = self.dst.get(u32::from(q.dst));
        let sv: &Bits = match self.ports.get(&q.proto) {
            Some(ix) => ix.get(q.dport as u32),
            None => self
                .other_proto
                .get(&q.proto)
                .unwrap_or(&self.proto_default),
        };
        let inactive: Vec<&Bits> = self
            .schedules
            .iter()
            .filter(|(s, _)| !s.as_ref().is_some_and(|s| s.active_at(q.local_secs)))
            .map(|(_, b)| b)
            .collect();
        for w in 0..self.words {
            let mut x = self.enabled.0[w] & si.0[w] & di.0[w] & sa.0[w] & da.0[w] & sv.0[w];
            if x == 0 {
                continue;
            }
            for b in &inactive {
                x &= !b.0[w];
            }
            if x != 0 {
                return Some(w * 64 + x.trailing_zeros() as usize);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cfg(text: &str) -> Config {
        let version = crate::config::FosVersion::parse("6.4.4").unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let base = crate::config::factory(version, "FGT", &mut rng);
        crate::config::parse_config(&base, text, "t", version, false, &mut rng)
            .unwrap()
            .0
    }

    fn q(src: &str, dst: &str, port: u16) -> Query {
        Query {
            srcintf: vec!["port3".into()],
            dstintf: vec!["virtual-wan-link".into()],
            src: ip(src),
            dst: ip(dst),
            proto: 6,
            dport: port,
            local_secs: 1_600_000_000,
        }
    }

    const CFG: &str = r#"
config firewall address
    edit "h52"
        set subnet 10.115.2.52 255.255.255.255
    next
    edit "range"
        set type iprange
        set start-ip 10.115.2.60
        set end-ip 10.115.2.70
    next
    edit "lan"
        set subnet 10.115.2.0 255.255.255.0
    next
    edit "eicar"
        set type fqdn
        set fqdn "www.eicar.org"
    next
end
config firewall addrgrp
    edit "inner"
        set member "range"
    next
    edit "outer"
        set member "inner" "h52"
    next
end
config firewall schedule recurring
    edit "never-on-sunday"
        set day monday tuesday wednesday thursday friday saturday
    next
end
config firewall policy
    edit 5
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "outer"
        set dstaddr "eicar"
        set action deny
        set schedule "always"
        set service "HTTPS"
    next
    edit 2
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "lan"
        set srcaddr-negate enable
        set dstaddr "all"
        set action accept
        set schedule "always"
        set service "ALL"
    next
    edit 3
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "outer"
        set dstaddr "all"
        set action accept
        set schedule "never-on-sunday"
        set service "Web Access"
    next
    edit 4
        set status disable
        set srcintf "any"
        set dstintf "any"
        set srcaddr "all"
        set dstaddr "all"
        set action accept
        set schedule "always"
        set service "ALL"
    next
end
"#;

    fn table() -> Vec<CPolicy> {
        let c = cfg(CFG);
        let f = |n: &str| {
            if n == "www.eicar.org" {
                vec![ip("89.238.73.97")]
            } else {
                vec![]
            }
        };
        Resolver::new(&c, &f).policies()
    }

    #[test]
    fn top_down_by_sequence_with_groups_negate_fqdn_and_iprange() {
        let t = table();
        let ids: Vec<u64> = t.iter().map(|p| p.policyid).collect();
        assert_eq!(ids, [5, 2, 3, 4]);
        let c = Compiled::new(t.clone());
        // HTTPS to the FQDN from a group member: policy 5 (deny), first in sequence.
        let q1 = q("10.115.2.65", "89.238.73.97", 443);
        assert_eq!(lookup_naive(&t, &q1), Some(0));
        assert_eq!(c.lookup(&q1), Some(0));
        // HTTP from 10.115.2.52 (nested group) on a Monday: policy 3.
        let monday = 1_600_041_600; // 2020-09-14 00:00 UTC was a Monday
        let mut q2 = q("10.115.2.52", "89.238.73.97", 80);
        q2.local_secs = monday + 3600;
        let (m, why) = explain(&t, &q2);
        assert_eq!(m, Some(2));
        assert_eq!(why, vec![(5, "service"), (2, "srcaddr")]);
        assert_eq!(c.lookup(&q2), Some(2));
        // Same on a Sunday: schedule fails; policy 4 is disabled → implicit deny.
        q2.local_secs = monday - 3600;
        let (m, why) = explain(&t, &q2);
        assert_eq!(m, None);
        assert_eq!(why[2], (3, "schedule"));
        assert_eq!(why[3], (4, "status"));
        assert_eq!(c.lookup(&q2), None);
        // Negated source: an address outside the LAN matches policy 2.
        let q3 = q("192.168.1.1", "1.1.1.1", 22);
        assert_eq!(c.lookup(&q3), Some(1));
        // Wrong interface.
        let mut q4 = q("192.168.1.1", "1.1.1.1", 22);
        q4.srcintf = vec!["port1".into()];
        assert_eq!(explain(&t, &q4).1[1], (2, "srcintf"));
        assert_eq!(c.lookup(&q4), None);
    }

    #[test]
    fn subnets_ranges_and_services_parse() {
        assert_eq!(
            parse_subnet("10.0.0.0 255.0.0.0"),
            Some((0x0a00_0000, 0x0aff_ffff))
        );
        assert_eq!(
            parse_subnet("10.1.2.3/32"),
            Some((0x0a01_0203, 0x0a01_0203))
        );
        assert_eq!(parse_subnet("0.0.0.0 0.0.0.0"), Some((0, u32::MAX)));
        assert_eq!(
            normalize(vec![(5, 9), (1, 4), (20, 30)]),
            vec![(1, 9), (20, 30)]
        );
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (50, 60)]),
            vec![(0, 9), (21, 49), (61, 100)]
        );
        let c = cfg("config firewall service custom\nedit \"odd\"\nset tcp-portrange 8080-8090:1024-65535 99\nset udp-portrange 53\nnext\nend\n");
        let f = |_: &str| vec![];
        let r = Resolver::new(&c, &f);
        let s = r.service("odd");
        assert!(s.contains(&SvcRange {
            proto: 6,
            lo: 8080,
            hi: 8090
        }));
        assert!(s.contains(&SvcRange {
            proto: 6,
            lo: 99,
            hi: 99
        }));
        assert!(s.contains(&SvcRange {
            proto: 17,
            lo: 53,
            hi: 53
        }));
        assert_eq!(
            r.service("ALL"),
            vec![SvcRange {
                proto: 0,
                lo: 0,
                hi: 65535
            }]
        );
        assert_eq!(r.address("all"), vec![(0, u32::MAX)]);
    }

    #[test]
    fn schedules_on_the_lab_clock() {
        let s = Schedule {
            days: [false, true, false, false, false, false, false],
            start: 22 * 60,
            end: 2 * 60,
        };
        let monday = 1_600_041_600;
        assert!(s.active_at(monday + 23 * 3600));
        assert!(s.active_at(monday + 24 * 3600 + 3600)); // Tuesday 01:00, after midnight
        assert!(!s.active_at(monday + 3600)); // Monday 01:00 belongs to Sunday
        assert!(Schedule::ALWAYS.active_at(monday));
    }

    #[test]
    fn schedules_across_year_and_leap_day_boundaries() {
        let at = |y, m, d, h: i64| {
            fortilab_core::clock::days_from_civil(y, m, d).unwrap() * 86_400 + h * 3600
        };
        // Thursday 22:00 to 02:00: 2020-12-31 is a Thursday, so New Year's 01:00 (a Friday)
        // still belongs to it; 2021-01-01 22:00 (Friday) does not.
        let thursday_night = Schedule {
            days: [false, false, false, false, true, false, false],
            start: 22 * 60,
            end: 2 * 60,
        };
        assert!(thursday_night.active_at(at(2020, 12, 31, 23)));
        assert!(thursday_night.active_at(at(2021, 1, 1, 1)));
        assert!(!thursday_night.active_at(at(2021, 1, 1, 22)));
        // Leap day 2024-02-29 is a Thursday, 2024-03-01 a Friday; in 2023, 1 March is a
        // Wednesday right after Tuesday 28 February.
        assert!(thursday_night.active_at(at(2024, 2, 29, 23)));
        assert!(thursday_night.active_at(at(2024, 3, 1, 1)));
        assert!(!thursday_night.active_at(at(2023, 3, 1, 1)));
        let wednesday = Schedule {
            days: [false, false, false, true, false, false, false],
            start: 0,
            end: 0,
        };
        assert!(wednesday.active_at(at(2023, 3, 1, 12)));
        assert!(!wednesday.active_at(at(2023, 2, 28, 12)));
        // Before 1970: 1969-12-31 was a Wednesday.
        assert!(wednesday.active_at(at(1969, 12, 31, 12)));
    }

    fn arb_policy() -> impl Strategy<Value = CPolicy> {
        let range = (0u32..64, 0u32..16).prop_map(|(a, l)| (a * 4, a * 4 + l));
        let svc = (
            prop_oneof![Just(0u8), Just(6u8), Just(17u8), Just(1u8)],
            0u16..40,
            0u16..20,
        )
            .prop_map(|(proto, lo, l)| SvcRange {
                proto,
                lo,
                hi: lo + l,
            });
        let intf = prop_oneof![
            Just(IntfMatch::Any),
            Just(IntfMatch::Names(vec!["port3".into()])),
            Just(IntfMatch::Names(vec!["port1".into(), "z".into()])),
        ];
        (
            any::<bool>(),
            intf.clone(),
            intf,
            proptest::collection::vec(range.clone(), 0..3),
            any::<bool>(),
            proptest::collection::vec(range, 0..3),
            any::<bool>(),
            proptest::collection::vec(svc, 0..3),
            any::<bool>(),
            0u8..3,
        )
            .prop_map(|(en, si, di, src, sn, dst, dn, svc, vn, sch)| CPolicy {
                policyid: 0,
                name: String::new(),
                uuid: String::new(),
                enabled: en,
                srcintf: si,
                dstintf: di,
                src: normalize(src),
                src_negate: sn,
                dst: normalize(dst),
                dst_negate: dn,
                svc,
                svc_negate: vn,
                schedule_name: format!("s{sch}"),
                schedule: match sch {
                    0 => Some(Schedule::ALWAYS),
                    1 => Some(Schedule {
                        days: [true, false, true, false, true, false, true],
                        start: 0,
                        end: 0,
                    }),
                    _ => None,
                },
                action: "accept".into(),
                utm: false,
                ssl_ssh_profile: String::new(),
                webfilter_profile: String::new(),
                logtraffic: "all".into(),
                nat: false,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn compiled_equals_naive(
            mut pols in proptest::collection::vec(arb_policy(), 0..150),
            queries in proptest::collection::vec(
                (0u32..300, 0u32..300, prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)], 0u16..70, 0usize..3, 0usize..3, 0i64..14),
                1..40),
        ) {
            for (i, p) in pols.iter_mut().enumerate() { p.policyid = i as u64 + 1; }
            let c = Compiled::new(pols.clone());
            let names = [vec!["port3".to_string()], vec!["port1".to_string(), "z".to_string()], vec!["other".to_string()]];
            for (s, d, proto, port, si, di, day) in queries {
                let q = Query {
                    srcintf: names[si].clone(),
                    dstintf: names[di].clone(),
                    src: Ipv4Addr::from(s),
                    dst: Ipv4Addr::from(d),
                    proto,
                    dport: port,
                    local_secs: 1_600_000_000 + day * 86_400,
                };
                prop_assert_eq!(c.lookup(&q), lookup_naive(&pols, &q));
            }
        }
    }
}
