use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn opts() -> K8sOptions {
    K8sOptions {
        namespace: "fortilab-lab-7".into(),
        image: "registry.example/fortilab:dev".into(),
        scenarios: vec![("seed-flow.toml".into(), "[lab]\n".into())],
        clock: fortilab_core::LabClock::new(1_000, 1_000, 1.0, 0),
    }
}

fn files() -> SecretFiles {
    [
        ("ca.pem", b"CA".to_vec()),
        ("ca.key", b"KEY".to_vec()),
        ("secrets.json", b"{}".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn seed() -> Manifests {
    manifests(&LabDef::seed(), &opts(), &files()).unwrap()
}

/// The manifests as `kubectl` would read them: the YAML stream, parsed back into the typed
/// objects by kind.
#[derive(Default)]
struct Parsed {
    namespaces: Vec<Namespace>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    policies: Vec<NetworkPolicy>,
    jobs: Vec<Job>,
}

fn parse(yaml: &str) -> Parsed {
    use serde::Deserialize;
    let mut p = Parsed::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).expect("YAML");
        let kind = v["kind"].as_str().expect("kind").to_string();
        let api = v["apiVersion"].as_str().expect("apiVersion").to_string();
        macro_rules! typed {
            ($t:ty, $into:expr) => {{
                assert_eq!(api, <$t as k8s_openapi::Resource>::API_VERSION, "{kind}");
                $into.push(serde_yaml::from_value::<$t>(v).expect(&kind));
            }};
        }
        match kind.as_str() {
            "Namespace" => typed!(Namespace, p.namespaces),
            "Secret" => typed!(Secret, p.secrets),
            "ConfigMap" => typed!(ConfigMap, p.config_maps),
            "Service" => typed!(Service, p.services),
            "Deployment" => typed!(Deployment, p.deployments),
            "NetworkPolicy" => typed!(NetworkPolicy, p.policies),
            "Job" => typed!(Job, p.jobs),
            other => panic!("unexpected kind {other}"),
        }
    }
    p
}

#[test]
fn the_yaml_parses_back_into_the_same_typed_objects() {
    let m = seed();
    let p = parse(&m.to_yaml().unwrap());
    assert_eq!(p.namespaces, vec![m.namespace.clone()]);
    assert_eq!(p.secrets, vec![m.secret.clone()]);
    assert_eq!(p.config_maps, m.config_maps);
    assert_eq!(p.services, m.services);
    assert_eq!(p.deployments, m.deployments);
    assert_eq!(p.policies, m.network_policies);
    assert_eq!(p.jobs, vec![m.job.clone()]);
    // And through JSON (`kubectl apply -f x.json` reads the same objects).
    for d in m.documents().unwrap() {
        let kind = d["kind"].as_str().unwrap().to_string();
        if kind == "Deployment" {
            let back: Deployment = serde_json::from_value(d.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), d);
        }
    }
    // One Deployment and one Service per device of the plan.
    let names: BTreeSet<String> = m
        .deployments
        .iter()
        .map(|d| d.metadata.name.clone().unwrap())
        .collect();
    let want: BTreeSet<String> = [
        "internet",
        "fortianalyzer",
        "ems",
        "fortigate",
        "endpoints-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
    assert_eq!(m.services.len(), want.len());
    for o in m.documents().unwrap() {
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "fortilab-lab-7", "{o}");
        }
    }
}

fn pod_labels(p: &Parsed) -> Vec<BTreeMap<String, String>> {
    let mut v: Vec<_> = p
        .deployments
        .iter()
        .map(|d| {
            d.spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap()
        })
        .collect();
    for j in &p.jobs {
        v.push(
            j.spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap(),
        );
    }
    v
}

fn matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_specs(p: &Parsed) -> Vec<(String, PodSpec)> {
    let mut v: Vec<_> = p
        .deployments
        .iter()
        .map(|d| {
            (
                d.metadata.name.clone().unwrap(),
                d.spec.as_ref().unwrap().template.spec.clone().unwrap(),
            )
        })
        .collect();
    for j in &p.jobs {
        v.push((
            j.metadata.name.clone().unwrap(),
            j.spec.as_ref().unwrap().template.spec.clone().unwrap(),
        ));
    }
    v
}

