//! End-to-end tests (fortigate): spawn the real `sim-fortigate` binary and drive it with real
//! clients (Python `requests` and the unmodified `fortigate-api` package), verifying TLS
//! against the lab CA.

use crate::support;

use std::path::Path;
use std::process::Command;

use support::{python, Proc};

/// Python preamble: `get/post/put/delete` helpers with the token, TLS verified against the
/// lab CA (REQUESTS_CA_BUNDLE).
const PY_PRELUDE: &str = r#"
import json, os, sys, requests
API = os.environ["FGT_API"]
TOKEN = os.environ["FGT_TOKEN"]
H = {"Authorization": "Bearer " + TOKEN}
def call(method, path, body=None, headers=None, raw=None):
    h = dict(H) if headers is None else headers
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    r = requests.request(method, API + path, data=data, headers=h, timeout=10)
    try:
        j = r.json()
    except ValueError:
        j = None
    return r.status_code, j
def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)
"#;

fn env_for(p: &Proc) -> Vec<(&'static str, String)> {
    vec![
        ("FGT_API", p.ready["api"].as_str().unwrap().to_string()),
        (
            "FGT_TOKEN",
            p.ready["api_token"].as_str().unwrap().to_string(),
        ),
        (
            "FGT_USER",
            p.ready["admin"]["user"].as_str().unwrap().to_string(),
        ),
        (
            "FGT_PASSWORD",
            p.ready["admin"]["password"].as_str().unwrap().to_string(),
        ),
        (
            "REQUESTS_CA_BUNDLE",
            p.ready["ca_cert"].as_str().unwrap().to_string(),
        ),
    ]
}

fn run_py(p: &Proc, script: &str) {
    let full = format!("{PY_PRELUDE}\n{script}");
    let (ok, out, err) = python(&full, &env_for(p));
    assert!(
        ok,
        "python failed:\nstdout:\n{out}\nstderr:\n{err}\ndevice stderr:\n{}",
        p.stderr()
    );
}

fn spawn_seed(dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("seed.conf");
    std::fs::write(&cfg, fortilab_fortigate::config::ARTICLE_SNIPPETS).unwrap();
    let data = dir.join("data");
    Proc::spawn(
        "sim-fortigate",
        dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--name",
            "FGT-LAB",
            "--seed",
            "11",
        ],
    )
}

/// Logs in as the admin (GUI session) and prints the session cookies as JSON; with `OLD`
/// set, first checks that those cookies no longer open a session.
const PY_SESSION: &str = r#"
import json, os, sys, requests
API = os.environ["FGT_API"]
old = os.environ.get("OLD")
if old:
    r = requests.get(API + "/api/v2/monitor/system/status", cookies=json.loads(old), timeout=10)
    if r.status_code != 401:
        print("FAILED: a cookie from before the restart gave %s" % r.status_code, file=sys.stderr)
        sys.exit(1)
s = requests.Session()
r = s.post(API + "/logincheck", data={"username": os.environ["FGT_USER"], "secretkey": os.environ["FGT_PASSWORD"]}, timeout=10)
assert r.status_code == 200, r.text
r = s.get(API + "/api/v2/monitor/system/status", timeout=10)
assert r.status_code == 200, (r.status_code, r.text)
print(json.dumps({c.name: c.value for c in s.cookies if c.name.startswith("APSCOOKIE")}))
"#;

#[test]
fn a_session_cookie_from_before_a_restart_does_not_work_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_seed(tmp.path());
    let (ok, first, err) = python(PY_SESSION, &env_for(&p));
    assert!(ok, "{err}");
    let first = first.trim().to_string();
    assert!(first.contains("APSCOOKIE"), "{first}");
    assert!(p.terminate().success());
    // The same device (same data directory, same seed) after a restart.
    let data = tmp.path().join("data");
    let mut p2 = Proc::spawn(
        "sim-fortigate",
        tmp.path(),
        &["--data-dir", data.to_str().unwrap(), "--seed", "11"],
    );
    let mut env = env_for(&p2);
    env.push(("OLD", first.clone()));
    let (ok, second, err) = python(PY_SESSION, &env);
    assert!(ok, "{err}");
    assert_ne!(second.trim(), first, "the same session id after a restart");
    assert!(p2.terminate().success());
}

