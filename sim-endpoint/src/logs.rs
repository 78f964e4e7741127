//! FortiClient's own log records (traffic, web filter, event) in FortiOS `key=value` form.
//!
//! Public material names FortiClient's log types (security event, system event, traffic;
//! searched on FortiAnalyzer as `fct-traffic` / `fct-event`, faz-ems.md §7) but no public
//! sample of an OFTP-uploaded FortiClient line was found. The field set below is therefore a
//! proposal [P]: the FortiOS header (`date`, `time`, `logver`, `type`, `subtype`, `level`), the
//! fields FortiOS and EMS use for the same facts (`srcip`, `dstip`, `dstport`, `hostname`,
//! `user`, `url`, `action`), plus FortiClient identity fields (`uid` = FCTUID, `fctver`,
//! `fctsn`, `os`, `emsserial`, `deviceip`, `devicemac`) [P].

use fortilab_core::logfmt::LogRecord;
use fortilab_core::LabClock;

use crate::fetch::{FetchResult, Url};
use crate::identity::Identity;

fn header(clock: &LabClock, id: &Identity, ty: &str, subtype: &str, level: &str) -> LogRecord {
    let now = clock.now_ns();
    let (date, time) = clock.date_time(now);
    let mut r = LogRecord::new();
    r.bare("date", date)
        .bare("time", time)
        .int("eventtime", now)
        .str("tz", clock.tz_string())
        .int("logver", 1)
        .str("type", ty)
        .str("subtype", subtype)
        .str("level", level)
        .str("devid", &id.fct_sn)
        .str("uid", &id.fctuid)
        .str("hostname", &id.hostname)
        .str("user", &id.user)
        .ip("deviceip", id.ip.into())
        .str("devicemac", &id.mac)
        .str("fctver", &id.fct_version)
        .str("fctsn", &id.fct_sn)
        .str("os", &id.os);
    r
}

/// The traffic and web-filter records of one fetch [P].
pub fn fetch_logs(
    clock: &LabClock,
    id: &Identity,
    ems_sn: &str,
    url: &Url,
    res: &FetchResult,
) -> Vec<String> {
    let action = match res.blocked_by {
        Some("quarantine") => "blocked",
        Some(_) => "blocked",
        None if res.ok => "passthrough",
        None => "error",
    };
    let mut traffic = header(clock, id, "traffic", "forward", "notice");
    traffic
        .str("emsserial", ems_sn)
        .ip("srcip", id.ip.into())
        .str("dstname", &url.host)
        .int("dstport", url.port as i64)
        .int("proto", 6)
        .str("service", if url.https { "HTTPS" } else { "HTTP" })
        .str("direction", "outbound")
        .str(
            "action",
            if action == "passthrough" {
                "accept"
            } else {
                "deny"
            },
        )
        .int("rcvdbyte", res.bytes as i64)
        .str("utmevent", "webfilter")
        .str("utmaction", action);
    let mut web = header(
        clock,
        id,
        "securityevent",
        "webfilter",
        if action == "blocked" {
            "warning"
        } else {
            "info"
        },
    );
    web.str("emsserial", ems_sn)
        .ip("srcip", id.ip.into())
        .str("hostname_dst", &url.host)
        .str("url", url.absolute())
        .str("action", action)
        .int("status", res.status.map(i64::from).unwrap_or(0));
    if let Some(b) = res.blocked_by {
        web.str("blockedby", b);
    }
    vec![traffic.render(), web.render()]
}

/// A system event record (quarantine, release, registration) [P].
pub fn event_log(clock: &LabClock, id: &Identity, ems_sn: &str, msg: &str) -> String {
    let mut r = header(clock, id, "event", "endpoint", "notice");
    r.str("emsserial", ems_sn).str("msg", msg);
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back_and_carry_identity() {
        let id =
            crate::identity::identities(1, "PC-{n}", "alice", "10.115.2.52".parse().unwrap(), 1)
                .unwrap()
                .remove(0);
        let clock = LabClock::real();
        let url = Url::parse("http://www.eicar.org/download/eicar.com").unwrap();
        let res = FetchResult::from_response(200, None, b"x");
        let lines = fetch_logs(&clock, &id, "FCTEMS0000000001", &url, &res);
        assert_eq!(lines.len(), 2);
        let web = LogRecord::parse(&lines[1]).unwrap();
        assert_eq!(
            web.text("url").as_deref(),
            Some("http://www.eicar.org/download/eicar.com")
        );
        assert_eq!(web.text("uid").as_deref(), Some(id.fctuid.as_str()));
        assert_eq!(web.text("srcip").as_deref(), Some("10.115.2.52"));
        let ev = LogRecord::parse(&event_log(&clock, &id, "S", "quarantined")).unwrap();
        assert_eq!(ev.text("type").as_deref(), Some("event"));
    }
}
