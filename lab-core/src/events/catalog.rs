//! The catalog of lab event kinds: every `kind` an event of the lab may have, what it means,
//! which process emits it and its fields with their types, declared once here.
//!
//! Emitters name a kind with [`EventKind`] (a typo is a compile error); the orchestrator's
//! timeline, the scenario runner's `expect_event` (`fortilab validate` refuses an unknown kind
//! or field) and the dashboard (served the catalog as JSON, [`catalog_json`]) read the same
//! table. On the wire an event is unchanged: `kind` is the dotted name ([`EventKind::name`]).
//!
//! The dashboard hints of a kind ([`KindSpec::story`], [`KindSpec::links`], [`KindSpec::tone`],
//! [`KindSpec::marks`]) say which panel cares about it: the causal chain ("story") stage it
//! shows and which field holds the endpoint's IP, the topology links it pulses, how its row
//! looks. `docs/events.md` is generated from this table ([`markdown_table`]; a test keeps it
//! equal).

use serde_json::{json, Map, Value};

/// The JSON type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Str,
    /// An integer.
    Int,
    /// Any number.
    Num,
    Bool,
    /// A JSON array.
    List,
    /// A JSON object.
    Object,
    /// Any JSON value.
    Any,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Int => "integer",
            FieldType::Num => "number",
            FieldType::Bool => "bool",
            FieldType::List => "array",
            FieldType::Object => "object",
            FieldType::Any => "any",
        }
    }

    fn admits(self, v: &Value) -> bool {
        match self {
            FieldType::Str => v.is_string(),
            FieldType::Int => v.is_i64() || v.is_u64(),
            FieldType::Num => v.is_number(),
            FieldType::Bool => v.is_boolean(),
            FieldType::List => v.is_array(),
            FieldType::Object => v.is_object(),
            FieldType::Any => true,
        }
    }
}

/// One field of an event kind.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    /// May be absent or `null`.
    pub optional: bool,
    pub about: &'static str,
}

/// A field that every event of the kind has.
pub const fn field(name: &'static str, ty: FieldType, about: &'static str) -> Field {
    Field {
        name,
        ty,
        optional: false,
        about,
    }
}

/// A field that may be absent or `null`.
pub const fn maybe(name: &'static str, ty: FieldType, about: &'static str) -> Field {
    Field {
        name,
        ty,
        optional: true,
        about,
    }
}

/// A condition on a field, for a dashboard hint: `Str`/`Bool` equal, `Absent` missing,
/// `null` or empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Is {
    Str(&'static str),
    Bool(bool),
    Absent,
}

/// Conditions that must all hold.
pub type When = &'static [(&'static str, Is)];

/// The causal chain ("story") stage an event shows: `fetch`, `log`, `ioc`, `stitch`, `ems`,
/// `quarantine`, for the endpoint IP found by the first of `ip` that gives one: `field` (an
/// IP), `name:field` (an endpoint name), `fctuid:field` (a FortiClient UID) or `text:field`
/// (the `srcip=` inside a log line). The first rule whose `when` holds applies.
#[derive(Debug, Clone, Copy)]
pub struct StoryRule {
    pub stage: &'static str,
    pub ip: &'static [&'static str],
    pub when: When,
}

/// A topology link an event pulses: `fgt-internet`, `fgt-faz`, `fgt-ems`, `endpoint-fortigate`
/// and `endpoint-ems` (the endpoint named by `endpoint`, `fctuid` or the IP), `sender-faz` (the
/// log sender's link to the FortiAnalyzer).
#[derive(Debug, Clone, Copy)]
pub struct LinkRule {
    pub link: &'static str,
    pub when: When,
}

/// How the dashboard shows an event's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Events a reader asked for were dropped (counted as a gap).
    Gap,
    /// A device's event stream was lost (shown like a gap).
    Lost,
    /// A device process ended.
    Down,
    /// A device's event stream is back.
    Up,
    Fail,
    Pass,
}

impl Tone {
    pub fn name(self) -> &'static str {
        match self {
            Tone::Gap => "gap",
            Tone::Lost => "lost",
            Tone::Down => "down",
            Tone::Up => "up",
            Tone::Fail => "fail",
            Tone::Pass => "pass",
        }
    }
}

/// What the catalog says about one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    /// Who emits it: `FortiGate`, `FortiAnalyzer`, `EMS`, `endpoint`, `internet`, `any device`,
    /// `fortilab` (the orchestrator).
    pub source: &'static str,
    /// A few words for a person (the dashboard's label).
    pub label: &'static str,
    /// What happened, in a sentence.
    pub about: &'static str,
    pub fields: &'static [Field],
    /// The event carries further fields of its own (a notification's wire fields).
    pub open: bool,
    /// About a product log line: the event has a `line`.
    pub has_line: bool,
    /// Routine: the terminal timeline leaves it out, the dashboard hides it unless asked.
    pub routine: bool,
    /// One per request or batch: the terminal folds them per category (`proxy`, ...).
    pub per_request: Option<&'static str>,
    pub tone: Option<Tone>,
    pub story: &'static [StoryRule],
    pub links: &'static [LinkRule],
    /// Further dashboard roles: `names-endpoint` (the event names the endpoint with its IP),
    /// `fetch-result` (the end of a fetch whose start a step or the dashboard announced),
    /// `synthetic` (load-test events).
    pub marks: &'static [&'static str],
}

