//! The end-to-end tests: one test binary (one link, one process whose tests run in parallel)
//! instead of one per file. Each module spawns the real binaries (`fortilab`, `sim-*`) and
//! talks to them only through their interfaces; `support` holds the shared harness. Tests of
//! cross-device behaviour that need no process (`inproc`, part of `ems`) start the devices in
//! this process with `fortilab_testkit`.
//!
//! Run one file's tests with a filter: `cargo test --test e2e lab::` (or `cargo xtask test
//! --test e2e lab::` for the tests that drive Python clients).

mod support;

mod ansible;
mod automation;
mod classroom;
mod compose;
mod console;
mod console_faz;
mod dashboard;
mod dataplane;
mod ems;
mod exercise;
mod faz;
mod fgt_dataplane;
mod fortigate;
mod hostile;
mod inproc;
mod lab;
mod links;
mod netns;
mod readme;
