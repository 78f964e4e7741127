//! What a write changes: equivalence of field values and the attribute list of the FortiOS
//! config-change logs (`cfgattr="name[old->new]..."`, event logs 0100044546/0100044547).
//!
//! Two values are the same when FortiOS would store the same thing:
//! - values are kept canonical by the engine (`10.1.1.1/32` is stored as `10.1.1.1
//!   255.255.255.255`, option words in the schema's spelling, integers without leading zeros,
//!   UUIDs lower-case, secrets hashed), so canonical scalars compare as text; an absent field
//!   is its default;
//! - member lists (`srcaddr`, `service`, `member`, `email-to`, ...) and option-word fields
//!   (`allowaccess`, `day`, `tcp-portrange`, ...) are sets: order and duplicates do not
//!   matter;
//! - sub-tables compare entry by entry, in order (entry order is meaningful there, as the
//!   order of a top-level table is).
//!
//! A write that leaves every field the same is no change at all: the entry keeps its stored
//! form (member order included), the revision does not move and nothing is logged.

use super::schema::{FieldSchema, FieldType, TableSchema};
use super::tree::{Entry, Table, Value};
use super::version::FosVersion;

/// One changed attribute (`path` is dotted inside sub-tables: `ftgd-wf.filters.3.action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrChange {
    pub path: String,
    /// `None` for an added object (`name[value]`).
    pub old: Option<String>,
    pub new: String,
}

impl AttrChange {
    fn fmt_into(&self, out: &mut String) {
        out.push_str(&self.path);
        out.push('[');
        if let Some(o) = &self.old {
            out.push_str(o);
            out.push_str("->");
        }
        out.push_str(&self.new);
        out.push(']');
    }
}

/// The `cfgattr` text: the changes one after the other, as FortiOS writes them
/// (`dstintf[port1->port2]`, `name[testconfig]srcintf[port5]`).
pub fn cfgattr(changes: &[AttrChange]) -> String {
    let mut s = String::new();
    for c in changes {
        c.fmt_into(&mut s);
    }
    s
}

fn scalar<'a>(f: &'a FieldSchema, v: Option<&'a Value>) -> &'a str {
    match v {
        Some(Value::Scalar(s)) => s,
        _ => f.default,
    }
}

fn sorted_words(s: &str) -> Vec<&str> {
    let mut w: Vec<&str> = s.split_whitespace().collect();
    w.sort_unstable();
    w.dedup();
    w
}

fn sorted_list(v: Option<&Value>) -> Vec<&str> {
    let mut l: Vec<&str> = match v {
        Some(Value::List(l)) => l.iter().map(String::as_str).collect(),
        Some(Value::Scalar(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    l.sort_unstable();
    l.dedup();
    l
}

fn table_of(v: Option<&Value>) -> Option<&Table> {
    match v {
        Some(Value::Table(t)) => Some(t),
        _ => None,
    }
}

/// The entries of a sub-table value; a single sub-table's missing entry is an empty one.
fn sub_entries<'a>(sub: &TableSchema, v: Option<&'a Value>) -> Vec<&'a Entry> {
    let Some(t) = table_of(v) else {
        return Vec::new();
    };
    let es: Vec<&Entry> = t.entries().iter().collect();
    if sub.is_single() {
        // An all-default single sub-table says the same as an absent one.
        return es.into_iter().filter(|e| !e.fields.is_empty()).collect();
    }
    es
}

/// Whether two values of field `f` are the same configuration.
pub fn same_value(
    f: &FieldSchema,
    a: Option<&Value>,
    b: Option<&Value>,
    version: FosVersion,
) -> bool {
    // The common case of a re-run: the very same stored value.
    if a == b {
        return true;
    }
    match &f.ty {
        FieldType::Multi { .. } | FieldType::MultiInt { .. } => sorted_list(a) == sorted_list(b),
        FieldType::Words(_) => sorted_words(scalar(f, a)) == sorted_words(scalar(f, b)),
        FieldType::Enum(_) => scalar(f, a).eq_ignore_ascii_case(scalar(f, b)),
        FieldType::Table(sub) => {
            let (ea, eb) = (sub_entries(sub, a), sub_entries(sub, b));
            ea.len() == eb.len()
                && ea
                    .iter()
                    .zip(&eb)
                    .all(|(x, y)| x.key == y.key && same_entry(sub, x, y, version))
        }
        _ => match (a, b) {
            (Some(Value::List(x)), Some(Value::List(y))) => x == y,
            _ => scalar(f, a) == scalar(f, b),
        },
    }
}

/// Whether two entries hold the same configuration (the key is not compared).
pub fn same_entry(ts: &TableSchema, a: &Entry, b: &Entry, version: FosVersion) -> bool {
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) {
            continue;
        }
        if !same_value(f, a.fields.get(f.name), b.fields.get(f.name), version) {
            return false;
        }
    }
    // Fields the schema does not know at this version (kept from another version).
    let known = |k: &str| ts.field(k, version).is_some();
    a.fields
        .iter()
        .filter(|(k, _)| !known(k))
        .eq(b.fields.iter().filter(|(k, _)| !known(k)))
}

