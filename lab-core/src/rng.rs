//! Seeded randomness (ARCHITECTURE.md section 6): one lab seed drives every random choice.
//!
//! Each consumer derives its own stream from the seed and a label (`"fgt/serial"`,
//! `"endpoint/PC-52"`), so adding a consumer does not shift the values another one draws.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The random stream for `label` under `seed`.
pub fn stream(seed: u64, label: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    ChaCha8Rng::from_seed(digest)
}

const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A Fortinet-style serial: `prefix` followed by upper-case alphanumerics up to 16 characters
/// (`FGVM01TM` + 8 → `FGVM01TM2A7K9Q0Z`).
pub fn serial(rng: &mut impl Rng, prefix: &str) -> String {
    let mut s = prefix.to_string();
    while s.len() < 16 {
        s.push(ALNUM_UPPER[rng.gen_range(0..ALNUM_UPPER.len())] as char);
    }
    s
}

/// `n` upper-case hex digits (FCTUIDs are 32).
pub fn hex_upper(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| {
            char::from_digit(rng.gen_range(0..16), 16)
                .unwrap()
                .to_ascii_uppercase()
        })
        .collect()
}

/// A locally administered unicast MAC, `aa:bb:cc:dd:ee:ff`.
pub fn mac(rng: &mut impl Rng) -> String {
    let mut b: [u8; 6] = rng.gen();
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An API-token-like string of `n` alphanumerics (FortiOS api-user keys are 30).
pub fn token(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
        .collect()
}

/// A random UUID (version 4, RFC 4122 variant) from the stream, for policy and object uuids.
pub fn uuid(rng: &mut impl Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_labels_are_independent() {
        let a = serial(&mut stream(7, "fgt"), "FGVM01TM");
        let b = serial(&mut stream(7, "fgt"), "FGVM01TM");
        let c = serial(&mut stream(8, "fgt"), "FGVM01TM");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
        assert!(a.starts_with("FGVM01TM"));
        let m = mac(&mut stream(1, "m"));
        assert_eq!(m.len(), 17);
        assert_eq!(hex_upper(&mut stream(1, "u"), 32).len(), 32);
        let u = uuid(&mut stream(1, "u"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "{u}");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
