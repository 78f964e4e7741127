//! Supervised tasks: a long-running task (a listener's accept loop, a UDP reader, a device's
//! background loop) that panics or returns while the device is still running is reported and
//! started again, never silently gone.
//!
//! [`Supervisor::spawn`] runs a named task built by a factory; when the task panics the
//! supervisor emits `task.panicked` on the device's event bus (`{task, message, restarts}`),
//! counts it, waits a back-off (100 ms doubling to 5 s; back to 100 ms after a run of 30 s) and
//! builds the task again (`task.restarted`). A task that returns while the shutdown token is not
//! cancelled is reported as `task.exited` and restarted the same way. Once the shutdown token
//! fires the supervisor lets the running task finish (it watches the same token) and stops.
//!
//! Work that is not restartable (one connection, one request) is guarded with
//! [`Supervisor::spawn_once`] or [`Supervisor::report_panic`]: the panic is reported and
//! counted, the connection or request ends, everything else goes on.
//!
//! Counters: [`Supervisor::stats`] (served by every device at `/_lab/tasks`, and inside
//! FortiAnalyzer's `/_lab/stats`).
//!
//! Fault injection: [`Supervisor::inject_panic`] (`POST /_lab/tasks` with `{"panic": "<task>"}`
//! on every device and on the dashboard, lab token required) makes the running instance of a
//! restartable task panic at its next await point, as a bug would, so tests and trainers can
//! watch the supervisor report and restart it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, EventKind};

/// The message of a panic made by [`Supervisor::inject_panic`].
pub const INJECTED_PANIC: &str = "panic injected through the lab surface (POST /_lab/tasks)";

/// First back-off before a restart.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest back-off before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run at least this long resets the back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(30);

/// Per-task counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TaskStats {
    /// Whether an instance of the task is running now (restartable tasks only).
    pub running: bool,
    /// Instances running now under this name (a task replaced by a new one with the same
    /// name, e.g. after a reconfiguration, may still be finishing).
    #[serde(skip)]
    pub instances: u64,
    /// Panics of this task (or of work guarded under this name).
    pub panicked: u64,
    /// Returns while the device was running (restartable tasks only).
    pub exited: u64,
    /// Restarts after a panic or an unexpected return.
    pub restarted: u64,
    /// The last panic message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<String>,
}

/// Totals and per-task counters, as served on `/_lab/tasks`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SupervisorStats {
    pub panicked: u64,
    pub restarted: u64,
    pub exited: u64,
    pub tasks: BTreeMap<String, TaskStats>,
}

/// Where a process without an event bus sends its `task.*` reports ([`Supervisor::set_reporter`]).
type Reporter = Arc<dyn Fn(EventKind, serde_json::Value) + Send + Sync>;

#[derive(Default)]
struct Inner {
    events: Mutex<Option<EventBus>>,
    reporter: Mutex<Option<Reporter>>,
    tasks: Mutex<BTreeMap<String, TaskStats>>,
    /// Per restartable task: fired by [`Supervisor::inject_panic`].
    trips: Mutex<BTreeMap<String, Arc<tokio::sync::Notify>>>,
    panicked: AtomicU64,
    restarted: AtomicU64,
    exited: AtomicU64,
}

/// A device's task supervisor. Cheap to clone; every clone shares the counters.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("panicked", &self.inner.panicked.load(Ordering::Relaxed))
            .field("restarted", &self.inner.restarted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `fut`, turning a panic into `Err(message)` (for work that is not a task of its own:
/// one request, one connection inside a tracker).
pub async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, String> {
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut))
        .await
        .map_err(|p| panic_message(&*p))
}

impl Supervisor {
    /// A supervisor that reports on `events` (none: counters and the log only).
    pub fn new(events: Option<EventBus>) -> Self {
        let s = Self::default();
        *s.inner.events.lock().unwrap() = events;
        s
    }

    /// Sets (or replaces) the event bus reports go to.
    pub fn set_events(&self, events: EventBus) {
        *self.inner.events.lock().unwrap() = Some(events);
    }

    /// Sends the `task.*` reports to `f(kind, data)` when there is no event bus (the
    /// orchestrator puts them on its timeline).
    pub fn set_reporter(&self, f: impl Fn(EventKind, serde_json::Value) + Send + Sync + 'static) {
        *self.inner.reporter.lock().unwrap() = Some(Arc::new(f));
    }

    #[track_caller]
    fn emit(&self, kind: EventKind, data: serde_json::Value) {
        let bus = self.inner.events.lock().unwrap().clone();
        if let Some(bus) = bus {
            bus.emit(kind, data);
            return;
        }
        let reporter = self.inner.reporter.lock().unwrap().clone();
        if let Some(f) = reporter {
            f(kind, data);
        }
    }

