//! The impersonations in progress: which credentials are live, and which ends still need their
//! audit record.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// The most impersonations one [`Impersonator`](crate::Impersonator) keeps in progress; a start
/// beyond it is refused until ends or expiries free room.
pub const MAX_ACTIVE: usize = 10_000;

/// Why an impersonation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Ended by the admin (or with the credential itself).
    Ended,
    /// The credential's lifetime ran out.
    Expired,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::Expired => "expired",
        }
    }
}

/// One impersonation in progress.
#[derive(Clone, Debug)]
pub(crate) struct Active {
    pub(crate) admin_issuer: String,
    pub(crate) admin_subject: String,
    pub(crate) user: String,
    pub(crate) org: String,
    pub(crate) expires_at: SystemTime,
    /// Ended, but the end is not recorded yet (the credential is refused already).
    pub(crate) ended: Option<EndReason>,
}

/// The registry (in memory, per process).
#[derive(Debug, Default)]
pub(crate) struct Grants {
    active: Mutex<HashMap<String, Active>>,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        // The map stays consistent under a panic elsewhere (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `grant`, unless [`MAX_ACTIVE`] are in progress.
    pub(crate) fn insert(&self, id: String, grant: Active) -> bool {
        let mut active = self.lock();
        if active.len() >= MAX_ACTIVE {
            return false;
        }
        active.insert(id, grant);
        true
    }

    /// Forgets a grant whose start could not be recorded.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Whether the credential of `id` may still be used at `now`.
    pub(crate) fn is_live(&self, id: &str, now: SystemTime) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|g| g.ended.is_none() && now < g.expires_at)
    }

    /// The grant `id`, if it is still in progress.
    pub(crate) fn get_live(&self, id: &str, now: SystemTime) -> Option<Active> {
        self.lock()
            .get(id)
            .filter(|g| g.ended.is_none() && now < g.expires_at)
            .cloned()
    }

    /// Marks `id` ended (its credential is refused from now on).
    pub(crate) fn mark_ended(&self, id: &str, reason: EndReason) {
        if let Some(g) = self.lock().get_mut(id) {
            g.ended.get_or_insert(reason);
        }
    }

    /// The grants whose end is due to be recorded at `now`: ended ones, and expired ones
    /// (marked ended by this call).
    pub(crate) fn due(&self, now: SystemTime) -> Vec<(String, Active)> {
        let mut active = self.lock();
        active
            .iter_mut()
            .filter_map(|(id, g)| {
                if g.ended.is_none() && now >= g.expires_at {
                    g.ended = Some(EndReason::Expired);
                }
                g.ended.is_some().then(|| (id.clone(), g.clone()))
            })
            .collect()
    }

    /// Drops `id` once its end is recorded.
    pub(crate) fn recorded(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many impersonations are in progress (or wait for their end to be recorded).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
