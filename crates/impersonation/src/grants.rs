//! The impersonations in progress: which credentials are live, and which ends still need their
//! audit record.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// The most impersonations one [`Impersonator`](crate::Impersonator) keeps in progress; a start
/// beyond it is refused until ends or expiries free room.
pub const MAX_ACTIVE: usize = 10_000;

/// The most impersonations one admin has in progress at once.
pub const MAX_PER_ADMIN: usize = 16;

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
    /// Ended (the credential is refused from then on), the end not recorded yet.
    pub(crate) ended: Option<EndReason>,
    /// Its end record is being written (by `end` or a sweep): nobody else writes it.
    pub(crate) recording: bool,
}

impl Active {
    fn live(&self, now: SystemTime) -> bool {
        self.ended.is_none() && now < self.expires_at
    }
}

/// Why a start could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// [`MAX_ACTIVE`] in progress.
    All,
    /// [`MAX_PER_ADMIN`] in progress for this admin.
    Admin,
}

/// The registry (in memory, per process).
#[derive(Debug, Default)]
pub(crate) struct Grants {
    active: Mutex<HashMap<String, Active>>,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        // Every change is one insert, remove or field write, so the map is consistent even
        // after a panic elsewhere: a poisoned lock is still usable.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `grant`, unless too many are in progress (in all, or for its admin).
    pub(crate) fn insert(&self, id: String, grant: Active) -> Result<(), Full> {
        let mut active = self.lock();
        if active.len() >= MAX_ACTIVE {
            return Err(Full::All);
        }
        let mine = active
            .values()
            .filter(|g| {
                g.admin_subject == grant.admin_subject && g.admin_issuer == grant.admin_issuer
            })
            .count();
        if mine >= MAX_PER_ADMIN {
            return Err(Full::Admin);
        }
        active.insert(id, grant);
        Ok(())
    }

    /// Forgets a grant whose start could not be recorded.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Whether the credential of `id` may still be used at `now`, by `user` of `org` acting
    /// for the admin `actor` (issuer, subject).
    pub(crate) fn is_live_for(
        &self,
        id: &str,
        now: SystemTime,
        user: &str,
        org: Option<&str>,
        actor: (&str, &str),
    ) -> bool {
        self.lock().get(id).is_some_and(|g| {
            g.live(now)
                && g.user == user
                && org == Some(g.org.as_str())
                && (g.admin_issuer.as_str(), g.admin_subject.as_str()) == actor
        })
    }

    /// Ends `id` if it is live at `now` and `allowed` says the caller may end it; answers the
    /// grant, whose end the caller then records (see [`Grants::recorded`]).
    pub(crate) fn end(
        &self,
        id: &str,
        now: SystemTime,
        allowed: impl FnOnce(&Active) -> bool,
    ) -> Option<Active> {
        let mut active = self.lock();
        let grant = active.get_mut(id).filter(|g| g.live(now))?;
        if !allowed(grant) {
            return None;
        }
        grant.ended = Some(EndReason::Ended);
        grant.recording = true;
        Some(grant.clone())
    }

    /// The grants whose end is due to be recorded at `now` (ended ones, and expired ones,
    /// marked ended by this call), unless someone is recording it already; they are marked
    /// as being recorded.
    pub(crate) fn due(&self, now: SystemTime) -> Vec<(String, Active)> {
        let mut active = self.lock();
        active
            .iter_mut()
            .filter_map(|(id, g)| {
                if g.recording {
                    return None;
                }
                if g.ended.is_none() && now >= g.expires_at {
                    g.ended = Some(EndReason::Expired);
                }
                g.ended?;
                g.recording = true;
                Some((id.clone(), g.clone()))
            })
            .collect()
    }

    /// Drops `id` once its end is recorded.
    pub(crate) fn recorded(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The end of `id` could not be recorded: a later sweep tries again.
    pub(crate) fn not_recorded(&self, id: &str) {
        if let Some(g) = self.lock().get_mut(id) {
            g.recording = false;
        }
    }

    /// How many impersonations are in progress (or wait for their end to be recorded).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
