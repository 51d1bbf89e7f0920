use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_core::{ConnectionInfo, Profile, RequestScheme};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::csp::{Directive, Source};

fn request(tls: bool) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ConnectionInfo::new("192.0.2.1:1000".parse().unwrap(), tls));
    req
}

async fn run(layer: SecurityHeadersLayer, req: Request<()>) -> Response<Full<Bytes>> {
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|req: Request<()>| async move {
            let nonce = req
                .extensions()
                .get::<CspNonce>()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let mut res = Response::new(Full::new(Bytes::from(nonce)));
            res.headers_mut()
                .insert("server", "leaky/1.0".parse().unwrap());
            res.headers_mut()
                .insert("x-powered-by", "php".parse().unwrap());
            res.headers_mut()
                .insert("x-frame-options", "ALLOWALL".parse().unwrap());
            Ok::<_, Infallible>(res)
        }))
        .oneshot(req)
        .await
        .unwrap()
}

#[tokio::test]
async fn production_defaults_on_https() {
    let layer = SecurityHeadersLayer::builder().build().unwrap();
    let res = run(layer, request(true)).await;
    let h = res.headers();
    let expect = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-embedder-policy", "require-corp"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("permissions-policy", DEFAULT_PERMISSIONS_POLICY),
    ];
    for (name, value) in expect {
        assert_eq!(h[name], value, "{name}");
    }
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let nonce = std::str::from_utf8(&body).unwrap();
    assert_eq!(nonce.len(), 22);
    assert!(
        csp.contains(&format!("script-src 'nonce-{nonce}' 'strict-dynamic'")),
        "{csp}"
    );
}

#[tokio::test]
async fn no_hsts_over_plain_http_or_unknown_scheme() {
    let layer = SecurityHeadersLayer::builder().build().unwrap();
    let res = run(layer.clone(), request(false)).await;
    assert!(res.headers().get("strict-transport-security").is_none());
    let res = run(layer.clone(), Request::new(())).await;
    assert!(res.headers().get("strict-transport-security").is_none());
    // A trusted proxy's scheme, resolved by ClientIpLayer, counts.
    let mut req = request(false);
    req.extensions_mut().insert(RequestScheme::Https);
    let res = run(layer, req).await;
    assert!(res.headers().get("strict-transport-security").is_some());
}

#[tokio::test]
async fn handler_hsts_is_stripped_over_http_and_html_is_not_cached() {
    let layer = SecurityHeadersLayer::builder().build().unwrap();
    let svc = |ctype: &'static str, cache: Option<&'static str>| {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(move |_req: Request<()>| async move {
                let mut res = Response::new(Full::new(Bytes::new()));
                res.headers_mut()
                    .insert("strict-transport-security", "max-age=1".parse().unwrap());
                res.headers_mut()
                    .insert("content-type", ctype.parse().unwrap());
                if let Some(c) = cache {
                    res.headers_mut()
                        .insert("cache-control", c.parse().unwrap());
                }
                Ok::<_, Infallible>(res)
            }))
    };
    let res = svc("text/html; charset=utf-8", None)
        .oneshot(request(false))
        .await
        .unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = svc("TEXT/HTML", Some("private, max-age=60"))
        .oneshot(request(true))
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "private, max-age=60");
    let res = svc("application/json", None)
        .oneshot(request(true))
        .await
        .unwrap();
    assert!(res.headers().get("cache-control").is_none());
}

#[test]
fn reporting_endpoint_schemes() {
    let deny = |url: &str| {
        let b = SecurityHeadersLayer::builder()
            .reporting_endpoint("r", url)
            .unwrap();
        b.posture().findings().iter().any(|f| {
            f.code() == "report-endpoint-http" && f.severity() == palisade_core::Severity::Deny
        })
    };
    assert!(deny("http://reports.example.com/x"));
    assert!(deny("HTTP://reports.example.com/x"));
    assert!(deny("http://localhost.evil.example/x"));
    assert!(!deny("http://localhost:9000/x"));
    assert!(!deny("https://reports.example.com/x"));
}

#[tokio::test]
async fn each_response_gets_a_fresh_nonce() {
    let layer = SecurityHeadersLayer::builder().build().unwrap();
    let a = run(layer.clone(), request(true)).await;
    let b = run(layer, request(true)).await;
    assert_ne!(
        a.headers()["content-security-policy"],
        b.headers()["content-security-policy"]
    );
}

