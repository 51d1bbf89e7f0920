//! `PostgresStore`: one transaction per refresh.
//!
//! Tables (created by [`PostgresStore::migrate`], which the application calls; the statements
//! are embedded and recorded in `palisade_schema_migrations`):
//!
//! - `palisade_refresh_families`: one row a family, with the current token hash; indexed by
//!   user for "log out everywhere".
//! - `palisade_refresh_consumed`: consumed token hashes (primary key), with their family.
//!
//! A refresh is one round trip: a PL/pgSQL function (from the migrations) locks the family row
//! (`SELECT ... FOR UPDATE`) and rotates inside the statement's transaction, so concurrent
//! refreshes of one token serialize and at most one succeeds.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row as _};

use crate::store::{
    DeviceBinding, Family, FamilyId, RefreshStore, Rotation, StoreError, TokenHash,
};

/// Embedded migrations: (version, statements).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r"
CREATE TABLE IF NOT EXISTS palisade_refresh_families (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    absolute_expiry BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    last_used BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    current_hash BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS palisade_refresh_families_user ON palisade_refresh_families (user_id);
CREATE INDEX IF NOT EXISTS palisade_refresh_families_expiry ON palisade_refresh_families (absolute_expiry);
CREATE TABLE IF NOT EXISTS palisade_refresh_consumed (
    hash BYTEA PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES palisade_refresh_families (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS palisade_refresh_consumed_family ON palisade_refresh_consumed (family_id);
",
    ),
    (
        2,
        r"
CREATE OR REPLACE FUNCTION palisade_refresh_rotate(
    p_id TEXT, p_hashes BYTEA[], p_successor BYTEA, p_device TEXT, p_now BIGINT
) RETURNS TABLE (r_outcome TEXT, r_user TEXT) LANGUAGE plpgsql AS $$
DECLARE
    f palisade_refresh_families%ROWTYPE;
BEGIN
    SELECT * INTO f FROM palisade_refresh_families WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::TEXT, NULL::TEXT; RETURN;
    END IF;
    IF f.revoked THEN
        RETURN QUERY SELECT 'revoked'::TEXT, f.user_id; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM palisade_refresh_consumed c WHERE c.family_id = p_id AND c.hash = ANY (p_hashes)) THEN
        UPDATE palisade_refresh_families SET revoked = TRUE WHERE id = p_id;
        RETURN QUERY SELECT 'reused'::TEXT, f.user_id; RETURN;
    END IF;
    IF NOT (f.current_hash = ANY (p_hashes)) THEN
        RETURN QUERY SELECT 'unknown'::TEXT, NULL::TEXT; RETURN;
    END IF;
    IF p_now >= f.absolute_expiry OR p_now - f.last_used > f.idle_timeout THEN
        RETURN QUERY SELECT 'expired'::TEXT, f.user_id; RETURN;
    END IF;
    IF f.device <> p_device THEN
        RETURN QUERY SELECT 'device'::TEXT, f.user_id; RETURN;
    END IF;
    INSERT INTO palisade_refresh_consumed (hash, family_id) VALUES (f.current_hash, p_id);
    UPDATE palisade_refresh_families SET current_hash = p_successor, last_used = p_now WHERE id = p_id;
    RETURN QUERY SELECT 'rotated'::TEXT, f.user_id;
END
$$;
",
    ),
    (
        3,
        r"
CREATE TABLE IF NOT EXISTS palisade_single_use (
    hash BYTEA PRIMARY KEY,
    purpose TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS palisade_single_use_subject ON palisade_single_use (subject);
CREATE INDEX IF NOT EXISTS palisade_single_use_expiry ON palisade_single_use (expires_at);
",
    ),
    (
        4,
        r"
CREATE TABLE IF NOT EXISTS palisade_accounts (
    email TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE
);
",
    ),
    (
        5,
        r"
ALTER TABLE palisade_refresh_families
    ADD COLUMN IF NOT EXISTS grace_hash BYTEA,
    ADD COLUMN IF NOT EXISTS grace_sealed TEXT,
    ADD COLUMN IF NOT EXISTS grace_until BIGINT;
DROP FUNCTION IF EXISTS palisade_refresh_rotate(TEXT, BYTEA[], BYTEA, TEXT, BIGINT);
CREATE OR REPLACE FUNCTION palisade_refresh_rotate(
    p_id TEXT, p_hashes BYTEA[], p_successor BYTEA, p_device TEXT, p_now BIGINT,
    p_sealed TEXT, p_grace_until BIGINT
) RETURNS TABLE (r_outcome TEXT, r_user TEXT, r_sealed TEXT) LANGUAGE plpgsql AS $$
DECLARE
    f palisade_refresh_families%ROWTYPE;
BEGIN
    SELECT * INTO f FROM palisade_refresh_families WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::TEXT, NULL::TEXT, NULL::TEXT; RETURN;
    END IF;
    IF f.revoked THEN
        RETURN QUERY SELECT 'revoked'::TEXT, f.user_id, NULL::TEXT; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM palisade_refresh_consumed c WHERE c.family_id = p_id AND c.hash = ANY (p_hashes)) THEN
        IF f.grace_hash IS NOT NULL AND f.grace_hash = ANY (p_hashes) AND p_now < f.grace_until AND f.device = p_device THEN
            RETURN QUERY SELECT 'grace'::TEXT, f.user_id, f.grace_sealed; RETURN;
        END IF;
        UPDATE palisade_refresh_families SET revoked = TRUE WHERE id = p_id;
        RETURN QUERY SELECT 'reused'::TEXT, f.user_id, NULL::TEXT; RETURN;
    END IF;
    IF NOT (f.current_hash = ANY (p_hashes)) THEN
        RETURN QUERY SELECT 'unknown'::TEXT, NULL::TEXT, NULL::TEXT; RETURN;
    END IF;
    IF p_now >= f.absolute_expiry OR p_now - f.last_used > f.idle_timeout THEN
        RETURN QUERY SELECT 'expired'::TEXT, f.user_id, NULL::TEXT; RETURN;
    END IF;
    IF f.device <> p_device THEN
        RETURN QUERY SELECT 'device'::TEXT, f.user_id, NULL::TEXT; RETURN;
    END IF;
    INSERT INTO palisade_refresh_consumed (hash, family_id) VALUES (f.current_hash, p_id);
    UPDATE palisade_refresh_families SET current_hash = p_successor, last_used = p_now,
        grace_hash = CASE WHEN p_sealed IS NULL THEN NULL ELSE f.current_hash END,
        grace_sealed = p_sealed,
        grace_until = p_grace_until
        WHERE id = p_id;
    RETURN QUERY SELECT 'rotated'::TEXT, f.user_id, NULL::TEXT;
END
$$;
",
    ),
];

