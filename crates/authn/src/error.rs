//! Why a token was refused (server-side reasons) and why a layer could not be built.

use palisade_core::PostureError;

/// Why a request was not authenticated. Logged and kept in the response extensions; the
/// client only sees a generic 401 (or 503 when keys are unavailable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    MissingToken,
    /// More than one `Authorization` header, or a scheme other than Bearer.
    #[error("malformed Authorization header")]
    MalformedAuthorization,
    /// A session cookie on a request that does not prove it comes from the site itself
    /// (`Sec-Fetch-Site` cross-site or same-site, a foreign `Origin`, or neither on an unsafe
    /// method).
    #[error("session cookie on a cross-site request")]
    CrossSiteCookie,
    /// Two session cookies of the same name (one may have been planted).
    #[error("ambiguous session cookie")]
    AmbiguousCookie,
    /// A WebSocket ticket that is unknown, used, expired, or presented from another origin.
    #[error("invalid WebSocket ticket")]
    BadTicket,
    /// A token in the query string (`access_token=`), which is refused everywhere.
    #[error("token in the query string")]
    TokenInQuery,
    /// The token is larger than the configured cap.
    #[error("token larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not three non-empty base64url parts without padding.
    #[error("token is not a compact JWS")]
    Malformed,
    /// The header is not a JSON object of the expected shape (or has duplicate keys).
    #[error("token header is malformed")]
    MalformedHeader,
    /// `alg: none`, a symmetric algorithm, or one this layer does not accept.
    #[error("algorithm {0:?} is not accepted")]
    AlgorithmRejected(String),
    /// A header parameter that would let the token choose its own key (`jku`, `x5u`, `jwk`,
    /// `x5c`).
    #[error("header carries key-selection parameter {0}")]
    EmbeddedKey(&'static str),
    /// A `crit` header: no extension is understood, so any is fatal.
    #[error("header lists critical extensions")]
    CriticalExtension,
    /// `cty: JWT`: nested tokens are refused.
    #[error("nested JWT")]
    Nested,
    /// The header `typ` does not fit the configured token-type mode.
    #[error("header typ {0:?} does not fit the token-type mode")]
    HeaderType(String),
    /// No `kid`, or a `kid` that is too long.
    #[error("missing or oversized kid")]
    BadKid,
    /// No key with this `kid` for the issuer (after a refresh, if one was allowed).
    #[error("unknown kid")]
    UnknownKid,
    /// The header `alg` differs from the algorithm of the key the `kid` names.
    #[error("alg {header} does not match the key's {key}")]
    AlgorithmMismatch {
        /// The header's algorithm.
        header: String,
        /// The key's algorithm.
        key: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The payload is not a JSON object (or has duplicate keys, or nests too deeply).
    #[error("token claims are malformed")]
    MalformedClaims,
    /// `iss` is missing or not the configured issuer.
    #[error("wrong or missing issuer")]
    WrongIssuer,
    /// `sub` is missing.
    #[error("missing subject")]
    MissingSubject,
    /// `exp` is missing or not a number.
    #[error("missing or non-numeric exp")]
    MissingExpiry,
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The token is older than the maximum token age (or has no `iat` while an age is set).
    #[error("token too old")]
    TooOld,
    /// The token has no `aud` at all. Keycloak omits `aud` unless an Audience mapper (or
    /// Audience Resolve) is configured for the client: add one that puts the surface's
    /// audience in the token.
    #[error("token has no aud claim (configure a Keycloak audience mapper)")]
    MissingAudience,
    /// `aud` names none of the surface's audiences.
    #[error("aud does not match the surface")]
    WrongAudience,
    /// `azp` / `client_id` is missing or not allowed on the surface.
    #[error("azp is missing or not allowed on the surface")]
    WrongAuthorizedParty,
    /// The token is not an access token (an ID token, refresh token, or another type).
    #[error("not an access token (typ {0:?})")]
    NotAnAccessToken(String),
    /// The token is bound to a key (`cnf`: mTLS or DPoP) whose possession this layer cannot
    /// check; accepting it as a bearer token would defeat the binding.
    #[error("sender-constrained token (cnf) is not accepted as a bearer token")]
    SenderConstrained,
    /// Too many outstanding WebSocket tickets (for this identity, or in all).
    #[error("too many outstanding WebSocket tickets")]
    TooManyTickets,
    /// The surface requires multi-factor authentication (`MFA_REQUIRED_FOR_ADMIN`).
    #[error("MFA_REQUIRED_FOR_ADMIN: the surface requires multi-factor authentication")]
    MfaRequired,
    /// The token's session (refresh family) was revoked: logout, reuse, or an administrator.
    #[error("session revoked")]
    SessionRevoked,
    /// The session revocation check could not answer (fail closed).
    #[error("session revocation check unavailable")]
    RevocationUnavailable,
    /// Keys could not be fetched and the last good keys are too old (fail closed).
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl AuthnError {
    /// A short, stable name of the reason (`expired`, `bad_signature`, ...): the
    /// `reason` label of the `palisade_authn_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } => "missing_token",
            Self::MalformedAuthorization { .. } => "malformed_authorization",
            Self::CrossSiteCookie { .. } => "cross_site_cookie",
            Self::AmbiguousCookie { .. } => "ambiguous_cookie",
            Self::BadTicket { .. } => "bad_ticket",
            Self::TokenInQuery { .. } => "token_in_query",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed { .. } => "malformed",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::AlgorithmRejected { .. } => "algorithm_rejected",
            Self::EmbeddedKey { .. } => "embedded_key",
            Self::CriticalExtension { .. } => "critical_extension",
            Self::Nested { .. } => "nested",
            Self::HeaderType { .. } => "header_type",
            Self::BadKid { .. } => "bad_kid",
            Self::UnknownKid { .. } => "unknown_kid",
            Self::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Self::BadSignature { .. } => "bad_signature",
            Self::MalformedClaims { .. } => "malformed_claims",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::MissingSubject { .. } => "missing_subject",
            Self::MissingExpiry { .. } => "missing_expiry",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::IssuedInFuture { .. } => "issued_in_future",
            Self::TooOld { .. } => "too_old",
            Self::MissingAudience { .. } => "missing_audience",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WrongAuthorizedParty { .. } => "wrong_authorized_party",
            Self::NotAnAccessToken { .. } => "not_an_access_token",
            Self::SenderConstrained { .. } => "sender_constrained",
            Self::TooManyTickets { .. } => "too_many_tickets",
            Self::MfaRequired { .. } => "mfa_required",
            Self::SessionRevoked { .. } => "session_revoked",
            Self::RevocationUnavailable { .. } => "revocation_unavailable",
            Self::KeysUnavailable { .. } => "keys_unavailable",
        }
    }
}

/// A configuration value that can never be valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An issuer that is not an absolute `http(s)` URL.
    #[error("invalid issuer URL {0:?}")]
    InvalidIssuer(String),
    /// A surface without any accepted audience.
    #[error("surface {0} accepts no audience")]
    NoAudience(String),
    /// No surface configured.
    #[error("no surface configured")]
    NoSurface,
    /// A session cookie name without the `__Host-` prefix or with invalid characters.
    #[error("invalid session cookie name {0:?}: it must start with __Host-")]
    InvalidCookie(String),
    /// An allowed origin that is not `https://host[:port]`.
    #[error("invalid origin {0:?}")]
    InvalidOrigin(String),
    /// A JWKS document that cannot be used.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(String),
}

/// Why a layer could not be built.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration is insecure and the profile is production; lists every finding.
    #[error(transparent)]
    Posture(#[from] PostureError),
    /// Production refuses to start without signing keys.
    #[error("signing keys could not be loaded for issuer {issuer}: {reason}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}
