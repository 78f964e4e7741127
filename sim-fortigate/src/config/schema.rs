//! The data-driven schema: which tables and fields exist (per FortiOS version), their types,
//! defaults and datasources (which tables a reference may name).
//!
//! Tables and fields may appear several times with disjoint version ranges (`logid` is an
//! integer in 6.4 and a list in 7.0+; `endpoint-control fctems` is keyed by name in 6.4 and by
//! `ems-id` in 7.0.8+); lookups pick the definition valid at the device's version.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::version::{FosVersion, Vr};

/// The type of a field.
#[derive(Debug, Clone)]
pub enum FieldType {
    /// A string of at most `n` characters.
    Str(usize),
    /// A secret, stored hashed as `ENC <hex>`.
    Password,
    /// An integer in a range.
    Int(i64, i64),
    /// One of the options.
    Enum(&'static [&'static str]),
    /// An IPv4 address.
    Ip,
    /// An IPv4 address and netmask (`a.b.c.d m.m.m.m`; `a.b.c.d/len` is accepted).
    IpMask,
    /// An object UUID.
    Uuid,
    /// A reference to one entry of one of the datasource tables (or a built-in name).
    Ref {
        ds: &'static [&'static str],
        builtins: &'static [&'static str],
    },
    /// A list of references (`set srcaddr "a" "b"`); with no datasource, free strings.
    /// `key` is the member attribute name in REST (`name`, `id`, ...).
    Multi {
        ds: &'static [&'static str],
        builtins: &'static [&'static str],
        key: &'static str,
    },
    /// A list of integers (`set logid 32102 32103` in 7.0+).
    MultiInt {
        min: i64,
        max: i64,
        key: &'static str,
    },
    /// Space-separated options/words shown as one string in REST (`allowaccess`, `day`,
    /// `tcp-portrange`). With options, each word must be one of them.
    Words(&'static [&'static str]),
    /// A sub-table (`config filters` inside an entry).
    Table(Box<TableSchema>),
}

/// A field of a table.
#[derive(Debug, Clone)]
pub struct FieldSchema {
    pub name: &'static str,
    pub ty: FieldType,
    /// The default in CLI form (`""` for unset strings and lists).
    pub default: &'static str,
    pub versions: Vr,
    /// Must be set before `next` (`Attribute 'x' MUST be set.`).
    pub required: bool,
    /// The CLI's skip rule: the field applies only when another field of the entry has one
    /// of these values (`subnet` of an `ipmask` address). REST `skip=1` hides it otherwise.
    pub when: Option<(&'static str, &'static [&'static str])>,
}

impl FieldSchema {
    fn new(name: &'static str, ty: FieldType, default: &'static str) -> Self {
        Self {
            name,
            ty,
            default,
            versions: Vr::ALL,
            required: false,
            when: None,
        }
    }

    /// Applies only when `field` has one of `values` (see [`FieldSchema::when`]).
    pub fn when(mut self, field: &'static str, values: &'static [&'static str]) -> Self {
        self.when = Some((field, values));
        self
    }

    /// Whether the field is skipped in an entry whose `field` value is `value`.
    pub fn skipped_by(&self, value_of: impl Fn(&str) -> String) -> bool {
        match self.when {
            Some((other, values)) => {
                let v = value_of(other);
                !values.iter().any(|x| x.eq_ignore_ascii_case(&v))
            }
            None => false,
        }
    }

    /// Restricts the field to a version range.
    pub fn v(mut self, vr: Vr) -> Self {
        self.versions = vr;
        self
    }

    /// Marks the field as required.
    pub fn req(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn is_list(&self) -> bool {
        matches!(
            self.ty,
            FieldType::Multi { .. } | FieldType::MultiInt { .. }
        )
    }

    pub fn sub_table(&self) -> Option<&TableSchema> {
        match &self.ty {
            FieldType::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The REST/`with_meta` type name.
    pub fn type_name(&self) -> &'static str {
        match self.ty {
            FieldType::Str(_) => "string",
            FieldType::Password => "password",
            FieldType::Int(..) => "integer",
            FieldType::Enum(_) => "option",
            FieldType::Ip => "ipv4-address",
            FieldType::IpMask => "ipv4-classnet",
            FieldType::Uuid => "uuid",
            FieldType::Ref { .. } => "string",
            FieldType::Multi { .. } | FieldType::MultiInt { .. } => "table",
            FieldType::Words(_) => "option",
            FieldType::Table(_) => "table",
        }
    }

    /// The datasource tables of a reference field.
    pub fn datasources(&self) -> &'static [&'static str] {
        match self.ty {
            FieldType::Ref { ds, .. } | FieldType::Multi { ds, .. } => ds,
            _ => &[],
        }
    }
}

/// How entries of a table are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// One unnamed entry (`config system global` / `set ...` / `end`).
    Single,
    /// `edit <key>` entries; `int` keys support `edit 0` (next free id).
    Keyed { mkey: &'static str, int: bool },
}

/// A table (top level or nested).
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// CLI path, words separated by single spaces (`firewall policy`); for sub-tables the field
    /// name (`filters`).
    pub path: String,
    pub kind: TableKind,
    pub fields: Vec<FieldSchema>,
    pub versions: Vr,
}

impl TableSchema {
    fn new(path: &str, kind: TableKind, fields: Vec<FieldSchema>) -> Self {
        Self {
            path: path.to_string(),
            kind,
            fields,
            versions: Vr::ALL,
        }
    }

    fn v(mut self, vr: Vr) -> Self {
        self.versions = vr;
        self
    }

    /// The field `name` valid at `version`.
    pub fn field(&self, name: &str, version: FosVersion) -> Option<&FieldSchema> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.versions.contains(version))
    }

    /// Whether `name` is a field of this table at some other version (a version mismatch
    /// is a parse error, not a "not modelled" warning).
    pub fn field_other_version(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// The fields valid at `version`, in schema (= `show`) order.
    pub fn fields_at(&self, version: FosVersion) -> impl Iterator<Item = &FieldSchema> {
        self.fields
            .iter()
            .filter(move |f| f.versions.contains(version))
    }

    pub fn mkey(&self) -> Option<&'static str> {
        match self.kind {
            TableKind::Keyed { mkey, .. } => Some(mkey),
            TableKind::Single => None,
        }
    }

    pub fn int_key(&self) -> bool {
        matches!(self.kind, TableKind::Keyed { int: true, .. })
    }

    pub fn is_single(&self) -> bool {
        self.kind == TableKind::Single
    }

    /// REST `path` and `name` of a top-level table (`firewall.service`, `custom`).
    pub fn rest_path_name(&self) -> (String, String) {
        let words: Vec<&str> = self.path.split(' ').collect();
        let (last, first) = words.split_last().expect("non-empty path");
        (first.join("."), last.to_string())
    }
}

/// All tables.
#[derive(Debug)]
pub struct Schema {
    tables: Vec<TableSchema>,
    by_path: HashMap<String, Vec<usize>>,
}

impl Schema {
    /// The schema of every modelled table.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(build)
    }

