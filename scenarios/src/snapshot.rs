//! Lab snapshots (issue 17 item 3): the whole lab — every device's configuration and state and
//! the lab clock — saved under `<data-dir>/snapshots/NAME/` and restored into the running lab.
//!
//! How (see docs/architecture.md, "Snapshots"): a **save** is taken in place. The orchestrator
//! holds the links between the devices (no byte and no new connection passes), notes the lab
//! time (the cut), asks every device to write its state into `snapshots/.NAME.tmpPID/<label>/`
//! (`POST /_lab/snapshot`, [`fortilab_core::snapshot`]: each device writes under its own locks
//! while it keeps serving; endpoints first, then the FortiGate, then FortiAnalyzer and EMS),
//! copies the lab Internet's data directory, lets the links go and renames the directory into
//! place. Nothing restarts: consoles, sessions and event streams stay open. A **restore**
//! replaces state, so it stops every device in dependency order, replaces each data directory
//! with the snapshot's and starts the devices again on their former ports with the lab clock at
//! the snapshot's lab time. The lab CA, the secrets file, the lab maps and the link relays are
//! the running lab's and are left alone, so URLs, tokens and passwords stay valid.
//!
//! This module holds the parts without processes (names, the metadata file, the snapshot
//! directory, copying directories); [`crate::lab::Lab::snapshot_save`] and
//! [`crate::lab::Lab::snapshot_restore`] drive the devices.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a lab's snapshots live, under its data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// The metadata file of a snapshot.
pub const META_FILE: &str = "snapshot.json";

/// Save or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOp {
    Save,
    Restore,
}

impl SnapshotOp {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotOp::Save => "save",
            SnapshotOp::Restore => "restore",
        }
    }

    pub fn past(self) -> &'static str {
        match self {
            SnapshotOp::Save => "saved",
            SnapshotOp::Restore => "restored",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotOp> {
        match s {
            "save" => Some(SnapshotOp::Save),
            "restore" => Some(SnapshotOp::Restore),
            _ => None,
        }
    }
}

/// What a saved or restored snapshot is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// The lab's name (`[lab] name`) and seed: a snapshot restores only into the same lab.
    pub lab: String,
    pub seed: u64,
    /// Lab time of the cut, Unix milliseconds, and as the lab shows it.
    pub lab_time_ms: i64,
    pub lab_time: String,
    /// Real time the snapshot was saved, Unix milliseconds.
    pub saved_at_ms: i64,
    /// The device processes (data directory labels) it holds.
    pub devices: Vec<String>,
    /// Bytes of device state.
    pub bytes: u64,
    /// Real time the operation took (save or restore, the devices' restart included), ms.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Where that time went, ms. Save: `pause` (links held), `save` (the devices writing
    /// their state), `finish` (metadata, rename). Restore: `quiesce` (devices stopped), `copy`
    /// (files), `restart` (devices ready and the fabric settled).
    #[serde(default)]
    pub phases_ms: std::collections::BTreeMap<String, u64>,
}

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "bad snapshot name {0:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    BadName(String),
    #[error("no snapshot named {name:?} (in {dir})")]
    NotFound { name: String, dir: String },
    #[error("snapshot {name:?} is of lab {lab:?} (seed {seed}), not of this lab")]
    OtherLab {
        name: String,
        lab: String,
        seed: u64,
    },
    #[error("snapshot {name:?} lacks device {device:?}")]
    Incomplete { name: String, device: String },
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// A snapshot name is a single path component of safe characters.
pub fn validate_name(name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadName(name.to_string()))
    }
}

/// The directory of snapshot `name` of the lab in `data_dir`.
pub fn snapshot_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(SNAPSHOTS_DIR).join(name)
}

/// Copies a directory tree (files and directories; symbolic links as links). Returns the
/// bytes copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<u64, SnapshotError> {
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let entry = entry.map_err(|e| io(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| io(&from, e))?;
        if ft.is_dir() {
            bytes += copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(|e| io(&from, e))?;
            std::os::unix::fs::symlink(target, &to).map_err(|e| io(&to, e))?;
        } else if ft.is_file() {
            bytes += std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        }
        // Sockets and other special files are not state.
    }
    Ok(bytes)
}

/// Starts writing snapshot `name`: a new private temporary directory under
/// `<data_dir>/snapshots/` that [`finish_snapshot`] renames into place (so an existing
/// snapshot of the same name is replaced only by a complete one).
pub fn begin_snapshot(data_dir: &Path, name: &str) -> Result<PathBuf, SnapshotError> {
    validate_name(name)?;
    let root = data_dir.join(SNAPSHOTS_DIR);
    fortilab_core::secrets::create_private_dir(&root).map_err(|e| io(&root, e))?;
    let tmp = root.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    fortilab_core::secrets::create_private_dir(&tmp).map_err(|e| io(&tmp, e))?;
    Ok(tmp)
}

