//! A client of the Cerbos PDP's gRPC API (`CheckResources`), over one shared HTTP/2 channel.
//!
//! - **Verified TLS by default:** an `https` endpoint is checked against the system roots or a
//!   given CA bundle; a client certificate can be presented (mutual TLS).
//! - **Plaintext only by name:** an `http` endpoint or a Unix socket (`unix:/path`) needs
//!   [`PdpClientBuilder::insecure_plaintext_loopback`], only reaches a loopback address or a
//!   socket, and is refused under [`Profile::Production`].
//! - **Fails closed:** each call has a short timeout (200 ms by default) and is retried once,
//!   only when the PDP answered `Unavailable`; any error, timeout, unknown effect or missing
//!   action is an error or a deny, never an allow.
//! - Uses the generated gRPC types of the `cerbos` crate, not its result helpers (some panic or
//!   answer `None` on unexpected input).
//!
//! ```no_run
//! use palisade_authz_cerbos::{PdpClient, Resource, Tenant, PrincipalOptions, principal_for};
//! use palisade_core::{AuthMethod, Identity, Membership, Profile, Surface};
//!
//! # async fn run() -> Result<(), palisade_authz_cerbos::AuthzError> {
//! let pdp = PdpClient::builder("https://cerbos.internal:3593")
//!     .ca_certificate_pem(std::fs::read("cerbos-ca.pem").unwrap_or_default())
//!     .profile(Profile::Production)
//!     .build()?;
//! let alice = Identity::new("https://sso/realms/acme", "alice", AuthMethod::Oidc, Surface::API)
//!     .with_membership(Membership::new("org-1", None, ["member"]));
//! let principal = principal_for(&alice, &Tenant::org("org-1"), &PrincipalOptions::default())?;
//! let resource = Resource::new("document", "doc-1").attr("org", "org-1");
//! let decisions = pdp.check(principal, resource, &["read", "export"], "req-1").await?;
//! assert!(decisions.allowed("read") || !decisions.allowed("read"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use cerbos::genpb::cerbos::effect::v1::Effect;
use cerbos::genpb::cerbos::engine::v1::{Principal, Resource as PbResource};
use cerbos::genpb::cerbos::request::v1::CheckResourcesRequest;
use cerbos::genpb::cerbos::request::v1::check_resources_request::ResourceEntry;
use cerbos::genpb::cerbos::svc::v1::cerbos_service_client::CerbosServiceClient;
use cerbos::genpb::google::protobuf::Value;
use palisade_core::Profile;
use secrecy::{ExposeSecret, SecretSlice};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use crate::AuthzError;
use crate::principal::{boolean, string, strings};

/// The PDP's default limit of actions (and resources) in one request.
pub const MAX_ACTIONS: usize = 50;

/// The resource a request acts on: a kind, an id and attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    inner: PbResource,
}

impl Resource {
    /// A resource of `kind` with `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            inner: PbResource {
                kind: kind.into(),
                id: id.into(),
                ..PbResource::default()
            },
        }
    }

    /// Adds a text attribute.
    pub fn attr(mut self, name: impl Into<String>, value: &str) -> Self {
        self.inner.attr.insert(name.into(), string(value));
        self
    }

    /// Adds a boolean attribute.
    pub fn flag(mut self, name: impl Into<String>, value: bool) -> Self {
        self.inner.attr.insert(name.into(), boolean(value));
        self
    }

    /// Adds a list-of-text attribute.
    pub fn list<'a>(
        mut self,
        name: impl Into<String>,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.inner.attr.insert(name.into(), strings(values));
        self
    }

    /// The resource kind.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The resource id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The attributes.
    pub fn attributes(&self) -> &HashMap<String, Value> {
        &self.inner.attr
    }
}

/// The PDP's answer for a set of actions on one resource: an action is allowed only when the
/// PDP answered `EFFECT_ALLOW` for it; anything else (deny, no match, an unknown effect, an
/// action missing from the answer) is a deny.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decisions {
    allowed: Vec<String>,
}

impl Decisions {
    pub(crate) fn from_allowed<'a>(allowed: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            allowed: allowed.into_iter().map(str::to_owned).collect(),
        }
    }

    /// Whether `action` is allowed.
    pub fn allowed(&self, action: &str) -> bool {
        self.allowed.iter().any(|a| a == action)
    }

    /// The allowed actions, in the order asked.
    pub fn allowed_actions(&self) -> &[String] {
        &self.allowed
    }
}

#[derive(Clone, Debug)]
enum Transport {
    /// TLS verified against the system roots, or `ca` when given; a client certificate when
    /// given.
    Tls {
        ca: Option<Vec<u8>>,
        identity: Option<(Vec<u8>, SecretSlice<u8>)>,
    },
    /// Plaintext to a loopback address (named insecure option).
    InsecureLoopback,
}

