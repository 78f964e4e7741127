//! A link's latency and rate in namespaces mode on a kernel without `sch_netem`.
//!
//! `tc netem` is the first choice (see `netns.rs`). Some kernels (this project's CI VM among
//! them) are built without `sch_netem` and `sch_prio`, but with netfilter's queue
//! (`CONFIG_NETFILTER_NETLINK_QUEUE`). There the link's packets are sent by an iptables rule
//! (`-j NFQUEUE --queue-bypass`, in the FLLINK chain next to the DROP rules of `down` and
//! `loss`) to a thread of the orchestrator, which holds each one until its time and then lets
//! it go (`ACCEPT` verdict):
//! - **latency**: every packet leaves `latency` after it arrived (one way, on each side of the
//!   link, as netem's `delay` on each end);
//! - **rate**: the link is a wire of `rate` bits per second; a packet waits for the wire to be
//!   free and occupies it for `8 × length / rate`, so a burst queues like at a bottleneck.
//!
//! One [`Shaper`] per (namespace, link) while the link has latency or a rate; its thread lives
//! in the namespace (`setns` before the netlink socket is opened, so the queue is that
//! namespace's). The thread polls its queue every millisecond while it runs, so latencies are
//! exact to about 1 ms. With `--queue-bypass`, a packet meets no loss if no shaper is bound (it
//! passes unshaped): the rule is added after the shaper is bound and removed before it stops.
//! When a shaper stops, the packets it holds are let go at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a shaper does to its link's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// One-way delay added to every packet.
    pub latency: Duration,
    /// The link's bandwidth in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
}

impl Shape {
    /// Whether this shape changes anything (else no shaper is needed).
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero() || self.rate_bps.is_some()
    }
}

/// When each packet of one link leaves (no I/O).
#[derive(Debug, Default)]
pub struct Schedule {
    /// When the wire is free again (rate limiting).
    wire_free: Option<Instant>,
}

impl Schedule {
    /// The time a packet of `len` bytes that arrived at `now` is let go.
    pub fn release_at(&mut self, now: Instant, len: usize, shape: &Shape) -> Instant {
        let sent = match shape.rate_bps {
            Some(rate) if rate > 0 => {
                let start = self.wire_free.map_or(now, |f| f.max(now));
                let on_wire = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                let done = start + on_wire;
                self.wire_free = Some(done);
                done
            }
            _ => {
                self.wire_free = None;
                now
            }
        };
        sent + shape.latency
    }
}

/// The kernel's queue length for a shaped link (packets held at once); beyond it the kernel
/// drops, as a full bottleneck queue does.
const QUEUE_MAX_LEN: u32 = 20_000;

/// How much of each packet the kernel copies to the shaper (it needs only the length).
const COPY_RANGE: u16 = 64;