/// How a value is written in `cfgattr` (secrets never appear).
fn display(f: &FieldSchema, v: Option<&Value>) -> String {
    match (&f.ty, v) {
        (FieldType::Password, Some(_)) => "*".into(),
        (FieldType::Password, None) => String::new(),
        (_, Some(Value::Scalar(s))) => s.clone(),
        (_, Some(Value::List(l))) => l.join(" "),
        (_, Some(Value::Table(t))) => keys(t),
        (FieldType::Multi { .. } | FieldType::MultiInt { .. } | FieldType::Table(_), None) => {
            String::new()
        }
        (_, None) => f.default.to_string(),
    }
}

fn keys(t: &Table) -> String {
    t.entries()
        .iter()
        .map(|e| e.key.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn sub_keys(sub: &TableSchema, v: Option<&Value>) -> Vec<String> {
    sub_entries(sub, v).iter().map(|e| e.key.clone()).collect()
}

/// The attributes that differ between `old` and `new`, in schema order.
pub fn diff_entries(
    ts: &TableSchema,
    old: &Entry,
    new: &Entry,
    version: FosVersion,
    prefix: &str,
    out: &mut Vec<AttrChange>,
) {
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) {
            continue;
        }
        let (a, b) = (old.fields.get(f.name), new.fields.get(f.name));
        if same_value(f, a, b, version) {
            continue;
        }
        let path = format!("{prefix}{}", f.name);
        match &f.ty {
            FieldType::Table(sub) if sub.is_single() => {
                let empty = Entry::new("");
                let ea = sub_entries(sub, a).first().copied().unwrap_or(&empty);
                let eb = sub_entries(sub, b).first().copied().unwrap_or(&empty);
                diff_entries(sub, ea, eb, version, &format!("{path}."), out);
            }
            FieldType::Table(sub) => {
                let (ka, kb) = (sub_keys(sub, a), sub_keys(sub, b));
                if ka != kb {
                    out.push(AttrChange {
                        path: path.clone(),
                        old: Some(ka.join(" ")),
                        new: kb.join(" "),
                    });
                }
                let ea = sub_entries(sub, a);
                for eb in sub_entries(sub, b) {
                    if let Some(x) = ea.iter().find(|x| x.key == eb.key) {
                        diff_entries(sub, x, eb, version, &format!("{path}.{}.", eb.key), out);
                    }
                }
            }
            _ => out.push(AttrChange {
                path,
                old: Some(display(f, a)),
                new: display(f, b),
            }),
        }
    }
}

/// The attributes of a new entry (`name[value]` for every field that is set), in schema
/// order; the key and the UUID are not listed (they are `cfgobj` and `uuid` of the log).
pub fn describe_added(
    ts: &TableSchema,
    e: &Entry,
    version: FosVersion,
    prefix: &str,
    out: &mut Vec<AttrChange>,
) {
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) || f.name == "uuid" {
            continue;
        }
        let Some(v) = e.fields.get(f.name) else {
            continue;
        };
        let path = format!("{prefix}{}", f.name);
        match &f.ty {
            FieldType::Table(sub) if sub.is_single() => {
                if let Some(se) = sub_entries(sub, Some(v)).first() {
                    describe_added(sub, se, version, &format!("{path}."), out);
                }
            }
            _ => out.push(AttrChange {
                path,
                old: None,
                new: display(f, Some(v)),
            }),
        }
    }
}

