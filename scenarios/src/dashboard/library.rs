//! The scenario library (`scenarios/library/*.toml`), embedded in the binary so the dashboard
//! offers it on a machine that has only `fortilab`.

use serde_json::{json, Value};

use crate::labdef::LabDef;
use crate::scenario::{self, Step};

/// (file name, text) of every library scenario.
pub const LIBRARY: &[(&str, &str)] = &[
    (
        "seed-flow.toml",
        include_str!("../../library/seed-flow.toml"),
    ),
    (
        "seed-flow-7.0.toml",
        include_str!("../../library/seed-flow-7.0.toml"),
    ),
    (
        "ack-retrigger.toml",
        include_str!("../../library/ack-retrigger.toml"),
    ),
    (
        "release-access-code.toml",
        include_str!("../../library/release-access-code.toml"),
    ),
    (
        "release-ems.toml",
        include_str!("../../library/release-ems.toml"),
    ),
    ("ban-ip.toml", include_str!("../../library/ban-ip.toml")),
    (
        "two-endpoints.toml",
        include_str!("../../library/two-endpoints.toml"),
    ),
    (
        "benign-only.toml",
        include_str!("../../library/benign-only.toml"),
    ),
    (
        "ioc-level-high.toml",
        include_str!("../../library/ioc-level-high.toml"),
    ),
    (
        "ioc-level-medium.toml",
        include_str!("../../library/ioc-level-medium.toml"),
    ),
    (
        "realistic-x100.toml",
        include_str!("../../library/realistic-x100.toml"),
    ),
    (
        "faz-unreachable-during-eicar.toml",
        include_str!("../../library/faz-unreachable-during-eicar.toml"),
    ),
    (
        "ems-unreachable-at-stitch.toml",
        include_str!("../../library/ems-unreachable-at-stitch.toml"),
    ),
    (
        "slow-log-link.toml",
        include_str!("../../library/slow-log-link.toml"),
    ),
    (
        "snapshot-restore.toml",
        include_str!("../../library/snapshot-restore.toml"),
    ),
];

/// FortiGate configurations the library names (`config = "../labs/…"`).
const LAB_CONFIGS: &[(&str, &str)] = &[
    (
        "seed-fortigate.conf",
        include_str!("../../labs/seed-fortigate.conf"),
    ),
    (
        "seed-fortigate-7.0.conf",
        include_str!("../../labs/seed-fortigate-7.0.conf"),
    ),
    (
        "seed-fortigate-ioc-medium.conf",
        include_str!("../../labs/seed-fortigate-ioc-medium.conf"),
    ),
    (
        "ban-ip-fortigate.conf",
        include_str!("../../labs/ban-ip-fortigate.conf"),
    ),
];

/// A library scenario, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub file: String,
    pub name: String,
    pub description: Option<String>,
    pub def: LabDef,
    pub steps: Vec<Step>,
}

/// Parses one library file; FortiGate configurations it names come from the embedded copies.
pub fn parse(file: &str, text: &str) -> Result<Entry, String> {
    let mut def = LabDef::parse(file, text).map_err(|e| e.to_string())?;
    let steps = scenario::parse_steps(&def, text).map_err(|e| e.to_string())?;
    if let Some(p) = def.fortigate.config.clone() {
        let base = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match LAB_CONFIGS.iter().find(|(n, _)| *n == base) {
            Some((_, t)) => def.fortigate.config_text = Some(t.to_string()),
            None => {
                return Err(format!(
                    "{file}: FortiGate configuration {} is not embedded",
                    p.display()
                ))
            }
        }
    }
    let name = def
        .scenario
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| file.trim_end_matches(".toml").to_string());
    let description = def.scenario.as_ref().and_then(|s| s.description.clone());
    Ok(Entry {
        file: file.to_string(),
        name,
        description,
        def,
        steps,
    })
}

/// The library scenario stored under `file`.
pub fn get(file: &str) -> Result<Entry, String> {
    let (f, t) = LIBRARY
        .iter()
        .find(|(f, _)| *f == file || f.trim_end_matches(".toml") == file)
        .ok_or_else(|| format!("no library scenario {file:?}"))?;
    parse(f, t)
}

/// The library as JSON for the dashboard: file, name, description, steps.
pub fn list() -> Value {
    let mut out = Vec::new();
    for (f, t) in LIBRARY {
        match parse(f, t) {
            Ok(e) => out.push(json!({
                "file": e.file, "name": e.name, "description": e.description,
                "steps": e.steps.iter().map(|s| json!({"index": s.index, "name": s.name, "expect": s.kind.is_expectation()})).collect::<Vec<_>>(),
            })),
            Err(err) => out.push(json!({"file": f, "name": f, "error": err, "steps": []})),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_library_is_the_whole_directory_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("library");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = LIBRARY.iter().map(|(f, _)| f.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new library files to dashboard/library.rs"
        );
        for (f, t) in LIBRARY {
            let e = parse(f, t).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!e.steps.is_empty(), "{f}");
            // The same text from disk names the same number of steps.
            let (_, steps) = crate::scenario::load(&dir.join(f)).unwrap();
            assert_eq!(steps.len(), e.steps.len(), "{f}");
        }
        assert!(get("seed-flow").unwrap().name.contains("seed flow"));
        let v = list();
        assert_eq!(v.as_array().unwrap().len(), LIBRARY.len());
    }
}
