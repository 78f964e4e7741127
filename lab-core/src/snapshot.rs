//! In-place lab snapshots (issue 17): the device side of `POST /_lab/snapshot`.
//!
//! The orchestrator takes a snapshot of a running lab without stopping it: it holds the links
//! between the devices, asks every device to write its state into a new directory (JSON body
//! `{"dir": "/absolute/path"}`), and lets the links go. Each device writes its state under its
//! own locks while it keeps serving (the FortiGate its configuration, log queue and in-memory
//! state; FortiAnalyzer a copy of its SQLite store made with `VACUUM INTO`; EMS its state
//! document; the endpoints their agents' state and log queues) and answers
//! `{"ok": true, "dir", "bytes", "ms"}`. The directory has the layout of the device's data
//! directory, so a restore is "replace the data directory, start the device".
//!
//! The target must be an absolute path without `..` whose parent exists and which does not
//! exist yet: the device creates it (0700) and never writes over anything. A failed save
//! removes what it wrote.

use std::future::Future;
use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The lab route every device serves.
pub const ROUTE: &str = "/_lab/snapshot";

/// Checks the requested target directory and creates it (0700).
pub fn create_target(dir: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(format!(
            "snapshot directory {dir:?} is not an absolute path"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("snapshot directory {dir:?} contains '.' or '..'"));
    }
    let parent = path
        .parent()
        .ok_or_else(|| format!("snapshot directory {dir:?} has no parent"))?;
    if !parent.is_dir() {
        return Err(format!(
            "the parent of snapshot directory {dir:?} does not exist"
        ));
    }
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("snapshot directory {dir:?} exists already")
        }
        _ => format!("snapshot directory {dir:?}: {e}"),
    })?;
    Ok(path)
}

/// Copies the data directory `src` into `dst` (which exists), leaving out the top-level
/// entries named in `skip` (the device writes those itself, from memory) and temporary files
/// (names containing `.tmp`). Directories are copied recursively, symbolic links as links,
/// other special files not at all. Returns the bytes copied.
pub fn copy_dir_except(src: &Path, dst: &Path, skip: &[&str]) -> std::io::Result<u64> {
    let mut bytes = 0;
    let entries = match std::fs::read_dir(src) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        if skip.iter().any(|s| *s == name_s) || name_s.contains(".tmp") {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        let ft = entry.file_type()?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to)?;
            bytes += copy_dir_except(&from, &to, &[])?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            match std::fs::copy(&from, &to) {
                Ok(n) => bytes += n,
                // A file removed while we copy (a log segment acknowledged meanwhile).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(bytes)
}

/// The bytes of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The `POST /_lab/snapshot` handler's body: parses `{"dir": ...}`, creates the directory,
/// runs `save` on it, and answers. A failed save removes the directory and answers 500 with
/// the error.
pub async fn handle<F, Fut>(body: &[u8], save: F) -> Response
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let bad = |status: StatusCode, msg: String| {
        (status, Json(json!({"ok": false, "error": msg}))).into_response()
    };
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let Some(dir) = v.get("dir").and_then(|d| d.as_str()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "the body needs \"dir\": the absolute path of a new directory".into(),
        );
    };
    let path = match create_target(dir) {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let started = std::time::Instant::now();
    match save(path.clone()).await {
        Ok(()) => {
            let bytes = dir_bytes(&path);
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(dir = %path.display(), bytes, ms, "lab snapshot written");
            Json(json!({"ok": true, "dir": dir, "bytes": bytes, "ms": ms})).into_response()
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&path);
            tracing::warn!(dir = %path.display(), error = %e, "lab snapshot failed");
            bad(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_new_absolute_directories() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("snap");
        let p = create_target(ok.to_str().unwrap()).unwrap();
        assert!(p.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        assert!(create_target(ok.to_str().unwrap())
            .unwrap_err()
            .contains("exists already"));
        assert!(create_target("relative/dir").is_err());
        let dotdot = format!("{}/x/../y", d.path().display());
        assert!(create_target(&dotdot).is_err());
        let orphan = d.path().join("no/such/parent");
        assert!(create_target(orphan.to_str().unwrap()).is_err());
    }

    #[test]
    fn the_data_directory_is_copied_without_the_skipped_and_temporary_entries() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir_all(src.join("store")).unwrap();
        std::fs::write(src.join("key"), "k").unwrap();
        std::fs::write(src.join("sub/a"), "aa").unwrap();
        std::fs::write(src.join("store/logs.db"), "db").unwrap();
        std::fs::write(src.join("fgt.conf.tmp42"), "half").unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        assert_eq!(copy_dir_except(&src, &dst, &["store"]).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(dst.join("sub/a")).unwrap(), "aa");
        assert!(dst.join("key").exists());
        assert!(!dst.join("store").exists());
        assert!(!dst.join("fgt.conf.tmp42").exists());
        assert_eq!(dir_bytes(&dst), 3);
        // A data directory that does not exist yet copies nothing.
        assert_eq!(
            copy_dir_except(&d.path().join("none"), &dst, &[]).unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn the_handler_answers_and_cleans_up_after_a_failed_save() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s1");
        let body = serde_json::to_vec(&json!({"dir": dir})).unwrap();
        let r = handle(&body, |p| async move {
            std::fs::write(p.join("state"), "x").map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(std::fs::read_to_string(dir.join("state")).unwrap(), "x");

        let dir2 = d.path().join("s2");
        let body = serde_json::to_vec(&json!({"dir": dir2})).unwrap();
        let r = handle(&body, |p| async move {
            std::fs::write(p.join("part"), "x").unwrap();
            Err("disk full".to_string())
        })
        .await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!dir2.exists());

        assert_eq!(
            handle(b"{}", |_| async { Ok(()) }).await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handle(b"not json", |_| async { Ok(()) }).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
}
