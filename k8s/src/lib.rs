//! `fortilab k8s`: one lab as Kubernetes objects in one namespace, built from the typed objects of
//! the `k8s-openapi` crate (valid by construction) and from the same plan as `fortilab compose`
//! ([`fortilab_scenarios::compose::plan`], with [`Addressing::Services`]).
//!
//! What is written (`DIR/<namespace>.yaml`, mode 0600: it holds the lab CA key):
//!
//! | object | what |
//! |---|---|
//! | `Namespace` | the lab's namespace |
//! | `Secret` `fortilab-lab` | the lab CA (`ca.pem`, `ca.key`) and `secrets.json` (credentials, API keys, the lab token), created by `fortilab k8s` |
//! | `ConfigMap` `fortilab-config` | the devices' configuration files and `lab.json` (the plan) |
//! | `ConfigMap` `fortilab-scenarios` | the scenarios the Job runs |
//! | per device: `Deployment` + `Service` | the device's container and a `ready` sidecar serving its ready report; a Service of the same name with the device's ports |
//! | `NetworkPolicy` `default-deny`, `dns`, one per device, `runner` | nothing in or out but DNS, the lab's links (client → server ports) and the runner's access to every device |
//! | `Job` `fortilab-scenarios` | collects the ready report (`k8s-report`), then `fortilab run --attach` |
//!
//! Addressing (CNI-independent): a pod cannot hold the lab's addresses (10.115.1.20 …) without
//! privileges or a particular CNI, so every device listens on all of its pod's addresses, and each
//! pod's init container (`fortilab k8s-init`) resolves the lab's Services by name and writes the
//! pod's lab map: `hosts` maps every lab address to the cluster IP of the Service of the device
//! that owns it (ports are the same). Configurations keep speaking lab addresses; endpoints still
//! carry their own lab address in the PROXY header to the FortiGate's proxy, as on loopback.
//! Certificates carry the Service names too (`FORTILAB_TLS_SANS`), so the runner verifies a
//! device reached by its Service name.

pub mod cli;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    ExecAction, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Secret,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use serde_json::Value;

use fortilab_scenarios::compose::{self, Addressing, ComposeOptions, Plan};
use fortilab_scenarios::labdef::LabDef;

/// The port of each device pod's `ready` sidecar (its ready report, lab token required).
pub const READY_PORT: u16 = 9443;
/// The Secret holding the lab CA and secrets.
pub const SECRET: &str = "fortilab-lab";
/// The ConfigMap of the devices' configuration.
pub const CONFIG: &str = "fortilab-config";
/// The ConfigMap of the Job's scenarios.
pub const SCENARIOS: &str = "fortilab-scenarios";
/// The scenario Job.
pub const JOB: &str = "fortilab-scenarios";
/// Label naming a pod's device (its Service selects on it).
pub const DEVICE_LABEL: &str = "fortilab.io/device";
/// Label of the scenario runner's pod.
pub const ROLE_LABEL: &str = "fortilab.io/role";
/// Where the Job's report container writes the ready report it attaches to.
pub const JOB_READY: &str = "/lab/ready.json";
/// The unprivileged user every container runs as.
pub const UID: i64 = 65532;

/// Options of `fortilab k8s`.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    pub namespace: String,
    pub image: String,
    /// Scenario files the Job runs: file name → TOML.
    pub scenarios: Vec<(String, String)>,
    pub clock: fortilab_core::LabClock,
}

/// The lab's files the Secret carries: file name → bytes.
pub type SecretFiles = BTreeMap<String, Vec<u8>>;

/// Every object of one lab, typed.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub namespace: Namespace,
    pub secret: Secret,
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub network_policies: Vec<NetworkPolicy>,
    pub job: Job,
}

