//! End-to-end tests (ems): spawn the real binaries.

mod support;
