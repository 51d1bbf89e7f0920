//! WebSocket authentication without tokens in the URL.
//!
//! Browsers cannot set `Authorization` on a WebSocket, so two ways are supported:
//!
//! 1. **Bearer in `Sec-WebSocket-Protocol`**: the client offers its application protocol and
//!    `palisade.bearer.<token>`; the layer verifies the token, removes that entry before the
//!    handler sees the header, and the server echoes only the application protocol.
//! 2. **Single-use ticket**: an authenticated HTTP call mints a ticket
//!    ([`WsTickets::mint`]: 128 bits, at most 60 s, bound to the identity and the caller's
//!    `Origin`); the upgrade presents it once as `?ticket=` (the only credential accepted in a
//!    query string) from the same `Origin`.
//!
//! On success the request carries the [`Identity`] and a [`WsGrant`]: the chosen protocol and
//! the deadline (token expiry or the maximum connection lifetime, whichever is sooner) and
//! idle limit, so the handler can close the socket in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HeaderValue, ORIGIN, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{Method, Request, Response};
use palisade_core::{Identity, ResponseBody, SharedClock, SystemClock};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::AuthnError;
use crate::layer::{ResponseFuture, reject};
use crate::surface::SurfacePolicy;
use crate::verifier::{Authenticator, Step};

/// Prefix of the protocol entry that carries a bearer token.
pub const BEARER_PROTOCOL_PREFIX: &str = "palisade.bearer.";

/// The longest ticket lifetime allowed.
pub const MAX_TICKET_TTL: Duration = Duration::from_secs(60);

/// Most outstanding tickets in one store.
pub const MAX_TICKETS: usize = 10_000;

/// Most outstanding tickets for one identity.
pub const MAX_TICKETS_PER_IDENTITY: u32 = 16;

/// What the upgrade handler needs to run the socket safely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsGrant {
    /// The application protocol to echo (never the bearer entry), if the client offered one.
    pub protocol: Option<String>,
    /// Close the socket by then: the credential's expiry or the maximum lifetime.
    pub deadline: SystemTime,
    /// Close the socket after this long without traffic.
    pub idle_limit: Duration,
}

struct Ticket {
    identity: Identity,
    origin: String,
    expires: SystemTime,
}

#[derive(Default)]
struct Store {
    tickets: HashMap<[u8; 32], Ticket>,
    per_identity: HashMap<(String, String), u32>,
}

impl Store {
    fn key(identity: &Identity) -> (String, String) {
        (identity.issuer().to_owned(), identity.subject().to_owned())
    }

    fn remove(&mut self, hash: &[u8; 32]) -> Option<Ticket> {
        let ticket = self.tickets.remove(hash)?;
        let key = Self::key(&ticket.identity);
        if let Some(n) = self.per_identity.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_identity.remove(&key);
            }
        }
        Some(ticket)
    }

    fn purge(&mut self, now: SystemTime) {
        let expired: Vec<[u8; 32]> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            self.remove(&h);
        }
    }
}

/// Single-use WebSocket tickets, stored hashed in memory, bounded in number.
#[derive(Clone)]
pub struct WsTickets {
    inner: Arc<Mutex<Store>>,
    ttl: Duration,
    clock: SharedClock,
}

impl std::fmt::Debug for WsTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn hash(ticket: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, ticket.as_bytes()).as_ref());
    out
}

