//! The PostgreSQL [`CredentialStore`] (`sqlx`).
//!
//! Two tables: `palisade_access_keys` (one row per key, metadata) and
//! `palisade_access_key_secrets` (one row per secret version, the sealed bytes only). A dump of
//! either reveals no usable secret without the field-encryption key ring. Secret rotation is a
//! compare-and-set in one transaction that locks the key's row.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};

use palisade_field_crypto::Sealed;

use crate::StoreError;
use crate::credential::{CredentialRecord, CredentialStore, KeyStatus, StoredSecret};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS palisade_access_keys (
    key_id      TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    subject     TEXT NOT NULL,
    roles       TEXT[] NOT NULL,
    scopes      TEXT[] NOT NULL,
    description TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT
);
CREATE INDEX IF NOT EXISTS palisade_access_keys_org ON palisade_access_keys (org, created_at);
CREATE TABLE IF NOT EXISTS palisade_access_key_secrets (
    key_id    TEXT NOT NULL REFERENCES palisade_access_keys (key_id) ON DELETE CASCADE,
    version   BIGINT NOT NULL,
    sealed    BYTEA NOT NULL,
    not_after BIGINT,
    PRIMARY KEY (key_id, version)
);
";

fn err(message: &str, e: sqlx::Error) -> StoreError {
    StoreError::new(message, Some(Arc::new(e)))
}

/// Credentials in PostgreSQL (see the module docs).
#[derive(Clone, Debug)]
pub struct PostgresCredentialStore {
    pool: PgPool,
    profile: Option<palisade_core::Profile>,
}

/// One column, decoded; a value that does not decode (a NULL array element, a wrong type) is a
/// store error, never a panic.
fn field<'r, T>(row: &'r sqlx::postgres::PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|e| err("a stored access key does not decode", e))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PostgresCredentialStore {
    /// Connects to `url`; under Production a plaintext URL to another machine is refused.
    pub async fn connect_url(
        url: &str,
        profile: palisade_core::Profile,
    ) -> Result<Self, StoreError> {
        use std::str::FromStr as _;
        crate::require_transport(url, profile, "aksk-postgres-store")?;
        let options =
            PgConnectOptions::from_str(url).map_err(|e| err("invalid database URL", e))?;
        let mut store = Self::connect(options).await?;
        store.profile = Some(profile);
        Ok(store)
    }

    /// The profile its transport was checked under; `None` when connected without a check
    /// (`connect`, `from_pool`), which `palisade::Hardening` counts as development.
    pub fn profile(&self) -> Option<palisade_core::Profile> {
        self.profile
    }

    /// Connects with `options`.
    pub async fn connect(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| err("cannot connect to PostgreSQL", e))?;
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            profile: None,
        }
    }

    /// Creates the tables when they do not exist.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&self.pool)
            .await
            .map_err(|e| err("migration failed", e))?;
        Ok(())
    }

    async fn secrets(&self, key_id: &str) -> Result<Vec<StoredSecret>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, sealed, not_after FROM palisade_access_key_secrets WHERE key_id = $1 ORDER BY version DESC",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("secret lookup failed", e))?;
        rows.into_iter()
            .map(|row| {
                let version: i64 = field(&row, "version")?;
                let sealed: Vec<u8> = field(&row, "sealed")?;
                let not_after: Option<i64> = field(&row, "not_after")?;
                Ok(StoredSecret {
                    version: u32::try_from(version)
                        .map_err(|_| StoreError::new("bad secret version", None))?,
                    sealed: Sealed::from_bytes(sealed)
                        .map_err(|e| StoreError::new("bad sealed secret", Some(Arc::new(e))))?,
                    not_after: not_after.map(to_u64),
                })
            })
            .collect()
    }

    fn record(
        row: &sqlx::postgres::PgRow,
        secrets: Vec<StoredSecret>,
    ) -> Result<CredentialRecord, StoreError> {
        let status: String = field(row, "status")?;
        Ok(CredentialRecord {
            key_id: field(row, "key_id")?,
            org: field(row, "org")?,
            subject: field(row, "subject")?,
            roles: field(row, "roles")?,
            scopes: field(row, "scopes")?,
            description: field(row, "description")?,
            status: KeyStatus::parse(&status)
                .ok_or_else(|| StoreError::new("bad key status", None))?,
            created_at: to_u64(field(row, "created_at")?),
            expires_at: field::<Option<i64>>(row, "expires_at")?.map(to_u64),
            secrets,
        })
    }
}

