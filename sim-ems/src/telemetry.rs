//! The FortiClient telemetry server: TLS on its own listener (lab port 8013).
//!
//! A connection carries one or more request/reply exchanges ([`crate::proto`] frames) and is
//! closed by the client when done. The reply to every request is a `REPLY` frame; a frame that
//! cannot be parsed gets an `ERROR` reply naming the problem, then the connection is closed
//! (the server keeps serving everyone else).
//!
//! Connections [P]: with `persistent_connections` (the default) replies carry `PERCON=1` and
//! FortiClient keeps the connection open for its next keep-alive (the EMS probe reply of the
//! product advertises `PERCON|1|`); the server closes a connection idle for
//! [`idle_timeout`]. Without it, FortiClient closes the connection after each exchange, as the
//! 6.x admin guide describes ("the connection is closed after protocol exchanges between both
//! parties are complete"), and resumes its TLS session (stateless session tickets,
//! [`with_session_tickets`]) on the next one.
//!
//! Push [P]: on a persistent connection EMS does not wait for the next keep-alive to hand an
//! endpoint a new action (quarantine, release). Between two requests it may send a `NOTIFY`
//! frame (`MSG_HEADER: FCTEMS=<serial>`, `X-FCCK-NOTIFY: KA`, payload `REASON=ACTION`), and
//! FortiClient answers with a keep-alive at once, whose reply carries the action as usual.
//! EMS 6.4+ and FortiClient keep that connection open for this (the probe's `PERCON|1|`); the
//! frame itself is a proposal, the public material does not show it. So the keep-alive period
//! only bounds how soon EMS notices an endpoint gone, and a lab's idle cost.
//!
//! Reply payload keys [P]: `STATUS` (`OK`/`ERROR`), `ERROR_CODE`, `MESSAGE`, `EMS_SN`,
//! `EMS_HOSTNAME`, `EMSVER`, `DEVICE_ID`, `KA_INTERVAL` (seconds, also in the header),
//! `KA_INTERVAL_MS`, the profile (`PROFILE_NAME`, `LOG_UPLOAD_ENABLED`, `LOG_UPLOAD_SERVER`,
//! `LOG_UPLOAD_SSL_ENABLED`, `LOG_PROTOCOL`), and the instruction: `ACTION` =
//! `NONE|QUARANTINE|UNQUARANTINE|REGISTER`, with `QUARANTINE_ID`, `QUARANTINE_MSG`,
//! `QUARANTINE_CODE_SALT`, `QUARANTINE_CODE_HASH` for a quarantine; `CODE_RESULT` =
//! `ACCEPTED|REJECTED` when the keep-alive carried `RELEASE_CODE`; `PERCON=1` (see above).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proto::{self, Frame, ReadError};
use crate::state::{Action, KaOutcome, KeepAlive, SysInfo};
use crate::Shared;
use fortilab_core::EventKind;

/// How long a connection may stay idle between frames, at least.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may stay idle between frames: [`IDLE_TIMEOUT`] or three keep-alive
/// periods (real time), whichever is longer, so a persistent connection outlives the pause
/// between two keep-alives.
pub fn idle_timeout(shared: &Shared) -> Duration {
    let ka = shared.clock.to_real(shared.cfg.ka_interval);
    IDLE_TIMEOUT.max(ka.saturating_mul(3))
}

