//! The automation objects (`system automation-trigger/-action/-stitch`) read from a
//! configuration snapshot, and trigger matching. Pure code: no I/O, no clock.
//!
//! Version rules (reference fortios.md §3.2–3.4):
//! - trigger `logid`: a single short id in 6.4 (`set logid 22902`), a list in 7.0+;
//! - stitch actions: 6.4 / 7.0.0 `set action "A" "B"` with `delay`/`required` on the action
//!   object; 7.0.1+ `config actions` / `edit <id>` / `set action` / `set delay` / `set required`;
//! - `ioc-level medium` includes high.

use std::collections::BTreeMap;

use fortilab_core::logfmt::LogRecord;

use crate::config::{Config, Entry, FosVersion};

/// Severity of a compromised-host verdict (`ioc-level`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IocLevel {
    Medium,
    High,
}

impl IocLevel {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "medium" => Some(IocLevel::Medium),
            "high" => Some(IocLevel::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IocLevel::Medium => "medium",
            IocLevel::High => "high",
        }
    }

    /// Whether a notification of level `self` fires a trigger configured with `configured`
    /// ("medium" includes high).
    pub fn fires(self, configured: IocLevel) -> bool {
        self >= configured
    }
}

/// When a `trigger-type scheduled` trigger fires (lab-local time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Hourly {
        minute: u32,
    },
    Daily {
        hour: u32,
        minute: u32,
    },
    /// `weekday`: 0 = Sunday.
    Weekly {
        weekday: u32,
        hour: u32,
        minute: u32,
    },
    Monthly {
        day: u32,
        hour: u32,
        minute: u32,
    },
}

/// `config system automation-trigger` / `edit <name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerDef {
    pub name: String,
    /// `Some` for `trigger-type scheduled` (a weekly trigger without a weekday never fires:
    /// `None` with `scheduled_invalid`).
    pub schedule: Option<Schedule>,
    pub scheduled: bool,
    /// `ioc` (default), `event-log`, `incoming-webhook`, `faz-event`, `config-change`,
    /// `reboot`, ...
    pub event_type: String,
    pub ioc_level: IocLevel,
    /// Short log ids (`46600` for `0100046600`).
    pub logids: Vec<u32>,
    /// `config fields`: (name, value pattern), all must match.
    pub fields: Vec<(String, String)>,
    pub faz_event_name: String,
    pub faz_event_severity: String,
    pub faz_event_tags: String,
}

/// `config system automation-action` / `edit <name>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionDef {
    pub name: String,
    pub action_type: String,
    /// Seconds (lab time) during which a repeat of this action is suppressed.
    pub minimum_interval: i64,
    /// Action-level `delay`/`required` (6.4 and 7.0.0).
    pub delay: u64,
    pub required: bool,
    pub email_to: Vec<String>,
    pub email_from: String,
    pub email_subject: String,
    pub message: String,
    pub protocol: String,
    pub method: String,
    pub uri: String,
    pub http_body: String,
    pub port: u16,
    /// `headers "K:V"` (≤ 7.0.5) or `config http-headers` (7.0.6+).
    pub headers: Vec<(String, String)>,
    pub script: String,
    pub accprofile: String,
}

/// One action of a stitch run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: String,
    /// Lab seconds to wait before the action.
    pub delay: u64,
    /// A failure stops the chain.
    pub required: bool,
}

/// `config system automation-stitch` / `edit <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StitchDef {
    pub name: String,
    pub enabled: bool,
    pub trigger: String,
    pub steps: Vec<Step>,
}

/// The automation objects of one configuration revision.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub triggers: BTreeMap<String, TriggerDef>,
    pub actions: BTreeMap<String, ActionDef>,
    /// In configuration order.
    pub stitches: Vec<StitchDef>,
}

fn scalar<'a>(e: &'a Entry, f: &str, default: &'a str) -> &'a str {
    e.scalar(f).unwrap_or(default)
}