/// Commits when `outcome` is `Ok`, rolls back at once otherwise (a dropped transaction only
/// rolls back when its connection is next used, and keeps its locks until then).
async fn finish(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    outcome: Result<(), StoreError>,
) -> Result<(), StoreError> {
    match outcome {
        Ok(()) => tx.commit().await.map_err(|e| err("commit", e)),
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

const SELECT: &str = "SELECT key_id, org, subject, roles, scopes, description, status, created_at, expires_at FROM palisade_access_keys";

async fn insert_secrets(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key_id: &str,
    secrets: &[StoredSecret],
) -> Result<(), StoreError> {
    for secret in secrets {
        sqlx::query("INSERT INTO palisade_access_key_secrets (key_id, version, sealed, not_after) VALUES ($1, $2, $3, $4)")
            .bind(key_id)
            .bind(i64::from(secret.version))
            .bind(secret.sealed.as_bytes())
            .bind(secret.not_after.map(to_i64))
            .execute(&mut **tx)
            .await
            .map_err(|e| err("secret insert failed", e))?;
    }
    Ok(())
}

impl CredentialStore for PostgresCredentialStore {
    async fn insert(&self, record: &CredentialRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
        let inserted = async {
            sqlx::query(
                "INSERT INTO palisade_access_keys (key_id, org, subject, roles, scopes, description, status, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&record.key_id)
            .bind(&record.org)
            .bind(&record.subject)
            .bind(&record.roles)
            .bind(&record.scopes)
            .bind(&record.description)
            .bind(record.status.as_str())
            .bind(to_i64(record.created_at))
            .bind(record.expires_at.map(to_i64))
            .execute(&mut *tx)
            .await
            .map_err(|e| err("key insert failed", e))?;
            insert_secrets(&mut tx, &record.key_id, &record.secrets).await
        }
        .await;
        finish(tx, inserted).await
    }

    async fn get(&self, key_id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err("key lookup failed", e))?;
        match row {
            Some(row) => Ok(Some(Self::record(&row, self.secrets(key_id).await?)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, org: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE org = $1 ORDER BY created_at, key_id"
        ))
        .bind(org)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("key list failed", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let key_id: String = field(row, "key_id")?;
            out.push(Self::record(row, self.secrets(&key_id).await?)?);
        }
        Ok(out)
    }

    async fn set_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE palisade_access_keys SET status = $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| err("status update failed", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_secrets(
        &self,
        key_id: &str,
        expected_version: u32,
        secrets: &[StoredSecret],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
        let locked = sqlx::query("SELECT 1 FROM palisade_access_keys WHERE key_id = $1 FOR UPDATE")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| err("lock failed", e))?;
        if locked.is_none() {
            // Roll back now: a dropped transaction only rolls back when its connection is next
            // used, and until then it would keep the row lock.
            tx.rollback().await.map_err(|e| err("rollback", e))?;
            return Ok(false);
        }
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM palisade_access_key_secrets WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| err("version lookup failed", e))?;
        if newest != Some(i64::from(expected_version)) {
            tx.rollback().await.map_err(|e| err("rollback", e))?;
            return Ok(false);
        }
        let replaced = async {
            sqlx::query("DELETE FROM palisade_access_key_secrets WHERE key_id = $1")
                .bind(key_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| err("secret delete failed", e))?;
            insert_secrets(&mut tx, key_id, secrets).await
        }
        .await;
        finish(tx, replaced).await?;
        Ok(true)
    }
}