#[test]
fn every_reference_names_an_object_the_manifests_define() {
    let m = seed();
    let p = parse(&m.to_yaml().unwrap());
    let labels = pod_labels(&p);
    let secrets: BTreeSet<String> = p
        .secrets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    let cms: BTreeMap<String, ConfigMap> = p
        .config_maps
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
        .collect();
    let services: BTreeMap<String, Service> = p
        .services
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
        .collect();

    // Service selector → exactly one Deployment's pods; every Service port is a container port.
    for (name, s) in &services {
        let sel = s.spec.as_ref().unwrap().selector.clone().unwrap();
        let hits: Vec<_> = p
            .deployments
            .iter()
            .filter(|d| {
                matches(
                    &sel,
                    d.spec
                        .as_ref()
                        .unwrap()
                        .template
                        .metadata
                        .as_ref()
                        .unwrap()
                        .labels
                        .as_ref()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(hits.len(), 1, "service {name}");
        let spec = hits[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let cports: BTreeSet<(i32, String)> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.clone().unwrap_or_default())
            .map(|p| (p.container_port, p.protocol.unwrap()))
            .collect();
        for sp in s.spec.as_ref().unwrap().ports.as_ref().unwrap() {
            let IntOrString::Int(t) = sp.target_port.clone().unwrap() else {
                panic!("named target port")
            };
            assert!(
                cports.contains(&(t, sp.protocol.clone().unwrap())),
                "service {name} port {t}"
            );
        }
    }

    // Deployment selectors select their own template.
    for d in &p.deployments {
        let spec = d.spec.as_ref().unwrap();
        let sel = spec.selector.match_labels.clone().unwrap();
        assert!(matches(
            &sel,
            spec.template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap()
        ));
    }

    // Volumes name defined Secrets and ConfigMaps; mounts name defined volumes; the init
    // containers' --host and --internet name defined Services; SANs name the pod's Service.
    for (pod, spec) in pod_specs(&p) {
        let vols = spec.volumes.clone().unwrap();
        let vol_names: BTreeSet<String> = vols.iter().map(|v| v.name.clone()).collect();
        for v in &vols {
            if let Some(s) = &v.secret {
                assert!(
                    secrets.contains(s.secret_name.as_ref().unwrap()),
                    "{pod}: {v:?}"
                );
            }
            if let Some(c) = &v.config_map {
                assert!(cms.contains_key(&c.name), "{pod}: {v:?}");
            }
        }
        let all: Vec<Container> = spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(spec.containers.clone())
            .collect();
        for c in &all {
            for mnt in c.volume_mounts.clone().unwrap_or_default() {
                assert!(
                    vol_names.contains(&mnt.name),
                    "{pod}/{}: {}",
                    c.name,
                    mnt.name
                );
            }
            let args = c.args.clone().unwrap_or_default();
            for w in args.windows(2) {
                if w[0] == "--host" {
                    let svc = w[1].split_once('=').unwrap().1;
                    assert!(services.contains_key(svc), "{pod}: --host {}", w[1]);
                }
                if w[0] == "--internet" && !w[1].starts_with("https://") {
                    assert!(services.contains_key(&w[1]), "{pod}: --internet {}", w[1]);
                }
                if w[0] == "--internet" && w[1].starts_with("https://") {
                    let host = w[1]
                        .trim_start_matches("https://")
                        .split(':')
                        .next()
                        .unwrap();
                    assert!(services.contains_key(host), "{pod}: --internet {}", w[1]);
                }
                // Files under /config come from the config ConfigMap.
                if let Some(f) = w[1].strip_prefix("/config/") {
                    assert!(
                        cms[CONFIG].data.as_ref().unwrap().contains_key(f),
                        "{pod}: {} {}",
                        w[0],
                        w[1]
                    );
                }
            }
            for e in c.env.clone().unwrap_or_default() {
                if e.name == fortilab_core::tls::EXTRA_SANS_ENV {
                    let first = e.value.unwrap().split(',').next().unwrap().to_string();
                    assert!(services.contains_key(&first), "{pod}: SAN {first}");
                    assert_eq!(first, pod);
                }
            }
        }
    }

    // NetworkPolicy pod selectors (the policy's and its peers') select pods that exist.
    for pol in &p.policies {
        let spec = pol.spec.as_ref().unwrap();
        let mut sels = vec![spec.pod_selector.clone().unwrap()];
        for r in spec.ingress.clone().unwrap_or_default() {
            sels.extend(r.from.unwrap_or_default().into_iter().filter_map(|x| {
                if x.namespace_selector.is_some() {
                    None
                } else {
                    x.pod_selector
                }
            }));
        }
        for r in spec.egress.clone().unwrap_or_default() {
            sels.extend(r.to.unwrap_or_default().into_iter().filter_map(|x| {
                if x.namespace_selector.is_some() {
                    None
                } else {
                    x.pod_selector
                }
            }));
        }
        for s in sels {
            let Some(ml) = s.match_labels else { continue };
            if ml.is_empty() {
                continue;
            }
            assert!(
                labels.iter().any(|l| matches(&ml, l)),
                "policy {:?} selects nothing: {ml:?}",
                pol.metadata.name
            );
        }
    }

    // The Job: --attach names the file the `report` init container writes on the same volume,
    // that container fetches the devices of lab.json (each a Service with a `ready` port), and
    // every scenario it runs is in the scenarios ConfigMap mounted at /scenarios.
    let job = p.jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let run = &job.containers[0];
    let args = run.args.clone().unwrap();
    let at = args.iter().position(|a| a == "--attach").unwrap();
    let target = &args[at + 1];
    let report = job
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "report")
        .unwrap();
    let rargs = report.args.clone().unwrap();
    let out = rargs.iter().position(|a| a == "--out").unwrap();
    assert_eq!(&rargs[out + 1], target);
    let vol_of = |c: &Container, path: &str| {
        c.volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|mnt| path.starts_with(&format!("{}/", mnt.mount_path)))
            .map(|mnt| mnt.name)
    };
    assert!(vol_of(run, target).is_some());
    assert_eq!(vol_of(run, target), vol_of(report, target));
    let lab: Value = serde_json::from_str(&cms[CONFIG].data.as_ref().unwrap()["lab.json"]).unwrap();
    for d in lab["devices"].as_array().unwrap() {
        let s = &services[d.as_str().unwrap()];
        assert!(s
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.port == i32::from(READY_PORT)));
    }
    for a in &args[at + 2..] {
        let f = a.strip_prefix("/scenarios/").unwrap();
        assert!(cms[SCENARIOS].data.as_ref().unwrap().contains_key(f), "{a}");
    }
}

