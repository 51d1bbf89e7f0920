//! One conformance suite per store trait, run against every backend: credentials in memory and
//! in the machine's real PostgreSQL (`PALISADE_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in its own schema); nonces in memory
//! and in the real Redis (`PALISADE_REDIS_URL`, default `redis://127.0.0.1:6379`, each test in
//! its own key prefix). The replay race (1,000 concurrent copies of one signed request) runs
//! through the layer on both nonce stores, and a cut connection to Redis refuses (503).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http::StatusCode;
use palisade_aksk::{
    AccessKeys, CredentialStore, KeyStatus, MemoryCredentialStore, MemoryNonceStore, NewCredential,
    NonceStore, PostgresCredentialStore, RedisNonceStore, VerifyError,
};
use palisade_core::{ManualClock, Profile};
use secrecy::ExposeSecret as _;

static N: AtomicUsize = AtomicUsize::new(0);

fn redis_url() -> String {
    std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn database_url() -> String {
    std::env::var("PALISADE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn redis_nonces() -> RedisNonceStore {
    RedisNonceStore::connect(
        &redis_url(),
        &format!("palisade-aksk-test:{}:", unique("n")),
        Profile::Production,
    )
    .await
    .unwrap()
}

/// Drops the test's schema when the test ends, pass or fail.
struct PgCleanup(String);

impl Drop for PgCleanup {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
                    let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

async fn postgres_credentials() -> (PostgresCredentialStore, PgCleanup) {
    use sqlx::Connection as _;
    use std::str::FromStr as _;
    let schema = unique("palisade_aksk_test");
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let cleanup = PgCleanup(schema.clone());
    let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = PostgresCredentialStore::connect(options).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    (store, cleanup)
}

/// The credential-store contract.
async fn credential_conformance<C: CredentialStore>(store: C) {
    let clock = ManualClock::at_unix(T0);
    let keys = AccessKeys::new(store, cipher(&clock), clock.shared());
    let a = keys
        .issue(NewCredential {
            org: "acme".into(),
            subject: "svc:a".into(),
            roles: vec!["r1".into(), "r2".into()],
            scopes: vec!["s1".into()],
            description: "first".into(),
            lifetime: Some(secs(3600)),
        })
        .await
        .unwrap();
    clock.advance(secs(1));
    let b = keys
        .issue(NewCredential {
            org: "acme".into(),
            subject: "svc:b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    keys.issue(NewCredential {
        org: "other".into(),
        subject: "svc:c".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_ne!(a.key_id, b.key_id);

    // Round trip, and the secret is stored sealed, never in the clear.
    let record = keys.store().get(&a.key_id).await.unwrap().unwrap();
    assert_eq!(record.subject, "svc:a");
    assert_eq!(record.roles, ["r1", "r2"]);
    assert_eq!(record.scopes, ["s1"]);
    assert_eq!(record.expires_at, Some(T0 + 3600));
    assert_eq!(record.status, KeyStatus::Active);
    assert_eq!(record.secrets.len(), 1);
    let sealed = record.secrets[0].sealed.as_bytes();
    let secret = a.secret.expose_secret().as_bytes();
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret),
        "secret stored in the clear"
    );
    assert!(keys.store().get("PKNOSUCHKEY").await.unwrap().is_none());

    // A sealed secret does not open under another key id (bound to its record).
    let mut moved = record.clone();
    moved.key_id = b.key_id.clone();
    let clock2 = ManualClock::at_unix(T0 + 1);
    let verifier = verifier(&clock2);
    let mut req = request("GET", "https://api.example.com/api/x", b"");
    Raw::new(&b.key_id, a.secret.expose_secret(), T0 + 1).sign(&mut req, b"");
    let (parts, _) = req.into_parts();
    assert!(matches!(
        verifier.verify_buffered(&parts, b"", &moved),
        Err(VerifyError::Unavailable(_))
    ));

    // Listing: per org, oldest first, metadata only.
    let listed = keys.list("acme").await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.key_id.as_str()).collect::<Vec<_>>(),
        [a.key_id.as_str(), b.key_id.as_str()]
    );
    assert_eq!(keys.list("nobody").await.unwrap().len(), 0);

    // Status.
    keys.disable(&a.key_id).await.unwrap();
    assert_eq!(
        keys.store().get(&a.key_id).await.unwrap().unwrap().status,
        KeyStatus::Disabled
    );
    keys.enable(&a.key_id).await.unwrap();
    assert!(keys.disable("PKNOSUCHKEY").await.is_err());

    // Rotation is a compare-and-set: a stale expected version loses.
    let rotated = keys.rotate(&a.key_id, secs(60)).await.unwrap();
    assert_eq!(rotated.version, 2);
    let record = keys.store().get(&a.key_id).await.unwrap().unwrap();
    assert_eq!(
        record.secrets.iter().map(|s| s.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(record.secrets[1].not_after, Some(T0 + 1 + 60));
    assert!(
        !keys
            .store()
            .replace_secrets(&a.key_id, 1, &record.secrets)
            .await
            .unwrap()
    );
    assert!(
        !keys
            .store()
            .replace_secrets("PKNOSUCHKEY", 1, &record.secrets)
            .await
            .unwrap()
    );
    // A second rotation drops the oldest secret: never more than two.
    let again = keys.rotate(&a.key_id, secs(0)).await.unwrap();
    assert_eq!(again.version, 3);
    let record = keys.store().get(&a.key_id).await.unwrap().unwrap();
    assert_eq!(
        record.secrets.iter().map(|s| s.version).collect::<Vec<_>>(),
        [3]
    );

    // Two rotations that read the same version: the second write loses.
    let seen = keys.store().get(&b.key_id).await.unwrap().unwrap();
    let version = seen.secrets[0].version;
    assert!(
        keys.store()
            .replace_secrets(&b.key_id, version, &seen.secrets)
            .await
            .unwrap()
    );
    let mut bumped = seen.secrets.clone();
    bumped[0].version += 1;
    assert!(
        keys.store()
            .replace_secrets(&b.key_id, version, &bumped)
            .await
            .unwrap()
    );
    assert!(
        !keys
            .store()
            .replace_secrets(&b.key_id, version, &seen.secrets)
            .await
            .unwrap()
    );

    // Duplicate ids are refused.
    let dup = keys.store().get(&b.key_id).await.unwrap().unwrap();
    assert!(keys.store().insert(&dup).await.is_err());
}

/// The nonce-store contract.
async fn nonce_conformance<N: NonceStore>(store: N) {
    let now = std::time::SystemTime::UNIX_EPOCH + secs(T0);
    let ttl = secs(241);
    let n = nonce();
    assert!(store.insert_once("PKA", &n, ttl, now).await.unwrap());
    assert!(!store.insert_once("PKA", &n, ttl, now).await.unwrap());
    // Per key: the same nonce under another key is another pair.
    assert!(store.insert_once("PKB", &n, ttl, now).await.unwrap());
    // Concurrent inserts of one pair: exactly one wins.
    let store = Arc::new(store);
    let m = nonce();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let store = store.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            store.insert_once("PKA", &m, ttl, now).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn memory_credentials_conform() {
    credential_conformance(MemoryCredentialStore::new()).await;
}

#[tokio::test]
async fn postgres_credentials_conform() {
    let (store, _cleanup) = postgres_credentials().await;
    credential_conformance(store).await;
}

#[tokio::test]
async fn memory_nonces_conform() {
    nonce_conformance(MemoryNonceStore::new()).await;
}

#[tokio::test]
async fn redis_nonces_conform() {
    let store = redis_nonces().await;
    nonce_conformance(store.clone()).await;
    // The TTL covers the window on both sides.
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = store.key("PKTTL", "n1");
    let now = std::time::SystemTime::now();
    assert!(
        store
            .insert_once("PKTTL", "n1", secs(241), now)
            .await
            .unwrap()
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 240_000 && pttl <= 241_000, "{pttl}");
    assert!(key.contains("{PKTTL}"), "hash tag per key: {key}");
}

async fn thousand_copies<C, N>(fx: Arc<Fixture<C, N>>)
where
    Arc<C>: CredentialStore,
    N: NonceStore,
    C: Send + Sync + 'static,
{
    let req = aws_signed(&fx, "POST", "https://api.example.com/api/orders?a=1", b"{}");
    let body = Bytes::from_static(b"{}");
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let fx = fx.clone();
        let copy = clone_request(&req, &body);
        tasks.push(tokio::spawn(async move { send(&fx, copy).await.status() }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&401), Some(&999), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_copies_on_redis_and_postgres_are_accepted_once() {
    let (credentials, _cleanup) = postgres_credentials().await;
    let fx = Arc::new(fixture_with(credentials, redis_nonces().await).await);
    thousand_copies(fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_copies_in_memory_are_accepted_once() {
    thousand_copies(Arc::new(fixture().await)).await;
}

use palisade_testkit::relay::relay_to;

#[tokio::test]
async fn an_unreachable_nonce_store_refuses_signed_requests() {
    let (port, cut) = relay_to("127.0.0.1:6379").await;
    let nonces = RedisNonceStore::connect(
        &format!("redis://127.0.0.1:{port}"),
        &format!("palisade-aksk-test:{}:", unique("cut")),
        Profile::Production,
    )
    .await
    .unwrap();
    let fx = fixture_with(MemoryCredentialStore::new(), nonces).await;
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);
    cut.send(true).unwrap();
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    let reply = send(&fx, req).await;
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(reason(&reply), Some(VerifyError::Unavailable(_))));
}

#[tokio::test]
async fn an_unreachable_credential_store_refuses_signed_requests() {
    use std::str::FromStr as _;
    let (port, cut) = relay_to("127.0.0.1:5432").await;
    let (direct, _cleanup) = postgres_credentials().await;
    let schema = _cleanup.0.clone();
    let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
        .unwrap()
        .host("127.0.0.1")
        .port(port)
        .options([("search_path", schema.as_str())]);
    let relayed = PostgresCredentialStore::connect(options).await.unwrap();
    let fx = fixture_with(relayed, MemoryNonceStore::new()).await;
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    assert_eq!(send(&fx, req).await.status(), StatusCode::OK);
    cut.send(true).unwrap();
    let req = aws_signed(&fx, "GET", "https://api.example.com/api/orders", b"");
    let reply = send(&fx, req).await;
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(reason(&reply), Some(VerifyError::Unavailable(_))));
    drop(direct);
}

#[tokio::test]
async fn production_refuses_plaintext_remote_stores() {
    let err = RedisNonceStore::connect("redis://10.0.0.5:6379", "p:", Profile::Production)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store-plaintext"), "{err}");
    let err = PostgresCredentialStore::connect_url("postgres://u@10.0.0.5/db", Profile::Production)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store-plaintext"), "{err}");
}
