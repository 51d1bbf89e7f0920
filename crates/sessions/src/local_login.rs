//! Local password login, locked down and off unless enabled (`LOCAL_AUTH_ENABLED`).
//!
//! - argon2id at OWASP's current minimum (19 MiB, 2 passes, 1 lane), run on Tokio's blocking
//!   pool, as many at a time as there are cores (a request that waits more than 2 s for a slot
//!   is refused as unavailable; sign-up has no attempt limit of its own: put a rate limit in
//!   front of it); a stored hash with other parameters is
//!   re-hashed at the next successful login.
//! - A password policy in the style of NIST SP 800-63B: 12 to 128 characters, no composition
//!   rules, refused when it is (or is built on) a common password from the bundled list, or
//!   contains the account's email name, or follows a pattern (runs, repeats, few characters).
//! - The email must be verified (with a single-use token) before the first login.
//! - Attempts are limited per account, per client address (IPv6 by /64) and per IPv6 /48 in a
//!   sliding window. Each attempt is counted before its password is checked (concurrent guesses cannot
//!   slip past the limit) and given back when it succeeds. The counter holds at most 100,000
//!   keys: when full of live keys it refuses attempts under new keys (fail closed). The counter
//!   lives in the process: several replicas each count on their own.
//! - Unknown accounts cost the same time and get the same answer as a wrong password.
//! - A successful login starts a refresh family; the caller issues the access token. A
//!   password reset that lands while a login is under way wins: the login re-reads the hash
//!   after starting its family and drops the family if the hash changed.
//!
//! The bundled list is Django's `common-passwords.txt` (BSD-3-Clause, 19,640 entries compiled
//! by Royce Williams).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use palisade_core::SharedClock;
use zeroize::Zeroizing;

use crate::service::{RefreshSessions, SessionError};
use crate::single_use::{Purpose, SingleUseError, SingleUseStore, SingleUseToken, SingleUseTokens};
use crate::store::{DeviceBinding, FamilyId, RefreshStore, StoreError};
use crate::token::RefreshToken;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Why a password was refused at sign-up or change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordRejected {
    /// Fewer than 12 characters.
    #[error("passwords have at least 12 characters")]
    TooShort,
    /// More than 128 characters.
    #[error("passwords have at most 128 characters")]
    TooLong,
    /// A common or breached password, or one built on one.
    #[error("this password is too common")]
    Common,
    /// Contains the account's email name.
    #[error("the password contains the email address")]
    ContainsEmail,
    /// Built from a pattern: few distinct characters, a keyboard or alphabet run, or a short
    /// unit repeated (`aaaaaaaaaaaa`, `abcdefghijkl`, `123456789012`, `passwordpassword`).
    #[error("this password follows a guessable pattern")]
    Predictable,
}

/// Whether a password is a pattern rather than a secret (see [`PasswordRejected::Predictable`]).
fn predictable(chars: &[char]) -> bool {
    let mut distinct: Vec<char> = chars.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return true;
    }
    // Runs: neighbours one code point apart (or equal), allowing one wrap such as 9 -> 0.
    let steps = chars
        .windows(2)
        .filter(|w| (w[0] as i64 - w[1] as i64).abs() <= 1)
        .count();
    if steps + 2 >= chars.len() {
        return true;
    }
    // A unit shorter than the minimum length, repeated.
    (1..12.min(chars.len())).any(|unit| {
        chars.len().is_multiple_of(unit) && chars.chunks(unit).all(|c| c == &chars[..unit])
    })
}

/// Checks a new password against the policy (see the module docs).
pub fn check_password(password: &str, email: &str) -> Result<(), PasswordRejected> {
    let chars = password.chars().count();
    if chars < 12 {
        return Err(PasswordRejected::TooShort);
    }
    if chars > 128 {
        return Err(PasswordRejected::TooLong);
    }
    let lower = password.to_lowercase();
    let lower_chars: Vec<char> = lower.chars().collect();
    if predictable(&lower_chars) {
        return Err(PasswordRejected::Predictable);
    }
    // The password itself, or its core with trailing digits and symbols removed
    // ("password1234!" is "password").
    let core = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    let core = core.trim_start_matches(|c: char| !c.is_alphabetic());
    if COMMON.contains(lower.as_str()) || (core.len() >= 4 && COMMON.contains(core)) {
        return Err(PasswordRejected::Common);
    }
    let name = email.split('@').next().unwrap_or("").to_lowercase();
    if name.len() >= 4 && lower.contains(&name) {
        return Err(PasswordRejected::ContainsEmail);
    }
    Ok(())
}

