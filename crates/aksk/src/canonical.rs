//! AWS Signature Version 4 canonicalization: the canonical request, the string to sign, the
//! signing key and the signature.
//!
//! These functions are pure and allocation-light; the verifier and the client signer share
//! them, and the public SigV4 test suite checks them case by case.
//!
//! ```
//! use palisade_aksk::canonical::{self, CanonicalOptions};
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("host", "example.amazonaws.com".parse()?);
//! headers.insert("x-amz-date", "20150830T123600Z".parse()?);
//! let mut out = Vec::new();
//! canonical::canonical_request(
//!     &mut out,
//!     "GET",
//!     b"/",
//!     b"",
//!     &headers,
//!     None,
//!     "host;x-amz-date",
//!     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
//!     CanonicalOptions::default(),
//! )?;
//! assert!(out.starts_with(b"GET\n/\n\nhost:example.amazonaws.com\n"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The signing algorithm name.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The hex SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The most query parameters canonicalized.
pub const MAX_QUERY_PARAMS: usize = 128;
/// The most signed headers.
pub const MAX_SIGNED_HEADERS: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a request could not be canonicalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// The query has an invalid percent escape or decodes to invalid UTF-8.
    #[error("the query string is not validly percent-encoded UTF-8")]
    BadQueryEncoding,
    /// The path has an invalid percent escape (single-encoding mode).
    #[error("the path is not validly percent-encoded")]
    BadPathEncoding,
    /// More than [`MAX_QUERY_PARAMS`] query parameters.
    #[error("too many query parameters")]
    TooManyQueryParams,
    /// The signed-header list is empty, not lowercase, not sorted, repeats a name or is too long.
    #[error("the signed-header list must be non-empty, lowercase, sorted and without repeats")]
    BadSignedHeaders,
    /// A header named in the signed-header list is absent from the request.
    #[error("a signed header is missing from the request")]
    MissingSignedHeader,
}

/// How the path is encoded in the canonical request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEncoding {
    /// The path as received (already percent-encoded) is encoded once more: what non-S3 AWS
    /// services and the `aws-sigv4` crate do by default.
    #[default]
    Double,
    /// The path is decoded and encoded once (S3 style).
    Single,
}

/// Whether dot segments and repeated slashes are removed before encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathNormalization {
    /// Remove `.` and `..` segments and collapse repeated slashes (the `aws-sigv4` default).
    #[default]
    Enabled,
    /// Use the path as is.
    Disabled,
}

/// Canonicalization options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanonicalOptions {
    /// Path encoding.
    pub path_encoding: PathEncoding,
    /// Path normalization.
    pub path_normalization: PathNormalization,
}

/// Eight bytes at a time in a `u64` (SWAR): the signature path runs these on every byte of
/// the headers, where a byte loop's serial chain and mispredicted exits cost more than the
/// arithmetic.
pub(crate) mod swar {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = L * 0x80;

