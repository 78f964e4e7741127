//! Web filter decisions (reference §5): FortiGuard category actions of a `webfilter profile`,
//! its URL filter table, `log-all-url`. Pure code.

use std::collections::HashMap;

use crate::config::tree::Config;

/// A FortiGuard category action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatAction {
    /// No filter entry for the category (GUI "Allow").
    Allow,
    Monitor,
    Block,
    Warning,
    Authenticate,
}

/// URL filter entry type.
#[derive(Debug, Clone)]
pub enum UrlPattern {
    Simple(String),
    Wildcard(String),
    Regex(regex::Regex),
}

/// URL filter entry action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlAction {
    Exempt,
    Block,
    Allow,
    Monitor,
}

#[derive(Debug, Clone)]
pub struct UrlEntry {
    pub id: u64,
    pub pattern: UrlPattern,
    pub action: UrlAction,
}

/// A compiled web filter profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub log_all_url: bool,
    /// category → (action, log).
    pub cats: HashMap<u8, (CatAction, bool)>,
    pub urlfilter: Vec<UrlEntry>,
}

/// Glob match with `*` and `?` (case-insensitive, ASCII).
pub fn glob(pat: &str, text: &str) -> bool {
    let p: Vec<u8> = pat.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let t: Vec<u8> = text.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl UrlPattern {
    /// Whether the entry matches `host` + `path` (no scheme, as FortiOS matches URLs).
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let url = format!("{host}{path}");
        match self {
            UrlPattern::Simple(s) => {
                let s = s.to_ascii_lowercase();
                let s = s
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                let (eh, ep) = match s.find('/') {
                    Some(i) => (&s[..i], &s[i..]),
                    None => (s, ""),
                };
                let host_ok = host == eh || host.ends_with(&format!(".{eh}"));
                host_ok && path.to_ascii_lowercase().starts_with(ep)
            }
            UrlPattern::Wildcard(w) => {
                let w = w.to_ascii_lowercase();
                if w.contains('/') {
                    glob(&w, &url) || glob(&format!("{w}*"), &url)
                } else {
                    glob(&w, &host)
                }
            }
            UrlPattern::Regex(r) => r.is_match(&url),
        }
    }
}

impl Profile {
    /// Compiles profile `name` from the configuration (`None` if it does not exist).
    pub fn from_config(cfg: &Config, name: &str) -> Option<Profile> {
        let e = cfg.entry("webfilter profile", name)?;
        let mut cats = HashMap::new();
        if let Some(f) = e
            .table("ftgd-wf")
            .and_then(|t| t.get(""))
            .and_then(|w| w.table("filters"))
        {
            for fe in f.entries() {
                let cat: u8 = fe
                    .scalar("category")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let action = match fe.scalar("action").unwrap_or("monitor") {
                    "block" => CatAction::Block,
                    "warning" => CatAction::Warning,
                    "authenticate" => CatAction::Authenticate,
                    _ => CatAction::Monitor,
                };
                let log = fe.scalar("log").unwrap_or("enable") == "enable";
                cats.entry(cat).or_insert((action, log));
            }
        }
        let table_id = e
            .table("web")
            .and_then(|t| t.get(""))
            .and_then(|w| w.scalar("urlfilter-table"))
            .unwrap_or("0")
            .to_string();
        let mut urlfilter = Vec::new();
        if table_id != "0" {
            if let Some(entries) = cfg
                .entry("webfilter urlfilter", &table_id)
                .and_then(|u| u.table("entries"))
            {
                for ue in entries.entries() {
                    if ue.scalar("status").unwrap_or("enable") != "enable" {
                        continue;
                    }
                    let url = ue.scalar("url").unwrap_or("").to_string();
                    let pattern = match ue.scalar("type").unwrap_or("simple") {
                        "wildcard" => UrlPattern::Wildcard(url),
                        "regex" => match regex::Regex::new(&url) {
                            Ok(r) => UrlPattern::Regex(r),
                            Err(_) => continue,
                        },
                        _ => UrlPattern::Simple(url),
                    };
                    let action = match ue.scalar("action").unwrap_or("exempt") {
                        "block" => UrlAction::Block,
                        "allow" => UrlAction::Allow,
                        "monitor" => UrlAction::Monitor,
                        _ => UrlAction::Exempt,
                    };
                    urlfilter.push(UrlEntry {
                        id: ue.key.parse().unwrap_or(0),
                        pattern,
                        action,
                    });
                }
            }
        }
        Some(Profile {
            name: name.to_string(),
            log_all_url: e.scalar("log-all-url") == Some("enable"),
            cats,
            urlfilter,
        })
    }

