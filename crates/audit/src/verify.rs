//! Streaming verification of a log.

use std::time::{Duration, UNIX_EPOCH};

use palisade_core::KeyRing;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::chain::{Checkpoint, mac};
use crate::record::{CHECKPOINT_ACTION, Record, canonical, genesis, hash_of};

/// What is wrong with a record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// The line is not a record.
    Unreadable(String),
    /// The sequence number is not the next one (a record deleted, inserted or moved).
    Sequence {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// The record does not name the previous record's hash (deleted, inserted, moved, or the
    /// previous record changed).
    BrokenChain,
    /// The MAC does not match (a field was changed, or the MAC forged).
    BadMac,
    /// Signed with a key the ring does not hold.
    UnknownKey(String),
    /// Signed with a key not valid at the record's time (retired, or not yet valid).
    RetiredKey(String),
    /// A checkpoint record that does not match the chain it sits in.
    CheckpointMismatch,
    /// The log ends before (or differs at) the published checkpoint: truncated or rewritten.
    Truncated {
        /// The checkpoint's sequence number.
        checkpoint_seq: u64,
    },
    /// The published checkpoint's own signature does not verify.
    BadCheckpoint,
    /// The record's time is earlier than the previous record's (records are written in
    /// time order; an older time is how a retired key would be passed off as valid).
    TimeWentBack,
    /// Signed with an older key version than an earlier record (keys only roll forward).
    KeyRolledBack(String),
}

/// The first bad record and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The line (1-based) of the bad record; for a truncation, the number of records read.
    pub line: u64,
    /// Why.
    pub kind: FindingKind,
}

/// The result of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Records read and found good.
    pub records: u64,
    /// The first finding, if any.
    pub finding: Option<Finding>,
}

impl Report {
    /// Whether the log verified.
    pub fn is_ok(&self) -> bool {
        self.finding.is_none()
    }
}

/// Verifies logs against a key ring (the signing keys, retired ones included).
#[derive(Clone, Debug)]
pub struct Verifier {
    ring: KeyRing,
}

impl Verifier {
    /// A verifier trusting `ring`'s keys, each within its validity window.
    pub fn new(ring: KeyRing) -> Self {
        Self { ring }
    }

    /// Checks the MAC; answers the key's version.
    fn mac_ok(
        &self,
        key_id: &str,
        at_ms: u64,
        bytes: &[u8],
        expected: &str,
    ) -> Result<u32, FindingKind> {
        let Some(key) = self.ring.keys().iter().find(|k| k.id().as_str() == key_id) else {
            return Err(FindingKind::UnknownKey(key_id.to_owned()));
        };
        let at = UNIX_EPOCH
            .checked_add(Duration::from_millis(at_ms))
            .ok_or(FindingKind::RetiredKey(key_id.to_owned()))?;
        if !key.is_valid_at(at) {
            return Err(FindingKind::RetiredKey(key_id.to_owned()));
        }
        let computed =
            mac(key.material().expose_secret(), bytes).map_err(|_| FindingKind::BadMac)?;
        if bool::from(computed.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(key.version())
        } else {
            Err(FindingKind::BadMac)
        }
    }

    /// Checks one record's MAC under its key (not its place in the chain).
    pub(crate) fn record_ok(&self, record: &Record) -> Result<u32, FindingKind> {
        self.mac_ok(
            &record.key_id,
            record.time_ms,
            &canonical(record),
            &record.mac,
        )
    }

    /// Verifies `records` in order, holding one record at a time. With `checkpoint` (published
    /// elsewhere), the log must reach it and agree with it. Stops at the first finding.
    pub fn verify(
        &self,
        records: impl IntoIterator<Item = Result<Record, String>>,
        checkpoint: Option<&Checkpoint>,
    ) -> Report {
        let mut verification = self.start(checkpoint);
        for record in records {
            if !verification.push(record) {
                break;
            }
        }
        verification.finish()
    }

    /// Starts an incremental verification (for logs read in pages, such as from a database):
    /// [`Verification::push`] each record in order, then [`Verification::finish`].
    pub fn start<'a>(&'a self, checkpoint: Option<&'a Checkpoint>) -> Verification<'a> {
        let mut v = Verification {
            verifier: self,
            checkpoint,
            read: 0,
            head: genesis(),
            reached: checkpoint.is_none_or(|cp| cp.seq == 0 && cp.head == genesis()),
            finding: None,
            last_time: 0,
            last_version: 0,
        };
        if let Some(cp) = checkpoint {
            let bytes = Checkpoint::canonical(cp.seq, &cp.head, &cp.key_id);
            // A checkpoint carries no time: only an unknown key or a bad MAC refuses it.
            let known = self
                .ring
                .keys()
                .iter()
                .find(|k| k.id().as_str() == cp.key_id);
            let good = known.is_some_and(|key| {
                mac(key.material().expose_secret(), &bytes)
                    .is_ok_and(|m| bool::from(m.as_bytes().ct_eq(cp.mac.as_bytes())))
            });
            if !good {
                v.finding = Some(Finding {
                    line: 1,
                    kind: FindingKind::BadCheckpoint,
                });
            }
        }
        v
    }
}

/// A verification in progress (see [`Verifier::start`]). Holds one hash, whatever the log's
/// length.
#[derive(Debug)]
pub struct Verification<'a> {
    verifier: &'a Verifier,
    checkpoint: Option<&'a Checkpoint>,
    read: u64,
    head: String,
    reached: bool,
    finding: Option<Finding>,
    last_time: u64,
    last_version: u32,
}