#[test]
fn seed_snippets_load_and_the_policy_and_stitch_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_seed(tmp.path());
    assert_eq!(p.ready["name"], "FGT-LAB");
    assert_eq!(p.ready["version"], "6.4.4");
    assert!(p.ready["serial"].as_str().unwrap().starts_with("FGVM01TM"));
    assert!(p.ready["api"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    // The block left without `end` is closed with a warning naming file and line.
    let err = p.stderr();
    assert!(
        err.contains(
            "seed.conf:22:1: warning: config block 'config firewall policy' opened at line 6"
        ),
        "{err}"
    );
    run_py(
        &p,
        r#"
s, j = call("GET", "/api/v2/cmdb/firewall/policy")
check(s == 200 and j["status"] == "success" and j["http_status"] == 200, "GET policy %s %s" % (s, j))
pol = j["results"][0]
names = lambda f: [m["name"] for m in pol[f]]
check(pol["policyid"] == 1 and pol["q_origin_key"] == 1, "policyid")
check(names("srcintf") == ["port3"], "srcintf")
check(names("dstintf") == ["virtual-wan-link"], "dstintf")
check(names("srcaddr") == ["10.115.2.52/32"], "srcaddr")
check(names("dstaddr") == ["all"], "dstaddr")
check(names("service") == ["ALL"], "service")
for k, v in {"action": "accept", "schedule": "always", "utm-status": "enable",
             "ssl-ssh-profile": "certificate-inspection", "webfilter-profile": "monitor-all",
             "logtraffic": "all", "nat": "enable"}.items():
    check(pol[k] == v, "%s = %r" % (k, pol[k]))
s, j = call("GET", "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine")
check(s == 200, "stitch %s" % s)
st = j["results"][0]
check(st["trigger"] == "Compromised Host Quarantine", "trigger")
check([a["name"] for a in st["action"]] == ["Compromised Host Quarantine_quarantine-forticlient"], "actions %r" % st["action"])
check(st["status"] == "disable", "factory status kept")
s, j = call("GET", "/api/v2/cmdb/webfilter/profile/monitor-all")
check(j["results"][0]["log-all-url"] == "enable", "monitor-all")
"#,
    );
    assert!(p.terminate().success());
}

#[test]
fn fortigate_api_client_with_token_and_password() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_seed(tmp.path());
    let script = r#"
import os, sys
from urllib.parse import urlparse
from fortigate_api import FortiGateAPI
u = urlparse(API)
def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr); sys.exit(1)

def exercise(api, suffix):
    name = "lab-host-" + suffix
    r = api.cmdb.firewall.address.create({"name": name, "subnet": "10.115.2.60 255.255.255.255"})
    check(r.status_code == 200, "create address %s %s" % (r.status_code, r.text))
    r = api.cmdb.firewall.address.create({"name": name, "subnet": "10.115.2.60 255.255.255.255"})
    check(r.status_code == 500, "duplicate address %s" % r.status_code)
    items = api.cmdb.firewall.address.get(name=name)
    check(len(items) == 1 and items[0]["subnet"] == "10.115.2.60 255.255.255.255", "get address %r" % items)
    check(api.cmdb.firewall.address.is_exist(name), "is_exist")
    r = api.cmdb.firewall.address.update({"name": name, "comment": "updated"})
    check(r.status_code == 200, "update address %s" % r.status_code)
    check(api.cmdb.firewall.address.get(name=name)[0]["comment"] == "updated", "comment")
    all_addr = api.cmdb.firewall.address.get()
    check(any(a["name"] == "all" for a in all_addr), "list addresses")
    flt = api.cmdb.firewall.address.get(filter="name=@lab-host-")
    check([a["name"] for a in flt] == [name], "filter %r" % [a["name"] for a in flt])
    pol = {"name": "pol-" + suffix, "srcintf": [{"name": "port3"}], "dstintf": [{"name": "virtual-wan-link"}],
           "srcaddr": [{"name": name}], "dstaddr": [{"name": "all"}], "action": "accept",
           "schedule": "always", "service": [{"name": "HTTPS"}], "logtraffic": "all"}
    r = api.cmdb.firewall.policy.create(pol)
    check(r.status_code == 200, "create policy %s %s" % (r.status_code, r.text))
    pid = r.json()["mkey"]
    got = api.cmdb.firewall.policy.get(policyid=pid)
    check(got[0]["name"] == "pol-" + suffix and got[0]["srcaddr"][0]["name"] == name, "get policy")
    r = api.cmdb.firewall.policy.update({"policyid": pid, "action": "deny"})
    check(r.status_code == 200, "update policy")
    check(api.cmdb.firewall.policy.get(policyid=pid)[0]["action"] == "deny", "policy action")
    r = api.cmdb.firewall.policy.move(policyid=pid, position="before", neighbor=1)
    check(r.status_code == 200, "move %s" % r.status_code)
    check(api.cmdb.firewall.policy.get()[0]["policyid"] == pid, "moved first")
    r = api.cmdb.firewall.address.delete(name)
    check(r.status_code == 500 and r.json()["error"] == -23, "delete in use %s" % r.status_code)
    check(api.cmdb.firewall.policy.delete(pid).status_code == 200, "delete policy")
    check(api.cmdb.firewall.address.delete(name).status_code == 200, "delete address")
    check(api.cmdb.firewall.address.delete(name).status_code == 404, "delete again")
    st = api.cmdb.system.automation_stitch.get(name="Compromised Host Quarantine")
    check(st[0]["trigger"] == "Compromised Host Quarantine", "stitch")

