//! # sim-fortigate
//!
//! A FortiGate twin: the FortiOS configuration engine ([`config`]), the FortiOS REST API
//! ([`api`]), the device state shared by every module ([`device`]) and FortiOS event logs
//! ([`logs`]).

pub mod config;
