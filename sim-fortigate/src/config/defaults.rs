//! Factory defaults of a FortiGate-VM, as CLI text parsed by the same engine as any config.
//!
//! Sources: reference §3.4 (automation objects, 6.4 and 7.x names), §4 (built-ins), §5.2
//! (web filter profiles `default` and `monitor-all`), §5.3 (category ids).

use std::fmt::Write as _;

use fortilab_core::fortiguard;

use super::lexer::quote;
use super::version::FosVersion;

/// FortiGuard web filter categories (id, name), reference §5.3, for `version`.
pub fn categories(version: FosVersion) -> Vec<(u32, &'static str)> {
    fortiguard::categories(version.major.into(), version.minor.into())
        .into_iter()
        .map(|(id, name)| (u32::from(id), name))
        .collect()
}

/// Categories the factory `default` web filter profile blocks (reference §5.2, in dump order).
pub const DEFAULT_BLOCKED: &[u32] = &[
    2, 7, 8, 9, 11, 12, 13, 14, 15, 16, 57, 63, 64, 65, 66, 67, 26, 61, 86, 88, 90, 91,
];

const SERVICES: &[(&str, &str, &str)] = &[
    // name, category, body (already-indented `set` lines separated by '|')
    ("ALL", "General", "set protocol IP"),
    ("ALL_TCP", "General", "set tcp-portrange 1-65535"),
    ("ALL_UDP", "General", "set udp-portrange 1-65535"),
    ("ALL_ICMP", "General", "set protocol ICMP|unset icmptype"),
    ("ALL_ICMP6", "General", "set protocol ICMP6|unset icmptype"),
    ("GRE", "Tunneling", "set protocol IP|set protocol-number 47"),
    ("AH", "Tunneling", "set protocol IP|set protocol-number 51"),
    ("ESP", "Tunneling", "set protocol IP|set protocol-number 50"),
    ("BGP", "Network Services", "set tcp-portrange 179"),
    ("DHCP", "Network Services", "set udp-portrange 67-68"),
    (
        "DNS",
        "Network Services",
        "set tcp-portrange 53|set udp-portrange 53",
    ),
    ("FTP", "File Access", "set tcp-portrange 21"),
    ("HTTP", "Web Access", "set tcp-portrange 80"),
    ("HTTPS", "Web Access", "set tcp-portrange 443"),
    ("IMAP", "Email", "set tcp-portrange 143"),
    ("IMAPS", "Email", "set tcp-portrange 993"),
    (
        "NTP",
        "Network Services",
        "set tcp-portrange 123|set udp-portrange 123",
    ),
    ("POP3", "Email", "set tcp-portrange 110"),
    ("POP3S", "Email", "set tcp-portrange 995"),
    (
        "PING",
        "Network Services",
        "set protocol ICMP|set icmptype 8|unset icmpcode",
    ),
    (
        "TRACEROUTE",
        "Network Services",
        "set protocol ICMP|set icmptype 30|unset icmpcode",
    ),
    ("RDP", "Remote Access", "set tcp-portrange 3389"),
    ("SAMBA", "File Access", "set tcp-portrange 139"),
    ("SMTP", "Email", "set tcp-portrange 25"),
    ("SMTPS", "Email", "set tcp-portrange 465"),
    (
        "SNMP",
        "Network Services",
        "set tcp-portrange 161-162|set udp-portrange 161-162",
    ),
    ("SSH", "Remote Access", "set tcp-portrange 22"),
    ("SYSLOG", "Network Services", "set udp-portrange 514"),
    ("TELNET", "Remote Access", "set tcp-portrange 23"),
];