fn ingress_from(m: &Manifests, server: &str) -> BTreeMap<String, BTreeSet<(i32, String)>> {
    let pol = m
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(&format!("device-{server}")))
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<(i32, String)>> = BTreeMap::new();
    for r in pol.spec.clone().unwrap().ingress.unwrap() {
        let peer = r.from.unwrap()[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        let who = peer
            .get(DEVICE_LABEL)
            .cloned()
            .unwrap_or_else(|| format!("role={}", peer[ROLE_LABEL]));
        for p in r.ports.unwrap() {
            let IntOrString::Int(n) = p.port.unwrap() else {
                panic!()
            };
            out.entry(who.clone())
                .or_default()
                .insert((n, p.protocol.unwrap()));
        }
    }
    out
}

#[test]
fn network_policies_allow_exactly_the_lab_links() {
    let m = seed();
    let t = |n: i32| (n, "TCP".to_string());
    let faz = ingress_from(&m, "fortianalyzer");
    assert_eq!(
        faz["fortigate"],
        [t(443), t(514), t(5514), (5514, "UDP".into())]
            .into_iter()
            .collect()
    );
    assert_eq!(faz["endpoints-1"], [t(514)].into_iter().collect());
    assert!(faz.contains_key("role=runner"));
    assert_eq!(faz.len(), 3, "{faz:?}");
    // The lab Internet is reached by the FortiGate only (and the runner), not by endpoints.
    let inet = ingress_from(&m, "internet");
    assert_eq!(
        inet.keys().cloned().collect::<Vec<_>>(),
        vec!["fortigate".to_string(), "role=runner".to_string()]
    );
    let fgt = ingress_from(&m, "fortigate");
    assert_eq!(fgt["endpoints-1"], [t(8080), t(443)].into_iter().collect());
    // Endpoints accept nobody but the runner.
    assert_eq!(
        ingress_from(&m, "endpoints-1")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["role=runner".to_string()]
    );
    // Everything else is denied, in and out.
    let deny = &m.network_policies[0];
    assert_eq!(deny.metadata.name.as_deref(), Some("default-deny"));
    let spec = deny.spec.as_ref().unwrap();
    assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
    assert!(spec.ingress.is_none() && spec.egress.is_none());
}