fn err(message: &str, e: sqlx::Error) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

/// Families in PostgreSQL (see the module docs).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    profile: Option<palisade_core::Profile>,
}

impl PostgresStore {
    /// Connects to `url`; in production a plaintext URL to another machine is refused (see
    /// [`crate::check_transport`]).
    pub async fn connect_url(
        url: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        use std::str::FromStr as _;
        crate::store::require_transport(url, profile, "postgres-store", |_| {})?;
        let options =
            PgConnectOptions::from_str(url).map_err(|e| err("invalid database URL", e))?;
        let mut store = Self::connect(options).await?;
        store.profile = Some(profile);
        Ok(store)
    }

    /// The profile its transport was checked under; `None` when connected without a check
    /// (`connect`), which `palisade::Hardening` counts as development.
    pub fn profile(&self) -> Option<palisade_core::Profile> {
        self.profile
    }

    /// Connects with `options` (build them from a URL with `sslmode=verify-full` for remote
    /// servers).
    pub async fn connect(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| err("cannot connect to PostgreSQL", e))?;
        Ok(Self {
            pool,
            profile: None,
        })
    }

    /// Applies the embedded migrations that have not run yet, each in a transaction.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| err("acquire", e))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS palisade_schema_migrations (version BIGINT PRIMARY KEY)",
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| err("create migrations table", e))?;
        for (version, statements) in MIGRATIONS {
            let mut tx = conn.begin().await.map_err(|e| err("begin", e))?;
            sqlx::raw_sql("LOCK TABLE palisade_schema_migrations IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .map_err(|e| err("lock migrations", e))?;
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM palisade_schema_migrations WHERE version = $1",
            )
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| err("read migrations", e))?;
            if done.is_none() {
                sqlx::raw_sql(statements)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| err("migrate", e))?;
                sqlx::query("INSERT INTO palisade_schema_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| err("record migration", e))?;
            }
            tx.commit().await.map_err(|e| err("commit", e))?;
        }
        Ok(())
    }

    /// Deletes families past their absolute lifetime (consumed hashes go with them).
    pub async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM palisade_refresh_families WHERE absolute_expiry <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| err("purge", e))?;
        Ok(done.rows_affected())
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RefreshStore for PostgresStore {
    async fn create(&self, family: &Family, first: &TokenHash) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO palisade_refresh_families \
             (id, user_id, device, absolute_expiry, idle_timeout, last_used, created_at, current_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(family.id.as_str())
        .bind(&family.user_id)
        .bind(family.device.canonical())
        .bind(int(family.absolute_expiry))
        .bind(int(family.idle_timeout))
        .bind(int(family.created_at))
        .bind(&first.0[..])
        .execute(&self.pool)
        .await
        .map_err(|e| err("cannot create family", e))?;
        Ok(())
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
        // One round trip: the migration's function locks the family row and does the whole
        // rotation inside the statement's transaction.
        let hashes: Vec<Vec<u8>> = presented.iter().map(|h| h.0.to_vec()).collect();
        let row = sqlx::query(
            "SELECT r_outcome, r_user, r_sealed FROM palisade_refresh_rotate($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(family.as_str())
        .bind(&hashes)
        .bind(&successor.0[..])
        .bind(device.canonical())
        .bind(int(now))
        .bind(grace.map(|g| g.sealed.clone()))
        .bind(grace.map(|g| int(g.until)))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("rotate", e))?;
        let outcome: String = row
            .try_get("r_outcome")
            .map_err(|e| err("decode rotate", e))?;
        let user: Option<String> = row.try_get("r_user").map_err(|e| err("decode rotate", e))?;
        let sealed: Option<String> = row
            .try_get("r_sealed")
            .map_err(|e| err("decode rotate", e))?;
        crate::store::rotation_from_outcome(&outcome, user.unwrap_or_default(), sealed)
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
    ) -> Result<bool, StoreError> {
        let hashes: Vec<Vec<u8>> = presented.iter().map(|h| h.0.to_vec()).collect();
        // A rotation of the same token committing while this statement waits on the row lock
        // makes the re-check see the new current hash but not yet the consumed row (it belongs
        // to the statement's older snapshot). A second statement has a fresh snapshot that
        // sees it, so a `false` is only final after two tries.
        for _ in 0..2 {
            let done = sqlx::query(
                "UPDATE palisade_refresh_families f SET revoked = TRUE WHERE f.id = $1 \
                 AND (f.current_hash = ANY ($2) OR EXISTS (SELECT 1 FROM palisade_refresh_consumed c \
                 WHERE c.family_id = f.id AND c.hash = ANY ($2)))",
            )
            .bind(family.as_str())
            .bind(&hashes)
            .execute(&self.pool)
            .await
            .map_err(|e| err("revoke family", e))?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let done = sqlx::query("UPDATE palisade_refresh_families SET revoked = TRUE WHERE user_id = $1 AND NOT revoked")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|e| err("revoke user", e))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn is_revoked(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let revoked: Option<bool> =
            sqlx::query_scalar("SELECT revoked FROM palisade_refresh_families WHERE id = $1")
                .bind(family.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| err("read family", e))?;
        Ok(revoked.unwrap_or(true))
    }
}

impl crate::single_use::SingleUseStore for PostgresStore {
    async fn insert(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
        subject: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO palisade_single_use (hash, purpose, subject, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&hash.0[..])
            .bind(purpose.as_str())
            .bind(subject)
            .bind(int(expires))
            .execute(&self.pool)
            .await
            .map_err(|e| err("cannot store token", e))?;
        Ok(())
    }

    async fn take(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let row = sqlx::query("DELETE FROM palisade_single_use WHERE hash = $1 AND purpose = $2 RETURNING subject, expires_at")
            .bind(&hash.0[..])
            .bind(purpose.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err("take token", e))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let subject: String = row.try_get("subject").map_err(|e| err("decode token", e))?;
                let expires: i64 = row
                    .try_get("expires_at")
                    .map_err(|e| err("decode token", e))?;
                Ok(Some((subject, u64::try_from(expires).unwrap_or(0))))
            }
        }
    }

    async fn revoke(
        &self,
        subject: &str,
        purpose: Option<&crate::single_use::Purpose>,
    ) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM palisade_single_use WHERE subject = $1 AND ($2::TEXT IS NULL OR purpose = $2)")
            .bind(subject)
            .bind(purpose.map(crate::single_use::Purpose::as_str))
            .execute(&self.pool)
            .await
            .map_err(|e| err("revoke tokens", e))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM palisade_single_use WHERE expires_at <= $1")
            .bind(int(now))
            .execute(&self.pool)
            .await
            .map_err(|e| err("purge tokens", e))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}

