//! The lab Internet's sites: host names, lab IPs, FortiGuard categories and pages, from a TOML
//! definition or the built-in default set. Pure data and lookups (no sockets).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use fortilab_core::fortiguard;
use serde::{Deserialize, Serialize};

/// The FortiGuard description of a category id (`"Unknown"` for ids FortiGuard does not use):
/// `Unrated` (0), the FortiOS 6.4 names and the named ids 7.0 and 7.2 added
/// (`reference/fortios.md` §5.3).
pub fn category_name(id: u8) -> &'static str {
    if id == 0 {
        return "Unrated";
    }
    fortiguard::CATEGORIES_6_4
        .iter()
        .chain(fortiguard::ADDED_7_0)
        .chain(fortiguard::ADDED_7_2)
        .find(|(c, _)| *c == id)
        .map(|(_, n)| *n)
        .filter(|n| !fortiguard::is_placeholder(n))
        .unwrap_or("Unknown")
}

/// The EICAR anti-malware test file (68 bytes), assembled at run time: the repository holds it
/// only shifted by one byte value, so no scanner finds it in the source.
pub fn eicar() -> Vec<u8> {
    const SHIFTED: [&[u8]; 4] = [
        &[
            89, 54, 80, 34, 81, 38, 65, 66, 81, 92, 53, 93, 81, 91, 89, 54, 53,
        ],
        &[
            41, 81, 95, 42, 56, 68, 68, 42, 56, 126, 37, 70, 74, 68, 66, 83, 46,
        ],
        &[
            84, 85, 66, 79, 69, 66, 83, 69, 46, 66, 79, 85, 74, 87, 74, 83, 86,
        ],
        &[
            84, 46, 85, 70, 84, 85, 46, 71, 74, 77, 70, 34, 37, 73, 44, 73, 43,
        ],
    ];
    SHIFTED
        .iter()
        .flat_map(|p| p.iter())
        .map(|b| b - 1)
        .collect()
}

/// SHA-256 of `bytes` in lower-case hex (to check the EICAR file without spelling it out).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a page returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Exact path (`/download/eicar.com`) or a prefix ending in `*` (`/wftest/*`).
    pub path: String,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default = "html")]
    pub content_type: String,
    #[serde(default)]
    pub body: String,
    /// Serve the EICAR test file instead of `body`.
    #[serde(default)]
    pub eicar: bool,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn ok() -> u16 {
    200
}

fn html() -> String {
    "text/html; charset=utf-8".into()
}

/// One site of the lab Internet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short name (unique).
    pub name: String,
    /// DNS names (the first is the primary one); empty for an address-only site.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Lab IP address.
    pub ip: IpAddr,
    /// FortiGuard category id.
    pub category: u8,
    /// Category description (default: FortiGuard's name of `category`).
    #[serde(default)]
    pub catdesc: Option<String>,
    /// Pages; a request matching none gets `fallback` or 404.
    #[serde(default, rename = "page")]
    pub pages: Vec<Page>,
    /// Serve this page for every path without its own page.
    #[serde(default)]
    pub fallback: Option<Page>,
}

impl Site {
    pub fn catdesc(&self) -> String {
        self.catdesc
            .clone()
            .unwrap_or_else(|| category_name(self.category).to_string())
    }

    /// The name to show: the primary host, or the IP for an address-only site.
    pub fn primary(&self) -> String {
        self.hosts
            .first()
            .cloned()
            .unwrap_or_else(|| self.ip.to_string())
    }

    /// The page for `path` (query string ignored): exact match, then longest prefix, then the
    /// fallback.
    pub fn page(&self, path: &str) -> Option<&Page> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if let Some(p) = self.pages.iter().find(|p| p.path == path) {
            return Some(p);
        }
        self.pages
            .iter()
            .filter_map(|p| {
                p.path
                    .strip_suffix('*')
                    .filter(|pre| path.starts_with(pre))
                    .map(|pre| (pre.len(), p))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, p)| p)
            .or(self.fallback.as_ref())
    }

    /// The JSON row of `/_lab/sites`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "host": self.primary(), "hosts": self.hosts, "ip": self.ip,
            "category": self.category, "catdesc": self.catdesc(),
        })
    }
}

/// The site definition file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitesFile {
    /// Keep the built-in sites (default true); sites with the same name replace them.
    #[serde(default = "yes")]
    pub defaults: bool,
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
}