    fn with_task<R>(&self, name: &str, f: impl FnOnce(&mut TaskStats) -> R) -> R {
        let mut tasks = self.inner.tasks.lock().unwrap();
        f(tasks.entry(name.to_string()).or_default())
    }

    /// Reports a panic caught around work named `name` (a request, a session): counted, logged
    /// and emitted as `task.panicked`; nothing is restarted.
    pub fn report_panic(&self, name: &str, message: &str) {
        self.inner.panicked.fetch_add(1, Ordering::Relaxed);
        self.with_task(name, |task| {
            task.panicked += 1;
            task.last_panic = Some(message.to_string());
        });
        tracing::error!(task = name, panic = message, "task panicked");
        self.emit(
            EventKind::TaskPanicked,
            json!({"task": name, "message": message, "restart": false}),
        );
    }

    /// Runs `fut` once as a task named `name`; a panic is reported (no restart).
    pub fn spawn_once<Fut>(&self, name: &str, fut: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sup = self.clone();
        let name = name.to_string();
        let inner = tokio::spawn(fut);
        tokio::spawn(async move {
            if let Err(e) = inner.await {
                if e.is_panic() {
                    let msg = panic_message(&*e.into_panic());
                    sup.report_panic(&name, &msg);
                }
            }
        })
    }

