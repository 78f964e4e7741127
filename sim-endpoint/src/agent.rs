//! One FortiClient's telemetry state and rules (no I/O): the frames it sends, how it applies
//! EMS replies, the local quarantine and the offline access-code check.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::proto::{self, Frame};

/// The quarantine applied on this endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalQuarantine {
    pub id: u64,
    pub message: String,
    pub salt: String,
    pub hash: String,
}

/// The profile EMS pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub log_upload_enabled: bool,
    /// FortiAnalyzer lab address `IP:PORT`.
    pub log_upload_server: Option<String>,
}

/// Telemetry state of one endpoint.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub registered: bool,
    pub ever_registered: bool,
    pub device_id: Option<u64>,
    pub ems_serial: Option<String>,
    pub ka_interval: Duration,
    pub profile: Profile,
    pub quarantine: Option<LocalQuarantine>,
    /// Released offline with a code: (quarantine id, code) until EMS confirms.
    pub pending_release: Option<(u64, String)>,
    pub contacts: u64,
    pub last_contact_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// What applying a reply changed (for events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Registered { device_id: Option<u64> },
    Quarantined { id: u64, message: String },
    Released { by: &'static str, id: Option<u64> },
    CodeConfirmed { accepted: bool },
    MustRegister { message: String },
    Error { code: String, message: String },
    Profile(Profile),
}

/// Verifier check: SHA-256(salt ‖ upper-case code) in hex.
pub fn code_matches(salt: &str, hash: &str, code: &str) -> bool {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(code.trim().to_ascii_uppercase().as_bytes());
    hex::encode(h.finalize()).eq_ignore_ascii_case(hash)
}

impl AgentState {
    pub fn new(default_ka: Duration) -> Self {
        AgentState {
            registered: false,
            ever_registered: false,
            device_id: None,
            ems_serial: None,
            ka_interval: default_ka,
            profile: Profile::default(),
            quarantine: None,
            pending_release: None,
            contacts: 0,
            last_contact_ms: None,
            last_error: None,
        }
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantine.is_some()
    }

    fn header(&self, id: &Identity, verb: &str, arg: &str) -> Frame {
        Frame::new("FCTUID", &id.fctuid, verb, arg)
            .head("IP", id.ip)
            .head("MAC", proto::mac_dash(&id.mac))
            .head("FCT_ONNET", 1)
            .head("CAPS", 0)
            .head("VDOM", "default")
            .head("EC_QUARANTINED", u8::from(self.is_quarantined()))
    }

    /// The next request: a registration until registered, then keep-alives.
    pub fn next_request(&self, id: &Identity, now_secs: i64) -> Frame {
        if !self.registered {
            let mut f = self.header(id, "REGISTER", "SYSINFO");
            f.put("HOSTNAME", &id.hostname)
                .put("USER", &id.user)
                .put("DOMAIN", "WORKGROUP")
                .put("OSVER", &id.os)
                .put("FCTOS", "WIN64")
                .put("FCTVER", &id.fct_version)
                .put("FCT_SN", &id.fct_sn)
                .put(
                    "NWIFS",
                    format!("Ethernet0|{}|{}|0.0.0.0|", id.ip, proto::mac_dash(&id.mac)),
                )
                .put("UTC", now_secs);
            f
        } else {
            let mut f = self.header(id, "KA", "KA");
            f.put("HOSTNAME", &id.hostname).put(
                "QUARANTINE_ID",
                self.quarantine.as_ref().map(|q| q.id).unwrap_or(0),
            );
            if let Some((qid, code)) = &self.pending_release {
                f.put("RELEASE_CODE", code)
                    .put("RELEASED_QUARANTINE_ID", qid);
            }
            f
        }
    }