api = FortiGateAPI(host=u.hostname, port=u.port, token=TOKEN, verify=True)
api.login()
exercise(api, "tok")
api.logout()

with FortiGateAPI(host=u.hostname, port=u.port, username=os.environ["FGT_USER"],
                  password=os.environ["FGT_PASSWORD"], verify=True) as api:
    exercise(api, "pw")

bad = FortiGateAPI(host=u.hostname, port=u.port, token="not-a-token", verify=True)
try:
    bad.login()
    check(False, "a bad token must not log in")
except Exception as e:
    check("401" in str(e), "bad token error %s" % e)
"#;
    run_py(&p, script);
    // The password login and the config changes were logged as FortiOS events.
    run_py(
        &p,
        r#"
s, j = call("GET", "/api/v2/log/memory/event/system?rows=500")
ids = [r["logid"] for r in j["results"]]
check("0100032001" in ids, "login log %r" % ids[:10])
check("0100044547" in ids, "config change log")
"#,
    );
    assert!(p.terminate().success());
}

#[test]
fn bad_input_gets_real_statuses_and_the_process_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_seed(tmp.path());
    run_py(
        &p,
        r#"
s, j = call("POST", "/api/v2/cmdb/firewall/address", raw="{not json")
check(s == 400 and j["status"] == "error", "malformed %s" % s)
s, j = call("POST", "/api/v2/cmdb/firewall/address", raw="[1,2,3]")
check(s == 400, "array body %s" % s)
s, j = call("POST", "/api/v2/cmdb/firewall/address", {"name": "x", "subnet": 12})
check(s == 500 and j["error"] in (-8, -9, -651), "wrong type %s %s" % (s, j))
s, j = call("PUT", "/api/v2/cmdb/firewall/policy/1", {"action": ["accept"]})
check(s == 500 and j["error"] == -651, "array for enum %s %s" % (s, j))
s, j = call("POST", "/api/v2/cmdb/firewall/policy", {"srcintf": [{"name": "port3"}], "dstintf": [{"name": "port1"}],
    "srcaddr": [{"name": "homeNetwork"}], "dstaddr": [{"name": "all"}], "schedule": "always", "service": [{"name": "ALL"}]})
check(s == 500 and j["error"] == -651 and "homeNetwork" in j["cli_error"], "missing ref %s %s" % (s, j))
s, j = call("GET", "/api/v2/cmdb/firewall/nothing")
check(s == 404, "unknown table %s" % s)
s, j = call("GET", "/api/v2/no/such/thing")
check(s == 404, "unknown tree %s" % s)
s, j = call("DELETE", "/api/v2/cmdb/firewall/address")
check(s == 405, "table delete %s" % s)
s, j = call("POST", "/api/v2/cmdb/firewall/address", raw='{"name":"big","comment":"' + "x" * (1100 * 1024) + '"}')
check(s == 413, "oversized %s" % s)
s, j = call("GET", "/api/v2/cmdb/firewall/policy", headers={})
check(s == 401, "no token %s" % s)
s, j = call("GET", "/api/v2/cmdb/firewall/policy", headers={"Authorization": "Bearer nope"})
check(s == 401, "bad token %s" % s)
s, j = call("POST", "/api/v2/authentication", {"username": "admin", "secretkey": "x"}, headers={})
check(s == 404, "/api/v2/authentication %s" % s)
s, j = call("GET", "/api/v2/monitor/system/status")
check(s == 200 and j["results"]["hostname"] == "FGT-LAB", "still serving")
"#,
    );
    assert!(p.terminate().success());
}

