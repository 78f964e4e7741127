//! # fortilab-core
//!
//! What every fortilab device process shares (ARCHITECTURE.md section 2):
//!
//! - [`tls`]: the lab CA (rcgen) and rustls configurations that verify peers against it only.
//! - [`http`]: serving an axum router over HTTPS or HTTP with graceful drain, with each
//!   request's peer address and client-certificate CN as [`http::ConnInfo`].
//! - [`shutdown`]: SIGINT/SIGTERM → a cancellation token.
//! - [`ready`]: the `--ready-file` report, written atomically.
//! - [`clock`]: the lab clock (epoch, origin, speed) and FortiOS date/time formatting.
//! - [`rng`]: seeded random streams per label (serials, FCTUIDs, MACs, seeded credentials).
//! - [`secrets`]: lab credentials (CSPRNG by default, seeded on request), the lab token, files
//!   created 0600.
//! - [`labnet`] and [`proxy`]: the lab network map and PROXY v1/v2 headers.
//! - [`linkfault`]: link faults between devices (down, latency, loss, rate) and the relay.
//! - [`logfmt`]: FortiOS `key=value` log records.
//! - [`fortiguard`]: the FortiGuard web filter categories by FortiOS version.
//! - [`ssh_console`] and [`telemetry`]: the SSH console server and the FortiClient ↔ EMS wire format.
//! - [`events`]: the per-device event stream served at `/_lab/events`.
//! - [`logchan`]: the log channel (FortiGate/FortiClient → FortiAnalyzer; notifications back).
//! - [`text`]: control characters made visible before text reaches a terminal.
//! - [`binary`]: common flags, tracing, runtime and exit codes of the `sim-*` binaries.
//! - [`wait`]: [`wait::wait_for`], polling a condition until it holds (tests, tools).
//! - [`env`]: [`DeviceEnv`], what every device's `start` shares (CA, clock, lab map, seed,
//!   timing, data directory, secrets, lab token).
//! - [`snapshot`]: the device side of in-place lab snapshots (`POST /_lab/snapshot`).

pub mod binary;
pub mod clock;
pub mod env;
pub mod events;
pub mod fortiguard;
pub mod http;
pub mod labnet;
pub mod linkfault;
pub mod logchan;
pub mod logfmt;
pub mod netns;
pub mod proxy;
pub mod ready;
pub mod rng;
pub mod secrets;
pub mod shutdown;
pub mod snapshot;
pub mod ssh_console;
pub mod supervise;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod tz;
pub mod wait;

pub use clock::LabClock;
pub use env::DeviceEnv;
pub use events::{EventBus, EventKind, LabEvent};
pub use labnet::LabMap;
pub use tls::{DeviceCert, LabCa};

#[cfg(test)]
mod no_panic_tests;
