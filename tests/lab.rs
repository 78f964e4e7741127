//! End-to-end tests (lab): spawn the real binaries.

mod support;
