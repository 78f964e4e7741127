//! The configuration tree: tables of entries of fields, keyed by the CLI names.
//!
//! Values are kept as FortiOS would print them (`set subnet 10.0.0.0 255.0.0.0` is the scalar
//! `"10.0.0.0 255.0.0.0"`); types, defaults and order come from the [`super::schema`].

use std::collections::{BTreeMap, HashMap};

/// A field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A single value (string, number, enum, address) in its CLI form.
    Scalar(String),
    /// A multi-value field (`set srcaddr "a" "b"`), in order.
    List(Vec<String>),
    /// A sub-table (`config filters` inside an entry).
    Table(Table),
}

/// One table entry (`edit <key>`), or the single entry of a `config system global`-style table
/// (key `""`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub key: String,
    pub fields: BTreeMap<String, Value>,
}

impl Entry {
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            fields: BTreeMap::new(),
        }
    }

    /// The scalar value of `field`, if set.
    pub fn scalar(&self, field: &str) -> Option<&str> {
        match self.fields.get(field) {
            Some(Value::Scalar(s)) => Some(s),
            _ => None,
        }
    }

    /// The members of a multi-value field (empty if unset).
    pub fn list(&self, field: &str) -> &[String] {
        match self.fields.get(field) {
            Some(Value::List(v)) => v,
            _ => &[],
        }
    }

    /// A sub-table, if set.
    pub fn table(&self, field: &str) -> Option<&Table> {
        match self.fields.get(field) {
            Some(Value::Table(t)) => Some(t),
            _ => None,
        }
    }
}

/// An ordered table of entries with an index by key (10,000-policy configurations stay fast).
#[derive(Debug, Clone, Default)]
pub struct Table {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}
impl Eq for Table {}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.index.get(key).map(|&i| &self.entries[i])
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        match self.index.get(key) {
            Some(&i) => Some(&mut self.entries[i]),
            None => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Inserts or replaces (in place) an entry.
    pub fn upsert(&mut self, entry: Entry) {
        match self.index.get(&entry.key) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(entry.key.clone(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.index.remove(key)?;
        let e = self.entries.remove(i);
        self.reindex();
        Some(e)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    /// Moves `key` before or after `target`.
    pub fn move_entry(&mut self, key: &str, before: bool, target: &str) -> bool {
        if key == target {
            return self.contains(key);
        }
        let Some(i) = self.position(key) else {
            return false;
        };
        if !self.contains(target) {
            return false;
        }
        let e = self.entries.remove(i);
        self.reindex();
        let t = self.position(target).unwrap_or(self.entries.len());
        let at = if before { t } else { t + 1 };
        self.entries.insert(at, e);
        self.reindex();
        true
    }

    /// Renames an entry in place.
    pub fn rename(&mut self, key: &str, new_key: &str) -> bool {
        let Some(i) = self.position(key) else {
            return false;
        };
        self.entries[i].key = new_key.to_string();
        self.reindex();
        true
    }

    /// The largest integer key (for `edit 0`).
    pub fn max_int_key(&self) -> u64 {
        self.entries
            .iter()
            .filter_map(|e| e.key.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.index.insert(e.key.clone(), i);
        }
    }
}

impl FromIterator<Entry> for Table {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Self {
        let mut t = Table::new();
        for e in iter {
            t.upsert(e);
        }
        t
    }
}

/// The whole configuration: tables by schema path (`"firewall policy"`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub tables: BTreeMap<String, Table>,
}

/// Equality ignores empty tables (an absent table and an empty one say the same).
impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        let a = self.tables.iter().filter(|(_, t)| !t.is_empty());
        let b = other.tables.iter().filter(|(_, t)| !t.is_empty());
        a.eq(b)
    }
}
impl Eq for Config {}

impl Config {
    pub fn table(&self, path: &str) -> Option<&Table> {
        self.tables.get(path)
    }

    pub fn table_mut(&mut self, path: &str) -> &mut Table {
        self.tables.entry(path.to_string()).or_default()
    }

    /// The single entry of a `config system global`-style table.
    pub fn single(&self, path: &str) -> Option<&Entry> {
        self.tables.get(path).and_then(|t| t.get(""))
    }

    pub fn entry(&self, path: &str, key: &str) -> Option<&Entry> {
        self.tables.get(path).and_then(|t| t.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(keys: &[&str]) -> Table {
        keys.iter().map(|k| Entry::new(*k)).collect()
    }

    fn keys(t: &Table) -> Vec<&str> {
        t.entries().iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn move_rename_remove_keep_the_index() {
        let mut tb = t(&["1", "2", "3", "4"]);
        assert!(tb.move_entry("4", true, "2"));
        assert_eq!(keys(&tb), ["1", "4", "2", "3"]);
        assert!(tb.move_entry("1", false, "3"));
        assert_eq!(keys(&tb), ["4", "2", "3", "1"]);
        assert!(!tb.move_entry("9", true, "1"));
        assert!(tb.rename("2", "7"));
        assert_eq!(tb.get("7").unwrap().key, "7");
        assert!(tb.remove("3").is_some());
        assert_eq!(keys(&tb), ["4", "7", "1"]);
        assert_eq!(tb.position("1"), Some(2));
        assert_eq!(tb.max_int_key(), 7);
    }
}