impl Verification<'_> {
    /// Checks the next record; `false` once a finding is made (later records are not read).
    pub fn push(&mut self, item: Result<Record, String>) -> bool {
        if self.finding.is_some() {
            return false;
        }
        let line = self.read + 1;
        match self.check(line, item) {
            Ok(()) => {
                self.read = line;
                true
            }
            Err(kind) => {
                self.finding = Some(Finding { line, kind });
                false
            }
        }
    }

    fn check(&mut self, line: u64, item: Result<Record, String>) -> Result<(), FindingKind> {
        let record = item.map_err(FindingKind::Unreadable)?;
        if record.seq != line {
            return Err(FindingKind::Sequence {
                expected: line,
                found: record.seq,
            });
        }
        if record.prev != self.head {
            return Err(FindingKind::BrokenChain);
        }
        let bytes = canonical(&record);
        let version = self
            .verifier
            .mac_ok(&record.key_id, record.time_ms, &bytes, &record.mac)?;
        if record.time_ms < self.last_time {
            return Err(FindingKind::TimeWentBack);
        }
        if version < self.last_version {
            return Err(FindingKind::KeyRolledBack(record.key_id.clone()));
        }
        self.last_time = record.time_ms;
        self.last_version = version;
        if record.action == CHECKPOINT_ACTION {
            let covers = record.details.get("covered_seq").map(String::as_str)
                == Some(&(record.seq - 1).to_string())
                && record.details.get("covered_head") == Some(&self.head);
            if !covers || record.actor != "palisade-audit" {
                return Err(FindingKind::CheckpointMismatch);
            }
        }
        self.head = hex::encode(hash_of(&bytes, &record.mac));
        if let Some(cp) = self.checkpoint
            && cp.seq == line
        {
            if cp.head != self.head {
                return Err(FindingKind::Truncated {
                    checkpoint_seq: cp.seq,
                });
            }
            self.reached = true;
        }
        Ok(())
    }

    /// The report: the first finding, or a truncation when the log ended before the
    /// checkpoint.
    pub fn finish(self) -> Report {
        if let Some(finding) = self.finding {
            return Report {
                records: finding.line.saturating_sub(1),
                finding: Some(finding),
            };
        }
        if !self.reached {
            return Report {
                records: self.read,
                finding: Some(Finding {
                    line: self.read,
                    kind: FindingKind::Truncated {
                        checkpoint_seq: self.checkpoint.map_or(0, |cp| cp.seq),
                    },
                }),
            };
        }
        Report {
            records: self.read,
            finding: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::record::{Event, Outcome};
    use palisade_core::ManualClock;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const T: u64 = 1_800_000_000;

    /// A record signed by hand with `key`, after `prev`.
    fn forged(prev: &Record, key_id: &str, key: &str, time_ms: u64) -> Record {
        use base64::Engine as _;
        let material = base64::engine::general_purpose::STANDARD
            .decode(key)
            .expect("key");
        let mut r = prev.clone();
        r.seq += 1;
        r.time_ms = time_ms;
        r.actor = "forger".into();
        r.prev = hex::encode(crate::record::hash(prev));
        r.key_id = key_id.into();
        r.mac = mac(&material, &canonical(&r)).expect("mac");
        r
    }

    #[test]
    fn a_retired_key_cannot_sign_with_an_old_date() {
        // k1 retired at T + 100; k2 active from T + 50.
        let ring = KeyRing::parse(&format!(
            "k1 1 {K1} retire_after={}\nk2 2 {K2} not_before={}",
            T + 100,
            T + 50
        ))
        .expect("ring");
        let clock = ManualClock::at_unix(T);
        let mut chain = Chain::with_clock(ring.clone(), clock.shared());
        let mut log = chain
            .seal(Event::new("a", "x", "t", Outcome::Success))
            .expect("k1");
        clock.advance(Duration::from_secs(200));
        log.extend(
            chain
                .seal(Event::new("a", "x", "t", Outcome::Success))
                .expect("k2"),
        );
        let verifier = Verifier::new(ring);
        assert!(verifier.verify(log.iter().cloned().map(Ok), None).is_ok());
        // Someone holding the retired k1 dates a record before k1's retirement.
        let last = log.last().cloned().expect("record");
        let forged = forged(&last, "k1", K1, (T + 20) * 1_000);
        let report = verifier.verify(log.iter().cloned().chain([forged]).map(Ok), None);
        assert_eq!(
            report.finding.map(|f| (f.line, f.kind)),
            Some((3, FindingKind::TimeWentBack))
        );
        // Dated at the last record's time: the key is retired then.
        let same_time = self::forged(&last, "k1", K1, last.time_ms);
        let report = verifier.verify(log.iter().cloned().chain([same_time]).map(Ok), None);
        assert_eq!(
            report.finding.map(|f| (f.line, f.kind)),
            Some((3, FindingKind::RetiredKey("k1".into())))
        );
    }

    #[test]
    fn key_versions_only_roll_forward() {
        // Both keys valid forever; k2 is the newer.
        let ring = KeyRing::parse(&format!("k1 1 {K1}\nk2 2 {K2}")).expect("ring");
        let mut chain = Chain::with_clock(ring.clone(), ManualClock::at_unix(T).shared());
        let log = chain
            .seal(Event::new("a", "x", "t", Outcome::Success))
            .expect("k2");
        assert_eq!(log[0].key_id, "k2");
        let forged = forged(&log[0], "k1", K1, log[0].time_ms);
        let report = Verifier::new(ring).verify(log.iter().cloned().chain([forged]).map(Ok), None);
        assert_eq!(
            report.finding.map(|f| f.kind),
            Some(FindingKind::KeyRolledBack("k1".into()))
        );
    }
}
