//! The writer's side of the chain: sealing events into signed, linked records.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use palisade_core::{KeyRing, SharedClock};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AuditError;
use crate::record::{CHECKPOINT_ACTION, Event, Outcome, Record, canonical, genesis, hash, hash_of};

type HmacSha256 = Hmac<Sha256>;

/// The head of a chain at some record, signed: publish it elsewhere (another system, a
/// ticket, a log shipper), and a later verification given it detects a truncated tail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the record it covers.
    pub seq: u64,
    /// That record's hash (hex).
    pub head: String,
    /// The key of the MAC.
    pub key_id: String,
    /// HMAC-SHA256 over the checkpoint (hex).
    pub mac: String,
}

impl Checkpoint {
    pub(crate) fn canonical(seq: u64, head: &str, key_id: &str) -> Vec<u8> {
        let mut out = b"palisade-audit checkpoint v1".to_vec();
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(head.len() as u64).to_be_bytes());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&(key_id.len() as u64).to_be_bytes());
        out.extend_from_slice(key_id.as_bytes());
        out
    }
}

/// A chain's writer state: the key ring, the last sequence number and hash, and when to emit
/// the next checkpoint.
#[derive(Debug)]
pub struct Chain {
    ring: KeyRing,
    clock: SharedClock,
    seq: u64,
    head: String,
    every: u64,
    /// The previous record's time: records never go back in time, even when writers'
    /// clocks disagree a little.
    last_time: u64,
}

pub(crate) fn mac(key: &[u8], bytes: &[u8]) -> Result<String, AuditError> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| AuditError::NoKey)?;
    mac.update(bytes);
    Ok(hex::encode(mac.finalize().into_bytes()))
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Chain {
    /// A new, empty chain signing with `ring`'s active key, on the system clock, with a
    /// checkpoint record every 1,000 records.
    pub fn new(ring: KeyRing) -> Self {
        Self::with_clock(ring, palisade_core::SystemClock::shared())
    }

    /// A new chain reading the time from `clock`.
    pub fn with_clock(ring: KeyRing, clock: SharedClock) -> Self {
        Self {
            ring,
            clock,
            seq: 0,
            head: genesis(),
            every: 1_000,
            last_time: 0,
        }
    }

    /// A checkpoint record after every `n` records (at least 1).
    pub fn checkpoint_every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    /// Continues after `last`, the last record of an existing log, once its MAC verifies
    /// under this chain's keys (a writer never extends a record it cannot vouch for).
    pub(crate) fn resume(mut self, last: Option<&Record>) -> Result<Self, AuditError> {
        if let Some(last) = last {
            crate::Verifier::new(self.ring.clone())
                .record_ok(last)
                .map_err(|kind| {
                    AuditError::Corrupt(format!(
                        "the last record ({}) does not verify under the configured keys: {kind:?}",
                        last.seq
                    ))
                })?;
            self.seq = last.seq;
            self.head = hex::encode(hash(last));
            self.last_time = last.time_ms;
        }
        Ok(self)
    }

    fn sign(&mut self, event: Event) -> Result<Record, AuditError> {
        // The record's time first (never before the last record's), then the key active at
        // that time: a writer whose clock lags never signs with a key retired at the stamp.
        let time_ms = millis(self.clock.now()).max(self.last_time);
        let at = UNIX_EPOCH + std::time::Duration::from_millis(time_ms);
        let key = self.ring.active(at).map_err(|_| AuditError::NoKey)?;
        let seq = self.seq.checked_add(1).ok_or(AuditError::Corrupt(
            "the chain is at its last number".into(),
        ))?;
        let mut record = Record {
            seq,
            time_ms,
            actor: event.actor,
            action: event.action,
            target: event.target,
            org: event.org,
            request_id: event.request_id,
            outcome: event.outcome,
            details: event.details,
            prev: self.head.clone(),
            key_id: key.id().as_str().to_owned(),
            mac: String::new(),
        };
        let bytes = canonical(&record);
        record.mac = mac(key.material().expose_secret(), &bytes)?;
        self.seq = record.seq;
        self.head = hex::encode(hash_of(&bytes, &record.mac));
        self.last_time = record.time_ms;
        Ok(record)
    }

    /// Seals `event` into the next record, followed by a checkpoint record when one is due.
    /// The chain only moves when every record was made (callers write them all, or none).
    pub fn seal(&mut self, event: Event) -> Result<Vec<Record>, AuditError> {
        event.check()?;
        let (seq, head, last_time) = (self.seq, self.head.clone(), self.last_time);
        let result = (|| {
            let mut records = vec![self.sign(event)?];
            if self.seq.is_multiple_of(self.every) {
                let covered = (self.seq, self.head.clone());
                let checkpoint = Event::new(
                    "palisade-audit",
                    CHECKPOINT_ACTION,
                    "chain",
                    Outcome::Success,
                )
                .detail("covered_seq", covered.0.to_string())
                .detail("covered_head", covered.1);
                records.push(self.sign(checkpoint)?);
            }
            Ok(records)
        })();
        if result.is_err() {
            self.seq = seq;
            self.head = head;
            self.last_time = last_time;
        }
        result
    }

    /// Undoes the last [`Chain::seal`] (its records were not written).
    pub(crate) fn rewind(&mut self, (seq, head, last_time): (u64, String, u64)) {
        self.seq = seq;
        self.head = head;
        self.last_time = last_time;
    }

    /// The position to rewind to.
    pub(crate) fn position(&self) -> (u64, String, u64) {
        (self.seq, self.head.clone(), self.last_time)
    }

    /// A signed checkpoint of the chain's head, to publish elsewhere.
    pub fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let key = self
            .ring
            .active(self.clock.now())
            .map_err(|_| AuditError::NoKey)?;
        let key_id = key.id().as_str().to_owned();
        let mac = mac(
            key.material().expose_secret(),
            &Checkpoint::canonical(self.seq, &self.head, &key_id),
        )?;
        Ok(Checkpoint {
            seq: self.seq,
            head: self.head.clone(),
            key_id,
            mac,
        })
    }
}
