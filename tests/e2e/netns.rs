//! Namespaces mode end to end (needs root; skipped with a printed reason otherwise): every
//! device in its own network namespace at its real lab addresses.
//!
//! - the seed scenario and a link-down scenario pass with `fortilab run --network namespaces`,
//!   and the lab's network is gone afterwards;
//! - `fortilab up --network namespaces`: the host has unreachable routes for the lab range and
//!   the sites' public addresses while the lab runs; `curl` run as PC-52 (`fortilab exec`) with
//!   no proxy setting goes through the FortiGate's transparent proxy (web-filter log with srcip
//!   10.115.2.52) and gets PC-52 quarantined; after `kill -9` of the orchestrator,
//!   `fortilab netns-clean` (what every start does first) leaves no namespace, interface,
//!   route or state file behind.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, wait_for, HOST_NETWORK as SERIAL};

fn root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let is_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !is_root {
        eprintln!("SKIPPED: namespaces mode needs root (network namespaces, veths, routes)");
    }
    is_root
}

fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// What a lab with this prefix may leave behind on the host.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in sh("ip", &["netns", "list"]).lines() {
        if l.starts_with(prefix) {
            out.push(format!("namespace {l}"));
        }
    }
    for l in sh("ip", &["-br", "link"]).lines() {
        if l.starts_with(prefix) {
            out.push(format!("link {l}"));
        }
    }
    if std::path::Path::new(&format!("/run/fortilab/{prefix}.json")).exists() {
        out.push("state file".into());
    }
    for l in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if l.file_name().to_string_lossy().starts_with(prefix) {
            out.push(format!("/etc/netns/{}", l.file_name().to_string_lossy()));
        }
    }
    out
}

fn no_lab_routes() -> bool {
    !sh("ip", &["route", "show", "type", "unreachable"]).contains("10.115.0.0/16")
}

