//! Per-surface audience and MFA policy.

use palisade_core::Surface;

/// What a surface accepts.
///
/// ```
/// use palisade_authn::SurfacePolicy;
/// use palisade_core::Surface;
///
/// let admin = SurfacePolicy::new(Surface::GLOBAL_ADMIN)
///     .audiences(["global-admin"])
///     .authorized_parties(["admin-console"])
///     .require_mfa(true);
/// assert!(admin.requires_mfa());
/// ```
#[derive(Clone, Debug)]
pub struct SurfacePolicy {
    pub(crate) surface: Surface,
    pub(crate) audiences: Vec<String>,
    pub(crate) authorized_parties: Vec<String>,
    pub(crate) require_mfa: bool,
    pub(crate) mfa_acr_values: Vec<String>,
}

impl SurfacePolicy {
    /// A policy for `surface` accepting nothing yet.
    pub fn new(surface: Surface) -> Self {
        Self {
            surface,
            audiences: Vec::new(),
            authorized_parties: Vec::new(),
            require_mfa: false,
            mfa_acr_values: Vec::new(),
        }
    }

    /// `aud` values accepted (a token must name at least one).
    #[must_use]
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// `azp` / `client_id` values allowed (the client the token was issued to).
    #[must_use]
    pub fn authorized_parties<I, S>(mut self, parties: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.authorized_parties = parties.into_iter().map(Into::into).collect();
        self
    }

    /// Requires multi-factor authentication (`MFA_REQUIRED_FOR_ADMIN` otherwise).
    #[must_use]
    pub fn require_mfa(mut self, on: bool) -> Self {
        self.require_mfa = on;
        self
    }

    /// `acr` values that mean multi-factor (for example a Keycloak level-of-authentication
    /// mapping such as `"2"` or `"gold"`), in addition to an `amr` naming two factors.
    #[must_use]
    pub fn mfa_acr_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.mfa_acr_values = values.into_iter().map(Into::into).collect();
        self
    }

    /// The surface.
    pub fn surface(&self) -> &Surface {
        &self.surface
    }

    /// Whether MFA is required.
    pub fn requires_mfa(&self) -> bool {
        self.require_mfa
    }
}
