//! End-to-end tests (dataplane): spawn the real binaries.
//!
//! sim-internet as a process: the EICAR file over HTTP and HTTPS (lab CA verified), the IOC test
//! address through a PROXY header, the lab surface (DNS view, ratings, events), clean SIGTERM,
//! and exit code 2 with file:line for a bad site definition.

use crate::support;

use std::net::SocketAddr;

use fortilab_core::http::client::{send, Request, Response, Route};
use fortilab_core::proxy::ProxyHeader;
use fortilab_internet::sites::sha256_hex;
use support::Proc;

const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

fn addr(v: &serde_json::Value) -> SocketAddr {
    v.as_str()
        .unwrap()
        .trim_start_matches("https://")
        .parse()
        .unwrap()
}

/// `GET path` with `Host: host` (none when `None`) along `route`.
async fn get(route: &Route, host: Option<&str>, path: &str) -> Response {
    let mut req = Request::get(path);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    send(route, &req).await.unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sim_internet_serves_eicar_http_https_and_the_ioc_address_behind_a_proxy_header() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = Proc::spawn(
        "sim-internet",
        dir.path(),
        &["--data-dir", data.to_str().unwrap()],
    );
    let inet = p.ready["internet"].clone();
    let (http, https, control) = (
        addr(&inet["http"]),
        addr(&inet["https"]),
        addr(&inet["control"]),
    );
    let ca_pem = std::fs::read_to_string(inet["ca_cert"].as_str().unwrap()).unwrap();
    let tls = fortilab_core::tls::client_config_from_pem(&ca_pem, None).unwrap();
    let sites = inet["sites"].as_array().unwrap();
    let eicar = sites.iter().find(|s| s["host"] == "www.eicar.org").unwrap();
    assert_eq!(eicar["ip"], "89.238.73.97");
    assert_eq!(eicar["category"], 50);
    assert!(sites.iter().any(|s| s["ip"] == "195.22.28.198"));
    assert_eq!(
        inet["lab_map"]["services"]["89.238.73.97:443"],
        inet["https"]
    );

    rt().block_on(async {
        // EICAR over HTTP.
        let f = get(
            &Route::to(http),
            Some("www.eicar.org"),
            "/download/eicar.com",
        )
        .await;
        assert_eq!(f.status, 200);
        assert_eq!(f.header("content-type"), Some("application/octet-stream"));
        assert_eq!(f.body.len(), 68);
        assert_eq!(sha256_hex(&f.body), EICAR_SHA256);

        // EICAR over HTTPS: SNI www.eicar.org, certificate verified against the lab CA.
        let eicar_tls = Route::to(https).tls(tls.clone(), "www.eicar.org");
        let f = get(&eicar_tls, Some("www.eicar.org"), "/download/eicar.com").await;
        assert_eq!(f.status, 200);
        assert_eq!(sha256_hex(&f.body), EICAR_SHA256);

        // A certificate from another CA is refused.
        let other = fortilab_core::tls::LabCa::generate("other").unwrap();
        let other_tls = Route::to(https).tls(
            fortilab_core::tls::client_config(&other, None).unwrap(),
            "www.eicar.org",
        );
        assert!(send(&other_tls, &Request::get("/download/eicar.com"))
            .await
            .is_err());

        // http://195.22.28.198/ from lab source 10.115.2.52 through a PROXY header.
        let hdr = ProxyHeader {
            src: "10.115.2.52:51000".parse().unwrap(),
            dst: "195.22.28.198:80".parse().unwrap(),
        };
        let ioc = Route::to(http).proxy_header(hdr);
        let f = get(&ioc, Some("195.22.28.198"), "/").await;
        assert_eq!(f.status, 200);
        assert_eq!(f.header("x-lab-site"), Some("ioc-test"));
        // Without a usable Host header the PROXY destination picks the site.
        let f = get(&ioc, None, "/any/path?x=1").await;
        assert_eq!((f.status, f.header("x-lab-site")), (200, Some("ioc-test")));

        // The lab surface.
        let json = |f: &Response| serde_json::from_slice::<serde_json::Value>(&f.body).unwrap();
        let surface = Route::to(control).tls(tls.clone(), "localhost");
        let ctl = |path: &str| {
            Request::get(path)
                .header("host", "localhost")
                .header("X-Fortilab-Token", support::lab_token())
        };
        let fetch = |req: Request| {
            let surface = surface.clone();
            async move { send(&surface, &req).await }
        };
        // Without the lab token the control surface answers 401 with a JSON error.
        let f = get(&surface, Some("localhost"), "/_lab/sites").await;
        assert_eq!(f.status, 401);
        assert_eq!(json(&f)["error"], "lab token required");
        let f = fetch(ctl("/_lab/health")).await.unwrap();
        assert_eq!(
            (f.status, json(&f)["ok"].clone()),
            (200, serde_json::json!(true))
        );
        let f = fetch(ctl("/_lab/dns?name=www.eicar.org")).await.unwrap();
        assert_eq!(json(&f)["ip"], "89.238.73.97");
        let f = fetch(ctl("/_lab/dns?name=nowhere.example")).await.unwrap();
        assert_eq!(
            (f.status, json(&f)["error"].clone()),
            (404, serde_json::json!("NXDOMAIN"))
        );
        let f = fetch(ctl("/_lab/rating?host=www.eicar.org")).await.unwrap();
        let v = json(&f);
        assert_eq!(
            (v["category"].clone(), v["catdesc"].clone()),
            (50.into(), "Information and Computer Security".into())
        );
        let f = fetch(ctl("/_lab/rating?host=unknown.example"))
            .await
            .unwrap();
        assert_eq!(
            (json(&f)["category"].clone(), json(&f)["catdesc"].clone()),
            (0.into(), "Unrated".into())
        );
        let f = fetch(ctl("/_lab/sites")).await.unwrap();
        let all = json(&f);
        assert!(all.as_array().unwrap().iter().any(|s| s["category"] == 26));
        assert!(all.as_array().unwrap().iter().any(|s| s["category"] == 61));
        let f = fetch(ctl("/_lab/events?once=1")).await.unwrap();
        let text = String::from_utf8_lossy(&f.body).to_string();
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect();
        let ioc = events
            .iter()
            .find(|e| e["kind"] == "http.request" && e["site"] == "ioc-test")
            .expect("request event");
        assert_eq!(ioc["src"], "10.115.2.52");
        assert_eq!(ioc["status"], 200);
        assert!(events
            .iter()
            .any(|e| e["site"] == "eicar" && e["scheme"] == "https"));
    });
    let st = p.terminate();
    assert!(st.success(), "exit after SIGTERM: {st:?}\n{}", p.stderr());
}

