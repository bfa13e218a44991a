//! Seeded, keyed random draws: every random choice of the mock (the
//! provider's latency, each fault rule's decision) comes from a SplitMix64
//! stream keyed by the seed and stable key parts, never from a shared
//! generator, so it does not depend on thread scheduling. Written out here
//! so that a seed means the same thing on every platform and with every
//! `rand` version.

/// FNV-1a, 64 bits: a stable hash of a key on every platform.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A SplitMix64 stream keyed by a seed and key parts.
pub struct Rng(u64);

impl Rng {
    pub fn keyed(seed: u64, parts: &[u64]) -> Rng {
        let mut key = mix(seed);
        for part in parts {
            key = mix(key ^ part);
        }
        Rng(key)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is below 2^-40
    /// for any latency span in milliseconds.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_pure_in_seed_and_key() {
        let draw = |seed, parts: &[u64]| Rng::keyed(seed, parts).next_u64();
        assert_eq!(draw(1, &[2, 3]), draw(1, &[2, 3]));
        assert_ne!(draw(1, &[2, 3]), draw(2, &[2, 3]));
        assert_ne!(draw(1, &[2, 3]), draw(1, &[3, 2]));
        let mut rng = Rng::keyed(7, &[fnv1a(b"key")]);
        assert_eq!(rng.below(0), 0);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.unit())));
    }

    #[test]
    fn fnv1a_is_the_reference() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
