//! `hardened_api`: the Palisade demo service.
//!
//! An Axum service that composes every Palisade layer that exists so far, with in-memory
//! stores and settings from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PALISADE_PROFILE` | `development` | `development` or `production` |
//! | `PALISADE_DEMO_HTTPS_ADDR` | `127.0.0.1:8443` | HTTPS listener |
//! | `PALISADE_DEMO_HTTP_ADDR` | `127.0.0.1:8080` | plain listener; it only redirects to HTTPS |
//! | `PALISADE_DEMO_TLS_CERT` / `PALISADE_DEMO_TLS_KEY` | self-signed in development | PEM files; required in production |
//! | `ADMIN_HOSTNAME` | `admin.palisade.localhost` | the only host serving `/admin/` |
//! | `PALISADE_DEMO_PUBLIC_HOST` | (the request's host) | canonical host for HTTPS redirects |
//! | `PALISADE_DEMO_CORS_ORIGINS` | `https://app.example.com` | comma-separated allowed origins |
//! | `PALISADE_DEMO_TRUSTED_PROXIES` | (none) | comma-separated proxy addresses or CIDR blocks |
//! | `PALISADE_DEMO_ADMIN_ALLOW` | (anyone) | comma-separated client addresses or CIDR blocks allowed on the admin surface |
//! | `PALISADE_DEMO_OIDC_ISSUER` | (none: every token refused) | the Keycloak realm URL whose tokens `/api/` and `/admin/` accept |
//! | `PALISADE_DEMO_API_CLIENTS` | the test personas | `azp` values accepted on `/api/` (audience `api`) |
//! | `PALISADE_DEMO_ADMIN_CLIENTS` | the test personas | `azp` values accepted on `/admin/` (audience `global-admin`, MFA required) |
//! | `LOCAL_AUTH_ENABLED` | `false` | local password accounts (`/auth/signup`, `/auth/verify`, `/auth/login`, `/auth/reset/*`) |
//! | `PALISADE_DEMO_MAIL_OUTBOX` | `false` | stand-in for email: answers carry the verification or reset token they would have mailed (tests only) |
//! | `PALISADE_DEMO_TEST_CLOCK` | `false` | development only: a clock tests move with `POST /demo/clock/advance` |
//! | `PALISADE_DEMO_SESSION_KEYS` | throwaway key in development | key ring (see `palisade_core::keyring`) hashing refresh tokens; required in production |
//! | `FIELD_ENCRYPTION_KEYS` | throwaway key in development | key ring sealing access-key secrets at rest; required in production |
//! | `PALISADE_DEMO_ORG_ADMIN_CLIENTS` | the test personas | `azp` values accepted on the org-admin routes (audience `org-admin`, MFA required) |
//! | `PALISADE_DEMO_AUDIT_LOG` | a file in the temp directory in development | the audit log (JSON Lines, tamper-evident); required in production |
//! | `AUDIT_SIGNING_KEY` | throwaway key in development | key ring signing audit records; required in production |
//! | `PALISADE_DEMO_METRICS_ADDR` | `127.0.0.1:9464` | Prometheus scrape endpoint (`/metrics`); loopback only |
//! | `PALISADE_DEMO_IMPERSONATION_KEYS` | throwaway key in development | key ring signing impersonation credentials; required in production |
//!
//! Admins with a fresh second factor and the `impersonator` realm role impersonate users of an
//! org (`POST /admin/impersonation`, or `POST /admin/orgs/{org}/impersonation` for org
//! admins): every request made with the short-lived credential is written to the audit log
//! before it runs; `palisade-audit verify --file LOG` checks the log.
//!
//! Machine clients call `/api/` with access keys (AWS SigV4, service `palisade-demo`, region
//! `local`, with a signed `x-palisade-nonce`); admins issue, list and disable keys under
//! `/admin/orgs/{org}/access-keys`.
//!
//! Run it with `cargo run --example hardened_api`, or `cargo xtask demo --serve`.
//! It refuses to start when the configuration is insecure for the profile, printing every
//! finding (each with its id from `palisade::core::checks` and its fix). With `--posture`
//! (or `--posture=json`) it prints the posture report of its configuration and exits: 0 when
//! it would start, 2 when it would refuse (`cargo xtask posture` runs this).

