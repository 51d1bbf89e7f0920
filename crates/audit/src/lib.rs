//! A tamper-evident audit log.
//!
//! Every [`Record`] carries a sequence number, a timestamp, the actor, action, target, org,
//! request id, outcome and details of an [`Event`], the SHA-256 hash of the previous record,
//! and an HMAC-SHA256 over its canonical encoding under the active key of a [`KeyRing`]
//! (`AUDIT_SIGNING_KEY`; the key id is in the record, so keys rotate). There is no default
//! key.
//!
//! - [`Verifier`] streams a log (constant memory) and reports the first bad record and why:
//!   a changed field, a deleted, inserted or reordered record, a record signed with an unknown
//!   or retired key, or, given a [`Checkpoint`] published elsewhere, a truncated tail.
//! - Sinks ([`AuditSink`]): [`MemorySink`], [`JsonlSink`] (each append flushed and synced
//!   before it is reported done) and, with the `postgres` feature, `PostgresSink` (appends
//!   serialized across processes by an advisory lock). One chain per sink; appends are serialized, so concurrent
//!   writers never fork it.
//! - Writers emit a signed checkpoint record every `n` records
//!   ([`Chain::checkpoint_every`]) and hand out [`Checkpoint`]s to publish.
//!
//! Records never hold secrets: they hold what the caller puts in an [`Event`], and the
//! builders refuse detail keys that name credentials (see [`Event::detail`]).
//!
//! ```
//! use palisade_audit::{Event, MemorySink, AuditSink, Outcome, Verifier};
//! use palisade_core::KeyRing;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let ring = KeyRing::parse("audit-1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let sink = MemorySink::new(ring.clone());
//! sink.append(Event::new("admin-1", "impersonation.start", "user-7", Outcome::Success)
//!     .org("org-1")
//!     .request_id("req-42")).await?;
//! let report = Verifier::new(ring).verify(sink.records().into_iter().map(Ok), None);
//! assert!(report.is_ok(), "{report:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
mod sink;
mod verify;

pub use chain::{Chain, Checkpoint};
pub use palisade_core::KeyRing;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresSink;
pub use record::{CHECKPOINT_ACTION, Event, Outcome, Record};
pub use sink::{AuditSink, JsonlSink, MemorySink};
pub use verify::{Finding, FindingKind, Report, Verification, Verifier};

/// The environment variable holding the audit key ring.
pub const AUDIT_SIGNING_KEY: &str = "AUDIT_SIGNING_KEY";

/// Why an audit write failed. A caller that must audit before acting refuses the action.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// No usable signing key (none active now).
    #[error("no active audit signing key")]
    NoKey,
    /// The sink could not write (durably).
    #[error("audit sink: {0}")]
    Sink(String),
    /// An event that cannot be recorded (too large, or a detail naming a credential).
    #[error("audit event refused: {0}")]
    Event(&'static str),
    /// The existing log could not be read back to continue its chain.
    #[error("audit log unreadable: {0}")]
    Corrupt(String),
    /// The sink's transport was refused (in production, a plaintext URL to another machine;
    /// the posture refusal is its source).
    #[error("audit sink transport refused: {0}")]
    Transport(palisade_core::StoreError),
}

/// Counts an append in `palisade_audit_writes_total{sink, outcome}`.
pub(crate) fn count_write(sink: &'static str, result: &Result<Record, AuditError>) {
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("palisade_audit_writes_total", "sink" => sink, "outcome" => outcome)
        .increment(1);
}