/// The telemetry TLS configuration with stateless session tickets (one per handshake), so a
/// FortiClient that reconnects resumes its session instead of a full handshake.
pub fn with_session_tickets(
    base: Arc<rustls::ServerConfig>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = (*base).clone();
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

/// Accepts telemetry connections until `shutdown`.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((tcp, peer)) =
        fortilab_core::http::accept_next(&listener, &shutdown, "telemetry").await
    {
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let sd = shutdown.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "telemetry TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let sup = shared.supervisor.clone();
            let conn = fortilab_core::supervise::catch_panic(connection(shared, tls, peer));
            tokio::select! {
                _ = sd.cancelled() => {}
                r = conn => if let Err(msg) = r {
                    // One connection's panic: reported; the listener goes on.
                    sup.report_panic("telemetry connection", &msg);
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

async fn connection<S>(shared: Arc<Shared>, mut stream: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let idle = idle_timeout(&shared);
    // Set once the connection's FortiClient is known and EMS keeps the connection open:
    // `Shared::push` wakes it to send a NOTIFY between two requests.
    let mut push: Option<(String, Arc<tokio::sync::Notify>)> = None;
    loop {
        // `read_frame` keeps what it read in `buf`, so dropping it for a push loses nothing.
        let read = tokio::select! {
            r = tokio::time::timeout(idle, proto::read_frame(&mut stream, &mut buf)) => r,
            () = pushed(&push) => {
                shared.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if proto::write_frame(&mut stream, &notify_frame(&shared)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let frame = match read {
            Err(_) | Ok(Err(ReadError::Closed)) => break,
            Ok(Err(ReadError::Io(_))) => break,
            Ok(Err(ReadError::Truncated)) => {
                tracing::debug!(%peer, "telemetry connection closed mid-frame");
                break;
            }
            Ok(Err(ReadError::Proto(e))) => {
                tracing::warn!(%peer, error = %e, "malformed telemetry frame");
                shared.bus.emit(
                    EventKind::TelemetryError,
                    json!({"peer": peer.to_string(), "error": e.to_string()}),
                );
                let reply = error_reply(
                    &shared,
                    "BAD_FRAME",
                    &format!("malformed telemetry frame: {e}"),
                );
                let _ = proto::write_frame(&mut stream, &reply).await;
                break;
            }
            Ok(Ok(f)) => f,
        };
        let reply = handle(&shared, &frame, peer).await;
        if push.is_none() && persistent(&reply) && matches!(frame.verb.as_str(), "REGISTER" | "KA")
        {
            let uid = frame
                .header_value("FCTUID")
                .unwrap_or("")
                .trim()
                .to_ascii_uppercase();
            if !uid.is_empty() {
                let n = Arc::new(tokio::sync::Notify::new());
                shared.set_pusher(&uid, &n);
                push = Some((uid, n));
            }
        }
        if proto::write_frame(&mut stream, &reply).await.is_err() {
            break;
        }
    }
    if let Some((uid, n)) = &push {
        shared.clear_pusher(uid, n);
    }
}

/// Waits for a push to the connection's FortiClient (never, before it is known).
async fn pushed(push: &Option<(String, Arc<tokio::sync::Notify>)>) {
    match push {
        Some((_, n)) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Whether a reply keeps the connection open for the next request.
fn persistent(reply: &Frame) -> bool {
    reply.value("PERCON") == Some("1")
}

/// The frame asking the endpoint for an exchange now (see the module documentation).
pub fn notify_frame(shared: &Shared) -> Frame {
    let mut f = Frame::new("FCTEMS", &shared.cfg.serial, "NOTIFY", "KA");
    f.put("REASON", "ACTION");
    f
}

fn base_reply(shared: &Shared, status: &str) -> Frame {
    let ka_ms = shared.ka_interval_ms();
    let mut f = Frame::new("FCTEMS", &shared.cfg.serial, "REPLY", status)
        .head("KA_INTERVAL", ka_ms.div_ceil(1000).max(1))
        .head("KA_INTERVAL_MS", ka_ms);
    f.put("STATUS", status)
        .put("EMS_SN", &shared.cfg.serial)
        .put("EMS_HOSTNAME", &shared.cfg.hostname)
        .put("EMSVER", emsver(&shared.cfg.version))
        .put("KA_INTERVAL", ka_ms.div_ceil(1000).max(1))
        .put("KA_INTERVAL_MS", ka_ms);
    if shared.cfg.persistent_connections && status == "OK" {
        f.put("PERCON", 1);
    }
    f
}

/// `6.4.3` → `6004003` (the probe reply's `MMmmPPP` form).
pub fn emsver(v: &str) -> String {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    format!("{a}{b:03}{c:03}")
}

/// An `ERROR` reply.
pub fn error_reply(shared: &Shared, code: &str, message: &str) -> Frame {
    let mut f = base_reply(shared, "ERROR");
    f.put("ERROR_CODE", code).put("MESSAGE", message);
    f
}

fn put_profile(shared: &Shared, f: &mut Frame) {
    let c = &shared.cfg;
    let enabled = c.log_upload_enabled && c.faz.is_some();
    f.put("PROFILE_NAME", &c.profile_name)
        .put("LOG_UPLOAD_ENABLED", u8::from(enabled))
        .put("LOG_UPLOAD_SERVER", c.faz.clone().unwrap_or_default())
        .put("LOG_UPLOAD_SSL_ENABLED", 1)
        .put("LOG_PROTOCOL", "faz");
}

fn put_action(f: &mut Frame, action: &Action) {
    match action {
        Action::None => {
            f.put("ACTION", "NONE");
        }
        Action::Unquarantine => {
            f.put("ACTION", "UNQUARANTINE");
        }
        Action::Quarantine {
            id,
            message,
            salt,
            hash,
        } => {
            f.put("ACTION", "QUARANTINE")
                .put("QUARANTINE_ID", id)
                .put("QUARANTINE_MSG", message)
                .put("QUARANTINE_CODE_SALT", salt)
                .put("QUARANTINE_CODE_HASH", hash);
        }
    }
}

fn flag(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1") | Some("true") | Some("TRUE"))
}

/// Handles one request frame and builds the reply.
pub async fn handle(shared: &Arc<Shared>, frame: &Frame, peer: SocketAddr) -> Frame {
    let fctuid = frame
        .header_value("FCTUID")
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    match frame.verb.as_str() {
        "PROBE" => {
            let mut f = base_reply(shared, "OK");
            f.put(
                "PROBE",
                format!(
                    "FGT|{}|FEATURE_BITMAP|7|EMSVER|{}|PROTO_VERSION|1.0.0|PERCON|{}|",
                    shared.cfg.serial,
                    emsver(&shared.cfg.version),
                    u8::from(shared.cfg.persistent_connections)
                ),
            );
            f
        }
        "REGISTER" => {
            if fctuid.is_empty() || !fctuid.chars().all(|c| c.is_ascii_alphanumeric()) {
                return error_reply(
                    shared,
                    "BAD_FCTUID",
                    "registration needs FCTUID=<hex> in MSG_HEADER",
                );
            }
            let info = SysInfo {
                fctuid: fctuid.clone(),
                ip: frame.header_value("IP").unwrap_or("").to_string(),
                mac: frame.header_value("MAC").unwrap_or("").to_string(),
                onnet: flag(frame.header_value("FCT_ONNET")),
                ec_quarantined: flag(frame.header_value("EC_QUARANTINED")),
                hostname: frame.value("HOSTNAME").unwrap_or("").to_string(),
                user: frame.value("USER").unwrap_or("").to_string(),
                domain: frame.value("DOMAIN").unwrap_or("").to_string(),
                os: frame.value("OSVER").unwrap_or("").to_string(),
                fct_version: frame.value("FCTVER").unwrap_or("").to_string(),
                fct_sn: frame.value("FCT_SN").unwrap_or("").to_string(),
            };
            let now = shared.now_ms();
            let (id, new, action, first) = {
                let mut st = shared.lock();
                let (id, new) = st.register(&info, now);
                let (action, first) = st.registration_action(id, now);
                (id, new, action, first)
            };
            if new {
                shared.bus.emit(
                    EventKind::EndpointRegistered,
                    json!({"device_id": id, "fctuid": info.fctuid, "hostname": info.hostname,
                           "ip": info.ip, "mac": proto::mac_colon(&info.mac), "user": info.user,
                           "peer": peer.to_string()}),
                );
            }
            if let Some(qid) = first {
                emit_delivered(shared, id, &fctuid, qid);
            }
            // Acknowledged = durable: the reply carrying DEVICE_ID leaves only once the
            // registration is in the fsynced journal (group commit, see `store`).
            if let Err(e) = shared.persist().await {
                tracing::error!(error = %e, "writing the EMS state failed");
                return error_reply(
                    shared,
                    "STATE_WRITE_FAILED",
                    "EMS could not record the registration; try again",
                );
            }
            let mut f = base_reply(shared, "OK");
            f.put("DEVICE_ID", id);
            put_profile(shared, &mut f);
            put_action(&mut f, &action);
            f
        }
        "KA" => {
            shared
                .keepalives
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ka = KeepAlive {
                fctuid: fctuid.clone(),
                ip: frame.header_value("IP").map(str::to_string),
                ec_quarantined: flag(frame.header_value("EC_QUARANTINED")),
                release_code: frame.value("RELEASE_CODE").map(str::to_string),
            };
            let now = shared.now_ms();
            let (outcome, count) = {
                let mut st = shared.lock();
                let o = st.keepalive(&ka, now);
                (o, st.endpoints.len())
            };
            match outcome {
                KaOutcome::UnknownFctuid => {
                    let mut f = error_reply(
                        shared,
                        "NOT_REGISTERED",
                        &format!("unknown FCTUID {fctuid}: register first (X-FCCK-REGISTER)"),
                    );
                    f.put("ACTION", "REGISTER");
                    f
                }
                KaOutcome::Ok {
                    device_id,
                    action,
                    code_accepted,
                    first_delivery,
                    released_by_code,
                    reported_changed,
                } => {
                    if let Some(qid) = released_by_code {
                        shared.bus.emit(
                            EventKind::EmsUnquarantine,
                            json!({"device_id": device_id, "fctuid": fctuid, "quarantine_id": qid,
                                   "by": "access-code"}),
                        );
                    }
                    if let Some(qid) = first_delivery {
                        emit_delivered(shared, device_id, &fctuid, qid);
                    }
                    if released_by_code.is_some() || first_delivery.is_some() || reported_changed {
                        if let Err(e) = shared.persist().await {
                            tracing::error!(error = %e, "writing the EMS state failed");
                        }
                    }
                    if reported_changed || shared.sample_keepalive(count, device_id, now) {
                        shared.bus.emit(
                            EventKind::EndpointKeepalive,
                            json!({"device_id": device_id, "fctuid": fctuid,
                                   "ec_quarantined": ka.ec_quarantined, "sampled": !reported_changed}),
                        );
                    }
                    let mut f = base_reply(shared, "OK");
                    f.put("DEVICE_ID", device_id);
                    put_profile(shared, &mut f);
                    put_action(&mut f, &action);
                    if let Some(ok) = code_accepted {
                        f.put("CODE_RESULT", if ok { "ACCEPTED" } else { "REJECTED" });
                    }
                    f
                }
            }
        }
        other => error_reply(
            shared,
            "UNKNOWN_VERB",
            &format!("unsupported request X-FCCK-{other} (expected REGISTER, KA or PROBE)"),
        ),
    }
}

fn emit_delivered(shared: &Shared, device_id: u64, fctuid: &str, qid: u64) {
    shared.bus.emit(
        EventKind::EmsQuarantineDelivered,
        json!({"device_id": device_id, "fctuid": fctuid, "quarantine_id": qid}),
    );
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use proptest::prelude::*;

    use crate::proto::b64;

    proptest! {
        /// The hand-written base64 of the shared wire format agrees with the `base64` crate's
        /// `STANDARD` engine (what the format used before it moved to lab-core).
        #[test]
        fn b64_matches_the_base64_crate(data in proptest::collection::vec(any::<u8>(), 0..120),
                                        text in "[A-Za-z0-9+/=]{0,24}") {
            let std = base64::engine::general_purpose::STANDARD;
            prop_assert_eq!(b64::encode(&data), std.encode(&data));
            prop_assert_eq!(b64::decode(&text), std.decode(&text).ok());
        }
    }

    use std::sync::Arc;

    use crate::proto::Frame;

    fn register(uid: &str) -> Frame {
        let mut f = Frame::new("FCTUID", uid, "REGISTER", "SYSINFO")
            .head("IP", "10.115.2.52")
            .head("MAC", "02-50-56-11-22-33")
            .head("EC_QUARANTINED", 0);
        f.put("HOSTNAME", "PC-52").put("USER", "alice");
        f
    }

    async fn ems(
        persistent: bool,
        dir: &std::path::Path,
    ) -> (crate::Running, Arc<fortilab_core::LabCa>) {
        let ca = std::sync::Arc::new(fortilab_core::LabCa::generate("t").unwrap());
        let mut cfg = crate::EmsConfig::for_tests();
        let env = fortilab_core::DeviceEnv::with_ca(ca.clone(), 1, Some(dir));
        cfg.persistent_connections = persistent;
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let telemetry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sd = tokio_util::sync::CancellationToken::new();
        let running = crate::start(cfg, env, crate::Listeners { api, telemetry }, sd)
            .await
            .unwrap();
        (running, ca)
    }

    type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn connect(cfg: &Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> Tls {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = fortilab_core::tls::server_name("10.115.1.30").unwrap();
        tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .unwrap()
    }

    async fn roundtrip(s: &mut Tls, f: &Frame) -> Frame {
        crate::proto::write_frame(s, f).await.unwrap();
        let mut buf = Vec::new();
        crate::proto::read_frame(s, &mut buf).await.unwrap()
    }

    #[tokio::test]
    async fn persistent_connection_session_resumption_and_durable_registration() {
        let dir = tempfile::tempdir().unwrap();
        let (running, ca) = ems(true, dir.path()).await;
        let addr = running.telemetry_addr;
        let cfg = fortilab_core::tls::client_config(&ca, None).unwrap();
        let mut s = connect(&cfg, addr).await;
        let uid = "0123456789ABCDEF0123456789ABCDEF";
        let r = roundtrip(&mut s, &register(uid)).await;
        assert_eq!(r.value("STATUS"), Some("OK"));
        assert_eq!(r.value("PERCON"), Some("1"));
        // Acknowledged = durable: the registration is on disk before its reply (a kill -9 now
        // would keep it), without waiting for the background writer or a shutdown.
        let on_disk = crate::store::Store::new(dir.path()).load().unwrap();
        assert!(on_disk.endpoint_by_uid(uid).is_some());
        // Keep-alives on the same connection.
        let mut ka = Frame::new("FCTUID", uid, "KA", "KA").head("EC_QUARANTINED", 0);
        ka.put("QUARANTINE_ID", 0);
        for _ in 0..3 {
            let r = roundtrip(&mut s, &ka).await;
            assert_eq!(r.value("STATUS"), Some("OK"), "{r:?}");
            assert_eq!(r.value("ACTION"), Some("NONE"));
        }
        assert_eq!(
            running
                .shared
                .keepalives
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        // A new connection resumes the TLS session (a ticket came with the first one).
        drop(s);
        let s2 = connect(&cfg, addr).await;
        assert_eq!(
            s2.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    /// A new action is pushed on the persistent connection: a NOTIFY frame between two
    /// requests, then the keep-alive it asks for carries the action.
    #[tokio::test]
    async fn an_action_is_pushed_on_the_persistent_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (running, ca) = ems(true, dir.path()).await;
        let sh = running.shared.clone();
        let cfg = fortilab_core::tls::client_config(&ca, None).unwrap();
        let uid = "0123456789ABCDEF0123456789ABCDEF";
        assert!(!sh.push(uid), "no connection yet");
        let mut s = connect(&cfg, running.telemetry_addr).await;
        let r = roundtrip(&mut s, &register(uid)).await;
        let id: u64 = r.value("DEVICE_ID").unwrap().parse().unwrap();
        let now = sh.now_ms();
        let q = sh
            .with_rng(|rng| {
                sh.lock()
                    .quarantine(id, "admin:admin", None, "quarantined", rng, now)
            })
            .unwrap();
        assert!(q.changed);
        assert!(sh.push(uid));
        let mut buf = Vec::new();
        let push = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::proto::read_frame(&mut s, &mut buf),
        )
        .await
        .expect("a push within 5 s")
        .unwrap();
        assert_eq!(push.verb, "NOTIFY");
        assert_eq!(push.header_value("FCTEMS"), Some(sh.cfg.serial.as_str()));
        assert_eq!(push.value("REASON"), Some("ACTION"));
        let ka = Frame::new("FCTUID", uid, "KA", "KA").head("EC_QUARANTINED", 0);
        let r = roundtrip(&mut s, &ka).await;
        assert_eq!(r.value("ACTION"), Some("QUARANTINE"), "{r:?}");
        assert_eq!(sh.pushes.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The connection gone, nothing is pushed (the next keep-alive gets the action).
        drop(s);
        fortilab_core::wait::wait_for(
            "the connection forgotten",
            std::time::Duration::from_secs(5),
            || !sh.push(uid),
        )
        .await;
    }

    #[tokio::test]
    async fn without_persistent_connections_replies_omit_percon() {
        let dir = tempfile::tempdir().unwrap();
        let (running, ca) = ems(false, dir.path()).await;
        let cfg = fortilab_core::tls::client_config(&ca, None).unwrap();
        let mut s = connect(&cfg, running.telemetry_addr).await;
        let r = roundtrip(&mut s, &register("AB")).await;
        assert_eq!(r.value("STATUS"), Some("OK"));
        assert_eq!(r.value("PERCON"), None);
        // No kept connection, nothing to push on.
        assert!(!running.shared.push("AB"));
        let probe = Frame {
            header: vec![("FCTUID".into(), "AB".into())],
            verb: "PROBE".into(),
            arg: "PROBE_FEATURE_BITMAP0|1|".into(),
            ..Default::default()
        };
        let r = roundtrip(&mut s, &probe).await;
        assert!(r.value("PROBE").unwrap().ends_with("PERCON|0|"), "{r:?}");
    }

    #[test]
    fn emsver_form() {
        assert_eq!(super::emsver("6.4.3"), "6004003");
        assert_eq!(super::emsver("7.2"), "7002000");
    }
}
