//! `%%...%%` substitution in webhook URIs/bodies/headers, email subjects/bodies and CLI
//! scripts (reference fortios.md §3.3): `%%log.<field>%%` (the triggering log's field),
//! `%%log%%` (the whole log as a JSON object), `%%results.<field>%%` (a previous action's
//! result), `%%devname%%`, `%%date%%`, `%%time%%`. Unknown variables are left as written; a
//! log field the log does not carry becomes empty. Pure code.

use std::collections::BTreeMap;

use serde_json::Value;

/// The values a template may name.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    pub log: Option<&'a BTreeMap<String, String>>,
    pub results: Option<&'a serde_json::Map<String, Value>>,
    pub devname: &'a str,
    /// Lab-local `YYYY-MM-DD`.
    pub date: &'a str,
    /// Lab-local `HH:MM:SS`.
    pub time: &'a str,
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Vars<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "devname" => return Some(self.devname.to_string()),
            "date" => return Some(self.date.to_string()),
            "time" => return Some(self.time.to_string()),
            "log" => {
                let m: serde_json::Map<String, Value> = self
                    .log
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                return Some(Value::Object(m).to_string());
            }
            "results" => {
                return Some(Value::Object(self.results.cloned().unwrap_or_default()).to_string())
            }
            _ => {}
        }
        if let Some(field) = name.strip_prefix("log.") {
            return Some(
                self.log
                    .and_then(|l| l.get(field).cloned())
                    .unwrap_or_default(),
            );
        }
        if let Some(path) = name.strip_prefix("results.") {
            let mut cur = Value::Object(self.results.cloned().unwrap_or_default());
            for part in path.split('.') {
                cur = match cur {
                    Value::Object(mut m) => m.remove(part).unwrap_or(Value::Null),
                    Value::Array(a) => part
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| a.get(i).cloned())
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            return Some(if cur.is_null() {
                String::new()
            } else {
                json_text(&cur)
            });
        }
        None
    }
}

/// Replaces every known `%%name%%` in `template`.
pub fn substitute(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("%%") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("%%") {
            Some(end) => {
                let name = &after[..end];
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                match valid.then(|| vars.lookup(name)).flatten() {
                    Some(v) => {
                        out.push_str(&v);
                        rest = &after[end + 2..];
                    }
                    None => {
                        // Not a variable: keep the first `%%` and rescan from the second.
                        out.push_str("%%");
                        rest = after;
                    }
                }
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> BTreeMap<String, String> {
        [("srcip", "10.115.2.52"), ("hostname", "PC-52")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_log_fields_device_date_and_time() {
        let l = log();
        let v = Vars {
            log: Some(&l),
            results: None,
            devname: "FGT-LAB",
            date: "2021-03-04",
            time: "10:11:22",
        };
        assert_eq!(
            substitute(
                "{\"ip\":\"%%log.srcip%%\",\"fw\":\"%%devname%%\",\"at\":\"%%date%% %%time%%\"}",
                &v
            ),
            "{\"ip\":\"10.115.2.52\",\"fw\":\"FGT-LAB\",\"at\":\"2021-03-04 10:11:22\"}"
        );
        // A field the log lacks is empty; unknown names and stray %% stay.
        assert_eq!(substitute("[%%log.user%%]", &v), "[]");
        assert_eq!(substitute("%%nope%% 100%% %%", &v), "%%nope%% 100%% %%");
        assert_eq!(substitute("50%%%%log.srcip%%", &v), "50%%10.115.2.52");
        // The whole log as JSON.
        let whole: Value = serde_json::from_str(&substitute("%%log%%", &v)).unwrap();
        assert_eq!(whole["hostname"], "PC-52");
        assert_eq!(substitute("no variables", &v), "no variables");
    }

    #[test]
    fn substitutes_previous_results() {
        let r = json!({"source": "ems", "data": {"endpoints": [{"uid": "ABC"}]}, "n": 3});
        let results = r.as_object().unwrap().clone();
        let v = Vars {
            results: Some(&results),
            ..Vars::default()
        };
        assert_eq!(substitute("%%results.source%%", &v), "ems");
        assert_eq!(substitute("%%results.data.endpoints.0.uid%%", &v), "ABC");
        assert_eq!(substitute("%%results.n%%", &v), "3");
        assert_eq!(substitute("%%results.missing%%", &v), "");
    }
}
