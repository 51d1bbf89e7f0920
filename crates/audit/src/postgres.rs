//! The PostgreSQL sink: one table per chain, appends serialized across processes.

use std::str::FromStr as _;

use palisade_core::{KeyRing, Profile, SharedClock};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::AuditError;
use crate::chain::{Chain, Checkpoint};
use crate::record::{Event, Record};
use crate::sink::AuditSink;
use crate::verify::{Report, Verifier};

/// Records in a PostgreSQL table (`seq BIGINT PRIMARY KEY, record TEXT`, the record's JSON).
///
/// Each append runs in a transaction holding a transaction-level advisory lock named after
/// the table, reads the chain's head from the table, and inserts the new records: writers in
/// any number of processes extend one chain, never fork it. A commit is durable as the
/// server's `synchronous_commit` makes it (on by default).
#[derive(Clone, Debug)]
pub struct PostgresSink {
    pool: PgPool,
    table: String,
    ring: KeyRing,
    clock: SharedClock,
    every: u64,
    /// The profile its transport was checked under (`None`: `connect_with`, unchecked).
    profile: Option<Profile>,
}

/// Rows read per page while verifying.
const PAGE: i64 = 1_000;

fn err(what: &str, e: sqlx::Error) -> AuditError {
    AuditError::Sink(format!("{what}: {e}"))
}

/// A plain SQL identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes.
fn identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The connection options of `url`, once its transport passed the profile's check (in
/// production, a plaintext URL to another machine is refused).
fn checked_options(url: &str, profile: Profile) -> Result<PgConnectOptions, AuditError> {
    palisade_sessions::require_transport(url, profile, "audit-postgres", |_| {})
        .map_err(AuditError::Transport)?;
    PgConnectOptions::from_str(url).map_err(|e| err("invalid database URL", e))
}

impl PostgresSink {
    /// Connects to `url` (in production, a plaintext URL to another machine is refused) and
    /// uses `table` (a plain identifier), created if missing.
    pub async fn connect(
        url: &str,
        profile: Profile,
        table: &str,
        ring: KeyRing,
    ) -> Result<Self, AuditError> {
        let mut sink = Self::connect_with(checked_options(url, profile)?, table, ring).await?;
        sink.profile = Some(profile);
        Ok(sink)
    }

    /// The profile its transport was checked under; `None` when connected with
    /// [`Self::connect_with`], without a check (`palisade::Hardening` counts it as
    /// development).
    pub fn profile(&self) -> Option<Profile> {
        self.profile
    }

