//! The keyed hash behind the in-process tables: two `foldhash` hashers whose seeds come from
//! the operating system's generator (a process-wide shared seed and a seed per hasher, per
//! table).
//!
//! `foldhash` is not a cryptographic hash. Callers cannot choose which slots their keys land in
//! without the seeds, which never leave the process; the 128-bit form names a bucket, so two
//! keys share state only on a collision of both 64-bit halves. The parts of a key are hashed
//! where they are (no joined copy: a copy read back at once stalls the CPU's store
//! forwarding), after their lengths, so the encoding is unambiguous.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;

/// A keyed hash (see the module docs). Its seeds are never printed.
pub(crate) struct KeyedHash {
    first: SeedableRandomState,
    second: SeedableRandomState,
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash")
    }
}

impl Default for KeyedHash {
    fn default() -> Self {
        use rand::RngCore as _;
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let mut rng = rand::rng();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(rng.next_u64()));
        Self {
            first: SeedableRandomState::with_seed(rng.next_u64(), shared),
            second: SeedableRandomState::with_seed(rng.next_u64(), shared),
        }
    }
}

impl KeyedHash {
    /// 64 bits of keyed hash of `text`.
    #[inline]
    pub(crate) fn hash64(&self, text: &str) -> u64 {
        self.first.hash_one(text)
    }

    /// 128 bits of keyed hash of `parts`, in order.
    ///
    /// The parts' lengths go first, as one word of four 16-bit fields, then their bytes (one
    /// word and one write per part, not a separator each); a key with more parts or a longer
    /// one is encoded as a word no such key can have (all ones), then each part followed by
    /// `0xff`, which is never in UTF-8.
    #[inline]
    pub(crate) fn hash128<const N: usize>(&self, parts: [&str; N]) -> u128 {
        let (mut a, mut b) = (self.first.build_hasher(), self.second.build_hasher());
        let short = N <= 4 && parts.iter().all(|p| p.len() < 0xffff);
        if short {
            let lengths = parts
                .iter()
                .fold(0u64, |acc, p| (acc << 16) | p.len() as u64);
            a.write_u64(lengths);
            b.write_u64(lengths);
            for part in parts {
                a.write(part.as_bytes());
                b.write(part.as_bytes());
            }
        } else {
            a.write_u64(u64::MAX);
            b.write_u64(u64::MAX);
            for part in parts {
                part.hash(&mut a);
                part.hash(&mut b);
            }
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }
}

/// The hasher of tables whose keys are already keyed hashes: a key writes one word of its
/// hash, which passes through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for the keys of these tables; fold anything else all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// `dst.copy_from_slice(src)` for the short parts of a key, as a few loads and stores rather
/// than a call to `memcpy` (which costs more than the copy at these sizes).
#[inline(always)]
pub(crate) fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        // Not reached: callers pass slices of equal length.
        return;
    }
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        33..=64 => {
            dst[..32].copy_from_slice(&src[..32]);
            dst[n - 32..].copy_from_slice(&src[n - 32..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn small_copies_copy(src in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut dst = vec![0u8; src.len()];
            copy_small(&mut dst, &src);
            prop_assert_eq!(dst, src);
        }

        /// Moving a part boundary changes the hash.
        #[test]
        fn part_boundaries_count(a in ".{0,70}", b in ".{1,70}") {
            let h = KeyedHash::default();
            let moved = format!("{a}{}", &b[..b.chars().next().map_or(0, char::len_utf8)]);
            let rest = &b[moved.len() - a.len()..];
            prop_assert_ne!(h.hash128([&a, &b]), h.hash128([&moved, rest]));
            prop_assert_eq!(h.hash128([&a, &b]), h.hash128([&a, &b]));
        }

        /// Long parts take the other encoding; boundaries still count.
        #[test]
        fn long_parts_hash_apart(n in 0xfff0usize..0x10010, cut in 0usize..3) {
            let h = KeyedHash::default();
            let long = "x".repeat(n);
            let (a, b) = long.split_at(cut);
            let (c, d) = long.split_at(cut + 1);
            prop_assert_ne!(h.hash128([a, b]), h.hash128([c, d]));
            prop_assert_ne!(h.hash128([a, b]), h.hash128([b, a]));
        }
    }

    #[test]
    fn seeds_differ_per_table() {
        let (a, b) = (KeyedHash::default(), KeyedHash::default());
        assert_ne!(a.hash64("acme"), b.hash64("acme"));
        assert_ne!(a.hash128(["acme"]), b.hash128(["acme"]));
    }
}
