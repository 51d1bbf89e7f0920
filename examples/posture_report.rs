//! Prints the posture findings of a deliberately weak production configuration of every
//! layer: what Palisade refuses to start with, and why.
//!
//! `cargo run --example posture_report`

use std::time::Duration;

use palisade::core::{Finding, Profile};
use palisade::csp_headers::csp::{ContentSecurityPolicy, Directive, Source};
use palisade::csp_headers::headers::ReferrerPolicy;
use palisade::csp_headers::{
    AdminHostLayer, BuildError, CorsLayer, Hsts, RequireHttpsLayer, SecurityHeadersLayer,
};

fn report(layer: &str, result: Result<&[Finding], BuildError>) -> usize {
    match result {
        Ok(findings) => {
            println!("{layer}: built, {} non-blocking findings", findings.len());
            for f in findings {
                println!("  {f}");
            }
            0
        }
        Err(BuildError::Posture(err)) => {
            println!("{layer}: REFUSED");
            for f in err.findings() {
                println!("  {f}");
            }
            err.findings().len()
        }
        Err(other) => {
            println!("{layer}: configuration error: {other}");
            1
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let p = Profile::Production;
    let weak_csp = ContentSecurityPolicy::empty()
        .set(Directive::DefaultSrc, [Source::SELF])
        .set(
            Directive::ScriptSrc,
            [
                Source::SELF,
                Source::UNSAFE_INLINE,
                Source::UNSAFE_EVAL,
                Source::scheme("https:")?,
            ],
        )
        .report_to("csp")?;
    let headers = SecurityHeadersLayer::builder()
        .profile(p)
        .csp(weak_csp)
        .hsts(Hsts::new(Duration::from_secs(86_400)).include_subdomains(false))
        .referrer_policy(ReferrerPolicy::UnsafeUrl)
        .frame_options(None)
        .reporting_endpoint("csp", "http://reports.example.com/csp")?
        .build();
    let cors = CorsLayer::builder()
        .profile(p)
        .allow_origins(["http://app.example.com", "http://localhost:3000"])?
        .max_age(Duration::from_secs(86_400))
        .build();
    let https = RequireHttpsLayer::builder().profile(p).build();
    let admin = AdminHostLayer::builder("localhost")?
        .profile(p)
        .allow_client_ips(["0.0.0.0/0"])?
        .build();

    let mut total = 0;
    total += report(
        "security-headers",
        headers.as_ref().map(|l| l.findings()).map_err(Clone::clone),
    );
    total += report(
        "cors",
        cors.as_ref().map(|l| l.findings()).map_err(Clone::clone),
    );
    total += report(
        "require-https",
        https.as_ref().map(|l| l.findings()).map_err(Clone::clone),
    );
    total += report(
        "admin-host",
        admin.as_ref().map(|l| l.findings()).map_err(Clone::clone),
    );
    println!("{total} findings in refused layers");
    Ok(())
}
