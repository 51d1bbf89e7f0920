use content_security_policy as csp_parser;
use csp_parser::{CheckResult, CspList, Element, InlineCheckType, PolicyDisposition, PolicySource};
use palisade_core::{Posture, Profile, Severity};
use proptest::prelude::*;

use super::*;

fn parse(header: &str) -> CspList {
    CspList::parse(header, PolicySource::Header, PolicyDisposition::Enforce)
}

fn inline_script(list: &CspList, nonce: Option<&str>) -> CheckResult {
    let element = Element {
        nonce: nonce.map(Into::into),
    };
    list.should_elements_inline_type_behavior_be_blocked(
        &element,
        InlineCheckType::Script,
        "alert(1)",
    )
    .0
}

#[test]
fn strict_policy_renders_exactly() {
    let header = ContentSecurityPolicy::strict().render("N");
    assert_eq!(
        header,
        "default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src 'self' 'nonce-N'; \
         img-src 'self'; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; \
         upgrade-insecure-requests"
    );
}

#[test]
fn strict_policy_parses_cleanly_and_only_the_nonce_runs() {
    let nonce = CspNonce::generate().unwrap();
    let header = ContentSecurityPolicy::strict()
        .report_to("csp")
        .unwrap()
        .compile()
        .header_value(&nonce);
    let list = parse(header.to_str().unwrap());
    assert!(list.is_valid(), "{header:?}");
    assert_eq!(list.0[0].directive_set.len(), 13);
    assert_eq!(
        inline_script(&list, Some(nonce.as_str())),
        CheckResult::Allowed
    );
    assert_eq!(inline_script(&list, None), CheckResult::Blocked);
    assert_eq!(
        inline_script(&list, Some("guessed-nonce")),
        CheckResult::Blocked
    );
    assert_eq!(list.is_js_evaluation_allowed("1+1").0, CheckResult::Blocked);
}

#[test]
fn compiled_policy_matches_render() {
    let policy = ContentSecurityPolicy::strict().report_to("r").unwrap();
    let nonce = CspNonce::generate().unwrap();
    assert_eq!(
        policy.compile().header_value(&nonce).to_str().unwrap(),
        policy.render(nonce.as_str())
    );
    let no_nonce = ContentSecurityPolicy::api();
    assert!(!no_nonce.compile().uses_nonce());
    assert_eq!(
        no_nonce.compile().header_value(&nonce).to_str().unwrap(),
        "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    );
}

#[test]
fn nonces_are_long_unique_and_base64url() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let n = CspNonce::generate().unwrap();
        assert_eq!(n.as_str().len(), 22);
        assert!(
            n.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(seen.insert(n.as_str().to_owned()));
    }
}

#[test]
fn source_validation_table() {
    let good_hosts = [
        "https://cdn.example.com",
        "*.example.com",
        "https://example.com:8443/js/",
        "example.com",
    ];
    for h in good_hosts {
        assert!(Source::host(h).is_ok(), "{h}");
    }
    let bad_hosts = [
        "",
        "a b",
        "x;script-src *",
        "x,y",
        "'self'",
        "\"q\"",
        "https:",
        "caf\u{e9}.com",
    ];
    for h in bad_hosts {
        assert!(Source::host(h).is_err(), "{h:?}");
    }
    assert!(Source::scheme("https:").is_ok());
    assert!(Source::scheme("data").is_ok());
    assert!(Source::scheme("1http:").is_err());
    assert!(Source::scheme("ht tp:").is_err());
    let digest = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    assert!(Source::hash("sha256", digest).is_ok());
    assert!(Source::hash("sha1", digest).is_err());
    assert!(Source::hash("sha384", digest).is_err());
    assert!(
        ContentSecurityPolicy::strict()
            .report_to("bad name")
            .is_err()
    );
}

#[test]
fn none_is_dropped_next_to_other_sources() {
    let p = ContentSecurityPolicy::strict().add(Directive::ObjectSrc, Source::SELF);
    assert_eq!(p.sources(Directive::ObjectSrc), Some(&[Source::SELF][..]));
    let p = ContentSecurityPolicy::empty().set(Directive::ImgSrc, [Source::NONE, Source::SELF]);
    assert_eq!(p.sources(Directive::ImgSrc), Some(&[Source::SELF][..]));
}

fn codes(policy: &ContentSecurityPolicy) -> Vec<(&'static str, Severity)> {
    let mut posture = Posture::new(Profile::Production, "csp");
    policy.check("enforced", &mut posture);
    posture
        .findings()
        .iter()
        .map(|f| (f.code(), f.severity()))
        .collect()
}

