//! `RedisStore`: one Lua script per refresh.
//!
//! Needs Redis 7.0 or later (`EXPIREAT ... NX|GT`). Works with one server
//! ([`RedisStore::connect`]) or a Redis Cluster (`redis-cluster` feature,
//! `RedisStore::connect_cluster`): every command and script touches one slot, since the
//! user's index is written before, and apart from, the family's keys. Keys carry a
//! configurable prefix and the family id as a `{hash tag}`:
//!
//! - `<prefix>:{<family>}:f`: hash (user, device, absolute expiry, idle timeout, last use,
//!   revoked flag, current token hash),
//! - `<prefix>:{<family>}:c`: set of consumed token hashes,
//! - `<prefix>:u:<user>`: set of the user's family ids (for "log out everywhere").
//!
//! Every key expires with the family's absolute lifetime; the user's index keeps the latest
//! expiry of its families (it is only ever extended). Times are whole Unix seconds passed
//! by the caller, so the script does no float arithmetic.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::store::{
    DeviceBinding, Family, FamilyId, RefreshStore, Rotation, StoreError, TokenHash,
};

const ROTATE: &str = r"
local fam, used = KEYS[1], KEYS[2]
local successor, device, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local sealed, grace_until = ARGV[4], tonumber(ARGV[5])
local f = redis.call('HMGET', fam, 'revoked', 'current', 'device', 'abs', 'idle', 'last', 'user', 'g_hash', 'g_sealed', 'g_until')
if not f[2] then return {'unknown'} end
if f[1] == '1' then return {'revoked'} end
for i = 6, #ARGV do
  if redis.call('SISMEMBER', used, ARGV[i]) == 1 then
    if f[8] and f[8] ~= '' and now < tonumber(f[10]) and f[3] == device then
      for j = 6, #ARGV do
        if ARGV[j] == f[8] then return {'grace', f[7], f[9]} end
      end
    end
    redis.call('HSET', fam, 'revoked', '1')
    return {'reused', f[7]}
  end
end
local match = false
for i = 6, #ARGV do
  if ARGV[i] == f[2] then match = true end
end
if not match then return {'unknown'} end
if now >= tonumber(f[4]) or now - tonumber(f[6]) > tonumber(f[5]) then return {'expired'} end
if f[3] ~= device then return {'device'} end
redis.call('SADD', used, f[2])
redis.call('EXPIREAT', used, tonumber(f[4]))
if sealed ~= '' then
  redis.call('HSET', fam, 'current', successor, 'last', now, 'g_hash', f[2], 'g_sealed', sealed, 'g_until', grace_until)
else
  redis.call('HSET', fam, 'current', successor, 'last', now, 'g_hash', '', 'g_sealed', '', 'g_until', 0)
end
return {'rotated', f[7]}
";

// Revokes the family if it exists and, when hashes are given, one of them is its current
// token or a consumed one (no hashes: unconditional, for "log out everywhere").
const REVOKE: &str = r"
local current = redis.call('HGET', KEYS[1], 'current')
if not current then return 0 end
if #ARGV > 0 then
  local proof = false
  for i = 1, #ARGV do
    if ARGV[i] == current or redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 1 then
      proof = true
    end
  end
  if not proof then return 0 end
end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
";

/// Families in Redis (see the module docs).
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    rotate: Arc<Script>,
    revoke: Arc<Script>,
    profile: Option<palisade_core::Profile>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Sets an index key's expiry to `at` or keeps a later one: the index must outlive every
/// member, and a member with a shorter lifetime (after a policy change) must not cut it short.
/// `NX` gives a fresh key its first expiry, then `GT` only ever extends it (Redis 7.0+).
fn extend_expiry(pipe: &mut redis::Pipeline, key: &str, at: i64) {
    pipe.cmd("EXPIREAT")
        .arg(key)
        .arg(at)
        .arg("NX")
        .ignore()
        .cmd("EXPIREAT")
        .arg(key)
        .arg(at)
        .arg("GT")
        .ignore();
}

/// The connection the stores share: one server, or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn err(message: &str, e: redis::RedisError) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

