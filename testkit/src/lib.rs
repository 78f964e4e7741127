//! # fortilab-testkit
//!
//! What the tests share:
//!
//! - [`lab`]: the seed lab (lab Internet, FortiAnalyzer, EMS, FortiGate, endpoints) started in
//!   one process on port 0 through each device's `start(config, env, listeners, shutdown)`,
//!   wired with one lab map: fast tests of cross-device behaviour. The process-level end-to-end
//!   tests (`tests/e2e`) keep proving the real binaries.
//! - [`wait_for`] / [`wait_for_blocking`]: poll a condition until it holds (never
//!   sleep-and-hope); defined in `fortilab_core::wait` so the crates' own unit tests use the
//!   same one.
//! - [`fixtures`]: the seed lab's configuration files, from `scenarios/labs/`.
//!
//! HTTPS to the devices goes through [`lab::InProcessLab::client`], today the EMS crate's
//! small client (`fortilab_core::http::client::HttpsClient`): the one place to switch when the shared
//! lab-core HTTP client lands.

pub mod fixtures;
pub mod lab;

pub use fortilab_core::wait::{wait_for, wait_for_blocking};
pub use lab::{BlockingLab, InProcessLab, LabSpec};