#[test]
fn restart_keeps_api_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_seed(tmp.path());
    let token = p.ready["api_token"].clone();
    run_py(
        &p,
        r#"
s, j = call("POST", "/api/v2/cmdb/firewall/address", {"name": "kept", "subnet": "10.1.2.3/32", "comment": "survives"})
check(s == 200, "create %s" % s)
s, j = call("PUT", "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine", {"status": "enable"})
check(s == 200, "enable stitch %s" % s)
"#,
    );
    assert!(p.terminate().success());
    let saved = std::fs::read_to_string(tmp.path().join("data/fgt.conf")).unwrap();
    assert!(
        saved.starts_with("#config-version=FGVM64-6.04-FW-build1803"),
        "{saved}"
    );
    assert!(saved.contains("edit \"kept\""));
    // Restart from the data directory alone.
    let data = tmp.path().join("data");
    let mut p2 = Proc::spawn(
        "sim-fortigate",
        tmp.path(),
        &["--data-dir", data.to_str().unwrap(), "--seed", "11"],
    );
    assert_eq!(p2.ready["api_token"], token);
    assert_eq!(p2.ready["name"], "FGT-LAB");
    run_py(
        &p2,
        r#"
s, j = call("GET", "/api/v2/cmdb/firewall/address/kept")
check(s == 200 and j["results"][0]["comment"] == "survives" and j["results"][0]["subnet"] == "10.1.2.3 255.255.255.255", "kept %s %s" % (s, j))
s, j = call("GET", "/api/v2/cmdb/system/automation-stitch/Compromised%20Host%20Quarantine")
check(j["results"][0]["status"] == "enable", "stitch enabled")
s, j = call("GET", "/api/v2/cmdb/firewall/policy/1")
check(j["results"][0]["webfilter-profile"] == "monitor-all", "seed policy")
"#,
    );
    assert!(p2.terminate().success());
}

#[test]
fn bad_config_exits_2_with_file_line_and_sigterm_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.conf");
    std::fs::write(
        &bad,
        "config firewall policy\n    edit 1\n        set srcaddr \"10.9.9.9/32\"\n    next\nend\n",
    )
    .unwrap();
    let out = Command::new(support::bin("sim-fortigate"))
        .args(["--config", bad.to_str().unwrap(), "--data-dir"])
        .arg(tmp.path().join("d1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.conf:3:21: entry not found in datasource"),
        "{err}"
    );
    // Strict mode: a warning becomes an error.
    let warn = tmp.path().join("warn.conf");
    std::fs::write(&warn, "config router static\n    edit 1\n    next\nend\n").unwrap();
    let out = Command::new(support::bin("sim-fortigate"))
        .args(["--strict", "--config", warn.to_str().unwrap(), "--data-dir"])
        .arg(tmp.path().join("d2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("warn.conf:1:8:"), "{err}");
    // Bad flags.
    let out = Command::new(support::bin("sim-fortigate"))
        .args(["--version", "5.6.0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // 7.2 runs, and SIGTERM ends it with 0.
    let mut p = Proc::spawn(
        "sim-fortigate",
        &tmp.path().join("v72"),
        &[
            "--version",
            "7.2.x",
            "--data-dir",
            tmp.path().join("d3").to_str().unwrap(),
        ],
    );
    assert_eq!(p.ready["version"], "7.2.5");
    assert!(
        p.ready["name"].as_str().unwrap().starts_with("FGVM01TM"),
        "factory hostname is the serial"
    );
    let st = p.terminate();
    assert_eq!(st.code(), Some(0));
}