/// The factory configuration of a FortiGate-VM at `version`, with hostname `hostname`.
pub fn factory_config(version: FosVersion, hostname: &str) -> String {
    let mut c = String::new();
    let v7 = version.major >= 7;
    let _ = writeln!(
        c,
        "config system global\n    set hostname {}\nend",
        quote(hostname)
    );
    c.push_str("config system vdom\n    edit \"root\"\n");
    if v7 {
        c.push_str("        set short-name \"root\"\n");
    }
    c.push_str("    next\nend\n");
    c.push_str(
        "config system accprofile
    edit \"prof_admin\"
        set secfabgrp read-write
        set ftviewgrp read-write
        set authgrp read-write
        set sysgrp read-write
        set netgrp read-write
        set loggrp read-write
        set fwgrp read-write
        set vpngrp read-write
        set utmgrp read-write
        set wanoptgrp read-write
        set wifi read-write
    next
    edit \"super_admin\"
        set scope global
        set secfabgrp read-write
        set ftviewgrp read-write
        set authgrp read-write
        set sysgrp read-write
        set netgrp read-write
        set loggrp read-write
        set fwgrp read-write
        set vpngrp read-write
        set utmgrp read-write
        set wanoptgrp read-write
        set wifi read-write
    next
end
config system interface
    edit \"port1\"
        set vdom \"root\"
        set mode dhcp
        set allowaccess ping https ssh fgfm
        set type physical
        set role wan
        set snmp-index 1
    next
    edit \"port2\"
        set vdom \"root\"
        set type physical
        set snmp-index 2
    next
    edit \"port3\"
        set vdom \"root\"
        set type physical
        set role lan
        set snmp-index 3
    next
    edit \"port4\"
        set vdom \"root\"
        set type physical
        set snmp-index 4
    next
    edit \"ssl.root\"
        set vdom \"root\"
        set type tunnel
        set alias \"SSL VPN interface\"
        set snmp-index 5
    next
end
config system admin
    edit \"admin\"
        set accprofile \"super_admin\"
        set vdom \"root\"
    next
end
",
    );
    // SD-WAN with its default zone.
    let sdwan = if v7 {
        "system sdwan"
    } else {
        "system virtual-wan-link"
    };
    let _ = writeln!(c, "config {sdwan}\n    config zone\n        edit \"virtual-wan-link\"\n        next\n    end\nend");
    // Addresses.
    c.push_str(
        "config firewall address
    edit \"none\"
        set subnet 0.0.0.0 255.255.255.255
    next
    edit \"all\"
    next
    edit \"FIREWALL_AUTH_PORTAL_ADDRESS\"
    next
    edit \"FABRIC_DEVICE\"
        set comment \"IPv4 addresses of Fabric Devices.\"
    next
    edit \"SSLVPN_TUNNEL_ADDR1\"
        set type iprange
        set start-ip 10.212.134.200
        set end-ip 10.212.134.210
    next
    edit \"gmail.com\"
        set type fqdn
        set fqdn \"gmail.com\"
    next
    edit \"wildcard.google.com\"
        set type fqdn
        set fqdn \"*.google.com\"
    next
    edit \"login.microsoftonline.com\"
        set type fqdn
        set fqdn \"login.microsoftonline.com\"
    next
    edit \"login.microsoft.com\"
        set type fqdn
        set fqdn \"login.microsoft.com\"
    next
    edit \"login.windows.net\"
        set type fqdn
        set fqdn \"login.windows.net\"
    next
end
config firewall addrgrp
    edit \"G Suite\"
        set member \"gmail.com\" \"wildcard.google.com\"
    next
    edit \"Microsoft Office 365\"
        set member \"login.microsoftonline.com\" \"login.microsoft.com\" \"login.windows.net\"
    next
end
",
    );
    c.push_str("config firewall service custom\n");
    for (name, cat, body) in SERVICES {
        let _ = writeln!(c, "    edit {}", quote(name));
        let _ = writeln!(c, "        set category {}", quote(cat));
        for line in body.split('|') {
            let _ = writeln!(c, "        {line}");
        }
        c.push_str("    next\n");
    }
    c.push_str(
        "end
config firewall service group
    edit \"Email Access\"
        set member \"DNS\" \"IMAP\" \"IMAPS\" \"POP3\" \"POP3S\" \"SMTP\" \"SMTPS\"
    next
    edit \"Web Access\"
        set member \"DNS\" \"HTTP\" \"HTTPS\"
    next
end
config firewall schedule recurring
    edit \"always\"
        set day sunday monday tuesday wednesday thursday friday saturday
    next
    edit \"none\"
    next
end
config firewall ssl-ssh-profile
    edit \"certificate-inspection\"
        set comment \"Read-only SSL handshake inspection profile.\"
        config https
            set ports 443
            set status certificate-inspection
        end
    next
    edit \"deep-inspection\"
        set comment \"Read-only deep inspection profile.\"
        config ssl
            set inspect-all deep-inspection
        end
        config https
            set ports 443
            set status deep-inspection
        end
    next
    edit \"no-inspection\"
        set comment \"Read-only profile that does no inspection.\"
        config https
            set ports 443
            set status disable
        end
    next
    edit \"custom-deep-inspection\"
        set comment \"Customizable deep inspection profile.\"
        config https
            set ports 443
            set status deep-inspection
        end
    next
end
",
    );
    webfilter_profiles(&mut c, version);
    automation(&mut c, version);
    c
}

