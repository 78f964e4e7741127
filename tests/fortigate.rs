//! End-to-end tests (fortigate): spawn the real binaries.

mod support;
