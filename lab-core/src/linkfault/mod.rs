//! Link faults between lab devices: the condition of a link (down, added latency, loss,
//! bandwidth) and the shaping model that turns it into "when may these bytes arrive".
//!
//! In a one-machine lab every device reaches its peers through a per-link TCP relay run by the
//! orchestrator ([`relay`]): each device's lab map sends the services of its peers to the relay
//! of that link, and the relay passes bytes unchanged (PROXY headers and TLS go through
//! untouched), delayed as this module says. The model is pure (no sockets, no clock of its own:
//! callers pass `now`), so it is unit-tested here; the relay loop is thin I/O around it.
//!
//! The model, per direction of a TCP stream (ARCHITECTURE.md has no contract for it; it is
//! the lab's own [P]):
//! - **down**: nothing passes. Bytes already in flight wait (as TCP retransmits them) and go
//!   on when the link is up again; a new connection is accepted and held without reaching the
//!   peer until the link is up (like SYNs retransmitted until the link returns), so the
//!   client's own connect/handshake timeouts decide, as on a real network.
//! - **latency**: every chunk arrives `latency` after it was sent (one way: a round trip gets
//!   twice the latency, as `tc netem delay` on both ends would give).
//! - **loss**: TCP does not lose bytes; a lost segment costs a retransmission. Each
//!   1460-byte segment of a chunk is lost with probability `loss`, again on each retransmission;
//!   the chunk is delayed by the retransmission timeouts of its unluckiest segment (RTO =
//!   max(200 ms, 2 × latency + 200 ms), doubling on each further loss, as Linux does), and
//!   everything behind it waits (in-order delivery). Draws come from a seeded stream, so a
//!   scenario replays the same losses.
//! - **rate**: a token bucket per direction (`rate` bits/s, burst of 10 ms of traffic, at
//!   least one segment): a chunk leaves once the bucket has its bytes.
//!
//! Datagrams (UDP: syslog to FortiAnalyzer) have no retransmission, so the same condition
//! drops rather than delays ([`Shaper::datagram`]):
//! - **down**: every datagram is dropped and counted;
//! - **loss**: each datagram is lost with probability `loss` (seeded draws), counted;
//! - **latency** and **rate**: as for TCP chunks, the datagram leaves when due; at most
//!   [`UDP_QUEUE`] wait (netem's default `limit`), a datagram beyond that is dropped and counted.
//!
//! Namespaces mode (one network namespace per device, `tc netem` on veth pairs) would apply
//! the same [`LinkCondition`] with `tc qdisc`; it does not exist yet, and [`LinkCondition`] is
//! the seam: a namespace backend takes it as it is.

pub mod relay;

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// TCP maximum segment size the loss model counts in.
pub const MSS: usize = 1460;
/// Linux's minimum retransmission timeout.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Retransmissions of one segment after which the model stops drawing (TCP would keep
/// trying; a loss rate near 1 would otherwise never deliver).
pub const MAX_RETRANSMITS: u32 = 8;

/// Datagrams waiting (latency, rate) in one UDP relay before more are dropped.
pub const UDP_QUEUE: usize = 1000;

/// What happens to one datagram ([`Shaper::datagram`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The link is down: dropped.
    Dropped,
    /// Lost (the loss draw).
    Lost,
    /// Delivered at this time.
    At(Duration),
}

/// The condition of a link, applied in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkCondition {
    /// Nothing passes.
    #[serde(default)]
    pub down: bool,
    /// Added one-way delay.
    #[serde(default, with = "duration_ms")]
    pub latency: Duration,
    /// Probability (0..1) that a TCP segment is lost (and retransmitted).
    #[serde(default)]
    pub loss: f64,
    /// Bandwidth in bits per second; `None` is unlimited.
    #[serde(default)]
    pub rate_bps: Option<u64>,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom("latency must be >= 0 ms"));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

/// Bad link parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("bad rate {0:?} (use e.g. \"64kbit\", \"10mbit\", \"1gbit\", \"500kbps\")")]
    Rate(String),
    #[error("loss must be between 0 and 1, got {0}")]
    Loss(f64),
    #[error("bad latency {0:?} (use e.g. \"200ms\", \"1s\")")]
    Latency(String),
}

