//! The lab network map and the lab source address of a connection (ARCHITECTURE.md section 4).
//!
//! Configurations speak lab addresses (10.115.2.52, 10.115.1.20:514, 89.x.x.x). On one machine
//! every real socket is on loopback, so each process gets a map: lab IP:port → real socket
//! (`services`), and lab IP → real IP (`hosts`, so `curl --interface 127.0.0.52` can act as
//! 10.115.2.52). Unmapped addresses map to themselves, which is what a multi-host lab
//! (network namespaces) wants.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Lab address ↔ real socket map.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LabMap {
    /// Lab IP → real IP of a lab host (source-address mapping and whole-host redirection).
    #[serde(default)]
    pub hosts: BTreeMap<IpAddr, IpAddr>,
    /// Lab IP:port → real socket of a lab service.
    #[serde(default)]
    pub services: BTreeMap<SocketAddr, SocketAddr>,
    /// Unmapped addresses map to themselves (multi-host labs). Default: they are unreachable.
    #[serde(default)]
    pub identity: bool,
    /// The lab Internet's real address, used like a default route: an unmapped public lab
    /// address (a site's 89.x or 195.x address: anything outside the private, loopback and
    /// link-local ranges) goes there, port kept. A container lab sets it on the FortiGate,
    /// whose WAN side reaches the lab Internet as one host whatever public address a site has
    /// (the Internet picks the site from the PROXY header's destination, SNI or Host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<IpAddr>,
}

/// Whether `ip` is a public address (what [`LabMap::internet`] routes).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast())
        }
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Where an unmapped lab address resolves when the map is not an identity map: loopback port 0,
/// which refuses every connection at once.
pub const UNREACHABLE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Errors loading a lab map.
#[derive(Debug, thiserror::Error)]
pub enum LabMapError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {msg}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
}

impl LabMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a JSON map `{"hosts": {...}, "services": {...}}`.
    pub fn load(path: &Path) -> Result<Self, LabMapError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabMapError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| LabMapError::Parse {
            path: path.display().to_string(),
            line: e.line(),
            column: e.column(),
            msg: e.to_string(),
        })
    }

    pub fn add_service(&mut self, lab: SocketAddr, real: SocketAddr) {
        self.services.insert(lab, real);
    }

    pub fn add_host(&mut self, lab: IpAddr, real: IpAddr) {
        self.hosts.insert(lab, real);
    }

    /// Where to connect to reach the lab socket `lab`.
    /// Whether the map changes nothing: every lab address is real (a lab on real networks,
    /// namespaces mode), so no PROXY header is needed to carry a lab address.
    pub fn is_plain_identity(&self) -> bool {
        self.identity
            && self.internet.is_none()
            && self.hosts.is_empty()
            && self.services.is_empty()
    }

    pub fn resolve(&self, lab: SocketAddr) -> SocketAddr {
        if let Some(real) = self.services.get(&lab) {
            return *real;
        }
        if let Some(ip) = self.hosts.get(&lab.ip()) {
            return SocketAddr::new(*ip, lab.port());
        }
        if let Some(inet) = self.internet {
            if is_public(lab.ip()) {
                return SocketAddr::new(inet, lab.port());
            }
        }
        if self.identity || lab.ip().is_loopback() {
            lab
        } else {
            UNREACHABLE
        }
    }

    /// Whether `lab` has an explicit mapping.
    pub fn is_mapped(&self, lab: SocketAddr) -> bool {
        self.services.contains_key(&lab) || self.hosts.contains_key(&lab.ip())
    }

    /// The lab address of a real peer address, when the map names it as a lab host.
    pub fn lab_of_real(&self, real: IpAddr) -> Option<IpAddr> {
        self.hosts
            .iter()
            .find(|(_, r)| **r == real)
            .map(|(lab, _)| *lab)
    }

    /// The lab service whose real socket is `real`, if any.
    pub fn lab_service_of_real(&self, real: SocketAddr) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|(_, r)| **r == real)
            .map(|(lab, _)| *lab)
    }

    /// The lab source of a connection: the PROXY header's source when present, else the lab
    /// address the map gives the real peer, else the real peer itself.
    pub fn lab_source(
        &self,
        proxy: Option<&crate::proxy::ProxyHeader>,
        peer: SocketAddr,
    ) -> SocketAddr {
        if let Some(h) = proxy {
            return h.src;
        }
        match self.lab_of_real(peer.ip()) {
            Some(ip) => SocketAddr::new(ip, peer.port()),
            None => peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefers_service_then_host_then_identity() {
        let mut m = LabMap::new();
        m.add_service(
            "10.115.1.20:514".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        );
        m.add_host(
            "10.115.2.60".parse().unwrap(),
            "127.0.0.60".parse().unwrap(),
        );
        assert_eq!(
            m.resolve("10.115.1.20:514".parse().unwrap()),
            "127.0.0.1:40000".parse().unwrap()
        );
        assert_eq!(
            m.resolve("10.115.2.60:80".parse().unwrap()),
            "127.0.0.60:80".parse().unwrap()
        );
        // Never a real non-loopback address unless the map says so.
        assert_eq!(m.resolve("1.2.3.4:80".parse().unwrap()), UNREACHABLE);
        assert_eq!(
            m.resolve("127.0.0.9:80".parse().unwrap()),
            "127.0.0.9:80".parse().unwrap()
        );
        let mut id = m.clone();
        id.identity = true;
        assert_eq!(
            id.resolve("1.2.3.4:80".parse().unwrap()),
            "1.2.3.4:80".parse().unwrap()
        );
        assert_eq!(
            m.lab_of_real("127.0.0.60".parse().unwrap()),
            Some("10.115.2.60".parse().unwrap())
        );
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<LabMap>(&json).unwrap(), m);
    }

    #[test]
    fn the_internet_address_is_the_default_route_of_public_addresses() {
        let m: LabMap =
            serde_json::from_str(r#"{"identity": true, "internet": "10.115.0.2"}"#).unwrap();
        assert_eq!(
            m.resolve("89.238.73.97:80".parse().unwrap()),
            "10.115.0.2:80".parse().unwrap()
        );
        assert_eq!(
            m.resolve("195.22.28.198:443".parse().unwrap()),
            "10.115.0.2:443".parse().unwrap()
        );
        // The lab's own (private) addresses stay themselves.
        assert_eq!(
            m.resolve("10.115.1.20:514".parse().unwrap()),
            "10.115.1.20:514".parse().unwrap()
        );
        // Without the key the map is as before.
        let old: LabMap = serde_json::from_str(r#"{"identity": true}"#).unwrap();
        assert_eq!(old.internet, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("internet"));
    }

    #[test]
    fn lab_source_order() {
        let mut m = LabMap::new();
        m.add_host(
            "10.115.2.60".parse().unwrap(),
            "127.0.0.60".parse().unwrap(),
        );
        let hdr = crate::proxy::ProxyHeader {
            src: "10.115.2.52:5000".parse().unwrap(),
            dst: "1.1.1.1:80".parse().unwrap(),
        };
        let peer: SocketAddr = "127.0.0.60:4000".parse().unwrap();
        assert_eq!(m.lab_source(Some(&hdr), peer), hdr.src);
        assert_eq!(
            m.lab_source(None, peer),
            "10.115.2.60:4000".parse().unwrap()
        );
        let other: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(m.lab_source(None, other), other);
    }
}