impl WsTickets {
    /// A store whose tickets live `ttl` (capped at 60 s).
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Store::default())),
            ttl: ttl.min(MAX_TICKET_TTL),
            clock: SystemClock::shared(),
        }
    }

    /// Uses `clock` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Mints a ticket for `identity`, usable once from `origin` within the ticket lifetime.
    pub fn mint(&self, identity: &Identity, origin: &str) -> Result<String, AuthnError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AuthnError::KeysUnavailable)?;
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        let now = self.clock.now();
        let expires = now.checked_add(self.ttl).unwrap_or(now);
        let expires = identity.expires_at().map_or(expires, |e| e.min(expires));
        let mut store = self.inner.lock().map_err(|_| AuthnError::KeysUnavailable)?;
        // Purging scans the store: only when it is full, so minting stays O(1) amortized.
        if store.tickets.len() >= MAX_TICKETS {
            store.purge(now);
        }
        let key = Store::key(identity);
        let mine = store.per_identity.get(&key).copied().unwrap_or(0);
        if store.tickets.len() >= MAX_TICKETS || mine >= MAX_TICKETS_PER_IDENTITY {
            if mine >= MAX_TICKETS_PER_IDENTITY {
                store.purge(now);
            }
            let mine = store.per_identity.get(&key).copied().unwrap_or(0);
            if store.tickets.len() >= MAX_TICKETS || mine >= MAX_TICKETS_PER_IDENTITY {
                return Err(AuthnError::TooManyTickets);
            }
        }
        store.tickets.insert(
            hash(&ticket),
            Ticket {
                identity: identity.clone(),
                origin: origin.to_ascii_lowercase(),
                expires,
            },
        );
        *store.per_identity.entry(key).or_default() += 1;
        Ok(ticket)
    }

    /// Redeems a ticket once; it is gone afterwards whatever the outcome.
    pub fn redeem(&self, ticket: &str, origin: Option<&str>) -> Result<Identity, AuthnError> {
        let entry = {
            let mut store = self.inner.lock().map_err(|_| AuthnError::KeysUnavailable)?;
            store.remove(&hash(ticket))
        };
        let entry = entry.ok_or(AuthnError::BadTicket)?;
        if entry.expires <= self.clock.now() {
            return Err(AuthnError::BadTicket);
        }
        if origin.map(str::to_ascii_lowercase).as_deref() != Some(entry.origin.as_str()) {
            return Err(AuthnError::BadTicket);
        }
        Ok(entry.identity)
    }
}

/// Authenticates WebSocket upgrades for one surface (see the module docs).
#[derive(Clone, Debug)]
#[must_use]
pub struct WebSocketAuthLayer {
    auth: Authenticator,
    policy: Arc<SurfacePolicy>,
    tickets: Option<WsTickets>,
    protocols: Arc<[String]>,
    max_lifetime: Duration,
    idle_limit: Duration,
    /// Whether the policy passed [`Authenticator::layer`]'s checks.
    checked: bool,
}

impl WebSocketAuthLayer {
    /// Upgrades for `policy`'s surface, verified by `auth`; `protocols` are the application
    /// protocols the server speaks. The policy is not checked: prefer [`Self::checked`].
    pub fn new<I, S>(auth: Authenticator, policy: SurfacePolicy, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            auth,
            policy: Arc::new(policy),
            tickets: None,
            protocols: protocols.into_iter().map(Into::into).collect(),
            max_lifetime: Duration::from_secs(3600),
            idle_limit: Duration::from_secs(300),
            checked: false,
        }
    }

    /// Like [`Self::new`], with the checks of [`Authenticator::layer`]: an audience is
    /// required, and in production a client list, and a second factor on admin surfaces.
    pub fn checked<I, S>(
        auth: Authenticator,
        policy: SurfacePolicy,
        protocols: I,
    ) -> Result<Self, crate::BuildError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        auth.check_policy(&policy)?;
        Ok(Self {
            checked: true,
            ..Self::new(auth, policy, protocols)
        })
    }

    /// The profile its policy was checked under; `None` when built with [`Self::new`].
    pub fn profile(&self) -> Option<palisade_core::Profile> {
        self.checked.then(|| self.auth.profile())
    }

    /// Also accepts single-use tickets from `tickets`.
    pub fn with_tickets(mut self, tickets: WsTickets) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// The longest a socket may live (default 1 hour) and its idle limit (default 5 minutes).
    pub fn limits(mut self, max_lifetime: Duration, idle_limit: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self.idle_limit = idle_limit;
        self
    }
}

impl<S> Layer<S> for WebSocketAuthLayer {
    type Service = WebSocketAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebSocketAuth {
            inner,
            config: self.clone(),
        }
    }
}

/// The service of [`WebSocketAuthLayer`].
#[derive(Clone, Debug)]
pub struct WebSocketAuth<S> {
    inner: S,
    config: WebSocketAuthLayer,
}

enum Credential {
    Bearer {
        token: String,
        protocol: Option<String>,
        rest: Vec<String>,
    },
    Ticket(String),
}

