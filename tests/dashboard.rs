//! End-to-end tests of the lab dashboard served by `fortilab up`: headless Chromium driven by
//! selenium (tests/py/dashboard_*.py) against a running lab.

mod support;