/// Builds a [`PdpClient`].
#[derive(Debug)]
pub struct PdpClientBuilder {
    endpoint: String,
    transport: Transport,
    timeout: Duration,
    profile: Profile,
}

/// A Cerbos PDP client. Cloning is cheap and shares the connection.
#[derive(Clone, Debug)]
pub struct PdpClient {
    client: CerbosServiceClient<Channel>,
    timeout: Duration,
    profile: Profile,
}

impl PdpClient {
    /// The profile the client's transport was checked under.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// A builder for the PDP at `endpoint` (`https://host:port`, or `http://` for the insecure
    /// loopback option).
    pub fn builder(endpoint: impl Into<String>) -> PdpClientBuilder {
        PdpClientBuilder {
            endpoint: endpoint.into(),
            transport: Transport::Tls {
                ca: None,
                identity: None,
            },
            timeout: Duration::from_millis(200),
            profile: Profile::Production,
        }
    }
}

impl PdpClientBuilder {
    /// Trusts this CA bundle (PEM) instead of the system roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        if let Transport::Tls { ca, .. } = &mut self.transport {
            *ca = Some(pem.into());
        }
        self
    }

    /// Presents this client certificate and key (PEM) to the PDP (mutual TLS).
    pub fn client_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: SecretSlice<u8>) -> Self {
        if let Transport::Tls { identity, .. } = &mut self.transport {
            *identity = Some((cert.into(), key));
        }
        self
    }

    /// Speaks plaintext gRPC to a PDP on a loopback address literal (`http://127.0.0.1:3593`,
    /// `http://[::1]:3593`) or a Unix socket (`unix:/run/cerbos/grpc.sock`, an absolute path in
    /// a directory that is not world-writable). Insecure: refused under
    /// [`Profile::Production`], and for any other address.
    pub fn insecure_plaintext_loopback(mut self) -> Self {
        self.transport = Transport::InsecureLoopback;
        self
    }

    /// The time one call may take (default 200 ms); a call past it is an error (a deny).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deployment profile (default [`Profile::Production`]).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Checks the settings and makes the client. The connection is made on first use (and
    /// made again after the PDP restarts), so building needs no running PDP.
    pub fn build(self) -> Result<PdpClient, AuthzError> {
        if let Some(path) = self.endpoint.strip_prefix("unix:") {
            return self.build_unix(path);
        }
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|_| AuthzError::Config("the PDP endpoint is not a URI".into()))?;
        let host = uri
            .host()
            .ok_or_else(|| AuthzError::Config("the PDP endpoint has no host".into()))?;
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|_| AuthzError::Config("the PDP endpoint is not a URI".into()))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        match (&self.transport, uri.scheme_str()) {
            (Transport::Tls { ca, identity }, Some("https")) => {
                let mut tls = ClientTlsConfig::new().domain_name(host.trim_matches(['[', ']']));
                tls = match ca {
                    Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                    None => tls.with_native_roots(),
                };
                if let Some((cert, key)) = identity {
                    tls = tls.identity(TlsIdentity::from_pem(cert, key.expose_secret()));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| AuthzError::Config(format!("PDP TLS settings: {e}")))?;
            }
            (Transport::Tls { .. }, _) => {
                return Err(AuthzError::Config(
                    "the PDP endpoint must be https (plaintext needs insecure_plaintext_loopback)"
                        .into(),
                ));
            }
            (Transport::InsecureLoopback, Some("http")) => {
                refuse_plaintext(self.profile)?;
                // An address literal: a name (even `localhost`) goes through a resolver.
                let loopback = host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(AuthzError::Config(
                        "plaintext to the PDP is allowed to a loopback address literal only".into(),
                    ));
                }
            }
            (Transport::InsecureLoopback, _) => {
                return Err(AuthzError::Config(
                    "the insecure loopback option needs an http endpoint".into(),
                ));
            }
        }
        // The channel's background task needs a Tokio runtime: say so rather than panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AuthzError::Config(
                "the PDP client must be built inside a Tokio runtime".into(),
            ));
        }
        Ok(PdpClient {
            client: CerbosServiceClient::new(endpoint.connect_lazy()),
            timeout: self.timeout,
            profile: self.profile,
        })
    }
}

/// Plaintext to the PDP (loopback or a Unix socket): a finding that refuses production.
fn refuse_plaintext(profile: Profile) -> Result<(), AuthzError> {
    let mut posture = palisade_core::Posture::new(profile, "authz-pdp");
    posture.record(
        palisade_core::Severity::Deny,
        "authz-pdp-plaintext",
        "the PDP is reached without TLS (insecure_plaintext_loopback)",
    );
    posture.finish()?;
    Ok(())
}