fn num<T: std::str::FromStr>(e: &Entry, f: &str, default: T) -> T {
    e.scalar(f)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn enabled(e: &Entry, f: &str, default: bool) -> bool {
    match e.scalar(f) {
        Some(v) => v == "enable",
        None => default,
    }
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

impl TriggerDef {
    pub fn from_entry(e: &Entry) -> Self {
        let scheduled = scalar(e, "trigger-type", "event-based") == "scheduled";
        let hour = num(e, "trigger-hour", 0u32).min(23);
        let minute = num(e, "trigger-minute", 0u32).min(59);
        let schedule = if scheduled {
            match scalar(e, "trigger-frequency", "daily") {
                "hourly" => Some(Schedule::Hourly { minute }),
                "weekly" => WEEKDAYS
                    .iter()
                    .position(|d| *d == scalar(e, "trigger-weekday", ""))
                    .map(|w| Schedule::Weekly {
                        weekday: w as u32,
                        hour,
                        minute,
                    }),
                "monthly" => Some(Schedule::Monthly {
                    day: num(e, "trigger-day", 1u32).clamp(1, 31),
                    hour,
                    minute,
                }),
                _ => Some(Schedule::Daily { hour, minute }),
            }
        } else {
            None
        };
        // 6.4: a scalar; 7.0+: a list. Accept both whatever the version (0 = unset).
        let mut logids: Vec<u32> = e
            .list("logid")
            .iter()
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        if let Some(v) = e.scalar("logid") {
            logids.extend(v.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
        logids.retain(|x| *x != 0);
        let fields = e
            .table("fields")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .filter_map(|f| {
                        let name = f.scalar("name")?.to_string();
                        (!name.is_empty())
                            .then(|| (name, f.scalar("value").unwrap_or("").to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        TriggerDef {
            name: e.key.clone(),
            schedule,
            scheduled,
            event_type: scalar(e, "event-type", "ioc").to_string(),
            ioc_level: IocLevel::parse(scalar(e, "ioc-level", "high")).unwrap_or(IocLevel::High),
            logids,
            fields,
            faz_event_name: scalar(e, "faz-event-name", "").to_string(),
            faz_event_severity: scalar(e, "faz-event-severity", "").to_string(),
            faz_event_tags: scalar(e, "faz-event-tags", "").to_string(),
        }
    }
}

impl ActionDef {
    pub fn from_entry(e: &Entry) -> Self {
        let mut headers: Vec<(String, String)> = e
            .list("headers")
            .iter()
            .filter_map(|h| {
                let (k, v) = h.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        if let Some(t) = e.table("http-headers") {
            for h in t.entries() {
                if let Some(k) = h.scalar("key") {
                    headers.push((k.to_string(), h.scalar("value").unwrap_or("").to_string()));
                }
            }
        }
        ActionDef {
            name: e.key.clone(),
            action_type: scalar(e, "action-type", "alert").to_string(),
            minimum_interval: num(e, "minimum-interval", 0i64),
            delay: num(e, "delay", 0u64),
            required: enabled(e, "required", false),
            email_to: e.list("email-to").to_vec(),
            email_from: scalar(e, "email-from", "").to_string(),
            email_subject: scalar(e, "email-subject", "").to_string(),
            message: scalar(e, "message", "").to_string(),
            protocol: scalar(e, "protocol", "http").to_string(),
            method: scalar(e, "method", "post").to_string(),
            uri: scalar(e, "uri", "").to_string(),
            http_body: scalar(e, "http-body", "").to_string(),
            port: num(e, "port", 0u16),
            headers,
            script: scalar(e, "script", "").to_string(),
            accprofile: scalar(e, "accprofile", "").to_string(),
        }
    }
}

impl Model {
    /// Reads the automation tables of `cfg` as FortiOS `version` interprets them.
    pub fn from_config(cfg: &Config, version: FosVersion) -> Self {
        let triggers = cfg
            .table("system automation-trigger")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|e| (e.key.clone(), TriggerDef::from_entry(e)))
                    .collect()
            })
            .unwrap_or_default();
        let actions: BTreeMap<String, ActionDef> = cfg
            .table("system automation-action")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|e| (e.key.clone(), ActionDef::from_entry(e)))
                    .collect()
            })
            .unwrap_or_default();
        let stitches = cfg
            .table("system automation-stitch")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|e| stitch_from_entry(e, version, &actions))
                    .collect()
            })
            .unwrap_or_default();
        Model {
            triggers,
            actions,
            stitches,
        }
    }

    pub fn stitch(&self, name: &str) -> Option<&StitchDef> {
        self.stitches.iter().find(|s| s.name == name)
    }

    /// The trigger of a stitch.
    pub fn trigger_of(&self, s: &StitchDef) -> Option<&TriggerDef> {
        self.triggers.get(&s.trigger)
    }

    /// Enabled stitches whose trigger matches `ev`, in configuration order.
    pub fn matching<'a>(&'a self, ev: &Event<'_>) -> Vec<(&'a StitchDef, &'a TriggerDef)> {
        // A log's id is parsed once, not once per trigger.
        let logid = match ev {
            Event::Log(rec) => Some(rec.text("logid").and_then(|l| short_logid(&l))),
            _ => None,
        };
        self.stitches
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| {
                let t = self.trigger_of(s)?;
                if let Some(id) = logid {
                    if !id.is_some_and(|id| t.logids.contains(&id)) && !t.scheduled {
                        return None;
                    }
                }
                t.matches(ev).then_some((s, t))
            })
            .collect()
    }

    /// Whether any enabled stitch has an `event-log` trigger (logs can be skipped cheaply).
    /// The short log ids some enabled event-log stitch fires on: the log tap hands other logs
    /// over to nobody.
    pub fn wanted_logids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .stitches
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| self.trigger_of(s))
            .filter(|t| !t.scheduled && t.event_type == "event-log")
            .flat_map(|t| t.logids.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn wants_logs(&self) -> bool {
        self.stitches.iter().any(|s| {
            s.enabled
                && self
                    .trigger_of(s)
                    .is_some_and(|t| !t.scheduled && t.event_type == "event-log")
        })
    }
}

