//! The lab definition format (TOML): the topology a lab runs.
//!
//! Every section is optional; what is left out is the seed lab of the Fortinet article
//! (FortiGate 6.4.4 with the seed's policy and stitch, FortiAnalyzer 6.4.5, EMS 6.4.3, endpoint
//! PC-52 at 10.115.2.52, the default lab Internet). A scenario file is a lab definition plus a
//! `[scenario]` table and `[[step]]`s (see [`crate::scenario`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use fortilab_core::binary::Timing;
use fortilab_core::secrets::SecretsMode;

/// The seed FortiGate configuration (FortiOS CLI), used when a lab names none.
pub const SEED_FORTIGATE_CONF: &str = include_str!("../labs/seed-fortigate.conf");

/// A parsed lab definition.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LabDef {
    #[serde(default)]
    pub lab: LabSection,
    #[serde(default)]
    pub fortigate: FortiGateDef,
    #[serde(default)]
    pub fortianalyzer: FazDef,
    #[serde(default)]
    pub ems: EmsDef,
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<EndpointDef>,
    #[serde(default)]
    pub internet: InternetDef,
    /// Scenario metadata (only in scenario files).
    #[serde(default)]
    pub scenario: Option<crate::scenario::ScenarioMeta>,
    /// Scenario steps (only in scenario files); parsed by [`crate::scenario`].
    #[serde(default)]
    pub step: Vec<toml::Spanned<toml::Table>>,
    /// Exercise metadata (only in exercise files, see [`crate::exercise`]).
    #[serde(default)]
    pub exercise: Option<crate::exercise::ExerciseMeta>,
    /// Exercise tasks (only in exercise files); parsed by [`crate::exercise`].
    #[serde(default)]
    pub task: Vec<toml::Spanned<toml::Table>>,
    /// The directory relative paths are taken from.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this definition came from (`<seed lab>` for the built-in one).
    #[serde(skip)]
    pub source: String,
}

/// `[lab]`: name, seed, timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    #[serde(default = "default_lab_name")]
    pub name: String,
    /// One seed drives every random choice.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `fast` shrinks product delays to milliseconds; `realistic` keeps the products' intervals.
    #[serde(default = "default_timing")]
    pub timing: Timing,
    /// Lab seconds per real second.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Lab time at start, `YYYY-MM-DD HH:MM:SS` (lab-local); default: now.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Lab time zone offset, FortiOS style (`-0800`).
    #[serde(default = "default_tz")]
    pub tz: String,
    /// Where the credentials come from: `random` (default: the OS CSPRNG, per lab) or
    /// `seeded` (derived from the seed: the same seed gives the same passwords and keys).
    /// Session ids, CSRF tokens, access codes and the lab token are random either way.
    #[serde(default)]
    pub secrets: SecretsMode,
    /// `loopback` (default: every device on 127.0.0.1 ports, lab addresses mapped) or
    /// `namespaces` (root: each device in its own network namespace at its real lab
    /// addresses; `fortilab up --network namespaces`).
    #[serde(default)]
    pub network: NetworkMode,
}

/// How a lab's devices are networked (`[lab] network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Loopback,
    Namespaces,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Loopback => "loopback",
            NetworkMode::Namespaces => "namespaces",
        }
    }
}

impl Default for LabSection {
    fn default() -> Self {
        Self {
            name: default_lab_name(),
            seed: default_seed(),
            timing: default_timing(),
            speed: default_speed(),
            epoch: None,
            tz: default_tz(),
            secrets: SecretsMode::Random,
            network: NetworkMode::Loopback,
        }
    }
}