/// `None` if `new` holds the same configuration as `old`; otherwise `new` with every field
/// that is the same as in `old` taken from `old` (so an equivalent member list keeps its
/// stored order), and the changed attributes.
pub fn merge_edit(
    ts: &TableSchema,
    old: &Entry,
    mut new: Entry,
    version: FosVersion,
) -> Option<(Entry, Vec<AttrChange>)> {
    if same_entry(ts, old, &new, version) {
        return None;
    }
    let mut changes = Vec::new();
    diff_entries(ts, old, &new, version, "", &mut changes);
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) {
            continue;
        }
        if same_value(f, old.fields.get(f.name), new.fields.get(f.name), version) {
            match old.fields.get(f.name) {
                Some(v) => {
                    new.fields.insert(f.name.to_string(), v.clone());
                }
                None => {
                    new.fields.remove(f.name);
                }
            }
        }
    }
    Some((new, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::Schema;

    const V: FosVersion = FosVersion::V6_4_4;

    fn e(fields: &[(&str, Value)]) -> Entry {
        let mut e = Entry::new("1");
        for (k, v) in fields {
            e.fields.insert(k.to_string(), v.clone());
        }
        e
    }
    fn s(x: &str) -> Value {
        Value::Scalar(x.into())
    }
    fn l(x: &[&str]) -> Value {
        Value::List(x.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn sets_words_defaults_and_case() {
        let pol = Schema::get().table("firewall policy", V).unwrap();
        let a = e(&[
            ("srcaddr", l(&["a", "b"])),
            ("action", s("accept")),
            ("logtraffic", s("utm")),
        ]);
        let b = e(&[("srcaddr", l(&["b", "a"])), ("action", s("ACCEPT"))]);
        assert!(same_entry(pol, &a, &b, V), "set order, case, default");
        assert!(merge_edit(pol, &a, b, V).is_none());
        let c = e(&[
            ("srcaddr", l(&["a", "c"])),
            ("action", s("deny")),
            ("service", l(&["ALL"])),
        ]);
        let a2 = e(&[
            ("srcaddr", l(&["a", "b"])),
            ("action", s("accept")),
            ("service", l(&["ALL"])),
        ]);
        let c2 = e(&[
            ("srcaddr", l(&["b", "a"])),
            ("action", s("deny")),
            ("service", l(&["ALL"])),
        ]);
        let (merged, ch) = merge_edit(pol, &a2, c2, V).unwrap();
        assert_eq!(cfgattr(&ch), "action[accept->deny]");
        assert_eq!(
            merged.list("srcaddr"),
            ["a", "b"],
            "an equivalent list keeps its order"
        );
        let (merged, ch) = merge_edit(pol, &a, c, V).unwrap();
        assert_eq!(
            cfgattr(&ch),
            "srcaddr[a b->a c]action[accept->deny]service[->ALL]"
        );
        assert_eq!(merged.scalar("action"), Some("deny"));
        let intf = Schema::get().table("system interface", V).unwrap();
        let x = e(&[("allowaccess", s("ping https ssh"))]);
        let y = e(&[("allowaccess", s("ssh ping https"))]);
        assert!(same_entry(intf, &x, &y, V));
    }

    #[test]
    fn sub_tables_and_added_objects() {
        let wf = Schema::get().table("webfilter profile", V).unwrap();
        let mk = |action: &str, extra: bool| {
            let mut ft = Table::new();
            let mut f1 = Entry::new("1");
            f1.fields.insert("category".into(), s("26"));
            f1.fields.insert("action".into(), s(action));
            ft.upsert(f1);
            if extra {
                ft.upsert(Entry::new("2"));
            }
            let mut single = Entry::new("");
            single.fields.insert("filters".into(), Value::Table(ft));
            let mut t = Table::new();
            t.upsert(single);
            e(&[("ftgd-wf", Value::Table(t))])
        };
        let (a, b) = (mk("block", false), mk("monitor", true));
        assert!(same_entry(wf, &a, &mk("block", false), V));
        let mut ch = Vec::new();
        diff_entries(wf, &a, &b, V, "", &mut ch);
        assert_eq!(
            cfgattr(&ch),
            "ftgd-wf.filters[1->1 2]ftgd-wf.filters.1.action[block->monitor]"
        );
        let pol = Schema::get().table("firewall policy", V).unwrap();
        let mut ch = Vec::new();
        let mut n = e(&[
            ("name", s("testconfig")),
            ("srcintf", l(&["port5"])),
            ("uuid", s("961e8b5a-1603-51f0-e0c5-204b0b600edc")),
        ]);
        n.key = "8".into();
        describe_added(pol, &n, V, "", &mut ch);
        assert_eq!(cfgattr(&ch), "name[testconfig]srcintf[port5]");
    }
}