#[test]
fn sim_internet_rejects_a_bad_site_definition_with_exit_2_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sites.toml");
    std::fs::write(
        &cfg,
        "[[site]]\nname = \"x\"\nip = \"not-an-ip\"\ncategory = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::bin("sim-internet"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sites.toml:3:"), "{err}");
}

#[test]
fn a_standalone_device_makes_its_own_lab_token_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No FORTILAB_LAB_TOKEN and no secrets file: the device makes its own token.
    let start = || {
        Proc::spawn_with_env(
            "sim-internet",
            dir.path(),
            &["--data-dir", data.to_str().unwrap()],
            &[("FORTILAB_LAB_TOKEN", "")],
        )
    };
    let mut p = start();
    let token = p.ready["internet"]["lab_token"]
        .as_str()
        .expect("lab_token in the ready file")
        .to_string();
    assert!(
        token.len() >= 32 && token != support::lab_token(),
        "{token}"
    );
    // Kept in the data directory's secrets.json, readable by the owner only.
    let secrets = data.join("secrets.json");
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    assert_eq!(kept["lab_token"], token.as_str());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ready = dir.path().join("sim-internet.ready.json");
        let mode = std::fs::metadata(&ready).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the ready file holds the token");
    }
    // It opens the lab surface; the test process's shared token does not.
    let control = addr(&p.ready["internet"]["control"]);
    let ca_pem = std::fs::read_to_string(p.ready["internet"]["ca_cert"].as_str().unwrap()).unwrap();
    let tls = fortilab_core::tls::client_config_from_pem(&ca_pem, None).unwrap();
    let surface = Route::to(control).tls(tls, "localhost");
    let get = |t: &str| {
        let req = Request::get("/_lab/health")
            .header("host", "localhost")
            .header("X-Fortilab-Token", t);
        rt().block_on(send(&surface, &req)).unwrap().status
    };
    assert_eq!(get(&token), 200);
    assert_eq!(get(support::lab_token()), 401);
    assert!(p.terminate().success());
    // Restarted on the same data directory: the same token.
    let p2 = start();
    assert_eq!(p2.ready["internet"]["lab_token"], token.as_str());
}