/// A connection to one Redis server or to a Redis Cluster, held the way Palisade's Redis stores
/// hold theirs: one server through a reconnecting connection manager
/// ([`redis_manager_config`](crate::redis_manager_config)), a cluster through the cluster
/// client. Cheap to clone (clones share the connection); usable anywhere redis-rs takes an
/// async connection.
#[derive(Clone)]
pub struct RedisConnection(Conn);

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Conn::Single(_) => "Single",
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(_) => "Cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl RedisConnection {
    /// Connects to one server at `url` (`redis://` or `rediss://`) after the transport check
    /// under `profile`: in production, plaintext to another machine is refused. `component`
    /// names the store in the findings.
    pub async fn single(
        url: &str,
        profile: palisade_core::Profile,
        component: &'static str,
    ) -> Result<Self, StoreError> {
        crate::store::require_transport(url, profile, component, |_| {})?;
        Self::single_unchecked(url).await
    }

    async fn single_unchecked(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| err("invalid Redis URL", e))?;
        // Reconnects in the background after a disconnect: commands fail (and requests are
        // refused) only while Redis is unreachable.
        let conn = ConnectionManager::new_with_config(client, crate::store::redis_manager_config())
            .await
            .map_err(|e| err("cannot connect to Redis", e))?;
        Ok(Self(Conn::Single(conn)))
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://` or `rediss://` URLs).
    /// Each URL passes the transport check under `profile`, and in production only
    /// `rediss://` seeds are accepted, even on loopback (the cluster hands out the addresses
    /// of its other nodes).
    #[cfg(feature = "redis-cluster")]
    pub async fn cluster(
        nodes: &[&str],
        profile: palisade_core::Profile,
        component: &'static str,
    ) -> Result<Self, StoreError> {
        for url in nodes {
            crate::store::require_transport(url, profile, component, |posture| {
                // The client goes on to the node addresses the cluster reports, which a
                // loopback seed says nothing about: plaintext is refused whatever its host.
                if !url.starts_with("rediss://") {
                    posture.record(
                        palisade_core::Severity::Deny,
                        "store-plaintext",
                        "Redis Cluster nodes are reached without TLS (use rediss:// seeds)",
                    );
                }
            })?;
        }
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().copied())
            .connection_timeout(std::time::Duration::from_secs(1))
            .response_timeout(std::time::Duration::from_secs(2))
            .build()
            .map_err(|e| err("invalid Redis Cluster URLs", e))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| err("cannot connect to Redis Cluster", e))?;
        Ok(Self(Conn::Cluster(conn)))
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://` or `rediss://`); keys start with `prefix`. In
    /// production, a plaintext URL to another machine is refused (see [`crate::check_transport`]).
    pub async fn connect_checked(
        url: &str,
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        crate::store::require_transport(url, profile, "redis-store", |_| {})?;
        let mut store = Self::connect(url, prefix).await?;
        store.profile = Some(profile);
        Ok(store)
    }

    /// The profile its transport was checked under; `None` when connected without a check
    /// (`connect`), which `palisade::Hardening` counts as development.
    pub fn profile(&self) -> Option<palisade_core::Profile> {
        self.profile
    }

    /// Connects to `url` without a posture check.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let RedisConnection(conn) = RedisConnection::single_unchecked(url).await?;
        Ok(Self::with_conn(conn, prefix))
    }

    fn with_conn(conn: Conn, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            rotate: Arc::new(Script::new(ROTATE)),
            revoke: Arc::new(Script::new(REVOKE)),
            profile: None,
        }
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://` or `rediss://` URLs);
    /// keys start with `prefix`. Each URL passes the same transport check as
    /// [`connect_checked`](Self::connect_checked) under `profile`, and in production only
    /// `rediss://` seeds are accepted, even on loopback (the cluster hands out the addresses
    /// of its other nodes).
    #[cfg(feature = "redis-cluster")]
    pub async fn connect_cluster(
        nodes: &[&str],
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        let RedisConnection(conn) = RedisConnection::cluster(nodes, profile, "redis-store").await?;
        let mut store = Self::with_conn(conn, prefix);
        store.profile = Some(profile);
        Ok(store)
    }

    /// Revokes atomically, and only if the family still exists (never a key without a TTL);
    /// with `proof`, only if one of its hashes is the current or a consumed token.
    async fn revoke(&self, family: &FamilyId, proof: &[TokenHash]) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.revoke.key(self.family_key(family));
        invocation.key(self.used_key(family));
        for hash in proof {
            invocation.arg(hash.to_hex());
        }
        let revoked: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("revoke script failed", e))?;
        Ok(revoked == 1)
    }

    fn family_key(&self, id: &FamilyId) -> String {
        format!("{}:{{{}}}:f", self.prefix, id.as_str())
    }

    fn used_key(&self, id: &FamilyId) -> String {
        format!("{}:{{{}}}:c", self.prefix, id.as_str())
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}:u:{user}", self.prefix)
    }
}

