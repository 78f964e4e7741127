//! Serializes a configuration back to FortiOS CLI text: `show` (non-default values only) and
//! `show full-configuration` (every field), with FortiOS quoting and indentation.

use std::fmt::Write as _;

use super::lexer::quote;
use super::schema::{FieldSchema, FieldType, Schema, TableSchema};
use super::tree::{Config, Entry, Table, Value};
use super::version::FosVersion;

/// Renders the whole configuration (tables in schema order). `header` is written first.
pub fn show(cfg: &Config, version: FosVersion, full: bool, header: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(h) = header {
        out.push_str(h);
        out.push('\n');
    }
    for ts in Schema::get().tables_at(version) {
        if let Some(t) = cfg.table(&ts.path) {
            show_table(&mut out, ts, t, version, full);
        }
    }
    out
}

/// Renders one top-level table (`show firewall policy`).
pub fn show_table(out: &mut String, ts: &TableSchema, t: &Table, version: FosVersion, full: bool) {
    if ts.is_single() {
        let empty = Entry::new("");
        let e = t.get("").unwrap_or(&empty);
        let mut body = String::new();
        write_fields(&mut body, ts, e, version, full, 4);
        if body.is_empty() && !full {
            return;
        }
        let _ = writeln!(out, "config {}", ts.path);
        out.push_str(&body);
        out.push_str("end\n");
        return;
    }
    if t.is_empty() {
        return;
    }
    let _ = writeln!(out, "config {}", ts.path);
    write_entries(out, ts, t, version, full, 4);
    out.push_str("end\n");
}

fn write_entries(
    out: &mut String,
    ts: &TableSchema,
    t: &Table,
    version: FosVersion,
    full: bool,
    indent: usize,
) {
    let pad = " ".repeat(indent);
    for e in t.entries() {
        let key = if ts.int_key() {
            e.key.clone()
        } else {
            quote(&e.key)
        };
        let _ = writeln!(out, "{pad}edit {key}");
        write_fields(out, ts, e, version, full, indent + 4);
        let _ = writeln!(out, "{pad}next");
    }
}

fn write_fields(
    out: &mut String,
    ts: &TableSchema,
    e: &Entry,
    version: FosVersion,
    full: bool,
    indent: usize,
) {
    let pad = " ".repeat(indent);
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) {
            continue;
        }
        if let FieldType::Table(sub) = &f.ty {
            let t = e.table(f.name);
            match t {
                Some(t) if !t.is_empty() => {
                    let _ = writeln!(out, "{pad}config {}", f.name);
                    if sub.is_single() {
                        let empty = Entry::new("");
                        write_fields(
                            out,
                            sub,
                            t.get("").unwrap_or(&empty),
                            version,
                            full,
                            indent + 4,
                        );
                    } else {
                        write_entries(out, sub, t, version, full, indent + 4);
                    }
                    let _ = writeln!(out, "{pad}end");
                }
                _ if full && sub.is_single() => {
                    let _ = writeln!(out, "{pad}config {}", f.name);
                    write_fields(out, sub, &Entry::new(""), version, full, indent + 4);
                    let _ = writeln!(out, "{pad}end");
                }
                _ => {}
            }
            continue;
        }
        let v = e.fields.get(f.name);
        if v.is_none() && !full {
            continue;
        }
        if let Some(text) = format_value(f, v) {
            let _ = writeln!(out, "{pad}set {} {text}", f.name);
        }
    }
}

/// The CLI text of a field value (`None`: nothing to print).
pub fn format_value(f: &FieldSchema, v: Option<&Value>) -> Option<String> {
    match (v, &f.ty) {
        (Some(Value::List(l)), FieldType::Multi { .. }) => {
            Some(l.iter().map(|m| quote(m)).collect::<Vec<_>>().join(" "))
        }
        (Some(Value::List(l)), _) => Some(l.join(" ")),
        (None, FieldType::Multi { .. } | FieldType::MultiInt { .. }) => None,
        (Some(Value::Scalar(s)), ty) => Some(scalar_text(ty, s)),
        (None, ty) => {
            if f.default.is_empty() {
                match ty {
                    FieldType::Str(_) | FieldType::Ref { .. } => Some("''".into()),
                    _ => None,
                }
            } else {
                Some(scalar_text(ty, f.default))
            }
        }
        (Some(Value::Table(_)), _) => None,
    }
}

fn scalar_text(ty: &FieldType, s: &str) -> String {
    match ty {
        FieldType::Str(_) | FieldType::Ref { .. } => quote(s),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values_like_fortios() {
        let s = Schema::get();
        let pol = s.table("firewall policy", FosVersion::V6_4_4).unwrap();
        let v = FosVersion::V6_4_4;
        let f = pol.field("srcaddr", v).unwrap();
        assert_eq!(
            format_value(f, Some(&Value::List(vec!["a b".into(), "c".into()]))).unwrap(),
            "\"a b\" \"c\""
        );
        let f = pol.field("action", v).unwrap();
        assert_eq!(
            format_value(f, Some(&Value::Scalar("accept".into()))).unwrap(),
            "accept"
        );
        assert_eq!(format_value(f, None).unwrap(), "deny");
        let f = pol.field("name", v).unwrap();
        assert_eq!(format_value(f, None).unwrap(), "''");
    }
}
