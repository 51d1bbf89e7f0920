use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use palisade_core::{Profile, Rejection};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::*;

fn layer() -> CorsLayer {
    CorsLayer::builder()
        .allow_origins(["https://app.example.com", "https://admin.example.com:8443"])
        .unwrap()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .allow_credentials(true)
        .build()
        .unwrap()
}

async fn send(req: Request<()>) -> Response<palisade_core::ResponseBody<Full<Bytes>>> {
    ServiceBuilder::new()
        .layer(layer())
        .service(service_fn(|_req: Request<()>| async {
            let mut res = Response::new(Full::new(Bytes::from_static(b"data")));
            // A careless handler granting everything must not get through.
            res.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
            Ok::<_, Infallible>(res)
        }))
        .oneshot(req)
        .await
        .unwrap()
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<()> {
    let mut b = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/x")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method);
    if let Some(h) = headers {
        b = b.header(header::ACCESS_CONTROL_REQUEST_HEADERS, h);
    }
    b.body(()).unwrap()
}

#[tokio::test]
async fn allowed_preflight() {
    let res = send(preflight(
        "https://app.example.com",
        "POST",
        Some("Content-Type, authorization"),
    ))
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "content-type, authorization"
    );
    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
    assert_eq!(
        h[header::VARY],
        "origin, access-control-request-method, access-control-request-headers"
    );
}

#[tokio::test]
async fn refused_preflights_are_403_without_cors_headers() {
    let cases = [
        (
            preflight("https://evil.example", "POST", None),
            CorsRejection::OriginNotAllowed,
        ),
        (
            preflight("https://app.example.com.evil.example", "GET", None),
            CorsRejection::OriginNotAllowed,
        ),
        (
            preflight("null", "GET", None),
            CorsRejection::OriginNotAllowed,
        ),
        (
            preflight("https://APP.example.com", "GET", None),
            CorsRejection::OriginNotAllowed,
        ),
        (
            preflight("https://admin.example.com", "GET", None),
            CorsRejection::OriginNotAllowed,
        ),
        (
            preflight("https://app.example.com", "DELETE", None),
            CorsRejection::MethodNotAllowed,
        ),
        (
            preflight("https://app.example.com", "not a method", None),
            CorsRejection::MethodNotAllowed,
        ),
        (
            preflight("https://app.example.com", "POST", Some("x-evil")),
            CorsRejection::HeaderNotAllowed,
        ),
    ];
    for (req, want) in cases {
        let desc = format!(
            "{:?} {:?}",
            req.headers().get(header::ORIGIN),
            req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)
        );
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{desc}");
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
        ] {
            assert!(res.headers().get(&name).is_none(), "{desc}: {name}");
        }
        assert!(
            res.headers()[header::VARY]
                .to_str()
                .unwrap()
                .contains("origin")
        );
        let rejection = res.extensions().get::<Rejection>().unwrap();
        assert_eq!(
            rejection.reason_as::<CorsRejection>(),
            Some(&want),
            "{desc}"
        );
    }
}

#[tokio::test]
async fn two_origin_headers_are_not_allowed() {
    let mut req = preflight("https://app.example.com", "GET", None);
    req.headers_mut()
        .append(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(send(req).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn simple_requests() {
    let req = |origin: Option<&str>| {
        let mut b = Request::builder().uri("/api/x");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(()).unwrap()
    };
    let res = send(req(Some("https://app.example.com"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "x-request-id"
    );
    assert_eq!(res.headers()[header::VARY], "origin");

    let res = send(req(Some("https://admin.example.com:8443"))).await;
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://admin.example.com:8443"
    );

    for origin in [Some("https://evil.example"), None] {
        let res = send(req(origin)).await;
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{origin:?}"
        );
        assert!(
            res.headers()
                .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none()
        );
        assert_eq!(res.headers()[header::VARY], "origin");
    }
}

#[test]
fn origin_normalization_table() {
    let ok = [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80/", "http://app.example.com"),
        (
            "https://app.example.com:8443",
            "https://app.example.com:8443",
        ),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("https://127.0.0.1", "https://127.0.0.1"),
    ];
    for (input, want) in ok {
        assert_eq!(normalize_origin(input).unwrap(), want, "{input}");
    }
    let bad = [
        "*",
        "https://*.example.com",
        "null",
        "app.example.com",
        "ftp://app.example.com",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://app.example.com?x",
        "https://",
        "https://app example.com",
        "https://app.example.com:99999",
        "https://app.example.com:+1",
        "https://[::1",
        "https://-bad.com",
    ];
    for input in bad {
        assert!(normalize_origin(input).is_err(), "{input}");
    }
}

#[test]
fn local_origins_are_recognized() {
    for local in [
        "http://localhost:3000",
        "https://[::1]",
        "https://[::1]:8443",
        "http://127.0.0.2",
        "http://0.0.0.0:8080",
        "https://app.localhost",
    ] {
        assert!(
            is_local_origin(&normalize_origin(local).unwrap()),
            "{local}"
        );
    }
    for public in [
        "https://app.example.com",
        "https://[2001:db8::1]",
        "https://10.0.0.1",
    ] {
        assert!(
            !is_local_origin(&normalize_origin(public).unwrap()),
            "{public}"
        );
    }
}

#[test]
fn production_posture() {
    let err = CorsLayer::builder()
        .allow_origins(["http://app.example.com", "http://localhost:3000"])
        .unwrap()
        .build()
        .unwrap_err();
    let crate::BuildError::Posture(err) = err else {
        panic!()
    };
    assert_eq!(err.findings().len(), 2);
    assert!(
        CorsLayer::builder()
            .profile(Profile::Development)
            .allow_origin("http://localhost:3000")
            .unwrap()
            .build()
            .is_ok()
    );
}