mod app;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use palisade::core::{ConnectionInfo, Profile};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Settings read from the environment.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) profile: Profile,
    pub(crate) https_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) tls_cert: Option<String>,
    pub(crate) tls_key: Option<String>,
    pub(crate) admin_hostname: String,
    pub(crate) public_host: Option<String>,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) admin_allow: Vec<String>,
    pub(crate) oidc_issuer: Option<String>,
    pub(crate) api_clients: Vec<String>,
    pub(crate) admin_clients: Vec<String>,
    pub(crate) org_admin_clients: Vec<String>,
    pub(crate) audit_log: Option<String>,
    pub(crate) audit_keys: Option<String>,
    pub(crate) impersonation_keys: Option<String>,
    pub(crate) metrics_addr: SocketAddr,
    /// Only the posture report is wanted (`--posture`): nothing is opened for writing.
    pub(crate) posture_only: bool,
    pub(crate) session_keys: Option<String>,
    pub(crate) field_keys: Option<String>,
    pub(crate) local_auth_enabled: bool,
    pub(crate) mail_outbox: bool,
    pub(crate) test_clock: bool,
    /// The Cerbos PDP (`https://host:port`; `http://` only on loopback outside production).
    pub(crate) cerbos_url: Option<String>,
    /// A CA bundle (PEM file) to verify the PDP with, instead of the system roots.
    pub(crate) cerbos_ca: Option<String>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self {
            profile: Profile::from_env_or(Profile::Development)?,
            https_addr: env_or("PALISADE_DEMO_HTTPS_ADDR", "127.0.0.1:8443").parse()?,
            http_addr: env_or("PALISADE_DEMO_HTTP_ADDR", "127.0.0.1:8080").parse()?,
            tls_cert: std::env::var("PALISADE_DEMO_TLS_CERT").ok(),
            tls_key: std::env::var("PALISADE_DEMO_TLS_KEY").ok(),
            admin_hostname: env_or("ADMIN_HOSTNAME", "admin.palisade.localhost"),
            public_host: std::env::var("PALISADE_DEMO_PUBLIC_HOST").ok(),
            cors_origins: list(&env_or(
                "PALISADE_DEMO_CORS_ORIGINS",
                "https://app.example.com",
            )),
            trusted_proxies: list(&env_or("PALISADE_DEMO_TRUSTED_PROXIES", "")),
            admin_allow: list(&env_or("PALISADE_DEMO_ADMIN_ALLOW", "")),
            oidc_issuer: std::env::var("PALISADE_DEMO_OIDC_ISSUER").ok(),
            api_clients: list(&env_or(
                "PALISADE_DEMO_API_CLIENTS",
                "api-user,api-user-es,api-user-ed,multi-aud,other-tenant,docs-user,docs-user-mfa",
            )),
            session_keys: std::env::var("PALISADE_DEMO_SESSION_KEYS").ok(),
            field_keys: std::env::var(palisade::field_crypto::FIELD_ENCRYPTION_KEYS).ok(),
            local_auth_enabled: env_or("LOCAL_AUTH_ENABLED", "false") == "true",
            mail_outbox: env_or("PALISADE_DEMO_MAIL_OUTBOX", "false") == "true",
            test_clock: env_or("PALISADE_DEMO_TEST_CLOCK", "false") == "true",
            cerbos_url: std::env::var("PALISADE_DEMO_CERBOS_URL").ok(),
            cerbos_ca: std::env::var("PALISADE_DEMO_CERBOS_CA").ok(),
            admin_clients: list(&env_or(
                "PALISADE_DEMO_ADMIN_CLIENTS",
                "admin-mfa,admin-no-mfa",
            )),
            org_admin_clients: list(&env_or("PALISADE_DEMO_ORG_ADMIN_CLIENTS", "org-admin")),
            audit_log: std::env::var("PALISADE_DEMO_AUDIT_LOG").ok(),
            audit_keys: std::env::var(palisade::audit::AUDIT_SIGNING_KEY).ok(),
            impersonation_keys: std::env::var("PALISADE_DEMO_IMPERSONATION_KEYS").ok(),
            metrics_addr: env_or("PALISADE_DEMO_METRICS_ADDR", "127.0.0.1:9464").parse()?,
            posture_only: false,
        })
    }
}

#[tokio::main]
async fn main() {
    // RUST_LOG picks the levels (info by default).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run().await {
        eprintln!("hardened_api: {err}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // One crypto provider, installed explicitly: feature unification can never make rustls
    // pick (or panic over) another.
    palisade::authn::install_crypto_providers();
    let mut settings = Settings::from_env()?;
    let posture = std::env::args().skip(1).find_map(|a| match a.as_str() {
        "--posture" => Some(false),
        "--posture=json" => Some(true),
        _ => None,
    });
    if let Some(json) = posture {
        settings.posture_only = true;
        return posture_report(&settings, json).await;
    }
    // Metrics: every Palisade layer reports through the `metrics` facade; Prometheus scrapes
    // them from a listener of their own, on loopback only.
    if !settings.metrics_addr.ip().is_loopback() {
        return Err("PALISADE_DEMO_METRICS_ADDR must be a loopback address".into());
    }
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    // Histograms are folded in periodically, whether or not anything scrapes.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let metrics = TcpListener::bind(settings.metrics_addr).await?;
    let metrics_addr = metrics.local_addr()?;
    tokio::spawn(async move {
        let scrape = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let prometheus = prometheus.clone();
                async move { prometheus.render() }
            }),
        );
        if let Err(err) = axum::serve(metrics, scrape).await {
            tracing::error!(%err, "metrics listener failed");
        }
    });
    let https = TcpListener::bind(settings.https_addr).await?;
    let http = TcpListener::bind(settings.http_addr).await?;
    let tls = TlsAcceptor::from(Arc::new(tls::server_config(&settings)?));
    // Redirects name the port actually bound (the setting may say 0).
    let (app, _report) = app::build(&settings, https.local_addr()?.port()).await?;
    eprintln!(
        "hardened_api ({}) listening on https://{} and http://{} (redirect only), metrics on http://{metrics_addr}/metrics",
        settings.profile,
        https.local_addr()?,
        http.local_addr()?
    );
    tokio::select! {
        res = serve(https, Some(tls), app.clone()) => res?,
        res = serve(http, None, app) => res?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Prints the posture report of `settings` (text or JSON) and exits: 0 when the demo would
/// start, 2 when it would refuse.
async fn posture_report(settings: &Settings, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let report = match app::build(settings, 443).await {
        Ok((_, report)) => report,
        Err(err) => match err.downcast::<palisade::HardeningError>() {
            Ok(refused) => refused.report().clone(),
            Err(other) => return Err(other),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("{report}");
    }
    if report.refuses() {
        std::process::exit(2);
    }
    Ok(())
}

/// Accepts connections, inserts [`ConnectionInfo`] into every request and serves `app`.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let info = ConnectionInfo::new(peer, tls.is_some());
            let service =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info);
                    tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
                });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                    Err(err) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
}
