//! The real actions (reference fortios.md §3.3, §8.2): `quarantine-forticlient` (EMS),
//! `ban-ip`, `quarantine` (access layer, on `config user quarantine`), `webhook` (and the
//! Slack / Teams notifications, which are webhooks), `email` (SMTP), `cli-script`, `alert`.
//! Other action types need products the lab does not have and fail with a clear detail.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::ems::EmsConnector;
use super::http::{self, Target};
use super::model::ActionDef;
use super::runner::{ActionExecutor, ActionOutcome, RunCtx};
use super::smtp;
use super::subst::{substitute, Vars};
use crate::config::lexer::quote;
use crate::config::Origin;
use crate::device::Device;
use fortilab_core::EventKind;

/// The `ui` of configuration changes made by automation (they do not fire `config-change`).
pub const AUTOMATION_UI: &str = "autod";

/// Webhook/email time limit (real time).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Lab-time waits between attempts of a `quarantine-forticlient` request no EMS answered [P].
pub const QUARANTINE_RETRY: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(60),
];

/// Runs actions against the device.
pub struct DeviceActions {
    pub dev: Arc<Device>,
    pub ems: Arc<EmsConnector>,
}

impl ActionExecutor for DeviceActions {
    async fn execute(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        {
            match action.action_type.as_str() {
                "quarantine-forticlient" => self.quarantine_forticlient(ctx).await,
                "ban-ip" => self.ban_ip(ctx),
                "quarantine" => self.access_quarantine(action, ctx),
                "webhook" => self.webhook(action, ctx).await,
                "slack-notification" | "microsoft-teams-notification" => {
                    self.chat(action, ctx).await
                }
                "email" => self.email(action, ctx).await,
                "cli-script" => self.cli_script(action, ctx),
                "alert" => self.alert(action, ctx),
                other => ActionOutcome::failed(format!(
                    "action type {other} is not modelled in the lab (it needs a product or cloud service the lab does not have)"
                )),
            }
        }
    }
}

impl DeviceActions {
    fn subst(&self, template: &str, ctx: &RunCtx) -> String {
        let (date, time) = self.dev.clock.date_time(self.dev.clock.now_ns());
        let devname = self.dev.hostname();
        let vars = Vars {
            log: Some(&ctx.fields),
            results: Some(&ctx.results),
            devname: &devname,
            date: &date,
            time: &time,
        };
        substitute(template, &vars)
    }

