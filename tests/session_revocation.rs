//! Access tokens carrying a refresh family (`sid`) stop working once the family is revoked:
//! `palisade-authn`'s revocation check backed by `palisade-sessions`.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade::authn::local::{LocalClaims, LocalJwtIssuer};
use palisade::authn::{Authenticator, AuthnError, IssuerConfig, KeySource, SurfacePolicy};
use palisade::core::revocation::RevocationFuture;
use palisade::core::{
    KeyRing, ManualClock, Rejection, RevocationError, SessionRevocation, Surface,
};
use palisade::sessions::{DeviceBinding, MemoryStore, RefreshSessions};
use tower::{Layer, ServiceExt, service_fn};

const ISS: &str = "https://api.example.com/local";

async fn status_of(
    layer: &palisade::authn::AuthnLayer,
    token: &str,
) -> (StatusCode, Option<AuthnError>) {
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let req = Request::builder()
        .uri("/api")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let reason = res
        .extensions()
        .get::<Rejection>()
        .and_then(|r| r.reason_as::<AuthnError>().cloned());
    (res.status(), reason)
}

struct Broken;

impl SessionRevocation for Broken {
    fn is_revoked<'a>(&'a self, _sid: &'a str) -> RevocationFuture<'a> {
        Box::pin(async { Err(RevocationError) })
    }
}

#[tokio::test]
async fn a_revoked_family_stops_its_access_tokens_within_the_staleness_bound() {
    let clock = ManualClock::at_unix(1_800_000_000);
    let ring = KeyRing::parse("k1 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
    let sessions =
        Arc::new(RefreshSessions::new(MemoryStore::new(), ring.clone()).with_clock(clock.shared()));
    let device = DeviceBinding::new("phone", b"ua");
    let (family, refresh) = sessions.start("user-1", &device).await.unwrap();

    let issuer = LocalJwtIssuer::builder(ISS)
        .key_ring(ring)
        .clock(clock.shared())
        .build()
        .unwrap();
    let token = issuer
        .issue(
            &LocalClaims::new("user-1", ["api"])
                .authorized_party("cli")
                .session_id(family.as_str()),
        )
        .unwrap();
    let auth = Authenticator::builder()
        .clock(clock.shared())
        .issuer(
            IssuerConfig::new(ISS)
                .unwrap()
                .key_source(KeySource::Static(issuer.key_set())),
        )
        .build()
        .await
        .unwrap();
    let policy = SurfacePolicy::new(Surface::API)
        .audiences(["api"])
        .authorized_parties(["cli"]);
    let layer = auth.layer(policy.clone()).unwrap().with_revocation(
        ISS,
        sessions.clone(),
        Duration::from_secs(30),
    );

    assert_eq!(status_of(&layer, &token).await.0, StatusCode::OK);
    sessions.logout(refresh.expose()).await.unwrap();
    // Within the staleness bound the cached answer stands...
    assert_eq!(status_of(&layer, &token).await.0, StatusCode::OK);
    // ...after it, the revocation takes effect.
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        status_of(&layer, &token).await,
        (StatusCode::UNAUTHORIZED, Some(AuthnError::SessionRevoked))
    );

    // A checker that cannot answer fails closed.
    let broken =
        auth.layer(policy)
            .unwrap()
            .with_revocation(ISS, Arc::new(Broken), Duration::from_secs(30));
    assert_eq!(
        status_of(&broken, &token).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(AuthnError::RevocationUnavailable)
        )
    );
}
