//! One conformance suite, run against every store: the in-memory store, the real Redis of
//! this machine (`PALISADE_REDIS_URL`, default `redis://127.0.0.1:6379`, each test in its own
//! key prefix) and the real PostgreSQL (`PALISADE_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, each test in its own schema).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{KeyRing, ManualClock};
use palisade_sessions::{
    DeviceBinding, RefreshSessions, RefreshStore, SessionError, SessionPolicy,
};

const K1: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const K2: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const T0: u64 = 1_800_000_000;

fn phone() -> DeviceBinding {
    DeviceBinding::new("phone-1", b"ua=app/1.0")
}

fn sessions<S: RefreshStore>(store: S, clock: &ManualClock) -> RefreshSessions<S> {
    RefreshSessions::new(store, KeyRing::parse(&format!("k1 1 {K1}")).unwrap())
        .with_clock(clock.shared())
        .with_policy(SessionPolicy {
            absolute_lifetime: Duration::from_secs(30 * 86_400),
            idle_timeout: Duration::from_secs(86_400),
            ..SessionPolicy::default()
        })
}

mod suite {
    use super::*;

    pub(super) async fn rotation_chain<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        let (family, mut token) = s.start("alice", &phone()).await.unwrap();
        for _ in 0..5 {
            clock.advance(Duration::from_secs(60));
            let next = s.refresh(token.expose(), &phone()).await.unwrap();
            assert_eq!(next.family, family);
            assert_eq!(next.user_id, "alice");
            assert_ne!(next.token.expose(), token.expose());
            token = next.token;
        }
        assert!(!s.is_revoked(&family).await.unwrap());
    }

    pub(super) async fn reuse_revokes_the_family<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        let (family, first) = s.start("alice", &phone()).await.unwrap();
        let second = s.refresh(first.expose(), &phone()).await.unwrap().token;
        assert_eq!(
            s.refresh(first.expose(), &phone()).await.unwrap_err(),
            SessionError::Reused
        );
        // The newest token stops working too.
        assert_eq!(
            s.refresh(second.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );
        assert!(s.is_revoked(&family).await.unwrap());
    }

    pub(super) async fn another_device_is_refused<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        let (_, token) = s.start("alice", &phone()).await.unwrap();
        let laptop = DeviceBinding::new("laptop-7", b"ua=browser");
        let same_id_other_metadata = DeviceBinding::new("phone-1", b"ua=curl");
        let dpop = phone().with_dpop_jkt("thumbprint");
        for device in [laptop, same_id_other_metadata, dpop] {
            assert_eq!(
                s.refresh(token.expose(), &device).await.unwrap_err(),
                SessionError::DeviceMismatch
            );
        }
        // Refused, not consumed: the real device still refreshes.
        assert!(s.refresh(token.expose(), &phone()).await.is_ok());
    }

    pub(super) async fn logout_and_logout_everywhere<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        let (family, a) = s.start("alice", &phone()).await.unwrap();
        // The family id is public (it is the access token's `sid`): with a made-up secret it
        // logs nobody out.
        let forged = format!("rt1.{}.{}", family.as_str(), "A".repeat(43));
        assert!(!s.logout(&forged).await.unwrap());
        assert!(!s.is_revoked(&family).await.unwrap());
        // A spent token still proves the family (logging out with a stale token works) ...
        let a2 = s.refresh(a.expose(), &phone()).await.unwrap().token;
        assert!(s.logout(a.expose()).await.unwrap());
        assert!(s.is_revoked(&family).await.unwrap());
        assert_eq!(
            s.refresh(a2.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );
        // ... as does the current one.
        let (_, a) = s.start("alice", &phone()).await.unwrap();
        assert!(s.logout(a.expose()).await.unwrap());
        assert_eq!(
            s.refresh(a.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );

        let (_, b) = s.start("bob", &phone()).await.unwrap();
        let (_, c) = s
            .start("bob", &DeviceBinding::new("tablet", b"x"))
            .await
            .unwrap();
        let (_, d) = s.start("carol", &phone()).await.unwrap();
        assert_eq!(s.logout_everywhere("bob").await.unwrap(), 2);
        assert_eq!(
            s.refresh(b.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );
        assert_eq!(
            s.refresh(c.expose(), &DeviceBinding::new("tablet", b"x"))
                .await
                .unwrap_err(),
            SessionError::Revoked
        );
        assert!(
            s.refresh(d.expose(), &phone()).await.is_ok(),
            "other users are untouched"
        );
    }

    pub(super) async fn absolute_and_idle_expiry<S: RefreshStore + Clone>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        // Idle: more than a day without a refresh.
        let (_, idle) = s.start("alice", &phone()).await.unwrap();
        clock.advance(Duration::from_secs(86_401));
        assert_eq!(
            s.refresh(idle.expose(), &phone()).await.unwrap_err(),
            SessionError::Expired
        );
        // Absolute: refreshing daily for 30 days does not extend the family.
        let (_, mut token) = s.start("alice", &phone()).await.unwrap();
        for _ in 0..30 {
            clock.advance(Duration::from_secs(86_000));
            token = s.refresh(token.expose(), &phone()).await.unwrap().token;
        }
        clock.advance(Duration::from_secs(86_000));
        assert_eq!(
            s.refresh(token.expose(), &phone()).await.unwrap_err(),
            SessionError::Expired
        );
    }

    pub(super) async fn tokens_survive_a_key_rotation<S: RefreshStore + Clone>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let before = sessions(store.clone(), &clock);
        let (_, token) = before.start("alice", &phone()).await.unwrap();
        // A new key becomes active; the old one still verifies.
        let ring = KeyRing::parse(&format!("k1 1 {K1}\nk2 2 {K2}")).unwrap();
        let after = RefreshSessions::new(store, ring).with_clock(clock.shared());
        let next = after.refresh(token.expose(), &phone()).await.unwrap();
        assert!(after.refresh(next.token.expose(), &phone()).await.is_ok());
    }

    pub(super) async fn hostile_tokens<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = sessions(store, &clock);
        let (family, token) = s.start("alice", &phone()).await.unwrap();
        let forged = format!("rt1.{}.{}", family.as_str(), "A".repeat(43));
        for bad in [
            "",
            "garbage",
            "rt1.x.y",
            &token.expose().replace("rt1", "rt2"),
            &forged,
        ] {
            assert_eq!(
                s.refresh(bad, &phone()).await.unwrap_err(),
                SessionError::InvalidToken,
                "{bad}"
            );
        }
        // A forged token for a real family is not reuse: the family survives.
        assert!(s.refresh(token.expose(), &phone()).await.is_ok());
        let unknown = palisade_sessions::FamilyId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(
            s.is_revoked(&unknown).await.unwrap(),
            "unknown families count as revoked"
        );
    }

    pub(super) async fn grace_window<S: RefreshStore + Clone>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = RefreshSessions::new(store, KeyRing::parse(&format!("k1 1 {K1}")).unwrap())
            .with_clock(clock.shared())
            .with_policy(SessionPolicy {
                grace: Some(Duration::from_secs(30)),
                ..SessionPolicy::default()
            });
        let (_, first) = s.start("alice", &phone()).await.unwrap();
        let second = s.refresh(first.expose(), &phone()).await.unwrap().token;
        // The answer was lost: the same device retries in time and gets the same successor.
        clock.advance(Duration::from_secs(10));
        let retried = s.refresh(first.expose(), &phone()).await.unwrap().token;
        assert_eq!(
            retried.expose(),
            second.expose(),
            "the same successor, never a second one"
        );
        // From another device it is reuse: the family dies.
        let (_, a) = s.start("alice", &phone()).await.unwrap();
        let b = s.refresh(a.expose(), &phone()).await.unwrap().token;
        let laptop = DeviceBinding::new("laptop-7", b"ua=browser");
        assert_eq!(
            s.refresh(a.expose(), &laptop).await.unwrap_err(),
            SessionError::Reused
        );
        assert_eq!(
            s.refresh(b.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );
        // Once the successor is used, the older token is plain reuse.
        let third = s.refresh(second.expose(), &phone()).await.unwrap().token;
        assert_eq!(
            s.refresh(first.expose(), &phone()).await.unwrap_err(),
            SessionError::Reused
        );
        assert_eq!(
            s.refresh(third.expose(), &phone()).await.unwrap_err(),
            SessionError::Revoked
        );
        // After the window, a retry is reuse.
        let (_, c) = s.start("alice", &phone()).await.unwrap();
        s.refresh(c.expose(), &phone()).await.unwrap();
        clock.advance(Duration::from_secs(31));
        assert_eq!(
            s.refresh(c.expose(), &phone()).await.unwrap_err(),
            SessionError::Reused
        );
    }

    /// 64 concurrent refreshes of one token: the store serialises them, so exactly one
    /// rotates and the other 63 present a consumed token, which revokes the family.
    pub(super) async fn concurrent_refreshes<S: RefreshStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let s = Arc::new(sessions(store, &clock));
        let (family, token) = s.start("alice", &phone()).await.unwrap();
        let token = Arc::new(token.expose().to_owned());
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (s, token) = (s.clone(), token.clone());
            tasks.push(tokio::spawn(
                async move { s.refresh(&token, &phone()).await },
            ));
        }
        let mut successors = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => successors.push(r.token),
                Err(e) => assert!(
                    matches!(e, SessionError::Reused | SessionError::Revoked),
                    "{e:?}"
                ),
            }
        }
        assert_eq!(successors.len(), 1, "exactly one rotation wins");
        assert!(s.is_revoked(&family).await.unwrap());
        assert_eq!(
            s.refresh(successors[0].expose(), &phone())
                .await
                .unwrap_err(),
            SessionError::Revoked
        );
    }
}