    /// The top-level table `path` valid at `version`.
    pub fn table(&self, path: &str, version: FosVersion) -> Option<&TableSchema> {
        self.by_path
            .get(path)?
            .iter()
            .map(|&i| &self.tables[i])
            .find(|t| t.versions.contains(version))
    }

    /// Whether `path` names a table at any version.
    pub fn knows(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// Every table valid at `version`, in schema order.
    pub fn tables_at(&self, version: FosVersion) -> impl Iterator<Item = &TableSchema> {
        self.tables
            .iter()
            .filter(move |t| t.versions.contains(version))
    }

    /// Resolves a datasource (`firewall address`, or `system sdwan.zone` for a sub-table of a
    /// single table) to (top-level table path, optional sub-table field).
    pub fn split_ds(ds: &str) -> (&str, Option<&str>) {
        match ds.split_once('.') {
            Some((t, sub)) => (t, Some(sub)),
            None => (ds, None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builders.

fn s(name: &'static str, max: usize) -> FieldSchema {
    FieldSchema::new(name, FieldType::Str(max), "")
}
fn sd(name: &'static str, max: usize, def: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Str(max), def)
}
fn pw(name: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Password, "")
}
fn int(name: &'static str, min: i64, max: i64, def: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Int(min, max), def)
}
fn en(name: &'static str, opts: &'static [&'static str], def: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Enum(opts), def)
}
const ED: &[&str] = &["enable", "disable"];
const ON: &[&str] = &["enable"];
const WEBHOOK: &[&str] = &["webhook"];
fn ena(name: &'static str) -> FieldSchema {
    en(name, ED, "enable")
}
fn dis(name: &'static str) -> FieldSchema {
    en(name, ED, "disable")
}
fn ip(name: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Ip, "0.0.0.0")
}
fn ipm(name: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::IpMask, "0.0.0.0 0.0.0.0")
}
fn uuid() -> FieldSchema {
    FieldSchema::new(
        "uuid",
        FieldType::Uuid,
        "00000000-0000-0000-0000-000000000000",
    )
}
fn r(name: &'static str, ds: &'static [&'static str]) -> FieldSchema {
    FieldSchema::new(name, FieldType::Ref { ds, builtins: &[] }, "")
}
fn rd(name: &'static str, ds: &'static [&'static str], def: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Ref { ds, builtins: &[] }, def)
}
fn m(name: &'static str, ds: &'static [&'static str]) -> FieldSchema {
    FieldSchema::new(
        name,
        FieldType::Multi {
            ds,
            builtins: &[],
            key: "name",
        },
        "",
    )
}
fn mb(
    name: &'static str,
    ds: &'static [&'static str],
    builtins: &'static [&'static str],
) -> FieldSchema {
    FieldSchema::new(
        name,
        FieldType::Multi {
            ds,
            builtins,
            key: "name",
        },
        "",
    )
}
fn mk(name: &'static str, key: &'static str) -> FieldSchema {
    FieldSchema::new(
        name,
        FieldType::Multi {
            ds: &[],
            builtins: &[],
            key,
        },
        "",
    )
}
fn words(name: &'static str, opts: &'static [&'static str], def: &'static str) -> FieldSchema {
    FieldSchema::new(name, FieldType::Words(opts), def)
}
fn sub(name: &'static str, t: TableSchema) -> FieldSchema {
    FieldSchema::new(name, FieldType::Table(Box::new(t)), "")
}
fn keyed(path: &str, mkey: &'static str, fields: Vec<FieldSchema>) -> TableSchema {
    TableSchema::new(path, TableKind::Keyed { mkey, int: false }, fields)
}
fn ikeyed(path: &str, mkey: &'static str, fields: Vec<FieldSchema>) -> TableSchema {
    TableSchema::new(path, TableKind::Keyed { mkey, int: true }, fields)
}
fn single(path: &str, fields: Vec<FieldSchema>) -> TableSchema {
    TableSchema::new(path, TableKind::Single, fields)
}
/// The mkey field of an integer-keyed table.
fn id(name: &'static str) -> FieldSchema {
    int(name, 0, 4_294_967_295, "0")
}

const INTF_DS: &[&str] = &[
    "system interface",
    "system zone",
    "system virtual-wan-link.zone",
    "system sdwan.zone",
];
const ADDR_DS: &[&str] = &["firewall address", "firewall addrgrp"];
const SVC_DS: &[&str] = &["firewall service custom", "firewall service group"];
const ACCESS_GRP: &[&str] = &["none", "read", "read-write", "custom"];
const ALLOWACCESS: &[&str] = &[
    "ping",
    "https",
    "ssh",
    "snmp",
    "http",
    "telnet",
    "fgfm",
    "radius-acct",
    "probe-response",
    "fabric",
    "ftm",
    "capwap",
    "speed-test",
];
const DAYS: &[&str] = &[
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "none",
];
const TRIGGER_EVENTS_64: &[&str] = &[
    "ioc",
    "event-log",
    "reboot",
    "low-memory",
    "high-cpu",
    "license-near-expiry",
    "ha-failover",
    "config-change",
    "security-rating-summary",
    "virus-ips-db-updated",
    "faz-event",
    "incoming-webhook",
];
const TRIGGER_EVENTS_70: &[&str] = &[
    "ioc",
    "event-log",
    "reboot",
    "low-memory",
    "high-cpu",
    "license-near-expiry",
    "ha-failover",
    "config-change",
    "security-rating-summary",
    "virus-ips-db-updated",
    "faz-event",
    "incoming-webhook",
    "fabric-event",
];
const TRIGGER_EVENTS_72: &[&str] = &[
    "ioc",
    "event-log",
    "reboot",
    "low-memory",
    "high-cpu",
    "license-near-expiry",
    "local-cert-near-expiry",
    "ha-failover",
    "config-change",
    "security-rating-summary",
    "virus-ips-db-updated",
    "faz-event",
    "incoming-webhook",
    "fabric-event",
    "ips-logs",
    "anomaly-logs",
    "virus-logs",
    "ssh-logs",
    "webfilter-violation",
    "traffic-violation",
];
const ACTION_TYPES_64: &[&str] = &[
    "email",
    "ios-notification",
    "alert",
    "disable-ssid",
    "quarantine",
    "quarantine-forticlient",
    "quarantine-nsx",
    "quarantine-fortinac",
    "ban-ip",
    "aws-lambda",
    "azure-function",
    "google-cloud-function",
    "alicloud-function",
    "webhook",
    "cli-script",
    "slack-notification",
];
const ACTION_TYPES_70: &[&str] = &[
    "email",
    "fortiexplorer-notification",
    "alert",
    "disable-ssid",
    "quarantine",
    "quarantine-forticlient",
    "quarantine-nsx",
    "quarantine-fortinac",
    "ban-ip",
    "aws-lambda",
    "azure-function",
    "google-cloud-function",
    "alicloud-function",
    "webhook",
    "cli-script",
    "slack-notification",
    "microsoft-teams-notification",
];
const ACTION_TYPES_72: &[&str] = &[
    "email",
    "fortiexplorer-notification",
    "alert",
    "disable-ssid",
    "system-actions",
    "quarantine",
    "quarantine-forticlient",
    "quarantine-nsx",
    "quarantine-fortinac",
    "ban-ip",
    "aws-lambda",
    "azure-function",
    "google-cloud-function",
    "alicloud-function",
    "webhook",
    "cli-script",
    "slack-notification",
    "microsoft-teams-notification",
];
const V64: Vr = Vr::until(6, 255, 255);
const V70: Vr = Vr {
    min: FosVersion::new(7, 0, 0),
    max: FosVersion::new(7, 0, 255),
};
const V70P: Vr = Vr::since(7, 0, 0);
const V72P: Vr = Vr::since(7, 2, 0);

fn sdwan_like(path: &str, zone_ds: &'static [&'static str]) -> TableSchema {
    single(
        path,
        vec![
            dis("status"),
            en(
                "load-balance-mode",
                &[
                    "source-ip-based",
                    "weight-based",
                    "usage-based",
                    "source-dest-ip-based",
                    "measured-volume-based",
                ],
                "source-ip-based",
            ),
            sub("zone", keyed("zone", "name", vec![s("name", 35)])),
            sub(
                "members",
                ikeyed(
                    "members",
                    "seq-num",
                    vec![
                        id("seq-num"),
                        r("interface", &["system interface"]),
                        rd("zone", zone_ds, "virtual-wan-link"),
                        ip("gateway"),
                        en("status", ED, "enable"),
                        int("weight", 0, 255, "1"),
                        int("cost", 0, 4_294_967_295, "0"),
                        int("priority", 0, 65535, "0"),
                        s("comment", 255),
                    ],
                ),
            ),
        ],
    )
}

fn build() -> Schema {
    let tables = vec![
        single(
            "system global",
            vec![
                s("hostname", 35),
                s("alias", 35),
                int("admin-port", 1, 65535, "80"),
                int("admin-sport", 1, 65535, "443"),
                ena("admin-https-redirect"),
                int("admin-ssh-grace-time", 10, 3600, "120"),
                int("admintimeout", 1, 480, "5"),
                int("admin-lockout-threshold", 1, 10, "3"),
                int("admin-lockout-duration", 1, 2_147_483_647, "60"),
                sd("timezone", 63, "04"),
                en(
                    "language",
                    &[
                        "english",
                        "french",
                        "spanish",
                        "portuguese",
                        "japanese",
                        "trach",
                        "simch",
                        "korean",
                    ],
                    "english",
                ),
                dis("switch-controller"),
                ena("gui-certificates"),
                dis("rest-api-key-url-query").v(Vr::since(7, 4, 5)),
            ],
        ),
        keyed(
            "system vdom",
            "name",
            vec![
                s("name", 31),
                s("short-name", 11).v(V70P),
                int("vcluster-id", 0, 1, "0"),
                int("flag", 0, 4_294_967_295, "0"),
            ],
        ),
        keyed(
            "system interface",
            "name",
            vec![
                s("name", 15),
                rd("vdom", &["system vdom"], ""),
                en("mode", &["static", "dhcp", "pppoe"], "static"),
                ipm("ip"),
                words("allowaccess", ALLOWACCESS, ""),
                en("status", &["up", "down"], "up"),
                en(
                    "type",
                    &[
                        "physical",
                        "vlan",
                        "aggregate",
                        "redundant",
                        "tunnel",
                        "vdom-link",
                        "loopback",
                        "switch",
                        "hard-switch",
                        "vap-switch",
                        "wl-mesh",
                        "fext-wan",
                        "vxlan",
                        "geneve",
                        "hdlc",
                        "switch-vlan",
                        "emac-vlan",
                    ],
                    "vlan",
                ),
                s("alias", 25),
                s("description", 255),
                en("role", &["lan", "wan", "dmz", "undefined"], "undefined"),
                r("interface", &["system interface"]),
                int("vlanid", 0, 4094, "0"),
                int("snmp-index", 0, 2_147_483_647, "0"),
                dis("device-identification"),
                int("mtu", 0, 65535, "1500"),
                dis("mtu-override"),
                dis("secondary-IP"),
                sub(
                    "secondaryip",
                    ikeyed(
                        "secondaryip",
                        "id",
                        vec![id("id"), ipm("ip"), words("allowaccess", ALLOWACCESS, "")],
                    ),
                ),
            ],
        ),
        keyed(
            "system zone",
            "name",
            vec![
                s("name", 35),
                s("description", 127),
                en("intrazone", &["allow", "deny"], "deny"),
                m("interface", &["system interface"]),
            ],
        ),
        keyed(
            "system accprofile",
            "name",
            vec![
                s("name", 35),
                en("scope", &["vdom", "global"], "vdom"),
                s("comments", 255),
                en("secfabgrp", ACCESS_GRP, "none"),
                en("ftviewgrp", ACCESS_GRP, "none"),
                en("authgrp", ACCESS_GRP, "none"),
                en("sysgrp", ACCESS_GRP, "none"),
                en("netgrp", ACCESS_GRP, "none"),
                en("loggrp", ACCESS_GRP, "none"),
                en("fwgrp", ACCESS_GRP, "none"),
                en("vpngrp", ACCESS_GRP, "none"),
                en("utmgrp", ACCESS_GRP, "none"),
                en("wanoptgrp", ACCESS_GRP, "none"),
                en("wifi", ACCESS_GRP, "none"),
            ],
        ),
        keyed(
            "system admin",
            "name",
            vec![
                s("name", 64),
                r("accprofile", &["system accprofile"]),
                m("vdom", &["system vdom"]),
                pw("password"),
                ipm("trusthost1"),
                ipm("trusthost2"),
                ipm("trusthost3"),
                s("comments", 255),
                dis("force-password-change"),
            ],
        ),
        keyed(
            "system api-user",
            "name",
            vec![
                s("name", 35),
                s("comments", 255),
                pw("api-key"),
                r("accprofile", &["system accprofile"]),
                m("vdom", &["system vdom"]),
                s("schedule", 35),
                s("cors-allow-origin", 269),
                dis("peer-auth"),
                s("peer-group", 35),
                sub(
                    "trusthost",
                    ikeyed(
                        "trusthost",
                        "id",
                        vec![
                            id("id"),
                            en(
                                "type",
                                &["ipv4-trusthost", "ipv6-trusthost"],
                                "ipv4-trusthost",
                            ),
                            ipm("ipv4-trusthost"),
                            sd("ipv6-trusthost", 43, "::/0"),
                        ],
                    ),
                ),
            ],
        ),
        keyed(
            "firewall address",
            "name",
            vec![
                s("name", 79),
                uuid(),
                en(
                    "type",
                    &[
                        "ipmask",
                        "iprange",
                        "fqdn",
                        "geography",
                        "wildcard",
                        "dynamic",
                        "interface-subnet",
                        "mac",
                    ],
                    "ipmask",
                ),
                ipm("subnet").when("type", &["ipmask", "interface-subnet"]),
                ip("start-ip").when("type", &["iprange"]),
                ip("end-ip").when("type", &["iprange"]),
                s("fqdn", 255).when("type", &["fqdn"]),
                s("country", 2).when("type", &["geography"]),
                ipm("wildcard").when("type", &["wildcard"]),
                s("start-mac", 17).v(V64).when("type", &["mac"]),
                s("end-mac", 17).v(V64).when("type", &["mac"]),
                mk("macaddr", "macaddr").v(V70P).when("type", &["mac"]),
                s("interface", 35).when("type", &["interface-subnet"]),
                r("associated-interface", &["system interface", "system zone"]),
                s("comment", 255),
                ena("visibility").v(V64),
                int("color", 0, 32, "0"),
                dis("allow-routing"),
                dis("fabric-object").v(V70P),
            ],
        ),
        keyed(
            "firewall addrgrp",
            "name",
            vec![
                s("name", 79),
                uuid(),
                m("member", ADDR_DS).req(),
                s("comment", 255),
                ena("visibility").v(V64),
                dis("exclude"),
                m("exclude-member", ADDR_DS),
                int("color", 0, 32, "0"),
                dis("allow-routing"),
                dis("fabric-object").v(V70P),
            ],
        ),
        keyed(
            "firewall service custom",
            "name",
            vec![
                s("name", 79),
                dis("proxy"),
                s("category", 63),
                en(
                    "protocol",
                    &[
                        "TCP/UDP/SCTP",
                        "ICMP",
                        "ICMP6",
                        "IP",
                        "HTTP",
                        "FTP",
                        "CONNECT",
                        "SOCKS-TCP",
                        "SOCKS-UDP",
                        "ALL",
                    ],
                    "TCP/UDP/SCTP",
                ),
                en(
                    "helper",
                    &[
                        "auto", "disable", "ftp", "tftp", "ras", "h323", "tns", "mms", "sip",
                        "pptp", "rtsp", "dns-udp", "dns-tcp", "pmap", "rsh", "dcerpc", "mgcp",
                    ],
                    "auto",
                ),
                s("iprange", 64),
                s("fqdn", 255),
                int("protocol-number", 0, 254, "0"),
                int("icmptype", 0, 4_294_967_295, ""),
                int("icmpcode", 0, 255, ""),
                words("tcp-portrange", &[], ""),
                words("udp-portrange", &[], ""),
                words("sctp-portrange", &[], ""),
                en(
                    "check-reset-range",
                    &["disable", "strict", "default"],
                    "default",
                ),
                s("comment", 255),
                int("color", 0, 32, "0"),
                ena("visibility").v(V64),
                dis("fabric-object").v(V70P),
            ],
        ),
        keyed(
            "firewall service group",
            "name",
            vec![
                s("name", 79),
                dis("proxy"),
                m("member", SVC_DS),
                s("comment", 255),
                int("color", 0, 32, "0"),
                dis("fabric-object").v(V70P),
            ],
        ),
        keyed(
            "firewall schedule recurring",
            "name",
            vec![
                s("name", 31),
                sd("start", 5, "00:00"),
                sd("end", 5, "00:00"),
                words("day", DAYS, "none"),
                int("color", 0, 32, "0"),
                dis("fabric-object").v(V70P),
            ],
        ),
        ikeyed(
            "firewall policy",
            "policyid",
            vec![
                int("policyid", 0, 4_294_967_294, "0"),
                s("name", 35),
                uuid(),
                mb("srcintf", INTF_DS, &["any"]).req(),
                mb("dstintf", INTF_DS, &["any"]).req(),
                m("srcaddr", ADDR_DS).req(),
                m("dstaddr", ADDR_DS).req(),
                en("action", &["accept", "deny", "ipsec"], "deny"),
                en("status", ED, "enable"),
                r("schedule", &["firewall schedule recurring"]).req(),
                m("service", SVC_DS).req(),
                dis("utm-status"),
                en("inspection-mode", &["flow", "proxy"], "flow"),
                en("profile-type", &["single", "group"], "single").when("utm-status", ON),
                sd("profile-protocol-options", 35, "default").when("utm-status", ON),
                rd(
                    "ssl-ssh-profile",
                    &["firewall ssl-ssh-profile"],
                    "no-inspection",
                )
                .when("utm-status", ON),
                s("av-profile", 35).when("utm-status", ON),
                r("webfilter-profile", &["webfilter profile"]).when("utm-status", ON),
                s("dnsfilter-profile", 35).when("utm-status", ON),
                s("ips-sensor", 35).when("utm-status", ON),
                s("application-list", 35).when("utm-status", ON),
                en("logtraffic", &["all", "utm", "disable"], "utm"),
                dis("logtraffic-start"),
                dis("capture-packet"),
                ena("auto-asic-offload"),
                dis("nat"),
                dis("ippool").when("nat", ON),
                mk("poolname", "name").when("ippool", ON),
                dis("srcaddr-negate"),
                dis("dstaddr-negate"),
                dis("service-negate"),
                dis("internet-service"),
                dis("match-vip"),
                dis("block-notification"),
                mk("groups", "name"),
                mk("users", "name"),
                int("tcp-mss-sender", 0, 65535, "0"),
                int("tcp-mss-receiver", 0, 65535, "0"),
                s("comments", 1023),
            ],
        ),
        keyed(
            "firewall ssl-ssh-profile",
            "name",
            vec![
                s("name", 35),
                s("comment", 255),
                sub(
                    "ssl",
                    single(
                        "ssl",
                        vec![en(
                            "inspect-all",
                            &["disable", "certificate-inspection", "deep-inspection"],
                            "disable",
                        )],
                    ),
                ),
                sub(
                    "https",
                    single(
                        "https",
                        vec![
                            words("ports", &[], "443"),
                            en(
                                "status",
                                &["disable", "certificate-inspection", "deep-inspection"],
                                "deep-inspection",
                            ),
                        ],
                    ),
                ),
                en("server-cert-mode", &["re-sign", "replace"], "re-sign"),
                sd("caname", 35, "Fortinet_CA_SSL"),
                sd("untrusted-caname", 35, "Fortinet_CA_Untrusted"),
                dis("whitelist").v(V64),
                dis("allowlist").v(V70P),
            ],
        ),
        keyed(
            "webfilter profile",
            "name",
            vec![
                s("name", 35),
                s("comment", 255),
                en("feature-set", &["flow", "proxy"], "flow"),
                ena("https-replacemsg"),
                words(
                    "options",
                    &[
                        "activexfilter",
                        "cookiefilter",
                        "javafilter",
                        "block-invalid-url",
                        "jscript",
                        "js",
                        "vbs",
                        "unknown",
                        "intrinsic",
                        "wf-referer",
                        "wf-cookie",
                        "per-user-bwl",
                    ],
                    "",
                ),
                en("post-action", &["normal", "block"], "normal"),
                sub(
                    "web",
                    single(
                        "web",
                        vec![
                            int("urlfilter-table", 0, 4_294_967_295, "0"),
                            dis("log-search"),
                        ],
                    ),
                ),
                sub(
                    "ftgd-wf",
                    single(
                        "ftgd-wf",
                        vec![
                            words(
                                "options",
                                &[
                                    "error-allow",
                                    "rate-server-ip",
                                    "connect-request-bypass",
                                    "ftgd-disable",
                                ],
                                "",
                            ),
                            sub(
                                "filters",
                                ikeyed(
                                    "filters",
                                    "id",
                                    vec![
                                        id("id"),
                                        int("category", 0, 255, "0"),
                                        en(
                                            "action",
                                            &["block", "authenticate", "monitor", "warning"],
                                            "monitor",
                                        ),
                                        sd("warn-duration", 31, "5m"),
                                        mk("auth-usr-grp", "name"),
                                        en("log", ED, "enable"),
                                    ],
                                ),
                            ),
                            int("max-quota-timeout", 1, 86400, "300"),
                            ena("rate-javascript-urls"),
                            ena("rate-css-urls"),
                            ena("rate-crl-urls"),
                        ],
                    ),
                ),
                dis("log-all-url"),
                ena("web-content-log"),
                dis("extended-log"),
                dis("web-extended-all-action-log"),
            ],
        ),
        ikeyed(
            "webfilter urlfilter",
            "id",
            vec![
                id("id"),
                s("name", 63),
                s("comment", 255),
                dis("one-arm-ips-urlfilter"),
                dis("ip-addr-block"),
                sub(
                    "entries",
                    ikeyed(
                        "entries",
                        "id",
                        vec![
                            id("id"),
                            s("url", 511),
                            en("type", &["simple", "regex", "wildcard"], "simple"),
                            en("action", &["exempt", "block", "allow", "monitor"], "exempt"),
                            en("status", ED, "enable"),
                            words(
                                "exempt",
                                &[
                                    "av",
                                    "web-content",
                                    "activex-java-cookie",
                                    "dlp",
                                    "fortiguard",
                                    "range",
                                    "pass",
                                    "antiphish",
                                    "all",
                                ],
                                "av web-content activex-java-cookie dlp fortiguard range",
                            ),
                            s("referrer-host", 255),
                            en("dns-address-family", &["ipv4", "ipv6", "both"], "ipv4"),
                        ],
                    ),
                ),
            ],
        ),
        keyed(
            "system automation-trigger",
            "name",
            vec![
                s("name", 35),
                s("description", 255).v(V70P),
                en("trigger-type", &["event-based", "scheduled"], "event-based"),
                en("event-type", TRIGGER_EVENTS_64, "ioc").v(V64),
                en("event-type", TRIGGER_EVENTS_70, "ioc").v(V70),
                en("event-type", TRIGGER_EVENTS_72, "ioc").v(V72P),
                en(
                    "license-type",
                    &[
                        "forticare-support",
                        "fortiguard-webfilter",
                        "fortiguard-antispam",
                        "fortiguard-antivirus",
                        "fortiguard-ips",
                        "fortiguard-management",
                        "forticloud",
                        "any",
                    ],
                    "forticare-support",
                )
                .when("event-type", &["license-near-expiry"]),
                en("ioc-level", &["medium", "high"], "high")
                    .v(Vr::until(7, 2, 2))
                    .when("event-type", &["ioc"]),
                en(
                    "report-type",
                    &[
                        "PostureReport",
                        "CoverageReport",
                        "OptimizationReport",
                        "any",
                    ],
                    "PostureReport",
                )
                .v(V64)
                .when("event-type", &["security-rating-summary"]),
                en(
                    "report-type",
                    &["posture", "coverage", "optimization", "any"],
                    "posture",
                )
                .v(V70P)
                .when("event-type", &["security-rating-summary"]),
                int("logid", 0, 65535, "0")
                    .v(V64)
                    .when("event-type", &["event-log"]),
                FieldSchema::new(
                    "logid",
                    FieldType::MultiInt {
                        min: 1,
                        max: 65535,
                        key: "id",
                    },
                    "",
                )
                .v(V70P)
                .when("event-type", &["event-log"]),
                en(
                    "trigger-frequency",
                    &["hourly", "daily", "weekly", "monthly"],
                    "daily",
                )
                .when("trigger-type", &["scheduled"]),
                en(
                    "trigger-weekday",
                    &[
                        "sunday",
                        "monday",
                        "tuesday",
                        "wednesday",
                        "thursday",
                        "friday",
                        "saturday",
                    ],
                    "",
                )
                .when("trigger-type", &["scheduled"]),
                int("trigger-day", 1, 31, "1").when("trigger-type", &["scheduled"]),
                int("trigger-hour", 0, 23, "0").when("trigger-type", &["scheduled"]),
                int("trigger-minute", 0, 59, "0").when("trigger-type", &["scheduled"]),
                s("faz-event-name", 255).when("event-type", &["faz-event"]),
                s("faz-event-severity", 255).when("event-type", &["faz-event"]),
                s("faz-event-tags", 255).when("event-type", &["faz-event"]),
                s("serial", 255),
                s("fabric-event-name", 255).v(V70P),
                s("fabric-event-severity", 255).v(V70P),
                sub(
                    "fields",
                    ikeyed(
                        "fields",
                        "id",
                        vec![id("id"), s("name", 35), s("value", 63)],
                    ),
                ),
                m("vdom", &["system vdom"]).v(V72P),
            ],
        ),
        keyed(
            "system automation-action",
            "name",
            vec![
                s("name", 64),
                s("description", 255).v(V70P),
                en("action-type", ACTION_TYPES_64, "alert").v(V64),
                en("action-type", ACTION_TYPES_70, "alert").v(V70),
                en("action-type", ACTION_TYPES_72, "alert").v(V72P),
                en(
                    "system-action",
                    &["reboot", "shutdown", "backup-config"],
                    "",
                )
                .v(V72P),
                mk("email-to", "name").when("action-type", &["email"]),
                s("email-from", 127).when("action-type", &["email"]),
                s("email-subject", 511).when("action-type", &["email"]),
                int("minimum-interval", 0, 2_592_000, "0"),
                int("delay", 0, 3600, "0").v(Vr::until(7, 0, 0)),
                dis("required").v(Vr::until(7, 0, 0)),
                s("message", 4095),
                en("message-type", &["text", "json"], "text").v(V70P),
                en("protocol", &["http", "https"], "http").when("action-type", WEBHOOK),
                en("method", &["post", "put", "get", "patch", "delete"], "post")
                    .when("action-type", WEBHOOK),
                s("uri", 1023).when("action-type", WEBHOOK),
                s("http-body", 4095).when("action-type", WEBHOOK),
                int("port", 0, 65535, "0").when("action-type", WEBHOOK),
                mk("headers", "header")
                    .v(Vr::until(7, 0, 5))
                    .when("action-type", WEBHOOK),
                sub(
                    "http-headers",
                    ikeyed(
                        "http-headers",
                        "id",
                        vec![id("id"), s("key", 1023), s("value", 4095)],
                    ),
                )
                .v(Vr::since(7, 0, 6))
                .when("action-type", WEBHOOK),
                ena("verify-host-cert").v(V70P).when("action-type", WEBHOOK),
                s("script", 1023).when("action-type", &["cli-script"]),
                r("accprofile", &["system accprofile"]).when("action-type", &["cli-script"]),
                s("security-tag", 255),
                mk("sdn-connector", "name"),
                int("output-size", 1, 1024, "10").v(V72P),
                int("timeout", 0, 300, "0").v(V72P),
            ],
        ),
        keyed(
            "system automation-stitch",
            "name",
            vec![
                s("name", 35),
                s("description", 255).v(V70P),
                en("status", ED, "enable"),
                r("trigger", &["system automation-trigger"]).req(),
                m("action", &["system automation-action"]).v(Vr::until(7, 0, 0)),
                sub(
                    "actions",
                    ikeyed(
                        "actions",
                        "id",
                        vec![
                            id("id"),
                            r("action", &["system automation-action"]),
                            int("delay", 0, 3600, "0"),
                            dis("required"),
                        ],
                    ),
                )
                .v(Vr::since(7, 0, 1)),
                mk("destination", "name"),
            ],
        ),
        single(
            "log fortianalyzer setting",
            vec![
                dis("status"),
                ena("ips-archive"),
                s("server", 127),
                mk("serial", "name"),
                ena("access-config"),
                en("hmac-algorithm", &["sha256", "sha1"], "sha256"),
                en("enc-algorithm", &["high-medium", "high", "low"], "high"),
                en(
                    "ssl-min-proto-version",
                    &["default", "SSLv3", "TLSv1", "TLSv1-1", "TLSv1-2"],
                    "default",
                ),
                int("conn-timeout", 1, 3600, "10"),
                int("monitor-keepalive-period", 1, 120, "5"),
                int("monitor-failure-retry-period", 1, 86400, "5"),
                s("certificate", 35),
                ena("certificate-verification").v(V70P),
                s("source-ip", 63),
                en(
                    "upload-option",
                    &["store-and-upload", "realtime", "1-minute", "5-minute"],
                    "5-minute",
                ),
                en("upload-interval", &["daily", "weekly", "monthly"], "daily"),
                s("upload-day", 63),
                sd("upload-time", 63, "00:59"),
                dis("reliable"),
                en("priority", &["default", "low"], "default"),
                int("max-log-rate", 0, 100_000, "0"),
                s("preshared-key", 63).v(V70P),
                en(
                    "interface-select-method",
                    &["auto", "sdwan", "specify"],
                    "auto",
                ),
                s("interface", 15),
            ],
        ),
        single(
            "log syslogd setting",
            vec![
                dis("status"),
                s("server", 127),
                en("mode", &["udp", "legacy-reliable", "reliable"], "udp"),
                int("port", 0, 65535, "514"),
                en(
                    "facility",
                    &[
                        "kernel", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
                        "uucp", "cron", "authpriv", "ftp", "ntp", "audit", "alert", "clock",
                        "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                        "local7",
                    ],
                    "local7",
                ),
                s("source-ip", 63),
                en("format", &["default", "csv", "cef"], "default").v(V64),
                en("format", &["default", "csv", "cef", "rfc5424"], "default").v(V70P),
                en("priority", &["default", "low"], "default"),
                int("max-log-rate", 0, 100_000, "0"),
                en(
                    "enc-algorithm",
                    &["high-medium", "high", "low", "disable"],
                    "disable",
                ),
                en(
                    "ssl-min-proto-version",
                    &["default", "SSLv3", "TLSv1", "TLSv1-1", "TLSv1-2"],
                    "default",
                ),
                s("certificate", 35),
                en(
                    "interface-select-method",
                    &["auto", "sdwan", "specify"],
                    "auto",
                ),
                s("interface", 15),
            ],
        ),
        keyed(
            "endpoint-control fctems",
            "name",
            vec![
                s("name", 35),
                dis("fortinetone-cloud-authentication"),
                s("server", 255),
                int("https-port", 1, 65535, "443"),
                ip("source-ip"),
                ena("pull-sysinfo"),
                ena("pull-vulnerabilities"),
                ena("pull-avatars"),
                ena("pull-tags"),
                ena("pull-malware-hash").v(V70P),
                en(
                    "cloud-server-type",
                    &["production", "alpha", "beta"],
                    "production",
                ),
                int("call-timeout", 1, 180, "30"),
                int("status-check-interval", 1, 120, "60"),
                s("certificate", 35),
                dis("websocket-override").v(V70P),
                dis("preserve-ssl-session").v(V70P),
            ],
        )
        .v(Vr::until(7, 0, 7)),
        ikeyed(
            "endpoint-control fctems",
            "ems-id",
            vec![
                int("ems-id", 1, 7, "0"),
                dis("status"),
                s("name", 35),
                dis("fortinetone-cloud-authentication"),
                s("server", 255),
                int("https-port", 1, 65535, "443"),
                s("serial-number", 16),
                ip("source-ip"),
                ena("pull-sysinfo"),
                ena("pull-vulnerabilities"),
                ena("pull-avatars"),
                ena("pull-tags"),
                ena("pull-malware-hash"),
                en(
                    "cloud-server-type",
                    &["production", "alpha", "beta"],
                    "production",
                ),
                int("call-timeout", 500, 30000, "30000"),
                int("status-check-interval", 1, 120, "60"),
                s("certificate", 35),
                dis("websocket-override"),
                dis("preserve-ssl-session"),
                en(
                    "interface-select-method",
                    &["auto", "sdwan", "specify"],
                    "auto",
                ),
                s("interface", 15),
            ],
        )
        .v(Vr::since(7, 0, 8)),
        sdwan_like("system virtual-wan-link", &["system virtual-wan-link.zone"]).v(V64),
        sdwan_like("system sdwan", &["system sdwan.zone"]).v(V70P),
        single(
            "user quarantine",
            vec![
                ena("quarantine"),
                s("firewall-groups", 79),
                s("traffic-policy", 63),
                sub(
                    "targets",
                    keyed(
                        "targets",
                        "entry",
                        vec![
                            s("entry", 63),
                            s("description", 63),
                            sub(
                                "macs",
                                keyed(
                                    "macs",
                                    "mac",
                                    vec![
                                        s("mac", 17),
                                        dis("drop"),
                                        int("entry-id", 0, 4_294_967_295, "0"),
                                        s("parent", 63),
                                        s("description", 63),
                                    ],
                                ),
                            ),
                        ],
                    ),
                ),
            ],
        ),
        // The SMTP server of the `email` automation action (and alert email).
        single(
            "system email-server",
            vec![
                s("reply-to", 63),
                sd("server", 63, "notification.fortinet.net"),
                int("port", 1, 65535, "465"),
                ip("source-ip"),
                dis("authenticate"),
                en("validate-server", ED, "disable"),
                s("username", 63),
                pw("password"),
                en("security", &["none", "starttls", "smtps"], "smtps"),
                en(
                    "ssl-min-proto-version",
                    &["default", "SSLv3", "TLSv1", "TLSv1-1", "TLSv1-2"],
                    "default",
                ),
            ],
        ),
    ];
    // Dependency order (what `show` prints first must not refer to what follows).
    const ORDER: &[&str] = &[
        "system global",
        "system vdom",
        "system accprofile",
        "system interface",
        "system zone",
        "system virtual-wan-link",
        "system sdwan",
        "system admin",
        "system api-user",
        "firewall address",
        "firewall addrgrp",
        "firewall service custom",
        "firewall service group",
        "firewall schedule recurring",
        "firewall ssl-ssh-profile",
        "webfilter urlfilter",
        "webfilter profile",
        "firewall policy",
        "system automation-trigger",
        "system automation-action",
        "system automation-stitch",
        "log fortianalyzer setting",
        "log syslogd setting",
        "endpoint-control fctems",
        "user quarantine",
        "system email-server",
    ];
    let mut tables = tables;
    tables.sort_by_key(|t| {
        ORDER
            .iter()
            .position(|p| *p == t.path)
            .unwrap_or(ORDER.len())
    });
    let mut by_path: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        by_path.entry(t.path.clone()).or_default().push(i);
    }
    Schema { tables, by_path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_lookups() {
        let s = Schema::get();
        let v64 = FosVersion::V6_4_4;
        let v72 = FosVersion::new(7, 2, 5);
        let stitch = s.table("system automation-stitch", v64).unwrap();
        assert!(stitch.field("action", v64).is_some());
        assert!(stitch.field("actions", v64).is_none());
        assert!(stitch.field_other_version("actions"));
        let stitch72 = s.table("system automation-stitch", v72).unwrap();
        assert!(stitch72
            .field("actions", v72)
            .unwrap()
            .sub_table()
            .is_some());
        assert_eq!(
            s.table("endpoint-control fctems", v64).unwrap().mkey(),
            Some("name")
        );
        assert_eq!(
            s.table("endpoint-control fctems", v72).unwrap().mkey(),
            Some("ems-id")
        );
        assert!(s.table("system virtual-wan-link", v64).is_some());
        assert!(s.table("system virtual-wan-link", v72).is_none());
        assert!(s.table("system sdwan", v72).is_some());
        let (p, n) = s
            .table("firewall service custom", v64)
            .unwrap()
            .rest_path_name();
        assert_eq!((p.as_str(), n.as_str()), ("firewall.service", "custom"));
        assert_eq!(
            Schema::split_ds("system sdwan.zone"),
            ("system sdwan", Some("zone"))
        );
    }
}
