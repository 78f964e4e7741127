//! REST query parameters: `filter` (`==`, `!=`, `=@`, `!@`, `<`, `<=`, `>`, `>=`; repeated
//! parameters AND, commas inside one OR), `sort` (`sort=name`, `sort=policyid,dsc`; repeated
//! parameters are further keys), `format`, `start`/`count`.

use serde_json::Value;

/// The decoded query string, keeping repeated keys.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let pairs = q
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean flag (`1`, `true`, `yes`, or present without value).
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes" | "enable"))
    }
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
    NotContains,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One condition `field<op>value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// Filters: outer AND (one per `filter=` parameter), inner OR (comma-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub all: Vec<Vec<Cond>>,
}

/// Parses one condition; `None` if it has no operator.
pub fn parse_cond(s: &str) -> Option<Cond> {
    let b = s.as_bytes();
    for i in 0..b.len() {
        // Operators are ASCII: compare bytes, so a multi-byte character never splits.
        let two = b.get(i..i + 2).unwrap_or(&[]);
        let (op, len) = match two {
            b"==" => (Op::Eq, 2),
            b"!=" => (Op::Ne, 2),
            b"=@" => (Op::Contains, 2),
            b"!@" => (Op::NotContains, 2),
            b"<=" => (Op::Le, 2),
            b">=" => (Op::Ge, 2),
            _ => match b[i] {
                b'<' => (Op::Lt, 1),
                b'>' => (Op::Gt, 1),
                _ => continue,
            },
        };
        if i == 0 {
            return None;
        }
        return Some(Cond {
            field: s[..i].to_string(),
            op,
            value: s[i + len..].to_string(),
        });
    }
    None
}

impl Filter {
    /// From the `filter` parameters; `Err` with the bad condition.
    pub fn parse<'a>(params: impl Iterator<Item = &'a str>) -> Result<Self, String> {
        let mut all = Vec::new();
        for p in params {
            let mut any = Vec::new();
            for c in p.split(',') {
                any.push(parse_cond(c).ok_or_else(|| c.to_string())?);
            }
            all.push(any);
        }
        Ok(Self { all })
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether a result object passes.
    pub fn matches(&self, obj: &Value) -> bool {
        self.all
            .iter()
            .all(|any| any.iter().any(|c| cond_matches(c, obj)))
    }
}

/// The comparable strings of a JSON field (member names for lists).
fn field_values(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Number(n)) => vec![n.to_string()],
        Some(Value::Bool(b)) => vec![b.to_string()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|m| match m {
                Value::Object(o) => o
                    .iter()
                    .find(|(k, _)| k.as_str() != "q_origin_key")
                    .and_then(|(_, v)| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

fn cond_matches(c: &Cond, obj: &Value) -> bool {
    let vals = field_values(obj.get(&c.field));
    let want = c.value.to_lowercase();
    let cmp = |v: &String| -> Option<std::cmp::Ordering> {
        match (v.parse::<f64>(), c.value.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b),
            _ => Some(v.as_str().cmp(c.value.as_str())),
        }
    };
    match c.op {
        Op::Eq => vals.iter().any(|v| v.to_lowercase() == want),
        Op::Ne => !vals.iter().any(|v| v.to_lowercase() == want),
        Op::Contains => vals.iter().any(|v| v.to_lowercase().contains(&want)),
        Op::NotContains => !vals.iter().any(|v| v.to_lowercase().contains(&want)),
        Op::Lt => vals
            .iter()
            .any(|v| cmp(v) == Some(std::cmp::Ordering::Less)),
        Op::Le => vals
            .iter()
            .any(|v| cmp(v).is_some_and(|o| o != std::cmp::Ordering::Greater)),
        Op::Gt => vals
            .iter()
            .any(|v| cmp(v) == Some(std::cmp::Ordering::Greater)),
        Op::Ge => vals
            .iter()
            .any(|v| cmp(v).is_some_and(|o| o != std::cmp::Ordering::Less)),
    }
}

/// One sort key of `sort=<key>[,asc|dsc]` (the Ansible `sorters` option sends one `sort`
/// parameter per item). A comma-separated word that is not an order is a further key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sorter {
    pub field: String,
    pub descending: bool,
}

impl Sorter {
    pub fn parse<'a>(params: impl Iterator<Item = &'a str>) -> Vec<Sorter> {
        let mut out: Vec<Sorter> = Vec::new();
        for p in params {
            for w in p.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                match w.to_ascii_lowercase().as_str() {
                    "asc" => {}
                    "dsc" | "desc" => {
                        if let Some(last) = out.last_mut() {
                            last.descending = true;
                        }
                    }
                    _ => out.push(Sorter {
                        field: w.to_string(),
                        descending: false,
                    }),
                }
            }
        }
        out
    }

    /// Orders two result objects by the keys (numbers numerically, text case-insensitively,
    /// lists by their first member; missing values first).
    pub fn compare(keys: &[Sorter], a: &Value, b: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for k in keys {
            let (x, y) = (field_values(a.get(&k.field)), field_values(b.get(&k.field)));
            let (x, y) = (x.first(), y.first());
            let o = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
                    _ => x
                        .to_lowercase()
                        .cmp(&y.to_lowercase())
                        .then_with(|| x.cmp(y)),
                },
            };
            let o = if k.descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_operators() {
        assert_eq!(parse_cond("a==b").unwrap().op, Op::Eq);
        assert_eq!(parse_cond("a!=b").unwrap().op, Op::Ne);
        assert_eq!(
            parse_cond("name=@lab").unwrap(),
            Cond {
                field: "name".into(),
                op: Op::Contains,
                value: "lab".into()
            }
        );
        assert_eq!(parse_cond("a!@b").unwrap().op, Op::NotContains);
        assert_eq!(parse_cond("id<=5").unwrap().op, Op::Le);
        assert_eq!(parse_cond("id<5").unwrap().op, Op::Lt);
        assert_eq!(parse_cond("id>=5").unwrap().op, Op::Ge);
        assert_eq!(parse_cond("id>5").unwrap().value, "5");
        assert!(parse_cond("novalue").is_none());
        assert!(parse_cond("==x").is_none());
    }

    #[test]
    fn and_of_ors_over_scalars_and_lists() {
        let p = json!({"policyid": 3, "action": "accept", "schedule": "always",
                       "srcaddr": [{"name": "Lab Host", "q_origin_key": "Lab Host"}]});
        let f = |params: &[&str]| Filter::parse(params.iter().copied()).unwrap().matches(&p);
        assert!(f(&["schedule==ALWAYS", "action==accept,action==deny"]));
        assert!(!f(&["schedule==always", "action==deny"]));
        assert!(f(&["srcaddr==lab host"]));
        assert!(f(&["srcaddr=@host"]));
        assert!(f(&["srcaddr!@nope"]));
        assert!(f(&["policyid>2", "policyid<=3"]));
        assert!(!f(&["policyid>=4"]));
        assert!(f(&["action!=deny"]));
        assert!(Filter::parse(["bad"].into_iter()).is_err());
    }

    #[test]
    fn sort_keys_and_orders() {
        let s = Sorter::parse(["name,dsc", "vlanid"].into_iter());
        assert_eq!(
            s,
            [
                Sorter {
                    field: "name".into(),
                    descending: true
                },
                Sorter {
                    field: "vlanid".into(),
                    descending: false
                }
            ]
        );
        let s = Sorter::parse(["name,vlanid"].into_iter());
        assert_eq!(s.len(), 2);
        let mut v = [
            json!({"id": 10, "name": "b"}),
            json!({"id": 9, "name": "B"}),
            json!({"id": 100, "name": "a"}),
        ];
        let by_id = Sorter::parse(["id"].into_iter());
        v.sort_by(|a, b| Sorter::compare(&by_id, a, b));
        assert_eq!(v[0]["id"], 9, "numbers numerically");
        let by_name_desc = Sorter::parse(["name,dsc", "id"].into_iter());
        v.sort_by(|a, b| Sorter::compare(&by_name_desc, a, b));
        let ids: Vec<i64> = v.iter().map(|x| x["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [10, 9, 100]);
    }
}
