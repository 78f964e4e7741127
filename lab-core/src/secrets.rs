//! Lab secrets (ARCHITECTURE.md sections 6 and 8): credentials, API keys and the lab token.
//!
//! The lab seed drives identities, topology and event order; secrets do not. By default every
//! credential (admin passwords, the FortiGate API token, the FortiAnalyzer API key, the EMS
//! admin password) comes from the operating system's CSPRNG, per lab, and is kept in a
//! `secrets.json` (mode 0600) so that a device restarted on the same data directory keeps its
//! credentials. `SecretsMode::Seeded` (`[lab] secrets = "seeded"`, `--secrets seeded`) is the
//! opt-in for fixed credentials derived from the seed. Session ids, CSRF tokens and EMS access
//! codes are always drawn from the CSPRNG ([`random_token`], [`csprng`]): they must never repeat,
//! not even across restarts of a seeded lab.
//!
//! The lab token guards every `/_lab/` route (see [`crate::http`]): a device takes it from
//! the environment variable [`LAB_TOKEN_ENV`], else from the secrets file it was given
//! (`--secrets-file`, written by the orchestrator), else from its own `secrets.json`, else it
//! generates one (and reports it in its ready file as `lab_token`). It is never passed on the
//! command line, where `ps` would show it.
//!
//! Files that hold secrets are written with [`write_private`]: created with mode 0600 (never
//! chmod-ed afterwards) and renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::Rng;

/// The request header that carries the lab token.
pub const LAB_TOKEN_HEADER: &str = "x-fortilab-token";

/// The environment variable a device reads its lab token from (before any file).
pub const LAB_TOKEN_ENV: &str = "FORTILAB_LAB_TOKEN";

/// The key of the lab token in a secrets file and in a ready report.
pub const LAB_TOKEN_KEY: &str = "lab_token";

/// The file name of a device's own secrets under its data directory.
pub const SECRETS_FILE: &str = "secrets.json";

/// Every credential label a lab's devices ask for, with its length: the orchestrator creates
/// them all in the lab's secrets file before it starts a device, so a lab reset (which wipes the
/// devices' data directories) keeps every password and key.
pub const CREDENTIALS: &[(&str, usize)] = &[
    ("fortigate/api-token", 30),
    ("fortigate/admin-password", 16),
    ("faz/admin-password", 16),
    ("faz/api-key", 30),
    ("ems/admin-password", 12),
];

/// Where a lab's credentials come from.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SecretsMode {
    /// From the OS CSPRNG, per lab (the default).
    #[default]
    Random,
    /// Derived from the lab seed: the same seed gives the same credentials.
    Seeded,
}

impl SecretsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretsMode::Random => "random",
            SecretsMode::Seeded => "seeded",
        }
    }
}

/// Why secrets could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a JSON object of strings: {message}")]
    Format { path: PathBuf, message: String },
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The operating system's CSPRNG.
pub fn csprng() -> rand::rngs::OsRng {
    rand::rngs::OsRng
}

/// `n` alphanumerics from the OS CSPRNG (session ids, CSRF tokens, random credentials).
pub fn random_token(n: usize) -> String {
    let mut r = csprng();
    (0..n)
        .map(|_| ALNUM[r.gen_range(0..ALNUM.len())] as char)
        .collect()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `data` to `path` so that only the owner can read it: a temporary file created with
/// mode 0600 in the same directory, synced, then renamed over `path`. A reader never sees half
/// a file and the file is never readable by others, not even for an instant.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and its parents) with mode 0700 where it does not exist yet: a device's
/// data directory holds keys, credentials and logs that are nobody else's business.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// The lab token: the shared secret of every `/_lab/` route of a lab (header
/// [`LAB_TOKEN_HEADER`]). Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct LabToken(Arc<str>);

impl LabToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// A fresh token from the OS CSPRNG (43 alphanumerics, about 256 bits).
    pub fn generate() -> Self {
        Self::new(random_token(43))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl std::fmt::Debug for LabToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LabToken(..)")
    }
}

/// A device's (or a lab's) secrets: see the module documentation for where each comes from.
#[derive(Debug)]
pub struct Secrets {
    mode: SecretsMode,
    seed: u64,
    /// Values given by the orchestrator (`--secrets-file`): read only.
    given: BTreeMap<String, String>,
    /// The device's own file and what it holds (values generated here).
    own_path: Option<PathBuf>,
    own: Mutex<BTreeMap<String, String>>,
}

fn read_map(path: &Path) -> Result<Option<BTreeMap<String, String>>, SecretsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SecretsError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| SecretsError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let obj = v.as_object().ok_or_else(|| SecretsError::Format {
        path: path.to_path_buf(),
        message: "not an object".into(),
    })?;
    // Values that are not strings (a newer layout, comments) are ignored, not fatal.
    Ok(Some(
        obj.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
    ))
}