/// `[fortigate]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FortiGateDef {
    #[serde(default = "default_fgt_name")]
    pub name: String,
    #[serde(default = "default_fgt_version")]
    pub version: String,
    /// FortiOS CLI configuration file (relative to the lab file). Default: the seed's.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// FortiOS CLI configuration given inline (instead of `config`).
    #[serde(default)]
    pub config_text: Option<String>,
    /// Management address (port1 side).
    #[serde(default = "default_fgt_mgmt")]
    pub mgmt_ip: Ipv4Addr,
    /// The port3 (LAN) address endpoints use as their explicit proxy.
    #[serde(default = "default_fgt_lan")]
    pub lan_ip: Ipv4Addr,
    #[serde(default = "default_proxy_port")]
    pub proxy_port: u16,
}

impl Default for FortiGateDef {
    fn default() -> Self {
        Self {
            name: default_fgt_name(),
            version: default_fgt_version(),
            config: None,
            config_text: None,
            mgmt_ip: default_fgt_mgmt(),
            lan_ip: default_fgt_lan(),
            proxy_port: default_proxy_port(),
        }
    }
}

/// `[fortianalyzer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FazDef {
    #[serde(default = "default_faz_name")]
    pub name: String,
    #[serde(default = "default_faz_version")]
    pub version: String,
    #[serde(default = "default_faz_ip")]
    pub ip: Ipv4Addr,
    /// Authorize devices on first contact (a real FortiAnalyzer needs an admin to).
    #[serde(default = "yes")]
    pub auto_authorize: bool,
    /// Additions to the default lab TIDB package.
    #[serde(default)]
    pub tidb: TidbDef,
}

impl Default for FazDef {
    fn default() -> Self {
        Self {
            name: default_faz_name(),
            version: default_faz_version(),
            ip: default_faz_ip(),
            auto_authorize: true,
            tidb: TidbDef::default(),
        }
    }
}

/// TIDB additions.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TidbDef {
    #[serde(default)]
    pub black_ips: Vec<String>,
    #[serde(default)]
    pub black_domains: Vec<String>,
    #[serde(default)]
    pub black_urls: Vec<String>,
    #[serde(default)]
    pub suspicious_urls: Vec<SuspiciousUrl>,
}

/// A scored suspicious URL.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SuspiciousUrl {
    pub url: String,
    pub score: u32,
}

/// `[ems]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmsDef {
    #[serde(default = "default_ems_name")]
    pub name: String,
    #[serde(default = "default_ems_version")]
    pub version: String,
    #[serde(default = "default_ems_ip")]
    pub ip: Ipv4Addr,
    /// Authorize FortiGates on first contact (a real EMS needs an admin to).
    #[serde(default = "yes")]
    pub auto_authorize: bool,
    /// Keep-alive interval handed to FortiClient, lab seconds (default: the product's 60 s;
    /// `timing = "fast"` shrinks it).
    #[serde(default)]
    pub ka_interval: Option<f64>,
}

impl Default for EmsDef {
    fn default() -> Self {
        Self {
            name: default_ems_name(),
            version: default_ems_version(),
            ip: default_ems_ip(),
            auto_authorize: true,
            ka_interval: None,
        }
    }
}

/// `[[endpoints]]`: one endpoint, or `count` of them named by a pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDef {
    /// Name, or a pattern with `{n}` (the last octet of each address).
    pub name: String,
    /// The (first) lab address.
    pub ip: Ipv4Addr,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub user: Option<String>,
}

/// `[internet]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InternetDef {
    /// Sites added to the built-in default set.
    #[serde(default)]
    pub sites: Vec<SiteDef>,
}

/// A lab Internet site.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDef {
    pub host: String,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub category: u32,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Extra pages: path → body.
    #[serde(default)]
    pub pages: std::collections::BTreeMap<String, String>,
}

