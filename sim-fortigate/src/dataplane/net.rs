//! The interface model and route lookup: connected subnets from `config system interface`,
//! zones (`config system zone`, the SD-WAN zone `virtual-wan-link`), a default route to the wan
//! side. Pure code.

use std::net::Ipv4Addr;

use super::policy::parse_subnet;
use crate::config::tree::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub subnet: Option<(u32, u32)>,
    /// Connected subnets of `config secondaryip` (with `set secondary-IP enable`).
    pub secondary: Vec<(u32, u32)>,
    /// `lan`, `wan`, `dmz`, `undefined`.
    pub role: String,
    /// Zones the interface belongs to.
    pub zones: Vec<String>,
}

/// Where a session enters or leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The interface name written in logs (`srcintf`/`dstintf`).
    pub intf: String,
    pub role: String,
    /// The names policies match against (the interface or zone, see [`Network::route`]).
    pub names: Vec<String>,
    /// The interface address (NAT source for the wan side).
    pub ip: Option<Ipv4Addr>,
}

/// Interfaces and routing of the FortiGate.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    /// The SD-WAN zone name when it exists (`virtual-wan-link`).
    pub sdwan_zone: Option<String>,
}

impl Network {
    pub fn from_config(cfg: &Config) -> Network {
        let mut interfaces: Vec<Interface> = cfg
            .table("system interface")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|entry| {
                        let subnet = entry.scalar("ip").and_then(parse_subnet);
                        let ip = entry
                            .scalar("ip")
                            .and_then(|s| s.split_whitespace().next())
                            .and_then(|s| s.split('/').next())
                            .and_then(|s| s.parse::<Ipv4Addr>().ok())
                            .filter(|ip| !ip.is_unspecified());
                        let secondary = if entry.scalar("secondary-IP") == Some("enable") {
                            entry
                                .table("secondaryip")
                                .map(|t| {
                                    t.entries()
                                        .iter()
                                        .filter_map(|x| x.scalar("ip").and_then(parse_subnet))
                                        .filter(|(a, _)| *a != 0)
                                        .collect()
                                })
                                .unwrap_or_default()
                        } else {
                            Vec::new()
                        };
                        Interface {
                            name: entry.key.clone(),
                            ip,
                            subnet: if ip.is_some() { subnet } else { None },
                            secondary,
                            role: entry.scalar("role").unwrap_or("undefined").to_string(),
                            zones: vec![],
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(t) = cfg.table("system zone") {
            for z in t.entries() {
                for m in z.list("interface") {
                    if let Some(i) = interfaces.iter_mut().find(|i| i.name == *m) {
                        i.zones.push(z.key.clone());
                    }
                }
            }
        }
        let mut sdwan_zone = None;
        for path in ["system virtual-wan-link", "system sdwan"] {
            if let Some(w) = cfg.single(path) {
                if let Some(z) = w.table("zone") {
                    if let Some(first) = z.entries().first() {
                        sdwan_zone = Some(if z.contains("virtual-wan-link") {
                            "virtual-wan-link".to_string()
                        } else {
                            first.key.clone()
                        });
                    }
                }
                if let Some(members) = w.table("members") {
                    for m in members.entries() {
                        if let Some(i) = m.scalar("interface") {
                            let zone = m.scalar("zone").unwrap_or("virtual-wan-link").to_string();
                            if let Some(intf) = interfaces.iter_mut().find(|x| x.name == i) {
                                intf.zones.push(zone);
                            }
                        }
                    }
                }
            }
        }
        Network {
            interfaces,
            sdwan_zone,
        }
    }

    fn side(&self, i: &Interface) -> Side {
        let mut names = vec![i.name.clone()];
        names.extend(i.zones.iter().cloned());
        Side {
            intf: i.name.clone(),
            role: i.role.clone(),
            names,
            ip: i.ip,
        }
    }

    /// The connected interface of an address.
    pub fn connected(&self, ip: Ipv4Addr) -> Option<&Interface> {
        let x = u32::from(ip);
        self.interfaces
            .iter()
            .flat_map(|i| {
                i.subnet
                    .into_iter()
                    .chain(i.secondary.iter().copied())
                    .map(move |s| (i, s))
            })
            .filter(|(_, (a, b))| x >= *a && x <= *b)
            .min_by_key(|(_, (a, b))| b - a)
            .map(|(i, _)| i)
    }

    /// The wan interface: the first with role `wan`, else `port1`.
    pub fn wan(&self) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.role == "wan")
            .or_else(|| self.interfaces.iter().find(|i| i.name == "port1"))
    }

