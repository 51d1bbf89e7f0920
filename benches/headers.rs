//! The security-headers layer against a bare service, in the same run.
//!
//! `cargo xtask bench` runs this and prints medians and ratios. Each iteration builds a
//! request, calls the service and drops the response; the inner service answers at once, so
//! the difference is the layer's own cost (nonce draw, CSP rendering, header inserts).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade::core::{ClientIpLayer, ConnectionInfo, Profile, TrustedProxies};
use palisade::csp_headers::{
    AdminHostLayer, ContentSecurityPolicy, CorsLayer, RequireHttpsLayer, SecurityHeadersLayer,
};
use tower::{Layer, Service, ServiceBuilder, service_fn};

/// Polls a future that is ready at once (every service here is).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked service was not ready at once"),
    }
}

fn request() -> Request<()> {
    let mut req = Request::builder()
        .uri("/api/orders")
        .header("host", "api.example.com")
        .header("origin", "https://app.example.com")
        .body(())
        .expect("request");
    req.extensions_mut().insert(ConnectionInfo::new(
        "198.51.100.7:50000".parse().expect("addr"),
        true,
    ));
    req
}

async fn handler(_req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    ))))
}

fn bench<S, B>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    c.bench_function(name, |b| {
        b.iter(|| {
            let res = now(svc.call(black_box(request()))).expect("infallible");
            black_box(res)
        });
    });
}

fn headers(c: &mut Criterion) {
    let headers = SecurityHeadersLayer::builder()
        .profile(Profile::Production)
        .build()
        .expect("layer");
    let api_headers = SecurityHeadersLayer::builder()
        .profile(Profile::Production)
        .csp(ContentSecurityPolicy::api())
        .build()
        .expect("layer");
    bench(c, "headers/bare", service_fn(handler));
    bench(
        c,
        "headers/security_headers",
        headers.layer(service_fn(handler)),
    );
    bench(
        c,
        "headers/security_headers_api_policy",
        api_headers.layer(service_fn(handler)),
    );
    let stack = ServiceBuilder::new()
        .layer(ClientIpLayer::new(TrustedProxies::none()))
        .layer(headers)
        .layer(
            RequireHttpsLayer::builder()
                .canonical_host("api.example.com")
                .expect("host")
                .build()
                .expect("layer"),
        )
        .layer(
            AdminHostLayer::builder("admin.example.com")
                .expect("host")
                .build()
                .expect("layer"),
        )
        .layer(
            CorsLayer::builder()
                .allow_origin("https://app.example.com")
                .expect("origin")
                .build()
                .expect("layer"),
        )
        .service(service_fn(handler));
    bench(c, "headers/full_stack", stack);
}

criterion_group!(benches, headers);
criterion_main!(benches);
