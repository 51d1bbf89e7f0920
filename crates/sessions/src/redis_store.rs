//! `RedisStore`: one Lua script per refresh.
//!
//! Keys carry a configurable prefix and the family id as a `{hash tag}`, so every key of a
//! family lives in one Redis Cluster slot and the script touches one slot:
//!
//! - `<prefix>:{<family>}:f`: hash (user, device, absolute expiry, idle timeout, last use,
//!   revoked flag, current token hash),
//! - `<prefix>:{<family>}:c`: set of consumed token hashes,
//! - `<prefix>:u:<user>`: set of the user's family ids (for "log out everywhere").
//!
//! Every key expires with the family's absolute lifetime. Times are whole Unix seconds passed
//! by the caller, so the script does no float arithmetic.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};

use crate::store::{
    DeviceBinding, Family, FamilyId, RefreshStore, Rotation, StoreError, TokenHash,
};

const ROTATE: &str = r"
local fam, used = KEYS[1], KEYS[2]
local successor, device, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', fam, 'revoked', 'current', 'device', 'abs', 'idle', 'last', 'user')
if not f[2] then return {'unknown'} end
if f[1] == '1' then return {'revoked'} end
for i = 4, #ARGV do
  if redis.call('SISMEMBER', used, ARGV[i]) == 1 then
    redis.call('HSET', fam, 'revoked', '1')
    return {'reused', f[7]}
  end
end
local match = false
for i = 4, #ARGV do
  if ARGV[i] == f[2] then match = true end
end
if not match then return {'unknown'} end
if now >= tonumber(f[4]) or now - tonumber(f[6]) > tonumber(f[5]) then return {'expired'} end
if f[3] ~= device then return {'device'} end
redis.call('SADD', used, f[2])
redis.call('EXPIREAT', used, tonumber(f[4]))
redis.call('HSET', fam, 'current', successor, 'last', now)
return {'rotated', f[7]}
";

const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 1
end
return 0
";

/// Families in Redis (see the module docs).
#[derive(Clone)]
pub struct RedisStore {
    conn: MultiplexedConnection,
    prefix: Arc<str>,
    rotate: Arc<Script>,
    revoke: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn err(message: &str, e: redis::RedisError) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

impl RedisStore {
    /// Connects to `url` (`redis://` or `rediss://`); keys start with `prefix`. In
    /// production, a plaintext URL to another machine is refused (see [`crate::check_transport`]).
    pub async fn connect_checked(
        url: &str,
        prefix: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        let mut posture = palisade_core::Posture::new(profile, "redis-store");
        crate::check_transport(url, &mut posture);
        posture
            .finish()
            .map_err(|e| StoreError::new(e.to_string(), Some(Arc::new(e))))?;
        Self::connect(url, prefix).await
    }

    /// Connects to `url` without a posture check.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| err("invalid Redis URL", e))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| err("cannot connect to Redis", e))?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            rotate: Arc::new(Script::new(ROTATE)),
            revoke: Arc::new(Script::new(REVOKE)),
        })
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
        redis::pipe()
            .atomic()
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
            .sadd(&user_key, family.id.as_str())
            .ignore()
            .expire_at(&user_key, expiry)
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
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.rotate.key(self.family_key(family));
        invocation
            .key(self.used_key(family))
            .arg(successor.to_hex())
            .arg(device.canonical())
            .arg(now);
        for hash in presented {
            invocation.arg(hash.to_hex());
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("rotate script failed", e))?;
        let user = || reply.get(1).cloned().unwrap_or_default();
        Ok(match reply.first().map(String::as_str) {
            Some("rotated") => Rotation::Rotated { user_id: user() },
            Some("reused") => Rotation::Reused { user_id: user() },
            Some("revoked") => Rotation::Revoked,
            Some("expired") => Rotation::Expired,
            Some("device") => Rotation::DeviceMismatch,
            Some("unknown") => Rotation::Unknown,
            _ => return Err(StoreError::new("unexpected rotate reply", None)),
        })
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        // Atomically, and only if the family still exists (never a key without a TTL).
        let revoked: i64 = self
            .revoke
            .key(self.family_key(family))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err("revoke script failed", e))?;
        Ok(revoked == 1)
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
                && self.revoke_family(&id).await?
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
