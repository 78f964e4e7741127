//! FortiAnalyzer's integration tests in one binary: the device in-process on port-0 listeners
//! (`inproc`, `syslog`) and the no-panic properties of its parsers (`fuzz`).

mod fuzz;
mod inproc;
mod syslog;