/// A local account. Its `Debug` output leaves the password hash out.
#[derive(Clone)]
pub struct Account {
    /// The user id (also the refresh family's user).
    pub user_id: String,
    /// The email, lowercase.
    pub email: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Whether the email was verified.
    pub verified: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("password_hash", &"[REDACTED]")
            .field("verified", &self.verified)
            .finish()
    }
}

/// Where local accounts live. Every operation is atomic on its own.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates `account`; `false` when the email is taken (nothing changes then).
    fn create(&self, account: &Account) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The account of `email` (lowercase), if any.
    fn get(&self, email: &str) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;
    /// Replaces the password hash; `false` for an unknown account or, with `expected`, when
    /// the stored hash is no longer `expected` (compare-and-set: a re-hash at login must not
    /// undo a password reset that landed meanwhile).
    fn set_password_hash(
        &self,
        email: &str,
        hash: &str,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Marks the email verified; `false` for an unknown account.
    fn mark_verified(&self, email: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Local accounts in memory, for one process. Clones share the store.
#[derive(Clone, Debug, Default)]
pub struct MemoryAccounts {
    inner: Arc<Mutex<HashMap<String, Account>>>,
}

impl MemoryAccounts {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Account>>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::new("lock poisoned", None))
    }
}

impl AccountStore for MemoryAccounts {
    async fn create(&self, account: &Account) -> Result<bool, StoreError> {
        let mut map = self.lock()?;
        if map.contains_key(&account.email) {
            return Ok(false);
        }
        map.insert(account.email.clone(), account.clone());
        Ok(true)
    }

    async fn get(&self, email: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.lock()?.get(email).cloned())
    }

    async fn set_password_hash(
        &self,
        email: &str,
        hash: &str,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .get_mut(email)
            .filter(|a| expected.is_none_or(|e| a.password_hash == e))
            .map(|a| a.password_hash = hash.to_owned())
            .is_some())
    }

    async fn mark_verified(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .get_mut(email)
            .map(|a| a.verified = true)
            .is_some())
    }
}

/// Why a login (or sign-up) did not succeed. The client sees one generic message for
/// `InvalidCredentials`, whatever the cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// Local login is switched off.
    #[error("local login is disabled")]
    Disabled,
    /// Unknown account or wrong password (indistinguishable on purpose).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The password was right but the email is not verified yet.
    #[error("email not verified")]
    Unverified,
    /// Too many attempts for this account or client address; retry later.
    #[error("too many attempts")]
    TooManyAttempts,
    /// The password does not meet the policy.
    #[error("password refused: {0}")]
    Password(PasswordRejected),
    /// A verification token was refused.
    #[error("verification failed: {0}")]
    Token(SingleUseError),
    /// A store failed (fail closed).
    #[error("unavailable")]
    Unavailable,
}

impl From<StoreError> for LoginError {
    fn from(err: StoreError) -> Self {
        tracing::error!(target: "palisade::sessions", %err, "account store failed");
        LoginError::Unavailable
    }
}

impl From<SessionError> for LoginError {
    fn from(_: SessionError) -> Self {
        LoginError::Unavailable
    }
}

/// What a sign-up produced: one mail to send either way, and the same store work, so neither
/// the answer nor its timing tells a caller whether the address was free.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignUp {
    /// A new, unverified account: mail this email-verification token.
    Created(SingleUseToken),
    /// The address has an account already: mail its owner that someone tried to sign up,
    /// with this [`Purpose::sign_up_notice`] token (a link on to a password reset, in case it
    /// was them). The account is unchanged, and its pending reset links stay valid.
    Exists(SingleUseToken),
}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    /// The user.
    pub user_id: String,
    /// The new refresh family.
    pub family: FamilyId,
    /// Its first refresh token.
    pub refresh_token: RefreshToken,
}

/// An IPv6 /48 may make this many times the per-address attempts.
const PER_NETWORK_FACTOR: usize = 50;

/// Most keys the attempt counter holds. Past it (after dropping idle keys), attempts under
/// new keys are refused: an attacker flooding distinct keys cannot reset everyone's counts.
const MAX_ATTEMPT_KEYS: usize = 100_000;

