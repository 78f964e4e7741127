//! The ready report: a JSON file written atomically once a device (or the lab) serves. It
//! holds credentials and the lab token, so it is created with mode 0600.

use std::path::Path;

/// Writes `value` to `path` atomically (temporary file created 0600 + rename), so a reader
/// polling for the file never sees half of it and nobody else can read it.
pub fn write_ready(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    crate::secrets::write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/ready.json");
        super::write_ready(&p, &serde_json::json!({"a": 1})).unwrap();
        super::write_ready(&p, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