/// Whether the PDP could not be reached: `Unavailable`, or a local transport error (a
/// connection that broke, or could not be made), which tonic reports as `Unknown` with the
/// transport error as its source. Only these are retried (once).
fn unavailable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => status
            .source()
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
        _ => false,
    }
}

impl PdpClientBuilder {
    /// The plaintext client of a PDP on a Unix socket.
    fn build_unix(&self, path: &str) -> Result<PdpClient, AuthzError> {
        if !matches!(self.transport, Transport::InsecureLoopback) {
            return Err(AuthzError::Config(
                "a Unix socket is plaintext: it needs insecure_plaintext_loopback".into(),
            ));
        }
        refuse_plaintext(self.profile)?;
        // `unix:/path` or `unix:///path`.
        let path = std::path::PathBuf::from(path.strip_prefix("//").unwrap_or(path));
        if !path.is_absolute() {
            return Err(AuthzError::Config(
                "the PDP's Unix socket needs an absolute path".into(),
            ));
        }
        // A socket in a directory anyone may write to could be replaced by another local user
        // while the PDP is down (sticky or not: the name can be taken while it is free).
        let shared_dir = path.parent().is_none_or(|dir| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(dir).map_or(true, |m| m.permissions().mode() & 0o002 != 0)
        });
        if shared_dir {
            return Err(AuthzError::Config(
                "the PDP's Unix socket must be in a directory only its owners may write to".into(),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AuthzError::Config(
                "the PDP client must be built inside a Tokio runtime".into(),
            ));
        }
        // The URI only names the HTTP/2 authority; the connector dials the socket.
        let endpoint = Endpoint::from_static("http://localhost")
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel =
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Ok(PdpClient {
            client: CerbosServiceClient::new(channel),
            timeout: self.timeout,
            profile: self.profile,
        })
    }
}

impl PdpClient {
    /// Asks the PDP which of `actions` `principal` may take on `resource`. `request_id` is sent
    /// to the PDP (and shows in its audit log). Errors when the PDP cannot answer in time
    /// ([`AuthzError::Unavailable`]) or answers something else than what was asked.
    pub async fn check(
        &self,
        principal: Principal,
        resource: Resource,
        actions: &[&str],
        request_id: &str,
    ) -> Result<Decisions, AuthzError> {
        if actions.is_empty() || actions.len() > MAX_ACTIONS {
            return Err(AuthzError::TooManyActions);
        }
        // Cerbos needs a role: a principal without one is denied here.
        if principal.roles.is_empty() {
            return Ok(Decisions {
                allowed: Vec::new(),
            });
        }
        // Each action once (the PDP refuses repeats).
        let mut asked: Vec<&str> = Vec::with_capacity(actions.len());
        for action in actions {
            if !asked.contains(action) {
                asked.push(action);
            }
        }
        let request = CheckResourcesRequest {
            request_id: request_id.to_owned(),
            principal: Some(principal),
            resources: vec![ResourceEntry {
                actions: asked.iter().map(|a| (*a).to_owned()).collect(),
                resource: Some(resource.inner.clone()),
            }],
            ..CheckResourcesRequest::default()
        };
        // One deadline for the call and its retry: a deny comes within the timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let mut client = self.client.clone();
            let call = client.check_resources(request.clone());
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(response)) => break response.into_inner(),
                Ok(Err(status)) if unavailable(&status) && attempt < 2 => {
                    tracing::debug!(code = ?status.code(), "PDP unavailable, retrying once");
                }
                Ok(Err(status)) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "PDP call failed");
                    // A PDP out of reach or out of time (the channel's own timeout ends a call
                    // as `Cancelled`) is unavailable (503); any other error is the PDP's.
                    let timed_out = matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    );
                    return Err(if unavailable(&status) || timed_out {
                        AuthzError::Unavailable
                    } else {
                        AuthzError::Pdp(status.code())
                    });
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.timeout, "PDP call timed out");
                    return Err(AuthzError::Unavailable);
                }
            }
        };
        // Exactly one result, for the resource asked about.
        let [result] = response.results.as_slice() else {
            return Err(AuthzError::Malformed);
        };
        let same = result
            .resource
            .as_ref()
            .is_some_and(|r| r.id == resource.inner.id && r.kind == resource.inner.kind);
        if !same {
            return Err(AuthzError::Malformed);
        }
        let allowed = actions
            .iter()
            .filter(|a| {
                result
                    .actions
                    .get(**a)
                    .is_some_and(|&e| e == Effect::Allow as i32)
            })
            .map(|a| (*a).to_owned())
            .collect();
        Ok(Decisions { allowed })
    }
}
