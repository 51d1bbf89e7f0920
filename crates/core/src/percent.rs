//! Strict percent-decoding, shared by every parser that reads URL text.

/// Percent-decodes `bytes`: each `%` must be followed by exactly two hex digits (`None`
/// otherwise); with `plus_is_space` (query strings and forms), `+` is a space.
///
/// ```
/// use palisade_core::percent::decode;
///
/// assert_eq!(decode(b"a%2Fb+c", true).as_deref(), Some(&b"a/b c"[..]));
/// assert_eq!(decode(b"a+b", false).as_deref(), Some(&b"a+b"[..]));
/// assert_eq!(decode(b"%+A", false), None);
/// assert_eq!(decode(b"%4", false), None);
/// ```
pub fn decode(bytes: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The value of one hex digit.
pub fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