impl Manifests {
    /// Every object as JSON, in the order `kubectl apply` needs (namespace first).
    pub fn documents(&self) -> anyhow::Result<Vec<Value>> {
        let mut v = vec![
            serde_json::to_value(&self.namespace)?,
            serde_json::to_value(&self.secret)?,
        ];
        for c in &self.config_maps {
            v.push(serde_json::to_value(c)?);
        }
        for s in &self.services {
            v.push(serde_json::to_value(s)?);
        }
        for d in &self.deployments {
            v.push(serde_json::to_value(d)?);
        }
        for p in &self.network_policies {
            v.push(serde_json::to_value(p)?);
        }
        v.push(serde_json::to_value(&self.job)?);
        Ok(v)
    }

    /// A multi-document YAML stream (`kubectl apply -f`).
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        for d in self.documents()? {
            out.push_str("---\n");
            out.push_str(&compose::to_yaml(&d));
        }
        Ok(out)
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str, ns: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut l = labels(&[("app.kubernetes.io/part-of", "fortilab")]);
    l.extend(labels(extra));
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(l),
        ..Default::default()
    }
}

fn select(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..Default::default()
    }
}

fn device_selector(name: &str) -> LabelSelector {
    select(&[(DEVICE_LABEL, name)])
}

fn runner_selector() -> LabelSelector {
    select(&[(ROLE_LABEL, "runner")])
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn secret_volume() -> Volume {
    Volume {
        name: "secrets".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(SECRET.into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_volume(volume: &str, config_map: &str) -> Volume {
    Volume {
        name: volume.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn lab_volume() -> Volume {
    Volume {
        name: "lab".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(UID),
        run_as_group: Some(UID),
        fs_group: Some(UID),
        run_as_non_root: Some(true),
        // The products' ports (22, 443, 514) without privileges: a "safe" sysctl.
        sysctls: Some(vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]),
        ..Default::default()
    }
}

/// The Service names a device's certificates carry.
fn sans(name: &str, ns: &str) -> String {
    format!("{name},{name}.{ns},{name}.{ns}.svc,{name}.{ns}.svc.cluster.local")
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// The init container of every pod: the secrets copied to the lab volume, the lab map written.
fn init_container(image: &str, hosts: &[(String, String)], internet: bool) -> Container {
    let mut args: Vec<String> = vec![
        "k8s-init".into(),
        "--secrets".into(),
        "/secrets".into(),
        "--lab".into(),
        "/lab".into(),
    ];
    for (ip, svc) in hosts {
        args.push("--host".into());
        args.push(format!("{ip}={svc}"));
    }
    if internet {
        args.extend(["--internet".into(), "internet".into()]);
    }
    Container {
        name: "init".into(),
        image: Some(image.into()),
        command: Some(vec!["/fortilab".into()]),
        args: Some(args),
        volume_mounts: Some(vec![
            mount("secrets", "/secrets", true),
            mount("lab", "/lab", false),
        ]),
        ..Default::default()
    }
}

fn tcp_port(p: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(p.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The policy ports of `ports` on `server` (UDP as well where the server listens on UDP).
fn policy_ports(plan: &Plan, server: &str, ports: &[u16]) -> Vec<NetworkPolicyPort> {
    let mut out = Vec::new();
    for &p in ports {
        out.push(tcp_port(p));
        let udp = plan
            .device(server)
            .is_some_and(|d| d.ports.iter().any(|x| x.port == p && x.udp));
        if udp {
            out.push(NetworkPolicyPort {
                port: Some(IntOrString::Int(p.into())),
                protocol: Some("UDP".into()),
                ..Default::default()
            });
        }
    }
    out
}

/// Every port of a device (and its ready sidecar): what the runner may reach.
fn all_ports(plan: &Plan, device: &str) -> Vec<u16> {
    let mut v: Vec<u16> = plan
        .device(device)
        .map(|d| d.ports.iter().map(|p| p.port).collect())
        .unwrap_or_default();
    v.push(READY_PORT);
    v
}

/// The objects of a lab. `secret_files` are the lab CA and secrets (see [`write`]).
pub fn manifests(
    def: &LabDef,
    opts: &K8sOptions,
    secret_files: &SecretFiles,
) -> anyhow::Result<Manifests> {
    let ns = opts.namespace.as_str();
    let copts = ComposeOptions {
        image: opts.image.clone(),
        lab_dir: "/lab".into(),
        clock: opts.clock,
        addressing: Addressing::Services,
    };
    let plan = compose::plan(def, &copts)?;
    let image = opts.image.as_str();
    let lab_name = def.lab.name.as_str();

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            labels: Some(labels(&[
                ("app.kubernetes.io/part-of", "fortilab"),
                ("fortilab.io/lab", &label_value(lab_name)),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta(SECRET, ns, &[]),
        type_: Some("Opaque".into()),
        data: Some(
            secret_files
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    };
    let config = ConfigMap {
        metadata: meta(CONFIG, ns, &[]),
        data: Some(
            plan.files
                .iter()
                // Compose's lab maps: a pod's is written by its init container.
                .filter(|(n, _)| !n.starts_with("labmap"))
                .cloned()
                .collect(),
        ),
        ..Default::default()
    };
    let scenarios = ConfigMap {
        metadata: meta(SCENARIOS, ns, &[]),
        data: Some(opts.scenarios.iter().cloned().collect()),
        ..Default::default()
    };

    // Every lab address → the Service of the device that owns it.
    let mut hosts: Vec<(String, String)> = plan
        .lab_hosts(def)
        .into_iter()
        .map(|(ip, d)| (ip.to_string(), d))
        .collect();
    hosts.sort();
    hosts.dedup();

    let mut services = Vec::new();
    let mut deployments = Vec::new();
    let mut network_policies = Vec::new();
    for d in &plan.devices {
        let name = d.name.as_str();
        let dev_labels = [(DEVICE_LABEL, name)];
        let mut sports = Vec::new();
        let mut cports = Vec::new();
        for p in &d.ports {
            for (proto, suffix) in [("TCP", ""), ("UDP", "-udp")] {
                if proto == "UDP" && !p.udp {
                    continue;
                }
                let pname = format!("{}{suffix}", p.name);
                sports.push(ServicePort {
                    name: Some(pname.clone()),
                    port: p.port.into(),
                    target_port: Some(IntOrString::Int(p.port.into())),
                    protocol: Some(proto.into()),
                    ..Default::default()
                });
                cports.push(ContainerPort {
                    name: Some(pname),
                    container_port: p.port.into(),
                    protocol: Some(proto.into()),
                    ..Default::default()
                });
            }
        }
        sports.push(ServicePort {
            name: Some("ready".into()),
            port: READY_PORT.into(),
            target_port: Some(IntOrString::Int(READY_PORT.into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
        services.push(Service {
            metadata: meta(name, ns, &dev_labels),
            spec: Some(ServiceSpec {
                selector: Some(labels(&dev_labels)),
                ports: Some(sports),
                ..Default::default()
            }),
            ..Default::default()
        });

        let ready_file = format!("/lab/ready/{name}.json");
        let device = Container {
            name: "device".into(),
            image: Some(image.into()),
            command: Some(vec![format!("/{}", d.program)]),
            args: Some(d.args.clone()),
            env: Some(vec![env(
                fortilab_core::tls::EXTRA_SANS_ENV,
                sans(name, ns),
            )]),
            ports: Some(cports),
            readiness_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/fortilab".into(),
                        "ready-check".into(),
                        ready_file.clone(),
                    ]),
                }),
                period_seconds: Some(1),
                failure_threshold: Some(3),
                ..Default::default()
            }),
            volume_mounts: Some(vec![
                mount("lab", "/lab", false),
                mount("config", "/config", true),
            ]),
            ..Default::default()
        };
        let ready = Container {
            name: "ready".into(),
            image: Some(image.into()),
            command: Some(vec!["/fortilab".into()]),
            args: Some(vec![
                "k8s-ready-serve".into(),
                "--file".into(),
                ready_file,
                "--lab".into(),
                "/lab".into(),
                "--listen".into(),
                format!("0.0.0.0:{READY_PORT}"),
            ]),
            env: Some(vec![env(
                fortilab_core::tls::EXTRA_SANS_ENV,
                sans(name, ns),
            )]),
            ports: Some(vec![ContainerPort {
                name: Some("ready".into()),
                container_port: READY_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            volume_mounts: Some(vec![mount("lab", "/lab", true)]),
            ..Default::default()
        };
        deployments.push(Deployment {
            metadata: meta(name, ns, &dev_labels),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: device_selector(name),
                // One instance at a time: a device's state and identity are its own.
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..Default::default()
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[
                            ("app.kubernetes.io/part-of", "fortilab"),
                            (DEVICE_LABEL, name),
                        ])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        init_containers: Some(vec![init_container(
                            image,
                            &hosts,
                            name == "fortigate",
                        )]),
                        containers: vec![device, ready],
                        volumes: Some(vec![
                            secret_volume(),
                            config_volume("config", CONFIG),
                            lab_volume(),
                        ]),
                        security_context: Some(pod_security()),
                        enable_service_links: Some(false),
                        termination_grace_period_seconds: Some(15),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        });

        // This device's links: in from its clients (and the runner), out to its servers.
        let mut ingress: Vec<NetworkPolicyIngressRule> = plan
            .links
            .iter()
            .filter(|l| l.server == name)
            .map(|l| NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(device_selector(&l.client)),
                    ..Default::default()
                }]),
                ports: Some(policy_ports(&plan, name, &l.ports)),
            })
            .collect();
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(runner_selector()),
                ..Default::default()
            }]),
            ports: Some(policy_ports(&plan, name, &all_ports(&plan, name))),
        });
        let egress: Vec<NetworkPolicyEgressRule> = plan
            .links
            .iter()
            .filter(|l| l.client == name)
            .map(|l| NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(device_selector(&l.server)),
                    ..Default::default()
                }]),
                ports: Some(policy_ports(&plan, &l.server, &l.ports)),
            })
            .collect();
        network_policies.push(NetworkPolicy {
            metadata: meta(&format!("device-{name}"), ns, &[]),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(device_selector(name)),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(ingress),
                egress: Some(egress),
            }),
        });
    }
    network_policies.insert(
        0,
        NetworkPolicy {
            metadata: meta("default-deny", ns, &[]),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            }),
        },
    );
    network_policies.insert(
        1,
        NetworkPolicy {
            metadata: meta("dns", ns, &[]),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(select(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )])),
                        pod_selector: Some(select(&[("k8s-app", "kube-dns")])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![
                        NetworkPolicyPort {
                            port: Some(IntOrString::Int(53)),
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                        tcp_port(53),
                    ]),
                }]),
                ..Default::default()
            }),
        },
    );
    network_policies.push(NetworkPolicy {
        metadata: meta("runner", ns, &[]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runner_selector()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![]),
            egress: Some(
                plan.devices
                    .iter()
                    .map(|d| NetworkPolicyEgressRule {
                        to: Some(vec![NetworkPolicyPeer {
                            pod_selector: Some(device_selector(&d.name)),
                            ..Default::default()
                        }]),
                        ports: Some(policy_ports(&plan, &d.name, &all_ports(&plan, &d.name))),
                    })
                    .collect(),
            ),
        }),
    });

    let job = job(opts, &plan)?;
    Ok(Manifests {
        namespace,
        secret,
        config_maps: vec![config, scenarios],
        services,
        deployments,
        network_policies,
        job,
    })
}

