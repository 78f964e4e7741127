//! End-to-end test (issue 15): hostile input sent to the real binaries over their real
//! listeners — syslog UDP and TCP, the SSH consoles, FortiOS REST, FortiAnalyzer JSON-RPC, EMS
//! REST and telemetry, the log channel, PROXY headers on the FortiGate's proxy, and raw HTTP on
//! every HTTP(S) listener — then a normal request on every listener proves each process and
//! listener is still there, and every device's `/_lab/tasks` shows that nothing panicked.
//!
//! The inputs are the ones of issue 15 (an RFC 3164 datagram with a multi-byte character
//! around header byte 16, `€"x"` then TAB on the console, `?filter=€`, `tz="x€"`) and their
//! relatives built from `fortilab_core::text::HOSTILE_PIECES`.

use crate::support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::text::HOSTILE_PIECES;
use fortilab_core::tls::LabCa;
use serde_json::{json, Value};
use support::{bin, require_program, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IO: Duration = Duration::from_secs(10);

fn sock(v: &Value) -> SocketAddr {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("address expected, got {v}"));
    let rest = s.split("://").nth(1).unwrap_or(s);
    rest.split('/').next().unwrap().parse().unwrap()
}

fn path_of(v: &Value) -> String {
    let s = v.as_str().unwrap();
    let rest = s.split("://").nth(1).unwrap_or(s);
    match rest.find('/') {
        Some(i) => rest[i..].trim_end_matches('/').to_string(),
        None => String::new(),
    }
}

/// Hostile strings: each piece alone, with another piece, and before and after one of
/// `around` (the delimiters of the format at hand).
fn hostile_variants(around: &[&str]) -> Vec<String> {
    let n = HOSTILE_PIECES.len();
    HOSTILE_PIECES
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            let b = HOSTILE_PIECES[(i * 7 + 3) % n];
            let w = around.get(i % around.len().max(1)).copied().unwrap_or("");
            [
                a.to_string(),
                format!("{a}{b}"),
                format!("{w}{a}"),
                format!("{a}{w}"),
            ]
        })
        .collect()
}