    /// The eight bytes of `bytes` from `at`, little-endian; bytes past the end read as `pad`.
    /// The tail is assembled in registers (a copy to the stack and a wide reload would stall
    /// store forwarding).
    #[inline(always)]
    pub(crate) fn load(bytes: &[u8], at: usize, pad: u8) -> u64 {
        let rest = bytes.get(at..).unwrap_or_default();
        if let Some(chunk) = rest.first_chunk::<8>() {
            return u64::from_le_bytes(*chunk);
        }
        let tail = match bytes.last_chunk::<8>() {
            Some(last) => u64::from_le_bytes(*last)
                .checked_shr(8 * (8 - rest.len() as u32))
                .unwrap_or(0),
            None => rest.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b)),
        };
        let padding = (L * u64::from(pad))
            .checked_shl(8 * rest.len() as u32)
            .unwrap_or(0);
        tail | padding
    }

    /// The high bit of each byte of `w` equal to `needle`, exactly (no borrow crosses bytes).
    #[inline(always)]
    pub(crate) fn eq(w: u64, needle: u8) -> u64 {
        const LOW7: u64 = !H;
        let x = w ^ (L * u64::from(needle));
        !(((x & LOW7) + LOW7) | x | LOW7)
    }

    /// The high bit of each byte of `w` in `lo..=hi`, for bytes below 0x80 (`hi` < 0x80).
    #[inline(always)]
    fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
        debug_assert!(lo <= hi && hi < 0x80, "ASCII ranges only");
        let ge = |k: u8| ((w | H) - L * u64::from(k)) & H;
        ge(lo) & !ge(hi + 1)
    }

    /// Whether every byte of `bytes` lies in one of `ranges` (inclusive, all below 0x80).
    #[inline(always)]
    pub(crate) fn all_in(bytes: &[u8], ranges: &[(u8, u8)]) -> bool {
        let Some(&(pad, _)) = ranges.first() else {
            return bytes.is_empty();
        };
        let mut bad = 0;
        let mut at = 0;
        while at < bytes.len() {
            let w = load(bytes, at, pad);
            let ok = ranges
                .iter()
                .fold(0, |ok, &(lo, hi)| ok | in_range(w, lo, hi));
            bad |= (w & H) | (ok ^ H);
            at += 8;
        }
        bad == 0
    }

    /// Whether all eight bytes of `w` are ASCII digits.
    #[inline(always)]
    pub(crate) fn all_digits(w: u64) -> bool {
        (w & H) == 0 && in_range(w, b'0', b'9') == H
    }

    /// The first eight bytes of `name` (zero-padded) as a big-endian number: names whose keys
    /// differ order as their keys do (header names hold no zero byte).
    #[inline(always)]
    pub(crate) fn order_key(name: &[u8]) -> u64 {
        load(name, 0, 0).swap_bytes()
    }

    /// A nonce's alphabet in one pass: whether every byte is in `A-Za-z0-9-_`, and whether
    /// every byte is a hex digit.
    pub(crate) fn nonce_classes(bytes: &[u8]) -> (bool, bool) {
        let (mut not_nonce, mut not_hex) = (0, 0);
        let mut at = 0;
        while at < bytes.len() {
            let w = load(bytes, at, b'0');
            let hex = in_range(w, b'0', b'9') | in_range(w, b'a', b'f') | in_range(w, b'A', b'F');
            let nonce = hex
                | in_range(w, b'g', b'z')
                | in_range(w, b'G', b'Z')
                | in_range(w, b'-', b'-')
                | in_range(w, b'_', b'_');
            not_nonce |= (w & H) | (nonce ^ H);
            not_hex |= (w & H) | (hex ^ H);
            at += 8;
        }
        (not_nonce == 0, not_hex == 0)
    }

    /// `A-Za-z0-9`.
    pub(crate) const ALNUM: &[(u8, u8)] = &[(b'a', b'z'), (b'A', b'Z'), (b'0', b'9')];
    /// The header names of real lists, `a-z0-9-` and `;` (other token characters take the
    /// table).
    pub(crate) const COMMON_LIST: &[(u8, u8)] =
        &[(b'a', b'z'), (b'0', b'9'), (b'-', b'-'), (b';', b';')];
}

/// Byte classes, looked up instead of tested: the signature path runs them on every byte.
pub(crate) mod class {
    /// `A-Za-z0-9-_.~`: kept as is by SigV4 encoding.
    pub(crate) const UNRESERVED: u8 = 1;
    /// Lowercase header-name token characters.
    pub(crate) const TOKEN_LOWER: u8 = 2;
    /// `A-Za-z0-9`.
    pub(crate) const ALNUM: u8 = 4;
    /// `A-Za-z0-9-_`: the nonce alphabet.
    pub(crate) const NONCE: u8 = 8;
    /// `0-9a-fA-F`.
    pub(crate) const HEX: u8 = 16;
    /// A signed-header list: lowercase token characters and `;`.
    pub(crate) const LIST: u8 = 32;
    /// A query already in canonical form: unreserved bytes, `&` and `=`.
    pub(crate) const QUERY_PLAIN: u8 = 64;

    pub(crate) const TABLE: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            let alnum = c.is_ascii_alphanumeric();
            let mut v = 0;
            if alnum || c == b'-' || c == b'_' || c == b'.' || c == b'~' {
                v |= UNRESERVED | QUERY_PLAIN;
            }
            if c == b'&' || c == b'=' {
                v |= QUERY_PLAIN;
            }
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
            {
                v |= TOKEN_LOWER | LIST;
            }
            if c == b';' {
                v |= LIST;
            }
            if alnum {
                v |= ALNUM;
            }
            if alnum || c == b'-' || c == b'_' {
                v |= NONCE;
            }
            if c.is_ascii_hexdigit() {
                v |= HEX;
            }
            t[b] = v;
            b += 1;
        }
        t
    };

    /// Whether every byte of `bytes` is in `class` (one branch-free pass).
    pub(crate) fn all(bytes: &[u8], class: u8) -> bool {
        bytes
            .iter()
            .fold(class, |acc, &b| acc & TABLE[usize::from(b)])
            == class
    }
}

fn is_unreserved(b: u8) -> bool {
    class::TABLE[usize::from(b)] & class::UNRESERVED != 0
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn encode_into(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    if bytes.iter().fold(true, |all, &b| {
        all & (is_unreserved(b) || (keep_slash && b == b'/'))
    }) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 15)],
            ]);
        }
    }
}