fn job(opts: &K8sOptions, plan: &Plan) -> anyhow::Result<Job> {
    let ns = opts.namespace.as_str();
    let image = opts.image.as_str();
    let report = Container {
        name: "report".into(),
        image: Some(image.into()),
        command: Some(vec!["/fortilab".into()]),
        args: Some(vec![
            "k8s-report".into(),
            "--config".into(),
            "/config".into(),
            "--lab".into(),
            "/lab".into(),
            "--out".into(),
            JOB_READY.into(),
        ]),
        volume_mounts: Some(vec![
            mount("lab", "/lab", false),
            mount("config", "/config", true),
        ]),
        ..Default::default()
    };
    if plan.devices.is_empty() {
        anyhow::bail!("a lab without devices");
    }
    let mut args: Vec<String> = vec!["run".into(), "--attach".into(), JOB_READY.into()];
    for (name, _) in &opts.scenarios {
        args.push(format!("/scenarios/{name}"));
    }
    let run = Container {
        name: "run".into(),
        image: Some(image.into()),
        command: Some(vec!["/fortilab".into()]),
        args: Some(args),
        volume_mounts: Some(vec![
            mount("lab", "/lab", false),
            mount("scenarios", "/scenarios", true),
        ]),
        ..Default::default()
    };
    let role = [(ROLE_LABEL, "runner")];
    Ok(Job {
        metadata: meta(JOB, ns, &role),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[
                        ("app.kubernetes.io/part-of", "fortilab"),
                        (ROLE_LABEL, "runner"),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    init_containers: Some(vec![init_container(image, &[], false), report]),
                    containers: vec![run],
                    volumes: Some(vec![
                        secret_volume(),
                        config_volume("config", CONFIG),
                        config_volume("scenarios", SCENARIOS),
                        lab_volume(),
                    ]),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(UID),
                        run_as_group: Some(UID),
                        fs_group: Some(UID),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A label value from any text: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A valid namespace name (RFC 1123 label) or what is wrong with it.
pub fn check_namespace(ns: &str) -> anyhow::Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        anyhow::bail!("--namespace {ns:?}: a namespace is 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit")
    }
}

/// The default namespace of a lab: `fortilab-<lab name>`.
pub fn default_namespace(def: &LabDef) -> String {
    let mut n: String = format!("fortilab-{}", def.lab.name)
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    while n.ends_with('-') {
        n.pop();
    }
    n
}

/// The lab CA and secrets of a new lab, created in a temporary directory: the Secret's files.
pub fn new_secret_files(def: &LabDef, opts: &K8sOptions) -> anyhow::Result<SecretFiles> {
    let copts = ComposeOptions {
        image: opts.image.clone(),
        lab_dir: "/lab".into(),
        clock: opts.clock,
        addressing: Addressing::Services,
    };
    let plan = compose::plan(def, &copts)?;
    let tmp = std::env::temp_dir().join(format!(
        "fortilab-k8s-{}-{}",
        std::process::id(),
        opts.namespace
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> anyhow::Result<SecretFiles> {
        compose::create_ca_and_secrets(&plan.lab_json, &tmp)?;
        let mut files = SecretFiles::new();
        for (key, path) in [
            ("ca.pem", tmp.join("ca").join("ca.pem")),
            ("ca.key", tmp.join("ca").join("ca.key")),
            (
                fortilab_core::secrets::SECRETS_FILE,
                tmp.join(fortilab_core::secrets::SECRETS_FILE),
            ),
        ] {
            files.insert(
                key.to_string(),
                std::fs::read(&path).with_context(|| path.display().to_string())?,
            );
        }
        Ok(files)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// `fortilab k8s`: writes `DIR/<namespace>.yaml` (mode 0600) and returns its path.
pub fn write(def: &LabDef, opts: &K8sOptions, dir: &Path) -> anyhow::Result<PathBuf> {
    check_namespace(&opts.namespace)?;
    let files = new_secret_files(def, opts)?;
    let m = manifests(def, opts, &files)?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let path = dir.join(format!("{}.yaml", opts.namespace));
    let head = format!(
        "# fortilab lab {:?} in namespace {}, written by `fortilab k8s` from {}.\n\
         # It holds the lab CA key and credentials (Secret {SECRET}): keep it private.\n\
         # kubectl apply -f {}; kubectl -n {} wait --for=condition=complete job/{JOB} --timeout=10m\n",
        def.lab.name,
        opts.namespace,
        def.source,
        path.display(),
        opts.namespace,
    );
    fortilab_core::secrets::write_private(&path, format!("{head}{}", m.to_yaml()?).as_bytes())
        .with_context(|| path.display().to_string())?;
    Ok(path)
}

#[cfg(test)]
mod tests;