#[test]
fn posture_table() {
    assert!(codes(&ContentSecurityPolicy::strict()).is_empty());
    assert!(codes(&ContentSecurityPolicy::api()).is_empty());
    let cases: Vec<(ContentSecurityPolicy, &str)> = vec![
        (
            ContentSecurityPolicy::strict().add(Directive::ScriptSrc, Source::UNSAFE_INLINE),
            "csp-unsafe-inline",
        ),
        (
            ContentSecurityPolicy::strict().add(Directive::ScriptSrc, Source::UNSAFE_EVAL),
            "csp-unsafe-eval",
        ),
        (
            ContentSecurityPolicy::strict()
                .remove(Directive::ScriptSrc)
                .remove(Directive::DefaultSrc),
            "csp-no-script-src",
        ),
        (
            ContentSecurityPolicy::strict()
                .set(Directive::ScriptSrc, [Source::scheme("https:").unwrap()]),
            "csp-broad-script-src",
        ),
        (
            ContentSecurityPolicy::strict().set(Directive::ScriptSrc, [Source::STRICT_DYNAMIC]),
            "csp-strict-dynamic-without-nonce",
        ),
        (
            ContentSecurityPolicy::strict().remove(Directive::BaseUri),
            "csp-no-base-uri",
        ),
        (
            ContentSecurityPolicy::strict()
                .remove(Directive::ObjectSrc)
                .set(Directive::DefaultSrc, [Source::SELF]),
            "csp-no-object-src",
        ),
        (
            ContentSecurityPolicy::strict().remove(Directive::FrameAncestors),
            "csp-no-frame-ancestors",
        ),
    ];
    for (policy, code) in cases {
        let found = codes(&policy);
        assert!(found.iter().any(|(c, _)| *c == code), "{code}: {found:?}");
    }
    let more: Vec<(ContentSecurityPolicy, &str)> = vec![
        (
            ContentSecurityPolicy::strict().set(Directive::ScriptSrcElem, [Source::UNSAFE_INLINE]),
            "csp-unsafe-inline",
        ),
        (
            ContentSecurityPolicy::strict().set(Directive::ScriptSrcAttr, [Source::UNSAFE_EVAL]),
            "csp-unsafe-eval",
        ),
        (
            ContentSecurityPolicy::strict()
                .set(Directive::ScriptSrc, [Source::host("https://*").unwrap()]),
            "csp-broad-script-src",
        ),
        (
            ContentSecurityPolicy::strict()
                .set(Directive::ScriptSrc, [Source::host("*.com").unwrap()]),
            "csp-broad-script-src",
        ),
        (
            ContentSecurityPolicy::strict().set(
                Directive::ScriptSrcElem,
                [Source::host("http://*:80/js").unwrap()],
            ),
            "csp-broad-script-src",
        ),
    ];
    for (policy, code) in more {
        let found = codes(&policy);
        assert!(found.iter().any(|(c, _)| *c == code), "{code}: {found:?}");
    }
    // A specific host is not broad.
    let fine = ContentSecurityPolicy::strict().set(
        Directive::ScriptSrcElem,
        [Source::host("https://*.example.com").unwrap()],
    );
    assert!(codes(&fine).is_empty(), "{:?}", codes(&fine));
    // default-src fallback: unsafe-inline there counts when script-src is absent.
    let p = ContentSecurityPolicy::empty()
        .set(Directive::DefaultSrc, [Source::SELF, Source::UNSAFE_INLINE])
        .set(Directive::ObjectSrc, [Source::NONE])
        .set(Directive::BaseUri, [Source::NONE]);
    assert!(codes(&p).contains(&("csp-unsafe-inline", Severity::Deny)));
}

fn any_directive() -> impl Strategy<Value = Directive> {
    use Directive::*;
    prop::sample::select(vec![
        DefaultSrc,
        ScriptSrc,
        ScriptSrcElem,
        StyleSrc,
        ImgSrc,
        FontSrc,
        ConnectSrc,
        MediaSrc,
        ObjectSrc,
        FrameSrc,
        WorkerSrc,
        ManifestSrc,
        BaseUri,
        FormAction,
        FrameAncestors,
    ])
}

fn any_source() -> impl Strategy<Value = Option<Source>> {
    prop_oneof![
        prop::sample::select(vec![
            Source::NONE,
            Source::SELF,
            Source::STRICT_DYNAMIC,
            Source::NONCE,
            Source::REPORT_SAMPLE,
            Source::UNSAFE_INLINE,
            Source::UNSAFE_EVAL,
            Source::WASM_UNSAFE_EVAL,
        ])
        .prop_map(Some),
        "\\PC{0,30}".prop_map(|s| Source::host(&s).ok()),
        "[a-z][a-z0-9+.-]{0,8}:?".prop_map(|s| Source::scheme(&s).ok()),
    ]
}

proptest! {
    /// Whatever is built from validated parts renders to a policy an independent parser
    /// accepts, with one directive per configured directive and the nonce where asked.
    #[test]
    fn built_policies_always_parse(ops in prop::collection::vec((any_directive(), any_source()), 0..24), report in proptest::option::of("[A-Za-z0-9_-]{1,16}")) {
        let mut policy = ContentSecurityPolicy::empty();
        let mut directives = std::collections::HashSet::new();
        for (d, s) in ops {
            if let Some(s) = s {
                policy = policy.add(d, s);
                directives.insert(d);
            }
        }
        let mut expected = directives.len();
        if let Some(group) = report {
            policy = policy.report_to(&group).unwrap();
            expected += 1;
        }
        prop_assume!(expected > 0);
        let nonce = CspNonce::generate().unwrap();
        let header = policy.compile().header_value(&nonce);
        let text = header.to_str().unwrap();
        let list = parse(text);
        prop_assert!(list.is_valid(), "{}", text);
        prop_assert_eq!(list.0[0].directive_set.len(), expected);
        prop_assert_eq!(text.contains(nonce.as_str()), policy.uses_nonce());
    }

    /// Host source validation never lets a directive separator or quote through.
    #[test]
    fn host_sources_cannot_inject(s in "\\PC{0,40}") {
        if let Ok(src) = Source::host(&s) {
            let rendered = ContentSecurityPolicy::empty().set(Directive::ImgSrc, [src]).render("n");
            prop_assert!(!rendered[8..].contains([';', ',', '\'', '"', ' ']));
        }
    }
}