/// The findings of a local login that is `enabled` under `profile` (see
/// [`LocalLogin::posture`]), for an application that checks its posture before it builds the
/// login.
pub fn posture(enabled: bool, profile: palisade_core::Profile) -> palisade_core::Posture {
    let mut posture = palisade_core::Posture::new(profile, "local-login");
    if enabled {
        posture.record(
            palisade_core::Severity::Warn,
            "local-login-process-limits",
            format!(
                "password login is on: its attempt limits ({PER_ACCOUNT} per account, {PER_IP} per address in {} min) are counted per process",
                WINDOW.as_secs() / 60
            ),
        );
    }
    posture
}

/// Attempts allowed per account, per client address, in [`WINDOW`].
const PER_ACCOUNT: usize = 5;
const PER_IP: usize = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Sliding-window attempt counter.
#[derive(Debug, Default)]
struct Attempts {
    by_key: HashMap<String, VecDeque<SystemTime>>,
}

impl Attempts {
    fn count(&mut self, key: &str, now: SystemTime, window: Duration) -> usize {
        let Some(q) = self.by_key.get_mut(key) else {
            return 0;
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() > window)
        {
            q.pop_front();
        }
        q.len()
    }

    /// Counts an attempt under each key unless one is at `limit` (checked and recorded under
    /// one lock, so concurrent guesses cannot all slip under the limit); `false` to refuse.
    fn reserve(&mut self, keys: &[(&str, usize)], now: SystemTime, window: Duration) -> bool {
        for (key, limit) in keys {
            if self.count(key, now, window) >= *limit {
                return false;
            }
        }
        if self.by_key.len() + keys.len() > MAX_ATTEMPT_KEYS {
            self.by_key.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t).unwrap_or_default() <= window)
            });
            if keys.iter().any(|(k, _)| !self.by_key.contains_key(*k))
                && self.by_key.len() + keys.len() > MAX_ATTEMPT_KEYS
            {
                tracing::warn!(target: "palisade::sessions", "login attempt table full: refusing new keys");
                return false;
            }
        }
        for (key, _) in keys {
            self.by_key
                .entry((*key).to_owned())
                .or_default()
                .push_back(now);
        }
        true
    }

    /// Takes back the attempt `reserve` counted at `at` (a successful login is not a
    /// failure): that entry, not a newer one another request added meanwhile.
    fn forgive(&mut self, keys: &[(&str, usize)], at: SystemTime) {
        for (key, _) in keys {
            if let Some(q) = self.by_key.get_mut(*key) {
                if let Some(i) = q.iter().rposition(|t| *t == at) {
                    q.remove(i);
                }
                if q.is_empty() {
                    self.by_key.remove(*key);
                }
            }
        }
    }
}

/// The network key for IPv6 clients: their /48, a site's allocation (one tunnel-broker
/// account hands out a /48 of /64s). `None` for IPv4.
fn network_key(client: IpAddr) -> Option<String> {
    match client {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            Some(format!("n:{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
        _ => None,
    }
}

/// The client key for attempt limits: IPv4 addresses as they are, IPv6 by /64 (one
/// subscriber's allocation, which its owner can rotate through freely).
fn client_key(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => format!("i:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("i:{v4}"),
            None => {
                let s = v6.segments();
                format!("i:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// How long a hash waits for a free slot before the request is refused as unavailable.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Runs argon2 off the async workers, a bounded number at a time. The permit moves into the
/// blocking task, so a cancelled request does not free its slot while its hash still runs;
/// a request that cannot get a slot within [`HASH_QUEUE_WAIT`] is refused.
async fn blocking<R: Send + 'static>(
    permits: &Arc<tokio::sync::Semaphore>,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, LoginError> {
    let permit = tokio::time::timeout(HASH_QUEUE_WAIT, permits.clone().acquire_owned())
        .await
        .map_err(|_| {
            tracing::warn!(target: "palisade::sessions", "password hashing saturated");
            LoginError::Unavailable
        })?
        .map_err(|_| LoginError::Unavailable)?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|_| LoginError::Unavailable)
}

/// Local password login (see the module docs).
pub struct LocalLogin<S, T, A = MemoryAccounts> {
    enabled: bool,
    accounts: A,
    sessions: Arc<RefreshSessions<S>>,
    tokens: Arc<SingleUseTokens<T>>,
    clock: SharedClock,
    attempts: Mutex<Attempts>,
    hashing: Arc<tokio::sync::Semaphore>,
    dummy_hash: String,
    window: Duration,
    per_account: usize,
    per_ip: usize,
}

impl<S, T, A> std::fmt::Debug for LocalLogin<S, T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLogin")
            .field("enabled", &self.enabled)
            .field("per_account", &self.per_account)
            .field("per_ip", &self.per_ip)
            .finish_non_exhaustive()
    }
}

fn hasher() -> Argon2<'static> {
    // OWASP (2025): argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Whether a stored hash uses other parameters than the current ones.
fn stale_hash(parsed: &PasswordHash<'_>) -> bool {
    let current = hasher();
    let params = current.params();
    Params::try_from(parsed).map_or(true, |p| {
        p.m_cost() != params.m_cost()
            || p.t_cost() != params.t_cost()
            || p.p_cost() != params.p_cost()
    }) || parsed.algorithm.as_str() != "argon2id"
}

fn hash(password: &str) -> Result<String, LoginError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| LoginError::Unavailable)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| LoginError::Unavailable)?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| LoginError::Unavailable)
}

