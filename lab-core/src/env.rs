//! What every device's `start` takes besides its own configuration and listeners.
//!
//! Every device library has the same start contract:
//! `start(config, env: DeviceEnv, listeners, shutdown) -> Running`, where `config` is the
//! device's own configuration (`FortiGateConfig`, `FazConfig`, `EmsConfig`, `EndpointConfig`,
//! `InternetConfig`), `listeners` its already-bound sockets (port 0 in tests, the lab ports in
//! the orchestrator) and `Running` reports the addresses it really serves on. The binaries build
//! the environment from their common flags ([`crate::binary::CommonArgs::device_env`]); tests
//! and the in-process lab use [`DeviceEnv::for_tests`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::binary::Timing;
use crate::clock::LabClock;
use crate::http::HttpOptions;
use crate::labnet::LabMap;
use crate::secrets::{Secrets, SecretsMode};
use crate::tls::{LabCa, TlsError};

/// The lab a device runs in: CA, clock, network map, seed, timing, state directory,
/// credentials and the lab token. Cheap to clone (one per device of an in-process lab).
#[derive(Debug, Clone)]
pub struct DeviceEnv {
    /// The lab CA: issues the device's certificates and is the only root its clients trust.
    pub ca: Arc<LabCa>,
    pub clock: LabClock,
    /// Lab address → real socket (empty on plain loopback without a map).
    pub lab_map: LabMap,
    /// Seed of every random choice (serials, identities; credentials in seeded mode).
    pub seed: u64,
    /// Product delays (ARCHITECTURE.md section 6).
    pub timing: Timing,
    /// Where the device keeps its state. `None`: nothing is persisted, which only the
    /// FortiGate supports (the others fail to start without one, see [`Self::require_data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// The device's credentials (random per lab unless seeded).
    pub secrets: Arc<Secrets>,
    /// The lab token and the HTTP limits of every listener of the device.
    pub http: HttpOptions,
}

/// A device that keeps state was started without a data directory.
#[derive(Debug, thiserror::Error)]
#[error("{device} needs a data directory")]
pub struct NoDataDir {
    pub device: String,
}

impl DeviceEnv {
    /// A fresh environment for tests and in-process labs: a new lab CA, the real clock, an
    /// empty lab map, realistic timing, seeded secrets, a random lab token and `data_dir`.
    pub fn for_tests(seed: u64, data_dir: Option<&Path>) -> Result<Self, TlsError> {
        Ok(Self::with_ca(
            Arc::new(LabCa::generate("fortilab test")?),
            seed,
            data_dir,
        ))
    }

    /// Like [`Self::for_tests`] around an existing CA (devices of one lab share it).
    pub fn with_ca(ca: Arc<LabCa>, seed: u64, data_dir: Option<&Path>) -> Self {
        Self {
            ca,
            clock: LabClock::real(),
            lab_map: LabMap::default(),
            seed,
            timing: Timing::Realistic,
            data_dir: data_dir.map(Path::to_path_buf),
            secrets: Arc::new(Secrets::ephemeral(SecretsMode::Seeded, seed)),
            http: HttpOptions::for_tests(),
        }
    }

    /// The data directory of a device that cannot run without one.
    pub fn require_data_dir(&self, device: &str) -> Result<&Path, NoDataDir> {
        self.data_dir.as_deref().ok_or_else(|| NoDataDir {
            device: device.to_string(),
        })
    }

    /// This environment with another state directory (one per device of a lab).
    pub fn in_dir(&self, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(data_dir.into()),
            ..self.clone()
        }
    }
}