use palisade_core::percent::decode;

/// Whether `path` has `.`/`..` segments or empty segments (`//`) that normalization changes,
/// or does not start with `/`.
pub fn path_needs_normalization(path: &[u8]) -> bool {
    if path.is_empty() {
        return false;
    }
    if path[0] != b'/' {
        return true;
    }
    // Each segment starts after a `/`: only the byte after it can begin `/` (an empty segment
    // that is not the last), `.` or `..` (a dot segment, ending at the next `/` or the end).
    Positions::new(path, b'/').any(|at| {
        matches!(
            &path[at + 1..],
            [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
        )
    })
}

/// Whether the verifier and a router can only read `path` one way: no dot segments and no
/// empty segments, and in single-encoding mode also none once decoded, and no encoded `/` or
/// `.` (which that mode would turn into separators or dot segments).
pub fn path_is_unambiguous(path: &[u8], options: CanonicalOptions) -> bool {
    if path_needs_normalization(path) {
        return false;
    }
    match options.path_encoding {
        PathEncoding::Double => true,
        PathEncoding::Single => {
            let encoded_separator = path.windows(3).any(|w| {
                w[0] == b'%' && (w[1] == b'2') && matches!(w[2], b'f' | b'F' | b'e' | b'E')
            });
            !encoded_separator && decode(path, false).is_some_and(|d| !path_needs_normalization(&d))
        }
    }
}

/// Removes dot segments and collapses repeated slashes.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut stack: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            b"" => trailing = last && i > 0,
            b"." => trailing = last,
            b".." => {
                stack.pop();
                trailing = last;
            }
            s => {
                stack.push(s);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for seg in &stack {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

/// Writes the canonical URI of `path` (as received on the wire, without the query).
pub fn canonical_uri(
    out: &mut Vec<u8>,
    path: &[u8],
    options: CanonicalOptions,
) -> Result<(), CanonicalError> {
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    match (options.path_encoding, options.path_normalization) {
        (PathEncoding::Double, PathNormalization::Disabled) => encode_into(out, path, true),
        (PathEncoding::Double, PathNormalization::Enabled) => {
            if path_needs_normalization(path) {
                encode_into(out, &normalize(path), true);
            } else {
                encode_into(out, path, true);
            }
        }
        (PathEncoding::Single, normalization) => {
            let decoded = decode(path, false).ok_or(CanonicalError::BadPathEncoding)?;
            let decoded = match normalization {
                PathNormalization::Enabled => normalize(&decoded),
                PathNormalization::Disabled => decoded,
            };
            encode_into(out, &decoded, true);
        }
    }
    Ok(())
}

/// Writes the canonical query of `query` (the raw text after `?`, without it).
///
/// Parameters are form-decoded (`+` is a space, as the `aws-sigv4` crate and form decoders read
/// it), strictly re-encoded, and sorted by encoded name then value. A bad escape or a value that
/// is not UTF-8 is refused rather than replaced, so two different queries never share a form.
pub fn canonical_query(out: &mut Vec<u8>, query: &[u8]) -> Result<(), CanonicalError> {
    if query.is_empty() {
        return Ok(());
    }
    // Fast path: a few parameters already in canonical form (unreserved bytes only) are
    // sorted as borrowed slices on the stack (insertion sort: a handful of items), with no
    // allocation.
    const FAST: usize = 8;
    if class::all(query, class::QUERY_PLAIN) {
        let mut params: [(&[u8], &[u8]); FAST] = [(&[], &[]); FAST];
        let mut count = 0;
        let mut fits = true;
        let mut amps = Positions::new(query, b'&');
        let mut start = 0;
        while start <= query.len() {
            let end = amps.next().unwrap_or(query.len());
            let pair = &query[start..end];
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            let param = match find_byte(b'=', pair) {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            // A value holding `=` is not canonical (it encodes as %3D): take the slow path.
            if count == FAST || find_byte(b'=', param.1).is_some() {
                fits = false;
                break;
            }
            let mut at = count;
            while at > 0 && params[at - 1] > param {
                params[at] = params[at - 1];
                at -= 1;
            }
            params[at] = param;
            count += 1;
        }
        if fits {
            for (i, (name, value)) in params[..count].iter().enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                out.extend_from_slice(name);
                out.push(b'=');
                out.extend_from_slice(value);
            }
            return Ok(());
        }
    }
    let mut params: Vec<Param<'_>> = Vec::with_capacity(8);
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if params.len() == MAX_QUERY_PARAMS {
            return Err(CanonicalError::TooManyQueryParams);
        }
        let (name, value) = match find_byte(b'=', pair) {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        params.push((query_component(name)?, query_component(value)?));
    }
    params.sort_unstable();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
    Ok(())
}

/// A canonically encoded query parameter (name, value).
type Param<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// One query name or value, canonically encoded; borrowed when it is already canonical (only
/// unreserved bytes), which is the common case.
fn query_component(raw: &[u8]) -> Result<Cow<'_, [u8]>, CanonicalError> {
    if class::all(raw, class::UNRESERVED) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(raw, true).ok_or(CanonicalError::BadQueryEncoding)?;
    std::str::from_utf8(&decoded).map_err(|_| CanonicalError::BadQueryEncoding)?;
    let mut encoded = Vec::with_capacity(decoded.len() * 3);
    encode_into(&mut encoded, &decoded, false);
    Ok(Cow::Owned(encoded))
}

/// Checks a signed-header list: 1 to [`MAX_SIGNED_HEADERS`] names of lowercase token
/// characters, separated by `;`, strictly ascending.
pub fn check_signed_headers(list: &str) -> Result<(), CanonicalError> {
    let mut previous: &[u8] = &[];
    let mut count = 0;
    for name in list.as_bytes().split(|&b| b == b';') {
        count += 1;
        let valid = !name.is_empty() && class::all(name, class::TOKEN_LOWER);
        if !valid || count > MAX_SIGNED_HEADERS || (count > 1 && previous >= name) {
            return Err(CanonicalError::BadSignedHeaders);
        }
        previous = name;
    }
    Ok(())
}

/// Writes one header value trimmed, with runs of spaces and tabs collapsed to one space.
pub(crate) fn write_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    // Fast path: no space or control byte at all (dates, hashes, nonces, hosts, media types)
    // is one branch-free scan and one copy.
    if value.iter().fold(0u8, |acc, &b| acc | u8::from(b <= b' ')) == 0 {
        out.extend_from_slice(value);
        return;
    }
    let mut in_space = false;
    let start = out.len();
    for &b in value.trim_ascii() {
        if b.is_ascii_whitespace() {
            in_space = true;
        } else {
            if in_space && out.len() > start {
                out.push(b' ');
            }
            in_space = false;
            out.push(b);
        }
    }
}

/// Writes the canonical headers (each `name:value\n`) for `signed` (already checked with
/// [`check_signed_headers`]). Repeated headers are joined with `,`. `host_fallback` answers for
/// `host` when the map has none (HTTP/2 carries it as `:authority`).
pub fn canonical_headers(
    out: &mut Vec<u8>,
    headers: &http::HeaderMap,
    host_fallback: Option<&str>,
    signed: &str,
) -> Result<(), CanonicalError> {
    // Find each signed name among the request's header names once (no re-parsing of names),
    // then read the values in signed-list order.
    let mut names: [&str; MAX_SIGNED_HEADERS] = [""; MAX_SIGNED_HEADERS];
    let mut count = 0;
    for name in split_ascii(signed, b';') {
        if count == MAX_SIGNED_HEADERS {
            return Err(CanonicalError::BadSignedHeaders);
        }
        names[count] = name;
        count += 1;
    }
    let names = &names[..count];
    let mut keys: [Option<&http::HeaderName>; MAX_SIGNED_HEADERS] = [None; MAX_SIGNED_HEADERS];
    for key in headers.keys() {
        if let Ok(i) = names.binary_search(&key.as_str()) {
            keys[i] = Some(key);
        }
    }
    for (name, key) in names.iter().zip(keys) {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        match (key, *name, host_fallback) {
            (Some(key), _, _) => {
                for (i, value) in headers.get_all(key).iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_trimmed(out, value.as_bytes());
                }
            }
            (None, "host", Some(host)) => write_trimmed(out, host.as_bytes()),
            (None, _, _) => return Err(CanonicalError::MissingSignedHeader),
        }
        out.push(b'\n');
    }
    Ok(())
}