#[tokio::test]
async fn report_only_and_reporting_endpoints() {
    let layer = SecurityHeadersLayer::builder()
        .csp(ContentSecurityPolicy::strict().report_to("csp").unwrap())
        .csp_report_only(
            ContentSecurityPolicy::strict()
                .require_trusted_types_for_script(true)
                .report_to("csp")
                .unwrap(),
        )
        .reporting_endpoint("csp", "https://reports.example.com/csp")
        .unwrap()
        .build()
        .unwrap();
    let res = run(layer, request(true)).await;
    let h = res.headers();
    assert_eq!(
        h["reporting-endpoints"],
        "csp=\"https://reports.example.com/csp\""
    );
    let enforced = h["content-security-policy"].to_str().unwrap();
    let ro = h["content-security-policy-report-only"].to_str().unwrap();
    assert!(ro.contains("require-trusted-types-for 'script'"));
    // Both policies carry the same nonce.
    let nonce = enforced
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(ro.contains(nonce));
}

#[tokio::test]
async fn per_route_override_and_opt_out() {
    let layer = SecurityHeadersLayer::builder().build().unwrap();
    let custom = CspOverride::replace(
        ContentSecurityPolicy::strict().add(
            Directive::ImgSrc,
            Source::host("https://cdn.example.com").unwrap(),
        ),
        Profile::Production,
    )
    .unwrap();
    for (over, want) in [
        (Some(custom), Some("https://cdn.example.com")),
        (Some(CspOverride::disable()), None),
    ] {
        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(move |_req: Request<()>| {
                let over = over.clone();
                async move {
                    let mut res = Response::new(Full::new(Bytes::new()));
                    if let Some(o) = over {
                        res.extensions_mut().insert(o);
                    }
                    Ok::<_, Infallible>(res)
                }
            }));
        let res = svc.oneshot(request(true)).await.unwrap();
        let csp = res
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        match want {
            Some(host) => assert!(csp.unwrap().contains(host)),
            None => assert!(csp.is_none()),
        }
        assert!(res.extensions().get::<CspOverride>().is_none());
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
}

#[test]
fn weak_production_config_lists_every_finding() {
    let err = SecurityHeadersLayer::builder()
        .csp(
            ContentSecurityPolicy::strict()
                .add(Directive::ScriptSrc, Source::UNSAFE_INLINE)
                .remove(Directive::BaseUri),
        )
        .hsts(Hsts::new(Duration::from_secs(3600)))
        .referrer_policy(ReferrerPolicy::UnsafeUrl)
        .build()
        .unwrap_err();
    let BuildError::Posture(err) = err else {
        panic!("expected a posture error")
    };
    let codes: Vec<_> = err.findings().iter().map(|f| f.code()).collect();
    for code in [
        "csp-unsafe-inline",
        "csp-no-base-uri",
        "hsts-short",
        "referrer-leaky",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    // The same configuration builds in development.
    assert!(
        SecurityHeadersLayer::builder()
            .profile(Profile::Development)
            .without_hsts_insecure()
            .without_csp_insecure()
            .build()
            .is_ok()
    );
    assert!(
        SecurityHeadersLayer::builder()
            .without_hsts_insecure()
            .build()
            .is_err()
    );
    assert!(
        SecurityHeadersLayer::builder()
            .without_csp_insecure()
            .build()
            .is_err()
    );
    assert!(
        SecurityHeadersLayer::builder()
            .frame_options(None)
            .csp(ContentSecurityPolicy::strict().remove(Directive::FrameAncestors))
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn smaller_layers() {
    let csp = CspLayer::from_policy(ContentSecurityPolicy::strict(), Profile::Production).unwrap();
    let res = run(csp, request(true)).await;
    assert!(res.headers().contains_key("content-security-policy"));
    assert!(!res.headers().contains_key("strict-transport-security"));
    assert!(CspLayer::from_policy(ContentSecurityPolicy::empty(), Profile::Production).is_err());

    let hsts = HstsLayer::from_hsts(Hsts::default().preload(true), Profile::Production).unwrap();
    let res = run(hsts, request(true)).await;
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains; preload"
    );
    assert!(!res.headers().contains_key("content-security-policy"));
    assert!(HstsLayer::from_hsts(Hsts::new(Duration::from_secs(60)), Profile::Production).is_err());
}