    /// The ingress side of a source address (its connected subnet; unknown sources enter on
    /// the LAN interface, as the proxy listener stands for port3).
    pub fn ingress(&self, src: Ipv4Addr) -> Side {
        if let Some(i) = self.connected(src) {
            return self.side(i);
        }
        match self
            .interfaces
            .iter()
            .find(|i| i.role == "lan")
            .or_else(|| self.interfaces.iter().find(|i| i.name == "port3"))
        {
            Some(i) => self.side(i),
            None => Side {
                intf: "port3".into(),
                role: "lan".into(),
                names: vec!["port3".into()],
                ip: None,
            },
        }
    }

    /// Route lookup: a connected destination leaves on its interface; anything else on the
    /// wan side, matched by policies as the SD-WAN zone when it exists, else as the wan
    /// interface (logged as the wan interface either way).
    pub fn route(&self, dst: Ipv4Addr) -> Side {
        if let Some(i) = self.connected(dst) {
            if i.role != "wan" {
                return self.side(i);
            }
        }
        let wan = self.wan();
        let mut side = match wan {
            Some(i) => self.side(i),
            None => Side {
                intf: "port1".into(),
                role: "wan".into(),
                names: vec!["port1".into()],
                ip: None,
            },
        };
        if let Some(z) = &self.sdwan_zone {
            side.names = vec![z.clone()];
            if let Some(i) = wan {
                side.names
                    .extend(i.zones.iter().filter(|n| *n != z).cloned());
            }
        }
        side
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_interfaces_and_routes() {
        let version = crate::config::FosVersion::parse("6.4.4").unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let base = crate::config::factory(version, "FGT", &mut rng);
        let text = "config system interface\nedit port1\nset ip 10.115.1.1 255.255.255.0\nset role wan\nnext\nedit port3\nset ip 10.115.2.1 255.255.255.0\nset role lan\nnext\nend\n";
        let c = crate::config::parse_config(&base, text, "t", version, false, &mut rng)
            .unwrap()
            .0;
        let n = Network::from_config(&c);
        let src = n.ingress("10.115.2.52".parse().unwrap());
        assert_eq!((src.intf.as_str(), src.role.as_str()), ("port3", "lan"));
        let dst = n.route("89.238.73.97".parse().unwrap());
        assert_eq!(dst.intf, "port1");
        assert_eq!(dst.names, vec!["virtual-wan-link".to_string()]);
        assert_eq!(dst.ip, Some("10.115.1.1".parse().unwrap()));
        let lan = n.route("10.115.2.60".parse().unwrap());
        assert_eq!(lan.intf, "port3");
        // Without the SD-WAN zone, the wan interface itself.
        let mut n2 = n.clone();
        n2.sdwan_zone = None;
        assert_eq!(
            n2.route("1.1.1.1".parse().unwrap()).names,
            vec!["port1".to_string()]
        );
    }

    #[test]
    fn secondary_ips_are_connected_subnets() {
        let version = crate::config::FosVersion::parse("6.4.4").unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let base = crate::config::factory(version, "FGT", &mut rng);
        let text = "config system interface\nedit port1\nset ip 10.115.1.1 255.255.255.0\nset role wan\nnext\nedit port3\nset ip 10.115.2.1 255.255.255.0\nset role lan\nset secondary-IP enable\nconfig secondaryip\nedit 1\nset ip 10.115.4.254 255.255.255.0\nset allowaccess ping\nnext\nend\nnext\nend\n";
        let c = crate::config::parse_config(&base, text, "t", version, false, &mut rng)
            .unwrap()
            .0;
        let n = Network::from_config(&c);
        let src = n.ingress("10.115.4.9".parse().unwrap());
        assert_eq!((src.intf.as_str(), src.role.as_str()), ("port3", "lan"));
        assert_eq!(n.route("10.115.4.200".parse().unwrap()).intf, "port3");
        assert_eq!(n.route("10.115.5.1".parse().unwrap()).intf, "port1");
    }
}