impl Secrets {
    /// Opens the secrets: `own` is the device's `secrets.json` (created on first use; `None`:
    /// nothing is persisted), `given` the file passed with `--secrets-file` (must exist).
    pub fn open(
        own: Option<&Path>,
        given: Option<&Path>,
        mode: SecretsMode,
        seed: u64,
    ) -> Result<Secrets, SecretsError> {
        let given_map = match given {
            Some(p) => read_map(p)?.ok_or_else(|| SecretsError::Io {
                path: p.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?,
            None => BTreeMap::new(),
        };
        let own_map = match own {
            Some(p) => read_map(p)?.unwrap_or_default(),
            None => BTreeMap::new(),
        };
        Ok(Secrets {
            mode,
            seed,
            given: given_map,
            own_path: own.map(Path::to_path_buf),
            own: Mutex::new(own_map),
        })
    }

    /// In-memory secrets (tests, in-process devices): nothing read, nothing written.
    pub fn ephemeral(mode: SecretsMode, seed: u64) -> Secrets {
        Secrets {
            mode,
            seed,
            given: BTreeMap::new(),
            own_path: None,
            own: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn mode(&self) -> SecretsMode {
        self.mode
    }

    /// The credential `label` (e.g. `fortigate/admin-password`) of `n` alphanumerics: derived
    /// from the seed in seeded mode; otherwise the given value, the device's kept value, or a
    /// fresh one from the CSPRNG (then kept).
    pub fn credential(&self, label: &str, n: usize) -> Result<String, SecretsError> {
        if self.mode == SecretsMode::Seeded {
            return Ok(crate::rng::token(
                &mut crate::rng::stream(self.seed, label),
                n,
            ));
        }
        self.kept_or_new(label, || random_token(n))
    }

    /// The lab token: [`LAB_TOKEN_ENV`], the given file, the device's kept one, or a fresh one
    /// (kept). Never seeded: it guards the lab surface of a running lab.
    pub fn lab_token(&self) -> Result<LabToken, SecretsError> {
        if let Ok(t) = std::env::var(LAB_TOKEN_ENV) {
            if !t.trim().is_empty() {
                return Ok(LabToken::new(t.trim()));
            }
        }
        self.kept_or_new(LAB_TOKEN_KEY, || LabToken::generate().as_str().to_string())
            .map(LabToken::new)
    }

    fn kept_or_new(
        &self,
        key: &str,
        fresh: impl FnOnce() -> String,
    ) -> Result<String, SecretsError> {
        if let Some(v) = self.given.get(key) {
            return Ok(v.clone());
        }
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = own.get(key) {
            return Ok(v.clone());
        }
        let v = fresh();
        own.insert(key.to_string(), v.clone());
        if let Some(p) = &self.own_path {
            let text = serde_json::to_vec_pretty(&*own).expect("a map of strings serializes");
            write_private(p, &text).map_err(|e| SecretsError::Io {
                path: p.clone(),
                source: e,
            })?;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn random_credentials_differ_per_lab_and_are_kept_per_data_dir() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = a.path().join(SECRETS_FILE);
        let sa = Secrets::open(Some(&pa), None, SecretsMode::Random, 1).unwrap();
        let sb = Secrets::open(
            Some(&b.path().join(SECRETS_FILE)),
            None,
            SecretsMode::Random,
            1,
        )
        .unwrap();
        let x = sa.credential("fortigate/admin-password", 16).unwrap();
        assert_eq!(x.len(), 16);
        assert_ne!(x, sb.credential("fortigate/admin-password", 16).unwrap());
        // Kept: the same data directory gives the same value again.
        let again = Secrets::open(Some(&pa), None, SecretsMode::Random, 1).unwrap();
        assert_eq!(x, again.credential("fortigate/admin-password", 16).unwrap());
        #[cfg(unix)]
        assert_eq!(mode_of(&pa), 0o600);
    }

    #[test]
    fn seeded_credentials_follow_the_seed_and_the_lab_token_never_does() {
        let s1 = Secrets::ephemeral(SecretsMode::Seeded, 7);
        let s2 = Secrets::ephemeral(SecretsMode::Seeded, 7);
        let s3 = Secrets::ephemeral(SecretsMode::Seeded, 8);
        let c = |s: &Secrets| s.credential("faz/api-key", 30).unwrap();
        assert_eq!(c(&s1), c(&s2));
        assert_ne!(c(&s1), c(&s3));
        assert_eq!(
            c(&s1),
            crate::rng::token(&mut crate::rng::stream(7, "faz/api-key"), 30)
        );
        assert_ne!(
            s1.lab_token().unwrap().as_str(),
            s2.lab_token().unwrap().as_str()
        );
    }

    #[test]
    fn given_values_win_over_kept_ones() {
        let d = tempfile::tempdir().unwrap();
        let given = d.path().join("lab-secrets.json");
        write_private(
            &given,
            br#"{"lab_token": "from-the-lab", "ems/admin-password": "given-pw"}"#,
        )
        .unwrap();
        let own = d.path().join("own.json");
        write_private(&own, br#"{"ems/admin-password": "kept-pw"}"#).unwrap();
        let s = Secrets::open(Some(&own), Some(&given), SecretsMode::Random, 1).unwrap();
        assert_eq!(s.credential("ems/admin-password", 12).unwrap(), "given-pw");
        // The environment variable is per process; this test only checks the file path.
        if std::env::var(LAB_TOKEN_ENV).is_err() {
            assert_eq!(s.lab_token().unwrap().as_str(), "from-the-lab");
        }
        assert!(Secrets::open(
            None,
            Some(&d.path().join("missing")),
            SecretsMode::Random,
            1
        )
        .is_err());
    }

    #[test]
    fn private_files_are_created_0600_and_replace_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/ready.json");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(mode_of(&p), 0o600);
        let dir = d.path().join("a/b");
        create_private_dir(&dir).unwrap();
        #[cfg(unix)]
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn tokens_compare_in_full() {
        let t = LabToken::new("abc");
        assert!(t.matches(b"abc"));
        assert!(!t.matches(b"abd"));
        assert!(!t.matches(b"ab"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "LabToken(..)");
        assert_eq!(LabToken::generate().as_str().len(), 43);
        assert_ne!(random_token(20), random_token(20));
    }
}