    /// Runs the task `make()` builds, named `name`, until `shutdown` fires: a panic or a return
    /// before shutdown is reported and the task is built again after a back-off. The returned
    /// handle finishes once the task has stopped after shutdown.
    pub fn spawn<F, Fut>(
        &self,
        name: &str,
        shutdown: CancellationToken,
        mut make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sup = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            let mut restarts = 0u64;
            loop {
                sup.with_task(&name, |t| {
                    t.instances += 1;
                    t.running = true;
                });
                let started = Instant::now();
                let trip = sup.trip(&name);
                let fut = make();
                let inner = tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        () = fut => {}
                        () = trip.notified() => panic!("{INJECTED_PANIC}"),
                    }
                });
                // Aborting the supervisor (a handle's `abort()`) aborts the running instance.
                let _guard = AbortOnDrop(inner.abort_handle());
                let res = inner.await;
                sup.with_task(&name, |t| {
                    t.instances = t.instances.saturating_sub(1);
                    t.running = t.instances > 0;
                });
                if shutdown.is_cancelled() {
                    return;
                }
                if started.elapsed() >= BACKOFF_RESET {
                    backoff = BACKOFF_MIN;
                }
                match res {
                    Ok(()) => {
                        sup.inner.exited.fetch_add(1, Ordering::Relaxed);
                        sup.with_task(&name, |t| t.exited += 1);
                        tracing::error!(task = %name, "task returned while the device runs");
                        sup.emit(
                            EventKind::TaskExited,
                            json!({"task": name, "restarts": restarts}),
                        );
                    }
                    Err(e) if e.is_panic() => {
                        let msg = panic_message(&*e.into_panic());
                        sup.inner.panicked.fetch_add(1, Ordering::Relaxed);
                        sup.with_task(&name, |task| {
                            task.panicked += 1;
                            task.last_panic = Some(msg.clone());
                        });
                        tracing::error!(task = %name, panic = %msg, "task panicked; restarting");
                        sup.emit(
                            EventKind::TaskPanicked,
                            json!({"task": name, "message": msg, "restart": true, "restarts": restarts}),
                        );
                    }
                    // Cancelled from outside (runtime shutting down): nothing to restart.
                    Err(_) => return,
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                restarts += 1;
                sup.inner.restarted.fetch_add(1, Ordering::Relaxed);
                sup.with_task(&name, |t| t.restarted += 1);
                tracing::warn!(task = %name, restarts, "task restarted");
                sup.emit(
                    EventKind::TaskRestarted,
                    json!({"task": name, "restarts": restarts}),
                );
            }
        })
    }

    /// [`Supervisor::spawn`] for an accept loop: the supervisor keeps the listening socket,
    /// and each instance of the task gets its own handle on it (`run(listener)`), so a
    /// panicked instance does not take the port with it.
    pub fn spawn_tcp<F, Fut>(
        &self,
        name: &str,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
        mut run: F,
    ) -> std::io::Result<JoinHandle<()>>
    where
        F: FnMut(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let keep = listener.into_std()?;
        let task = name.to_string();
        Ok(self.spawn(name, shutdown, move || {
            let fut = tcp_listener_again(&keep).map(&mut run);
            let task = task.clone();
            async move {
                match fut {
                    Ok(f) => f.await,
                    Err(e) => tracing::error!(%task, error = %e, "listener cannot be reopened"),
                }
            }
        }))
    }

    /// [`Supervisor::spawn_tcp`] for a UDP socket.
    pub fn spawn_udp<F, Fut>(
        &self,
        name: &str,
        socket: tokio::net::UdpSocket,
        shutdown: CancellationToken,
        mut run: F,
    ) -> std::io::Result<JoinHandle<()>>
    where
        F: FnMut(tokio::net::UdpSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let keep = socket.into_std()?;
        let task = name.to_string();
        Ok(self.spawn(name, shutdown, move || {
            let fut = udp_socket_again(&keep).map(&mut run);
            let task = task.clone();
            async move {
                match fut {
                    Ok(f) => f.await,
                    Err(e) => tracing::error!(%task, error = %e, "socket cannot be reopened"),
                }
            }
        }))
    }

    fn trip(&self, name: &str) -> Arc<tokio::sync::Notify> {
        self.inner
            .trips
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Makes the running instance of the restartable task `name` panic at its next await
    /// point (fault injection; the supervisor then reports and restarts it like any panic).
    /// False when no instance of such a task is running.
    pub fn inject_panic(&self, name: &str) -> bool {
        let running = self
            .inner
            .tasks
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|t| t.running);
        let trip = self.inner.trips.lock().unwrap().get(name).cloned();
        match trip {
            Some(t) if running => {
                tracing::warn!(task = name, "panic injected");
                t.notify_one();
                true
            }
            _ => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> SupervisorStats {
        SupervisorStats {
            panicked: self.inner.panicked.load(Ordering::Relaxed),
            restarted: self.inner.restarted.load(Ordering::Relaxed),
            exited: self.inner.exited.load(Ordering::Relaxed),
            tasks: self.inner.tasks.lock().unwrap().clone(),
        }
    }
}

/// A queue's receiving end that outlives a panicked instance of the task consuming it (for
/// [`Supervisor::spawn`]): each instance holds the lock for its life (`let mut rx =
/// rx.lock().await`); a panic releases it while unwinding, so the next instance goes on with
/// the next item and nothing queued is lost.
pub type SharedReceiver<R> = Arc<tokio::sync::Mutex<R>>;

/// Wraps a receiver for [`SharedReceiver`].
pub fn share_receiver<R>(rx: R) -> SharedReceiver<R> {
    Arc::new(tokio::sync::Mutex::new(rx))
}

/// A new tokio handle on a listening socket the supervisor keeps (a duplicated descriptor),
/// so the socket outlives a panicked instance of the loop and the next instance accepts on the
/// same port.
pub fn tcp_listener_again(
    keep: &std::net::TcpListener,
) -> std::io::Result<tokio::net::TcpListener> {
    let dup = keep.try_clone()?;
    dup.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(dup)
}

/// The UDP counterpart of [`tcp_listener_again`].
pub fn udp_socket_again(keep: &std::net::UdpSocket) -> std::io::Result<tokio::net::UdpSocket> {
    let dup = keep.try_clone()?;
    dup.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(dup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LabClock;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_restarted_until_shutdown() {
        let bus = EventBus::new("DEV", LabClock::real());
        let sup = Supervisor::new(Some(bus.clone()));
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let s2 = stop.clone();
        let h = sup.spawn("loop", stop.clone(), move || {
            let r = r.clone();
            let s2 = s2.clone();
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    panic!("boom {n}");
                }
                s2.cancelled().await;
            }
        });
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = sup.stats();
        assert_eq!(st.panicked, 2);
        assert_eq!(st.restarted, 2);
        assert!(st.tasks["loop"].running);
        assert_eq!(st.tasks["loop"].last_panic.as_deref(), Some("boom 1"));
        let (hist, _) = bus.history_since(0);
        let kinds: Vec<&str> = hist.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "task.panicked",
                "task.restarted",
                "task.panicked",
                "task.restarted"
            ]
        );
        stop.cancel();
        h.await.unwrap();
        assert!(!sup.stats().tasks["loop"].running);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_injected_panic_is_reported_and_the_task_restarted() {
        let sup = Supervisor::new(None);
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let s2 = stop.clone();
        let h = sup.spawn("idle", stop.clone(), move || {
            let (r, s2) = (r.clone(), s2.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                s2.cancelled().await;
            }
        });
        assert!(!sup.inject_panic("no such task"));
        crate::wait::wait_for("the task to run", Duration::from_secs(5), || {
            sup.stats().tasks.get("idle").is_some_and(|t| t.running)
        })
        .await;
        assert!(sup.inject_panic("idle"));
        crate::wait::wait_for("the restart", Duration::from_secs(5), || {
            runs.load(Ordering::SeqCst) == 2
        })
        .await;
        let st = sup.stats();
        assert_eq!((st.panicked, st.restarted), (1, 1));
        assert_eq!(st.tasks["idle"].last_panic.as_deref(), Some(INJECTED_PANIC));
        stop.cancel();
        h.await.unwrap();
        assert!(!sup.inject_panic("idle"));
    }

    #[tokio::test]
    async fn a_restarted_consumer_goes_on_with_the_next_item_of_its_shared_queue() {
        let sup = Supervisor::new(None);
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<u32>(8);
        let rx = share_receiver(rx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h = sup.spawn("consumer", stop.clone(), move || {
            let (rx, s) = (rx.clone(), s.clone());
            async move {
                let mut rx = rx.lock().await;
                while let Some(n) = rx.recv().await {
                    if n == 2 {
                        panic!("item {n}");
                    }
                    s.lock().unwrap().push(n);
                }
            }
        });
        for n in 1..=4 {
            tx.send(n).await.unwrap();
        }
        while seen.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*seen.lock().unwrap(), [1, 3, 4]);
        assert_eq!(sup.stats().panicked, 1);
        stop.cancel();
        drop(tx);
        h.await.unwrap();
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_restarted_and_one_that_stops_on_shutdown_is_not() {
        let sup = Supervisor::new(None);
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let h = sup.spawn("early", stop.clone(), move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        h.await.unwrap();
        let st = sup.stats();
        assert!(st.exited >= 2, "{st:?}");
        assert_eq!(st.panicked, 0);
    }

    /// A task replaced by a new instance under the same name (a reconfiguration) stays
    /// "running" while the new one runs, whichever stops first.
    #[tokio::test]
    async fn a_replaced_task_stays_running_under_its_name() {
        let sup = Supervisor::new(None);
        let (old, new) = (CancellationToken::new(), CancellationToken::new());
        let run = |stop: CancellationToken| {
            move || {
                let stop = stop.clone();
                async move { stop.cancelled().await }
            }
        };
        let h_old = sup.spawn("output", old.clone(), run(old.clone()));
        let h_new = sup.spawn("output", new.clone(), run(new.clone()));
        while sup.stats().tasks.get("output").map(|t| t.instances) != Some(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        old.cancel();
        h_old.await.unwrap();
        assert!(sup.stats().tasks["output"].running);
        new.cancel();
        h_new.await.unwrap();
        assert!(!sup.stats().tasks["output"].running);
    }

    /// Without an event bus (the orchestrator) the reports go to the reporter.
    #[tokio::test]
    async fn reports_go_to_the_reporter_without_an_event_bus() {
        let sup = Supervisor::new(None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        sup.set_reporter(move |kind, data| s.lock().unwrap().push((kind.name().to_string(), data)));
        sup.spawn_once("printer", async { panic!("bad event") })
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "task.panicked");
        assert_eq!(seen[0].1["task"], "printer");
        assert_eq!(seen[0].1["message"], "bad event");
    }

    #[tokio::test]
    async fn spawn_once_reports_a_panic_without_restart() {
        let sup = Supervisor::new(None);
        sup.spawn_once("conn", async { panic!("bad input") })
            .await
            .unwrap();
        let st = sup.stats();
        assert_eq!(st.panicked, 1);
        assert_eq!(st.restarted, 0);
        assert_eq!(st.tasks["conn"].last_panic.as_deref(), Some("bad input"));
    }

    #[tokio::test]
    async fn a_panicking_accept_loop_keeps_its_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sup = Supervisor::new(None);
        let stop = CancellationToken::new();
        let h = sup
            .spawn_tcp("accept", l, stop.clone(), |l| async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
                if b[0] == b'!' {
                    panic!("hostile byte");
                }
                tokio::io::AsyncWriteExt::write_all(&mut s, b"ok")
                    .await
                    .unwrap();
            })
            .unwrap();
        for (byte, want) in [(b'!', &b""[..]), (b'x', &b"ok"[..])] {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut c, &[byte])
                .await
                .unwrap();
            let mut got = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got).await;
            assert_eq!(got, want);
        }
        stop.cancel();
        let st = sup.stats();
        assert_eq!(st.panicked, 1, "{st:?}");
        h.abort();
    }

    #[tokio::test]
    async fn a_kept_listener_accepts_again_after_its_task_died() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let keep = l.into_std().unwrap();
        let first = tcp_listener_again(&keep).unwrap();
        drop(first);
        let again = tcp_listener_again(&keep).unwrap();
        let c = tokio::net::TcpStream::connect(addr);
        let (a, _) = tokio::join!(again.accept(), c);
        a.unwrap();
    }
}
