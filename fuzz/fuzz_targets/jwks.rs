//! JWKS documents from a hostile or broken provider: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_authn::KeySet;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = KeySet::from_jwks(data) {
        assert!(set.len() <= palisade_authn::jwks::MAX_KEYS);
    }
});