#[test]
fn pods_map_every_lab_address_to_its_service() {
    let m = seed();
    let fgt = m
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("fortigate"))
        .unwrap();
    let spec = fgt.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let args = spec.init_containers.as_ref().unwrap()[0]
        .args
        .clone()
        .unwrap();
    for want in [
        "10.115.1.20=fortianalyzer",
        "10.115.1.30=ems",
        "10.115.1.1=fortigate",
        "10.115.2.52=endpoints-1",
        "10.115.0.2=internet",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert!(args.windows(2).any(|w| w == ["--internet", "internet"]));
    // Devices listen on every pod address and read the pod's lab map.
    let dev = &spec.containers[0];
    let dargs = dev.args.clone().unwrap();
    assert!(dargs.windows(2).any(|w| w == ["--listen", "0.0.0.0:443"]));
    assert!(dargs
        .windows(2)
        .any(|w| w == ["--lab-map", fortilab_scenarios::compose::K8S_LABMAP]));
    assert!(dargs
        .windows(2)
        .any(|w| w == ["--internet", "https://internet:8443"]));
}

#[test]
fn namespaces_are_checked_and_derived() {
    assert!(check_namespace("fortilab-lab-7").is_ok());
    for bad in ["", "Lab", "-x", "x-", "a_b", &"a".repeat(64)] {
        assert!(check_namespace(bad).is_err(), "{bad}");
    }
    let mut def = LabDef::seed();
    def.lab.name = "Seed Lab #3".into();
    assert_eq!(default_namespace(&def), "fortilab-seed-lab--3");
    check_namespace(&default_namespace(&def)).unwrap();
    assert_eq!(label_value("a b/c-"), "a-b-c");
}

#[test]
fn write_creates_a_private_file_with_a_real_lab_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&LabDef::seed(), &opts(), dir.path()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&p).unwrap();
    let parsed = parse(&text);
    let data = parsed.secrets[0].data.clone().unwrap();
    let pem = String::from_utf8(data["ca.pem"].0.clone()).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    let secrets: Value = serde_json::from_slice(&data["secrets.json"].0).unwrap();
    assert!(secrets.is_object());
    assert!(text.contains("kubectl apply -f"));
}

mod runtime {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use serde_json::json;

    use crate::runtime::*;

    #[test]
    fn hosts_parse_and_map_to_service_addresses() {
        let h = parse_host("10.115.1.20=fortianalyzer").unwrap();
        assert_eq!(h, ("10.115.1.20".parse().unwrap(), "fortianalyzer".into()));
        assert!(parse_host("10.115.1.20").is_err());
        assert!(parse_host("x=faz").is_err());
        assert!(parse_host("10.115.1.20=").is_err());
        let resolved: HashMap<String, IpAddr> = [
            ("fortianalyzer".to_string(), "10.96.0.20".parse().unwrap()),
            ("internet".to_string(), "10.96.0.2".parse().unwrap()),
        ]
        .into_iter()
        .collect();
        let m = lab_map(std::slice::from_ref(&h), Some("internet"), &resolved).unwrap();
        assert_eq!(
            m.resolve("10.115.1.20:514".parse().unwrap()),
            "10.96.0.20:514".parse().unwrap()
        );
        assert_eq!(
            m.resolve("89.238.73.97:443".parse().unwrap()),
            "10.96.0.2:443".parse().unwrap()
        );
        assert_eq!(m.lab_of_real("10.96.0.20".parse().unwrap()), Some(h.0));
        assert!(lab_map(
            &[("10.115.1.30".parse().unwrap(), "ems".into())],
            None,
            &resolved
        )
        .is_err());
    }

    #[test]
    fn listeners_on_any_address_are_named_by_the_service() {
        let v = json!({"api": "https://127.0.0.1:443", "ssh": "0.0.0.0:22",
                       "endpoints": [{"control": "https://0.0.0.0:443/x"}],
                       "lab_ip": "10.115.1.20", "note": "127.0.0.1:22 is loopback"});
        let r = rewrite_listeners(&v, "fortianalyzer");
        assert_eq!(r["api"], "https://fortianalyzer:443");
        assert_eq!(r["ssh"], "fortianalyzer:22");
        assert_eq!(r["endpoints"][0]["control"], "https://fortianalyzer:443/x");
        assert_eq!(r["lab_ip"], "10.115.1.20");
        assert_eq!(r["note"], "127.0.0.1:22 is loopback");
    }
}