/// Completes a snapshot begun with [`begin_snapshot`] whose device directories `labels` are
/// written in `tmp`: fills in `info.bytes` and `info.devices`, writes the metadata and renames
/// it into place.
pub fn finish_snapshot(
    data_dir: &Path,
    tmp: &Path,
    labels: &[String],
    info: &mut SnapshotInfo,
) -> Result<PathBuf, SnapshotError> {
    for label in labels {
        if !tmp.join(label).is_dir() {
            return Err(SnapshotError::Incomplete {
                name: info.name.clone(),
                device: label.clone(),
            });
        }
    }
    info.bytes = fortilab_core::snapshot::dir_bytes(tmp);
    info.devices = labels.to_vec();
    let meta = serde_json::to_vec_pretty(info).map_err(|e| io(tmp, e))?;
    std::fs::write(tmp.join(META_FILE), meta).map_err(|e| io(tmp, e))?;
    let dst = data_dir.join(SNAPSHOTS_DIR).join(&info.name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| io(&dst, e))?;
    }
    std::fs::rename(tmp, &dst).map_err(|e| io(&dst, e))?;
    Ok(dst)
}

/// Writes a snapshot by copying the device data directories `labels` under `data_dir` (of
/// stopped devices; a running lab's devices write their own, see `Lab::snapshot_save`).
/// Fills in `info.bytes` and `info.devices`.
pub fn write_snapshot(
    data_dir: &Path,
    labels: &[String],
    info: &mut SnapshotInfo,
) -> Result<PathBuf, SnapshotError> {
    let tmp = begin_snapshot(data_dir, &info.name)?;
    for label in labels {
        let src = data_dir.join(label);
        if src.is_dir() {
            copy_tree(&src, &tmp.join(label))?;
        } else {
            std::fs::create_dir_all(tmp.join(label)).map_err(|e| io(&tmp, e))?;
        }
    }
    finish_snapshot(data_dir, &tmp, labels, info)
}

/// Reads a snapshot's metadata and checks it belongs to lab `lab`/`seed` and holds every
/// device of `labels`.
pub fn read_snapshot(
    data_dir: &Path,
    name: &str,
    lab: &str,
    seed: u64,
    labels: &[String],
) -> Result<SnapshotInfo, SnapshotError> {
    validate_name(name)?;
    let dir = snapshot_dir(data_dir, name);
    let meta = dir.join(META_FILE);
    let text = std::fs::read(&meta).map_err(|_| SnapshotError::NotFound {
        name: name.to_string(),
        dir: data_dir.join(SNAPSHOTS_DIR).display().to_string(),
    })?;
    let info: SnapshotInfo = serde_json::from_slice(&text).map_err(|e| io(&meta, e))?;
    if info.lab != lab || info.seed != seed {
        return Err(SnapshotError::OtherLab {
            name: name.to_string(),
            lab: info.lab,
            seed: info.seed,
        });
    }
    for l in labels {
        if !dir.join(l).is_dir() {
            return Err(SnapshotError::Incomplete {
                name: name.to_string(),
                device: l.clone(),
            });
        }
    }
    Ok(info)
}

/// Replaces the device data directories `labels` under `data_dir` with the snapshot's.
pub fn restore_dirs(data_dir: &Path, name: &str, labels: &[String]) -> Result<u64, SnapshotError> {
    let dir = snapshot_dir(data_dir, name);
    let mut bytes = 0;
    for l in labels {
        let dst = data_dir.join(l);
        if dst.exists() {
            std::fs::remove_dir_all(&dst).map_err(|e| io(&dst, e))?;
        }
        bytes += copy_tree(&dir.join(l), &dst)?;
        // Data directories are private (0700), as the devices create them.
        let _ = fortilab_core::secrets::create_private_dir(&dst);
    }
    Ok(bytes)
}