#[cfg(feature = "local-login")]
impl crate::local_login::AccountStore for PostgresStore {
    async fn create(&self, account: &crate::local_login::Account) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO palisade_accounts (email, user_id, password_hash, verified) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&account.email)
        .bind(&account.user_id)
        .bind(&account.password_hash)
        .bind(account.verified)
        .execute(&self.pool)
        .await
        .map_err(|e| err("create account", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, email: &str) -> Result<Option<crate::local_login::Account>, StoreError> {
        let row = sqlx::query("SELECT email, user_id, password_hash, verified FROM palisade_accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err("read account", e))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e| err("decode account", e);
        Ok(Some(crate::local_login::Account {
            email: row.try_get("email").map_err(get)?,
            user_id: row.try_get("user_id").map_err(get)?,
            password_hash: row.try_get("password_hash").map_err(get)?,
            verified: row.try_get("verified").map_err(get)?,
        }))
    }

    async fn set_password_hash(
        &self,
        email: &str,
        hash: &str,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE palisade_accounts SET password_hash = $2 WHERE email = $1 \
             AND ($3::TEXT IS NULL OR password_hash = $3)",
        )
        .bind(email)
        .bind(hash)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(|e| err("update account", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_verified(&self, email: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE palisade_accounts SET verified = TRUE WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await
            .map_err(|e| err("verify account", e))?;
        Ok(done.rows_affected() == 1)
    }
}