/// The first `needle` in `haystack` (eight bytes at a time, see [`Positions`]).
pub(crate) fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    Positions::new(haystack, needle).next()
}

/// The positions of one byte in a string, found eight bytes at a time in a `u64` (SWAR): one
/// well-predicted branch per word and one per match, instead of a data-dependent branch per
/// byte whose exit the CPU mispredicts at every separator of a short name.
pub(crate) struct Positions<'a> {
    bytes: &'a [u8],
    needle: u8,
    /// Offset of the current word.
    base: usize,
    /// The matches left in the current word: the high bit of each matching byte.
    word: u64,
}

impl<'a> Positions<'a> {
    pub(crate) fn new(bytes: &'a [u8], needle: u8) -> Self {
        let mut positions = Self {
            bytes,
            needle,
            base: 0,
            word: 0,
        };
        positions.word = positions.matches_at(0);
        positions
    }

    /// The high bit of each byte of the word at `at` that equals the needle; past the end,
    /// padding that never matches.
    fn matches_at(&self, at: usize) -> u64 {
        swar::eq(swar::load(self.bytes, at, !self.needle), self.needle)
    }
}

impl Iterator for Positions<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.word == 0 {
            self.base += 8;
            if self.base >= self.bytes.len() {
                return None;
            }
            self.word = self.matches_at(self.base);
        }
        let at = self.base + (self.word.trailing_zeros() / 8) as usize;
        self.word &= self.word - 1;
        Some(at)
    }
}