/// Finds the credential of an upgrade request.
fn credential<B>(req: &Request<B>, protocols: &[String]) -> Result<Credential, AuthnError> {
    let is_upgrade = req.method() == Method::GET
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Err(AuthnError::MissingToken);
    }
    let mut offered: Vec<String> = Vec::new();
    for value in req.headers().get_all(SEC_WEBSOCKET_PROTOCOL) {
        let text = value
            .to_str()
            .map_err(|_| AuthnError::MalformedAuthorization)?;
        offered.extend(
            text.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
        );
    }
    let mut tokens = offered
        .iter()
        .filter_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX));
    let token = tokens.next().map(str::to_owned);
    if tokens.next().is_some() {
        return Err(AuthnError::MalformedAuthorization);
    }
    let rest: Vec<String> = offered
        .into_iter()
        .filter(|p| !p.starts_with(BEARER_PROTOCOL_PREFIX))
        .collect();
    let protocol = rest.iter().find(|p| protocols.contains(p)).cloned();
    // Only `ticket=` may ride in the query string.
    let mut ticket = None;
    if let Some(query) = req.uri().query() {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.eq_ignore_ascii_case("ticket") {
                if ticket.is_some() {
                    return Err(AuthnError::BadTicket);
                }
                ticket = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("access_token")
                || name.eq_ignore_ascii_case("token")
            {
                return Err(AuthnError::TokenInQuery);
            }
        }
    }
    match (token, ticket) {
        (Some(token), None) => Ok(Credential::Bearer {
            token,
            protocol,
            rest,
        }),
        (None, Some(ticket)) => Ok(Credential::Ticket(ticket)),
        (Some(_), Some(_)) => Err(AuthnError::MalformedAuthorization),
        (None, None) => Err(AuthnError::MissingToken),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WebSocketAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        req.extensions_mut().remove::<Identity>();
        req.extensions_mut().remove::<WsGrant>();
        let config = &self.config;
        let (identity, protocol, rest) = match credential(&req, &config.protocols) {
            Err(reason) => return ResponseFuture::answer(reject(reason)),
            Ok(Credential::Ticket(ticket)) => {
                let origin = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok());
                let redeemed = match &config.tickets {
                    Some(store) => store.redeem(&ticket, origin),
                    None => Err(AuthnError::BadTicket),
                };
                match redeemed {
                    // The ticket's identity must fit this endpoint's policy: same surface, and
                    // MFA if the policy requires it (a ticket minted elsewhere cannot step up).
                    Ok(identity) if identity.surface() != config.policy.surface() => {
                        return ResponseFuture::answer(reject(AuthnError::WrongAudience));
                    }
                    Ok(identity)
                        if config.policy.requires_mfa()
                            && !identity.mfa_level().is_multi_factor() =>
                    {
                        return ResponseFuture::answer(reject(AuthnError::MfaRequired));
                    }
                    Ok(identity) => (identity, None, Vec::new()),
                    Err(reason) => return ResponseFuture::answer(reject(reason)),
                }
            }
            Ok(Credential::Bearer {
                token,
                protocol,
                rest,
            }) => match config.auth.verify_now(&token, &config.policy, true) {
                Step::Done(Ok(identity)) => (identity, protocol, rest),
                Step::Done(Err(reason)) => return ResponseFuture::answer(reject(reason)),
                Step::Refresh {
                    issuer,
                    requested_at,
                } => {
                    // Slow path: refresh the keys once, then verify again.
                    let clone = self.inner.clone();
                    let mut inner = std::mem::replace(&mut self.inner, clone);
                    let config = config.clone();
                    return ResponseFuture::slow(Box::pin(async move {
                        let policy = config.policy.clone();
                        match config
                            .auth
                            .finish(&token, &policy, &issuer, requested_at)
                            .await
                        {
                            Ok(identity) => {
                                admit(&mut req, &config, identity, protocol, &rest);
                                inner.call(req).await.map(|r| r.map(ResponseBody::new))
                            }
                            Err(reason) => Ok(reject(reason)),
                        }
                    }));
                }
            },
        };
        admit(&mut req, config, identity, protocol, &rest);
        ResponseFuture::forward(self.inner.call(req))
    }
}

/// Puts the identity and grant into the request, and rewrites the offered protocols without
/// the bearer entry so the handler never sees the token.
fn admit<B>(
    req: &mut Request<B>,
    config: &WebSocketAuthLayer,
    identity: Identity,
    protocol: Option<String>,
    rest: &[String],
) {
    req.headers_mut().remove(SEC_WEBSOCKET_PROTOCOL);
    if !rest.is_empty()
        && let Ok(v) = HeaderValue::try_from(rest.join(", "))
    {
        req.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, v);
    }
    let now = config.auth.now();
    let lifetime = now.checked_add(config.max_lifetime).unwrap_or(now);
    let deadline = identity.expires_at().map_or(lifetime, |e| e.min(lifetime));
    req.extensions_mut().insert(WsGrant {
        protocol,
        deadline,
        idle_limit: config.idle_limit,
    });
    req.extensions_mut().insert(identity);
}