/// A running shaper: a thread in a namespace holding one link's queued packets.
#[derive(Debug)]
pub struct Shaper {
    shape: Arc<Mutex<Shape>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shaper {
    /// Binds netfilter queue `queue` in the network namespace `ns` (a name under
    /// `/var/run/netns`) and starts shaping what arrives there with `shape`.
    pub fn start(ns: &str, queue: u16, shape: Shape) -> anyhow::Result<Shaper> {
        let shared = Arc::new(Mutex::new(shape));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let ns_path = std::path::Path::new("/var/run/netns").join(ns);
        let (s2, st2) = (shared.clone(), stop.clone());
        let name = format!("shaper-{ns}-{queue}");
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let q = match open_queue(&ns_path, queue) {
                Ok(q) => {
                    let _ = ready_tx.send(Ok(()));
                    q
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            run(q, queue, &s2, &st2);
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Shaper {
                shape: shared,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the shaper thread of {ns} queue {queue} ended before it was ready")
            }
        }
    }

    /// Changes the shape (packets already held keep their release time).
    pub fn set(&self, shape: Shape) {
        *self.shape.lock().unwrap() = shape;
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_queue(ns_path: &std::path::Path, queue: u16) -> anyhow::Result<nfq::Queue> {
    use anyhow::Context;
    let f = std::fs::File::open(ns_path)
        .with_context(|| format!("open the namespace {}", ns_path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("enter the namespace {}", ns_path.display()))?;
    let mut q = nfq::Queue::open().context("open a netfilter queue socket (nfnetlink_queue)")?;
    q.bind(queue)
        .with_context(|| format!("bind netfilter queue {queue}"))?;
    q.set_copy_range(queue, COPY_RANGE)
        .context("set the queue's copy range")?;
    q.set_queue_max_len(queue, QUEUE_MAX_LEN)
        .context("set the queue's length")?;
    q.set_nonblocking(true);
    Ok(q)
}

fn run(mut q: nfq::Queue, queue: u16, shape: &Mutex<Shape>, stop: &AtomicBool) {
    let mut schedule = Schedule::default();
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    while !stop.load(Ordering::Acquire) {
        let current = *shape.lock().unwrap();
        loop {
            match q.recv() {
                Ok(msg) => {
                    let at = schedule.release_at(Instant::now(), msg.get_original_len(), &current);
                    held.push_back((at, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ENOBUFS: the kernel dropped messages for a slow reader; go on.
                    tracing::debug!(queue, error = %e, "netfilter queue receive");
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            let (_, msg) = held.pop_front().expect("front exists");
            accept(&mut q, msg, queue);
        }
        let wait = held.front().map_or(Duration::from_millis(1), |(at, _)| {
            at.saturating_duration_since(now)
                .min(Duration::from_millis(1))
        });
        std::thread::sleep(wait);
    }
    for (_, msg) in held.drain(..) {
        accept(&mut q, msg, queue);
    }
    let _ = q.unbind(queue);
}

fn accept(q: &mut nfq::Queue, mut msg: nfq::Message, queue: u16) {
    msg.set_verdict(nfq::Verdict::Accept);
    if let Err(e) = q.verdict(msg) {
        tracing::debug!(queue, error = %e, "netfilter queue verdict");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_alone_delays_every_packet_by_the_same_amount() {
        let mut s = Schedule::default();
        let shape = Shape {
            latency: Duration::from_millis(100),
            rate_bps: None,
        };
        let t0 = Instant::now();
        assert_eq!(
            s.release_at(t0, 1500, &shape),
            t0 + Duration::from_millis(100)
        );
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(
            s.release_at(t1, 60, &shape),
            t1 + Duration::from_millis(100)
        );
    }

    #[test]
    fn a_rate_queues_a_burst_behind_the_wire() {
        let mut s = Schedule::default();
        // 1,000 bytes at 80 kbit/s take 100 ms on the wire.
        let shape = Shape {
            latency: Duration::ZERO,
            rate_bps: Some(80_000),
        };
        let t0 = Instant::now();
        let a = s.release_at(t0, 1000, &shape);
        let b = s.release_at(t0, 1000, &shape);
        let c = s.release_at(t0, 1000, &shape);
        assert_eq!(a, t0 + Duration::from_millis(100));
        assert_eq!(b, t0 + Duration::from_millis(200));
        assert_eq!(c, t0 + Duration::from_millis(300));
        // After an idle gap the wire is free again: no queueing.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            s.release_at(later, 1000, &shape),
            later + Duration::from_millis(100)
        );
    }

    #[test]
    fn rate_and_latency_add_up() {
        let mut s = Schedule::default();
        let shape = Shape {
            latency: Duration::from_millis(50),
            rate_bps: Some(8_000_000),
        };
        let t0 = Instant::now();
        // 1,000 bytes at 8 Mbit/s: 1 ms on the wire, then 50 ms of delay.
        assert_eq!(
            s.release_at(t0, 1000, &shape),
            t0 + Duration::from_millis(51)
        );
    }

    #[test]
    fn only_latency_or_a_rate_needs_a_shaper() {
        assert!(!Shape::default().is_active());
        assert!(Shape {
            latency: Duration::from_millis(1),
            rate_bps: None
        }
        .is_active());
        assert!(Shape {
            latency: Duration::ZERO,
            rate_bps: Some(1)
        }
        .is_active());
    }
}