fn default_lab_name() -> String {
    "seed".into()
}
fn default_seed() -> u64 {
    1
}
fn default_timing() -> Timing {
    Timing::Fast
}
fn default_speed() -> f64 {
    1.0
}
fn default_tz() -> String {
    "-0800".into()
}
fn default_fgt_name() -> String {
    "FGT-LAB".into()
}
fn default_fgt_version() -> String {
    "6.4.4".into()
}
fn default_fgt_mgmt() -> Ipv4Addr {
    Ipv4Addr::new(10, 115, 1, 1)
}
fn default_fgt_lan() -> Ipv4Addr {
    Ipv4Addr::new(10, 115, 2, 1)
}
fn default_proxy_port() -> u16 {
    8080
}
fn default_faz_name() -> String {
    "FAZ-LAB".into()
}
fn default_faz_version() -> String {
    "6.4.5".into()
}
fn default_faz_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 115, 1, 20)
}
fn default_ems_name() -> String {
    "EMS-LAB".into()
}
fn default_ems_version() -> String {
    "6.4.3".into()
}
fn default_ems_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 115, 1, 30)
}
fn default_endpoints() -> Vec<EndpointDef> {
    vec![EndpointDef {
        name: "PC-52".into(),
        ip: Ipv4Addr::new(10, 115, 2, 52),
        count: 1,
        user: None,
    }]
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

/// An error in a lab or scenario file, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct DefError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl DefError {
    pub fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, offset);
        Self {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, column)
}

/// One concrete endpoint after expanding patterns.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub user: Option<String>,
}

impl LabDef {
    /// The built-in seed lab.
    pub fn seed() -> Self {
        let mut def: LabDef = toml::from_str("").expect("empty lab parses");
        def.endpoints = default_endpoints();
        def.source = "<seed lab>".into();
        def.base_dir = PathBuf::from(".");
        def
    }