/// Nothing to clean up.
struct NoCleanup;

mod single_use_suite {
    use palisade_sessions::single_use::{Purpose, SingleUseError, SingleUseStore, SingleUseTokens};

    use super::*;

    fn tokens<S: SingleUseStore>(store: S, clock: &ManualClock) -> SingleUseTokens<S> {
        SingleUseTokens::new(store, KeyRing::parse(&format!("k1 1 {K1}")).unwrap())
            .with_clock(clock.shared())
    }

    pub(super) async fn consumed_once_and_purpose_bound<S: SingleUseStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let t = tokens(store, &clock);
        let verify = Purpose::email_verification();
        let token = t.issue(&verify, "alice").await.unwrap();
        // Another purpose neither accepts nor spends it.
        assert_eq!(
            t.consume(&Purpose::password_reset(), token.expose())
                .await
                .unwrap_err(),
            SingleUseError::Invalid
        );
        assert_eq!(t.consume(&verify, token.expose()).await.unwrap(), "alice");
        assert_eq!(
            t.consume(&verify, token.expose()).await.unwrap_err(),
            SingleUseError::Invalid
        );
        for bad in [
            "",
            "short",
            &"A".repeat(43),
            &format!("{}x", token.expose()),
        ] {
            assert_eq!(
                t.consume(&verify, bad).await.unwrap_err(),
                SingleUseError::Invalid,
                "{bad}"
            );
        }
    }

    pub(super) async fn expiry_and_purge<S: SingleUseStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let t = tokens(store, &clock)
            .lifetime(Purpose::invitation(), Duration::from_secs(15 * 60))
            .unwrap();
        let invite = t.issue(&Purpose::invitation(), "bob").await.unwrap();
        let verify = t
            .issue(&Purpose::email_verification(), "bob")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(15 * 60));
        assert_eq!(
            t.consume(&Purpose::invitation(), invite.expose())
                .await
                .unwrap_err(),
            SingleUseError::Expired
        );
        // The 30-minute default is still valid; after it, a purge sweeps it away (the invite
        // went when it was presented; stores whose keys expire on their own, like Redis,
        // report 0) and keeps live tokens.
        clock.advance(Duration::from_secs(15 * 60));
        let live = t.issue(&Purpose::password_reset(), "bob").await.unwrap();
        let purged = t.purge().await.unwrap();
        assert!(matches!(purged, 0 | 1), "purged {purged}");
        assert!(
            t.consume(&Purpose::email_verification(), verify.expose())
                .await
                .is_err()
        );
        assert_eq!(
            t.consume(&Purpose::password_reset(), live.expose())
                .await
                .unwrap(),
            "bob",
            "a purge keeps tokens that have not expired"
        );
        assert!(
            tokens(MemorySingleUseStoreHolder::store(), &clock)
                .lifetime(Purpose::invitation(), Duration::from_secs(60))
                .is_err()
        );
        assert!(
            tokens(MemorySingleUseStoreHolder::store(), &clock)
                .lifetime(Purpose::invitation(), Duration::from_secs(3601))
                .is_err()
        );
    }

    pub(super) async fn new_reset_and_password_change_revoke<S: SingleUseStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let t = tokens(store, &clock);
        let reset = Purpose::password_reset();
        let old = t.issue(&reset, "carol").await.unwrap();
        let new = t.issue(&reset, "carol").await.unwrap();
        assert_eq!(
            t.consume(&reset, old.expose()).await.unwrap_err(),
            SingleUseError::Invalid,
            "a new reset revokes the old one"
        );
        let verify = t
            .issue(&Purpose::email_verification(), "carol")
            .await
            .unwrap();
        let other = t.issue(&reset, "dave").await.unwrap();
        assert!(t.revoke_subject("carol").await.unwrap() >= 2);
        assert!(t.consume(&reset, new.expose()).await.is_err());
        assert!(
            t.consume(&Purpose::email_verification(), verify.expose())
                .await
                .is_err()
        );
        assert_eq!(t.consume(&reset, other.expose()).await.unwrap(), "dave");
    }

    pub(super) async fn concurrent_consumption<S: SingleUseStore>(store: S) {
        let clock = ManualClock::at_unix(T0);
        let t = Arc::new(tokens(store, &clock));
        let token = Arc::new(
            t.issue(&Purpose::password_reset(), "erin")
                .await
                .unwrap()
                .expose()
                .to_owned(),
        );
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (t, token) = (t.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                t.consume(&Purpose::password_reset(), &token).await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }
}