#[cfg(test)]
mod tests {
    use palisade_core::{AuthMethod, ManualClock, Surface};

    use super::*;

    fn identity() -> Identity {
        Identity::new("iss", "u", AuthMethod::Oidc, Surface::API)
    }

    #[test]
    fn tickets_are_single_use_short_lived_and_origin_bound() {
        let clock = ManualClock::at_unix(1_000);
        let store = WsTickets::new(Duration::from_secs(600)).with_clock(clock.shared());
        assert_eq!(store.ttl, MAX_TICKET_TTL);
        let t = store.mint(&identity(), "https://app.example.com").unwrap();
        assert_eq!(t.len(), 22);
        assert_eq!(
            store.redeem(&t, Some("https://evil.example")).unwrap_err(),
            AuthnError::BadTicket
        );
        // The failed attempt consumed it.
        assert_eq!(
            store
                .redeem(&t, Some("https://app.example.com"))
                .unwrap_err(),
            AuthnError::BadTicket
        );
        let t = store.mint(&identity(), "https://app.example.com").unwrap();
        assert!(store.redeem(&t, Some("https://APP.example.com")).is_ok());
        assert_eq!(
            store
                .redeem(&t, Some("https://app.example.com"))
                .unwrap_err(),
            AuthnError::BadTicket
        );
        let t = store.mint(&identity(), "https://app.example.com").unwrap();
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            store
                .redeem(&t, Some("https://app.example.com"))
                .unwrap_err(),
            AuthnError::BadTicket
        );
        assert_eq!(
            store.redeem("guess", None).unwrap_err(),
            AuthnError::BadTicket
        );
    }

    #[test]
    fn ticket_store_is_bounded_per_identity() {
        let clock = ManualClock::at_unix(1_000);
        let store = WsTickets::new(Duration::from_secs(30)).with_clock(clock.shared());
        for _ in 0..MAX_TICKETS_PER_IDENTITY {
            store.mint(&identity(), "https://a.example").unwrap();
        }
        assert_eq!(
            store.mint(&identity(), "https://a.example").unwrap_err(),
            AuthnError::TooManyTickets
        );
        let other = Identity::new("iss", "someone-else", AuthMethod::Oidc, Surface::API);
        assert!(store.mint(&other, "https://a.example").is_ok());
        // Expired tickets free their slots.
        clock.advance(Duration::from_secs(31));
        assert!(store.mint(&identity(), "https://a.example").is_ok());
    }

    #[test]
    fn credential_table() {
        let req = |proto: Option<&str>, uri: &str, upgrade: bool| {
            let mut b = Request::builder().uri(uri);
            if upgrade {
                b = b
                    .header("upgrade", "websocket")
                    .header("connection", "upgrade");
            }
            if let Some(p) = proto {
                b = b.header("sec-websocket-protocol", p);
            }
            b.body(()).unwrap()
        };
        let protos = vec!["chat.v1".to_owned()];
        match credential(
            &req(Some("chat.v1, palisade.bearer.abc"), "/ws", true),
            &protos,
        )
        .unwrap()
        {
            Credential::Bearer {
                token,
                protocol,
                rest,
            } => {
                assert_eq!(token, "abc");
                assert_eq!(protocol.as_deref(), Some("chat.v1"));
                assert_eq!(rest, ["chat.v1"]);
            }
            Credential::Ticket(_) => panic!("expected a bearer"),
        }
        assert!(
            matches!(credential(&req(None, "/ws?ticket=t1", true), &protos).unwrap(), Credential::Ticket(t) if t == "t1")
        );
        assert_eq!(
            credential(&req(None, "/ws?access_token=x", true), &protos).err(),
            Some(AuthnError::TokenInQuery)
        );
        assert_eq!(
            credential(&req(None, "/ws?ticket=a&ticket=b", true), &protos).err(),
            Some(AuthnError::BadTicket)
        );
        assert_eq!(
            credential(
                &req(Some("palisade.bearer.a, palisade.bearer.b"), "/ws", true),
                &protos
            )
            .err(),
            Some(AuthnError::MalformedAuthorization)
        );
        assert_eq!(
            credential(&req(Some("palisade.bearer.a"), "/ws", false), &protos).err(),
            Some(AuthnError::MissingToken)
        );
        assert_eq!(
            credential(&req(None, "/ws", true), &protos).err(),
            Some(AuthnError::MissingToken)
        );
    }
}
