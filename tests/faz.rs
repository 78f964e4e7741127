//! End-to-end tests (faz): spawn the real binaries.

mod support;