impl<S: RefreshStore, T: SingleUseStore, A: AccountStore> LocalLogin<S, T, A> {
    /// Local login over `accounts`, starting families in `sessions` and verifying emails with
    /// `tokens`. `enabled` is the `LOCAL_AUTH_ENABLED` setting (false by default).
    pub fn new(
        enabled: bool,
        accounts: A,
        sessions: Arc<RefreshSessions<S>>,
        tokens: Arc<SingleUseTokens<T>>,
        clock: SharedClock,
    ) -> Result<Self, LoginError> {
        Ok(Self {
            enabled,
            accounts,
            sessions,
            tokens,
            clock,
            attempts: Mutex::new(Attempts::default()),
            // Argon2 at these parameters takes 19 MiB and tens of milliseconds: as many at a
            // time as there are cores.
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            dummy_hash: hash("palisade dummy password for timing")?,
            window: WINDOW,
            per_account: PER_ACCOUNT,
            per_ip: PER_IP,
        })
    }

    /// What a security review should know about this login under `profile`: when enabled,
    /// the attempt limits (5 per account and 20 per client address in 15 minutes) are counted
    /// in this process, so behind several replicas put a shared limit (for example a
    /// `palisade-throttle` rule on the login route with the Redis store) in front of it.
    pub fn posture(&self, profile: palisade_core::Profile) -> palisade_core::Posture {
        posture(self.enabled, profile)
    }

