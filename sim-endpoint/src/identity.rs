//! Endpoint identities: names, lab addresses, MACs and FCTUIDs derived from the seed.
//!
//! `--name-pattern` placeholders: `{n}` = the last octet of the endpoint's lab IP (so the
//! default `PC-{n}` with `--ip-start 10.115.2.52` gives `PC-52`), `{i}` = the 1-based index of
//! the endpoint in this process. A pattern that would give two endpoints the same name (for
//! example `PC-{n}` over more than one /24) is refused: use `{i}`. Addresses count up from
//! `--ip-start`, skipping `.0` and `.255`. MAC and FCTUID come from
//! `rng::stream(seed, "endpoint/<name>")`, so the same seed gives the same identities.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// One endpoint's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Colon form, lower case.
    pub mac: String,
    /// 32 upper-case hex digits.
    pub fctuid: String,
    pub hostname: String,
    pub user: String,
    pub os: String,
    pub fct_version: String,
    pub fct_sn: String,
}

/// The OS string FortiClient reports for the lab's Windows endpoints.
pub const DEFAULT_OS: &str = "Microsoft Windows 10 Professional Edition, 64-bit (build 19042)";
/// FortiClient build matching EMS 6.4.3.
pub const DEFAULT_FCT_VERSION: &str = "6.4.3.1608";

fn expand(pattern: &str, n: u8, i: usize) -> String {
    pattern
        .replace("{n}", &n.to_string())
        .replace("{i}", &i.to_string())
}

/// Builds `count` identities.
pub fn identities(
    count: usize,
    name_pattern: &str,
    user_pattern: &str,
    ip_start: Ipv4Addr,
    seed: u64,
) -> Result<Vec<Identity>, String> {
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    let mut out = Vec::with_capacity(count);
    let mut names = HashSet::with_capacity(count);
    let mut ip = u32::from(ip_start);
    for i in 1..=count {
        while matches!(ip & 0xff, 0 | 255) {
            ip = ip
                .checked_add(1)
                .ok_or("--ip-start: address range exhausted")?;
        }
        let addr = Ipv4Addr::from(ip);
        let n = addr.octets()[3];
        let name = expand(name_pattern, n, i);
        if !names.insert(name.clone()) {
            return Err(format!(
                "--name-pattern {name_pattern:?} gives the name {name:?} twice; use {{i}} (the index) for many endpoints"
            ));
        }
        let mut rng = fortilab_core::rng::stream(seed, &format!("endpoint/{name}"));
        let mac = fortilab_core::rng::mac(&mut rng);
        let fctuid = fortilab_core::rng::hex_upper(&mut rng, 32);
        let fct_sn = fortilab_core::rng::serial(&mut rng, "FCT8");
        out.push(Identity {
            hostname: name.clone(),
            user: expand(user_pattern, n, i),
            name,
            ip: addr,
            mac,
            fctuid,
            os: DEFAULT_OS.to_string(),
            fct_version: DEFAULT_FCT_VERSION.to_string(),
            fct_sn,
        });
        ip = ip.wrapping_add(1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_determinism() {
        let a = identities(3, "PC-{n}", "user{i}", "10.115.2.52".parse().unwrap(), 7).unwrap();
        assert_eq!(a[0].name, "PC-52");
        assert_eq!(a[2].ip, "10.115.2.54".parse::<Ipv4Addr>().unwrap());
        assert_eq!(a[1].user, "user2");
        assert_eq!(a[0].fctuid.len(), 32);
        assert_eq!(a[0].mac.len(), 17);
        let b = identities(3, "PC-{n}", "user{i}", "10.115.2.52".parse().unwrap(), 7).unwrap();
        assert_eq!(a, b);
        let c = identities(1, "PC-{n}", "user{i}", "10.115.2.52".parse().unwrap(), 8).unwrap();
        assert_ne!(a[0].fctuid, c[0].fctuid);
    }

    #[test]
    fn skips_network_and_broadcast_and_refuses_duplicates() {
        let a = identities(3, "E{i}", "u", "10.0.0.254".parse().unwrap(), 1).unwrap();
        let ips: Vec<String> = a.iter().map(|x| x.ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.254", "10.0.1.1", "10.0.1.2"]);
        assert!(identities(300, "PC-{n}", "u", "10.0.0.1".parse().unwrap(), 1).is_err());
        assert_eq!(
            identities(10_000, "PC-{i}", "u", "10.115.2.52".parse().unwrap(), 1)
                .unwrap()
                .len(),
            10_000
        );
    }
}