fn yes() -> bool {
    true
}

/// A configuration error with its position.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// All sites, indexed by name and by address.
#[derive(Debug, Clone)]
pub struct Sites {
    sites: Vec<Site>,
    by_host: BTreeMap<String, usize>,
    by_ip: BTreeMap<IpAddr, usize>,
}

/// How a request named its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// The `Host` header or SNI.
    Name(&'a str),
    /// The destination lab address (PROXY header, or an IP in the Host header).
    Addr(IpAddr),
}

fn page(path: &str, body: &str) -> Page {
    Page {
        path: path.into(),
        status: 200,
        content_type: html(),
        body: body.into(),
        eicar: false,
        headers: BTreeMap::new(),
    }
}

fn html_page(title: &str, text: &str) -> String {
    format!("<!DOCTYPE html>\n<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>\n")
}

fn site(name: &str, hosts: &[&str], ip: &str, category: u8, pages: Vec<Page>) -> Site {
    Site {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ip: ip.parse().expect("built-in site address"),
        category,
        catdesc: None,
        pages,
        fallback: None,
    }
}

/// The built-in lab Internet.
pub fn default_sites() -> Vec<Site> {
    let eicar_file = |path: &str, ct: &str| Page {
        path: path.into(),
        status: 200,
        content_type: ct.into(),
        body: String::new(),
        eicar: true,
        headers: BTreeMap::from([(
            "content-disposition".to_string(),
            format!(
                "attachment; filename=\"{}\"",
                path.rsplit('/').next().unwrap_or("eicar.com")
            ),
        )]),
    };
    let mut ioc = site("ioc-test", &[], "195.22.28.198", 26, vec![]);
    ioc.fallback = Some(page(
        "/*",
        &html_page(
            "195.22.28.198",
            "IOC test address of the lab (a known-bad IP in the FortiAnalyzer threat database).",
        ),
    ));
    vec![
        site(
            "eicar",
            &["www.eicar.org", "eicar.org"],
            "89.238.73.97",
            50,
            vec![
                page("/", &html_page("EICAR", "European Institute for Computer Antivirus Research (lab copy).")),
                page("/download-anti-malware-testfile/", &html_page("Download Anti Malware Testfile", "<a href=\"/download/eicar.com\">eicar.com</a> <a href=\"/download/eicar.com.txt\">eicar.com.txt</a>")),
                eicar_file("/download/eicar.com", "application/octet-stream"),
                eicar_file("/download/eicar.com.txt", "text/plain"),
            ],
        ),
        ioc,
        site(
            "malicious",
            &["morrishittu.ddns.net"],
            "89.160.20.128",
            26,
            vec![page("/", &html_page("morrishittu.ddns.net", "A lab stand-in for a malicious website."))],
        ),
        site(
            "wftest-26",
            &["wftest26.fortiguard.com"],
            "89.160.20.126",
            26,
            vec![page("/wftest/26.html", &html_page("FortiGuard Web Filter Test", "Category 26: Malicious Websites"))],
        ),
        site(
            "phishing",
            &["secure-login.lab-phish.net"],
            "89.160.20.161",
            61,
            vec![page("/", &html_page("Sign in", "A lab stand-in for a phishing page."))],
        ),
        site(
            "wftest-61",
            &["wftest61.fortiguard.com"],
            "89.160.20.61",
            61,
            vec![page("/wftest/61.html", &html_page("FortiGuard Web Filter Test", "Category 61: Phishing"))],
        ),
        site(
            "news",
            &["news.sky.com"],
            "23.200.96.79",
            36,
            vec![page("/", &html_page("Sky News", "Lab news front page.")), page("/world", &html_page("World", "World news."))],
        ),
        site(
            "search",
            &["www.google.com", "google.com"],
            "89.207.200.14",
            41,
            vec![page("/", &html_page("Google", "Lab search engine.")), page("/search", &html_page("Search", "No results in the lab."))],
        ),
        site(
            "education",
            &["www.mit.edu", "mit.edu"],
            "89.207.200.30",
            30,
            vec![page("/", &html_page("MIT", "Lab education site."))],
        ),
        site(
            "fortinet",
            &["www.fortinet.com", "fortinet.com"],
            "89.207.200.52",
            52,
            vec![page("/", &html_page("Fortinet", "Lab vendor site."))],
        ),
    ]
}