/// Splits `text` at each ASCII `sep` byte (a plain byte loop: cheaper than a char searcher on
/// the short strings of a signature).
pub(crate) fn split_ascii(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let end = find_byte(sep, &bytes[start..]).map_or(bytes.len(), |i| start + i);
        // `sep` is ASCII, so both ends are character boundaries.
        let piece = text.get(start..end).unwrap_or_default();
        if end == bytes.len() {
            done = true;
        } else {
            start = end + 1;
        }
        Some(piece)
    })
}

/// Decodes 64 lowercase hex digits, eight at a time in a `u64` (SWAR): branch-free
/// validation and conversion, no table.
pub(crate) fn decode_hex32(text: &[u8]) -> Option<[u8; 32]> {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = L * 0x80;
    const LANES: u64 = 0x00ff_00ff_00ff_00ff;
    let text: &[u8; 64] = text.try_into().ok()?;
    let (words, _) = text.as_chunks::<8>();
    let mut out = [0u8; 32];
    let mut bad = 0u64;
    for (word, o) in words.iter().zip(out.as_chunks_mut::<4>().0) {
        let w = u64::from_le_bytes(*word);
        // For bytes below 0x80, the high bit of each byte of `(w | H) - k * L` says `byte >= k`
        // (no borrow crosses bytes); bytes from 0x80 are refused by `w & H`.
        let ge = |k: u8| ((w | H) - L * u64::from(k)) & H;
        let digit = ge(b'0') & !ge(b'9' + 1);
        let lower = ge(b'a') & !ge(b'f' + 1);
        bad |= (w & H) | ((digit | lower) ^ H);
        // '0'..='9' are 0x30..0x39 and 'a'..='f' are 0x61..0x66: the low nibble, plus 9 where
        // bit 6 (letters) is set.
        let nibbles = (w & (L * 0x0f)) + ((w >> 6) & L) * 9;
        // Each 16-bit lane holds (high digit, low digit): combine, then gather the four bytes.
        let pairs = ((nibbles & LANES) << 4) | ((nibbles >> 8) & LANES);
        let pairs = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
        let pairs = (pairs | (pairs >> 16)) & 0xffff_ffff;
        *o = (pairs as u32).to_le_bytes();
    }
    (bad == 0).then_some(out)
}

/// Writes the whole canonical request.
#[allow(clippy::too_many_arguments)]
pub fn canonical_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &[u8],
    query: &[u8],
    headers: &http::HeaderMap,
    host_fallback: Option<&str>,
    signed_headers: &str,
    payload_hash: &str,
    options: CanonicalOptions,
) -> Result<(), CanonicalError> {
    check_signed_headers(signed_headers)?;
    write_request_head(out, method, path, query, options)?;
    canonical_headers(out, headers, host_fallback, signed_headers)?;
    write_request_tail(out, signed_headers.as_bytes(), payload_hash.as_bytes());
    Ok(())
}

/// The canonical request up to its headers: method, canonical URI and canonical query, each
/// followed by a newline.
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &[u8],
    query: &[u8],
    options: CanonicalOptions,
) -> Result<(), CanonicalError> {
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    canonical_uri(out, path, options)?;
    out.push(b'\n');
    canonical_query(out, query)?;
    out.push(b'\n');
    Ok(())
}

/// The canonical request after its headers: the blank line, the signed-header list and the
/// payload hash.
pub(crate) fn write_request_tail(out: &mut Vec<u8>, signed_headers: &[u8], payload_hash: &[u8]) {
    out.push(b'\n');
    out.extend_from_slice(signed_headers);
    out.push(b'\n');
    out.extend_from_slice(payload_hash);
}

/// The credential scope `<yyyymmdd>/<region>/<service>/aws4_request`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The string to sign for a canonical request, written into `out`.
pub fn string_to_sign(out: &mut String, amz_date: &str, scope: &str, canonical_request: &[u8]) {
    let digest: [u8; 32] = Sha256::digest(canonical_request).into();
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(amz_date);
    out.push('\n');
    out.push_str(scope);
    out.push('\n');
    out.push_str(hex32(&digest).as_str());
}