    /// Whether `password` matches `stored`, checked off the async workers.
    async fn verifies(&self, password: &str, stored: String) -> Result<bool, LoginError> {
        let password = Zeroizing::new(password.to_owned());
        blocking(&self.hashing, move || {
            PasswordHash::new(&stored).is_ok_and(|parsed| {
                hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
    }

    /// Hashes a password off the async workers.
    async fn hash_blocking(&self, password: &str) -> Result<String, LoginError> {
        let password = Zeroizing::new(password.to_owned());
        blocking(&self.hashing, move || hash(&password)).await?
    }

    /// Creates an unverified account, or, when the address is taken, prepares a notice to its
    /// owner (see [`SignUp`]). Answer the caller the same way in both cases and send both
    /// kinds of mail through the same queue.
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<SignUp, LoginError> {
        if !self.enabled {
            return Err(LoginError::Disabled);
        }
        let email = email.trim().to_lowercase();
        check_password(password, &email).map_err(LoginError::Password)?;
        let account = Account {
            user_id: format!("local:{email}"),
            email: email.clone(),
            password_hash: self.hash_blocking(password).await?,
            verified: false,
        };
        if !self.accounts.create(&account).await? {
            return self
                .tokens
                .issue(&Purpose::sign_up_notice(), &account.email)
                .await
                .map(SignUp::Exists)
                .map_err(LoginError::Token);
        }
        self.tokens
            .issue(&Purpose::email_verification(), &account.email)
            .await
            .map(SignUp::Created)
            .map_err(LoginError::Token)
    }

    /// Consumes an email-verification token and marks the account verified.
    pub async fn verify_email(&self, token: &str) -> Result<(), LoginError> {
        let email = self
            .tokens
            .consume(&Purpose::email_verification(), token)
            .await
            .map_err(LoginError::Token)?;
        if !self.accounts.mark_verified(&email).await? {
            return Err(LoginError::InvalidCredentials);
        }
        Ok(())
    }

    /// Logs in: same time and answer for unknown accounts and wrong passwords.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
        device: &DeviceBinding,
    ) -> Result<LoggedIn, LoginError> {
        if !self.enabled {
            return Err(LoginError::Disabled);
        }
        let email = email.trim().to_lowercase();
        let now = self.clock.now();
        let (account_key, ip_key) = (format!("a:{email}"), client_key(client));
        let net_key = network_key(client);
        let mut keys = vec![
            (account_key.as_str(), self.per_account),
            (ip_key.as_str(), self.per_ip),
        ];
        if let Some(net) = &net_key {
            keys.push((net.as_str(), self.per_ip * PER_NETWORK_FACTOR));
        }
        // Every attempt counts before the password is checked; a success is forgiven after.
        let reserved = self
            .attempts
            .lock()
            .map_err(|_| LoginError::Unavailable)?
            .reserve(&keys, now, self.window);
        if !reserved {
            return Err(LoginError::TooManyAttempts);
        }
        let account = self.accounts.get(&email).await?;
        let stored: String = account
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |a| a.password_hash.clone());
        let (verified, stale) = {
            let password = Zeroizing::new(password.to_owned());
            blocking(&self.hashing, move || {
                let parsed = PasswordHash::new(&stored).ok()?;
                let verified = hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok();
                Some((verified, stale_hash(&parsed)))
            })
            .await?
            .ok_or(LoginError::Unavailable)?
        };
        let Some(account) = account.filter(|_| verified) else {
            return Err(LoginError::InvalidCredentials);
        };
        self.attempts
            .lock()
            .map_err(|_| LoginError::Unavailable)?
            .forgive(&keys, now);
        if !account.verified {
            return Err(LoginError::Unverified);
        }
        // The hash this login stands on; a reset that replaces it must win (below).
        let mut standing = account.password_hash.clone();
        // Re-hash when the stored parameters are not the current ones.
        if stale {
            let fresh = self.hash_blocking(password).await?;
            // Only over the hash just verified: `false` means a reset landed meanwhile.
            if self
                .accounts
                .set_password_hash(&email, &fresh, Some(&account.password_hash))
                .await?
            {
                standing = fresh;
            }
            // Otherwise another login re-hashed or a reset landed: the check below decides.
        }
        let (family, refresh_token) = self.sessions.start(&account.user_id, device).await?;
        // A reset changes the hash, then logs the account out everywhere. Reading the hash
        // after starting the family closes the race: either this read sees the new hash (and
        // the family is dropped here) or the family existed before the reset's logout.
        let still = self.accounts.get(&email).await?;
        let holds = match still {
            Some(a) if a.password_hash == standing => true,
            // Changed meanwhile: a concurrent re-hash of the same password still verifies; a
            // reset to another password does not.
            Some(a) => self.verifies(password, a.password_hash).await?,
            None => false,
        };
        if !holds {
            let _ = self.sessions.logout(refresh_token.expose()).await;
            return Err(LoginError::InvalidCredentials);
        }
        Ok(LoggedIn {
            user_id: account.user_id,
            family,
            refresh_token,
        })
    }

    /// Sets a new password (after a reset): checks the policy, re-hashes, revokes the
    /// account's outstanding single-use tokens and logs it out everywhere.
    pub async fn set_password(&self, email: &str, password: &str) -> Result<(), LoginError> {
        let email = email.trim().to_lowercase();
        check_password(password, &email).map_err(LoginError::Password)?;
        let account = self
            .accounts
            .get(&email)
            .await?
            .ok_or(LoginError::InvalidCredentials)?;
        self.accounts
            .set_password_hash(&email, &self.hash_blocking(password).await?, None)
            .await?;
        // Both run whatever the other's outcome: a failed token revocation must not leave the
        // sessions alive (the login race check relies on this logout).
        let sessions = self.sessions.logout_everywhere(&account.user_id).await;
        let tokens = self.tokens.revoke_subject(&email).await;
        sessions?;
        tokens.map_err(LoginError::Token)?;
        Ok(())
    }

    /// The stored hash of an account (tests, migrations).
    pub async fn stored_hash(&self, email: &str) -> Result<Option<String>, LoginError> {
        Ok(self
            .accounts
            .get(&email.trim().to_lowercase())
            .await?
            .map(|a| a.password_hash))
    }

    /// Stores an account as is (to import users, or in tests with older hash parameters);
    /// `false` when the email is taken.
    pub async fn import(&self, account: Account) -> Result<bool, LoginError> {
        Ok(self.accounts.create(&account).await?)
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::{KeyRing, ManualClock};

    use super::*;
    use crate::{MemorySingleUseStore, MemoryStore};

    #[test]
    fn password_policy_table() {
        let ok = [
            "correct horse battery staple",
            "Tr0ub4dor&3-extended",
            "ünïcødé-pässwörd",
        ];
        for p in ok {
            assert_eq!(check_password(p, "alice@example.com"), Ok(()), "{p}");
        }
        let bad = [
            ("short", PasswordRejected::TooShort),
            ("elevenchars", PasswordRejected::TooShort),
            (&"x".repeat(129) as &str, PasswordRejected::TooLong),
            ("q1w2e3r4t5y6", PasswordRejected::Common),
            ("password1234", PasswordRejected::Common),
            ("!!Sunshine2024!!", PasswordRejected::Common),
            ("my-alicesmith-pass", PasswordRejected::ContainsEmail),
            ("aaaaaaaaaaaa", PasswordRejected::Predictable),
            ("abcdefghijkl", PasswordRejected::Predictable),
            ("123456789012", PasswordRejected::Predictable),
            ("zyxwvutsrqpo", PasswordRejected::Predictable),
            ("passwordpassword", PasswordRejected::Predictable),
            ("abc1abc1abc1", PasswordRejected::Predictable),
        ];
        for (p, want) in bad {
            assert_eq!(
                check_password(p, "alicesmith@example.com"),
                Err(want),
                "{p}"
            );
        }
        assert!(COMMON.len() > 19_000);
    }

    async fn login() -> (LocalLogin<MemoryStore, MemorySingleUseStore>, ManualClock) {
        let clock = ManualClock::at_unix(1_800_000_000);
        let ring = KeyRing::parse("k 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        let sessions = Arc::new(
            RefreshSessions::new(MemoryStore::new(), ring.clone()).with_clock(clock.shared()),
        );
        let tokens = Arc::new(
            SingleUseTokens::new(MemorySingleUseStore::new(), ring).with_clock(clock.shared()),
        );
        (
            LocalLogin::new(
                true,
                MemoryAccounts::new(),
                sessions,
                tokens,
                clock.shared(),
            )
            .unwrap(),
            clock,
        )
    }

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    trait Created {
        fn created(self) -> SingleUseToken;
    }

    impl Created for SignUp {
        fn created(self) -> SingleUseToken {
            match self {
                SignUp::Created(token) => token,
                SignUp::Exists(_) => panic!("the address was free"),
            }
        }
    }

    /// Accounts whose hash a "reset" replaces right after login verified the old one.
    struct ResetDuringLogin {
        inner: MemoryAccounts,
        gets: std::sync::atomic::AtomicUsize,
    }

    impl AccountStore for ResetDuringLogin {
        async fn create(&self, account: &Account) -> Result<bool, StoreError> {
            self.inner.create(account).await
        }
        async fn get(&self, email: &str) -> Result<Option<Account>, StoreError> {
            // The second read is login's check after starting the family.
            if self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                self.inner
                    .set_password_hash(email, "reset-hash", None)
                    .await?;
            }
            self.inner.get(email).await
        }
        async fn set_password_hash(
            &self,
            email: &str,
            hash: &str,
            expected: Option<&str>,
        ) -> Result<bool, StoreError> {
            self.inner.set_password_hash(email, hash, expected).await
        }
        async fn mark_verified(&self, email: &str) -> Result<bool, StoreError> {
            self.inner.mark_verified(email).await
        }
    }

    #[tokio::test]
    async fn a_reset_during_login_wins() {
        let clock = ManualClock::at_unix(1_800_000_000);
        let ring = KeyRing::parse("k 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        let store = MemoryStore::new();
        let sessions =
            Arc::new(RefreshSessions::new(store.clone(), ring.clone()).with_clock(clock.shared()));
        let tokens = Arc::new(
            SingleUseTokens::new(MemorySingleUseStore::new(), ring).with_clock(clock.shared()),
        );
        let accounts = ResetDuringLogin {
            inner: MemoryAccounts::new(),
            gets: std::sync::atomic::AtomicUsize::new(0),
        };
        let hash = hash("correct horse battery staple").unwrap();
        accounts
            .inner
            .create(&Account {
                user_id: "local:r@example.com".into(),
                email: "r@example.com".into(),
                password_hash: hash,
                verified: true,
            })
            .await
            .unwrap();
        let l = LocalLogin::new(true, accounts, sessions.clone(), tokens, clock.shared()).unwrap();
        assert_eq!(
            l.login(
                "r@example.com",
                "correct horse battery staple",
                ip(),
                &DeviceBinding::new("d", b"m"),
            )
            .await
            .unwrap_err(),
            LoginError::InvalidCredentials
        );
        // The family the login started is revoked, not left behind.
        assert_eq!(
            sessions
                .logout_everywhere("local:r@example.com")
                .await
                .unwrap(),
            0
        );
    }

    #[test]
    fn attempts_reserve_forgive_and_bound() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let window = Duration::from_secs(900);
        let mut a = Attempts::default();
        // Reserved under one lock: the sixth is refused however the five end.
        let keys = [("a:x", 5), ("i:1", 20)];
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..4 {
            assert!(a.reserve(&keys, t0, window));
        }
        assert!(a.reserve(&keys, t1, window));
        assert!(!a.reserve(&keys, t1, window));
        // A success gives back its own attempt (made at t0), not the newer one at t1.
        a.forgive(&keys, t0);
        assert!(a.reserve(&keys, t1, window));
        assert_eq!(a.by_key["a:x"].iter().filter(|t| **t == t1).count(), 2);
        // Past the window the keys are idle and make room; a full table refuses new keys
        // instead of forgetting everyone's counts.
        let mut full = Attempts::default();
        for i in 0..MAX_ATTEMPT_KEYS - 2 {
            full.by_key.insert(format!("a:{i}"), VecDeque::from([t0]));
        }
        assert!(full.reserve(&[("a:0", 5), ("i:9", 20)], t0, window));
        assert!(!full.reserve(&[("a:new", 5), ("i:new", 20)], t0, window));
        assert_eq!(full.count("a:0", t0, window), 2, "counts survive");
        let later = t0 + window + Duration::from_secs(1);
        assert!(full.reserve(&[("a:new", 5), ("i:new", 20)], later, window));
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        let net = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2::1"), net("2001:db8:1:ffff::1"));
        assert_ne!(net("2001:db8:1::1"), net("2001:db8:2::1"));
        assert_eq!(net("192.0.2.7"), None);
        assert_eq!(net("::ffff:192.0.2.7"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_guesses_stay_under_the_limit() {
        let (l, _) = login().await;
        let l = Arc::new(l);
        let token = l
            .sign_up("g@example.com", "correct horse battery staple")
            .await
            .unwrap()
            .created();
        l.verify_email(token.expose()).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.login(
                    "g@example.com",
                    "wrong wrong wrong!",
                    ip(),
                    &DeviceBinding::new("d", b"m"),
                )
                .await
                .unwrap_err()
            }));
        }
        let mut checked = 0;
        for task in tasks {
            if task.await.unwrap() == LoginError::InvalidCredentials {
                checked += 1;
            }
        }
        assert_eq!(checked, 5, "only five guesses reach the password check");
        // Successful logins do not count as failures.
        let (l, _) = login().await;
        let token = l
            .sign_up("h@example.com", "correct horse battery staple")
            .await
            .unwrap()
            .created();
        l.verify_email(token.expose()).await.unwrap();
        for _ in 0..8 {
            l.login(
                "h@example.com",
                "correct horse battery staple",
                ip(),
                &DeviceBinding::new("d", b"m"),
            )
            .await
            .unwrap();
        }
    }

    #[tokio::test]
    async fn sign_up_verify_login() {
        let (l, _) = login().await;
        let device = DeviceBinding::new("d", b"m");
        assert_eq!(
            l.sign_up("a@example.com", "password1234")
                .await
                .unwrap_err(),
            LoginError::Password(PasswordRejected::Common)
        );
        let token = l
            .sign_up("A@Example.com", "correct horse battery staple")
            .await
            .unwrap();
        let SignUp::Created(token) = token else {
            panic!("a new address gets a verification token")
        };
        // Taken: no error the caller could turn into an enumeration oracle; the owner gets a
        // reset link instead, and the account is unchanged.
        let before = l.stored_hash("a@example.com").await.unwrap();
        assert!(matches!(
            l.sign_up("a@example.com", "another fine passphrase")
                .await
                .unwrap(),
            SignUp::Exists(_)
        ));
        assert_eq!(l.stored_hash("a@example.com").await.unwrap(), before);
        // Right password, unverified email.
        assert_eq!(
            l.login(
                "a@example.com",
                "correct horse battery staple",
                ip(),
                &device
            )
            .await
            .unwrap_err(),
            LoginError::Unverified
        );
        l.verify_email(token.expose()).await.unwrap();
        assert!(
            l.verify_email(token.expose()).await.is_err(),
            "verification tokens are single use"
        );
        let ok = l
            .login(
                "a@example.com",
                "correct horse battery staple",
                ip(),
                &device,
            )
            .await
            .unwrap();
        assert_eq!(ok.user_id, "local:a@example.com");
        // The family works.
        assert!(
            l.sessions
                .refresh(ok.refresh_token.expose(), &device)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn no_enumeration_and_lockouts() {
        let (l, clock) = login().await;
        let device = DeviceBinding::new("d", b"m");
        let token = l
            .sign_up("b@example.com", "correct horse battery staple")
            .await
            .unwrap()
            .created();
        l.verify_email(token.expose()).await.unwrap();
        let wrong = l
            .login("b@example.com", "wrong wrong wrong!", ip(), &device)
            .await
            .unwrap_err();
        let unknown = l
            .login("nobody@example.com", "wrong wrong wrong!", ip(), &device)
            .await
            .unwrap_err();
        assert_eq!(
            wrong, unknown,
            "same answer whether the account exists or not"
        );
        for _ in 0..4 {
            let _ = l
                .login("b@example.com", "wrong wrong wrong!", ip(), &device)
                .await;
        }
        // Five failures: locked, even with the right password.
        assert_eq!(
            l.login(
                "b@example.com",
                "correct horse battery staple",
                ip(),
                &device
            )
            .await
            .unwrap_err(),
            LoginError::TooManyAttempts
        );
        clock.advance(Duration::from_secs(15 * 60 + 1));
        assert!(
            l.login(
                "b@example.com",
                "correct horse battery staple",
                ip(),
                &device
            )
            .await
            .is_ok()
        );
        // Per address: 20 failures across accounts lock the address.
        let other: IpAddr = "198.51.100.9".parse().unwrap();
        for i in 0..20 {
            let _ = l
                .login(
                    &format!("x{i}@example.com"),
                    "wrong wrong wrong!",
                    other,
                    &device,
                )
                .await;
        }
        assert_eq!(
            l.login(
                "b@example.com",
                "correct horse battery staple",
                other,
                &device
            )
            .await
            .unwrap_err(),
            LoginError::TooManyAttempts
        );
    }

    #[tokio::test]
    async fn old_parameters_are_rehashed_and_disabled_means_disabled() {
        let (l, _) = login().await;
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let old = weak
            .hash_password(b"correct horse battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(
            l.import(Account {
                user_id: "u".into(),
                email: "c@example.com".into(),
                password_hash: old.clone(),
                verified: true,
            })
            .await
            .unwrap()
        );
        let device = DeviceBinding::new("d", b"m");
        // Two logins at once both re-hash; the one whose compare-and-set loses still gets in
        // (the new hash verifies the same password).
        let (a, b) = tokio::join!(
            l.login(
                "c@example.com",
                "correct horse battery staple",
                ip(),
                &device
            ),
            l.login(
                "c@example.com",
                "correct horse battery staple",
                ip(),
                &device
            ),
        );
        assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
        assert!(
            l.login(
                "c@example.com",
                "correct horse battery staple",
                ip(),
                &device
            )
            .await
            .is_ok()
        );
        let new = l.stored_hash("c@example.com").await.unwrap().unwrap();
        assert_ne!(new, old);
        assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{new}");

        let (mut off, _) = login().await;
        off.enabled = false;
        assert_eq!(
            off.login("c@example.com", "x", ip(), &device)
                .await
                .unwrap_err(),
            LoginError::Disabled
        );
    }
}