/// Normalises a host name: lower case, no port, no trailing dot, no IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl Sites {
    /// Validates and indexes sites.
    pub fn new(sites: Vec<Site>) -> Result<Self, ConfigError> {
        let mut by_host = BTreeMap::new();
        let mut by_ip = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in sites.iter().enumerate() {
            if !names.insert(s.name.clone()) {
                return Err(ConfigError(format!("site {:?} defined twice", s.name)));
            }
            for h in &s.hosts {
                let n = normalize_host(h);
                if n.is_empty() || n.parse::<IpAddr>().is_ok() {
                    return Err(ConfigError(format!(
                        "site {:?}: bad host name {h:?}",
                        s.name
                    )));
                }
                if by_host.insert(n, i).is_some() {
                    return Err(ConfigError(format!(
                        "site {:?}: host {h:?} already belongs to another site",
                        s.name
                    )));
                }
            }
            if by_ip.insert(s.ip, i).is_some() {
                return Err(ConfigError(format!(
                    "site {:?}: address {} already belongs to another site",
                    s.name, s.ip
                )));
            }
            for p in s.pages.iter().chain(s.fallback.iter()) {
                if !p.path.starts_with('/') {
                    return Err(ConfigError(format!(
                        "site {:?}: page path {:?} must start with /",
                        s.name, p.path
                    )));
                }
                if !(100..=599).contains(&p.status) {
                    return Err(ConfigError(format!(
                        "site {:?}: page {:?}: bad status {}",
                        s.name, p.path, p.status
                    )));
                }
            }
        }
        Ok(Self {
            sites,
            by_host,
            by_ip,
        })
    }

    /// The built-in set.
    pub fn defaults() -> Self {
        Self::new(default_sites()).expect("built-in sites are valid")
    }

    /// Parses a definition (`path` only names the file in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: SitesFile = toml::from_str(text).map_err(|err| {
            let (line, col) = err
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before
                        .rsplit('\n')
                        .next()
                        .map(|l| l.chars().count())
                        .unwrap_or(0)
                        + 1;
                    (line, col)
                })
                .unwrap_or((1, 1));
            ConfigError(format!(
                "{}:{line}:{col}: {}",
                path.display(),
                err.message()
            ))
        })?;
        let mut sites = if file.defaults {
            default_sites()
        } else {
            Vec::new()
        };
        for s in file.sites {
            sites.retain(|d| d.name != s.name);
            sites.push(s);
        }
        Self::new(sites).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text, path)
    }

    pub fn all(&self) -> &[Site] {
        &self.sites
    }

    pub fn by_host(&self, host: &str) -> Option<&Site> {
        let n = normalize_host(host);
        if let Ok(ip) = n.parse::<IpAddr>() {
            return self.by_ip(ip);
        }
        self.by_host.get(&n).map(|i| &self.sites[*i])
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<&Site> {
        self.by_ip.get(&ip).map(|i| &self.sites[*i])
    }

    /// The site a request is for: the first of `picks` that names one.
    pub fn pick(&self, picks: &[Pick<'_>]) -> Option<&Site> {
        picks.iter().find_map(|p| match p {
            Pick::Name(n) => self.by_host(n),
            Pick::Addr(ip) => self.by_ip(*ip),
        })
    }

    /// Lab DNS: a name's A record.
    pub fn resolve(&self, name: &str) -> Option<IpAddr> {
        let n = normalize_host(name);
        if n.parse::<IpAddr>().is_ok() {
            return n.parse().ok();
        }
        self.by_host.get(&n).map(|i| self.sites[*i].ip)
    }

    /// FortiGuard-style rating of a host name or address: (category, description).
    pub fn rating(&self, host: &str) -> (u8, String) {
        match self.by_host(host) {
            Some(s) => (s.category, s.catdesc()),
            None => (0, "Unrated".to_string()),
        }
    }

    /// The ready report's `internet.sites` rows.
    pub fn ready_rows(&self) -> Vec<serde_json::Value> {
        self.sites
            .iter()
            .map(|s| {
                serde_json::json!({
                    "host": s.primary(), "ip": s.ip, "category": s.category,
                    "name": s.name, "hosts": s.hosts, "catdesc": s.catdesc(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn category_names_from_the_fortiguard_table() {
        assert_eq!(category_name(0), "Unrated");
        assert_eq!(category_name(1), "Drug Abuse");
        assert_eq!(category_name(10), "Unknown");
        assert_eq!(category_name(83), "Child Abuse");
        assert_eq!(category_name(95), "Online Meeting");
        assert_eq!(category_name(96), "Terrorism");
        assert_eq!(category_name(97), "Unknown");
        assert_eq!(category_name(101), "Cryptocurrency");
        assert_eq!(category_name(102), "Unknown");
    }

    #[test]
    fn eicar_is_the_68_byte_test_file() {
        let e = eicar();
        assert_eq!(e.len(), 68);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&e)),
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
        );
        assert_eq!(e[2], b'O', "the third character is the letter O");
    }

    #[test]
    fn defaults_cover_the_required_sites() {
        let s = Sites::defaults();
        let eicar = s.by_host("WWW.EICAR.ORG:80").unwrap();
        assert_eq!(eicar.name, "eicar");
        assert!(eicar.page("/download/eicar.com").unwrap().eicar);
        assert!(eicar.page("/download/eicar.com?x=1").unwrap().eicar);
        assert!(s
            .by_ip("195.22.28.198".parse().unwrap())
            .unwrap()
            .page("/any/thing")
            .is_some());
        assert!(s.all().iter().any(|x| x.category == 26));
        assert!(s.all().iter().any(|x| x.category == 61));
        for c in [36, 41, 30] {
            assert!(
                s.all().iter().any(|x| x.category == c),
                "benign category {c}"
            );
        }
        assert_eq!(
            s.rating("www.eicar.org"),
            (50, "Information and Computer Security".into())
        );
        assert_eq!(s.rating("nowhere.example"), (0, "Unrated".into()));
        assert_eq!(s.rating("195.22.28.198").0, 26);
        assert_eq!(
            s.resolve("eicar.org."),
            Some("89.238.73.97".parse().unwrap())
        );
        assert_eq!(s.resolve("nowhere.example"), None);
    }

    #[test]
    fn site_selection_prefers_the_name_then_the_address() {
        let s = Sites::defaults();
        let ioc: IpAddr = "195.22.28.198".parse().unwrap();
        assert_eq!(
            s.pick(&[Pick::Name("www.eicar.org"), Pick::Addr(ioc)])
                .unwrap()
                .name,
            "eicar"
        );
        assert_eq!(
            s.pick(&[Pick::Name("unknown.example"), Pick::Addr(ioc)])
                .unwrap()
                .name,
            "ioc-test"
        );
        assert_eq!(
            s.pick(&[Pick::Name("195.22.28.198")]).unwrap().name,
            "ioc-test"
        );
        assert!(s.pick(&[Pick::Name("unknown.example")]).is_none());
        let news = s.by_host("news.sky.com").unwrap();
        assert!(news.page("/world").is_some());
        assert!(news.page("/nope").is_none());
        assert_eq!(normalize_host("[fd00::1]:443"), "fd00::1");
    }

    #[test]
    fn toml_definition_adds_replaces_and_reports_positions() {
        let text = r#"
[[site]]
name = "intranet"
hosts = ["intranet.lab"]
ip = "89.1.1.1"
category = 49

[[site.page]]
path = "/docs/*"
body = "docs"
content_type = "text/plain"

[[site]]
name = "eicar"
hosts = ["www.eicar.org"]
ip = "89.238.73.97"
category = 0
"#;
        let s = Sites::from_toml(text, Path::new("sites.toml")).unwrap();
        assert_eq!(
            s.by_host("intranet.lab")
                .unwrap()
                .page("/docs/a/b")
                .unwrap()
                .body,
            "docs"
        );
        assert_eq!(s.rating("www.eicar.org").0, 0);
        assert!(
            s.by_host("eicar.org").is_none(),
            "replaced by the definition"
        );
        assert!(s.by_host("news.sky.com").is_some(), "defaults kept");
        let err = Sites::from_toml(
            "[[site]]\nname = \"x\"\nip = \"not-an-ip\"\ncategory = 1\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert!(err.0.starts_with("f.toml:3:"), "{}", err.0);
        let err = Sites::from_toml(
            "defaults = false\n[[site]]\nname = \"a\"\nip = \"1.1.1.1\"\ncategory = 1\nhosts=[\"x.y\"]\n[[site]]\nname = \"b\"\nip = \"1.1.1.2\"\ncategory = 1\nhosts=[\"X.Y\"]\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert!(err.0.contains("already belongs"), "{}", err.0);
    }
}
