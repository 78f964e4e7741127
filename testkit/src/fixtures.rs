//! The seed lab's files (one copy each, under `scenarios/labs/`).

/// The seed lab's FortiGate configuration (FortiOS 6.4.4): interfaces, the address of PC-52,
/// FortiAnalyzer and EMS connectors, the web-filtered policy and the quarantine stitch.
pub const SEED_FORTIGATE_CONF: &str = include_str!("../../scenarios/labs/seed-fortigate.conf");

/// The seed lab's addresses (ARCHITECTURE.md, the lab network).
pub mod addr {
    /// FortiGate management (port1) and LAN (port3, the explicit proxy).
    pub const FORTIGATE_MGMT: &str = "10.115.1.1";
    pub const FORTIGATE_LAN: &str = "10.115.2.1";
    pub const PROXY_PORT: u16 = 8080;
    pub const FORTIANALYZER: &str = "10.115.1.20";
    pub const EMS: &str = "10.115.1.30";
    /// The first endpoint (PC-52).
    pub const FIRST_ENDPOINT: &str = "10.115.2.52";
}
