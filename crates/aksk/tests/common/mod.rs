//! Shared fixtures of the access-key tests: a key ring, a test clock, an issued credential,
//! the layer in front of an echo service, and signing helpers (the `aws-sigv4` crate, and a
//! raw signer for requests a well-behaved client would never send).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full};
use palisade_aksk::canonical::{self, CanonicalOptions, SigningKey};
use palisade_aksk::verifier::format_amz_date;
use palisade_aksk::{
    AccessKeyLayer, AccessKeys, CredentialStore, IssuedCredential, MemoryCredentialStore,
    NewCredential, NonceStore, VerifiedBody, Verifier, VerifyError,
};
use palisade_core::{Clock as _, Identity, KeyRing, ManualClock, Profile, Rejection, ResponseBody};
use palisade_field_crypto::FieldCipher;
use secrecy::ExposeSecret as _;
use tower::{Layer as _, ServiceExt as _};

pub const RING: &str = "f1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const SERVICE: &str = "palisade";
pub const REGION: &str = "eu-west-1";
/// 2026-11-29T12:00:00Z.
pub const T0: u64 = 1_795_953_600;

pub fn cipher(clock: &ManualClock) -> FieldCipher {
    FieldCipher::new(KeyRing::parse(RING).unwrap(), clock.shared())
}

pub fn verifier(clock: &ManualClock) -> Verifier {
    verifier_with_limit(clock, 4096)
}

pub fn verifier_with_limit(clock: &ManualClock, max_body: usize) -> Verifier {
    Verifier::builder(SERVICE, REGION)
        .profile(Profile::Production)
        .max_body(max_body)
        .allow_unsigned_payload_on("/api/uploads/")
        .allow_streaming_payload_on("/api/streams/")
        .build(cipher(clock), clock.shared())
        .unwrap()
}

pub struct Fixture<C, N> {
    pub clock: ManualClock,
    pub keys: AccessKeys<C>,
    pub layer: AccessKeyLayer<std::sync::Arc<C>, N>,
    pub issued: IssuedCredential,
}

/// A store shared between the manager and the layer.
pub async fn fixture_with<C: CredentialStore, N: NonceStore>(
    credentials: C,
    nonces: N,
) -> Fixture<C, N>
where
    std::sync::Arc<C>: CredentialStore,
{
    fixture_with_limit(credentials, nonces, 4096).await
}

