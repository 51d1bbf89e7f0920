//! Events (what callers record) and records (what the log holds), and their canonical
//! encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditError;

/// The action of the signed checkpoint records a chain emits.
pub const CHECKPOINT_ACTION: &str = "palisade.audit.checkpoint";

/// The longest text field, in bytes.
const MAX_FIELD: usize = 1024;
/// The most details per event.
const MAX_DETAILS: usize = 32;
/// Detail names that would carry a credential: refused.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "credential",
    "signature",
    "private",
    "api_key",
    "apikey",
    "access_key",
    "secret_key",
    "jwt",
    "bearer",
    "otp",
    "session",
    "sid",
];

/// How the audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused (policy, missing MFA, unknown user...).
    Denied,
    /// It failed.
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// Something to record: who did what to what, where, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) org: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) outcome: Outcome,
    pub(crate) details: BTreeMap<String, String>,
    pub(crate) refused: Option<&'static str>,
}

impl Event {
    /// `actor` did `action` to `target`, with `outcome`.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            org: None,
            request_id: None,
            outcome,
            details: BTreeMap::new(),
            refused: None,
        }
    }

    /// The org (tenant) it happened in.
    pub fn org(mut self, org: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// The request it belongs to.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// A detail. Names that would carry a credential (`password`, `token`, `secret`,
    /// `authorization`, `cookie`, `signature`, ...) make the event unrecordable: secrets
    /// never reach the log.
    pub fn detail(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let lower = name.to_ascii_lowercase();
        if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
            self.refused = Some("a detail name that would carry a credential");
        }
        self.details.insert(name, value.into());
        self
    }

    pub(crate) fn check(&self) -> Result<(), AuditError> {
        if let Some(why) = self.refused {
            return Err(AuditError::Event(why));
        }
        let texts = [&self.actor, &self.action, &self.target]
            .into_iter()
            .chain(&self.org)
            .chain(&self.request_id)
            .chain(self.details.keys())
            .chain(self.details.values());
        if texts.clone().any(|t| t.len() > MAX_FIELD) || self.details.len() > MAX_DETAILS {
            return Err(AuditError::Event("a field over 1 KiB, or over 32 details"));
        }
        if self.action.is_empty() || self.actor.is_empty() {
            return Err(AuditError::Event("an event needs an actor and an action"));
        }
        Ok(())
    }
}

/// One record of the log, as stored (one JSON object; one line in a JSON Lines file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was written (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// In which org.
    pub org: Option<String>,
    /// In which request.
    pub request_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// More about it.
    pub details: BTreeMap<String, String>,
    /// The hash of the previous record (hex; zeros for the first).
    pub prev: String,
    /// The id of the key of the MAC.
    pub key_id: String,
    /// HMAC-SHA256 of the canonical encoding (hex).
    pub mac: String,
}

impl Record {
    /// Parses one stored record, which must be exactly its canonical JSON (the form sinks
    /// write): a line with duplicate, reordered or extra fields, or other spacing, is
    /// refused, so that what a reader (or `grep`) sees is what the MAC covers.
    pub(crate) fn from_line(line: &[u8]) -> Result<Record, String> {
        let record: Record =
            serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
        let again = serde_json::to_vec(&record).map_err(|e| format!("not a record: {e}"))?;
        if again != line {
            return Err("not in canonical form (duplicate, reordered or extra fields)".into());
        }
        Ok(record)
    }

    /// The canonical, length-prefixed encoding the record's MAC covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

/// Canonical, length-prefixed encoding of everything a record's MAC covers.
pub(crate) fn canonical(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    text(&mut out, "palisade-audit record v1");
    out.extend_from_slice(&record.seq.to_be_bytes());
    out.extend_from_slice(&record.time_ms.to_be_bytes());
    text(&mut out, &record.actor);
    text(&mut out, &record.action);
    text(&mut out, &record.target);
    for option in [&record.org, &record.request_id] {
        match option {
            Some(s) => {
                out.push(1);
                text(&mut out, s);
            }
            None => out.push(0),
        }
    }
    text(&mut out, record.outcome.as_str());
    out.extend_from_slice(&(record.details.len() as u64).to_be_bytes());
    for (k, v) in &record.details {
        text(&mut out, k);
        text(&mut out, v);
    }
    text(&mut out, &record.prev);
    text(&mut out, &record.key_id);
    out
}

/// The hash the next record's `prev` names: SHA-256 of the canonical encoding and the MAC.
pub(crate) fn hash(record: &Record) -> [u8; 32] {
    hash_of(&canonical(record), &record.mac)
}

/// [`hash`] from an encoding already made.
pub(crate) fn hash_of(canonical: &[u8], mac: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(canonical);
    h.update(mac.as_bytes());
    h.finalize().into()
}

/// The `prev` of the first record.
pub(crate) fn genesis() -> String {
    hex::encode([0u8; 32])
}