/// [`string_to_sign`] into bytes (the verifier's form: its inputs were checked to be ASCII).
pub(crate) fn write_string_to_sign(
    out: &mut Vec<u8>,
    amz_date: &[u8],
    scope: &[u8],
    canonical_request: &[u8],
) {
    let digest: [u8; 32] = Sha256::digest(canonical_request).into();
    out.extend_from_slice(ALGORITHM.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(amz_date);
    out.push(b'\n');
    out.extend_from_slice(scope);
    out.push(b'\n');
    out.extend_from_slice(&hex32(&digest).0);
}

/// Lowercase hex of 32 bytes, on the stack.
#[derive(Clone, Copy, Debug)]
pub struct Hex32([u8; 64]);

impl Hex32 {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Constant-time equality of two 32-byte values: every byte is compared, and the optimizer
/// cannot turn the fold into an early exit.
pub(crate) fn ct_eq32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Four words XORed and ORed: no branch, no early exit.
    let diff = a
        .as_chunks::<8>()
        .0
        .iter()
        .zip(b.as_chunks::<8>().0)
        .fold(0u64, |acc, (x, y)| {
            acc | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y))
        });
    subtle::ConstantTimeEq::ct_eq(&std::hint::black_box(diff), &0u64).into()
}

/// Lowercase hex of `bytes` without allocating. For public values only (digests of
/// canonical requests): the table lookup is indexed by the data, so secret bytes would leak
/// through cache timing.
pub fn hex32(bytes: &[u8; 32]) -> Hex32 {
    // Both digits of each byte from one table: one load and one two-byte store per byte.
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = [HEX[b >> 4], HEX[b & 15]];
            b += 1;
        }
        t
    };
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    Hex32(out)
}

/// A derived SigV4 signing key, kept with its HMAC key schedule (the inner and outer pad
/// blocks already hashed), so a signature costs only the string to sign: two compressions
/// fewer than keying HMAC anew. The derivation's intermediate keys are zeroized, and so is
/// the schedule on drop (the `zeroize` features of `hmac` and `sha2`).
#[derive(Clone)]
pub struct SigningKey {
    keyed: HmacSha256,
}

// The schedule is wiped only through the hash cores' `Drop`, which the `zeroize` feature
// enables: fail the build if it is ever turned off.
const _: fn() = || {
    fn wipes_on_drop<T: sha2::digest::zeroize::ZeroizeOnDrop>() {}
    wipes_on_drop::<Sha256>();
};

