//! End-to-end tests (automation): spawn the real binaries.

mod support;