    /// Resolves a configured server (a lab address) through the lab map.
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let ip: IpAddr = match host.parse() {
            Ok(ip) => ip,
            Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
            Err(_) => {
                return Err(format!(
                    "cannot resolve \"{host}\": the lab has no DNS, use the server's lab address"
                ))
            }
        };
        Ok(self.dev.lab_map.resolve(SocketAddr::new(ip, port)))
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let id = self
            .dev
            .tls
            .get()
            .ok_or_else(|| "the FortiGate has no certificate yet".to_string())?;
        http::tls_config(&id.ca_pem, None)
    }

    async fn quarantine_forticlient(&self, ctx: &RunCtx) -> ActionOutcome {
        let (ip, mac, fctuid) = (ctx.srcip(), ctx.mac(), ctx.fctuid());
        if ip.is_none() && mac.is_none() && fctuid.is_none() {
            return ActionOutcome::failed(
                "no endpoint address, MAC or FortiClient UID in the triggering event",
            );
        }
        let reason = match ctx.field("threat") {
            Some(t) => format!(
                "Compromised host ({t}) quarantined by automation stitch {}",
                ctx.stitch
            ),
            None => format!("Quarantined by automation stitch {}", ctx.stitch),
        };
        tracing::info!(stitch = %ctx.stitch, ip = ?ip, "__action_ioc_quarantine_hdl(): ioc quarantine action is called");
        // [P] No EMS reachable: the request is retried after QUARANTINE_RETRY (lab time), each
        // failure logged as an event (public material is silent on fcnacd's retry policy).
        let mut attempt = 0usize;
        let result = loop {
            let r = self
                .ems
                .quarantine_call(ip, mac, fctuid, &reason, &ctx.stitch)
                .await;
            match r {
                Err(e) if !e.answered && attempt < QUARANTINE_RETRY.len() => {
                    let wait = QUARANTINE_RETRY[attempt];
                    attempt += 1;
                    let who = ip.or(fctuid).or(mac).unwrap_or("").to_string();
                    self.dev.logs.event_system(
                        "0100046602",
                        "warning",
                        "Automation stitch action failed",
                        |record| {
                            record.str("stitch", ctx.stitch.clone())
                                .str("action", "quarantine-forticlient")
                                .str("srcip", who.clone())
                                .str(
                                    "msg",
                                    format!(
                                        "quarantine of {who} via EMS failed: {}; retry {attempt} of {} in {}s",
                                        e.message,
                                        QUARANTINE_RETRY.len(),
                                        wait.as_secs()
                                    ),
                                );
                        },
                    );
                    self.dev.events.emit(
                        EventKind::EmsQuarantineRetry,
                        json!({"stitch": ctx.stitch, "ip": ip, "attempt": attempt,
                               "retry_in_s": wait.as_secs(), "error": e.message}),
                    );
                    tracing::warn!(stitch = %ctx.stitch, ip = ?ip, attempt, error = %e.message, "EMS unreachable, quarantine retried");
                    self.dev.clock.sleep(wait).await;
                }
                other => break other.map_err(|e| e.message),
            }
        };
        if let Err(e) = &result {
            if attempt > 0 {
                let who = ip.or(fctuid).or(mac).unwrap_or("").to_string();
                self.dev.logs.event_system(
                    "0100046602",
                    "error",
                    "Automation stitch action failed",
                    |record| {
                        record
                            .str("stitch", ctx.stitch.clone())
                            .str("action", "quarantine-forticlient")
                            .str("srcip", who.clone())
                            .str(
                                "msg",
                                format!(
                                    "quarantine of {who} via EMS failed after {} attempts: {e}",
                                    attempt + 1
                                ),
                            );
                    },
                );
            }
        }
        match result {
            Ok(done) => {
                let who = ip.or(fctuid).or(mac).unwrap_or("");
                ActionOutcome::success(format!(
                    "EMS {} quarantined {who}{}",
                    done.ems,
                    if done.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", done.message)
                    }
                ))
                .with_output(json!({"ems": done.ems, "quarantine": done.data}))
            }
            Err(e) => ActionOutcome::failed(e),
        }
    }

    fn ban_ip(&self, ctx: &RunCtx) -> ActionOutcome {
        let Some(ip) = ctx.srcip() else {
            return ActionOutcome::failed("no source address (srcip) in the triggering event");
        };
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return ActionOutcome::failed(format!("\"{ip}\" is not an IP address"));
        };
        // [P] FortiOS bans from a stitch until cleared; the cause names the trigger kind.
        let source = if ctx.event_type == "ioc" {
            "ioc"
        } else {
            "automation"
        };
        let ban = self.dev.banned.add(addr, 0, source);
        self.dev.events.emit(
            EventKind::BannedAdd,
            json!({"ip_addresses": [ip], "expiry": 0, "source": source, "stitch": ctx.stitch}),
        );
        ActionOutcome::success(format!("{ip} banned (source {source})"))
            .with_output(json!({"banned": ban}))
    }

    fn access_quarantine(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        let Some(mac) = ctx.mac() else {
            return ActionOutcome::failed(
                "no MAC address in the triggering event (access-layer quarantine needs one)",
            );
        };
        let mac = mac.to_ascii_lowercase();
        let entry: String = ctx
            .field("hostname")
            .unwrap_or(&mac)
            .chars()
            .take(63)
            .collect();
        let desc = format!("Quarantined by {}", action.name)
            .chars()
            .take(63)
            .collect::<String>();
        let cli = format!(
            "config user quarantine\nconfig targets\nedit {}\nset description {}\nconfig macs\nedit {}\nset description {}\nnext\nend\nnext\nend\nend\n",
            quote(&entry),
            quote(&desc),
            quote(&mac),
            quote(&desc),
        );
        let origin = Origin {
            user: "autod".into(),
            ui: AUTOMATION_UI.into(),
        };
        match self
            .dev
            .config
            .apply_cli(&cli, &format!("<{}>", action.name), false, &origin)
        {
            Ok(_) => {
                self.dev.events.emit(
                    EventKind::QuarantineMac,
                    json!({"mac": mac, "entry": entry, "stitch": ctx.stitch}),
                );
                ActionOutcome::success(format!("MAC {mac} added to user quarantine target {entry}"))
                    .with_output(json!({"mac": mac, "target": entry}))
            }
            Err(e) => ActionOutcome::failed(format!("config user quarantine: {e}")),
        }
    }

    async fn send_http(
        &self,
        https: bool,
        host: &str,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<http::Reply, String> {
        let addr = self.resolve(host, port)?;
        let t = Target {
            addr,
            host: if (https && port == 443) || (!https && port == 80) {
                host.to_string()
            } else {
                format!("{host}:{port}")
            },
            tls: if https { Some(self.tls()?) } else { None },
        };
        http::request(&t, method, path, headers, body, CALL_TIMEOUT).await
    }

    fn reply_outcome(&self, r: http::Reply, what: &str) -> ActionOutcome {
        let output = match r.json() {
            Some(Value::Object(m)) => Value::Object(m),
            _ => Value::Null,
        };
        if (200..300).contains(&r.status) {
            ActionOutcome::success(format!("{what}: HTTP {}", r.status)).with_output(output)
        } else {
            let text: String = r.text().chars().take(200).collect();
            ActionOutcome::failed(format!("{what}: HTTP {} {text}", r.status))
        }
    }

    async fn webhook(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        let uri = self.subst(&action.uri, ctx);
        let (https, host, port, path) = match http::split_uri(&uri, &action.protocol, action.port) {
            Ok(x) => x,
            Err(e) => return ActionOutcome::failed(e),
        };
        let headers: Vec<(String, String)> = action
            .headers
            .iter()
            .map(|(k, v)| (self.subst(k, ctx), self.subst(v, ctx)))
            .collect();
        let body = self.subst(&action.http_body, ctx);
        let method = action.method.to_ascii_uppercase();
        let body = (!body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH"))
            .then(|| body.into_bytes());
        let scheme = if https { "https" } else { "http" };
        match self
            .send_http(https, &host, port, &method, &path, &headers, body)
            .await
        {
            Ok(r) => self.reply_outcome(r, &format!("{method} {scheme}://{host}:{port}{path}")),
            Err(e) => ActionOutcome::failed(e),
        }
    }

    async fn chat(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        let uri = self.subst(&action.uri, ctx);
        let (https, host, port, path) = match http::split_uri(&uri, "https", action.port) {
            Ok(x) => x,
            Err(e) => return ActionOutcome::failed(e),
        };
        let text = if action.message.is_empty() {
            format!("stitch:{} is triggered.", ctx.stitch)
        } else {
            self.subst(&action.message, ctx)
        };
        let body = json!({ "text": text }).to_string().into_bytes();
        match self
            .send_http(https, &host, port, "POST", &path, &[], Some(body))
            .await
        {
            Ok(r) => self.reply_outcome(r, &format!("{} to {host}", action.action_type)),
            Err(e) => ActionOutcome::failed(e),
        }
    }

    async fn email(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        if action.email_to.is_empty() {
            return ActionOutcome::failed("no recipient (set email-to)");
        }
        let (server, port, security) = self.dev.config.with(|config| {
            let e = config.single("system email-server");
            (
                e.and_then(|e| e.scalar("server"))
                    .unwrap_or("notification.fortinet.net")
                    .to_string(),
                e.and_then(|e| e.scalar("port"))
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(465),
                e.and_then(|e| e.scalar("security"))
                    .unwrap_or("smtps")
                    .to_string(),
            )
        });
        if security == "starttls" {
            return ActionOutcome::failed(
                "system email-server security starttls is not modelled (use none or smtps)",
            );
        }
        let addr = match self.resolve(&server, port) {
            Ok(a) => a,
            Err(e) => return ActionOutcome::failed(format!("email server: {e}")),
        };
        let tls = if security == "smtps" {
            match self.tls() {
                Ok(t) => Some(t),
                Err(e) => return ActionOutcome::failed(e),
            }
        } else {
            None
        };
        let subject = if action.email_subject.is_empty() {
            format!("Automation stitch {} triggered", ctx.stitch)
        } else {
            self.subst(&action.email_subject, ctx)
        };
        let body = if action.message.is_empty() {
            ctx.log_line
                .clone()
                .unwrap_or_else(|| self.subst("%%log%%", ctx))
        } else {
            self.subst(&action.message, ctx)
        };
        let now = self.dev.clock.now_ns();
        let (d, t) = self.dev.clock.date_time(now);
        let mail = smtp::Mail {
            helo: self.dev.hostname(),
            from: if action.email_from.is_empty() {
                "DoNotReply@fortinet-notifications.com".into()
            } else {
                self.subst(&action.email_from, ctx)
            },
            to: action.email_to.clone(),
            subject,
            body,
            date: format!("{d} {t} {}", self.dev.clock.tz_string()),
        };
        match smtp::send(addr, &server, tls, &mail, CALL_TIMEOUT).await {
            Ok(reply) => {
                ActionOutcome::success(format!("mail to {} accepted: {reply}", mail.to.join(", ")))
                    .with_output(json!({"email": {"to": mail.to, "subject": mail.subject}}))
            }
            Err(e) => ActionOutcome::failed(e),
        }
    }

    fn cli_script(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        let script = self.subst(&action.script, ctx);
        let profile = if action.accprofile.is_empty() {
            "super_admin".to_string()
        } else {
            action.accprofile.clone()
        };
        let (config_text, skipped) = split_script(&script);
        if let Err(e) = self.check_profile(&profile, &config_text) {
            return ActionOutcome::failed(e);
        }
        let origin = Origin {
            user: format!("autod({profile})"),
            ui: AUTOMATION_UI.into(),
        };
        let applied = if config_text.trim().is_empty() {
            Ok(0)
        } else {
            self.dev
                .config
                .apply_cli(&config_text, &format!("<{}>", action.name), false, &origin)
                .map(|a| a.changes.len())
        };
        match applied {
            Ok(n) => {
                let mut detail = format!("{n} configuration change(s)");
                if !skipped.is_empty() {
                    detail.push_str(&format!("; not modelled: {}", skipped.join(" | ")));
                }
                ActionOutcome::success(detail).with_output(json!({"changes": n}))
            }
            Err(e) => ActionOutcome::failed(format!("cli-script: {e}")),
        }
    }

    /// `cli-script` runs as the action's access profile: every table it configures needs
    /// `read-write` in the matching permission group.
    fn check_profile(&self, profile: &str, script: &str) -> Result<(), String> {
        self.dev.config.with(|c| {
            let Some(p) = c.entry("system accprofile", profile) else {
                return Err(format!("access profile \"{profile}\" does not exist"));
            };
            if p.scalar("scope") == Some("global") && profile == "super_admin" {
                return Ok(());
            }
            for path in top_level_paths(script) {
                let group = permission_group(&path);
                if p.scalar(group) != Some("read-write") {
                    return Err(format!(
                        "permission denied: access profile \"{profile}\" has no {group} read-write access for \"config {path}\""
                    ));
                }
            }
            Ok(())
        })
    }

    fn alert(&self, action: &ActionDef, ctx: &RunCtx) -> ActionOutcome {
        let message = if action.message.is_empty() {
            format!("stitch:{} is triggered.", ctx.stitch)
        } else {
            self.subst(&action.message, ctx)
        };
        self.dev.events.emit(
            EventKind::Alert,
            json!({"stitch": ctx.stitch, "action": action.name, "message": message,
                   "srcip": ctx.srcip()}),
        );
        ActionOutcome::success(format!("alert: {message}"))
    }
}

/// Splits a CLI script into configuration commands and the commands the lab does not model
/// (`execute`, `diagnose`, `get`, `show` at the top level).
pub fn split_script(script: &str) -> (String, Vec<String>) {
    let mut config = String::new();
    let mut skipped = Vec::new();
    let mut depth = 0usize;
    for line in script.lines() {
        let t = line.trim();
        let word = t.split_whitespace().next().unwrap_or("");
        if depth == 0
            && matches!(
                word,
                "execute" | "exec" | "diagnose" | "diag" | "get" | "show"
            )
        {
            skipped.push(t.to_string());
            continue;
        }
        match word {
            "config" => depth += 1,
            "end" => depth = depth.saturating_sub(1),
            _ => {}
        }
        config.push_str(line);
        config.push('\n');
    }
    (config, skipped)
}

/// The table paths a script configures at the top level (`config firewall address`).
fn top_level_paths(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    for line in script.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("config") => {
                if depth == 0 {
                    out.push(words.collect::<Vec<_>>().join(" "));
                }
                depth += 1;
            }
            Some("end") => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    out
}

/// The access-profile group that governs a table.
fn permission_group(path: &str) -> &'static str {
    let first = path.split_whitespace().next().unwrap_or("");
    match first {
        "firewall" => "fwgrp",
        "user" | "authentication" => "authgrp",
        "log" => "loggrp",
        "webfilter" | "antivirus" | "ips" | "application" | "dnsfilter" | "emailfilter" | "dlp" => {
            "utmgrp"
        }
        "router" => "netgrp",
        "vpn" => "vpngrp",
        "wireless-controller" => "wifi",
        "endpoint-control" => "secfabgrp",
        "system" if path.contains("interface") || path.contains("zone") => "netgrp",
        _ => "sysgrp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_and_map_to_groups() {
        let (cfg, skipped) = split_script(
            "config firewall address\nedit \"bad\"\nset subnet 10.115.2.52 255.255.255.255\nnext\nend\nexecute ping 1.1.1.1\ndiagnose sys top\n",
        );
        assert!(cfg.starts_with("config firewall address\n"));
        assert!(!cfg.contains("execute"));
        assert_eq!(skipped, ["execute ping 1.1.1.1", "diagnose sys top"]);
        assert_eq!(
            top_level_paths(
                "config firewall address\nconfig x\nend\nend\nconfig user local\nend\n"
            ),
            ["firewall address", "user local"]
        );
        assert_eq!(permission_group("firewall address"), "fwgrp");
        assert_eq!(permission_group("user quarantine"), "authgrp");
        assert_eq!(permission_group("system interface"), "netgrp");
        assert_eq!(permission_group("system global"), "sysgrp");
    }
}
