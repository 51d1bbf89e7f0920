//! `PostgresStore`: one transaction per refresh.
//!
//! Tables (created by [`PostgresStore::migrate`], which the application calls; the statements
//! are embedded and recorded in `palisade_schema_migrations`):
//!
//! - `palisade_refresh_families`: one row a family, with the current token hash; indexed by
//!   user for "log out everywhere".
//! - `palisade_refresh_consumed`: consumed token hashes (primary key), with their family.
//!
//! A refresh locks its family row (`SELECT ... FOR UPDATE`), so concurrent refreshes of one
//! token serialize and at most one succeeds.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row as _};

use crate::store::{
    DeviceBinding, Family, FamilyId, RefreshStore, Rotation, StoreError, TokenHash,
};

/// Embedded migrations: (version, statements).
const MIGRATIONS: &[(i64, &str)] = &[(
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
)];

fn err(message: &str, e: sqlx::Error) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

/// Families in PostgreSQL (see the module docs).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url`; in production a plaintext URL to another machine is refused (see
    /// [`crate::check_transport`]).
    pub async fn connect_url(
        url: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        use std::str::FromStr as _;
        let mut posture = palisade_core::Posture::new(profile, "postgres-store");
        crate::check_transport(url, &mut posture);
        posture
            .finish()
            .map_err(|e| StoreError::new(e.to_string(), Some(Arc::new(e))))?;
        let options =
            PgConnectOptions::from_str(url).map_err(|e| err("invalid database URL", e))?;
        Self::connect(options).await
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
        Ok(Self { pool })
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
    ) -> Result<Rotation, StoreError> {
        let hashes: Vec<Vec<u8>> = presented.iter().map(|h| h.0.to_vec()).collect();
        let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
        let row = sqlx::query(
            "SELECT revoked, current_hash, device, absolute_expiry, idle_timeout, last_used, user_id, \
             EXISTS (SELECT 1 FROM palisade_refresh_consumed WHERE family_id = $1 AND hash = ANY($2)) AS reused \
             FROM palisade_refresh_families WHERE id = $1 FOR UPDATE",
        )
        .bind(family.as_str())
        .bind(&hashes)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| err("read family", e))?;
        let Some(row) = row else {
            return Ok(Rotation::Unknown);
        };
        let get = |e| err("decode family", e);
        let revoked: bool = row.try_get("revoked").map_err(get)?;
        let current: Vec<u8> = row.try_get("current_hash").map_err(get)?;
        let bound: String = row.try_get("device").map_err(get)?;
        let absolute: i64 = row.try_get("absolute_expiry").map_err(get)?;
        let idle: i64 = row.try_get("idle_timeout").map_err(get)?;
        let last: i64 = row.try_get("last_used").map_err(get)?;
        let user_id: String = row.try_get("user_id").map_err(get)?;
        let reused: bool = row.try_get("reused").map_err(get)?;
        let now = int(now);
        let outcome = if revoked {
            Rotation::Revoked
        } else if reused {
            sqlx::query("UPDATE palisade_refresh_families SET revoked = TRUE WHERE id = $1")
                .bind(family.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| err("revoke family", e))?;
            Rotation::Reused { user_id }
        } else if !hashes.contains(&current) {
            Rotation::Unknown
        } else if now >= absolute || now.saturating_sub(last) > idle {
            Rotation::Expired
        } else if bound != device.canonical() {
            Rotation::DeviceMismatch
        } else {
            sqlx::query("INSERT INTO palisade_refresh_consumed (hash, family_id) VALUES ($1, $2)")
                .bind(&current)
                .bind(family.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| err("consume token", e))?;
            sqlx::query("UPDATE palisade_refresh_families SET current_hash = $2, last_used = $3 WHERE id = $1")
                .bind(family.as_str())
                .bind(&successor.0[..])
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| err("rotate", e))?;
            Rotation::Rotated { user_id }
        };
        tx.commit().await.map_err(|e| err("commit", e))?;
        Ok(outcome)
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE palisade_refresh_families SET revoked = TRUE WHERE id = $1")
            .bind(family.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| err("revoke family", e))?;
        Ok(done.rows_affected() == 1)
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