fn stitch_from_entry(
    e: &Entry,
    version: FosVersion,
    actions: &BTreeMap<String, ActionDef>,
) -> StitchDef {
    let steps = if version.stitch_actions_table() {
        e.table("actions")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .filter_map(|a| {
                        Some(Step {
                            action: a.scalar("action")?.to_string(),
                            delay: num(a, "delay", 0u64),
                            required: enabled(a, "required", false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        e.list("action")
            .iter()
            .map(|name| {
                let def = actions.get(name);
                Step {
                    action: name.clone(),
                    delay: def.map(|d| d.delay).unwrap_or(0),
                    required: def.map(|d| d.required).unwrap_or(false),
                }
            })
            .collect()
    };
    StitchDef {
        name: e.key.clone(),
        enabled: enabled(e, "status", true),
        trigger: scalar(e, "trigger", "").to_string(),
        steps,
    }
}

/// Something that may fire triggers.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A FortiAnalyzer compromised-host notification of this level.
    Ioc(IocLevel),
    /// A log the FortiGate wrote.
    Log(&'a LogRecord),
    /// `monitor/system/automation-stitch/webhook/<stitch>` names its stitch.
    Webhook {
        stitch: &'a str,
    },
    /// A FortiAnalyzer event-handler notification.
    FazEvent {
        name: &'a str,
        severity: &'a str,
        tags: &'a str,
    },
    ConfigChange,
    Reboot,
    /// The schedule of trigger `trigger` came due.
    Scheduled {
        trigger: &'a str,
    },
}

/// The short log id of a 10-digit log id (`0100046600` → 46600).
pub fn short_logid(logid: &str) -> Option<u32> {
    let n: u64 = logid.trim().parse().ok()?;
    Some((n % 1_000_000) as u32)
}

impl TriggerDef {
    /// Whether this trigger fires for `ev` (a webhook additionally names its stitch: checked
    /// by the caller).
    pub fn matches(&self, ev: &Event<'_>) -> bool {
        if self.scheduled {
            return matches!(ev, Event::Scheduled { trigger } if *trigger == self.name);
        }
        match ev {
            Event::Ioc(level) => self.event_type == "ioc" && level.fires(self.ioc_level),
            Event::Log(rec) => self.event_type == "event-log" && self.matches_log(rec),
            Event::Webhook { .. } => self.event_type == "incoming-webhook",
            Event::FazEvent {
                name,
                severity,
                tags,
            } => {
                self.event_type == "faz-event"
                    && pattern_or_any(&self.faz_event_name, name)
                    && pattern_or_any(&self.faz_event_severity, severity)
                    && (self.faz_event_tags.is_empty()
                        || self
                            .faz_event_tags
                            .split([',', ' '])
                            .filter(|t| !t.is_empty())
                            .all(|want| tags.split([',', ' ']).any(|t| t == want)))
            }
            Event::ConfigChange => self.event_type == "config-change",
            Event::Reboot => self.event_type == "reboot",
            Event::Scheduled { .. } => false,
        }
    }

    /// `event-log`: the log id is one of the trigger's and every `config fields` entry matches
    /// (wildcards, AND). A trigger without a log id matches nothing.
    pub fn matches_log(&self, rec: &LogRecord) -> bool {
        let Some(id) = rec.text("logid").and_then(|l| short_logid(&l)) else {
            return false;
        };
        if !self.logids.contains(&id) {
            return false;
        }
        self.fields.iter().all(|(name, pattern)| {
            rec.text(name)
                .is_some_and(|v| wildcard_match(pattern, v.as_ref()))
        })
    }
}

fn pattern_or_any(pattern: &str, value: &str) -> bool {
    pattern.is_empty() || wildcard_match(pattern, value)
}

/// FortiOS field-value wildcards: `*` (any run), `?` (one character), `[aA]` / `[a-z]` (a
/// class, `[!x]` negated), `\x` (a literal x). Everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
            continue;
        }
        if pi < p.len() {
            if let Some((ok, len)) = match_one(&p[pi..], t[ti]) {
                if ok {
                    pi += len;
                    ti += 1;
                    continue;
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches one pattern element against `c`: (matched, pattern chars consumed); `None` for a
/// malformed class (treated as a literal `[`).
fn match_one(p: &[char], c: char) -> Option<(bool, usize)> {
    match p[0] {
        '?' => Some((true, 1)),
        '\\' if p.len() > 1 => Some((p[1] == c, 2)),
        '[' => {
            let close = p.iter().skip(1).position(|x| *x == ']').map(|i| i + 1);
            match close {
                Some(end) if end > 1 => {
                    let mut body = &p[1..end];
                    let negate = body.first() == Some(&'!') || body.first() == Some(&'^');
                    if negate {
                        body = &body[1..];
                    }
                    let mut hit = false;
                    let mut i = 0;
                    while i < body.len() {
                        if i + 2 < body.len() && body[i + 1] == '-' {
                            if body[i] <= c && c <= body[i + 2] {
                                hit = true;
                            }
                            i += 3;
                        } else {
                            if body[i] == c {
                                hit = true;
                            }
                            i += 1;
                        }
                    }
                    Some((hit != negate, end + 1))
                }
                _ => Some((c == '[', 1)),
            }
        }
        other => Some((other == c, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_config, Config};
    use rand::SeedableRng;

    fn model(version: &str, cli: &str) -> Model {
        let v = FosVersion::parse(version).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (cfg, _) = parse_config(&Config::default(), cli, "t.conf", v, false, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        Model::from_config(&cfg, v)
    }

    fn log(line: &str) -> LogRecord {
        LogRecord::parse(line).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("DOWN", "DOWN"));
        assert!(!wildcard_match("DOWN", "down"));
        assert!(wildcard_match("[dD][oO]wn", "Down"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("10.115.2.*", "10.115.2.52"));
        assert!(!wildcard_match("10.115.2.*", "10.115.3.52"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("PC-5?", "PC-52"));
        assert!(!wildcard_match("PC-5?", "PC-5"));
        assert!(wildcard_match("[0-9][0-9]", "42"));
        assert!(!wildcard_match("[!0-9]", "4"));
        assert!(wildcard_match("\\*", "*"));
        assert!(!wildcard_match("\\*", "x"));
        assert!(wildcard_match("*admin*", "Administrator admin logged in"));
    }

    #[test]
    fn ioc_levels_medium_includes_high() {
        let m = model(
            "6.4.4",
            "config system automation-trigger
edit \"high\"
next
edit \"medium\"
set ioc-level medium
next
end
config system automation-action
edit \"a\"
set action-type alert
next
end
config system automation-stitch
edit \"S-high\"
set trigger \"high\"
set action \"a\"
next
edit \"S-medium\"
set trigger \"medium\"
set action \"a\"
next
edit \"S-off\"
set status disable
set trigger \"medium\"
set action \"a\"
next
end
",
        );
        let names = |ev| {
            m.matching(&ev)
                .into_iter()
                .map(|(s, _)| s.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Event::Ioc(IocLevel::High)), ["S-high", "S-medium"]);
        assert_eq!(names(Event::Ioc(IocLevel::Medium)), ["S-medium"]);
        assert!(names(Event::Reboot).is_empty());
        assert_eq!(m.triggers["high"].event_type, "ioc");
        assert_eq!(m.triggers["high"].ioc_level, IocLevel::High);
    }

    #[test]
    fn event_log_logid_forms_by_version_and_fields() {
        let m64 = model(
            "6.4.4",
            "config system automation-trigger
edit \"down\"
set event-type event-log
set logid 20099
config fields
edit 1
set name \"status\"
set value \"DOWN\"
next
edit 2
set name \"interface\"
set value \"port*\"
next
end
next
end
",
        );
        let t = &m64.triggers["down"];
        assert_eq!(t.logids, [20099]);
        assert!(t.matches_log(&log(
            "date=2021-03-04 time=10:00:00 logid=\"0100020099\" type=\"event\" subtype=\"system\" status=\"DOWN\" interface=\"port3\""
        )));
        // AND: one field differs.
        assert!(!t.matches_log(&log(
            "logid=\"0100020099\" status=\"UP\" interface=\"port3\""
        )));
        assert!(!t.matches_log(&log(
            "logid=\"0100020099\" status=\"DOWN\" interface=\"wan1\""
        )));
        // A missing field does not match.
        assert!(!t.matches_log(&log("logid=\"0100020099\" status=\"DOWN\"")));
        // Another log id does not match.
        assert!(!t.matches_log(&log(
            "logid=\"0100020098\" status=\"DOWN\" interface=\"port3\""
        )));

        let m70 = model(
            "7.0.12",
            "config system automation-trigger
edit \"logins\"
set event-type event-log
set logid 32001 32002
next
end
",
        );
        let t = &m70.triggers["logins"];
        assert_eq!(t.logids, [32001, 32002]);
        assert!(t.matches_log(&log("logid=\"0100032002\" user=\"x\"")));
        assert!(t.matches_log(&log("logid=\"0100032001\"")));
        assert!(!t.matches_log(&log("logid=\"0100032003\"")));
        // 6.4 rejects a list for logid (it is an integer there).
        let v = FosVersion::parse("6.4.4").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(parse_config(
            &Config::default(),
            "config system automation-trigger\nedit x\nset event-type event-log\nset logid 1 2\nnext\nend\n",
            "t.conf",
            v,
            true,
            &mut rng
        )
        .is_err());
        assert_eq!(short_logid("0316013056"), Some(13056));
        assert_eq!(short_logid("0100046600"), Some(46600));
        assert_eq!(short_logid("x"), None);
    }

    #[test]
    fn stitch_steps_64_list_vs_7x_table() {
        let m64 = model(
            "6.4.4",
            "config system automation-action
edit \"one\"
set action-type alert
set delay 5
set required enable
next
edit \"two\"
set action-type ban-ip
next
end
config system automation-trigger
edit \"t\"
next
end
config system automation-stitch
edit \"S\"
set trigger \"t\"
set action \"one\" \"two\"
next
end
",
        );
        let s = m64.stitch("S").unwrap();
        assert!(s.enabled);
        assert_eq!(
            s.steps,
            [
                Step {
                    action: "one".into(),
                    delay: 5,
                    required: true
                },
                Step {
                    action: "two".into(),
                    delay: 0,
                    required: false
                }
            ]
        );
        let m72 = model(
            "7.2.5",
            "config system automation-action
edit \"one\"
set action-type alert
next
edit \"two\"
set action-type webhook
set uri \"10.0.0.1/x\"
config http-headers
edit 1
set key \"X-Test\"
set value \"yes\"
next
end
next
end
config system automation-trigger
edit \"t\"
set event-type reboot
next
end
config system automation-stitch
edit \"S\"
set trigger \"t\"
config actions
edit 1
set action \"two\"
set required enable
next
edit 2
set action \"one\"
set delay 3
next
end
next
end
",
        );
        let s = m72.stitch("S").unwrap();
        assert_eq!(
            s.steps,
            [
                Step {
                    action: "two".into(),
                    delay: 0,
                    required: true
                },
                Step {
                    action: "one".into(),
                    delay: 3,
                    required: false
                }
            ]
        );
        assert_eq!(
            m72.actions["two"].headers,
            [("X-Test".to_string(), "yes".to_string())]
        );
        assert_eq!(
            m72.matching(&Event::Reboot)
                .iter()
                .map(|(s, _)| s.name.as_str())
                .collect::<Vec<_>>(),
            ["S"]
        );
    }

    #[test]
    fn factory_defaults_read_per_version() {
        for v in ["6.4.4", "7.0.12", "7.2.5"] {
            let version = FosVersion::parse(v).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let cfg = crate::config::factory(version, "FGT", &mut rng);
            let m = Model::from_config(&cfg, version);
            let s = m.stitch("Compromised Host Quarantine").unwrap();
            assert!(!s.enabled, "{v}");
            assert_eq!(s.steps.len(), 2, "{v}");
            let t = m.trigger_of(s).unwrap();
            assert_eq!(t.event_type, "ioc");
            assert_eq!(t.ioc_level, IocLevel::High);
            let q = &m.actions[&s.steps[1].action];
            assert_eq!(q.action_type, "quarantine-forticlient", "{v}");
        }
    }

    #[test]
    fn webhook_faz_event_config_change_and_schedule() {
        let m = model(
            "6.4.4",
            "config system automation-trigger
edit \"hook\"
set event-type incoming-webhook
next
edit \"faz\"
set event-type faz-event
set faz-event-name \"IOC*\"
set faz-event-severity \"high\"
next
edit \"cfg\"
set event-type config-change
next
edit \"sched\"
set trigger-type scheduled
set trigger-frequency weekly
set trigger-weekday monday
set trigger-hour 3
set trigger-minute 15
next
edit \"noday\"
set trigger-type scheduled
set trigger-frequency weekly
next
end
",
        );
        assert!(m.triggers["hook"].matches(&Event::Webhook { stitch: "x" }));
        assert!(!m.triggers["hook"].matches(&Event::ConfigChange));
        let faz = &m.triggers["faz"];
        assert!(faz.matches(&Event::FazEvent {
            name: "IOC detected",
            severity: "high",
            tags: ""
        }));
        assert!(!faz.matches(&Event::FazEvent {
            name: "IOC detected",
            severity: "low",
            tags: ""
        }));
        assert!(m.triggers["cfg"].matches(&Event::ConfigChange));
        let s = &m.triggers["sched"];
        assert_eq!(
            s.schedule,
            Some(Schedule::Weekly {
                weekday: 1,
                hour: 3,
                minute: 15
            })
        );
        assert!(s.matches(&Event::Scheduled { trigger: "sched" }));
        assert!(!s.matches(&Event::Scheduled { trigger: "other" }));
        assert!(!s.matches(&Event::Ioc(IocLevel::High)));
        assert!(m.triggers["noday"].scheduled);
        assert_eq!(m.triggers["noday"].schedule, None);
    }
}
