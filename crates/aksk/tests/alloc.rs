//! The signing-key cache hit allocates nothing (counted by an instrumented global allocator;
//! this file holds one test so no other thread allocates meanwhile).

#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::System;

use common::*;
use palisade_aksk::{CredentialRecord, KeyStatus, StoredSecret};
use palisade_core::ManualClock;
use palisade_field_crypto::FieldContext;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_signing_key_cache_hit_allocates_nothing() {
    let clock = ManualClock::at_unix(T0);
    let verifier = verifier(&clock);
    let sealed = cipher(&clock)
        .encrypt(
            &FieldContext::new("palisade_access_keys", "secret.1", "PKALLOC"),
            b"secret",
        )
        .unwrap();
    let record = CredentialRecord {
        key_id: "PKALLOC".into(),
        org: "acme".into(),
        subject: "svc:alloc".into(),
        roles: vec![],
        scopes: vec![],
        description: String::new(),
        status: KeyStatus::Active,
        created_at: T0,
        expires_at: None,
        secrets: vec![StoredSecret {
            version: 1,
            sealed,
            not_after: None,
        }],
    };
    let secret = &record.secrets[0];
    // The miss opens the secret and derives the key: that allocates.
    let region = Region::new(GLOBAL);
    let first = verifier.signing_key("PKALLOC", secret, "20261129").unwrap();
    assert!(region.change().allocations > 0, "the miss was not a miss");
    // The hit does not.
    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        let again = verifier.signing_key("PKALLOC", secret, "20261129").unwrap();
        assert_eq!(again.sign(b"x"), first.sign(b"x"));
    }
    let change = region.change();
    assert_eq!(change.allocations, 0, "{change:?}");
    assert_eq!(change.reallocations, 0, "{change:?}");
}