fn webfilter_profiles(c: &mut String, version: FosVersion) {
    let cats = categories(version);
    c.push_str("config webfilter profile\n    edit \"default\"\n        set comment \"Default web filtering.\"\n");
    c.push_str("        config ftgd-wf\n            unset options\n            config filters\n");
    let mut id = 0;
    for cat in DEFAULT_BLOCKED {
        id += 1;
        let _ = write!(c, "                edit {id}\n                    set category {cat}\n                    set action block\n                next\n");
    }
    for (cat, _) in cats.iter().filter(|(c, _)| !DEFAULT_BLOCKED.contains(c)) {
        id += 1;
        let _ = write!(c, "                edit {id}\n                    set category {cat}\n                next\n");
    }
    id += 1;
    let _ = write!(c, "                edit {id}\n                next\n");
    c.push_str("            end\n        end\n    next\n");
    c.push_str("    edit \"monitor-all\"\n        set comment \"Monitor and log all visited URLs, flow-based.\"\n");
    c.push_str("        config ftgd-wf\n            unset options\n            config filters\n");
    let mut id = 0;
    for (cat, _) in &cats {
        id += 1;
        let _ = write!(c, "                edit {id}\n                    set category {cat}\n                next\n");
    }
    id += 1;
    let _ = write!(c, "                edit {id}\n                next\n");
    c.push_str("            end\n        end\n        set log-all-url enable\n    next\nend\n");
}

