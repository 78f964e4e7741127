//! The notifications FortiAnalyzer pushes to a device over the log channel: one typed shape that
//! both ends share (the FortiAnalyzer builds it, the FortiGate's automation engine consumes it).
//!
//! On the wire (`Notify` frame) a notification is a JSON object: `"id"` (u64, unique per
//! FortiAnalyzer), `"type"` (`ioc`, `ioc-ack`, `faz-event`) and the fields of that type. Exactly
//! these names are accepted: a frame whose payload does not match is `malformed`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Level of a compromised-host verdict (`config system automation-trigger` `ioc-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IocLevel {
    Medium,
    High,
}

impl IocLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            IocLevel::Medium => "medium",
            IocLevel::High => "high",
        }
    }
}

/// A compromised host (`"type": "ioc"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IocNotification {
    /// `Infected`, `Suspicious`, ...
    pub verdict: String,
    pub ioc_level: IocLevel,
    pub srcip: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The FortiGate whose log showed the hit.
    #[serde(default)]
    pub devid: String,
    #[serde(default = "root")]
    pub vdom: String,
    #[serde(default)]
    pub threat: String,
    #[serde(default)]
    pub detect_method: String,
    /// FortiAnalyzer's endpoint id.
    #[serde(default)]
    pub epid: Option<u64>,
    /// Lab time of the detection, Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

fn root() -> String {
    "root".into()
}

/// A compromised host acknowledged on FortiAnalyzer (`"type": "ioc-ack"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IocAckNotification {
    pub srcip: String,
    #[serde(default)]
    pub epid: Option<u64>,
    #[serde(default)]
    pub devid: String,
    #[serde(default)]
    pub comment: String,
}

/// A FortiAnalyzer event-handler event (`"type": "faz-event"`), for `faz-event` triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FazEventNotification {
    pub name: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Further fields, offered to the stitch's actions as `%%log.<field>%%`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Notice {
    Ioc(IocNotification),
    IocAck(IocAckNotification),
    FazEvent(FazEventNotification),
}

impl Notice {
    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Ioc(_) => "ioc",
            Notice::IocAck(_) => "ioc-ack",
            Notice::FazEvent(_) => "faz-event",
        }
    }
}

/// One notification (FortiAnalyzer → device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per FortiAnalyzer; the device acknowledges it with `NotifyAck {id}`.
    pub id: u64,
    #[serde(flatten)]
    pub notice: Notice,
}

impl Notification {
    pub fn new(id: u64, notice: Notice) -> Self {
        Self { id, notice }
    }

    /// The notification as the JSON object of the wire (events, APIs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_flat_with_the_id_and_type() {
        let n = Notification::new(
            7,
            Notice::Ioc(IocNotification {
                verdict: "Infected".into(),
                ioc_level: IocLevel::High,
                srcip: "10.115.2.52".into(),
                mac: None,
                user: None,
                hostname: Some("PC-52".into()),
                devid: "FGVM01".into(),
                vdom: "root".into(),
                threat: "www.eicar.org".into(),
                detect_method: "Infected-domain".into(),
                epid: Some(1041),
                timestamp: 1_614_881_482,
            }),
        );
        let v = n.to_json();
        assert_eq!(v["id"], 7);
        assert_eq!(v["type"], "ioc");
        assert_eq!(v["ioc_level"], "high");
        let back: Notification = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
        let ack: Notification = serde_json::from_str(
            r#"{"id":8,"type":"ioc-ack","srcip":"10.115.2.52","epid":1041,"devid":"FGVM01","comment":"x"}"#,
        )
        .unwrap();
        assert_eq!(ack.notice.kind(), "ioc-ack");
    }

    #[test]
    fn aliases_and_untyped_objects_are_refused() {
        for bad in [
            r#"{"id":1,"type":"ioc_ack","srcip":"10.0.0.1"}"#,
            r#"{"id":1,"type":"event","name":"x"}"#,
            r#"{"id":1,"type":"ioc","ip":"10.0.0.1","verdict":"Infected","ioc_level":"high"}"#,
            r#"{"type":"ioc","srcip":"10.0.0.1","verdict":"Infected","ioc_level":"high"}"#,
            r#"{"id":1,"srcip":"10.0.0.1"}"#,
        ] {
            assert!(serde_json::from_str::<Notification>(bad).is_err(), "{bad}");
        }
    }
}
