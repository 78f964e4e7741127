//! End-to-end tests (fgt_dataplane): spawn the real binaries.

mod support;