impl RefreshStore for RedisStore {
    async fn create(&self, family: &Family, first: &TokenHash) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.family_key(&family.id);
        let user_key = self.user_key(&family.user_id);
        let expiry = i64::try_from(family.absolute_expiry).unwrap_or(i64::MAX);
        // The index first, in its own slot: a family always has its index entry (a dangling
        // entry, if the second step fails, is harmless), and no command spans two slots.
        let mut index = redis::pipe();
        index.atomic().sadd(&user_key, family.id.as_str()).ignore();
        extend_expiry(&mut index, &user_key, expiry);
        index
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| err("cannot index family", e))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("user", family.user_id.clone()),
                    ("device", family.device.canonical()),
                    ("abs", family.absolute_expiry.to_string()),
                    ("idle", family.idle_timeout.to_string()),
                    ("last", family.created_at.to_string()),
                    ("revoked", "0".to_owned()),
                    ("current", first.to_hex()),
                ],
            )
            .ignore()
            .expire_at(&key, expiry)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| err("cannot create family", e))
    }

    async fn rotate(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
        successor: &TokenHash,
        device: &DeviceBinding,
        now: u64,
        grace: Option<&crate::store::Grace>,
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.rotate.key(self.family_key(family));
        invocation
            .key(self.used_key(family))
            .arg(successor.to_hex())
            .arg(device.canonical())
            .arg(now)
            .arg(grace.map_or("", |g| g.sealed.as_str()))
            .arg(grace.map_or(0, |g| g.until));
        for hash in presented {
            invocation.arg(hash.to_hex());
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("rotate script failed", e))?;
        let mut reply = reply.into_iter();
        let outcome = reply.next().unwrap_or_default();
        let user_id = reply.next().unwrap_or_default();
        crate::store::rotation_from_outcome(&outcome, user_id, reply.next())
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
    ) -> Result<bool, StoreError> {
        if presented.is_empty() {
            return Ok(false);
        }
        self.revoke(family, presented).await
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .smembers(self.user_key(user_id))
            .await
            .map_err(|e| err("smembers failed", e))?;
        let mut count = 0;
        for id in ids {
            if let Some(id) = FamilyId::parse(&id)
                && self.revoke(&id, &[]).await?
            {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn is_revoked(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let flag: Option<String> = conn
            .hget(self.family_key(family), "revoked")
            .await
            .map_err(|e| err("hget failed", e))?;
        Ok(flag.as_deref() != Some("0"))
    }
}

const TAKE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'purpose', 'subject', 'expires')
if not v[1] or v[1] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return {v[2], v[3]}
";

/// Single-use tokens in Redis: `<prefix>:su:{<hash>}` per token (expiring with it) and
/// `<prefix>:sus:<subject>` indexing a subject's tokens; consumption is one Lua script.
#[derive(Clone)]
pub struct RedisSingleUseStore {
    conn: Conn,
    prefix: Arc<str>,
    take: Arc<Script>,
}

impl std::fmt::Debug for RedisSingleUseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSingleUseStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSingleUseStore {
    /// Shares `store`'s connection; keys start with its prefix.
    pub fn new(store: &RedisStore) -> Self {
        Self {
            conn: store.conn.clone(),
            prefix: store.prefix.clone(),
            take: Arc::new(Script::new(TAKE)),
        }
    }

    fn token_key(&self, hash: &TokenHash) -> String {
        format!("{}:su:{{{}}}", self.prefix, hash.to_hex())
    }

    fn subject_key(&self, subject: &str) -> String {
        format!("{}:sus:{subject}", self.prefix)
    }
}

impl crate::single_use::SingleUseStore for RedisSingleUseStore {
    async fn insert(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
        subject: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.token_key(hash);
        let index = self.subject_key(subject);
        let at = i64::try_from(expires).unwrap_or(i64::MAX);
        // The subject's index first (its own slot), then the token: see `RedisStore::create`.
        let mut indexing = redis::pipe();
        indexing.atomic().sadd(&index, hash.to_hex()).ignore();
        extend_expiry(&mut indexing, &index, at);
        indexing
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| err("cannot index token", e))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("purpose", purpose.as_str().to_owned()),
                    ("subject", subject.to_owned()),
                    ("expires", expires.to_string()),
                ],
            )
            .ignore()
            .expire_at(&key, at)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| err("cannot store token", e))
    }

    async fn take(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Option<Vec<String>> = self
            .take
            .key(self.token_key(hash))
            .arg(purpose.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("take script failed", e))?;
        Ok(reply.and_then(|v| {
            let expires = v.get(1)?.parse().ok()?;
            Some((v.first()?.clone(), expires))
        }))
    }

    async fn revoke(
        &self,
        subject: &str,
        purpose: Option<&crate::single_use::Purpose>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let hashes: Vec<String> = conn
            .smembers(self.subject_key(subject))
            .await
            .map_err(|e| err("smembers failed", e))?;
        let mut count = 0;
        for hex in hashes {
            let key = format!("{}:su:{{{hex}}}", self.prefix);
            let stored: Option<String> = conn
                .hget(&key, "purpose")
                .await
                .map_err(|e| err("hget failed", e))?;
            if let Some(stored) = stored
                && purpose.is_none_or(|p| p.as_str() == stored)
            {
                let removed: i64 = conn.del(&key).await.map_err(|e| err("del failed", e))?;
                count += usize::try_from(removed).unwrap_or(0);
                let _: i64 = conn
                    .srem(self.subject_key(subject), &hex)
                    .await
                    .map_err(|e| err("srem failed", e))?;
            }
        }
        Ok(count)
    }

    async fn purge(&self, _now: u64) -> Result<usize, StoreError> {
        // Every key expires with its token.
        Ok(0)
    }
}

