//! Help texts for `?`: short descriptions of tables, fields and options in FortiOS style
//! (CLI Reference wording where the lab's flow needs it; a generic text elsewhere).

use crate::config::schema::{FieldSchema, FieldType, TableSchema};

/// Description of a table path or path word (`config firewall ?`).
pub fn path_desc(path: &str) -> String {
    let known: &[(&str, &str)] = &[
        ("firewall", "Configure firewall."),
        ("system", "Configure system."),
        ("log", "Configure log."),
        ("webfilter", "Configure webfilter."),
        ("endpoint-control", "Configure endpoint control."),
        ("user", "Configure user."),
        ("router", "Configure router."),
        ("firewall policy", "Configure IPv4/IPv6 policies."),
        ("firewall address", "Configure IPv4 addresses."),
        ("firewall addrgrp", "Configure IPv4 address groups."),
        ("firewall service custom", "Configure custom services."),
        ("system global", "Configure global attributes."),
        ("system interface", "Configure interfaces."),
        ("system admin", "Configure admin users."),
        ("system api-user", "Configure API users."),
        ("system automation-stitch", "Automation stitches."),
        (
            "system automation-trigger",
            "Trigger for automation stitches.",
        ),
        (
            "system automation-action",
            "Action for automation stitches.",
        ),
        ("system automation-destination", "Automation destinations."),
        ("webfilter profile", "Configure Web filter profiles."),
        (
            "endpoint-control fctems",
            "Configure FortiClient Enterprise Management Server (EMS) entries.",
        ),
        (
            "log fortianalyzer setting",
            "Global FortiAnalyzer settings.",
        ),
        (
            "log syslogd setting",
            "Global settings for remote syslog server.",
        ),
        ("log memory setting", "Settings for memory buffer."),
    ];
    known
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| {
            let last = path.rsplit(' ').next().unwrap_or(path);
            format!("Configure {last}.")
        })
}

/// Description of a field (`set ?`).
pub fn field_desc(table: &TableSchema, f: &FieldSchema) -> String {
    let known: &[(&str, &str)] = &[
        ("name", "Name."),
        ("policyid", "Policy ID (0 - 4294967294)."),
        ("srcintf", "Incoming (ingress) interface."),
        ("dstintf", "Outgoing (egress) interface."),
        ("srcaddr", "Source IPv4 address and address group names."),
        ("dstaddr", "Destination IPv4 address and address group names."),
        ("action", "Policy action (allow/deny/ipsec)."),
        ("status", "Enable or disable this object."),
        ("schedule", "Schedule name."),
        ("service", "Service and service group names."),
        ("utm-status", "Enable to add one or more security profiles (AV, IPS, etc.) to the firewall policy."),
        ("inspection-mode", "Policy inspection mode (Flow/proxy). Default is Flow mode."),
        ("ssl-ssh-profile", "Name of an existing SSL SSH profile."),
        ("webfilter-profile", "Name of an existing Web filter profile."),
        ("logtraffic", "Enable or disable logging. Log all sessions or security profile sessions."),
        ("logtraffic-start", "Record logs when a session starts."),
        ("nat", "Enable/disable source NAT."),
        ("comments", "Comment."),
        ("uuid", "Universally Unique Identifier (UUID; automatically assigned but can be manually reset)."),
        ("trigger", "Trigger name."),
        ("destination", "Serial number/HA group-name of destination devices."),
        ("description", "Description."),
        ("trigger-type", "Trigger type."),
        ("event-type", "Event type."),
        ("ioc-level", "IOC threat level."),
        ("logid", "Log ID to trigger event."),
        ("action-type", "Action type."),
        ("email-to", "Email addresses."),
        ("minimum-interval", "Limit execution to no more than once in this interval (in seconds)."),
        ("hostname", "FortiGate unit's hostname. Most models will truncate names longer than 24 characters."),
        ("timezone", "Number corresponding to your time zone from 00 to 86."),
        ("admin-ssh-grace-time", "Maximum time in seconds permitted between making an SSH connection to the FortiGate unit and authenticating (10 - 3600 sec (1 hour), default = 120)."),
        ("admintimeout", "Number of minutes before an idle administrator session times out (1 - 480 minutes (8 hours), default = 5)."),
        ("server", "The remote FortiAnalyzer."),
        ("upload-option", "Enable/disable logging to hard disk and then uploading to FortiAnalyzer."),
        ("reliable", "Enable/disable reliable logging to FortiAnalyzer."),
        ("subnet", "IP address and subnet mask of address."),
        ("type", "Type of address."),
        ("password", "Admin user password."),
        ("accprofile", "Access profile for this administrator."),
        ("fortinetone-cloud-authentication", "Enable/disable FortiCloud authentication."),
        ("delay", "Delay before execution (in seconds)."),
        ("required", "Required in action chain."),
        ("id", "Entry ID."),
    ];
    if table.path == "system automation-stitch" && f.name == "action" {
        return "Action names.".into();
    }
    known
        .iter()
        .find(|(n, _)| *n == f.name)
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| match &f.ty {
            FieldType::Enum(o) if o == &["enable", "disable"] => {
                format!("Enable/disable {}.", f.name.replace('-', " "))
            }
            FieldType::Table(_) => format!("Configure {}.", f.name),
            _ => format!("{}.", capitalize(&f.name.replace('-', " "))),
        })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Description of an option value (`set action ?`).