/// Reads an answer until the peer closes, goes quiet for 100 ms after answering, or `wait`
/// passes.
async fn read_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let per = if out.is_empty() {
            deadline - now
        } else {
            (deadline - now).min(Duration::from_millis(100))
        };
        match tokio::time::timeout(per, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

/// Writes `bytes` over TLS (or plain TCP) and reads the answer ([`read_answer`]); `None`
/// when the connection could not be made.
async fn raw_async(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let tcp = tokio::time::timeout(IO, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    match tls {
        Some(cfg) => {
            let name = fortilab_core::tls::server_name("127.0.0.1").unwrap();
            let mut s =
                tokio::time::timeout(IO, tokio_rustls::TlsConnector::from(cfg).connect(name, tcp))
                    .await
                    .ok()?
                    .ok()?;
            let _ = s.write_all(bytes).await;
            let _ = s.flush().await;
            Some(read_answer(&mut s, wait).await)
        }
        None => {
            let mut s = tcp;
            let _ = s.write_all(bytes).await;
            Some(read_answer(&mut s, wait).await)
        }
    }
}

struct Lab {
    child: std::process::Child,
    r: Value,
    ca: LabCa,
    token: String,
    rt: tokio::runtime::Runtime,
}

impl Lab {
    fn start(dir: &Path) -> Lab {
        let ready = dir.join("ready.json");
        let data = dir.join("data");
        let child = Command::new(bin("fortilab"))
            .args(["up", "--seed", "15", "--json", "--ready-file"])
            .arg(&ready)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = wait_for("fortilab up ready file", Duration::from_secs(90), || {
            std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        });
        let ca = LabCa::load(&data.join("ca/ca.pem"), &data.join("ca/ca.key")).unwrap();
        let token = r["lab_token"].as_str().unwrap().to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Lab {
            child,
            r,
            ca,
            token,
            rt,
        }
    }

    fn tls(&self, alpn: Option<&[u8]>, client_cn: Option<&str>) -> Arc<rustls::ClientConfig> {
        let id = client_cn.map(|cn| self.ca.issue(cn, &[]).unwrap());
        let base = fortilab_core::tls::client_config(&self.ca, id.as_ref()).unwrap();
        let mut c = (*base).clone();
        if let Some(a) = alpn {
            c.alpn_protocols = vec![a.to_vec()];
        }
        Arc::new(c)
    }

    /// Writes `bytes` over TLS (or plain TCP) and reads the answer until the peer closes, goes
    /// quiet for 100 ms after answering, or `IO` passes; `None` when the connection could not
    /// be made.
    fn raw(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        self.raw_within(addr, tls, bytes, IO)
    }

    /// Sends each of `inputs` on its own connection, 16 at a time, reading whatever comes back
    /// for at most 2 s each: input whose answer does not matter.
    fn fire_all(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        inputs: Vec<Vec<u8>>,
    ) {
        self.rt.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(16));
            let mut set = tokio::task::JoinSet::new();
            for b in inputs {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let tls = tls.clone();
                set.spawn(async move {
                    let _ = raw_async(addr, tls, &b, Duration::from_secs(2)).await;
                    drop(permit);
                });
            }
            while set.join_next().await.is_some() {}
        });
    }

    fn raw_within(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        bytes: &[u8],
        wait: Duration,
    ) -> Option<Vec<u8>> {
        self.rt.block_on(raw_async(addr, tls, bytes, wait))
    }

    /// An HTTP/1.1 request (`Connection: close`) with raw `target` and `body`; the status.
    fn http(
        &self,
        addr: SocketAddr,
        tls: bool,
        method: &str,
        target: &[u8],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        let mut req = Vec::new();
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").as_bytes(),
        );
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
        let cfg = tls.then(|| self.tls(None, None));
        let out = self.raw(addr, cfg, &req).unwrap_or_default();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn lab_get(&self, base: &Value, path: &str) -> (u16, String) {
        let tls = base.as_str().unwrap().starts_with("https");
        let target = format!("{}{path}", path_of(base));
        self.http(
            sock(base),
            tls,
            "GET",
            target.as_bytes(),
            &[("X-Fortilab-Token", self.token.clone())],
            b"",
        )
    }

    fn lab_json(&self, base: &Value, path: &str) -> Value {
        let (status, body) = self.lab_get(base, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        support::unsafe_free_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// An interactive `ssh -tt` session fed `input`; the transcript. Panics when the session does
/// not finish (a console task that panicked used to leave it hanging).
fn ssh(
    dir: &Path,
    addr: SocketAddr,
    user: &str,
    password: &str,
    input: &[u8],
    tag: &str,
) -> String {
    let askpass = dir.join(format!("askpass-{tag}.sh"));
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut child = Command::new(require_program("ssh", "openssh-client"))
        .args(["-F", "/dev/null", "-p", &addr.port().to_string()])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join(format!("known_hosts-{tag}")).display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "ConnectTimeout=10",
            "-tt",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Typed in chunks, as a person (or paste) would, so TAB and `?` act on what is before them.
    std::thread::spawn(move || {
        for chunk in input.chunks(64) {
            if stdin.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => String::from_utf8_lossy(&out.unwrap().stdout).into_owned(),
        Err(_) => {
            support::unsafe_free_kill(pid, "KILL");
            panic!("the {tag} console session hung");
        }
    }
}

/// The answer `lab-core::http` gives when a handler panicked (FortiOS itself answers some
/// errors with HTTP 500, so the status alone does not tell).
fn panicked(status: u16, body: &str) -> bool {
    status == 500 && body.contains("\"internal error\"")
}

fn faz_stats(lab: &Lab) -> Value {
    lab.lab_json(&lab.r["fortianalyzer"]["api"], "/_lab/stats")
}

fn syslog_messages(lab: &Lab) -> u64 {
    faz_stats(lab)["counters"]["syslog_messages"]
        .as_u64()
        .unwrap()
}

#[test]
fn hostile_input_leaves_every_process_and_listener_alive() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path());
    let r = lab.r.clone();
    let fgt = &r["fortigate"];
    let faz = &r["fortianalyzer"];
    let ems = &r["ems"];
    let fgt_api = sock(&fgt["api"]);
    let faz_api = sock(&faz["api"]);
    let ems_api = sock(&ems["api"]);
    let syslog = sock(&faz["syslog"]);
    let fgt_bearer = format!("Bearer {}", fgt["api_token"].as_str().unwrap());
    let faz_bearer = format!("Bearer {}", faz["api_token"].as_str().unwrap());

    // ---- syslog UDP and TCP -------------------------------------------------------------
    let mut lines: Vec<Vec<u8>> = Vec::new();
    // Issue 15: a multi-byte character around RFC 3164 header byte 16, at every offset.
    for stamp in ["Mar  4 10:11:22 ", "Dec 31 23:59:59 "] {
        for at in 10..=18 {
            for ch in ["€", "é", "𝄞"] {
                let mut s = stamp.to_string();
                let cut = at.min(s.len());
                s.insert_str(cut, ch);
                lines
                    .push(format!("<13>{s}host tag: devid=\"FGT1\" type=\"traffic\"").into_bytes());
            }
        }
    }
    for h in hostile_variants(&[
        "<13>",
        "<189>1 ",
        "Mar  4 10:11:2",
        "tz=\"x",
        "devid=",
        "[ex@1 a=\"",
        "]",
    ]) {
        lines.push(format!("<189>Mar  4 10:11:22 fgt {h} devid=\"FGVMHOSTILE\" tz=\"x{h}\" date=2021-03-04 time=10:00:00").into_bytes());
        lines.push(
            format!("<189>1 2021-03-04T10:11:22Z {h} app - - [a b=\"{h}\"] {h}").into_bytes(),
        );
    }
    lines.push(vec![0xff, 0xfe, 0x80, b'<', b'1', b'>']);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in &lines {
        udp.send_to(l, syslog).unwrap();
    }
    let mut tcp_bytes = Vec::new();
    for l in &lines {
        // Octet counting and newline framing, alternately, including counts that end inside a
        // multi-byte character.
        if tcp_bytes.len() % 2 == 0 {
            tcp_bytes.extend_from_slice(format!("{} ", l.len()).as_bytes());
            tcp_bytes.extend_from_slice(l);
        } else {
            tcp_bytes.extend_from_slice(l);
            tcp_bytes.push(b'\n');
        }
    }
    tcp_bytes.extend_from_slice("4 €".as_bytes());
    tcp_bytes.extend_from_slice(b"\n99999999 x\n");
    let mut t = TcpStream::connect(syslog).unwrap();
    t.set_write_timeout(Some(IO)).unwrap();
    let _ = t.write_all(&tcp_bytes);
    drop(t);

    // ---- FortiOS REST: query strings and bodies ------------------------------------------
    let auth = vec![("Authorization", fgt_bearer.clone())];
    let mut targets: Vec<Vec<u8>> = Vec::new();
    for q in [
        "filter=€",
        "filter=%E2%82%AC",
        "filter=name==€",
        "filter=€==x",
        "sort=€",
        "format=€|name",
        "start=€&count=€",
        "filter=x€=@",
        "skip=€",
        "datasource=€",
        "vdom=€",
    ] {
        targets.push(format!("/api/v2/cmdb/firewall/address?{q}").into_bytes());
        targets.push(format!("/api/v2/monitor/system/status?{q}").into_bytes());
        targets.push(format!("/api/v2/log/memory/event/system?{q}").into_bytes());
    }
    for h in hostile_variants(&["==", "=@", ",", "<", ">="]) {
        let enc: String = form_urlencoded::byte_serialize(h.as_bytes()).collect();
        targets
            .push(format!("/api/v2/cmdb/firewall/policy?filter=name{enc}&sort={enc}").into_bytes());
    }
    targets.push(b"/api/v2/cmdb/firewall/address/\xe2\x82".to_vec());
    targets.push("/api/v2/cmdb/firewall/address/€\"x\"".as_bytes().to_vec());
    for t in &targets {
        let (status, body) = lab.http(fgt_api, true, "GET", t, &auth, b"");
        assert!(
            !panicked(status, &body),
            "FortiGate GET {}: {status} {body}",
            String::from_utf8_lossy(t)
        );
    }
    for body in [
        "{\"name\": \"€\\\"x\\\"\\t\", \"subnet\": \"10.0.0.1 255.255.255.255\"}",
        "{\"name\": \"x€\", \"comment\": \"\\u0000\\u001b[2J\"}",
        "{\"name\": ",
        "€",
        "[1,2",
        "{\"name\": \"a\", \"subnet\": \"€\"}",
    ] {
        for (m, p) in [
            ("POST", "/api/v2/cmdb/firewall/address"),
            ("PUT", "/api/v2/cmdb/firewall/address/%E2%82%AC"),
            ("POST", "/api/v2/monitor/user/banned/add_users"),
        ] {
            let (status, resp) = lab.http(fgt_api, true, m, p.as_bytes(), &auth, body.as_bytes());
            assert!(
                !panicked(status, &resp),
                "FortiGate {m} {p} {body}: {status} {resp}"
            );
        }
    }

    // ---- FortiAnalyzer JSON-RPC --------------------------------------------------------
    let faz_auth = vec![
        ("Authorization", faz_bearer.clone()),
        ("Content-Type", "application/json".to_string()),
    ];
    let mut bodies: Vec<String> = vec![
        "{".into(), "€".into(), "[]".into(), "{\"id\": 1, \"method\": \"€\"}".into(),
        json!({"id": 1, "method": "set", "params": [{"url": "/cli/global/system/global", "data": {"timezone": "x€"}}]}).to_string(),
    ];
    for h in hostile_variants(&["/", "==", " ", "*"])
        .into_iter()
        .step_by(3)
    {
        bodies.push(json!({"id": 1, "method": "get", "params": [{"url": format!("/logview/adom/root/logsearch/{h}"), "filter": h, "limit": 1}]}).to_string());
        bodies.push(json!({"id": 2, "method": "add", "params": [{"url": "/logview/adom/root/logsearch", "apiver": 3, "logtype": "traffic", "filter": format!("srcip=={h}"), "time-range": {"start": h, "end": "2021-03-04 10:00:00"}}]}).to_string());
        bodies.push(json!({"id": 3, "method": "get", "params": [{"url": "/ioc/adom/root/compromised-hosts", "filter": [["ip", "==", h]]}]}).to_string());
    }
    for b in &bodies {
        let (status, resp) = lab.http(faz_api, true, "POST", b"/jsonrpc", &faz_auth, b.as_bytes());
        assert!(
            !panicked(status, &resp),
            "FortiAnalyzer {b}: {status} {resp}"
        );
    }

    // ---- EMS REST and telemetry ---------------------------------------------------------
    for h in hostile_variants(&["=", "&", "[]"]).into_iter().step_by(3) {
        let enc: String = form_urlencoded::byte_serialize(h.as_bytes()).collect();
        for (m, t) in [
            (
                "GET",
                format!("/api/v1/endpoints/index?name={enc}&offset={enc}"),
            ),
            ("POST", "/api/v1/auth/signin".to_string()),
            ("GET", format!("/api/v1/endpoints/{enc}/get")),
        ] {
            let body = json!({"name": h, "password": h}).to_string();
            let (status, resp) = lab.http(
                ems_api,
                true,
                m,
                t.as_bytes(),
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            );
            assert!(!panicked(status, &resp), "EMS {m} {t}: {status} {resp}");
        }
    }
    let telemetry = sock(&ems["telemetry"]);
    let tel_tls = lab.tls(None, None);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for h in hostile_variants(&["\r\n", "|", "=", "SIZE="])
        .into_iter()
        .step_by(4)
    {
        let mut f =
            fortilab_core::telemetry::Frame::new("FCTUID", "A1B2C3D4E5", "REGISTER", "SYSINFO")
                .head("IP", "10.115.2.99")
                .head("MAC", "02-50-56-11-22-99")
                .head("EC_QUARANTINED", 0);
        f.put("HOSTNAME", format!("PC-{h}<b>\x1b[31m"))
            .put("USER", &h);
        frames.push(f.encode());
        frames.push(
            format!(
                "MSG_HEADER: FCTUID={h}\r\nSIZE={}\r\n\r\nX-FCCK-{h}: {h}||\r\n",
                h.len()
            )
            .into_bytes(),
        );
    }
    frames.push(b"MSG_HEADER: FCTUID=X\r\nSIZE=99999999999999999999\r\n\r\n".to_vec());
    lab.fire_all(telemetry, Some(tel_tls.clone()), frames);

    // ---- log channel -------------------------------------------------------------------
    let logchan = sock(&faz["log_channel"]);
    let lc_tls = lab.tls(Some(b"fortilab-logchan/1"), Some("FGVM01TMHOSTILE1"));
    let frame = |ty: u8, payload: &[u8]| -> Vec<u8> {
        let mut v = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(ty);
        v.extend_from_slice(payload);
        v
    };
    let hello = json!({"serial": "FGVM01TMHOSTILE1", "hostname": "H€\"x\"\t", "platform": "€", "version": "x€", "device_type": "fortigate", "vdom": "€"}).to_string();
    let mut batch = Vec::new();
    batch.extend_from_slice(&u64::MAX.to_be_bytes());
    batch.extend_from_slice(&3u32.to_be_bytes());
    for l in [
        "tz=\"x€\" devid=\"FGVM01TMHOSTILE1\"",
        "€",
        "date=2021-03-04 time=10:00:00 tz=\"+€\"",
    ] {
        batch.extend_from_slice(&(l.len() as u32).to_be_bytes());
        batch.extend_from_slice(l.as_bytes());
    }
    let lc_inputs = vec![
        frame(1, hello.as_bytes()),
        [frame(1, hello.as_bytes()), frame(3, &batch)].concat(),
        frame(1, "{\"serial\": \"€".as_bytes()),
        frame(3, b"\x00"),
        u32::MAX.to_be_bytes().to_vec(),
        vec![0, 0, 0, 0],
        frame(42, "€".as_bytes()),
        [
            frame(1, hello.as_bytes()),
            frame(6, b"{\"id\": \"\xe2\x82\"}"),
        ]
        .concat(),
    ];
    lab.fire_all(logchan, Some(lc_tls.clone()), lc_inputs);

    // ---- PROXY headers on the FortiGate's proxy ----------------------------------------
    let proxy = sock(&fgt["proxy"]);
    let mut heads: Vec<Vec<u8>> = Vec::new();
    for h in hostile_variants(&["PROXY TCP4 ", " ", "\r\n"])
        .into_iter()
        .step_by(2)
    {
        heads.push(format!("PROXY TCP4 10.115.2.52 {h} 5000 80\r\nGET http://www.example.com/ HTTP/1.1\r\n\r\n").into_bytes());
        heads.push(format!("PROXY {h}\r\n").into_bytes());
    }
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    v2.extend_from_slice(&[0u8; 12]);
    heads.push(v2);
    heads.push(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\x0a\x73".to_vec());
    // Well-formed PROXY headers in front of hostile HTTP requests (the proxy's own parser).
    for h in hostile_variants(&[":", "/", "[", "]", "@"])
        .into_iter()
        .step_by(3)
    {
        heads.push(format!("PROXY TCP4 10.115.2.52 10.115.2.1 40000 8080\r\nGET http://{h}/ HTTP/1.1\r\nHost: {h}:{h}\r\n\r\n").into_bytes());
        heads.push(format!("PROXY TCP4 10.115.2.52 10.115.2.1 40000 8080\r\nCONNECT {h}:443 HTTP/1.1\r\nHost: {h}\r\n\r\n").into_bytes());
        heads.push(format!("PROXY TCP4 10.115.2.52 10.115.2.1 40000 8080\r\nGET /{h} HTTP/1.1\r\nHost: [{h}]:80\r\nContent-Length: {h}\r\nTransfer-Encoding: {h}\r\n\r\n").into_bytes());
    }
    lab.fire_all(proxy, None, heads);

    // ---- raw HTTP on every HTTP(S) listener -------------------------------------------
    let endpoint_control = r["endpoints"][0]["control"].clone();
    // The endpoint's browse action with hostile URLs.
    let fetch_path = format!("{}/_lab/fetch", path_of(&endpoint_control));
    for h in hostile_variants(&["http://", ":", "/"])
        .into_iter()
        .step_by(5)
    {
        for url in [
            format!("http://{h}/"),
            format!("http://x:{h}/"),
            format!("https://[{h}]/"),
            h.clone(),
        ] {
            let (status, body) = lab.http(
                sock(&endpoint_control),
                true,
                "POST",
                fetch_path.as_bytes(),
                &[
                    ("X-Fortilab-Token", lab.token.clone()),
                    ("Content-Type", "application/json".into()),
                ],
                json!({"url": url}).to_string().as_bytes(),
            );
            assert!(!panicked(status, &body), "fetch {url:?}: {status} {body}");
        }
    }
    let internet_control = r["internet"]["control"].clone();
    let dashboard = r["dashboard"].clone();
    let http_listeners: Vec<(SocketAddr, bool)> = vec![
        (fgt_api, true),
        (faz_api, true),
        (ems_api, true),
        (sock(&endpoint_control), true),
        (sock(&internet_control), true),
        (sock(&dashboard), false),
    ];
    for (addr, tls) in &http_listeners {
        for target in [
            &b"/\xe2\x82"[..],
            "/_lab/€".as_bytes(),
            b"/%",
            b"*",
            "/?€=€&filter=€".as_bytes(),
        ] {
            let (status, body) = lab.http(
                *addr,
                *tls,
                "GET",
                target,
                &[
                    ("X-Fortilab-Token", format!("{}€", lab.token)),
                    ("Cookie", "€=€".into()),
                ],
                b"",
            );
            assert!(
                !panicked(status, &body),
                "{addr} GET {}: {body}",
                String::from_utf8_lossy(target)
            );
        }
        let cfg = tls.then(|| lab.tls(None, None));
        let garbage: Vec<Vec<u8>> = [
            &b"\xe2\x82 / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\nHost: \xff\r\n\r\n",
            "€\"x\"\t\r\n\r\n".as_bytes(),
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ]
        .iter()
        .map(|g| g.to_vec())
        .collect();
        lab.fire_all(*addr, cfg, garbage);
    }

    // ---- SSH consoles ------------------------------------------------------------------
    let mut typed = Vec::new();
    for l in [
        "€\"x\"\t",
        "€\"x\" \t",
        "set €\"x\"\t",
        "config €'y'\t?",
        "é\"\t\t",
        "get\u{3000}sys\t",
        "\"€\t",
        "€\\\t",
    ] {
        typed.extend_from_slice(l.as_bytes());
        typed.extend_from_slice(b"\x15"); // Ctrl-U: drop the line
    }
    let mut fgt_input = typed.clone();
    fgt_input.extend_from_slice(b"get system status\rexit\r");
    let fgt_out = ssh(
        dir.path(),
        sock(&fgt["ssh"]),
        fgt["admin"]["user"].as_str().unwrap(),
        fgt["admin"]["password"].as_str().unwrap(),
        &fgt_input,
        "fgt",
    );
    assert!(
        fgt_out.contains("Version:"),
        "FortiGate console transcript:\n{fgt_out}"
    );
    let mut faz_input = typed;
    faz_input.extend_from_slice(b"get system status\rexit\r");
    let faz_out = ssh(
        dir.path(),
        sock(&faz["ssh"]),
        faz["admin"]["user"].as_str().unwrap(),
        faz["admin"]["password"].as_str().unwrap(),
        &faz_input,
        "faz",
    );
    assert!(
        faz_out.contains("Version"),
        "FortiAnalyzer console transcript:\n{faz_out}"
    );

    // ==== liveness: a normal request on every listener ==================================
    // FortiOS REST.
    let (status, body) = lab.http(
        fgt_api,
        true,
        "GET",
        b"/api/v2/monitor/system/status",
        &auth,
        b"",
    );
    assert_eq!(status, 200, "{body}");
    // FortiAnalyzer JSON-RPC.
    let (status, body) = lab.http(
        faz_api,
        true,
        "POST",
        b"/jsonrpc",
        &faz_auth,
        json!({"id": 1, "method": "get", "params": [{"url": "/sys/status"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"][0]["status"]["code"], 0, "{v}");
    // Syslog UDP and TCP: a normal message on each is counted.
    let before = syslog_messages(&lab);
    udp.send_to(
        b"<189>date=2021-03-04 time=10:00:00 devid=\"FGVMALIVE\" type=\"event\"",
        syslog,
    )
    .unwrap();
    wait_for(
        "the syslog UDP listener to count a normal message",
        IO,
        || (syslog_messages(&lab) > before).then_some(()),
    );
    let before = syslog_messages(&lab);
    let mut t = TcpStream::connect(syslog).unwrap();
    t.write_all(b"<189>date=2021-03-04 time=10:00:00 devid=\"FGVMALIVE\" type=\"event\"\n")
        .unwrap();
    wait_for(
        "the syslog TCP listener to count a normal message",
        IO,
        || (syslog_messages(&lab) > before).then_some(()),
    );
    drop(t);
    // Log channel: a well-formed hello from a lab-CA certificate gets a HelloReply.
    let good = lab.tls(Some(b"fortilab-logchan/1"), Some("FGVM01TMALIVE001"));
    let hello = json!({"serial": "FGVM01TMALIVE001", "hostname": "ALIVE", "platform": "FortiGate-VM64", "version": "6.4.4", "device_type": "fortigate", "vdom": "root"}).to_string();
    let reply = lab.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(logchan).await.unwrap();
        let name = fortilab_core::tls::server_name("127.0.0.1").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(good)
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(&frame(1, hello.as_bytes())).await.unwrap();
        let mut head = [0u8; 5];
        tokio::time::timeout(IO, s.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        head[4]
    });
    assert_eq!(reply, 2, "HelloReply expected");
    // EMS REST: the admin signs in.
    let (status, body) = lab.http(
        ems_api,
        true,
        "POST",
        b"/api/v1/auth/signin",
        &[("Content-Type", "application/json".into())],
        json!({"name": ems["admin"]["user"], "password": ems["admin"]["password"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    // EMS telemetry: a probe is answered.
    let probe = fortilab_core::telemetry::Frame::new("FCTUID", "A1B2C3D4E5", "PROBE", "").encode();
    let out = lab
        .raw(telemetry, Some(tel_tls.clone()), &probe)
        .unwrap_or_default();
    assert!(
        matches!(fortilab_core::telemetry::parse_frame(&out), Ok(Some(_))),
        "telemetry reply: {}",
        String::from_utf8_lossy(&out)
    );
    // The FortiGate's proxy, with a normal PROXY header.
    // A benign site (not an IOC: fetching one would quarantine PC-52).
    let site = ["www.google.com", "www.mit.edu", "www.fortinet.com"]
        .into_iter()
        .find(|h| {
            r["internet"]["sites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["host"] == *h)
        })
        .expect("a benign site in the lab Internet")
        .to_string();
    let req = format!("PROXY TCP4 10.115.2.52 10.115.2.1 40000 8080\r\nGET http://{site}/ HTTP/1.1\r\nHost: {site}\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8_lossy(&lab.raw(proxy, None, req.as_bytes()).unwrap_or_default())
        .into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "proxy: {out}");
    // The endpoint's fetch goes through the proxy too; lab surfaces answer.
    let (status, body) = lab.http(
        sock(&endpoint_control),
        true,
        "POST",
        format!("{}/_lab/fetch", path_of(&endpoint_control)).as_bytes(),
        &[
            ("X-Fortilab-Token", lab.token.clone()),
            ("Content-Type", "application/json".into()),
        ],
        json!({"url": format!("http://{site}/")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        200,
        "{body}"
    );
    assert_eq!(lab.lab_get(&internet_control, "/_lab/health").0, 200);
    assert_eq!(lab.lab_get(&dashboard, "/_lab/health").0, 200);
    // Consoles: one more normal session each.
    let again = ssh(
        dir.path(),
        sock(&fgt["ssh"]),
        "admin",
        fgt["admin"]["password"].as_str().unwrap(),
        b"get system status\rexit\r",
        "fgt2",
    );
    assert!(again.contains("Version:"), "{again}");

    // ==== nothing panicked, nothing restarted ==========================================
    for (name, base) in [
        ("FortiGate", fgt["api"].clone()),
        ("FortiAnalyzer", faz["api"].clone()),
        ("EMS", ems["api"].clone()),
        ("endpoints", endpoint_control.clone()),
        ("lab Internet", internet_control.clone()),
    ] {
        let base = if name == "endpoints" {
            // The control URL of one endpoint; the process's lab surface is at its root.
            Value::String(format!("https://{}", sock(&base)))
        } else {
            base
        };
        let t = lab.lab_json(&base, "/_lab/tasks");
        assert_eq!(t["panicked"], 0, "{name} /_lab/tasks: {t}");
        assert_eq!(t["restarted"], 0, "{name} /_lab/tasks: {t}");
        if name == "FortiGate" {
            // The automation engine's tasks are supervised too, and running.
            for task in [
                "automation: FortiAnalyzer notifications",
                "automation: event-log trigger",
                "automation: configuration",
                "automation: schedule trigger",
                "automation: requests",
                "automation: EMS connector",
                // Log forwarding, the log channel's sender, the data plane.
                "log forward: configuration",
                "log forward: FortiAnalyzer connection",
                "log channel: sender",
                "data plane: rebuild",
            ] {
                assert_eq!(t["tasks"][task]["running"], true, "{task}: {t}");
            }
        }
    }
    assert!(faz_stats(&lab)["tasks"]["panicked"] == 0);
}
