//! The explicit proxy listener (the port3 side, lab 10.115.2.1:8080): absolute-form HTTP and
//! `CONNECT`. Per session: lab source (PROXY header, lab map, peer), banned-IP drop, lab DNS,
//! route + policy lookup, web filter, forwarding through the lab map with a PROXY v2 header
//! (lab source after NAT, lab destination), byte/packet counts, logs at session close.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::proxy::{self as pp, ProxyHeader};
use fortilab_core::EventKind;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dlog::{self, SessionLog, SessionTotals, WfContext};
use super::http1::{self, BodyKind, Head, Reader};
use super::webfilter::{self, Profile, Verdict};
use super::DataPlane;

/// How long a new connection may take to send its PROXY header (clients speak first).
const PROXY_WAIT: Duration = Duration::from_secs(2);

/// Serves the proxy listener until `shutdown`, then waits (5 s at most) for open sessions.
pub async fn serve(dp: Arc<DataPlane>, listener: TcpListener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    while let Some((tcp, peer)) =
        fortilab_core::http::accept_next(&listener, &shutdown, "proxy").await
    {
        dp.stats.connections.fetch_add(1, Ordering::Relaxed);
        let dp = dp.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let sup = dp.dev.supervisor.clone();
            let conn = fortilab_core::supervise::catch_panic(handle(dp, tcp, peer));
            tokio::select! {
                r = conn => if let Err(msg) = r {
                    // One connection's panic: reported; the proxy goes on.
                    sup.report_panic("proxy connection", &msg);
                },
                _ = stop.cancelled() => {}
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

/// The original destination of an intercepted connection: `SO_ORIGINAL_DST` after an
/// iptables `REDIRECT`, else the accepted socket's own address (TPROXY semantics).
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddrV4> {
    use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
    if let Ok(sa) = getsockopt(tcp, OriginalDst) {
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        return Some(SocketAddrV4::new(ip, u16::from_be(sa.sin_port)));
    }
    match tcp.local_addr().ok()? {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// Serves the transparent listener (namespaces mode: LAN traffic to TCP 80/443 redirected
/// here in the FortiGate's namespace) until `shutdown`: the same sessions, policy, web filter
/// and logs as the explicit proxy, with the destination the client itself chose.
pub async fn serve_transparent(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    while let Some((tcp, peer)) =
        fortilab_core::http::accept_next(&listener, &shutdown, "transparent proxy").await
    {
        dp.stats.connections.fetch_add(1, Ordering::Relaxed);
        let dp = dp.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let sup = dp.dev.supervisor.clone();
            let conn = fortilab_core::supervise::catch_panic(handle_transparent(dp, tcp, peer));
            tokio::select! {
                r = conn => if let Err(msg) = r {
                    sup.report_panic("proxy connection", &msg);
                },
                _ = stop.cancelled() => {}
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

async fn handle_transparent(dp: Arc<DataPlane>, tcp: TcpStream, peer: SocketAddr) {
    let Some(dst) = original_dst(&tcp) else {
        return;
    };
    let lab_src = dp.dev.lab_map.lab_source(None, peer);
    let Some(src_ip) = super::v4(lab_src.ip()) else {
        return;
    };
    let src = SocketAddrV4::new(src_ip, lab_src.port());
    if dp.dev.banned.is_banned(lab_src.ip()) {
        dp.stats.banned_drops.fetch_add(1, Ordering::Relaxed);
        dp.dev.events.emit(
            EventKind::DataplaneDrop,
            serde_json::json!({"srcip": src_ip.to_string(), "reason": "banned"}),
        );
        return;
    }
    let (r, mut w) = tcp.into_split();
    let mut client = Reader::new(r);
    let head_timeout = dp.dev.header_read_timeout();
    if dst.port() == 443 {
        // TLS, certificate inspection: the web filter rates the ClientHello's server name
        // (read, kept and forwarded as it is; TLS is not terminated), or the destination's
        // address when the client sent none.
        let sni = match tokio::time::timeout(head_timeout, client.peek_sni()).await {
            Ok(Ok(n)) => n,
            _ => None,
        };
        let host = sni.unwrap_or_else(|| dst.ip().to_string());
        tunnel(&dp, src, dst, &host, 0, false, client, w).await;
        return;
    }
    let mut sess: Option<Session> = None;
    loop {
        if dp.dev.banned.is_banned(lab_src.ip()) {
            dp.stats.banned_drops.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let head = match tokio::time::timeout(head_timeout, client.head()).await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(_)) => {
                let _ = send(
                    &mut w,
                    &http1::response(400, "Bad Request", &[], b"bad request\n", false),
                )
                .await;
                break;
            }
        };
        dp.stats.requests.fetch_add(1, Ordering::Relaxed);
        let keep = head.keep_alive(&head.line[2]);
        match request(&dp, src, &head, &mut client, &mut w, &mut sess, Some(dst)).await {
            Ok(true) if keep => continue,
            _ => break,
        }
    }
    if let Some(s) = sess.take() {
        s.close(&dp);
    }
}

struct Upstream {
    r: Reader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// One firewall session (client connection × destination).
struct Session {
    log: SessionLog,
    key: (Ipv4Addr, u16),
    accept: bool,
    logtraffic: String,
    profile: Option<Arc<Profile>>,
    https_inspect: bool,
    totals: SessionTotals,
    upstream: Option<Upstream>,
}

impl Session {
    fn open(dp: &DataPlane, src: SocketAddrV4, dst: SocketAddrV4) -> Session {
        let st = dp.state();
        let (lk, _) = dp.lookup(&st, *src.ip(), *dst.ip(), 6, dst.port(), None);
        let pol = lk.index.map(|i| st.compiled.policies[i].clone());
        let accept = pol.as_ref().is_some_and(|p| p.action == "accept");
        let nat = match &pol {
            Some(p) if accept && p.nat => lk.dstside.ip.map(|ip| (ip, dp.next_nat_port())),
            _ => None,
        };
        let profile = pol
            .as_ref()
            .filter(|p| accept && p.utm && !p.webfilter_profile.is_empty())
            .and_then(|p| st.profiles.get(&p.webfilter_profile).cloned());
        let https_inspect = pol
            .as_ref()
            .and_then(|p| st.https_inspect.get(&p.ssl_ssh_profile).copied())
            .unwrap_or(false);
        let log = SessionLog {
            sessionid: dp.next_session_id(),
            policyid: pol.as_ref().map(|p| p.policyid).unwrap_or(0),
            poluuid: pol.as_ref().map(|p| p.uuid.clone()).unwrap_or_default(),
            policyname: pol.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            src,
            dst,
            srcside: lk.srcside,
            dstside: lk.dstside,
            proto: 6,
            service: st.service_name(6, dst.port()),
            nat,
            start_ns: dp.dev.clock.now_ns(),
        };
        let logtraffic = pol
            .as_ref()
            .map(|p| p.logtraffic.clone())
            .unwrap_or_else(|| "all".into());
        let s = Session {
            log,
            key: (*dst.ip(), dst.port()),
            accept,
            logtraffic,
            profile,
            https_inspect,
            totals: SessionTotals::default(),
            upstream: None,
        };
        if !accept {
            dp.stats.denied.fetch_add(1, Ordering::Relaxed);
            dp.count_interfaces(&s.log.srcside.intf, &s.log.dstside.intf, 0, 0, false);
            dp.saw_host(*s.log.src.ip(), &s.log.srcside.intf, 0, 0);
            // Implicit denies are logged [P] (`config log setting` is not modelled); explicit
            // deny policies follow their logtraffic.
            if s.logtraffic != "disable" {
                dlog::traffic(&dp.dev, &s.log, "deny", &SessionTotals::default());
            }
        }
        s
    }

    fn close(mut self, dp: &DataPlane) {
        self.upstream = None;
        if !self.accept {
            return;
        }
        let t = &mut self.totals;
        t.sentpkt = dlog::packets(t.sentbyte);
        t.rcvdpkt = dlog::packets(t.rcvdbyte);
        dp.count_interfaces(
            &self.log.srcside.intf,
            &self.log.dstside.intf,
            t.sentbyte,
            t.rcvdbyte,
            true,
        );
        dp.saw_host(
            *self.log.src.ip(),
            &self.log.srcside.intf,
            t.sentbyte,
            t.rcvdbyte,
        );
        let log = match self.logtraffic.as_str() {
            "all" => true,
            "utm" => t.utmaction.is_some(),
            _ => false,
        };
        if log {
            dlog::traffic(&dp.dev, &self.log, "close", &self.totals);
        }
    }

    /// The PROXY header sent upstream: lab source after NAT, lab destination.
    fn proxy_header(&self) -> ProxyHeader {
        let src = match self.log.nat {
            Some((ip, port)) => SocketAddr::new(ip.into(), port),
            None => SocketAddr::V4(self.log.src),
        };
        ProxyHeader {
            src,
            dst: SocketAddr::V4(self.log.dst),
        }
    }

    async fn connect(&mut self, dp: &DataPlane) -> std::io::Result<&mut Upstream> {
        if self.upstream.is_none() {
            let real = dp.dev.lab_map.resolve(SocketAddr::V4(self.log.dst));
            let mut tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(real))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            tcp.set_nodelay(true)?;
            // On real networks (a plain identity map) the upstream sees the real source and
            // destination; a PROXY header carries them only where lab addresses are mapped.
            if !dp.dev.lab_map.is_plain_identity() {
                tcp.write_all(&pp::encode_v2(&self.proxy_header())).await?;
            }
            let (r, w) = tcp.into_split();
            self.upstream = Some(Upstream {
                r: Reader::new(r),
                w,
            });
        }
        Ok(self.upstream.as_mut().expect("just connected"))
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The FortiGate replacement page for a blocked or warned URL.
pub fn block_page(url: &str, catdesc: &str, warning: bool, hostname: &str) -> Vec<u8> {
    let (title, text) = if warning {
        ("Web Filter Warning", "You are about to access a web page that belongs to a category with warnings enabled in your Internet usage policy. (The lab does not model the Proceed button.)")
    } else {
        ("Web Page Blocked!", "You have tried to access a web page which is in violation of your Internet usage policy.")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n<h1>FortiGuard Web Filtering - {title}</h1>\n<p>{text}</p>\n<p><b>URL:</b> {}</p>\n<p><b>Category:</b> {}</p>\n<p>To have the rating of this web page re-evaluated please contact your administrator.</p>\n<hr><p>Powered by FortiGuard - {}</p>\n</body></html>\n",
        html_escape(url),
        html_escape(catdesc),
        html_escape(hostname),
    )
    .into_bytes()
}

fn deny_page(url: &str, policyid: u64) -> Vec<u8> {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Access Denied</title></head><body>\n<h1>Access Denied</h1>\n<p>The connection to {} was denied by firewall policy {policyid}.</p>\n</body></html>\n",
        html_escape(url)
    )
    .into_bytes()
}

/// The FortiGate's 403 answer around a deny or block page (`X-Fortilab-Blocked: fortigate`).
fn forbidden(page: &[u8], keep_alive: bool) -> Vec<u8> {
    http1::response(
        403,
        "Forbidden",
        &[
            ("Content-Type", "text/html; charset=utf-8"),
            ("X-Fortilab-Blocked", "fortigate"),
        ],
        page,
        keep_alive,
    )
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> bool {
    w.write_all(bytes).await.is_ok()
}

async fn handle(dp: Arc<DataPlane>, mut tcp: TcpStream, peer: SocketAddr) {
    let hdr = pp::read_header(&mut tcp, PROXY_WAIT).await.unwrap_or(None);
    let lab_src = dp.dev.lab_map.lab_source(hdr.as_ref(), peer);
    let Some(src_ip) = super::v4(lab_src.ip()) else {
        return;
    };
    let src = SocketAddrV4::new(src_ip, lab_src.port());
    let (r, mut w) = tcp.into_split();
    let mut client = Reader::new(r);
    let mut sess: Option<Session> = None;
    let head_timeout = dp.dev.header_read_timeout();
    loop {
        if dp.dev.banned.is_banned(lab_src.ip()) {
            dp.stats.banned_drops.fetch_add(1, Ordering::Relaxed);
            dp.dev.events.emit(
                EventKind::DataplaneDrop,
                serde_json::json!({"srcip": src_ip.to_string(), "reason": "banned"}),
            );
            break;
        }
        let head = match tokio::time::timeout(head_timeout, client.head()).await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => break,
            Err(_) => {
                // No complete request head in time: 408 to a client that sent part of one, a
                // silent close of an idle keep-alive connection.
                if !client.buf.is_empty() {
                    let _ = send(
                        &mut w,
                        &http1::response(408, "Request Timeout", &[], b"", false),
                    )
                    .await;
                }
                break;
            }
            Ok(Err(_)) => {
                let _ = send(
                    &mut w,
                    &http1::response(400, "Bad Request", &[], b"bad request\n", false),
                )
                .await;
                break;
            }
        };
        dp.stats.requests.fetch_add(1, Ordering::Relaxed);
        if head.line[0].eq_ignore_ascii_case("CONNECT") {
            if let Some(s) = sess.take() {
                s.close(&dp);
            }
            connect(&dp, src, head, client, w).await;
            return;
        }
        let keep = head.keep_alive(&head.line[2]);
        match request(&dp, src, &head, &mut client, &mut w, &mut sess, None).await {
            Ok(true) if keep => continue,
            _ => break,
        }
    }
    if let Some(s) = sess.take() {
        s.close(&dp);
    }
}

/// Handles one plain HTTP request. `Ok(true)`: the client connection may continue.
async fn request(
    dp: &DataPlane,
    src: SocketAddrV4,
    head: &Head,
    client: &mut Reader<OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    sess: &mut Option<Session>,
    original_dst: Option<SocketAddrV4>,
) -> std::io::Result<bool> {
    let keep = head.keep_alive(&head.line[2]);
    let target = match original_dst {
        // Intercepted: the client sent an origin-form request to the address it resolved
        // itself; the host name (for the web filter and logs) is its Host header.
        Some(d) => http1::target(head)
            .map(|(h, _, path)| (h, d.port(), path))
            .or_else(|| Some((d.ip().to_string(), d.port(), head.line[1].clone()))),
        None => http1::target(head),
    };
    let Some((host, port, path)) = target else {
        w.write_all(&http1::response(
            400,
            "Bad Request",
            &[],
            b"absolute-form request target expected\n",
            keep,
        ))
        .await?;
        return Ok(keep);
    };
    let full_url = if port == 80 {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}:{port}{path}")
    };
    let resolved = match original_dst {
        Some(d) => Ok(Some(*d.ip())),
        None => dp.internet.resolve(&host).await,
    };
    let dst_ip = match resolved {
        Ok(Some(ip)) => ip,
        Ok(None) | Err(_) => {
            let body = format!(
                "The host {} could not be resolved (lab DNS).\n",
                html_escape(&host)
            );
            w.write_all(&http1::response(
                502,
                "Bad Gateway",
                &[("Content-Type", "text/plain")],
                body.as_bytes(),
                keep,
            ))
            .await?;
            return Ok(keep);
        }
    };
    let dst = SocketAddrV4::new(dst_ip, port);
    if sess.as_ref().is_some_and(|s| s.key != (dst_ip, port)) {
        if let Some(s) = sess.take() {
            s.close(dp);
        }
    }
    if sess.is_none() {
        *sess = Some(Session::open(dp, src, dst));
    }
    let s = sess.as_mut().expect("session");
    let req_bytes = head.len as u64;
    if !s.accept {
        // Drain a request body, then answer the denial.
        let mut sink = tokio::io::sink();
        client.copy_body(head.body(), &mut sink).await?;
        let body = deny_page(&full_url, s.log.policyid);
        w.write_all(&forbidden(&body, keep)).await?;
        return Ok(keep);
    }
    if let Some(profile) = s.profile.clone() {
        let rating = dp.internet.rating(&host).await;
        let d = webfilter::decide(&profile, &host, &path, rating.cat);
        let urlfilter_idx = if d.logs.iter().any(|l| l.eventtype == "urlfilter") {
            profile
                .urlfilter
                .iter()
                .find(|e| e.pattern.matches(&host, &path))
                .map(|e| e.id)
        } else {
            None
        };
        for l in &d.logs {
            dlog::webfilter(
                &dp.dev,
                &s.log,
                l,
                &WfContext {
                    profile: &profile.name,
                    hostname: &host,
                    path: &path,
                    full_url: &full_url,
                    method: &head.line[0],
                    cat: rating.cat,
                    catdesc: &rating.catdesc,
                    sentbyte: req_bytes,
                    urlfilter_idx: if l.eventtype == "urlfilter" {
                        urlfilter_idx
                    } else {
                        None
                    },
                },
            );
            s.totals.countweb += 1;
            if l.threat {
                s.totals.threat = true;
            }
        }
        match d.verdict {
            Verdict::Pass => {
                if !d.logs.is_empty() && s.totals.utmaction.is_none() {
                    s.totals.utmaction = Some("allow");
                }
            }
            Verdict::Block | Verdict::Warn => {
                dp.stats.blocked.fetch_add(1, Ordering::Relaxed);
                s.totals.utmaction = Some("block");
                s.totals.sentbyte += req_bytes;
                let mut sink = tokio::io::sink();
                client.copy_body(head.body(), &mut sink).await?;
                let body = block_page(
                    &full_url,
                    &rating.catdesc,
                    d.verdict == Verdict::Warn,
                    &dp.dev.hostname(),
                );
                let page = http1::response(
                    403,
                    "Forbidden",
                    &[
                        ("Content-Type", "text/html; charset=utf-8"),
                        ("X-Fortilab-Blocked", "fortigate"),
                        ("Cache-Control", "no-cache"),
                    ],
                    &body,
                    keep,
                );
                w.write_all(&page).await?;
                return Ok(keep);
            }
        }
    }
    // Forward.
    let up_req = http1::upstream_request(head, &host, port, &path);
    let up = match s.connect(dp).await {
        Ok(u) => u,
        Err(e) => {
            dp.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, %dst, "upstream connect failed");
            let body = format!("Could not connect to {dst}: {e}\n");
            w.write_all(&http1::response(
                502,
                "Bad Gateway",
                &[("Content-Type", "text/plain")],
                body.as_bytes(),
                keep,
            ))
            .await?;
            return Ok(keep);
        }
    };
    let result: std::io::Result<(u64, u64, bool)> = async {
        up.w.write_all(&up_req).await?;
        // An origin may answer before it has read the whole body (a 413, a page that ignores
        // it) and close: its answer still goes to the client, on a connection that then
        // closes (the rest of the client's body was not read).
        let (body_sent, body_whole) = match client.copy_body(head.body(), &mut up.w).await {
            Ok(n) => (n, true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                (0, false)
            }
            Err(e) => return Err(e),
        };
        let resp = up.r.head().await?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed")
        })?;
        let status: u16 = resp.line[1].parse().unwrap_or(0);
        let no_body = head.line[0].eq_ignore_ascii_case("HEAD")
            || status / 100 == 1
            || status == 204
            || status == 304;
        let mut kind = if no_body { BodyKind::None } else { resp.body() };
        if kind == BodyKind::None && !no_body && resp.header("content-length").is_none() {
            kind = BodyKind::UntilClose;
        }
        let up_keep = resp.keep_alive(&resp.line[0]) && kind != BodyKind::UntilClose;
        // Relay the head as received (re-serialized).
        let mut out = format!("{} {} {}\r\n", resp.line[0], resp.line[1], resp.line[2]);
        for (k, v) in &resp.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        // A body already read with the head goes out in the same write as the head: one
        // segment to the client instead of two (half the client wake-ups on small pages).
        let body = match kind {
            BodyKind::Length(n) if (up.r.buf.len() as u64) >= n => {
                let n = n as usize;
                let mut one = Vec::with_capacity(out.len() + n);
                one.extend_from_slice(out.as_bytes());
                one.extend_from_slice(&up.r.buf[..n]);
                bytes::Buf::advance(&mut up.r.buf, n);
                w.write_all(&one).await?;
                n as u64
            }
            _ => {
                w.write_all(out.as_bytes()).await?;
                up.r.copy_body(kind, w).await?
            }
        };
        Ok((
            body_sent + up_req.len() as u64,
            resp.len as u64 + body,
            up_keep && body_whole,
        ))
    }
    .await;
    match result {
        Ok((sent, rcvd, up_keep)) => {
            s.totals.sentbyte += sent;
            s.totals.rcvdbyte += rcvd;
            if !up_keep {
                s.upstream = None;
                // A close-delimited response ends the client connection too.
                return Ok(false);
            }
            Ok(true)
        }
        Err(e) => {
            dp.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            s.upstream = None;
            Err(e)
        }
    }
}

/// `CONNECT host:port`: policy, web filter on the CONNECT host with certificate inspection
/// (URL "/"), then a byte tunnel.
async fn connect(
    dp: &DataPlane,
    src: SocketAddrV4,
    head: Head,
    client: Reader<OwnedReadHalf>,
    mut w: OwnedWriteHalf,
) {
    let Some((host, port)) = http1::split_host_port(&head.line[1], 443) else {
        let _ = send(
            &mut w,
            &http1::response(400, "Bad Request", &[], b"bad CONNECT target\n", false),
        )
        .await;
        return;
    };
    let dst_ip = match dp.internet.resolve(&host).await {
        Ok(Some(ip)) => ip,
        _ => {
            let _ = send(
                &mut w,
                &http1::response(502, "Bad Gateway", &[], b"lab DNS: no such host\n", false),
            )
            .await;
            return;
        }
    };
    let dst = SocketAddrV4::new(dst_ip, port);
    tunnel(dp, src, dst, &host, head.len as u64, true, client, w).await;
}

/// A byte tunnel to `dst` after the policy and the certificate-inspection web filter on
/// `host`: `CONNECT` (`reply`: the client gets `200 Connection established`, refusals are
/// HTTP pages) or an intercepted TLS connection (refusals close the connection: the client
/// speaks TLS).
async fn tunnel(
    dp: &DataPlane,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    host: &str,
    head_len: u64,
    reply: bool,
    mut client: Reader<OwnedReadHalf>,
    mut w: OwnedWriteHalf,
) {
    let host = host.to_string();
    let mut s = Session::open(dp, src, dst);
    let full_url = format!("https://{host}/");
    if !s.accept {
        if !reply {
            return;
        }
        let body = deny_page(&full_url, s.log.policyid);
        let _ = send(&mut w, &forbidden(&body, false)).await;
        return;
    }
    if let Some(profile) = s.profile.clone().filter(|_| s.https_inspect) {
        let rating = dp.internet.rating(&host).await;
        let d = webfilter::decide(&profile, &host, "/", rating.cat);
        for l in &d.logs {
            dlog::webfilter(
                &dp.dev,
                &s.log,
                l,
                &WfContext {
                    profile: &profile.name,
                    hostname: &host,
                    path: "/",
                    full_url: &full_url,
                    method: "CONNECT",
                    cat: rating.cat,
                    catdesc: &rating.catdesc,
                    sentbyte: head_len,
                    urlfilter_idx: None,
                },
            );
            s.totals.countweb += 1;
            s.totals.threat |= l.threat;
        }
        if d.verdict != Verdict::Pass {
            dp.stats.blocked.fetch_add(1, Ordering::Relaxed);
            s.totals.utmaction = Some("block");
            if reply {
                let body = block_page(
                    &full_url,
                    &rating.catdesc,
                    d.verdict == Verdict::Warn,
                    &dp.dev.hostname(),
                );
                let _ = send(&mut w, &forbidden(&body, false)).await;
            } else if let Ok(tcp) = client.r.reunite(w) {
                // Intercepted TLS under certificate inspection: no block page can be shown
                // without a certificate the client would refuse; the connection is reset.
                let _ = tcp.set_zero_linger();
            }
            s.close(dp);
            return;
        }
        if !d.logs.is_empty() {
            s.totals.utmaction = Some("allow");
        }
    }
    if s.connect(dp).await.is_err() {
        dp.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        if reply {
            let _ = send(
                &mut w,
                &http1::response(502, "Bad Gateway", &[], b"could not connect\n", false),
            )
            .await;
        }
        s.close(dp);
        return;
    }
    if reply && !send(&mut w, b"HTTP/1.1 200 Connection established\r\n\r\n").await {
        s.close(dp);
        return;
    }
    let Upstream {
        r: mut ur,
        w: mut uw,
    } = s.upstream.take().expect("connected");
    let c2u = async {
        let n = client.copy_to_eof(&mut uw).await.unwrap_or(0);
        let _ = uw.shutdown().await;
        n
    };
    let u2c = async {
        let n = ur.copy_to_eof(&mut w).await.unwrap_or(0);
        let _ = w.shutdown().await;
        n
    };
    let (sent, rcvd) = tokio::join!(c2u, u2c);
    s.totals.sentbyte += sent + head_len;
    s.totals.rcvdbyte += rcvd;
    s.close(dp);
}
