//! # fortilab-scenarios
//!
//! The `fortilab` orchestrator:
//! - [`labdef`]: the lab definition format (TOML) and the built-in seed lab;
//! - [`scenario`]: the scenario format (a lab plus steps) and its validation;
//! - [`procs`] and [`lab`]: device processes started in dependency order with the lab CA, the
//!   lab clock and the lab network map; stopped cleanly, never orphaned;
//! - [`netns`]: namespaces mode (each device in its own network namespace);
//! - [`links`]: the links between devices and their fault relays (down, latency, loss, rate);
//! - [`timeline`]: every device's event stream, merged in lab-time order;
//! - [`clients`]: the vendor-API clients scenarios act and check through;
//! - [`runner`]: step execution, expectations with lab-time deadlines, JUnit;
//! - [`attach`]: scenarios against a running lab it did not start (`run --attach`);
//! - [`snapshot`]: lab snapshots (`snapshot save/restore`, the `snapshot`/`restore` steps);
//! - [`dashboard`]: the web dashboard of `fortilab up`;
//! - [`exercise`]: guided exercises (tasks, hints, checks re-evaluated on every change);
//! - [`class`]: a classroom of labs (`fortilab class up | status`);
//! - [`cli`]: `fortilab up | run | validate`.

pub mod attach;
pub mod class;
pub mod cli;
pub mod clients;
pub mod compose;
pub mod dashboard;
pub mod exercise;
pub mod journal;
pub mod lab;
pub mod labdef;
pub mod links;
pub mod netns;
pub mod open_console;
pub mod procs;
pub mod runner;
pub mod scenario;
pub mod shaper;
pub mod snapshot;
pub mod timeline;

#[cfg(test)]
mod no_panic_tests;