    /// Applies an EMS reply to the request `sent`.
    pub fn apply(&mut self, sent: &Frame, reply: &Frame, now_ms: i64) -> Vec<Change> {
        let mut out = Vec::new();
        self.contacts += 1;
        self.last_contact_ms = Some(now_ms);
        if let Some(ms) = reply
            .value("KA_INTERVAL_MS")
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.ka_interval = Duration::from_millis(ms.max(1));
        } else if let Some(s) = reply
            .value("KA_INTERVAL")
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.ka_interval = Duration::from_secs(s.max(1));
        }
        if let Some(sn) = reply.value("EMS_SN").or(reply.header_value("FCTEMS")) {
            self.ems_serial = Some(sn.to_string());
        }
        let status = reply.value("STATUS").unwrap_or(reply.arg.as_str());
        if status != "OK" {
            let code = reply.value("ERROR_CODE").unwrap_or("ERROR").to_string();
            let message = reply.value("MESSAGE").unwrap_or("").to_string();
            self.last_error = Some(format!("{code}: {message}"));
            if code == "NOT_REGISTERED" || reply.value("ACTION") == Some("REGISTER") {
                self.registered = false;
                out.push(Change::MustRegister { message });
            } else {
                out.push(Change::Error { code, message });
            }
            return out;
        }
        self.last_error = None;
        if !self.registered {
            self.registered = true;
            self.device_id = reply.value("DEVICE_ID").and_then(|v| v.parse().ok());
            if !self.ever_registered {
                self.ever_registered = true;
                out.push(Change::Registered {
                    device_id: self.device_id,
                });
            }
        }
        let profile = Profile {
            name: reply.value("PROFILE_NAME").unwrap_or("").to_string(),
            log_upload_enabled: reply.value("LOG_UPLOAD_ENABLED") == Some("1"),
            log_upload_server: reply
                .value("LOG_UPLOAD_SERVER")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        };
        if reply.value("LOG_UPLOAD_ENABLED").is_some() && profile != self.profile {
            self.profile = profile.clone();
            out.push(Change::Profile(profile));
        }
        // The code we sent (if any) has been judged.
        let sent_code = sent.value("RELEASE_CODE").is_some();
        let mut skip_qid = None;
        if let Some(result) = reply.value("CODE_RESULT") {
            if sent_code {
                let accepted = result == "ACCEPTED";
                out.push(Change::CodeConfirmed { accepted });
                self.pending_release = None;
            }
        } else if let Some((qid, _)) = &self.pending_release {
            // The code was entered after this keep-alive left: EMS has not judged it yet, so a
            // quarantine instruction for the released quarantine is stale.
            skip_qid = Some(*qid);
        }
        match reply.value("ACTION").unwrap_or("NONE") {
            "QUARANTINE" => {
                let id = reply
                    .value("QUARANTINE_ID")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let q = LocalQuarantine {
                    id,
                    message: reply.value("QUARANTINE_MSG").unwrap_or("").to_string(),
                    salt: reply
                        .value("QUARANTINE_CODE_SALT")
                        .unwrap_or("")
                        .to_string(),
                    hash: reply
                        .value("QUARANTINE_CODE_HASH")
                        .unwrap_or("")
                        .to_string(),
                };
                let already = self.quarantine.as_ref().is_some_and(|c| c.id == id);
                if !already && skip_qid != Some(id) {
                    out.push(Change::Quarantined {
                        id,
                        message: q.message.clone(),
                    });
                    self.quarantine = Some(q);
                    self.pending_release = None;
                }
            }
            "UNQUARANTINE" => {
                if let Some(q) = self.quarantine.take() {
                    out.push(Change::Released {
                        by: "ems",
                        id: Some(q.id),
                    });
                }
            }
            _ => {}
        }
        out
    }

    /// The user enters an access code: checked offline against the verifier.
    pub fn enter_code(&mut self, code: &str) -> Result<u64, &'static str> {
        let Some(q) = &self.quarantine else {
            return Err("endpoint is not quarantined");
        };
        if q.salt.is_empty() || !code_matches(&q.salt, &q.hash, code) {
            return Err("wrong access code");
        }
        let id = q.id;
        self.quarantine = None;
        self.pending_release = Some((id, code.trim().to_ascii_uppercase()));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> Identity {
        crate::identity::identities(1, "PC-{n}", "alice", "10.115.2.52".parse().unwrap(), 1)
            .unwrap()
            .remove(0)
    }

    fn reply(pairs: &[(&str, &str)]) -> Frame {
        let mut f = Frame::new("FCTEMS", "FCTEMS0000000001", "REPLY", "OK");
        f.put("STATUS", "OK")
            .put("KA_INTERVAL", 1)
            .put("KA_INTERVAL_MS", 200)
            .put("DEVICE_ID", 7);
        for (k, v) in pairs {
            f.put(k, v);
        }
        f
    }

    fn verifier(code: &str) -> (String, String) {
        let salt = "00ff".to_string();
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        h.update(code.as_bytes());
        (salt, hex::encode(h.finalize()))
    }

    #[test]
    fn register_then_keepalive_then_quarantine_and_code() {
        let id = ident();
        let mut st = AgentState::new(Duration::from_secs(60));
        let r = st.next_request(&id, 0);
        assert_eq!(r.verb, "REGISTER");
        assert_eq!(r.value("HOSTNAME"), Some("PC-52"));
        assert_eq!(r.header_value("EC_QUARANTINED"), Some("0"));
        let ch = st.apply(
            &r,
            &reply(&[
                ("ACTION", "NONE"),
                ("LOG_UPLOAD_ENABLED", "1"),
                ("LOG_UPLOAD_SERVER", "10.115.1.20:514"),
            ]),
            1,
        );
        assert!(ch.contains(&Change::Registered { device_id: Some(7) }));
        assert_eq!(st.ka_interval, Duration::from_millis(200));
        assert_eq!(
            st.profile.log_upload_server.as_deref(),
            Some("10.115.1.20:514")
        );
        let ka = st.next_request(&id, 1);
        assert_eq!(ka.verb, "KA");

        let (salt, hash) = verifier("ABCD2345");
        let q = reply(&[
            ("ACTION", "QUARANTINE"),
            ("QUARANTINE_ID", "3"),
            ("QUARANTINE_MSG", "m"),
            ("QUARANTINE_CODE_SALT", &salt),
            ("QUARANTINE_CODE_HASH", &hash),
        ]);
        let ch = st.apply(&ka, &q, 2);
        assert_eq!(
            ch,
            vec![Change::Quarantined {
                id: 3,
                message: "m".into()
            }]
        );
        assert!(st.apply(&ka, &q, 3).is_empty(), "idempotent");
        assert_eq!(
            st.next_request(&id, 3).header_value("EC_QUARANTINED"),
            Some("1")
        );

        assert_eq!(st.enter_code("WRONG"), Err("wrong access code"));
        assert!(st.is_quarantined());
        // The code is entered while a keep-alive without it is in flight: the stale
        // instruction for the released quarantine is ignored.
        let in_flight = st.next_request(&id, 4);
        assert_eq!(st.enter_code("abcd2345"), Ok(3));
        assert!(st.apply(&in_flight, &q, 5).is_empty());
        assert!(!st.is_quarantined());
        let ka = st.next_request(&id, 6);
        assert_eq!(ka.value("RELEASE_CODE"), Some("ABCD2345"));
        assert_eq!(ka.header_value("EC_QUARANTINED"), Some("0"));
        let ch = st.apply(
            &ka,
            &reply(&[("ACTION", "NONE"), ("CODE_RESULT", "ACCEPTED")]),
            7,
        );
        assert!(ch.contains(&Change::CodeConfirmed { accepted: true }));
        assert!(st.next_request(&id, 8).value("RELEASE_CODE").is_none());
        assert_eq!(
            st.enter_code("ABCD2345"),
            Err("endpoint is not quarantined")
        );
    }

    #[test]
    fn unquarantine_and_must_register() {
        let id = ident();
        let mut st = AgentState::new(Duration::from_secs(60));
        let r = st.next_request(&id, 0);
        st.apply(
            &r,
            &reply(&[("ACTION", "QUARANTINE"), ("QUARANTINE_ID", "1")]),
            0,
        );
        assert!(st.is_quarantined());
        let ka = st.next_request(&id, 0);
        let ch = st.apply(&ka, &reply(&[("ACTION", "UNQUARANTINE")]), 0);
        assert_eq!(
            ch,
            vec![Change::Released {
                by: "ems",
                id: Some(1)
            }]
        );
        let mut err = Frame::new("FCTEMS", "X", "REPLY", "ERROR");
        err.put("STATUS", "ERROR")
            .put("ERROR_CODE", "NOT_REGISTERED")
            .put("MESSAGE", "register")
            .put("ACTION", "REGISTER");
        let ch = st.apply(&ka, &err, 0);
        assert!(matches!(ch[0], Change::MustRegister { .. }));
        assert_eq!(st.next_request(&id, 0).verb, "REGISTER");
    }
}