    pub fn category_action(&self, cat: u8) -> (CatAction, bool) {
        self.cats
            .get(&cat)
            .copied()
            .unwrap_or((CatAction::Allow, false))
    }
}

/// What the web filter does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Block,
    Warn,
}

/// One web filter log to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WfLog {
    pub logid: &'static str,
    pub eventtype: &'static str,
    pub level: &'static str,
    /// `blocked` | `passthrough`.
    pub action: &'static str,
    pub msg: &'static str,
    /// Whether the category fields (`method`, `cat`, `catdesc`) belong in the log.
    pub with_category: bool,
    /// Credibility score fields for malicious categories.
    pub threat: bool,
}

/// The decision for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub logs: Vec<WfLog>,
}

/// Categories whose blocks carry a threat score (`crscore=30 craction=4194304 crlevel="high"`,
/// reference §6.4 sample a for 26; 61 by analogy [P]).
pub fn is_threat_category(cat: u8) -> bool {
    matches!(cat, 26 | 61)
}

const FTGD_BLK: WfLog = WfLog {
    logid: "0316013056",
    eventtype: "ftgd_blk",
    level: "warning",
    action: "blocked",
    msg: "URL belongs to a denied category in policy",
    with_category: true,
    threat: false,
};
const FTGD_WARN: WfLog = WfLog {
    logid: "0316013057",
    eventtype: "ftgd_blk",
    level: "warning",
    action: "blocked",
    msg: "URL belongs to a category with warnings enabled",
    with_category: true,
    threat: false,
};
const FTGD_ALLOW: WfLog = WfLog {
    logid: "0317013312",
    eventtype: "ftgd_allow",
    level: "notice",
    action: "passthrough",
    msg: "URL belongs to an allowed category in policy",
    with_category: true,
    threat: false,
};
const URL_BLOCK: WfLog = WfLog {
    logid: "0315012544",
    eventtype: "urlfilter",
    level: "warning",
    action: "blocked",
    msg: "URL was blocked because it is in the URL filter list",
    with_category: false,
    threat: false,
};
const URL_EXEMPT: WfLog = WfLog {
    logid: "0315012545",
    eventtype: "urlfilter",
    level: "information",
    action: "passthrough",
    msg: "URL was exempted because it is in the URL filter list",
    with_category: false,
    threat: false,
};
const URL_MONITOR: WfLog = WfLog {
    logid: "0315012546",
    eventtype: "urlfilter",
    level: "information",
    action: "passthrough",
    msg: "URL was monitored because it is in the URL filter list",
    with_category: false,
    threat: false,
};

