//! Browser sessions: the access token in a `__Host-` cookie, with a CSRF check.
//!
//! A cookie rides along on cross-site requests, so a request authenticated by cookie must
//! prove it comes from the site itself: `Sec-Fetch-Site: same-origin` (or `none` for a
//! navigation the user typed, on safe methods), else an `Origin` from the allowed list. A
//! request with neither is refused on unsafe methods. An `Authorization` header, when present,
//! always wins over the cookie.
//!
//! ```
//! use palisade_authn::cookie::{CookieSource, session_cookie};
//! use std::time::Duration;
//!
//! let source = CookieSource::new("__Host-session", ["https://app.example.com"])?;
//! let set_cookie = session_cookie(&source, "eyJ...", Duration::from_secs(300))?;
//! assert_eq!(
//!     set_cookie.to_str().unwrap(),
//!     "__Host-session=eyJ...; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=300"
//! );
//! assert!(CookieSource::new("session", ["https://app.example.com"]).is_err());
//! # Ok::<_, palisade_authn::ConfigError>(())
//! ```

use std::time::Duration;

use http::header::{COOKIE, HeaderValue, ORIGIN};
use http::{Method, Request};

use crate::error::{AuthnError, ConfigError};

/// Where a browser session's token lives, and which origins may use it.
#[derive(Clone, Debug)]
pub struct CookieSource {
    name: String,
    origins: Vec<String>,
}

impl CookieSource {
    /// A cookie named `name` (which must start with `__Host-`: bound to this host, `Secure`,
    /// `Path=/`), usable from `origins` (`https://host[:port]`).
    pub fn new<I, S>(name: &str, origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if !name.starts_with("__Host-") || name.len() > 64 || !name.bytes().all(token_char) {
            return Err(ConfigError::InvalidCookie(name.to_owned()));
        }
        let mut list = Vec::new();
        for origin in origins {
            let origin = origin
                .as_ref()
                .trim()
                .trim_end_matches('/')
                .to_ascii_lowercase();
            let ok = origin
                .strip_prefix("https://")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#', '@', '*']));
            if !ok {
                return Err(ConfigError::InvalidOrigin(origin));
            }
            list.push(origin);
        }
        if list.is_empty() {
            return Err(ConfigError::InvalidOrigin(String::new()));
        }
        Ok(Self {
            name: name.to_owned(),
            origins: list,
        })
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token from the cookie, after the CSRF check; `Ok(None)` when the cookie is absent.
    pub(crate) fn token<'r, B>(&self, req: &'r Request<B>) -> Result<Option<&'r str>, AuthnError> {
        let mut found = None;
        for header in req.headers().get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name == self.name {
                    if found.is_some() {
                        // Two cookies of this name: one may have been planted (cookie tossing).
                        return Err(AuthnError::AmbiguousCookie);
                    }
                    found = Some(value.trim_matches('"'));
                }
            }
        }
        let Some(token) = found else { return Ok(None) };
        self.check_same_origin(req)?;
        Ok(Some(token))
    }

    fn check_same_origin<B>(&self, req: &Request<B>) -> Result<(), AuthnError> {
        let safe = matches!(*req.method(), Method::GET | Method::HEAD);
        if let Some(site) = req.headers().get("sec-fetch-site") {
            return match site.as_bytes() {
                b"same-origin" => Ok(()),
                b"none" if safe => Ok(()),
                _ => Err(AuthnError::CrossSiteCookie),
            };
        }
        match req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()) {
            Some(origin)
                if self
                    .origins
                    .iter()
                    .any(|o| o == &origin.to_ascii_lowercase()) =>
            {
                Ok(())
            }
            Some(_) => Err(AuthnError::CrossSiteCookie),
            None if safe => Ok(()),
            None => Err(AuthnError::CrossSiteCookie),
        }
    }
}

/// The `Set-Cookie` value that stores `token` for `source`: `Path=/`, `Secure`, `HttpOnly`,
/// `SameSite=Strict`, expiring with the token.
pub fn session_cookie(
    source: &CookieSource,
    token: &str,
    max_age: Duration,
) -> Result<HeaderValue, ConfigError> {
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ConfigError::InvalidCookie(
            "token is not a compact JWS".into(),
        ));
    }
    HeaderValue::try_from(format!(
        "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        source.name,
        max_age.as_secs()
    ))
    .map_err(|_| ConfigError::InvalidCookie(source.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> CookieSource {
        CookieSource::new("__Host-s", ["https://app.example.com"]).unwrap()
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/api");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn csrf_table() {
        use Method as M;
        let c = ("cookie", "a=1; __Host-s=tok; b=2");
        let cases: Vec<(Method, Vec<(&str, &str)>, Result<Option<&str>, AuthnError>)> = vec![
            (M::GET, vec![], Ok(None)),
            (M::GET, vec![c], Ok(Some("tok"))),
            (M::POST, vec![c], Err(AuthnError::CrossSiteCookie)),
            (
                M::POST,
                vec![c, ("sec-fetch-site", "same-origin")],
                Ok(Some("tok")),
            ),
            (
                M::POST,
                vec![c, ("sec-fetch-site", "same-site")],
                Err(AuthnError::CrossSiteCookie),
            ),
            (
                M::GET,
                vec![c, ("sec-fetch-site", "cross-site")],
                Err(AuthnError::CrossSiteCookie),
            ),
            (M::GET, vec![c, ("sec-fetch-site", "none")], Ok(Some("tok"))),
            (
                M::POST,
                vec![c, ("sec-fetch-site", "none")],
                Err(AuthnError::CrossSiteCookie),
            ),
            (
                M::POST,
                vec![c, ("origin", "https://app.example.com")],
                Ok(Some("tok")),
            ),
            (
                M::POST,
                vec![c, ("origin", "https://evil.example")],
                Err(AuthnError::CrossSiteCookie),
            ),
            (
                M::DELETE,
                vec![c, ("origin", "null")],
                Err(AuthnError::CrossSiteCookie),
            ),
            (
                M::GET,
                vec![("cookie", "__Host-s=a"), ("cookie", "__Host-s=b")],
                Err(AuthnError::AmbiguousCookie),
            ),
            (
                M::GET,
                vec![("cookie", "__host-s=a; x__Host-s=b")],
                Ok(None),
            ),
        ];
        for (method, headers, want) in cases {
            let r = req(method.clone(), &headers);
            assert_eq!(source().token(&r), want, "{method} {headers:?}");
        }
    }

    #[test]
    fn config_validation() {
        assert!(CookieSource::new("__Host-s", ["http://app.example.com"]).is_err());
        assert!(CookieSource::new("__Host-s", ["https://app.example.com/x"]).is_err());
        assert!(CookieSource::new("__Host-s", Vec::<String>::new()).is_err());
        assert!(CookieSource::new("__Secure-s", ["https://a.example"]).is_err());
        assert!(CookieSource::new("__Host-s;x", ["https://a.example"]).is_err());
        assert!(session_cookie(&source(), "a;b", Duration::from_secs(1)).is_err());
    }
}