/// A throwaway in-memory store for configuration checks.
struct MemorySingleUseStoreHolder;

impl MemorySingleUseStoreHolder {
    fn store() -> palisade_sessions::MemorySingleUseStore {
        palisade_sessions::MemorySingleUseStore::new()
    }
}

macro_rules! single_use_conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consumed_once_and_purpose_bound() {
                let (store, _cleanup) = $make;
                single_use_suite::consumed_once_and_purpose_bound(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expiry_and_purge() {
                let (store, _cleanup) = $make;
                single_use_suite::expiry_and_purge(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn new_reset_and_password_change_revoke() {
                let (store, _cleanup) = $make;
                single_use_suite::new_reset_and_password_change_revoke(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_consumption() {
                let (store, _cleanup) = $make;
                single_use_suite::concurrent_consumption(store).await
            }
        }
    };
}

single_use_conformance!(
    memory_single_use,
    (palisade_sessions::MemorySingleUseStore::new(), NoCleanup)
);

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rotation_chain() {
                let (store, _cleanup) = $make;
                suite::rotation_chain(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reuse_revokes_the_family() {
                let (store, _cleanup) = $make;
                suite::reuse_revokes_the_family(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn another_device_is_refused() {
                let (store, _cleanup) = $make;
                suite::another_device_is_refused(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn logout_and_logout_everywhere() {
                let (store, _cleanup) = $make;
                suite::logout_and_logout_everywhere(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn absolute_and_idle_expiry() {
                let (store, _cleanup) = $make;
                suite::absolute_and_idle_expiry(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tokens_survive_a_key_rotation() {
                let (store, _cleanup) = $make;
                suite::tokens_survive_a_key_rotation(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_tokens() {
                let (store, _cleanup) = $make;
                suite::hostile_tokens(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn grace_window() {
                let (store, _cleanup) = $make;
                suite::grace_window(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_refreshes() {
                let (store, _cleanup) = $make;
                suite::concurrent_refreshes(store).await
            }
        }
    };
}

conformance!(memory, (palisade_sessions::MemoryStore::new(), NoCleanup));

#[cfg(feature = "redis")]
fn redis_url() -> String {
    std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
#[cfg(feature = "redis")]
fn prefix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "palisade-test:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Deletes a test's keys when it ends, pass or fail.
#[cfg(feature = "redis")]
struct RedisCleanup(String);

#[cfg(feature = "redis")]
impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = ::redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

#[cfg(feature = "redis")]
async fn redis_store() -> (palisade_sessions::RedisStore, RedisCleanup) {
    let prefix = prefix();
    let store = palisade_sessions::RedisStore::connect(&redis_url(), &prefix)
        .await
        .unwrap();
    (store, RedisCleanup(prefix))
}

#[cfg(feature = "redis")]
conformance!(redis, redis_store().await);

#[cfg(feature = "redis")]
async fn redis_single_use_store() -> (palisade_sessions::RedisSingleUseStore, RedisCleanup) {
    let (store, cleanup) = redis_store().await;
    (palisade_sessions::RedisSingleUseStore::new(&store), cleanup)
}

#[cfg(feature = "redis")]
single_use_conformance!(redis_single_use, redis_single_use_store().await);

/// A family created later with a shorter lifetime (the policy changed) must not cut the
/// user's index short: "log out everywhere" has to find the older, longer-lived family.
#[cfg(feature = "redis")]
#[tokio::test]
async fn the_redis_user_index_outlives_every_family() {
    use palisade_sessions::{Family, FamilyId, TokenHash};
    let (store, cleanup) = redis_store().await;
    let family = |id: &str, absolute_expiry: u64| Family {
        id: FamilyId::parse(id).unwrap(),
        user_id: "alice".to_owned(),
        device: phone(),
        absolute_expiry,
        idle_timeout: 86_400,
        created_at: T0,
    };
    let long = T0 + 90 * 86_400;
    store
        .create(&family("AAAAAAAAAAAAAAAAAAAAAA", long), &TokenHash([1; 32]))
        .await
        .unwrap();
    store
        .create(
            &family("BBBBBBBBBBBBBBBBBBBBBB", T0 + 3600),
            &TokenHash([2; 32]),
        )
        .await
        .unwrap();
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let at: i64 = ::redis::cmd("EXPIRETIME")
        .arg(format!("{}:u:alice", cleanup.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at, i64::try_from(long).unwrap());
}

/// A loopback TCP relay in front of a real server: `cut` drops the listener and every
/// relayed connection, as a network partition or a server crash would.
#[cfg(any(feature = "redis", feature = "postgres"))]
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl Relay {
    async fn to(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, task }
    }

    /// Aborting the accept loop drops its `JoinSet`, which aborts every relayed connection.
    async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_going_down_mid_session_fails_closed() {
    let info = ::redis::IntoConnectionInfo::into_connection_info(redis_url().as_str()).unwrap();
    let ::redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        panic!("the test Redis is reached over plain TCP");
    };
    let relay = Relay::to(format!("{host}:{port}")).await;
    let prefix = prefix();
    let _cleanup = RedisCleanup(prefix.clone());
    let store = palisade_sessions::RedisStore::connect(
        &format!("redis://127.0.0.1:{}", relay.port),
        &prefix,
    )
    .await
    .unwrap();
    let clock = ManualClock::at_unix(T0);
    let s = sessions(store, &clock);
    let (family, token) = s.start("alice", &phone()).await.unwrap();
    relay.cut().await;
    assert_eq!(
        s.refresh(token.expose(), &phone()).await.unwrap_err(),
        SessionError::Unavailable
    );
    assert!(
        s.is_revoked(&family).await.is_err(),
        "no answer is not 'live'"
    );
    assert!(s.logout(token.expose()).await.is_err());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn an_unreachable_redis_is_an_error_never_a_refresh() {
    let err = palisade_sessions::RedisStore::connect("redis://127.0.0.1:1", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[cfg(feature = "postgres")]
fn database_url() -> String {
    std::env::var("PALISADE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops a test's schema when it ends, pass or fail.
#[cfg(feature = "postgres")]
struct PgCleanup(String);

#[cfg(feature = "postgres")]
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

#[cfg(feature = "postgres")]
async fn postgres_store() -> (palisade_sessions::PostgresStore, PgCleanup) {
    postgres_store_on(None).await
}

/// A store in a fresh schema, connecting to the real server directly or through a relay port.
#[cfg(feature = "postgres")]
async fn postgres_store_on(relay: Option<u16>) -> (palisade_sessions::PostgresStore, PgCleanup) {
    use sqlx::Connection as _;
    use std::str::FromStr as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "palisade_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let cleanup = PgCleanup(schema.clone());
    let mut options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    if let Some(port) = relay {
        options = options.host("127.0.0.1").port(port);
    }
    let store = palisade_sessions::PostgresStore::connect(options)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    // Migrations are idempotent.
    store.migrate().await.unwrap();
    (store, cleanup)
}

#[cfg(feature = "postgres")]
conformance!(postgres, postgres_store().await);

#[cfg(feature = "postgres")]
single_use_conformance!(postgres_single_use, postgres_store().await);

#[cfg(feature = "postgres")]
#[tokio::test]
async fn an_unreachable_database_is_an_error_never_a_refresh() {
    use std::str::FromStr as _;
    let options =
        sqlx::postgres::PgConnectOptions::from_str("postgres://postgres@127.0.0.1:1/test").unwrap();
    assert!(
        palisade_sessions::PostgresStore::connect(options)
            .await
            .is_err()
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_going_down_mid_session_fails_closed() {
    use std::str::FromStr as _;
    let options = sqlx::postgres::PgConnectOptions::from_str(&database_url()).unwrap();
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let relay = Relay::to(target).await;
    let port = relay.port;
    let (store, _cleanup) = postgres_store_on(Some(port)).await;
    let clock = ManualClock::at_unix(T0);
    let s = sessions(store, &clock);
    let (family, token) = s.start("alice", &phone()).await.unwrap();
    relay.cut().await;
    assert_eq!(
        s.refresh(token.expose(), &phone()).await.unwrap_err(),
        SessionError::Unavailable
    );
    assert!(
        s.is_revoked(&family).await.is_err(),
        "no answer is not 'live'"
    );
}

#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn plaintext_stores_off_this_machine_are_refused_in_production() {
    use palisade_core::{Posture, Profile};
    let cases = [
        // URLs written to fool a hand-rolled parser: the drivers connect to the remote host.
        ("redis://evil.example#@localhost:6379", true),
        ("redis://evil.example:6379/0?x=@127.0.0.1", true),
        ("rediss://cache.internal:6380/#insecure", true),
        (
            "postgres://app@db.internal/prod?sslmode=verify-full&sslmode=disable",
            true,
        ),
        ("postgres://app@127.0.0.1/prod?host=db.internal", true),
        (
            "postgres://app@localhost/prod?host=/var/run/postgresql",
            false,
        ),
        ("memcached://127.0.0.1", true),
        ("not a url", true),
        ("redis://10.0.0.5:6379", true),
        ("redis://user:pw@cache.internal:6379/0", true),
        ("rediss://cache.internal:6380", false),
        ("redis://127.0.0.1:6379", false),
        ("redis://[::1]:6379", false),
        ("postgres://app@db.internal/prod", true),
        ("postgres://app@db.internal/prod?sslmode=require", true),
        ("postgres://app@db.internal/prod?sslmode=verify-full", false),
        ("postgres://postgres@127.0.0.1:5432/test", false),
    ];
    for (url, refused) in cases {
        let mut posture = Posture::new(Profile::Production, "t");
        palisade_sessions::check_transport(url, &mut posture);
        assert_eq!(posture.finish().is_err(), refused, "{url}");
    }
}

#[cfg(feature = "local-login")]
mod accounts_suite {
    use palisade_sessions::local_login::{Account, AccountStore};

    fn account(email: &str) -> Account {
        Account {
            user_id: format!("local:{email}"),
            email: email.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA".to_owned(),
            verified: false,
        }
    }

    pub(super) async fn lifecycle<A: AccountStore>(store: A) {
        assert!(store.get("a@example.com").await.unwrap().is_none());
        assert!(store.create(&account("a@example.com")).await.unwrap());
        // Taken: nothing changes.
        let mut other = account("a@example.com");
        other.password_hash = "other".into();
        assert!(!store.create(&other).await.unwrap());
        let got = store.get("a@example.com").await.unwrap().unwrap();
        assert_eq!(got.password_hash, account("a@example.com").password_hash);
        assert!(!got.verified);
        assert!(store.mark_verified("a@example.com").await.unwrap());
        assert!(
            store
                .set_password_hash("a@example.com", "new-hash", None)
                .await
                .unwrap()
        );
        let got = store.get("a@example.com").await.unwrap().unwrap();
        assert!(got.verified);
        assert_eq!(got.password_hash, "new-hash");
        // Compare-and-set: a stale expectation changes nothing, a current one does.
        assert!(
            !store
                .set_password_hash("a@example.com", "rehash", Some("old-hash"))
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .get("a@example.com")
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "new-hash"
        );
        assert!(
            store
                .set_password_hash("a@example.com", "rehash", Some("new-hash"))
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .get("a@example.com")
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "rehash"
        );
        assert!(!store.mark_verified("nobody@example.com").await.unwrap());
        assert!(
            !store
                .set_password_hash("nobody@example.com", "x", None)
                .await
                .unwrap()
        );
        assert!(store.get("nobody@example.com").await.unwrap().is_none());
    }

    pub(super) async fn concurrent_sign_ups<A: AccountStore + Clone>(store: A) {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.create(&account("race@example.com")).await.unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap() {
                created += 1;
            }
        }
        assert_eq!(created, 1);
    }
}

#[cfg(feature = "local-login")]
macro_rules! accounts_conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle() {
                let (store, _cleanup) = $make;
                accounts_suite::lifecycle(store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_sign_ups() {
                let (store, _cleanup) = $make;
                accounts_suite::concurrent_sign_ups(store).await
            }
        }
    };
}

#[cfg(feature = "local-login")]
accounts_conformance!(
    memory_accounts,
    (
        palisade_sessions::local_login::MemoryAccounts::new(),
        NoCleanup
    )
);

#[cfg(all(feature = "local-login", feature = "redis"))]
async fn redis_accounts() -> (palisade_sessions::RedisAccounts, RedisCleanup) {
    let (store, cleanup) = redis_store().await;
    (palisade_sessions::RedisAccounts::new(&store), cleanup)
}

#[cfg(all(feature = "local-login", feature = "redis"))]
accounts_conformance!(redis_accounts_suite, redis_accounts().await);

#[cfg(all(feature = "local-login", feature = "postgres"))]
accounts_conformance!(postgres_accounts, postgres_store().await);

/// A real three-node Redis Cluster from this machine's `redis-server`, started once per test
/// process on free loopback ports. Each node runs under `sh`, which kills it when the test
/// process ends (its stdin pipe closes), so no node outlives the tests.
#[cfg(feature = "redis-cluster")]
use palisade_testkit::redis_cluster as cluster;

#[cfg(feature = "redis-cluster")]
async fn redis_cluster_store() -> (palisade_sessions::RedisStore, NoCleanup) {
    let cluster = tokio::task::spawn_blocking(cluster::get).await.unwrap();
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    // Production refuses plaintext cluster seeds even on loopback; the test cluster has no
    // TLS, so it runs in development.
    assert!(
        palisade_sessions::RedisStore::connect_cluster(
            &urls,
            "x",
            palisade_core::Profile::Production
        )
        .await
        .is_err()
    );
    let store = palisade_sessions::RedisStore::connect_cluster(
        &urls,
        &prefix(),
        palisade_core::Profile::Development,
    )
    .await
    .unwrap();
    // The cluster lives as long as the test process: its keys go with it.
    (store, NoCleanup)
}

#[cfg(feature = "redis-cluster")]
conformance!(redis_cluster, redis_cluster_store().await);

#[cfg(feature = "redis-cluster")]
single_use_conformance!(redis_cluster_single_use, {
    let (store, cleanup) = redis_cluster_store().await;
    (palisade_sessions::RedisSingleUseStore::new(&store), cleanup)
});

#[cfg(all(feature = "redis-cluster", feature = "local-login"))]
accounts_conformance!(redis_cluster_accounts, {
    let (store, cleanup) = redis_cluster_store().await;
    (palisade_sessions::RedisAccounts::new(&store), cleanup)
});