/// Decides for `host` + `path` rated `cat`.
pub fn decide(p: &Profile, host: &str, path: &str, cat: u8) -> Decision {
    let mut logs = Vec::new();
    for e in &p.urlfilter {
        if !e.pattern.matches(host, path) {
            continue;
        }
        match e.action {
            UrlAction::Block => {
                logs.push(URL_BLOCK);
                return Decision {
                    verdict: Verdict::Block,
                    logs,
                };
            }
            UrlAction::Exempt => {
                logs.push(URL_EXEMPT);
                return Decision {
                    verdict: Verdict::Pass,
                    logs,
                };
            }
            UrlAction::Monitor => logs.push(URL_MONITOR),
            UrlAction::Allow => {}
        }
        break;
    }
    let (action, log) = p.category_action(cat);
    let threat = is_threat_category(cat);
    match action {
        CatAction::Block => {
            logs.push(WfLog { threat, ..FTGD_BLK });
            Decision {
                verdict: Verdict::Block,
                logs,
            }
        }
        CatAction::Warning | CatAction::Authenticate => {
            logs.push(FTGD_WARN);
            Decision {
                verdict: Verdict::Warn,
                logs,
            }
        }
        CatAction::Monitor | CatAction::Allow => {
            let monitored = action == CatAction::Monitor && log;
            if monitored || p.log_all_url {
                logs.push(FTGD_ALLOW);
            }
            Decision {
                verdict: Verdict::Pass,
                logs,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        let version = crate::config::FosVersion::parse("6.4.4").unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let base = crate::config::factory(version, "FGT", &mut rng);
        crate::config::parse_config(&base, text, "t", version, false, &mut rng)
            .unwrap()
            .0
    }

    #[test]
    fn factory_profiles_monitor_all_and_default() {
        let c = cfg("");
        let m = Profile::from_config(&c, "monitor-all").unwrap();
        assert!(m.log_all_url);
        let d = decide(&m, "www.eicar.org", "/download/eicar.com", 50);
        assert_eq!(d.verdict, Verdict::Pass);
        assert_eq!(d.logs.len(), 1);
        assert_eq!(d.logs[0].logid, "0317013312");
        assert_eq!(d.logs[0].action, "passthrough");
        let d = decide(&m, "x.example", "/", 0);
        assert_eq!(d.logs[0].logid, "0317013312");
        let def = Profile::from_config(&c, "default").unwrap();
        let d = decide(&def, "morrishittu.ddns.net", "/", 26);
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.logs[0].logid, "0316013056");
        assert!(d.logs[0].threat);
        let d = decide(&def, "news.sky.com", "/", 36);
        assert_eq!(d.verdict, Verdict::Pass);
        // default: monitor entries log (log enable by default), no log-all-url.
        assert_eq!(d.logs.len(), 1);
        assert!(Profile::from_config(&c, "nope").is_none());
    }

    #[test]
    fn warning_allow_and_url_filter_types() {
        let c = cfg(r#"
config webfilter urlfilter
    edit 1
        set name "t"
        config entries
            edit 1
                set url "www.google.com/search"
                set type simple
                set action block
            next
            edit 2
                set url "*.mit.edu"
                set type wildcard
                set action exempt
            next
            edit 3
                set url "^news\.sky\.com/world"
                set type regex
                set action monitor
            next
            edit 4
                set url "fortinet.com"
                set action allow
            next
        end
    next
end
config webfilter profile
    edit "p"
        config web
            set urlfilter-table 1
        end
        config ftgd-wf
            config filters
                edit 1
                    set category 36
                    set action warning
                next
                edit 2
                    set category 52
                    set action block
                next
                edit 3
                    set category 41
                    set log disable
                next
            end
        end
    next
end
"#);
        let p = Profile::from_config(&c, "p").unwrap();
        assert!(!p.log_all_url);
        // simple: host + path prefix, subdomains included.
        let d = decide(&p, "www.google.com", "/search?q=x", 41);
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.logs[0].logid, "0315012544");
        // monitor entry with log disable and no log-all-url: no log.
        let d = decide(&p, "www.google.com", "/", 41);
        assert_eq!((d.verdict, d.logs.len()), (Verdict::Pass, 0));
        // wildcard exempt skips FortiGuard.
        let d = decide(&p, "web.mit.edu", "/", 52);
        assert_eq!(d.verdict, Verdict::Pass);
        assert_eq!(d.logs[0].logid, "0315012545");
        // regex monitor, then the category's warning.
        let d = decide(&p, "news.sky.com", "/world/x", 36);
        assert_eq!(d.verdict, Verdict::Warn);
        assert_eq!(
            d.logs.iter().map(|l| l.logid).collect::<Vec<_>>(),
            ["0315012546", "0316013057"]
        );
        // allow entry continues to FortiGuard: category 52 blocked.
        let d = decide(&p, "www.fortinet.com", "/", 52);
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.logs[0].logid, "0316013056");
        // category without an entry: allowed silently.
        let d = decide(&p, "other.example", "/", 30);
        assert_eq!((d.verdict, d.logs.len()), (Verdict::Pass, 0));
    }

    #[test]
    fn globbing() {
        assert!(glob("*.mit.edu", "web.mit.edu"));
        assert!(!glob("*.mit.edu", "mit.edu"));
        assert!(glob("a?c*", "abcdef"));
        assert!(!glob("a?c", "abcd"));
    }
}