/// The snapshots of the lab in `data_dir`, by name.
pub fn list(data_dir: &Path) -> Vec<SnapshotInfo> {
    let mut out: Vec<SnapshotInfo> = std::fs::read_dir(data_dir.join(SNAPSHOTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read(e.path().join(META_FILE)).ok())
        .filter_map(|t| serde_json::from_slice(&t).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Replaces the values of the lab clock's flags (`--clock-epoch` ...) in a device's arguments.
pub fn set_clock_args(args: &mut Vec<String>, clock: &fortilab_core::LabClock) {
    let new = clock.to_args();
    for pair in new.chunks(2) {
        let [flag, value] = pair else { continue };
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => args[i + 1] = value.clone(),
            _ => {
                args.push(flag.clone());
                args.push(value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> SnapshotInfo {
        SnapshotInfo {
            name: name.into(),
            lab: "seed".into(),
            seed: 7,
            lab_time_ms: 1_600_000_000_000,
            lab_time: "2020-09-13 12:26:40".into(),
            saved_at_ms: 1,
            devices: vec![],
            bytes: 0,
            elapsed_ms: 0,
            phases_ms: Default::default(),
        }
    }

    #[test]
    fn names_are_one_safe_path_component() {
        for ok in ["a", "task-1", "before_ack.v2", &"x".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_and_restore_directories_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let labels = vec!["fortigate".to_string(), "ems".to_string()];
        std::fs::create_dir_all(data.join("fortigate/logqueue")).unwrap();
        std::fs::write(data.join("fortigate/fgt.conf"), "config A").unwrap();
        std::fs::write(data.join("fortigate/logqueue/q1"), "queued").unwrap();
        std::fs::create_dir_all(data.join("ems")).unwrap();
        std::fs::write(data.join("ems/ems-state.json"), "{}").unwrap();

        let mut i = info("one");
        let dir = write_snapshot(data, &labels, &mut i).unwrap();
        assert_eq!(dir, snapshot_dir(data, "one"));
        assert_eq!(i.bytes, 8 + 6 + 2);
        assert_eq!(i.devices, labels);

        // The lab moves on; the restore brings the saved files back and drops new ones.
        std::fs::write(data.join("fortigate/fgt.conf"), "config B").unwrap();
        std::fs::write(data.join("fortigate/logqueue/q2"), "later").unwrap();
        std::fs::remove_file(data.join("ems/ems-state.json")).unwrap();
        let back = read_snapshot(data, "one", "seed", 7, &labels).unwrap();
        assert_eq!(back, i);
        restore_dirs(data, "one", &labels).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("fortigate/fgt.conf")).unwrap(),
            "config A"
        );
        assert!(!data.join("fortigate/logqueue/q2").exists());
        assert_eq!(
            std::fs::read_to_string(data.join("ems/ems-state.json")).unwrap(),
            "{}"
        );
        assert_eq!(list(data), vec![i.clone()]);

        // Saving again under the same name replaces it; no temporary directory is left.
        let mut i2 = info("one");
        i2.lab_time_ms += 5;
        write_snapshot(data, &labels, &mut i2).unwrap();
        assert_eq!(list(data).len(), 1);
        assert_eq!(list(data)[0].lab_time_ms, i.lab_time_ms + 5);
        let names: Vec<_> = std::fs::read_dir(data.join(SNAPSHOTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["one"]);
    }

    #[test]
    fn restore_refuses_unknown_foreign_and_incomplete_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let labels = vec!["fortigate".to_string()];
        assert!(matches!(
            read_snapshot(data, "none", "seed", 7, &labels),
            Err(SnapshotError::NotFound { .. })
        ));
        write_snapshot(data, &labels, &mut info("s")).unwrap();
        assert!(matches!(
            read_snapshot(data, "s", "other", 7, &labels),
            Err(SnapshotError::OtherLab { .. })
        ));
        assert!(matches!(
            read_snapshot(data, "s", "seed", 8, &labels),
            Err(SnapshotError::OtherLab { .. })
        ));
        let more = vec!["fortigate".to_string(), "endpoints-2".to_string()];
        assert!(matches!(
            read_snapshot(data, "s", "seed", 7, &more),
            Err(SnapshotError::Incomplete { .. })
        ));
        assert!(matches!(
            read_snapshot(data, "../x", "seed", 7, &labels),
            Err(SnapshotError::BadName(_))
        ));
    }

    #[test]
    fn clock_flags_are_replaced_in_place() {
        let mut args: Vec<String> = ["--seed", "1"].iter().map(|s| s.to_string()).collect();
        let c1 = fortilab_core::LabClock::new(1_000, 2_000, 10.0, 60);
        args.extend(c1.to_args());
        let c2 = fortilab_core::LabClock::new(5_000, 9_000, 10.0, 60);
        set_clock_args(&mut args, &c2);
        let mut want: Vec<String> = ["--seed", "1"].iter().map(|s| s.to_string()).collect();
        want.extend(c2.to_args());
        assert_eq!(args, want);
    }
}