#[test]
fn the_seed_scenario_passes_in_namespaces_mode_and_leaves_nothing() {
    if !root() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before: Vec<String> = sh("ip", &["netns", "list"])
        .lines()
        .map(str::to_string)
        .collect();
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/library");
    let out = Command::new(bin("fortilab"))
        .args(["run", "--network", "namespaces"])
        .arg(lib.join("seed-flow.toml"))
        // Link faults in this mode: tc netem on the veths, or iptables where the kernel has
        // no sch_netem (down and loss).
        .arg(lib.join("faz-unreachable-during-eicar.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    let after: Vec<String> = sh("ip", &["netns", "list"])
        .lines()
        .filter(|l| l.starts_with("fl"))
        .map(str::to_string)
        .filter(|l| !before.contains(l))
        .collect();
    assert!(after.is_empty(), "namespaces left: {after:?}");
    assert!(
        no_lab_routes(),
        "{}",
        sh("ip", &["route", "show", "type", "unreachable"])
    );
}

#[test]
fn transparent_curl_as_pc52_is_filtered_and_quarantines_and_kill9_is_cleaned_up() {
    if !root() {
        return;
    }
    let curl = support::require_program("curl", "curl");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let t0 = std::time::Instant::now();
    let mut child = Command::new(bin("fortilab"))
        .args(["up", "--network", "namespaces", "--json", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("up.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let r = wait_for(
        "the namespaces lab's ready file",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        },
    );
    eprintln!("namespaces lab ready after {:?}", t0.elapsed());
    let prefix = r["netns"].as_str().expect("netns prefix").to_string();
    assert_eq!(r["network"], "namespaces");
    assert_eq!(r["fortigate"]["api"], "https://10.115.1.1:443");
    assert_eq!(r["fortigate"]["proxy"], "10.115.2.1:8080");

    // While the lab runs, nothing of the lab range or the sites can take the host's default
    // route: only the lab's own /24s (on its veths) are reachable.
    let eicar_ip = r["internet"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["hosts"].to_string().contains("\"www.eicar.org\"") || s["host"] == "www.eicar.org"
        })
        .and_then(|s| s["ip"].as_str())
        .expect("eicar site")
        .to_string();
    for ip in ["10.115.77.7", "10.115.255.1", eicar_ip.as_str()] {
        let g = sh("ip", &["route", "get", ip]);
        assert!(
            g.contains("unreachable") || g.contains("No route to host"),
            "{ip}: {g}"
        );
    }
    let g = sh("ip", &["route", "get", "10.115.1.1"]);
    assert!(g.contains(&format!("{prefix}m")), "{g}");
    // The lab is IPv4 only: no interface in its namespaces (veths, bridges) has an IPv6
    // address, so none sends the IPv6 chatter its bridges would flood to every port.
    let lab_ns: Vec<String> = sh("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    assert!(lab_ns.len() >= 5, "{lab_ns:?}");
    for ns in &lab_ns {
        let v6 = sh(
            "ip",
            &["-n", ns, "-6", "-o", "addr", "show", "scope", "link"],
        );
        assert!(v6.trim().is_empty(), "{ns} has IPv6 link addresses: {v6}");
    }

    // A real rsyslog in its own namespace on the management network (10.115.1.40), plugged
    // into the lab's switch; the FortiGate sends it syslog over UDP 514.
    let rsys_ns = format!("flt{}-rsys", std::process::id());
    let _rsys = Rsyslog::start(dir.path(), &rsys_ns, &format!("{prefix}-sw"));
    let ca = r["ca_cert"].as_str().unwrap().to_string();
    let token = r["fortigate"]["api_token"].as_str().unwrap().to_string();
    let put = Command::new(&curl)
        .args(["-sS", "--cacert", &ca, "-X", "PUT", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "-d",
            r#"{"status":"enable","server":"10.115.1.40","mode":"udp"}"#,
            "https://10.115.1.1:443/api/v2/cmdb/log.syslogd/setting",
        ])
        .output()
        .unwrap();
    let put = String::from_utf8_lossy(&put.stdout).into_owned();
    assert!(put.contains("success"), "{put}");

    // curl as PC-52, no proxy setting: DNS from the lab Internet, routed via the FortiGate,
    // intercepted there.
    let out = Command::new(bin("fortilab"))
        .args(["exec", "PC-52", "--"])
        .arg(&curl)
        .args([
            "-sS",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{remote_ip}",
            "http://www.eicar.org/download/eicar.com",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.starts_with("200 "),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.ends_with(&eicar_ip), "{said}");
    let get = |url: &str, header: &str| -> serde_json::Value {
        let out = Command::new(&curl)
            .args(["-sS", "--cacert", &ca, "-H", header, url])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let wf = wait_for(
        "the web-filter log of PC-52",
        Duration::from_secs(10),
        || {
            let v = get(
                "https://10.115.1.1:443/api/v2/log/memory/webfilter?filter=srcip==10.115.2.52",
                &format!("Authorization: Bearer {token}"),
            );
            v["results"].as_array().and_then(|a| a.first().cloned())
        },
    );
    assert_eq!(wf["hostname"], "www.eicar.org", "{wf}");
    let control = r["endpoints"][0]["control"].as_str().unwrap().to_string();
    let lab_token = r["lab_token"].as_str().unwrap().to_string();
    wait_for("PC-52 quarantined", Duration::from_secs(30), || {
        let v = get(
            &format!("{control}/_lab/status"),
            &format!("X-Fortilab-Token: {lab_token}"),
        );
        (v["quarantined"] == true).then_some(())
    });

    // rsyslog received the FortiGate's web-filter log of PC-52 on its lab address.
    let out = dir.path().join("syslog.out");
    wait_for(
        "rsyslog gets the web-filter log",
        Duration::from_secs(15),
        || {
            let t = std::fs::read_to_string(&out).unwrap_or_default();
            t.lines()
                .any(|l| l.contains("logid=\"0317013312\"") && l.contains("srcip=10.115.2.52"))
                .then_some(())
        },
    );

    // kill -9: the devices exit with their stdin pipe; the network stays until cleaned.
    let _ = child.kill();
    let _ = child.wait();
    assert!(!leftovers(&prefix).is_empty());
    let out = Command::new(bin("fortilab"))
        .arg("netns-clean")
        .output()
        .unwrap();
    assert!(out.status.success());
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(no_lab_routes());
}

/// rsyslogd in a namespace of its own at 10.115.1.40, wired to the lab switch's management
/// bridge; killed and its namespace removed on drop.
struct Rsyslog {
    child: std::process::Child,
    ns: String,
}

impl Rsyslog {
    fn start(dir: &std::path::Path, ns: &str, switch: &str) -> Rsyslog {
        let rsyslogd = support::require_program("rsyslogd", "rsyslog");
        let ok = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(&["netns", "add", ns]);
        ok(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "rsys", "netns",
            switch,
        ]);
        ok(&["-n", switch, "link", "set", "rsys", "master", "br-m", "up"]);
        ok(&["-n", ns, "addr", "add", "10.115.1.40/24", "dev", "eth0"]);
        ok(&["-n", ns, "link", "set", "eth0", "up"]);
        ok(&["-n", ns, "link", "set", "lo", "up"]);
        let work = dir.join("rsyslog");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\")\nmodule(load=\"imudp\")\ninput(type=\"imudp\" address=\"10.115.1.40\" port=\"514\")\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n*.* action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
                work.display(),
                dir.join("syslog.out").display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(rsyslogd)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(
            "rsyslog listening on 10.115.1.40:514",
            Duration::from_secs(10),
            || {
                sh("ip", &["netns", "exec", ns, "ss", "-uln"])
                    .contains("10.115.1.40:514")
                    .then_some(())
            },
        );
        Rsyslog {
            child,
            ns: ns.to_string(),
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `fortilab up --network namespaces` (optionally with a lab file) until its ready file
/// exists; killed (`kill -9`) and its network removed with `fortilab netns-clean PREFIX` on
/// drop.
struct UpLab {
    child: std::process::Child,
    dir: tempfile::TempDir,
    r: serde_json::Value,
    prefix: String,
}

impl UpLab {
    fn start(file: Option<&std::path::Path>, timeout: Duration) -> UpLab {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new(bin("fortilab"));
        cmd.arg("up");
        if let Some(f) = file {
            cmd.arg(f);
        }
        let child = cmd
            .args(["--network", "namespaces", "--json", "--ready-file"])
            .arg(&ready)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("up.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut lab = UpLab {
            child,
            dir,
            r: serde_json::Value::Null,
            prefix: String::new(),
        };
        let log = lab.dir.path().join("up.log");
        lab.r = wait_for("the namespaces lab's ready file", timeout, || {
            std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .or_else(|| {
                    let t = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(!t.contains("Error") && !t.contains("error:"), "{t}");
                    None
                })
        });
        lab.prefix = lab.r["netns"].as_str().expect("netns prefix").to_string();
        lab
    }

    fn ready_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ready.json")
    }

    /// Stops the lab as Ctrl-C does (SIGINT) and waits for `fortilab up` to exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        support::unsafe_free_kill(self.child.id(), "INT");
        let child = &mut self.child;
        wait_for("fortilab up to exit", Duration::from_secs(30), || {
            child.try_wait().unwrap()
        })
    }

    /// `fortilab exec --lab PREFIX HOST -- CMD…`.
    fn exec(&self, host: &str, cmd: &[&str]) -> std::process::Output {
        Command::new(bin("fortilab"))
            .args(["exec", "--lab", &self.prefix, host, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A FortiGate REST call (from the host, at 10.115.1.1).
    fn rest(
        &self,
        curl: &std::path::Path,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> serde_json::Value {
        let mut c = Command::new(curl);
        c.args([
            "-sS",
            "--cacert",
            self.r["ca_cert"].as_str().unwrap(),
            "-X",
            method,
            "-H",
        ])
        .arg(format!(
            "Authorization: Bearer {}",
            self.r["fortigate"]["api_token"].as_str().unwrap()
        ));
        if let Some(b) = body {
            c.args(["-d", b]);
        }
        let out = c
            .arg(format!("https://10.115.1.1:443{path}"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for UpLab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.prefix.is_empty() {
            let _ = Command::new(bin("fortilab"))
                .args(["netns-clean", &self.prefix])
                .output();
        }
    }
}

/// Certificate inspection in the transparent proxy: intercepted HTTPS is rated by the
/// ClientHello's server name, not by the address it goes to. With the `default` web-filter
/// profile (Malicious Websites blocked), `curl https://morrishittu.ddns.net/` sent to the news
/// site's address is reset and logged as blocked with that hostname; `curl
/// https://news.sky.com/` sent to the malicious site's address passes (TLS end to end, the
/// lab Internet answers for the name).
#[test]
fn intercepted_https_is_rated_by_its_sni_and_a_blocked_one_is_reset() {
    if !root() {
        return;
    }
    let curl = support::require_program("curl", "curl");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = UpLab::start(None, Duration::from_secs(60));
    let put = lab.rest(
        &curl,
        "PUT",
        "/api/v2/cmdb/firewall/policy/1",
        Some(r#"{"webfilter-profile":"default"}"#),
    );
    assert_eq!(put["status"], "success", "{put}");
    let ca = lab.r["ca_cert"].as_str().unwrap().to_string();
    let get = |name: &str, ip: &str| {
        lab.exec(
            "PC-52",
            &[
                curl.to_str().unwrap(),
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &format!("{name}:443:{ip}"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://{name}/"),
            ],
        )
    };
    // The policy is recompiled in the background: wait for the block.
    let out = wait_for(
        "HTTPS by SNI to a Malicious Website blocked",
        Duration::from_secs(15),
        || {
            let o = get("morrishittu.ddns.net", "23.200.96.79");
            (!o.status.success()).then_some(o)
        },
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("reset") || err.contains("ssl") || err.contains("tls"),
        "{err}"
    );
    let blk = wait_for("the block log", Duration::from_secs(10), || {
        let v = lab.rest(
            &curl,
            "GET",
            "/api/v2/log/memory/webfilter?filter=logid==0316013056",
            None,
        );
        v["results"].as_array().and_then(|a| a.first().cloned())
    });
    assert_eq!(blk["hostname"], "morrishittu.ddns.net", "{blk}");
    assert_eq!(blk["srcip"], "10.115.2.52", "{blk}");
    assert_eq!(blk["dstip"], "23.200.96.79", "{blk}");
    assert_eq!(blk["action"], "blocked", "{blk}");
    assert_eq!(blk["cat"], 26, "{blk}");
    // The other way round: the name is what counts.
    let ok = get("news.sky.com", "89.160.20.128");
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout) == "200",
        "{} {}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Names (`fl<pid><letter>…`) of a process's labs in `ip netns list`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let p = format!("fl{pid}");
    sh("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix(&p)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c.is_ascii_lowercase())
        })
        .map(str::to_string)
        .collect()
}

/// Two namespaces labs on one host at once: lab A (`fortilab up`) holds the host's side; lab B
/// (`fortilab run`) runs its orchestrator in a network namespace of its own. The seed scenario
/// passes in both at the same time (in A over `--attach`); B leaves nothing behind, A keeps
/// working, and once A is gone no lab route stays on the host.
#[test]
fn two_namespaces_labs_run_the_seed_scenario_at_once() {
    if !root() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/library");
    let seed = lib.join("seed-flow.toml");
    let a = UpLab::start(None, Duration::from_secs(60));
    let b = Command::new(bin("fortilab"))
        .args(["run", "--network", "namespaces"])
        .arg(&seed)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b_pid = b.id();
    let on_a = Command::new(bin("fortilab"))
        .args(["run", "--attach"])
        .arg(a.ready_file())
        .arg(&seed)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // B's lab exists while it runs, under B's own prefix, next to A's.
    let b_ns = wait_for("lab B's namespaces", Duration::from_secs(30), || {
        let v = namespaces_of(b_pid);
        (!v.is_empty()).then_some(v)
    });
    assert!(b_ns.iter().all(|n| !n.starts_with(&a.prefix)), "{b_ns:?}");
    let b = b.wait_with_output().unwrap();
    let on_a = on_a.wait_with_output().unwrap();
    for (what, o) in [("lab B", &b), ("lab A (attached)", &on_a)] {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("1 passed, 0 failed"),
            "{what}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // B is gone without a trace; A still answers at the host's lab addresses.
    let left = namespaces_of(b_pid);
    assert!(left.is_empty(), "lab B left {left:?}");
    assert!(!std::path::Path::new(&format!("/run/fortilab/fl{b_pid}a.json")).exists());
    let g = sh("ip", &["route", "get", "10.115.1.1"]);
    assert!(g.contains(&format!("{}m", a.prefix)), "{g}");
    assert!(
        !no_lab_routes(),
        "lab A's unreachable route went with lab B"
    );
    let a_prefix = a.prefix.clone();
    drop(a);
    let left = leftovers(&a_prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(no_lab_routes());
}

/// Link latency and rate in namespaces mode: with `tc netem` where the kernel has it, else
/// with netfilter queues (this CI VM's kernel has no `sch_netem`). The `endpoints`–`fortigate`
/// link with 150 ms of latency makes PC-52's TCP handshake with the explicit proxy take a
/// round trip of at least 300 ms; a 2 Mbit/s rate makes 256 KiB sent from PC-52 to a reader on
/// the FortiGate's LAN address take at least ~1 s; clearing the link gives the fast path back.
#[test]
fn link_latency_and_rate_shape_pc52s_traffic_in_namespaces_mode() {
    if !root() {
        return;
    }
    let curl = support::require_program("curl", "curl");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = UpLab::start(None, Duration::from_secs(60));
    let r = lab.r.clone();
    let dash = r["dashboard"].as_str().unwrap().to_string();
    let lab_token = r["lab_token"].as_str().unwrap().to_string();
    let set_link = |body: &str| -> serde_json::Value {
        let out = Command::new(&curl)
            .args([
                "-sS",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
            ])
            .arg(format!("X-Fortilab-Token: {lab_token}"))
            .args(["-d", body])
            .arg(format!("{}/_lab/link", dash.trim_end_matches('/')))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            v["ok"],
            true,
            "/_lab/link {body}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        v["link"].clone()
    };
    let python = support::require_program("python3", "python3");
    let fgt_ns = format!("{}-fgt", r["netns"].as_str().expect("netns prefix"));
    // PC-52's TCP handshake with the explicit proxy (10.115.2.1:8080), and the time 256 KiB
    // take from PC-52 to a reader in the FortiGate's namespace on 10.115.2.1:9999 (it answers
    // once it has them all): (connect seconds, upload seconds).
    let timed = || -> (f64, f64) {
        let out = Command::new(bin("fortilab"))
            .args(["exec", "PC-52", "--"])
            .arg(&curl)
            .args(["-sS", "-o", "/dev/null", "-x", "http://10.115.2.1:8080"])
            .args(["-w", "%{time_connect}", "http://news.sky.com/"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let connect: f64 = said.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl as PC-52: {said} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut reader = Command::new("ip")
            .args(["netns", "exec", &fgt_ns])
            .arg(&python)
            .args([
                "-c",
                "import socket\n\
                 s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('10.115.2.1', 9999)); s.listen(1); print('ready', flush=True)\n\
                 c,_=s.accept(); n=0\n\
                 while n < 262144:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\n\
                 c.sendall(b'ok'); c.close()",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(reader.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        let out = Command::new(bin("fortilab"))
            .args(["exec", "PC-52", "--"])
            .arg(&python)
            .args([
                "-c",
                "import socket, time\n\
                 s=socket.create_connection(('10.115.2.1', 9999)); t=time.monotonic()\n\
                 s.sendall(b'x'*262144); assert s.recv(2)==b'ok'\n\
                 print(time.monotonic()-t)",
            ])
            .output()
            .unwrap();
        let _ = reader.wait();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let upload: f64 = said.trim().parse().unwrap_or_else(|_| {
            panic!(
                "upload as PC-52: {said} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (connect, upload)
    };
    let (c0, t0) = timed();
    assert!(c0 < 0.1, "unshaped handshake took {c0} s");

    let rep = set_link(r#"{"a":"endpoints","b":"fortigate","latency":"150ms"}"#);
    assert!(rep["latency_ms"].as_f64().unwrap_or(0.0) >= 149.0, "{rep}");
    let (c1, _) = timed();
    assert!(
        (0.29..2.0).contains(&c1),
        "handshake with 150 ms each way took {c1} s (unshaped {c0} s, via {})",
        rep["via"]
    );

    let rep = set_link(r#"{"a":"endpoints","b":"fortigate","rate":"2Mbit"}"#);
    assert!(rep["rate_bps"].as_u64().is_some(), "{rep}");
    let (c2, t2) = timed();
    assert!(c2 < 0.1, "latency was cleared, the handshake took {c2} s");
    // 256 KiB at 2 Mbit/s is 1.05 s on the wire (headers and ACKs aside).
    assert!(
        t2 >= 0.9 && t2 > t0 * 3.0,
        "256 KiB at 2 Mbit/s took {t2} s (unshaped {t0} s, via {})",
        rep["via"]
    );

    eprintln!(
        "handshake / 256 KiB upload: unshaped {c0:.3} / {t0:.3} s, 150 ms latency {c1:.3} s, \
         2 Mbit/s {c2:.3} / {t2:.3} s (via {})",
        rep["via"]
    );
    let rep = set_link(r#"{"a":"endpoints","b":"fortigate","state":"up"}"#);
    assert_eq!(rep["clean"], true, "{rep}");
    let (c3, t3) = timed();
    assert!(c3 < 0.1 && t3 < 0.9, "after clearing: {c3} s / {t3} s");

    let prefix = lab.prefix.clone();
    drop(lab);
    assert!(leftovers(&prefix).is_empty());
}

/// Snapshots of a namespaces-mode lab: `fortilab snapshot save` is taken in place (the same
/// device processes before and after) and `restore` brings back the FortiGate configuration
/// of the cut, on the lab's real addresses; the lab stops cleanly afterwards.
#[test]
fn snapshots_save_in_place_and_restore_in_namespaces_mode() {
    if !root() {
        return;
    }
    let curl = support::require_program("curl", "curl");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = UpLab::start(None, Duration::from_secs(60));
    let ready = lab.ready_file();
    let data = lab.dir.path().join("data");
    let r = lab.r.clone();
    let prefix = lab.prefix.clone();
    let ca = r["ca_cert"].as_str().unwrap().to_string();
    let auth = format!(
        "Authorization: Bearer {}",
        r["fortigate"]["api_token"].as_str().unwrap()
    );
    let api = "https://10.115.1.1:443/api/v2/cmdb/firewall/address";
    let add = |name: &str| {
        let out = Command::new(&curl)
            .args(["-sS", "--cacert", &ca, "-H", &auth, "-d"])
            .arg(format!(
                r#"{{"name":"{name}","subnet":"192.0.2.9 255.255.255.255"}}"#
            ))
            .arg(api)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains("success"), "{said}");
    };
    let status = |name: &str| {
        let out = Command::new(&curl)
            .args(["-sS", "--cacert", &ca, "-H", &auth, "-o", "/dev/null"])
            .args(["-w", "%{http_code}"])
            .arg(format!("{api}/{name}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let snapshot = |op: &str| -> serde_json::Value {
        let out = Command::new(bin("fortilab"))
            .args(["snapshot", op, "cut", "--json", "--attach"])
            .arg(&ready)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "snapshot {op}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let data_s = data.display().to_string();
    let pids = || {
        let mut p = support::pids_mentioning(&data_s);
        p.sort();
        p
    };

    add("before-cut");
    let before = pids();
    let saved = snapshot("save");
    eprintln!("namespaces snapshot save: {saved}");
    assert_eq!(pids(), before, "no device restarted for the save");
    add("after-cut");
    assert_eq!(status("after-cut"), "200");
    let restored = snapshot("restore");
    eprintln!("namespaces snapshot restore: {restored}");
    assert_eq!(restored["lab_time_ms"], saved["lab_time_ms"]);
    assert_eq!(status("before-cut"), "200", "the state of the cut");
    assert_eq!(status("after-cut"), "404", "a change after the cut is gone");

    let st = lab.stop();
    assert!(st.success(), "fortilab up exit: {st}");
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(no_lab_routes());
}