fn automation(c: &mut String, version: FosVersion) {
    if version.major < 7 {
        c.push_str(
            "config system automation-trigger
    edit \"Network Down\"
        set event-type event-log
        set logid 20099
        config fields
            edit 1
                set name \"status\"
                set value \"DOWN\"
            next
        end
    next
    edit \"HA Failover\"
        set event-type ha-failover
    next
    edit \"Reboot\"
        set event-type reboot
    next
    edit \"FortiAnalyzer Connection Down\"
        set event-type event-log
        set logid 22902
    next
    edit \"License Expired Notification\"
        set event-type license-near-expiry
        set license-type any
    next
    edit \"Compromised Host Quarantine\"
    next
    edit \"Incoming Webhook Call\"
        set event-type incoming-webhook
    next
    edit \"Security Rating Notification\"
        set event-type security-rating-summary
    next
end
config system automation-action
    edit \"Network Down_ios-notification\"
        set action-type ios-notification
    next
    edit \"HA Failover_ios-notification\"
        set action-type ios-notification
    next
    edit \"Reboot_ios-notification\"
        set action-type ios-notification
    next
    edit \"FortiAnalyzer Connection Down_ios-notification\"
        set action-type ios-notification
    next
    edit \"License Expired Notification_ios-notification\"
        set action-type ios-notification
    next
    edit \"Compromised Host Quarantine_quarantine\"
        set action-type quarantine
    next
    edit \"Compromised Host Quarantine_quarantine-forticlient\"
        set action-type quarantine-forticlient
    next
    edit \"Security Rating Notification_ios-notification\"
        set action-type ios-notification
    next
end
config system automation-stitch
    edit \"Network Down\"
        set trigger \"Network Down\"
        set action \"Network Down_ios-notification\"
    next
    edit \"HA Failover\"
        set trigger \"HA Failover\"
        set action \"HA Failover_ios-notification\"
    next
    edit \"Reboot\"
        set trigger \"Reboot\"
        set action \"Reboot_ios-notification\"
    next
    edit \"FortiAnalyzer Connection Down\"
        set trigger \"FortiAnalyzer Connection Down\"
        set action \"FortiAnalyzer Connection Down_ios-notification\"
    next
    edit \"License Expired Notification\"
        set trigger \"License Expired Notification\"
        set action \"License Expired Notification_ios-notification\"
    next
    edit \"Compromised Host Quarantine\"
        set status disable
        set trigger \"Compromised Host Quarantine\"
        set action \"Compromised Host Quarantine_quarantine\" \"Compromised Host Quarantine_quarantine-forticlient\"
    next
    edit \"Incoming Webhook Quarantine\"
        set status disable
        set trigger \"Incoming Webhook Call\"
        set action \"Compromised Host Quarantine_quarantine\" \"Compromised Host Quarantine_quarantine-forticlient\"
    next
    edit \"Security Rating Notification\"
        set status disable
        set trigger \"Security Rating Notification\"
        set action \"Security Rating Notification_ios-notification\"
    next
end
",
        );
        return;
    }
    c.push_str(
        "config system automation-trigger
    edit \"Network Down\"
        set description \"Default automation trigger configuration for when a network connection goes down.\"
        set event-type event-log
        set logid 20099
        config fields
            edit 1
                set name \"status\"
                set value \"DOWN\"
            next
        end
    next
    edit \"HA Failover\"
        set description \"Default automation trigger configuration for when an HA failover occurs.\"
        set event-type ha-failover
    next
    edit \"Reboot\"
        set description \"Default automation trigger configuration for when a FortiGate is rebooted.\"
        set event-type reboot
    next
    edit \"FortiAnalyzer Connection Down\"
        set description \"Default automation trigger configuration for when the FortiAnalyzer connection is lost.\"
        set event-type event-log
        set logid 22902
    next
    edit \"License Expired Notification\"
        set description \"Default automation trigger configuration for when a license is near expiration.\"
        set event-type license-near-expiry
        set license-type any
    next
    edit \"Compromised Host - High\"
        set description \"Default automation trigger configuration for when a high severity compromised host is detected.\"
    next
    edit \"Incoming Webhook Call\"
        set description \"Default automation trigger configuration for an incoming webhook.\"
        set event-type incoming-webhook
    next
    edit \"Security Rating Notification\"
        set description \"Default automation trigger configuration for when a new Security Rating report is available.\"
        set event-type security-rating-summary
        set report-type any
    next
end
config system automation-action
    edit \"FortiExplorer Notification\"
        set description \"Default automation action configuration for sending a notification to any FortiExplorer mobile application.\"
        set action-type fortiexplorer-notification
    next
    edit \"Quarantine on FortiSwitch + FortiAP\"
        set description \"Default automation action configuration for quarantining a MAC address on FortiSwitches and FortiAPs.\"
        set action-type quarantine
    next
    edit \"Quarantine FortiClient EMS Endpoint\"
        set description \"Default automation action configuration for quarantining a FortiClient EMS endpoint device.\"
        set action-type quarantine-forticlient
    next
end
config system automation-stitch
",
    );
    let stitches: &[(&str, &str, bool, &[&str])] = &[
        (
            "Network Down",
            "Network Down",
            true,
            &["FortiExplorer Notification"],
        ),
        (
            "HA Failover",
            "HA Failover",
            true,
            &["FortiExplorer Notification"],
        ),
        ("Reboot", "Reboot", true, &["FortiExplorer Notification"]),
        (
            "FortiAnalyzer Connection Down",
            "FortiAnalyzer Connection Down",
            true,
            &["FortiExplorer Notification"],
        ),
        (
            "License Expired Notification",
            "License Expired Notification",
            true,
            &["FortiExplorer Notification"],
        ),
        (
            "Compromised Host Quarantine",
            "Compromised Host - High",
            false,
            &[
                "Quarantine on FortiSwitch + FortiAP",
                "Quarantine FortiClient EMS Endpoint",
            ],
        ),
        (
            "Incoming Webhook Quarantine",
            "Incoming Webhook Call",
            false,
            &[
                "Quarantine on FortiSwitch + FortiAP",
                "Quarantine FortiClient EMS Endpoint",
            ],
        ),
        (
            "Security Rating Notification",
            "Security Rating Notification",
            false,
            &["FortiExplorer Notification"],
        ),
    ];
    for (name, trigger, enabled, actions) in stitches {
        let _ = writeln!(c, "    edit {}", quote(name));
        let _ = writeln!(
            c,
            "        set description \"Default automation stitch configuration for {}.\"",
            name.to_lowercase()
        );
        if !enabled {
            c.push_str("        set status disable\n");
        }
        let _ = writeln!(c, "        set trigger {}", quote(trigger));
        if version.stitch_actions_table() {
            c.push_str("        config actions\n");
            for (i, a) in actions.iter().enumerate() {
                let _ = writeln!(
                    c,
                    "            edit {}\n                set action {}\n            next",
                    i + 1,
                    quote(a)
                );
            }
            c.push_str("        end\n");
        } else {
            let list: Vec<String> = actions.iter().map(|a| quote(a)).collect();
            let _ = writeln!(c, "        set action {}", list.join(" "));
        }
        c.push_str("    next\n");
    }
    c.push_str("end\n");
}
