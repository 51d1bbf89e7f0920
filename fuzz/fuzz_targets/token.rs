//! The whole access-token pipeline on arbitrary input: split, header, claims, key lookup,
//! signature. Must never panic and never accept.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use palisade_authn::{Authenticator, IssuerConfig, KeySet, KeySource, SurfacePolicy};
use palisade_core::{ManualClock, Surface};

const JWKS: &str = include_str!("../../crates/authn/tests/keys/jwks.json");

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("static keys never wait"),
    }
}

fn auth() -> &'static (Authenticator, SurfacePolicy) {
    static AUTH: OnceLock<(Authenticator, SurfacePolicy)> = OnceLock::new();
    AUTH.get_or_init(|| {
        let keys = KeySet::from_jwks(JWKS.as_bytes()).expect("jwks");
        let auth = now(Authenticator::builder()
            .clock(ManualClock::at_unix(1_800_000_000).shared())
            .issuer(IssuerConfig::new("https://sso.example.com/realms/acme").expect("issuer").key_source(KeySource::Static(keys)))
            .build())
        .expect("authenticator");
        let policy = SurfacePolicy::new(Surface::API).audiences(["api"]).authorized_parties(["web"]);
        (auth, policy)
    })
}

fuzz_target!(|data: &[u8]| {
    let (auth, policy) = auth();
    let token = String::from_utf8_lossy(data);
    assert!(now(auth.verify(&token, policy)).is_err());
});