/// [`fixture_with`] under a body limit of `max_body` bytes.
pub async fn fixture_with_limit<C: CredentialStore, N: NonceStore>(
    credentials: C,
    nonces: N,
    max_body: usize,
) -> Fixture<C, N>
where
    std::sync::Arc<C>: CredentialStore,
{
    let clock = ManualClock::at_unix(T0);
    let keys = AccessKeys::new(credentials, cipher(&clock), clock.shared());
    let issued = keys
        .issue(NewCredential {
            org: "acme".into(),
            subject: "svc:billing".into(),
            roles: vec!["billing-writer".into()],
            scopes: vec!["orders:write".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let layer = AccessKeyLayer::new(
        verifier_with_limit(&clock, max_body),
        keys.shared_store(),
        nonces,
    );
    Fixture {
        clock,
        keys,
        layer,
        issued,
    }
}

pub async fn fixture() -> Fixture<MemoryCredentialStore, palisade_aksk::MemoryNonceStore> {
    fixture_with(
        MemoryCredentialStore::new(),
        palisade_aksk::MemoryNonceStore::new(),
    )
    .await
}

pub type Reply = Response<ResponseBody<String>>;

/// Sends `request` through the layer to an echo service that answers with the identity's
/// subject, org and the body it received.
pub async fn send<C, N>(fx: &Fixture<C, N>, request: Request<Full<Bytes>>) -> Reply
where
    std::sync::Arc<C>: CredentialStore,
    N: NonceStore,
{
    let echo = tower::service_fn(|req: Request<VerifiedBody<Full<Bytes>>>| async move {
        let identity = req.extensions().get::<Identity>().cloned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = match identity {
            Some(id) => format!(
                "{} {} {}",
                id.subject(),
                id.org().unwrap_or("-"),
                String::from_utf8_lossy(&body)
            ),
            None => "anonymous".to_owned(),
        };
        Ok::<_, Infallible>(Response::new(text))
    });
    fx.layer.layer(echo).oneshot(request).await.unwrap()
}

/// The body of a reply, as text.
pub async fn body_text(reply: Reply) -> String {
    String::from_utf8(
        reply
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// The typed reason of a refusal.
pub fn reason(reply: &Reply) -> Option<&VerifyError> {
    reply
        .extensions()
        .get::<Rejection>()
        .and_then(|r| r.reason_as::<VerifyError>())
}

pub fn now(clock: &ManualClock) -> SystemTime {
    clock.now()
}

/// A request template (not signed).
pub fn request(method: &str, uri: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.com")
        .header("content-type", "application/json")
        .header("x-custom", "one")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Clones a request with a `Full` body.
pub fn clone_request(request: &Request<Full<Bytes>>, body: &Bytes) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(request.method().clone())
        .uri(request.uri().clone())
        .version(request.version());
    for (k, v) in request.headers() {
        builder = builder.header(k, v);
    }
    builder.body(Full::new(body.clone())).unwrap()
}

pub fn nonce() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Signs with the `aws-sigv4` crate (body hash header on), after adding a nonce header, at
/// `time`.
pub fn sign_with_aws(
    request: &mut Request<Full<Bytes>>,
    body: &[u8],
    key_id: &str,
    secret: &str,
    time: SystemTime,
) {
    request
        .headers_mut()
        .insert("x-palisade-nonce", HeaderValue::from_str(&nonce()).unwrap());
    aws_sign_in_place(request, body, key_id, secret, time);
}

/// Signs `request` as it is (whatever nonce it carries) with the `aws-sigv4` crate.
pub fn aws_sign_in_place(
    request: &mut Request<Full<Bytes>>,
    body: &[u8],
    key_id: &str,
    secret: &str,
    time: SystemTime,
) {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
    };
    use aws_smithy_runtime_api::client::identity::Identity as AwsIdentity;

    let identity: AwsIdentity =
        Credentials::new(key_id, secret, None, None, "palisade-test").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(request);
}

/// The fixture's credential signing `request` with aws-sigv4 at the fixture's clock.
pub fn aws_signed<C, N>(
    fx: &Fixture<C, N>,
    method: &str,
    uri: &str,
    body: &'static [u8],
) -> Request<Full<Bytes>> {
    let mut req = request(method, uri, body);
    sign_with_aws(
        &mut req,
        body,
        &fx.issued.key_id,
        fx.issued.secret.expose_secret(),
        fx.clock.now(),
    );
    req
}

/// What a raw signature covers; every field can be bent to build hostile requests.
pub struct Raw<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
    pub unix: u64,
    pub scope_date: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    pub signed: &'a str,
    pub payload: Option<&'a str>,
    pub nonce: Option<String>,
}

impl<'a> Raw<'a> {
    pub fn new(key_id: &'a str, secret: &'a str, unix: u64) -> Self {
        Self {
            key_id,
            secret,
            unix,
            scope_date: None,
            region: REGION,
            service: SERVICE,
            signed: "content-type;host;x-amz-content-sha256;x-amz-date;x-custom;x-palisade-nonce",
            payload: None,
            nonce: Some(nonce()),
        }
    }

    /// Sets the date, nonce and body-hash headers and a correct signature over `signed`.
    pub fn sign(&self, request: &mut Request<Full<Bytes>>, body: &[u8]) {
        let amz_date = format_amz_date(self.unix);
        let payload = self
            .payload
            .map_or_else(|| canonical::sha256_hex(body), str::to_owned);
        let h = request.headers_mut();
        h.insert("x-amz-date", amz_date.parse().unwrap());
        h.insert("x-amz-content-sha256", payload.parse().unwrap());
        if let Some(nonce) = &self.nonce {
            h.insert("x-palisade-nonce", nonce.parse().unwrap());
        }
        let mut creq = Vec::new();
        let (parts, _) = clone_request(request, &Bytes::new()).into_parts();
        canonical::canonical_request(
            &mut creq,
            parts.method.as_str(),
            parts.uri.path().as_bytes(),
            parts.uri.query().unwrap_or("").as_bytes(),
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            self.signed,
            &payload,
            CanonicalOptions::default(),
        )
        .unwrap_or_default();
        let date = self.scope_date.unwrap_or(&amz_date[..8]);
        let scope = canonical::credential_scope(date, self.region, self.service);
        let mut sts = String::new();
        canonical::string_to_sign(&mut sts, &amz_date, &scope, &creq);
        let key = SigningKey::derive(self.secret.as_bytes(), date, self.region, self.service);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
            self.key_id,
            self.signed,
            hex::encode(key.sign(sts.as_bytes()))
        );
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