    /// Parses a lab or scenario file.
    pub fn load(path: &Path) -> Result<Self, DefError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DefError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let mut def = Self::parse(&file, &text)?;
        def.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        def.validate(&file, &text)?;
        Ok(def)
    }

    /// Parses TOML text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, DefError> {
        let mut def: LabDef = toml::from_str(text).map_err(|err| {
            let offset = err.span().map(|s| s.start).unwrap_or(0);
            DefError::at(file, text, offset, err.message().to_string())
        })?;
        def.source = file.to_string();
        Ok(def)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), DefError> {
        let err = |needle: &str, msg: String| {
            let offset = text.find(needle).unwrap_or(0);
            DefError::at(file, text, offset, msg)
        };
        if !(self.lab.speed.is_finite() && self.lab.speed > 0.0 && self.lab.speed <= 100_000.0) {
            return Err(err(
                "speed",
                format!("speed must be in (0, 100000], got {}", self.lab.speed),
            ));
        }
        if parse_tz(&self.lab.tz).is_none() {
            return Err(err(
                "tz",
                format!("tz must look like -0800 or +0530, got {:?}", self.lab.tz),
            ));
        }
        if let Some(e) = &self.lab.epoch {
            if fortilab_core::clock::parse_date_time(e, 0).is_none() {
                return Err(err(
                    "epoch",
                    format!("epoch must be YYYY-MM-DD HH:MM:SS, got {e:?}"),
                ));
            }
        }
        if self.fortigate.config.is_some() && self.fortigate.config_text.is_some() {
            return Err(err(
                "config_text",
                "give the FortiGate `config` or `config_text`, not both".into(),
            ));
        }
        if let Some(p) = &self.fortigate.config {
            let full = self.base_dir.join(p);
            if !full.exists() {
                return Err(err(
                    "config",
                    format!("FortiGate config {} does not exist", full.display()),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for ep in self.endpoint_specs() {
            if !names.insert(ep.name.clone()) {
                return Err(err(
                    &ep.name,
                    format!("endpoint name {} is used twice", ep.name),
                ));
            }
        }
        for ep in &self.endpoints {
            if ep.count == 0 || ep.count > 100_000 {
                return Err(err(
                    "count",
                    format!("endpoint count must be 1..=100000, got {}", ep.count),
                ));
            }
            if ep.count > 1 && !ep.name.contains("{n}") && !ep.name.contains("{i}") {
                return Err(err(
                    &ep.name,
                    format!(
                        "endpoint {:?}: count > 1 needs {{n}} or {{i}} in the name",
                        ep.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every endpoint, patterns expanded.
    pub fn endpoint_specs(&self) -> Vec<EndpointSpec> {
        let mut out = Vec::new();
        for ep in &self.endpoints {
            for (i, ip) in block_addrs(ep.ip, ep.count).into_iter().enumerate() {
                let i = i as u32;
                let name = ep
                    .name
                    .replace("{n}", &ip.octets()[3].to_string())
                    .replace("{i}", &(i + 1).to_string());
                out.push(EndpointSpec {
                    name,
                    ip,
                    user: ep.user.clone(),
                });
            }
        }
        out
    }

    /// The FortiGate configuration text.
    pub fn fortigate_config(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.fortigate.config_text {
            return Ok(t.clone());
        }
        if let Some(p) = &self.fortigate.config {
            let full = self.base_dir.join(p);
            return std::fs::read_to_string(&full)
                .map_err(|e| anyhow::anyhow!("{}: {e}", full.display()));
        }
        Ok(SEED_FORTIGATE_CONF.to_string())
    }

    /// Lab time zone offset in minutes.
    pub fn tz_minutes(&self) -> i32 {
        parse_tz(&self.lab.tz).unwrap_or(0)
    }
}

/// The addresses of an `[[endpoints]]` block: `count` up from `ip`, skipping `.0` and `.255`
/// (as `sim-endpoint` numbers them).
pub fn block_addrs(ip: Ipv4Addr, count: u32) -> Vec<Ipv4Addr> {
    let mut out = Vec::with_capacity(count as usize);
    let mut a = u32::from(ip);
    while out.len() < count as usize {
        if !matches!(a & 0xff, 0 | 255) {
            out.push(Ipv4Addr::from(a));
        }
        match a.checked_add(1) {
            Some(n) => a = n,
            None => break,
        }
    }
    out
}

/// `-0800` → -480.
pub fn parse_tz(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = rest[..2].parse().ok()?;
    let m: i32 = rest[2..].parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_seed_lab() {
        let d = LabDef::parse("x.toml", "").unwrap();
        assert_eq!(d.fortigate.version, "6.4.4");
        assert_eq!(d.fortianalyzer.ip, Ipv4Addr::new(10, 115, 1, 20));
        let eps = LabDef::seed().endpoint_specs();
        assert_eq!(
            eps,
            vec![EndpointSpec {
                name: "PC-52".into(),
                ip: Ipv4Addr::new(10, 115, 2, 52),
                user: None
            }]
        );
        assert!(LabDef::seed()
            .fortigate_config()
            .unwrap()
            .contains("Compromised Host Quarantine"));
    }

    #[test]
    fn patterns_expand_and_errors_have_lines() {
        let d = LabDef::parse(
            "x.toml",
            "[[endpoints]]\nname = \"PC-{n}\"\nip = \"10.115.2.60\"\ncount = 3\n",
        )
        .unwrap();
        let names: Vec<String> = d.endpoint_specs().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["PC-60", "PC-61", "PC-62"]);
        let e = LabDef::parse("x.toml", "[lab]\nname = \"a\"\nsped = 2\n").unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (3, "x.toml"));
        assert!(e.message.contains("sped"), "{}", e.message);
    }

    #[test]
    fn secrets_are_random_unless_the_lab_asks_for_seeded() {
        assert_eq!(LabDef::seed().lab.secrets, SecretsMode::Random);
        let d = LabDef::parse("x.toml", "[lab]\nsecrets = \"seeded\"\n").unwrap();
        assert_eq!(d.lab.secrets, SecretsMode::Seeded);
        let e = LabDef::parse("x.toml", "[lab]\nsecrets = \"fixed\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("random"), "{}", e.message);
    }

    #[test]
    fn tz_parsing() {
        assert_eq!(parse_tz("-0800"), Some(-480));
        assert_eq!(parse_tz("+0530"), Some(330));
        assert_eq!(parse_tz("0800"), None);
    }
}
