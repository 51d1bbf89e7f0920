//! [`MemoryStore`]: families in one process's memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::store::{
    DeviceBinding, Family, FamilyId, RefreshStore, Rotation, StoreError, TokenHash,
};

#[derive(Debug)]
struct State {
    family: Family,
    current: TokenHash,
    consumed: HashSet<TokenHash>,
    last_used: u64,
    revoked: bool,
    /// (consumed hash, sealed successor, until)
    grace: Option<(TokenHash, String, u64)>,
}

#[derive(Debug, Default)]
struct Inner {
    families: HashMap<FamilyId, State>,
    by_user: HashMap<String, HashSet<FamilyId>>,
}

/// Families in memory, for one process. Clones share the store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::new("memory store lock poisoned", None))
    }
}

impl RefreshStore for MemoryStore {
    async fn create(&self, family: &Family, first: &TokenHash) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner
            .by_user
            .entry(family.user_id.clone())
            .or_default()
            .insert(family.id.clone());
        inner.families.insert(
            family.id.clone(),
            State {
                family: family.clone(),
                current: *first,
                consumed: HashSet::new(),
                last_used: family.created_at,
                revoked: false,
                grace: None,
            },
        );
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
        let mut inner = self.lock()?;
        let Some(state) = inner.families.get_mut(family) else {
            return Ok(Rotation::Unknown);
        };
        if state.revoked {
            return Ok(Rotation::Revoked);
        }
        if presented.iter().any(|h| state.consumed.contains(h)) {
            if let Some((hash, sealed, until)) = &state.grace
                && presented.contains(hash)
                && now < *until
                && state.family.device.canonical() == device.canonical()
            {
                return Ok(Rotation::Grace {
                    user_id: state.family.user_id.clone(),
                    sealed: sealed.clone(),
                });
            }
            state.revoked = true;
            return Ok(Rotation::Reused {
                user_id: state.family.user_id.clone(),
            });
        }
        if !presented.contains(&state.current) {
            return Ok(Rotation::Unknown);
        }
        if now >= state.family.absolute_expiry
            || now.saturating_sub(state.last_used) > state.family.idle_timeout
        {
            return Ok(Rotation::Expired);
        }
        if state.family.device.canonical() != device.canonical() {
            return Ok(Rotation::DeviceMismatch);
        }
        let old = std::mem::replace(&mut state.current, *successor);
        state.consumed.insert(old);
        state.last_used = now;
        state.grace = grace.map(|g| (old, g.sealed.clone(), g.until));
        Ok(Rotation::Rotated {
            user_id: state.family.user_id.clone(),
        })
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        presented: &[TokenHash],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        Ok(match inner.families.get_mut(family) {
            Some(state)
                if presented
                    .iter()
                    .any(|h| *h == state.current || state.consumed.contains(h)) =>
            {
                state.revoked = true;
                true
            }
            _ => false,
        })
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let ids: Vec<FamilyId> = inner
            .by_user
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut count = 0;
        for id in ids {
            if let Some(state) = inner.families.get_mut(&id)
                && !state.revoked
            {
                state.revoked = true;
                count += 1;
            }
        }
        Ok(count)
    }

    async fn is_revoked(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let inner = self.lock()?;
        Ok(inner.families.get(family).is_none_or(|s| s.revoked))
    }
}

/// A stored single-use token: purpose, subject, expiry.
type SingleUseEntry = (crate::single_use::Purpose, String, u64);

/// Single-use tokens in memory, for one process. Clones share the store.
#[derive(Clone, Debug, Default)]
pub struct MemorySingleUseStore {
    inner: Arc<Mutex<HashMap<TokenHash, SingleUseEntry>>>,
}

impl MemorySingleUseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl crate::single_use::SingleUseStore for MemorySingleUseStore {
    async fn insert(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
        subject: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| StoreError::new("lock poisoned", None))?;
        map.insert(*hash, (purpose.clone(), subject.to_owned(), expires));
        Ok(())
    }

    async fn take(
        &self,
        hash: &TokenHash,
        purpose: &crate::single_use::Purpose,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| StoreError::new("lock poisoned", None))?;
        match map.get(hash) {
            Some((p, _, _)) if p == purpose => Ok(map.remove(hash).map(|(_, s, e)| (s, e))),
            _ => Ok(None),
        }
    }

    async fn revoke(
        &self,
        subject: &str,
        purpose: Option<&crate::single_use::Purpose>,
    ) -> Result<usize, StoreError> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| StoreError::new("lock poisoned", None))?;
        let before = map.len();
        map.retain(|_, (p, s, _)| !(s == subject && purpose.is_none_or(|want| want == p)));
        Ok(before - map.len())
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| StoreError::new("lock poisoned", None))?;
        let before = map.len();
        map.retain(|_, (_, _, expires)| *expires > now);
        Ok(before - map.len())
    }
}
