//! [`ClientIpLayer`]: resolves [`ClientIp`] and [`RequestScheme`] once per request.

use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{ClientIp, ConnectionInfo, RequestScheme, TrustedProxies};
use crate::posture::{Finding, Posture, PostureError, Profile};

/// Inserts [`ClientIp`] and [`RequestScheme`] into request extensions, from the
/// [`ConnectionInfo`] the server inserted and the forwarded headers of trusted proxies.
///
/// Without a [`ConnectionInfo`] nothing is inserted, and layers that need the client address
/// or scheme fail closed (they treat the request as plain HTTP from an unknown address).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use palisade_core::{ClientIp, ClientIpLayer, ConnectionInfo, TrustedProxies};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(ClientIpLayer::new(TrustedProxies::none()))
///     .service(service_fn(|req: Request<()>| async move {
///         let ip = req.extensions().get::<ClientIp>().copied();
///         Ok::<_, Infallible>(Response::new(ip.map(|ip| ip.to_string()).unwrap_or_default()))
///     }));
/// let mut req = Request::new(());
/// req.extensions_mut().insert(ConnectionInfo::new("192.0.2.1:5000".parse()?, true));
/// req.headers_mut().insert("x-forwarded-for", "6.6.6.6".parse()?); // ignored: no trusted proxy
/// let res = svc.oneshot(req).await?;
/// assert_eq!(res.body(), "192.0.2.1");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientIpLayer {
    proxies: TrustedProxies,
    /// The profile it was checked under (`None`: built without a check).
    profile: Option<Profile>,
    findings: Vec<Finding>,
}

impl ClientIpLayer {
    /// A layer trusting `proxies`, without a posture check (see [`Self::checked`]).
    pub fn new(proxies: TrustedProxies) -> Self {
        Self {
            proxies,
            profile: None,
            findings: Vec::new(),
        }
    }

    /// A layer trusting `proxies`, refused in production when the list trusts every address.
    ///
    /// ```
    /// use palisade_core::{ClientIpLayer, Profile, TrustedProxies};
    /// assert!(ClientIpLayer::checked(TrustedProxies::new(["10.0.0.0/8"])?, Profile::Production).is_ok());
    /// assert!(ClientIpLayer::checked(TrustedProxies::new(["0.0.0.0/0"])?, Profile::Production).is_err());
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn checked(proxies: TrustedProxies, profile: Profile) -> Result<Self, PostureError> {
        let mut posture = Posture::new(profile, "client-ip");
        proxies.check(&mut posture);
        let findings = posture.finish()?;
        Ok(Self {
            proxies,
            profile: Some(profile),
            findings,
        })
    }

    /// The non-blocking findings recorded when the layer was checked (for example
    /// `proxy-block-wide`); none for [`Self::new`].
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The profile the layer was checked under: `None` when it was built with
    /// [`Self::new`], without a check.
    pub fn profile(&self) -> Option<Profile> {
        self.profile
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            proxies: self.proxies.clone(),
        }
    }
}

/// The service of [`ClientIpLayer`].
#[derive(Clone, Debug)]
pub struct ClientIpService<S> {
    inner: S,
    proxies: TrustedProxies,
}

impl<S> ClientIpService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes the layer's service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClientIpService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Values inserted by anyone before us are not trusted.
        req.extensions_mut().remove::<ClientIp>();
        req.extensions_mut().remove::<RequestScheme>();
        if let Some(conn) = req.extensions().get::<ConnectionInfo>().copied() {
            let (ip, scheme) = self.proxies.resolve(&conn, req.headers());
            match ip {
                Some(ip) => {
                    req.extensions_mut().insert(ip);
                }
                None => {
                    tracing::warn!(target: "palisade::client_ip", peer = %conn.peer(), "malformed forwarded header from a trusted proxy: client address unknown");
                }
            }
            req.extensions_mut().insert(scheme);
        } else {
            tracing::warn!(target: "palisade::client_ip", "request without ConnectionInfo: client address and scheme unknown");
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::Response;
    use tower::{ServiceExt, service_fn};

    use super::*;

    async fn seen(mut req: Request<()>) -> (Option<ClientIp>, Option<RequestScheme>) {
        req.headers_mut()
            .insert("x-forwarded-for", "198.51.100.2, garbage".parse().unwrap());
        ClientIpLayer::new(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
            .layer(service_fn(|req: Request<()>| async move {
                let out = (
                    req.extensions().get::<ClientIp>().copied(),
                    req.extensions().get::<RequestScheme>().copied(),
                );
                Ok::<_, Infallible>(Response::new(out))
            }))
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
    }

    #[tokio::test]
    async fn values_inserted_before_the_layer_are_not_trusted() {
        // Without ConnectionInfo: nothing, even if something upstream inserted values.
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientIp("192.0.2.9".parse().unwrap()));
        req.extensions_mut().insert(RequestScheme::Https);
        assert_eq!(seen(req).await, (None, None));
        // From a trusted proxy with a malformed hop: scheme known, client unknown.
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientIp("192.0.2.9".parse().unwrap()));
        req.extensions_mut()
            .insert(ConnectionInfo::new("10.0.0.1:1".parse().unwrap(), true));
        assert_eq!(seen(req).await, (None, Some(RequestScheme::Https)));
    }
}