pub fn option_desc(field: &str, opt: &str) -> String {
    let known: &[(&str, &str, &str)] = &[
        (
            "action",
            "accept",
            "Allows session that match the firewall policy.",
        ),
        (
            "action",
            "deny",
            "Blocks sessions that match the firewall policy.",
        ),
        (
            "action",
            "ipsec",
            "Firewall policy becomes a policy-based IPsec VPN policy.",
        ),
        (
            "logtraffic",
            "all",
            "Log all sessions accepted or denied by this policy.",
        ),
        (
            "logtraffic",
            "utm",
            "Log traffic that has a security profile applied to it.",
        ),
        (
            "logtraffic",
            "disable",
            "Disable all logging for this policy.",
        ),
        ("event-type", "ioc", "Indicator of compromise detected."),
        ("event-type", "event-log", "A specific event log."),
        ("event-type", "reboot", "Device reboot."),
        ("event-type", "incoming-webhook", "Incoming webhook call."),
        ("event-type", "config-change", "Configuration change."),
        ("ioc-level", "medium", "IOC level medium and high."),
        ("ioc-level", "high", "IOC level high only."),
        ("action-type", "email", "Send notification email."),
        ("action-type", "alert", "Generate FortiOS dashboard alert."),
        ("action-type", "quarantine", "Quarantine host."),
        (
            "action-type",
            "quarantine-forticlient",
            "Quarantine FortiClient by EMS.",
        ),
        ("action-type", "ban-ip", "Ban IP address."),
        ("action-type", "webhook", "Send webhook request."),
        ("action-type", "cli-script", "Run CLI script."),
        ("inspection-mode", "proxy", "Proxy based inspection."),
        ("inspection-mode", "flow", "Flow based inspection."),
    ];
    if let Some((_, _, d)) = known.iter().find(|(f, o, _)| *f == field && *o == opt) {
        return d.to_string();
    }
    match opt {
        "enable" => format!("Enable {}.", field.replace('-', " ")),
        "disable" => format!("Disable {}.", field.replace('-', " ")),
        _ => String::new(),
    }
}

/// The `<placeholder>` line for `edit ?`.
pub fn key_placeholder(t: &TableSchema) -> (String, String) {
    let mkey = t.mkey().unwrap_or("name");
    if t.int_key() {
        (
            format!("<{mkey}>"),
            "please input integer value (0 for the next free id)".into(),
        )
    } else {
        (format!("<{mkey}>"), "please input string value".into())
    }
}

/// The `<type>` line for a value.
pub fn value_placeholder(f: &FieldSchema) -> (String, String) {
    match &f.ty {
        FieldType::Str(max) => (
            "<string>".into(),
            format!("please input string value (maximum {max} characters)"),
        ),
        FieldType::Password => ("<password>".into(), "please input password value".into()),
        FieldType::Int(min, max) => (
            "<integer>".into(),
            format!("please input integer value ({min}-{max})"),
        ),
        FieldType::Ip => ("<class_ip>".into(), "please input IP address".into()),
        FieldType::IpMask => (
            "<class_ip&net_netmask>".into(),
            "please input ip address and netmask".into(),
        ),
        FieldType::Uuid => ("<uuid>".into(), "please input UUID value".into()),
        FieldType::Ref { .. } | FieldType::Multi { .. } => {
            ("*name".into(), field_desc_plain(f.name))
        }
        FieldType::MultiInt { min, max, .. } => (
            "<integer>".into(),
            format!("please input integer values ({min}-{max})"),
        ),
        FieldType::Enum(_) | FieldType::Words(_) => {
            ("<string>".into(), "please input value".into())
        }
        FieldType::Table(_) => (String::new(), String::new()),
    }
}

fn field_desc_plain(name: &str) -> String {
    match name {
        "srcintf" | "dstintf" => "Interface name.".into(),
        "srcaddr" | "dstaddr" => "Address name.".into(),
        "service" => "Service name.".into(),
        "trigger" => "Trigger name.".into(),
        "action" => "Action name.".into(),
        _ => format!("{} name.", capitalize(&name.replace('-', " "))),
    }
}

/// Formats candidates as FortiOS prints `?` help: name padded to a column, then the text.
pub fn format_help(items: &[(String, String)]) -> String {
    let width = items
        .iter()
        .map(|(w, _)| w.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, 40)
        + 4;
    let mut out = String::new();
    for (w, d) in items {
        if d.is_empty() {
            out.push_str(w);
        } else {
            out.push_str(&format!("{w:<width$}{d}"));
        }
        out.push('\n');
    }
    out
}