impl KindSpec {
    pub const fn new(
        source: &'static str,
        label: &'static str,
        about: &'static str,
        fields: &'static [Field],
    ) -> Self {
        KindSpec {
            source,
            label,
            about,
            fields,
            open: false,
            has_line: false,
            routine: false,
            per_request: None,
            tone: None,
            story: &[],
            links: &[],
            marks: &[],
        }
    }
    const fn open(mut self) -> Self {
        self.open = true;
        self
    }
    const fn line(mut self) -> Self {
        self.has_line = true;
        self
    }
    const fn routine(mut self) -> Self {
        self.routine = true;
        self
    }
    const fn per_request(mut self, category: &'static str) -> Self {
        self.per_request = Some(category);
        self
    }
    const fn tone(mut self, tone: Tone) -> Self {
        self.tone = Some(tone);
        self
    }
    const fn story(mut self, rules: &'static [StoryRule]) -> Self {
        self.story = rules;
        self
    }
    const fn links(mut self, rules: &'static [LinkRule]) -> Self {
        self.links = rules;
        self
    }
    const fn marks(mut self, marks: &'static [&'static str]) -> Self {
        self.marks = marks;
        self
    }

    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn stage(stage: &'static str, ip: &'static [&'static str], when: When) -> StoryRule {
    StoryRule { stage, ip, when }
}

const fn link(link: &'static str, when: When) -> LinkRule {
    LinkRule { link, when }
}

/// Keys every event has or may have besides its fields: `seq`, `ts`, `device`, `kind`,
/// `line` (a log event), `source` (the process label the orchestrator adds).
pub const ENVELOPE: &[&str] = &["seq", "ts", "device", "kind", "line", "source"];

macro_rules! kinds {
    ($( $(#[$meta:meta])* $variant:ident = $name:literal => $spec:expr; )*) => {
        /// A kind of lab event (see the module documentation). The wire name is
        /// [`EventKind::name`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $( $(#[$meta])* $variant, )*
        }

        impl EventKind {
            /// Every kind, in catalog order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The dotted name on the wire (`stitch.run`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The kind with this wire name.
            pub fn from_name(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }

            /// What the catalog says about the kind.
            pub fn spec(self) -> &'static KindSpec {
                match self {
                    $(EventKind::$variant => {
                        const SPEC: KindSpec = $spec;
                        &SPEC
                    })*
                }
            }
        }
    };
}

use FieldType::{Any, Bool, Int, List, Str};

const FGT: &str = "FortiGate";
const FAZ: &str = "FortiAnalyzer";
const EMS: &str = "EMS";
const ENDPOINT: &str = "endpoint";
const LAB: &str = "fortilab";
const ANY: &str = "any device";

const USER_UI: &[Field] = &[
    field("user", Str, "the administrator"),
    field("ui", Str, "where: `ssh(10.0.0.1)`, `GUI(…)`, `jsonrpc`"),
];

kinds! {
    // ------------------------------------------------------------ every device
    /// A supervised task panicked.
    TaskPanicked = "task.panicked" => KindSpec::new(ANY, "task panicked",
        "A supervised task (or a request, a session) panicked; `restart` says whether it is restarted.",
        &[field("task", Str, "the task's name"), field("message", Str, "the panic message"),
          field("restart", Bool, "whether the supervisor restarts it"),
          maybe("restarts", Int, "restarts so far")]);
    TaskExited = "task.exited" => KindSpec::new(ANY, "task exited",
        "A supervised task ended by itself (it is not restarted).",
        &[field("task", Str, "the task's name"), field("restarts", Int, "restarts so far")]);
    TaskRestarted = "task.restarted" => KindSpec::new(ANY, "task restarted",
        "A supervised task was restarted after a panic.",
        &[field("task", Str, "the task's name"), field("restarts", Int, "restarts so far")]);
    /// Events a reader asked for are no longer held.
    Gap = "gap" => KindSpec::new(ANY, "events missed",
        "Events a reader asked for are no longer held (the device's history ring, the timeline's limit).",
        &[maybe("from", Int, "first sequence number missed"), maybe("to", Int, "last one missed"),
          maybe("summary", Str, "what was missed, in words")]).tone(Tone::Gap);
    DeviceReady = "device.ready" => KindSpec::new("FortiGate, FortiAnalyzer", "device ready",
        "The device is up and serving.",
        &[field("serial", Str, "its serial number"), field("api", Str, "its API address"),
          maybe("version", Str, "FortiOS version (FortiGate)"),
          maybe("log_channel", Str, "the log channel address (FortiAnalyzer)")]);

    // ------------------------------------------------------------ FortiGate
    ConfigChange = "config.change" => KindSpec::new(FGT, "config changed",
        "A configuration change (CLI, REST API, GUI), as the FortiGate logs it.",
        &[field("path", Str, "the configuration path (`system automation-stitch`)"),
          field("key", Str, "the object's key"), field("action", Str, "`Add`, `Edit`, `Delete`"),
          field("attrs", Any, "the changed attributes"), field("user", Str, "who"),
          field("ui", Str, "from where"), field("revision", Int, "the configuration revision")]);
    ConfigScript = "config.script" => KindSpec::new(FGT, "config script ran",
        "A configuration script ran (REST `monitor/system/config-script/upload`).",
        &[field("id", Int, "the run's id"), field("name", Str, "the script's name"),
          field("status", Str, "`success` or `error`"), field("user", Str, "who ran it"),
          field("commands", Int, "commands run"), field("failed", Int, "commands that failed")]);
    AdminLogin = "admin.login" => KindSpec::new(FGT, "admin login",
        "An administrator login attempt (GUI, REST or SSH) and its outcome.",
        &[field("user", Str, "the administrator"), field("ui", Str, "where"),
          field("status", Str, "`success`, `failed` or `locked`"),
          maybe("seconds_left", Int, "lockout time left (`locked`)")]);
    AdminLogout = "admin.logout" => KindSpec::new(FGT, "admin logout",
        "An administrator session ended.",
        &[field("user", Str, "the administrator"), field("ui", Str, "where"),
          field("reason", Str, "`logout`, `timeout`, ...")]);
    AdminLockout = "admin.lockout" => KindSpec::new(FGT, "admin lockout",
        "Too many failed logins from an address: it is locked out.",
        &[field("srcip", Str, "the address"), field("seconds", Int, "lockout length"),
          field("failures", Int, "failed attempts")]);
    ConsoleReady = "console.ready" => KindSpec::new(FGT, "SSH console ready",
        "The SSH console listens.", &[field("ssh", Str, "its address")]);
    ConsoleCommand = "console.command" => KindSpec::new("FortiGate, FortiAnalyzer", "CLI command",
        "A command typed in a CLI session (secrets redacted).",
        &[field("user", Str, "the administrator"), field("ui", Str, "where"),
          field("command", Str, "the command line, redacted"),
          maybe("resolved", Str, "the command as the CLI understood it, abbreviations expanded (`diag deb app` → `diagnose debug application`); null when the CLI refused the line")]);
    StitchTest = "stitch.test" => KindSpec::new(FGT, "stitch test",
        "A stitch test was asked for (REST `automation-stitch/test` or `diagnose automation test`).",
        &[field("stitch", Str, "the stitch"), field("log", Any, "the log given to the test"),
          maybe("ui", Str, "`cli` from the CLI")]);
    StitchWebhook = "stitch.webhook" => KindSpec::new(FGT, "stitch webhook",
        "An incoming webhook call for a stitch.",
        &[field("stitch", Str, "the stitch"), field("body", Any, "the request body"),
          field("srcip", Str, "the caller")]);
    StitchWebhookIgnored = "stitch.webhook.ignored" => KindSpec::new(FGT, "webhook ignored",
        "A webhook call did not run its stitch (disabled, or not an incoming-webhook trigger).",
        &[field("stitch", Str, "the stitch"), field("enabled", Bool, "whether the stitch is enabled"),
          field("event_type", Str, "its trigger's event type")]);
    StitchRun = "stitch.run" => KindSpec::new(FGT, "stitch runs",
        "A stitch's trigger matched: the stitch runs its actions.",
        &[field("stitch", Str, "the stitch"), field("trigger", Str, "its trigger"),
          field("event_type", Str, "the trigger's event type (`ioc`, ...)"),
          field("actions", List, "the actions' names"), field("run", Int, "the run's number"),
          field("from", Str, "`event`, `test` or `webhook`"),
          maybe("srcip", Str, "the host the event is about")])
        .story(&[stage("stitch", &["srcip"], &[])]);
    StitchDone = "stitch.done" => KindSpec::new(FGT, "stitch done",
        "A stitch run finished.",
        &[field("stitch", Str, "the stitch"), field("run", Int, "the run's number"),
          field("status", Str, "`success` or `failed`"),
          field("results", List, "per action: `{action, status}`")]);
    ActionResult = "action.result" => KindSpec::new(FGT, "action result",
        "One action of a stitch run finished.",
        &[field("stitch", Str, "the stitch"), field("run", Int, "the run's number"),
          field("action", Str, "the action"), field("action_type", Str, "its type"),
          field("status", Str, "`success` or `failed`"), field("detail", Str, "what it did")]);
    IocDetected = "ioc.detected" => KindSpec::new(FGT, "IOC detected",
        "FortiAnalyzer reported a compromised host new to the FortiGate (an `ioc` trigger may run).",
        &[field("host", Str, "the host's IP"), field("verdict", Str, "`Infected`, ..."),
          field("threat", Str, "the threat"), field("ioc_level", Str, "`high` or `medium`"),
          maybe("hostname", Str, "its host name"), maybe("mac", Str, "its MAC"),
          field("detect_method", Str, "how it was detected"),
          maybe("epid", Int, "FortiAnalyzer's endpoint id")])
        .story(&[stage("stitch", &["host"], &[])]);
    IocRepeat = "ioc.repeat" => KindSpec::new(FGT, "IOC repeated",
        "FortiAnalyzer reported a compromised host the FortiGate already knows.",
        &[field("host", Str, "the host's IP"), field("verdict", Str, "the verdict"),
          field("threat", Str, "the threat"), field("suppressed", Any, "why no stitch ran")]);
    IocAck = "ioc.ack" => KindSpec::new("FortiGate, FortiAnalyzer", "IOC acknowledged",
        "A compromised host was acknowledged on FortiAnalyzer (FortiAnalyzer: `epip`, `by`; the FortiGate told of it: `host`).",
        &[maybe("host", Str, "the host's IP (FortiGate)"), maybe("epip", Str, "the host's IP (FortiAnalyzer)"),
          maybe("epid", Int, "FortiAnalyzer's endpoint id"), maybe("by", Str, "who (FortiAnalyzer)"),
          field("comment", Str, "the acknowledgement's comment")]);
    FazNotification = "faz.notification" => KindSpec::new(FGT, "FortiAnalyzer notification",
        "A notification from FortiAnalyzer over the log channel; further fields are the notification's own (`srcip`, `verdict`, ...).",
        &[field("id", Int, "the notification's id"), field("type", Str, "`ioc`, `ioc-ack` or `faz-event`")])
        .open()
        .story(&[stage("ioc", &["srcip"], &[("type", Is::Str("ioc"))])])
        .links(&[link("fgt-faz", &[])]);
    FazConnected = "faz.connected" => KindSpec::new(FGT, "FortiAnalyzer connected",
        "The log channel to FortiAnalyzer is up.", &[field("server", Str, "FortiAnalyzer's address")]);
    FazDisconnected = "faz.disconnected" => KindSpec::new(FGT, "FortiAnalyzer disconnected",
        "The log channel to FortiAnalyzer is down.", &[field("server", Str, "FortiAnalyzer's address")]);
    FazRestart = "faz.restart" => KindSpec::new(FGT, "FortiAnalyzer link restart",
        "The log channel was restarted (REST `log/fortianalyzer/restart`).", &[]);
    LogQueueError = "log.queue.error" => KindSpec::new(FGT, "log queue error",
        "The on-disk log queue failed; logs are kept in memory (or dropped).",
        &[field("error", Str, "the error"), field("dropped", Int, "logs dropped so far"),
          field("in_memory", Int, "logs held in memory")]);
    LogQueueRecovered = "log.queue.recovered" => KindSpec::new(FGT, "log queue recovered",
        "The on-disk log queue works again.",
        &[field("dropped", Int, "logs dropped"), field("spilled", Int, "logs written to disk")]);
    LogTraffic = "log.traffic" => KindSpec::new(FGT, "traffic log",
        "A forward traffic log (one proxied session).",
        &[field("summary", Str, "in words"), field("srcip", Str, "source IP"),
          field("dstip", Str, "destination IP"), field("policyid", Int, "the policy"),
          field("action", Str, "`accept`, `deny`, ..."), field("sentbyte", Int, "bytes sent"),
          field("rcvdbyte", Int, "bytes received")])
        .line().per_request("proxy")
        .links(&[link("fgt-internet", &[]), link("endpoint-fortigate", &[])]);
    LogWebfilter = "log.webfilter" => KindSpec::new(FGT, "web filter log",
        "A web filter log (a rated URL, allowed or blocked).",
        &[field("summary", Str, "in words"), field("srcip", Str, "source IP"),
          field("url", Str, "the URL"), field("hostname", Str, "the host name"),
          field("action", Str, "`passthrough`, `blocked`, ..."), field("cat", Int, "FortiGuard category"),
          field("catdesc", Str, "its name"), field("logid", Str, "the log id"),
          field("profile", Str, "the web filter profile")])
        .line().per_request("webfilter")
        .story(&[stage("log", &["srcip", "text:line"], &[])])
        .links(&[link("fgt-internet", &[]), link("endpoint-fortigate", &[])]);
    DataplaneDrop = "dataplane.drop" => KindSpec::new(FGT, "connection dropped",
        "The proxy dropped a connection (a banned source).",
        &[field("srcip", Str, "the source"), field("reason", Str, "`banned`")]);
    BannedAdd = "banned.add" => KindSpec::new(FGT, "IP banned",
        "Addresses were added to the banned (quarantined) list.",
        &[field("ip_addresses", List, "the addresses"), field("expiry", Int, "seconds, 0 = never"),
          maybe("source", Str, "the ban's source"), maybe("stitch", Str, "the stitch that banned")]);
    BannedClear = "banned.clear" => KindSpec::new(FGT, "IP unbanned",
        "Addresses were removed from the banned list.", &[field("ip_addresses", List, "the addresses")]);
    BannedClearAll = "banned.clear_all" => KindSpec::new(FGT, "banned list cleared",
        "The banned list was emptied.", &[]);
    QuarantineMac = "quarantine.mac" => KindSpec::new(FGT, "MAC quarantined",
        "A stitch added a MAC to the user quarantine target.",
        &[field("mac", Str, "the MAC"), field("entry", Str, "the target entry"),
          field("stitch", Str, "the stitch")]);
    Alert = "alert" => KindSpec::new(FGT, "stitch alert",
        "A stitch's alert action (email, notification, ...) produced its message.",
        &[field("stitch", Str, "the stitch"), field("action", Str, "the action"),
          field("message", Str, "the message"), maybe("srcip", Str, "the host the event is about")]);
    EmsStatus = "ems.status" => KindSpec::new(FGT, "EMS connector status",
        "The EMS connector's state changed.",
        &[field("ems", Str, "the connector"), field("status", Str, "its status"),
          field("connected", Bool, "connected"), maybe("ems_serial", Str, "EMS's serial")])
        .links(&[link("fgt-ems", &[])]);
    EmsQuarantineRequest = "ems.quarantine.request" => KindSpec::new(FGT, "EMS quarantine asked",
        "The FortiGate asks EMS to quarantine an endpoint (the `quarantine-forticlient` action, REST).",
        &[field("ems", Str, "the connector"), field("server", Str, "EMS's address"),
          maybe("ip", Str, "the endpoint's IP"), maybe("mac", Str, "its MAC"),
          maybe("fctuid", Str, "its FortiClient UID"), field("reason", Str, "why"),
          field("stitch", Str, "the stitch (empty from REST)")])
        .story(&[stage("ems", &["ip"], &[])])
        .links(&[link("fgt-ems", &[])]);
    EmsUnquarantineRequest = "ems.unquarantine.request" => KindSpec::new(FGT, "EMS release asked",
        "The FortiGate asks EMS to release an endpoint from quarantine.",
        &[field("ems", Str, "the connector"), field("server", Str, "EMS's address"),
          maybe("ip", Str, "the endpoint's IP"), maybe("mac", Str, "its MAC"),
          maybe("fctuid", Str, "its FortiClient UID"), field("reason", Str, "why"),
          field("stitch", Str, "the stitch (empty from REST)")]);
    EmsQuarantineRetry = "ems.quarantine.retry" => KindSpec::new(FGT, "EMS quarantine retried",
        "EMS did not take a quarantine request; the action retries.",
        &[field("stitch", Str, "the stitch"), field("ip", Str, "the endpoint's IP"),
          field("attempt", Int, "the attempt that failed"), field("retry_in_s", Int, "seconds to the next"),
          field("error", Str, "what failed")]);
    EndpointQuarantine = "endpoint.quarantine" => KindSpec::new(FGT, "endpoint quarantine (REST)",
        "REST `monitor/endpoint-control/registration/quarantine` had EMS quarantine an endpoint.",
        &[maybe("uid", Str, "its FortiClient UID"), maybe("mac", Str, "its MAC"), field("ems", Str, "the connector")]);
    EndpointUnquarantine = "endpoint.unquarantine" => KindSpec::new(FGT, "endpoint release (REST)",
        "REST `monitor/endpoint-control/registration/unquarantine` had EMS release an endpoint.",
        &[maybe("uid", Str, "its FortiClient UID"), maybe("mac", Str, "its MAC"), field("ems", Str, "the connector")]);

    // ------------------------------------------------------------ FortiAnalyzer
    StoreRecovered = "store.recovered" => KindSpec::new(FAZ, "log store recovered",
        "Writing a sender's logs works again after an error.", &[field("sender", Str, "the sender")]);
    StoreError = "store.error" => KindSpec::new(FAZ, "log store error",
        "Storing logs failed.", &[field("error", Str, "the error")]);
    StoreRetention = "store.retention" => KindSpec::new(FAZ, "logs expired",
        "Retention deleted old logs.", &[field("deleted", Int, "logs deleted")]);
    LogReceived = "log.received" => KindSpec::new(FAZ, "logs stored",
        "A batch of logs from a device was stored.",
        &[field("from", Str, "the sender's serial"), field("count", Int, "logs in the batch"),
          field("unparsed", Int, "lines that did not parse"), field("last_seq", Int, "the sender's last sequence number"),
          maybe("sample", Str, "one line of the batch")])
        .per_request("fortianalyzer")
        .story(&[stage("log", &["text:sample"], &[])])
        .links(&[link("sender-faz", &[])]);
    DeviceRegistered = "device.registered" => KindSpec::new(FAZ, "device registered",
        "A device FortiAnalyzer had not seen connected (or sent syslog).",
        &[field("sn", Str, "its serial"), field("name", Str, "its name"),
          maybe("platform", Str, "its platform"), maybe("device_type", Str, "`fortigate`, `forticlient`, ..."),
          field("authorized", Bool, "authorized already"), maybe("ip", Str, "its address"),
          maybe("via", Str, "`syslog` for a syslog sender")]);
    DeviceConnected = "device.connected" => KindSpec::new(FAZ, "device connected",
        "A device's log channel connected.",
        &[field("sn", Str, "its serial"), field("authorized", Bool, "whether it is authorized")]);
    DeviceDisconnected = "device.disconnected" => KindSpec::new(FAZ, "device disconnected",
        "A device's log channel closed.", &[field("sn", Str, "its serial")]);
    DeviceAuthorized = "device.authorized" => KindSpec::new(FAZ, "device authorized",
        "A device was authorized (added to the ADOM).",
        &[field("sn", Str, "its serial"), field("name", Str, "its name")]);
    DeviceDeleted = "device.deleted" => KindSpec::new(FAZ, "device deleted",
        "A device was deleted.", &[field("sn", Str, "its serial")]);
    IocCompromised = "ioc.compromised" => KindSpec::new(FAZ, "compromised host",
        "A log matched the threat database: the host is (again) compromised.",
        &[field("epip", Str, "the host's IP"), field("epid", Int, "its endpoint id"),
          maybe("epname", Str, "its name"), field("verdict", Str, "`Infected`, ..."),
          field("level", Str, "`high` or `medium`"), field("threat", Str, "the threat"),
          field("detect_method", Str, "how it was detected"), field("devid", Str, "the logging device"),
          field("rescan", Bool, "found by a rescan")])
        .story(&[stage("ioc", &["epip"], &[])]);
    IocNotify = "ioc.notify" => KindSpec::new(FAZ, "notification sent",
        "FortiAnalyzer queued a notification to a device (an IOC, an acknowledgement).",
        &[field("target", Str, "the device's serial"), field("id", Int, "the notification's id"),
          field("type", Str, "`ioc`, `ioc-ack`, `faz-event`"), maybe("srcip", Str, "the host"),
          field("delivered", Bool, "sent now (the device is connected)")])
        .story(&[stage("ioc", &["srcip"], &[("type", Is::Str("ioc"))]),
                 stage("ioc", &["srcip"], &[("type", Is::Absent)])])
        .links(&[link("fgt-faz", &[])]);
    IocNotifyAcked = "ioc.notify.acked" => KindSpec::new(FAZ, "notification acknowledged",
        "A device acknowledged a notification.",
        &[field("target", Str, "the device's serial"), field("id", Int, "the notification's id")])
        .links(&[link("fgt-faz", &[])]);
    AlertRaised = "alert.raised" => KindSpec::new(FAZ, "alert raised",
        "An event handler raised an alert.",
        &[field("alertid", Any, "the alert's id"), field("triggername", Str, "the handler"),
          field("epip", Str, "the host's IP"), field("threat", Str, "the threat"),
          field("severity", Str, "its severity")])
        .story(&[stage("ioc", &["epip"], &[])]);
    IocDay = "ioc.day" => KindSpec::new(FAZ, "IOC day summary",
        "The daily compromised-host summary ran.", &[field("summary", Str, "in words")]);
    IocRescan = "ioc.rescan" => KindSpec::new(FAZ, "IOC rescan",
        "A rescan of stored logs against the threat database finished.",
        &[field("tid", Int, "the task id"), field("scanned", Int, "logs scanned"),
          field("threats", Int, "threats found"), field("new_threats", Int, "new ones"),
          field("status", Str, "its status")]);
    ApiRequest = "api.request" => KindSpec::new(FAZ, "JSON-RPC request",
        "A JSON-RPC API request (secrets left out).",
        &[field("method", Str, "`get`, `set`, `exec`, ..."), field("urls", List, "the URLs"),
          maybe("peer", Str, "the caller"), maybe("user", Str, "the session's user")])
        .routine();
    ApiLogin = "api.login" => KindSpec::new(FAZ, "JSON-RPC login",
        "A JSON-RPC login succeeded.", &[field("user", Str, "the user")]);
    ApiLoginFailed = "api.login_failed" => KindSpec::new(FAZ, "JSON-RPC login failed",
        "A JSON-RPC login failed.", &[field("user", Str, "the user")]);
    SyslogDropped = "syslog.dropped" => KindSpec::new(FAZ, "syslog dropped",
        "Syslog datagrams were dropped (the kernel's buffer or the ingest queue was full).",
        &[field("proto", Str, "`udp`"), field("new", Int, "dropped since the last report"),
          field("kernel_drops", Int, "by the kernel, in all"), field("queue_drops", Int, "by the queue, in all")]);
    ConsoleConfig = "console.config" => KindSpec::new(FAZ, "CLI config change",
        "A configuration change made in the FortiAnalyzer CLI.",
        &[field("user", Str, "the administrator"), field("path", Str, "the configuration path"),
          field("changes", Any, "what changed")]);
    ConsoleLogin = "console.login" => KindSpec::new(FAZ, "CLI login", "An SSH login succeeded.", USER_UI);
    ConsoleLoginFailed = "console.login_failed" => KindSpec::new(FAZ, "CLI login failed",
        "An SSH login failed.", USER_UI);
    ConsoleTimeout = "console.timeout" => KindSpec::new(FAZ, "CLI idle timeout",
        "An SSH session was closed for being idle.", USER_UI);
    ConsoleLogout = "console.logout" => KindSpec::new(FAZ, "CLI logout", "An SSH session ended.", USER_UI);
    LabAutoAuthorize = "lab.auto_authorize" => KindSpec::new(FAZ, "auto-authorize",
        "The lab's auto-authorize switch of new devices was set.", &[field("enabled", Bool, "on or off")]);

    // ------------------------------------------------------------ EMS
    FabricDevice = "fabric.device" => KindSpec::new(EMS, "Fabric device",
        "A FortiGate's Fabric connector was seen, authorized or deauthorized.",
        &[field("id", Int, "its id"), field("cn", Str, "its certificate's CN"),
          field("authorized", Bool, "authorized"), field("state", Str, "`seen`, `authorized`, `deauthorized`"),
          maybe("peer", Str, "its address"), maybe("by", Str, "who changed it")])
        .links(&[link("fgt-ems", &[])]);
    EmsSignin = "ems.signin" => KindSpec::new(EMS, "EMS sign-in",
        "An administrator signed in to the EMS API.", &[field("user", Str, "the user")]);
    EmsQuarantine = "ems.quarantine" => KindSpec::new(EMS, "EMS quarantine",
        "EMS marked an endpoint quarantined (an administrator, or the Fabric on a FortiGate's request).",
        &[field("device_id", Int, "EMS's endpoint id"), field("fctuid", Str, "its FortiClient UID"),
          maybe("ip", Str, "its IP"), maybe("hostname", Str, "its host name"),
          maybe("quarantine_id", Int, "the quarantine's id"), field("by", Str, "who (`fortigate:<serial>`, `admin:<user>`)"),
          maybe("via", Str, "`fabric` or `api`"), maybe("reason", Str, "why")])
        .story(&[stage("ems", &["ip"], &[])])
        .links(&[link("fgt-ems", &[("via", Is::Str("fabric"))])]);
    EmsUnquarantine = "ems.unquarantine" => KindSpec::new(EMS, "EMS release",
        "EMS released an endpoint (an administrator, the Fabric, or the endpoint's access code).",
        &[field("device_id", Int, "EMS's endpoint id"), field("fctuid", Str, "its FortiClient UID"),
          maybe("ip", Str, "its IP"), maybe("hostname", Str, "its host name"),
          maybe("quarantine_id", Int, "the quarantine's id"), field("by", Str, "who (`access-code`, ...)"),
          maybe("via", Str, "`fabric` or `api`"), maybe("reason", Str, "why")]);
    EmsDevicesDeleted = "ems.devices.deleted" => KindSpec::new(EMS, "endpoints deleted",
        "Endpoints were deleted from EMS.", &[field("ids", List, "their ids")]);
    EmsQuarantineRefused = "ems.quarantine.refused" => KindSpec::new(EMS, "quarantine refused",
        "EMS refused a Fabric quarantine request (the FortiGate is not authorized).",
        &[field("by", Str, "the caller"), field("reason", Str, "why"),
          field("quarantine", Bool, "quarantine (true) or release")]);
    EmsQuarantineDelivered = "ems.quarantine.delivered" => KindSpec::new(EMS, "quarantine delivered",
        "EMS told the endpoint's FortiClient to quarantine itself (telemetry reply).",
        &[field("device_id", Int, "EMS's endpoint id"), field("fctuid", Str, "its FortiClient UID"),
          field("quarantine_id", Int, "the quarantine's id")])
        .story(&[stage("quarantine", &["fctuid:fctuid"], &[])])
        .links(&[link("endpoint-ems", &[])]);
    TelemetryError = "telemetry.error" => KindSpec::new(EMS, "telemetry error",
        "A FortiClient telemetry frame was malformed.",
        &[field("peer", Str, "the sender"), field("error", Str, "what was wrong")]);
    EndpointRegistered = "endpoint.registered" => KindSpec::new("EMS, endpoint", "endpoint registered",
        "A FortiClient registered with EMS (EMS: its record; the endpoint: `endpoint`, its name).",
        &[maybe("device_id", Int, "EMS's endpoint id"), field("fctuid", Str, "its FortiClient UID"),
          maybe("hostname", Str, "its host name (EMS)"), field("ip", Str, "its IP"),
          maybe("mac", Str, "its MAC (EMS)"), maybe("user", Str, "its user (EMS)"),
          maybe("peer", Str, "the telemetry connection (EMS)"), maybe("endpoint", Str, "its name (endpoint)")])
        .links(&[link("endpoint-ems", &[])])
        .marks(&["names-endpoint"]);
    EndpointKeepalive = "endpoint.keepalive" => KindSpec::new(EMS, "keep-alive",
        "A FortiClient keep-alive (sampled).",
        &[field("device_id", Int, "EMS's endpoint id"), field("fctuid", Str, "its FortiClient UID"),
          field("ec_quarantined", Bool, "the endpoint says it is quarantined"),
          field("sampled", Bool, "a sample (nothing changed)")])
        .routine()
        .links(&[link("endpoint-ems", &[])]);

    // ------------------------------------------------------------ endpoints
    EndpointQuarantined = "endpoint.quarantined" => KindSpec::new(ENDPOINT, "endpoint quarantined",
        "The FortiClient applied a quarantine: it blocks its traffic.",
        &[field("endpoint", Str, "its name"), field("fctuid", Str, "its FortiClient UID"),
          field("ip", Str, "its IP"), maybe("quarantine_id", Int, "the quarantine's id"),
          field("message", Str, "the message shown")])
        .story(&[stage("quarantine", &["ip"], &[])])
        .links(&[link("endpoint-ems", &[])]);
    EndpointReleased = "endpoint.released" => KindSpec::new(ENDPOINT, "endpoint released",
        "The FortiClient left quarantine.",
        &[field("endpoint", Str, "its name"), field("fctuid", Str, "its FortiClient UID"),
          field("ip", Str, "its IP"), maybe("quarantine_id", Int, "the quarantine's id"),
          field("by", Str, "`ems` or `access-code`")]);
    EndpointCodeReported = "endpoint.code_reported" => KindSpec::new(ENDPOINT, "access code reported",
        "EMS answered an access code the user entered.",
        &[field("endpoint", Str, "its name"), field("accepted", Bool, "whether EMS accepted it")]);
    EndpointFetch = "endpoint.fetch" => KindSpec::new(ENDPOINT, "endpoint fetch",
        "An endpoint fetched a URL (through the FortiGate) and what it got.",
        &[field("endpoint", Str, "its name"), field("ip", Str, "its IP"), field("url", Str, "the URL"),
          field("ok", Bool, "it got an answer"), maybe("status", Int, "the HTTP status"),
          maybe("blocked_by", Str, "`fortigate` or `quarantine`"), field("bytes", Int, "body bytes"),
          maybe("sha256", Str, "the body's hash"), maybe("error", Str, "what failed")])
        .per_request("endpoints")
        .marks(&["fetch-result"])
        .story(&[stage("quarantine", &["ip"], &[("blocked_by", Is::Str("quarantine"))]),
                 stage("fetch", &["ip"], &[("ok", Is::Bool(true))])])
        .links(&[link("endpoint-fortigate", &[])]);

    // ------------------------------------------------------------ internet
    HttpRequest = "http.request" => KindSpec::new("internet", "site request",
        "A lab Internet site answered a request.",
        &[maybe("site", Str, "the site"), maybe("host", Str, "the host asked for"),
          maybe("ip", Str, "the site's IP"), field("method", Str, "the method"),
          field("path", Str, "the path"), field("scheme", Str, "`http` or `https`"),
          field("status", Int, "the status"), field("bytes", Int, "body bytes"),
          field("src", Str, "the client's lab address"), field("srcport", Int, "its port"),
          maybe("category", Any, "the site's category")])
        .per_request("internet")
        .links(&[link("fgt-internet", &[])]);

    // ------------------------------------------------------------ fortilab (the orchestrator)
    LinkUp = "link.up" => KindSpec::new(LAB, "events reconnected",
        "The orchestrator follows a device's event stream again.",
        &[field("source", Str, "the device process"), field("summary", Str, "in words")]).tone(Tone::Up);
    LinkDown = "link.down" => KindSpec::new(LAB, "events lost",
        "A device's event stream broke (the device stopped or restarts); the orchestrator reconnects.",
        &[field("source", Str, "the device process"), field("summary", Str, "in words")]).tone(Tone::Lost);
    LinkFault = "link.fault" => KindSpec::new(LAB, "link fault set",
        "A lab link's state, latency, loss or rate was set.",
        &[field("summary", Str, "in words"), field("link", Any, "the link's report")]);
    DeviceExited = "device.exited" => KindSpec::new(LAB, "device exited",
        "A device process ended on its own.",
        &[field("source", Str, "the device process"), field("summary", Str, "in words, with its log file")])
        .tone(Tone::Down);
    LabSnapshot = "lab.snapshot" => KindSpec::new(LAB, "lab snapshot",
        "A lab snapshot was saved or restored.",
        &[maybe("summary", Str, "in words"), field("op", Str, "`snapshot` or `restore`"),
          maybe("name", Str, "the snapshot"), maybe("snapshot", Any, "its report")]);
    LabReset = "lab.reset" => KindSpec::new(LAB, "lab restarted",
        "The lab was restarted (same seed; maybe another speed).", &[field("summary", Str, "in words")]);
    StepStart = "step.start" => KindSpec::new(LAB, "step starts",
        "A scenario step starts.",
        &[field("step", Int, "its number"), field("summary", Str, "in words"),
          maybe("action", Str, "`fetch` for a fetch"), maybe("endpoint", Str, "the fetching endpoint"),
          maybe("url", Str, "the URL")])
        .story(&[stage("fetch", &["name:endpoint"], &[("action", Is::Str("fetch"))])]);
    StepPass = "step.pass" => KindSpec::new(LAB, "step passed",
        "A scenario step passed.", &[field("step", Int, "its number"), field("summary", Str, "in words")])
        .tone(Tone::Pass);
    StepFail = "step.fail" => KindSpec::new(LAB, "step failed",
        "A scenario step failed.", &[field("step", Int, "its number"), field("summary", Str, "in words")])
        .tone(Tone::Fail);
    ScenarioStart = "scenario.start" => KindSpec::new(LAB, "scenario starts",
        "The dashboard's player starts a scenario.",
        &[field("summary", Str, "in words"), field("file", Str, "the scenario file")]);
    ScenarioDone = "scenario.done" => KindSpec::new(LAB, "scenario done",
        "The dashboard's player finished a scenario.",
        &[field("summary", Str, "in words"), field("passed", Bool, "whether every step passed")]);
    ExerciseHint = "exercise.hint" => KindSpec::new(LAB, "hint shown",
        "An exercise hint was shown.",
        &[field("task", Str, "the task"), field("hint", Int, "which hint"), field("summary", Str, "in words")]);
    ExerciseRestart = "exercise.restart" => KindSpec::new(LAB, "task started over",
        "An exercise task was started over (its lab snapshot restored).",
        &[field("task", Str, "the task"), field("summary", Str, "in words")]);
    ExerciseTaskDone = "exercise.task_done" => KindSpec::new(LAB, "task done",
        "An exercise task's checks passed.",
        &[field("task", Str, "the task"), field("summary", Str, "in words")]);
    DashboardCall = "dashboard.call" => KindSpec::new(LAB, "dashboard API call",
        "A dashboard button called a vendor API.",
        &[field("summary", Str, "in words"), field("api", Str, "the API"), field("ok", Bool, "it succeeded"),
          field("request", Any, "the request"), field("response", Any, "the response")]);
    DashboardBrowse = "dashboard.browse" => KindSpec::new(LAB, "dashboard browse",
        "The dashboard had an endpoint fetch a URL.",
        &[field("summary", Str, "in words"), field("action", Str, "`fetch`"),
          field("endpoint", Str, "the endpoint"), field("url", Any, "the URL")])
        .story(&[stage("fetch", &["name:endpoint"], &[("action", Is::Str("fetch"))])]);
    DashboardDevice = "dashboard.device" => KindSpec::new(LAB, "device control",
        "The dashboard stopped, killed, started or restarted a device.",
        &[field("summary", Str, "in words"), field("target", Str, "the device"), field("action", Str, "what")]);
    JournalGap = "journal.gap" => KindSpec::new(LAB, "journal gap",
        "Events were not written to the timeline files (the journal was behind).",
        &[field("dropped", Int, "events not written"), field("summary", Str, "in words")]);
    SyntheticTick = "synthetic.tick" => KindSpec::new("synthetic", "synthetic event",
        "A synthetic event of the dashboard's load test (`POST /_lab/inject`).",
        &[field("n", Int, "its number"), field("of", Int, "events in the run"),
          field("run", Any, "the run"), field("summary", Str, "in words")])
        .marks(&["synthetic"]);
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why an event does not match the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown event kind {kind:?}{}", did_you_mean(.suggestion))]
    UnknownKind {
        kind: String,
        suggestion: Option<&'static str>,
    },
    #[error("event {kind}: unknown field `{field}`{} (fields: {known})", did_you_mean(.suggestion))]
    UnknownField {
        kind: &'static str,
        field: String,
        suggestion: Option<&'static str>,
        known: String,
    },
    #[error("event {kind}: field `{field}` must be {expected}, got {got}")]
    WrongType {
        kind: &'static str,
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("event {kind}: missing field `{field}`")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
}

fn did_you_mean(s: &Option<&'static str>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

/// The kind named `name`, or an error with the closest catalog name.
pub fn parse_kind(name: &str) -> Result<EventKind, CatalogError> {
    EventKind::from_name(name).ok_or_else(|| CatalogError::UnknownKind {
        kind: name.to_string(),
        suggestion: closest(name, EventKind::ALL.iter().map(|k| k.name())),
    })
}

/// Checks that `fields` may occur in an event of `kind` (names only: a scenario's
/// `expect_event` fields), for a kind without further fields of its own.
pub fn check_field_names<'a>(
    kind: EventKind,
    fields: impl IntoIterator<Item = &'a str>,
) -> Result<(), CatalogError> {
    let spec = kind.spec();
    if spec.open {
        return Ok(());
    }
    for f in fields {
        if spec.field(f).is_none() && !ENVELOPE.contains(&f) {
            return Err(unknown_field(kind, f));
        }
    }
    Ok(())
}

fn unknown_field(kind: EventKind, f: &str) -> CatalogError {
    let spec = kind.spec();
    CatalogError::UnknownField {
        kind: kind.name(),
        field: f.to_string(),
        suggestion: closest(f, spec.fields.iter().map(|x| x.name)),
        known: spec
            .fields
            .iter()
            .map(|x| x.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Checks an event's fields (the object without the envelope, or with it) against its kind.
pub fn check_fields(kind: EventKind, data: &Map<String, Value>) -> Result<(), CatalogError> {
    let spec = kind.spec();
    for (k, v) in data {
        match spec.field(k) {
            Some(f) => {
                if !(f.ty.admits(v) || (f.optional && v.is_null())) {
                    return Err(CatalogError::WrongType {
                        kind: kind.name(),
                        field: f.name,
                        expected: f.ty.name(),
                        got: type_of(v).into(),
                    });
                }
            }
            None if spec.open || ENVELOPE.contains(&k.as_str()) => {}
            None => return Err(unknown_field(kind, k)),
        }
    }
    if let Some(f) = spec
        .fields
        .iter()
        .find(|f| !f.optional && !data.contains_key(f.name))
    {
        return Err(CatalogError::MissingField {
            kind: kind.name(),
            field: f.name,
        });
    }
    Ok(())
}

/// Checks a whole event (as on the wire or in the timeline) against the catalog.
pub fn check_event(ev: &Value) -> Result<EventKind, CatalogError> {
    let kind = parse_kind(ev.get("kind").and_then(Value::as_str).unwrap_or(""))?;
    let empty = Map::new();
    check_fields(kind, ev.as_object().unwrap_or(&empty))?;
    Ok(kind)
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The candidate closest to `word` (edit distance), when it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    let limit = (word.chars().count().max(c.chars().count()) / 3).max(2);
    (d <= limit).then_some(c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn when_json(when: When) -> Value {
    Value::Object(
        when.iter()
            .map(|(k, v)| {
                let v = match v {
                    Is::Str(s) => json!(s),
                    Is::Bool(b) => json!(b),
                    Is::Absent => Value::Null,
                };
                (k.to_string(), v)
            })
            .collect(),
    )
}

/// One kind as JSON (the dashboard's view).
pub fn kind_json(kind: EventKind) -> Value {
    let s = kind.spec();
    json!({
        "kind": kind.name(),
        "source": s.source,
        "label": s.label,
        "about": s.about,
        "fields": s.fields.iter().map(|f| json!({
            "name": f.name, "type": f.ty.name(), "optional": f.optional, "about": f.about,
        })).collect::<Vec<_>>(),
        "open": s.open,
        "line": s.has_line,
        "routine": s.routine,
        "per_request": s.per_request,
        "tone": s.tone.map(Tone::name),
        "story": s.story.iter().map(|r| json!({"stage": r.stage, "ip": r.ip, "when": when_json(r.when)})).collect::<Vec<_>>(),
        "links": s.links.iter().map(|r| json!({"link": r.link, "when": when_json(r.when)})).collect::<Vec<_>>(),
        "marks": s.marks,
    })
}

/// The whole catalog as JSON: `{"kinds": {"stitch.run": {...}, ...}}` (served to the
/// dashboard).
pub fn catalog_json() -> Value {
    let kinds: Map<String, Value> = EventKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), kind_json(*k)))
        .collect();
    json!({ "kinds": kinds })
}

/// The catalog as a Markdown table (`docs/events.md` holds it between markers).
pub fn markdown_table() -> String {
    let mut out = String::from("| kind | from | what happened | fields |\n|---|---|---|---|\n");
    for k in EventKind::ALL {
        let s = k.spec();
        let mut fields: Vec<String> = s
            .fields
            .iter()
            .map(|f| {
                format!(
                    "`{}`{} {}",
                    f.name,
                    if f.optional { "?" } else { "" },
                    f.ty.name()
                )
            })
            .collect();
        if s.has_line {
            fields.insert(0, "`line` string".into());
        }
        if s.open {
            fields.push("and the notification's own fields".into());
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.name(),
            s.source,
            s.about.replace('|', "\\|"),
            fields.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            assert!(seen.insert(k.name()), "{} twice", k.name());
            assert_eq!(EventKind::from_name(k.name()), Some(*k));
            let s = k.spec();
            assert!(!s.about.is_empty() && !s.label.is_empty(), "{k}");
            let mut fields = std::collections::BTreeSet::new();
            for f in s.fields {
                assert!(fields.insert(f.name), "{k}: field {} twice", f.name);
                assert!(
                    !ENVELOPE.contains(&f.name) || f.name == "source",
                    "{k}: {}",
                    f.name
                );
            }
            for r in s.story {
                assert!(
                    ["fetch", "log", "ioc", "stitch", "ems", "quarantine"].contains(&r.stage),
                    "{k}"
                );
            }
        }
        assert_eq!(EventKind::from_name("stitch.runs"), None);
    }

    #[test]
    fn an_unknown_kind_says_what_was_meant() {
        let e = parse_kind("stich.run").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown event kind "stich.run" (did you mean "stitch.run"?)"#
        );
        let e = parse_kind("ioc.ackd").unwrap_err();
        assert!(e.to_string().contains(r#"did you mean "ioc.ack"?"#), "{e}");
        let e = parse_kind("something.else.entirely").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown event kind "something.else.entirely""#
        );
    }

    #[test]
    fn fields_are_checked_by_name_and_type() {
        let ok = json!({"stitch": "S", "trigger": "T", "event_type": "ioc", "actions": ["a"],
                        "run": 1, "from": "event", "srcip": null});
        check_fields(EventKind::StitchRun, ok.as_object().unwrap()).unwrap();
        let bad = json!({"stitch": "S", "trigger": "T", "event_type": "ioc", "actions": ["a"],
                         "run": "one", "from": "event"});
        assert_eq!(
            check_fields(EventKind::StitchRun, bad.as_object().unwrap())
                .unwrap_err()
                .to_string(),
            "event stitch.run: field `run` must be integer, got string"
        );
        let e = check_field_names(EventKind::IocAck, ["hots"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("event ioc.ack: unknown field `hots` (did you mean \"host\"?)"),
            "{e}"
        );
        check_field_names(EventKind::IocAck, ["host", "device"]).unwrap();
        // A notification's own fields are open.
        check_field_names(EventKind::FazNotification, ["verdict"]).unwrap();
        let missing = json!({"kind": "banned.clear", "device": "FGT-LAB", "seq": 1, "ts": 2});
        assert_eq!(
            check_event(&missing).unwrap_err().to_string(),
            "event banned.clear: missing field `ip_addresses`"
        );
    }

    #[test]
    fn the_catalog_json_has_every_kind_and_its_hints() {
        let c = catalog_json();
        let kinds = c["kinds"].as_object().unwrap();
        assert_eq!(kinds.len(), EventKind::ALL.len());
        let f = &kinds["endpoint.fetch"];
        assert_eq!(f["per_request"], "endpoints");
        assert_eq!(f["story"][0]["when"]["blocked_by"], "quarantine");
        assert_eq!(kinds["ioc.notify"]["story"][1]["when"]["type"], Value::Null);
        assert_eq!(kinds["api.request"]["routine"], true);
        assert_eq!(kinds["link.down"]["tone"], "lost");
    }

    /// `docs/events.md` holds the table generated from the catalog. After changing the
    /// catalog, `FORTILAB_BLESS=1 cargo test -p fortilab-core events_doc` rewrites it.
    #[test]
    fn events_doc_matches_the_catalog() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
        let doc = std::fs::read_to_string(path).expect("docs/events.md");
        let (begin, end) = (
            "<!-- BEGIN catalog (generated) -->\n",
            "<!-- END catalog -->",
        );
        let a = doc.find(begin).expect("begin marker") + begin.len();
        let b = doc.find(end).expect("end marker");
        let table = markdown_table();
        if doc[a..b] != table {
            if std::env::var_os("FORTILAB_BLESS").is_some() {
                let new = format!("{}{}{}", &doc[..a], table, &doc[b..]);
                std::fs::write(path, new).unwrap();
            } else {
                panic!("docs/events.md is not the catalog's table: run FORTILAB_BLESS=1 cargo test -p fortilab-core events_doc");
            }
        }
    }
}