impl LinkCondition {
    /// A link with nothing wrong.
    pub const CLEAN: LinkCondition = LinkCondition {
        down: false,
        latency: Duration::ZERO,
        loss: 0.0,
        rate_bps: None,
    };

    /// Whether bytes pass unchanged and at once.
    pub fn is_clean(&self) -> bool {
        !self.down && self.latency.is_zero() && self.loss <= 0.0 && self.rate_bps.is_none()
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), LinkError> {
        if !(0.0..=1.0).contains(&self.loss) || self.loss.is_nan() {
            return Err(LinkError::Loss(self.loss));
        }
        if self.rate_bps == Some(0) {
            return Err(LinkError::Rate("0".into()));
        }
        Ok(())
    }

    /// The condition in real time for a lab clock running `speed` times real time: lab
    /// durations shrink, lab rates grow.
    pub fn to_real(&self, speed: f64) -> LinkCondition {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        LinkCondition {
            down: self.down,
            latency: Duration::from_secs_f64(self.latency.as_secs_f64() / speed),
            loss: self.loss,
            rate_bps: self
                .rate_bps
                .map(|r| ((r as f64) * speed).round().clamp(1.0, u64::MAX as f64) as u64),
        }
    }

    /// The retransmission timeout the loss model uses.
    pub fn rto(&self) -> Duration {
        (self.latency * 2 + MIN_RTO).max(MIN_RTO)
    }
}

/// Parses a bandwidth like `tc` does: `64kbit`, `10mbit`, `1gbit`, `9600bit` (bits per second,
/// powers of 1000) or `500kbps`, `2mbps`, `100bps` (bytes per second). A bare number is bits
/// per second.
pub fn parse_rate(s: &str) -> Result<u64, LinkError> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| LinkError::Rate(s.to_string()))?;
    let mult = match unit.trim() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(LinkError::Rate(s.to_string())),
    };
    let bps = n * mult;
    if !bps.is_finite() || bps < 1.0 || bps > u64::MAX as f64 {
        return Err(LinkError::Rate(s.to_string()));
    }
    Ok(bps.round() as u64)
}

/// A rate as `tc` would print it (`64kbit`, `10mbit`).
pub fn format_rate(bps: u64) -> String {
    if bps >= 1_000_000_000 && bps % 1_000_000_000 == 0 {
        format!("{}gbit", bps / 1_000_000_000)
    } else if bps >= 1_000_000 && bps % 1_000_000 == 0 {
        format!("{}mbit", bps / 1_000_000)
    } else if bps >= 1000 && bps % 1000 == 0 {
        format!("{}kbit", bps / 1000)
    } else {
        format!("{bps}bit")
    }
}