impl SigningKey {
    /// Derives the key for `secret` on `date` (`yyyymmdd`) in `region` for `service`.
    pub fn derive(secret: &[u8], date: &str, region: &str, service: &str) -> Self {
        let mut prefixed = zeroize::Zeroizing::new(Vec::with_capacity(4 + secret.len()));
        prefixed.extend_from_slice(b"AWS4");
        prefixed.extend_from_slice(secret);
        let mut key = zeroize::Zeroizing::new(mac(&prefixed, date.as_bytes()));
        for part in [region.as_bytes(), service.as_bytes(), b"aws4_request"] {
            *key = mac(&*key, part);
        }
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(&*key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { keyed }
    }

    /// The signature of `string_to_sign`.
    pub fn sign(&self, string_to_sign: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(string_to_sign);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex of SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of the empty body ([`EMPTY_SHA256`] as bytes): a `GET` has nothing to hash.
const EMPTY_DIGEST: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// SHA-256 of a body, with the empty body's digest a constant.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    if body.is_empty() {
        EMPTY_DIGEST
    } else {
        Sha256::digest(body).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_digest_is_sha256_of_nothing() {
        assert_eq!(EMPTY_DIGEST, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(hex::encode(EMPTY_DIGEST), EMPTY_SHA256);
        assert_eq!(body_digest(b"x"), <[u8; 32]>::from(Sha256::digest(b"x")));
    }

    fn uri(path: &str, options: CanonicalOptions) -> String {
        let mut out = Vec::new();
        canonical_uri(&mut out, path.as_bytes(), options).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn paths() {
        let d = CanonicalOptions::default();
        assert_eq!(uri("", d), "/");
        assert_eq!(uri("/a%20b", d), "/a%2520b");
        assert_eq!(uri("//example//", d), "/example/");
        assert_eq!(uri("/example/..", d), "/");
        assert_eq!(uri("/./example", d), "/example");
        assert_eq!(uri("/a/b/../c/./", d), "/a/c/");
        let raw = CanonicalOptions {
            path_normalization: PathNormalization::Disabled,
            ..d
        };
        assert_eq!(uri("//example//", raw), "//example//");
        let single = CanonicalOptions {
            path_encoding: PathEncoding::Single,
            path_normalization: PathNormalization::Disabled,
        };
        assert_eq!(uri("/a%20b/%E1%88%B4", single), "/a%20b/%E1%88%B4");
        let mut out = Vec::new();
        assert_eq!(
            canonical_uri(&mut out, b"/a%zz", single),
            Err(CanonicalError::BadPathEncoding)
        );
        assert!(path_needs_normalization(b"/a//b"));
        assert!(path_needs_normalization(b"/a/./b"));
        assert!(path_needs_normalization(b"/a/.."));
        assert!(path_needs_normalization(b"a"));
        assert!(!path_needs_normalization(b"/a/b/"));
        assert!(!path_needs_normalization(b"/"));
        assert!(!path_needs_normalization(b"/a.b/..c"));
    }

    fn query(q: &str) -> Result<String, CanonicalError> {
        let mut out = Vec::new();
        canonical_query(&mut out, q.as_bytes())?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn single_encoding_refuses_encoded_separators() {
        let single = CanonicalOptions {
            path_encoding: PathEncoding::Single,
            path_normalization: PathNormalization::Disabled,
        };
        for ambiguous in [
            "/api/x/%2E%2E/admin",
            "/api/a%2Fb",
            "/api/a%2fb",
            "/api/%2e/x",
            "/a/%zz",
        ] {
            assert!(
                !path_is_unambiguous(ambiguous.as_bytes(), single),
                "{ambiguous}"
            );
        }
        assert!(path_is_unambiguous(b"/api/a%20b/c", single));
        // Double encoding keeps escapes literal: no ambiguity to refuse.
        assert!(path_is_unambiguous(
            b"/api/a%2Fb",
            CanonicalOptions::default()
        ));
        assert!(!path_is_unambiguous(
            b"/api/../x",
            CanonicalOptions::default()
        ));
    }

    #[test]
    fn queries() {
        assert_eq!(query("b=2&a=1&a=0").unwrap(), "a=0&a=1&b=2");
        assert_eq!(query("k").unwrap(), "k=");
        assert_eq!(query("a+b=c%2Bd").unwrap(), "a%20b=c%2Bd");
        assert_eq!(query("&&x=1&").unwrap(), "x=1");
        assert_eq!(query("x=%7e").unwrap(), "x=~");
        assert_eq!(query("x=%zz"), Err(CanonicalError::BadQueryEncoding));
        assert_eq!(query("x=%FF"), Err(CanonicalError::BadQueryEncoding));
        let many = vec!["a=1"; MAX_QUERY_PARAMS + 1].join("&");
        assert_eq!(query(&many), Err(CanonicalError::TooManyQueryParams));
    }

    #[test]
    fn signed_header_lists() {
        assert!(check_signed_headers("host;x-amz-date").is_ok());
        for bad in [
            "",
            "Host;x-amz-date",
            "x-amz-date;host",
            "host;host",
            "host;",
            ";host",
            "ho st",
        ] {
            assert_eq!(
                check_signed_headers(bad),
                Err(CanonicalError::BadSignedHeaders),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        let mut headers = http::HeaderMap::new();
        headers.append("my-header", "  a   b  ".parse().unwrap());
        headers.append("my-header", "c".parse().unwrap());
        let mut out = Vec::new();
        canonical_headers(&mut out, &headers, Some("h.example"), "host;my-header").unwrap();
        assert_eq!(out, b"host:h.example\nmy-header:a b,c\n");
        let mut out = Vec::new();
        assert_eq!(
            canonical_headers(&mut out, &headers, None, "host"),
            Err(CanonicalError::MissingSignedHeader)
        );
    }

    /// Every byte value at every position of a valid digest: accepted exactly for `0-9a-f`,
    /// and decoded as the plain per-digit reference does; `hex32` inverts it.
    #[test]
    fn hex32_decoding_is_exact() {
        let reference = |text: &[u8]| -> Option<Vec<u8>> {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            text.chunks(2)
                .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                .collect()
        };
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let base = hex32(&bytes).0;
        assert_eq!(decode_hex32(&base), Some(bytes));
        for at in 0..64 {
            for b in 0..=255u8 {
                let mut text = base;
                text[at] = b;
                let got = decode_hex32(&text);
                assert_eq!(
                    got.map(Vec::from),
                    reference(&text),
                    "byte {b:#04x} at {at}"
                );
                if let Some(decoded) = got {
                    assert_eq!(hex32(&decoded).0, text);
                }
            }
        }
        assert_eq!(decode_hex32(&base[..63]), None);
        assert_eq!(decode_hex32(&[b'0'; 65]), None);
    }

    /// The separator-driven check answers as a segment split does, for every path of up to
    /// eight bytes over `/`, `.` and a letter.
    #[test]
    fn normalization_check_matches_a_segment_split() {
        fn by_segments(path: &[u8]) -> bool {
            if path.is_empty() {
                return false;
            }
            let Some(body) = path.strip_prefix(b"/") else {
                return true;
            };
            let segments: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
            segments.iter().enumerate().any(|(i, seg)| {
                matches!(*seg, b"." | b"..") || (seg.is_empty() && i + 1 < segments.len())
            })
        }
        let mut checked = 0;
        for len in 0..=8u32 {
            for n in 0..3usize.pow(len) {
                let path: Vec<u8> = (0..len).map(|i| b"/.a"[n / 3usize.pow(i) % 3]).collect();
                assert_eq!(
                    path_needs_normalization(&path),
                    by_segments(&path),
                    "{path:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 9841);
    }

    /// The word-at-a-time search finds exactly what a byte loop finds, at every length and
    /// alignment, with every byte value around (including bytes that differ from the needle
    /// only in the high bit, and the needle's complement used as padding).
    #[test]
    fn positions_match_a_byte_loop() {
        for needle in [b';', b'&', b'=', b',', b'/', 0x00, 0xbb, 0xff] {
            for len in 0..=40usize {
                for seed in 0..24u32 {
                    let text: Vec<u8> = (0..len)
                        .map(|i| {
                            let r = (i as u32 + 1).wrapping_mul(2_654_435_761)
                                ^ seed.wrapping_mul(40_503);
                            match r % 5 {
                                0 => needle,
                                1 => needle ^ 0x80,
                                2 => !needle,
                                _ => (r >> 8) as u8,
                            }
                        })
                        .collect();
                    let expected: Vec<usize> = (0..len).filter(|&i| text[i] == needle).collect();
                    let found: Vec<usize> = Positions::new(&text, needle).collect();
                    assert_eq!(found, expected, "needle {needle:#04x} in {text:?}");
                    assert_eq!(find_byte(needle, &text), expected.first().copied());
                }
            }
        }
    }

    /// The SWAR alphabet checks answer as the byte table does: every byte value at every
    /// position and length up to 20, for each alphabet.
    #[test]
    fn swar_alphabets_match_the_table() {
        let sets: [(&[(u8, u8)], u8); 1] = [(swar::ALNUM, class::ALNUM)];
        let list = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b';';
        for len in 1..=20usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'7'; len];
                    text[at] = b;
                    for (ranges, class) in sets {
                        assert_eq!(
                            swar::all_in(&text, ranges),
                            class::all(&text, class),
                            "{b:#04x} at {at} of {len}"
                        );
                    }
                    assert_eq!(swar::all_in(&text, swar::COMMON_LIST), list(b));
                    assert_eq!(
                        swar::nonce_classes(&text),
                        (
                            class::all(&text, class::NONCE),
                            class::all(&text, class::HEX)
                        )
                    );
                }
            }
        }
        assert!(swar::all_in(b"", swar::ALNUM));
    }

    /// Ordering keys order as the names do whenever they differ.
    #[test]
    fn order_keys_order_names() {
        let names: [&[u8]; 10] = [
            b"a",
            b"host",
            b"hosts",
            b"content-type",
            b"content-typf",
            b"x-amz-date",
            b"x-amz-content-sha256",
            b"x-palisade-nonce",
            b"abcdefgh",
            b"abcdefghi",
        ];
        for a in names {
            for b in names {
                let (ka, kb) = (swar::order_key(a), swar::order_key(b));
                if ka != kb {
                    assert_eq!(ka < kb, a < b, "{a:?} {b:?}");
                } else {
                    assert!(a == b || (a.len() >= 8 && b.len() >= 8 && a[..8] == b[..8]));
                }
            }
        }
    }

    /// Equal values compare equal; any one flipped bit anywhere makes them differ.
    #[test]
    fn constant_time_equality() {
        let a: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert!(ct_eq32(&a, &a));
        for byte in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[byte] ^= 1 << bit;
                assert!(!ct_eq32(&a, &b), "byte {byte} bit {bit}");
            }
        }
    }

    /// The documented example from the AWS General Reference (signing key derivation).
    #[test]
    fn signing_key_example() {
        let key = SigningKey::derive(
            b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        // The documented key, as the HMAC key its schedule was made from.
        let documented =
            hex::decode("c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9")
                .unwrap();
        for probe in [&b""[..], b"AWS4-HMAC-SHA256\n20150830T123600Z", &[7u8; 200]] {
            assert_eq!(key.sign(probe), mac(&documented, probe));
        }
    }
}
