//! End-to-end tests (dataplane): spawn the real binaries.

mod support;