/// A token bucket in bytes; time is whatever monotonic `Duration` the caller counts in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    /// Most tokens the bucket holds.
    burst: f64,
    /// May go negative: a debt the next sends wait off.
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket for `rate_bps` bits per second: burst of 10 ms of traffic, at least one
    /// segment.
    pub fn new(rate_bps: u64, now: Duration) -> Self {
        let rate = rate_bps as f64 / 8.0;
        let burst = (rate / 100.0).max(MSS as f64);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long after `now` they may leave.
    pub fn take(&mut self, n: usize, now: Duration) -> Duration {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The shaping state of one direction of one connection.
#[derive(Debug)]
pub struct Shaper<R: Rng> {
    cond: LinkCondition,
    bucket: Option<TokenBucket>,
    /// Release time of the last chunk (delivery is in order).
    last_release: Duration,
    rng: R,
}

impl<R: Rng> Shaper<R> {
    pub fn new(cond: LinkCondition, now: Duration, rng: R) -> Self {
        Self {
            bucket: cond.rate_bps.map(|r| TokenBucket::new(r, now)),
            cond,
            last_release: now,
            rng,
        }
    }

    pub fn condition(&self) -> &LinkCondition {
        &self.cond
    }

    /// A new condition from now on (the bucket restarts full when the rate changes).
    pub fn set_condition(&mut self, cond: LinkCondition, now: Duration) {
        if cond.rate_bps != self.cond.rate_bps {
            self.bucket = cond.rate_bps.map(|r| TokenBucket::new(r, now));
        }
        self.cond = cond;
    }

    /// Extra delay from losses of a chunk of `n` bytes: the retransmission timeouts of its
    /// unluckiest segment (RTO doubling per loss).
    pub fn loss_delay(&mut self, n: usize) -> Duration {
        let p = self.cond.loss;
        if p <= 0.0 || n == 0 {
            return Duration::ZERO;
        }
        let segments = n.div_ceil(MSS);
        let mut worst = 0u32;
        for _ in 0..segments {
            let mut k = 0;
            while k < MAX_RETRANSMITS && self.rng.gen_bool(p.min(1.0)) {
                k += 1;
            }
            worst = worst.max(k);
        }
        // RTO + 2·RTO + … + 2^(k-1)·RTO = (2^k − 1)·RTO.
        self.cond.rto() * ((1u32 << worst) - 1)
    }

    /// What happens to a datagram of `n` bytes sent at `now`: dropped on a down link, lost
    /// with the loss probability, else delivered when latency and rate allow (in order).
    pub fn datagram(&mut self, n: usize, now: Duration) -> Fate {
        if self.cond.down {
            return Fate::Dropped;
        }
        let p = self.cond.loss;
        if p > 0.0 && self.rng.gen_bool(p.min(1.0)) {
            return Fate::Lost;
        }
        let wait = match &mut self.bucket {
            Some(b) => b.take(n, now),
            None => Duration::ZERO,
        };
        self.last_release = self.last_release.max(now + wait + self.cond.latency);
        Fate::At(self.last_release)
    }

    /// When a chunk of `n` bytes read at `now` may be written to the other side. Callers
    /// check [`LinkCondition::down`] themselves (a down link holds everything).
    pub fn release_at(&mut self, n: usize, now: Duration) -> Duration {
        let wait = match &mut self.bucket {
            Some(b) => b.take(n, now),
            None => Duration::ZERO,
        };
        let at = now + wait + self.cond.latency + self.loss_delay(n);
        self.last_release = self.last_release.max(at);
        self.last_release
    }
}

/// The ends of a link a user can name. Each pair of roles is one link; `endpoint` stands for
/// every endpoint process of the lab.
pub const LINK_DEVICES: &[&str] = &["fortigate", "fortianalyzer", "ems", "endpoints", "internet"];

/// A link between two devices, with its ends in a canonical order so `a ↔ b` and `b ↔ a` are
/// the same link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkId {
    pub a: String,
    pub b: String,
}

impl LinkId {
    /// Normalises device names (`faz` → `fortianalyzer`, `endpoint` → `endpoints`, …) and the
    /// order of the ends; errors on an unknown device or a link to itself.
    pub fn new(a: &str, b: &str) -> Result<LinkId, String> {
        let norm = |d: &str| -> Result<&'static str, String> {
            Ok(match d.trim().to_ascii_lowercase().as_str() {
                "fortigate" | "fgt" => "fortigate",
                "fortianalyzer" | "faz" => "fortianalyzer",
                "ems" => "ems",
                "endpoints" | "endpoint" => "endpoints",
                "internet" => "internet",
                other => {
                    return Err(format!(
                        "unknown device {other:?} (expected one of: {})",
                        LINK_DEVICES.join(", ")
                    ))
                }
            })
        };
        let (a, b) = (norm(a)?, norm(b)?);
        if a == b {
            return Err(format!("a link needs two different devices, got {a} twice"));
        }
        let pos = |d: &str| LINK_DEVICES.iter().position(|x| *x == d).unwrap_or(0);
        let (a, b) = if pos(a) <= pos(b) { (a, b) } else { (b, a) };
        Ok(LinkId {
            a: a.to_string(),
            b: b.to_string(),
        })
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.a, self.b)
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ↔ {}", self.a, self.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn rates_parse_like_tc() {
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500kbps"), Ok(4_000_000));
        assert_eq!(parse_rate("100bps"), Ok(800));
        assert_eq!(parse_rate("9600"), Ok(9600));
        assert_eq!(parse_rate(" 1.5 mbit"), Ok(1_500_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0kbit").is_err());
        assert!(parse_rate("-5kbit").is_err());
        assert!(parse_rate("5 furlongs").is_err());
        assert_eq!(format_rate(64_000), "64kbit");
        assert_eq!(format_rate(10_000_000), "10mbit");
        assert_eq!(format_rate(1_500), "1500bit");
    }

    #[test]
    fn clean_links_pass_at_once() {
        let mut s = Shaper::new(LinkCondition::CLEAN, ms(0), rng());
        assert!(LinkCondition::CLEAN.is_clean());
        assert_eq!(s.release_at(1_000_000, ms(5)), ms(5));
        assert_eq!(s.release_at(10, ms(6)), ms(6));
    }

    #[test]
    fn latency_delays_every_chunk_and_keeps_order() {
        let c = LinkCondition {
            latency: ms(200),
            ..LinkCondition::CLEAN
        };
        let mut s = Shaper::new(c, ms(0), rng());
        // Pipelined: chunks sent 1 ms apart arrive 1 ms apart, 200 ms later.
        assert_eq!(s.release_at(100, ms(0)), ms(200));
        assert_eq!(s.release_at(100, ms(1)), ms(201));
        // Lowering the latency never reorders: a later chunk is not released before an
        // earlier one.
        s.set_condition(
            LinkCondition {
                latency: ms(10),
                ..c
            },
            ms(2),
        );
        assert_eq!(s.release_at(100, ms(2)), ms(201));
        assert_eq!(s.release_at(100, ms(300)), ms(310));
    }

    #[test]
    fn rate_limits_throughput_with_a_small_burst() {
        // 64 kbit/s = 8000 bytes/s; burst = one segment (80 bytes of 10 ms < 1460).
        let c = LinkCondition {
            rate_bps: Some(64_000),
            ..LinkCondition::CLEAN
        };
        let mut s = Shaper::new(c, ms(0), rng());
        // The first segment fits the burst.
        assert_eq!(s.release_at(1460, ms(0)), ms(0));
        // 8000 more bytes at once take one second.
        let t = s.release_at(8000, ms(0));
        assert_eq!(t, ms(1000));
        // Sending 80,000 bytes in 1000-byte chunks as fast as allowed takes ~10 s.
        let mut last = Duration::ZERO;
        let mut now = ms(1000);
        for _ in 0..80 {
            last = s.release_at(1000, now);
            now = last;
        }
        let secs = (last - ms(1000)).as_secs_f64();
        assert!((9.8..=10.2).contains(&secs), "{secs}");
    }

    #[test]
    fn token_bucket_refills_up_to_its_burst_only() {
        let mut b = TokenBucket::new(8_000_000, ms(0)); // 1 MB/s, burst 10 KB
        assert_eq!(b.take(10_000, ms(0)), Duration::ZERO);
        // A long idle period refills only the burst.
        assert_eq!(b.take(10_000, ms(5000)), Duration::ZERO);
        let w = b.take(10_000, ms(5000));
        assert_eq!(w, ms(10));
    }

    #[test]
    fn loss_costs_retransmission_timeouts_and_never_bytes() {
        let c = LinkCondition {
            loss: 0.1,
            ..LinkCondition::CLEAN
        };
        assert_eq!(c.rto(), MIN_RTO);
        let mut s = Shaper::new(c, ms(0), rng());
        let mut delayed = 0;
        let n = 10_000;
        for _ in 0..n {
            let d = s.loss_delay(MSS);
            // Always a whole number of RTO steps: (2^k − 1) × 200 ms.
            let steps = d.as_millis() as u64 / 200;
            assert_eq!(d, ms(steps * 200));
            assert!((steps + 1).is_power_of_two(), "{steps}");
            if d > Duration::ZERO {
                delayed += 1;
            }
        }
        // About 10 % of single-segment chunks see a loss.
        assert!((800..=1200).contains(&delayed), "{delayed}");
        // Bigger chunks (more segments) are delayed more often.
        let mut big = 0;
        for _ in 0..1000 {
            if s.loss_delay(MSS * 10) > Duration::ZERO {
                big += 1;
            }
        }
        assert!(big > 550, "{big}"); // 1 − 0.9^10 ≈ 65 %
                                     // No loss: no delay; certain loss: capped.
        let mut none = Shaper::new(LinkCondition::CLEAN, ms(0), rng());
        assert_eq!(none.loss_delay(100_000), Duration::ZERO);
        let mut all = Shaper::new(
            LinkCondition {
                loss: 1.0,
                ..LinkCondition::CLEAN
            },
            ms(0),
            rng(),
        );
        assert_eq!(all.loss_delay(10), MIN_RTO * ((1 << MAX_RETRANSMITS) - 1));
    }

    #[test]
    fn datagrams_are_dropped_on_a_down_link_lost_at_the_loss_rate_and_delayed() {
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        let mut s = Shaper::new(down, ms(0), rng());
        assert_eq!(s.datagram(100, ms(1)), Fate::Dropped);
        s.set_condition(LinkCondition::CLEAN, ms(2));
        assert_eq!(s.datagram(100, ms(2)), Fate::At(ms(2)));
        s.set_condition(
            LinkCondition {
                latency: ms(200),
                ..LinkCondition::CLEAN
            },
            ms(3),
        );
        assert_eq!(s.datagram(100, ms(3)), Fate::At(ms(203)));
        s.set_condition(
            LinkCondition {
                loss: 0.25,
                ..LinkCondition::CLEAN
            },
            ms(4),
        );
        let lost = (0..10_000)
            .filter(|_| s.datagram(100, ms(300)) == Fate::Lost)
            .count();
        assert!((2200..=2800).contains(&lost), "{lost}");
        // Never a retransmission delay: a datagram that is not lost arrives on time.
        s.set_condition(LinkCondition::CLEAN, ms(400));
        assert_eq!(s.datagram(100, ms(400)), Fate::At(ms(400)));
        let all = LinkCondition {
            loss: 1.0,
            ..LinkCondition::CLEAN
        };
        let mut s = Shaper::new(all, ms(0), rng());
        assert_eq!(s.datagram(1, ms(0)), Fate::Lost);
    }

    #[test]
    fn losses_replay_from_the_seed() {
        let c = LinkCondition {
            loss: 0.3,
            latency: ms(50),
            ..LinkCondition::CLEAN
        };
        let run = || {
            let mut s = Shaper::new(c, ms(0), rng());
            (0..100)
                .map(|i| s.release_at(3000, ms(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        // RTO grows with the latency.
        assert_eq!(c.rto(), ms(300));
    }

    #[test]
    fn conditions_validate_serialise_and_scale_to_real_time() {
        let c = LinkCondition {
            down: false,
            latency: ms(200),
            loss: 0.1,
            rate_bps: Some(64_000),
        };
        assert!(c.validate().is_ok());
        assert!(LinkCondition { loss: 1.5, ..c }.validate().is_err());
        assert!(LinkCondition {
            loss: f64::NAN,
            ..c
        }
        .validate()
        .is_err());
        let j = serde_json::to_value(c).unwrap();
        assert_eq!(j["latency"], 200.0);
        assert_eq!(serde_json::from_value::<LinkCondition>(j).unwrap(), c);
        // A lab clock 10× real time: 200 ms lab is 20 ms real, 64 kbit/s lab is 640 kbit/s.
        let r = c.to_real(10.0);
        assert_eq!(r.latency, ms(20));
        assert_eq!(r.rate_bps, Some(640_000));
        assert_eq!(c.to_real(0.0), c);
    }

    #[test]
    fn link_ids_are_canonical() {
        let x = LinkId::new("fortianalyzer", "fgt").unwrap();
        assert_eq!(x, LinkId::new("fortigate", "faz").unwrap());
        assert_eq!((x.a.as_str(), x.b.as_str()), ("fortigate", "fortianalyzer"));
        assert_eq!(x.name(), "fortigate-fortianalyzer");
        assert_eq!(
            LinkId::new("endpoint", "ems").unwrap().name(),
            "ems-endpoints"
        );
        assert!(LinkId::new("fortigate", "fortigate").is_err());
        assert!(LinkId::new("fortigate", "router").is_err());
    }
}
