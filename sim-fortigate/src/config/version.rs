//! FortiOS versions the twin models (6.4.x, 7.0.x, 7.2.x) and version ranges used by the schema.

use std::fmt;

/// A FortiOS version (`6.4.4`, `7.0.12`, `7.2.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FosVersion {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl Default for FosVersion {
    fn default() -> Self {
        Self::V6_4_4
    }
}

impl FosVersion {
    /// The seed lab's version.
    pub const V6_4_4: FosVersion = FosVersion {
        major: 6,
        minor: 4,
        patch: 4,
    };

    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `6.4.4`, `v7.0.12`, `7.0.x` / `7.0` (a representative patch release) and `7.2.x`.
    /// Only 6.4, 7.0 and 7.2 are modelled.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches(['v', 'V']);
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(format!(
                "invalid FortiOS version '{s}' (expected 6.4.4, 7.0.x or 7.2.x)"
            ));
        }
        let major: u8 = parts[0]
            .parse()
            .map_err(|_| format!("invalid FortiOS version '{s}'"))?;
        let minor: u8 = parts[1]
            .parse()
            .map_err(|_| format!("invalid FortiOS version '{s}'"))?;
        let patch: u8 = match parts.get(2) {
            None | Some(&"x") | Some(&"X") => match (major, minor) {
                (6, 4) => 4,
                (7, 0) => 12,
                (7, 2) => 5,
                _ => 0,
            },
            Some(p) => p
                .parse()
                .map_err(|_| format!("invalid FortiOS version '{s}'"))?,
        };
        match (major, minor) {
            (6, 4) | (7, 0) | (7, 2) => Ok(Self {
                major,
                minor,
                patch,
            }),
            _ => Err(format!(
                "FortiOS {major}.{minor} is not modelled (6.4.x, 7.0.x and 7.2.x are)"
            )),
        }
    }

    /// The firmware build number reported by the REST API (`build`).
    pub fn build(&self) -> u32 {
        match (self.major, self.minor, self.patch) {
            (6, 4, 4) => 1803,
            (6, 4, p) => 1600 + 40 * p as u32,
            (7, 0, 12) => 523,
            (7, 0, 14) => 601,
            (7, 0, p) => 40 * p as u32 + 43,
            (7, 2, 5) => 1517,
            (7, 2, p) => 1100 + 80 * p as u32,
            _ => 1,
        }
    }

    /// `v6.4.4`, as the REST envelope's `version`.
    pub fn rest_string(&self) -> String {
        format!("v{self}")
    }

    /// The `#config-version=` header line of a configuration file.
    pub fn config_header(&self, user: &str) -> String {
        let ver = if self.major < 7 {
            format!("{}.{:02}", self.major, self.minor)
        } else {
            self.to_string()
        };
        format!(
            "#config-version=FGVM64-{ver}-FW-build{:04}-{}:opmode=0:vdom=0:user={user}",
            self.build(),
            match self.major {
                6 => "201209",
                _ => "230418",
            }
        )
    }

    /// Whether `config system automation-stitch` uses `config actions` (7.0.1+) rather than
    /// `set action` (6.4 / 7.0.0).
    pub fn stitch_actions_table(&self) -> bool {
        *self >= FosVersion::new(7, 0, 1)
    }
}

impl fmt::Display for FosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// An inclusive range of versions in which a table or field exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vr {
    pub min: FosVersion,
    pub max: FosVersion,
}

impl Vr {
    pub const ALL: Vr = Vr {
        min: FosVersion::new(0, 0, 0),
        max: FosVersion::new(255, 255, 255),
    };

    pub const fn since(major: u8, minor: u8, patch: u8) -> Vr {
        Vr {
            min: FosVersion::new(major, minor, patch),
            max: FosVersion::new(255, 255, 255),
        }
    }

    pub const fn until(major: u8, minor: u8, patch: u8) -> Vr {
        Vr {
            min: FosVersion::new(0, 0, 0),
            max: FosVersion::new(major, minor, patch),
        }
    }

    pub fn contains(&self, v: FosVersion) -> bool {
        v >= self.min && v <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_versions() {
        assert_eq!(FosVersion::parse("6.4.4").unwrap(), FosVersion::V6_4_4);
        assert_eq!(
            FosVersion::parse("v7.0.x").unwrap(),
            FosVersion::new(7, 0, 12)
        );
        assert_eq!(FosVersion::parse("7.2").unwrap(), FosVersion::new(7, 2, 5));
        assert!(FosVersion::parse("5.6.0").is_err());
        assert!(FosVersion::parse("abc").is_err());
        assert_eq!(FosVersion::V6_4_4.build(), 1803);
        assert!(FosVersion::V6_4_4
            .config_header("admin")
            .starts_with("#config-version=FGVM64-6.04-FW-build1803"));
        assert!(!FosVersion::new(7, 0, 0).stitch_actions_table());
        assert!(FosVersion::new(7, 0, 1).stitch_actions_table());
        assert!(Vr::since(7, 0, 1).contains(FosVersion::new(7, 2, 5)));
        assert!(!Vr::until(7, 0, 0).contains(FosVersion::new(7, 0, 1)));
    }
}