#[cfg(feature = "local-login")]
const CREATE_ACCOUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'password_hash', ARGV[2], 'verified', ARGV[3])
return 1
";

#[cfg(feature = "local-login")]
const UPDATE_ACCOUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Local accounts in Redis: one hash per account, `<prefix>:acct:{<email>}`. Accounts are
/// durable data: these keys have no TTL.
#[cfg(feature = "local-login")]
#[derive(Clone)]
pub struct RedisAccounts {
    conn: Conn,
    prefix: Arc<str>,
    create: Arc<Script>,
    update: Arc<Script>,
}

#[cfg(feature = "local-login")]
impl std::fmt::Debug for RedisAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccounts")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "local-login")]
impl RedisAccounts {
    /// Shares `store`'s connection; keys start with its prefix.
    pub fn new(store: &RedisStore) -> Self {
        Self {
            conn: store.conn.clone(),
            prefix: store.prefix.clone(),
            create: Arc::new(Script::new(CREATE_ACCOUNT)),
            update: Arc::new(Script::new(UPDATE_ACCOUNT)),
        }
    }

    fn key(&self, email: &str) -> String {
        format!("{}:acct:{{{email}}}", self.prefix)
    }

    /// Sets `field` to `value` if the account exists (and, with `expected`, the field still
    /// holds it).
    async fn update(
        &self,
        email: &str,
        field: &str,
        value: &str,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.update.key(self.key(email));
        invocation.arg(field).arg(value);
        if let Some(expected) = expected {
            invocation.arg(expected);
        }
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("update account", e))?;
        Ok(done == 1)
    }
}

#[cfg(feature = "local-login")]
impl crate::local_login::AccountStore for RedisAccounts {
    async fn create(&self, account: &crate::local_login::Account) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = self
            .create
            .key(self.key(&account.email))
            .arg(&account.user_id)
            .arg(&account.password_hash)
            .arg(if account.verified { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("create account", e))?;
        Ok(done == 1)
    }

    async fn get(&self, email: &str) -> Result<Option<crate::local_login::Account>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(email))
            .arg("user_id")
            .arg("password_hash")
            .arg("verified")
            .query_async(&mut conn)
            .await
            .map_err(|e| err("read account", e))?;
        match fields.as_slice() {
            [Some(user_id), Some(hash), Some(verified)] => Ok(Some(crate::local_login::Account {
                user_id: user_id.clone(),
                email: email.to_owned(),
                password_hash: hash.clone(),
                verified: verified == "1",
            })),
            _ => Ok(None),
        }
    }

    async fn set_password_hash(
        &self,
        email: &str,
        hash: &str,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.update(email, "password_hash", hash, expected).await
    }

    async fn mark_verified(&self, email: &str) -> Result<bool, StoreError> {
        self.update(email, "verified", "1", None).await
    }
}