    /// Connects to `url` to read an existing log (verification): the table is never
    /// created, and a missing one is an error (a verifier must not report an empty log as
    /// sound).
    pub async fn open_existing(
        url: &str,
        profile: Profile,
        table: &str,
        ring: KeyRing,
    ) -> Result<Self, AuditError> {
        let mut sink = Self::pool(checked_options(url, profile)?, table, ring).await?;
        sink.profile = Some(profile);
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&sink.pool)
            .await
            .map_err(|e| err("look up the table", e))?;
        match found {
            Some(_) => Ok(sink),
            None => Err(AuditError::Sink(format!("no audit table {table}"))),
        }
    }

    /// Connects with `options` (for example a `search_path`).
    pub async fn connect_with(
        options: PgConnectOptions,
        table: &str,
        ring: KeyRing,
    ) -> Result<Self, AuditError> {
        let sink = Self::pool(options, table, ring).await?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (seq BIGINT PRIMARY KEY, record TEXT NOT NULL)"
        ))
        .execute(&sink.pool)
        .await
        .map_err(|e| err("create table", e))?;
        Ok(sink)
    }

    async fn pool(
        options: PgConnectOptions,
        table: &str,
        ring: KeyRing,
    ) -> Result<Self, AuditError> {
        if !identifier(table) {
            return Err(AuditError::Sink(
                "the audit table name must be a plain identifier".into(),
            ));
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| err("connect", e))?;
        Ok(Self {
            pool,
            table: table.to_owned(),
            ring,
            clock: palisade_core::SystemClock::shared(),
            every: 1_000,
            profile: None,
        })
    }

    /// Reads the time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A checkpoint record after every `n` records.
    pub fn checkpoint_every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    /// The advisory lock of this table's chain.
    fn lock_key(&self) -> i64 {
        // A stable 63-bit name: FNV-1a of the table name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("palisade-audit:{}", self.table).bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h >> 1) as i64
    }

    async fn head(&self, conn: &mut sqlx::PgConnection) -> Result<Option<Record>, AuditError> {
        let last: Option<(i64, String)> = sqlx::query_as(&format!(
            "SELECT seq, record FROM {} ORDER BY seq DESC LIMIT 1",
            self.table
        ))
        .fetch_optional(conn)
        .await
        .map_err(|e| err("read head", e))?;
        last.map(|(seq, text)| {
            let record = Record::from_line(text.as_bytes())
                .map_err(|e| AuditError::Corrupt(format!("head: {e}")))?;
            // The tail must be the record its row says (not an older one replayed there).
            if i64::try_from(record.seq) != Ok(seq) {
                return Err(AuditError::Corrupt(format!(
                    "head: row {seq} holds record {}",
                    record.seq
                )));
            }
            Ok(record)
        })
        .transpose()
    }

    fn chain(&self, last: Option<&Record>) -> Result<Chain, AuditError> {
        Chain::with_clock(self.ring.clone(), self.clock.clone())
            .checkpoint_every(self.every)
            .resume(last)
    }

    /// Verifies the table's chain (streamed in pages of 1,000 rows, in `seq` order).
    pub async fn verify(
        &self,
        verifier: &Verifier,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Report, AuditError> {
        let mut verification = verifier.start(checkpoint);
        // Every row, whatever its number (a row numbered 0 or below is a finding, not skipped),
        // a page at a time by index range.
        let mut from = i64::MIN;
        'pages: loop {
            let rows: Vec<(i64, String)> = sqlx::query_as(&format!(
                "SELECT seq, record FROM {} WHERE seq >= $1 ORDER BY seq LIMIT $2",
                self.table
            ))
            .bind(from)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| err("read", e))?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            // Rows are read in column order; each record's own number must then follow.
            for (_, text) in rows {
                if !verification.push(Record::from_line(text.as_bytes())) {
                    break 'pages;
                }
            }
            match last.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(verification.finish())
    }

    /// Replaces the table's rows (tests of tampering only).
    #[doc(hidden)]
    pub async fn overwrite_for_tests(&self, rows: &[(i64, String)]) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
        sqlx::query(&format!("DELETE FROM {}", self.table))
            .execute(&mut *tx)
            .await
            .map_err(|e| err("delete", e))?;
        for (seq, text) in rows {
            sqlx::query(&format!(
                "INSERT INTO {} (seq, record) VALUES ($1, $2)",
                self.table
            ))
            .bind(seq)
            .bind(text)
            .execute(&mut *tx)
            .await
            .map_err(|e| err("insert", e))?;
        }
        tx.commit().await.map_err(|e| err("commit", e))
    }
}

impl AuditSink for PostgresSink {
    async fn append(&self, event: Event) -> Result<Record, AuditError> {
        let result: Result<Record, AuditError> = async {
            let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(self.lock_key())
                .execute(&mut *tx)
                .await
                .map_err(|e| err("lock", e))?;
            let last = self.head(&mut tx).await?;
            let sealed = self.chain(last.as_ref())?.seal(event)?;
            for record in &sealed {
                let text =
                    serde_json::to_string(record).map_err(|e| AuditError::Sink(e.to_string()))?;
                sqlx::query(&format!(
                    "INSERT INTO {} (seq, record) VALUES ($1, $2)",
                    self.table
                ))
                .bind(
                    i64::try_from(record.seq)
                        .map_err(|_| AuditError::Sink("seq overflow".into()))?,
                )
                .bind(text)
                .execute(&mut *tx)
                .await
                .map_err(|e| err("insert", e))?;
            }
            tx.commit().await.map_err(|e| err("commit", e))?;
            sealed
                .into_iter()
                .next()
                .ok_or(AuditError::Event("nothing sealed"))
        }
        .await;
        crate::count_write("postgres", &result);
        result
    }

    async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let mut conn = self.pool.acquire().await.map_err(|e| err("acquire", e))?;
        let last = self.head(&mut conn).await?;
        self.chain(last.as_ref())?.checkpoint()
    }
}
