//! Signed streaming payloads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, the `aws-chunked`
//! encoding S3 clients use for uploads): each chunk carries a signature chained from the
//! request's signature, so the body is checked chunk by chunk as it arrives.
//!
//! A chunk is `<hex size>;chunk-signature=<64 hex>\r\n<data>\r\n`; the last one has size 0.
//! Its signature is the HMAC, with the request's signing key, of
//!
//! ```text
//! AWS4-HMAC-SHA256-PAYLOAD
//! <x-amz-date>
//! <credential scope>
//! <previous signature, hex; the request's for the first chunk>
//! <hex SHA-256 of the empty string>
//! <hex SHA-256 of the chunk data>
//! ```
//!
//! The verifier accepts this payload only on routes that opt in
//! ([`crate::VerifierBuilder::allow_streaming_payload_on`]), requires the decoded length
//! (`x-amz-decoded-content-length`) to be signed and within the body limit, and releases no
//! byte of a chunk before its signature verified. Chunks other than the last data chunk must
//! hold at least [`MIN_CHUNK`] bytes (as S3 requires), which bounds the HMACs a body can cost.
//! Trailer variants (`STREAMING-…-TRAILER`) and unsigned streaming are refused.
//!
//! ```
//! use palisade_aksk::canonical::SigningKey;
//! use palisade_aksk::streaming::{ChunkedDecoder, encode_chunked};
//!
//! let key = SigningKey::derive(b"secret", "20261129", "local", "demo");
//! let (date, scope) = ("20261129T120000Z", "20261129/local/demo/aws4_request");
//! let seed = [7u8; 32]; // the request's verified signature
//! let body = encode_chunked(&key, date, scope, &seed, b"hello", 8192);
//! let mut decoder = ChunkedDecoder::new(key, date, scope, seed, 5);
//! decoder.feed(&body)?;
//! assert_eq!(&decoder.finish()?[..], b"hello");
//! # Ok::<_, palisade_aksk::streaming::ChunkError>(())
//! ```

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use sha2::{Digest, Sha256};

use crate::canonical::{self, EMPTY_SHA256, SigningKey};

/// The `x-amz-content-sha256` value of a signed streaming payload.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// The header carrying the decoded body length.
pub const X_AMZ_DECODED_CONTENT_LENGTH: HeaderName =
    HeaderName::from_static("x-amz-decoded-content-length");
/// The smallest chunk accepted, except the last data chunk and the final empty one.
pub const MIN_CHUNK: usize = 8 * 1024;
/// The algorithm line of a chunk's string to sign.
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";
/// The most decoded bytes reserved up front.
const PREALLOCATE: u64 = 1 << 20;
/// The longest chunk header accepted: 16 hex digits, the signature extension, CRLF.
const MAX_HEADER: usize = 16 + ";chunk-signature=".len() + 64 + 2;

/// Why a streaming body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// A chunk header or its framing does not parse.
    #[error("malformed aws-chunked framing")]
    Malformed,
    /// A chunk's signature does not match.
    #[error("chunk signature mismatch")]
    BadSignature,
    /// The chunks hold more bytes than the signed decoded length, or a chunk is larger than
    /// that length.
    #[error("chunks longer than the signed decoded length")]
    TooLong,
    /// A chunk other than the last data chunk is shorter than [`MIN_CHUNK`].
    #[error("chunk shorter than the minimum")]
    ShortChunk,
    /// The body ended before the final chunk, or the chunks hold fewer bytes than signed.
    #[error("streaming body ended early")]
    Truncated,
    /// Bytes follow the final chunk.
    #[error("bytes after the final chunk")]
    TrailingBytes,
}

/// Decodes an `aws-chunked` body and verifies each chunk's signature before its bytes are
/// released. Feed it the body as it arrives; [`ChunkedDecoder::finish`] answers the decoded
/// bytes once the final chunk verified and the length matches the signed one.
pub struct ChunkedDecoder {
    key: SigningKey,
    /// `AWS4-HMAC-SHA256-PAYLOAD\n<date>\n<scope>\n`: the fixed head of every chunk's string
    /// to sign.
    head: Vec<u8>,
    previous: [u8; 32],
    expected: u64,
    decoded: BytesMut,
    pending: BytesMut,
    short_seen: bool,
    done: bool,
    /// Set by the first error: a failed decoder never answers `Ok` again.
    failed: Option<ChunkError>,
}

impl std::fmt::Debug for ChunkedDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedDecoder")
            .field("expected", &self.expected)
            .field("decoded", &self.decoded.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChunkedDecoder {
    /// A decoder for a request signed at `amz_date` under `scope` with `key`, whose verified
    /// signature is `seed` and whose signed decoded length is `expected`.
    pub fn new(
        key: SigningKey,
        amz_date: &str,
        scope: &str,
        seed: [u8; 32],
        expected: u64,
    ) -> Self {
        Self {
            key,
            head: format!("{CHUNK_ALGORITHM}\n{amz_date}\n{scope}\n").into_bytes(),
            previous: seed,
            expected,
            // The signed length, up to a bound: no regrowth for ordinary bodies, and no huge
            // reservation for a caller that passes a huge length.
            decoded: BytesMut::with_capacity(
                usize::try_from(expected.min(PREALLOCATE)).unwrap_or(0),
            ),
            pending: BytesMut::new(),
            short_seen: false,
            done: false,
            failed: None,
        }
    }

    /// Takes the next bytes of the body and verifies every chunk they complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), ChunkError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let outcome = if self.done {
            if input.is_empty() {
                Ok(())
            } else {
                Err(ChunkError::TrailingBytes)
            }
        } else {
            self.pending.extend_from_slice(input);
            loop {
                match self.next_chunk() {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(error) => break Err(error),
                }
            }
        };
        if let Err(error) = outcome {
            self.failed = Some(error);
        }
        outcome
    }

    /// The decoded body, once the final chunk verified and the chunks hold exactly the signed
    /// decoded length.
    pub fn finish(self) -> Result<Bytes, ChunkError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if !self.done {
            return Err(ChunkError::Truncated);
        }
        if !self.pending.is_empty() {
            return Err(ChunkError::TrailingBytes);
        }
        if self.decoded.len() as u64 != self.expected {
            return Err(ChunkError::Truncated);
        }
        Ok(self.decoded.freeze())
    }

    /// Verifies one complete chunk at the front of the pending bytes; `false` when more bytes
    /// are needed.
    fn next_chunk(&mut self) -> Result<bool, ChunkError> {
        if self.done {
            return if self.pending.is_empty() {
                Ok(false)
            } else {
                Err(ChunkError::TrailingBytes)
            };
        }
        let window = &self.pending[..self.pending.len().min(MAX_HEADER)];
        let Some(line_end) = window.windows(2).position(|w| w == b"\r\n") else {
            return if self.pending.len() >= MAX_HEADER {
                Err(ChunkError::Malformed)
            } else {
                Ok(false)
            };
        };
        let (size, signature) = parse_header(&self.pending[..line_end])?;
        let remaining = self.expected - self.decoded.len() as u64;
        if size > remaining {
            return Err(ChunkError::TooLong);
        }
        // The size fits the signed length; a length this machine cannot address is refused.
        let start = line_end + 2;
        let (size, end) = usize::try_from(size)
            .ok()
            .and_then(|size| Some((size, start.checked_add(size)?.checked_add(2)?)))
            .ok_or(ChunkError::TooLong)?;
        let end = end - 2;
        if self.pending.len() < end + 2 {
            return Ok(false);
        }
        if &self.pending[end..end + 2] != b"\r\n" {
            return Err(ChunkError::Malformed);
        }
        if self.short_seen && size > 0 {
            return Err(ChunkError::ShortChunk);
        }
        let data = &self.pending[start..end];
        let expected = chunk_signature(&self.key, &self.head, &self.previous, data);
        if !canonical::ct_eq32(&expected, &signature) {
            return Err(ChunkError::BadSignature);
        }
        self.previous = expected;
        self.short_seen = size < MIN_CHUNK;
        self.decoded.extend_from_slice(data);
        let _ = self.pending.split_to(end + 2);
        if size == 0 {
            self.done = true;
            if !self.pending.is_empty() {
                return Err(ChunkError::TrailingBytes);
            }
            return Ok(false);
        }
        Ok(true)
    }
}

/// `<hex size>;chunk-signature=<64 lowercase hex>`: the size (1 to 16 hex digits) and the
/// decoded signature.
fn parse_header(line: &[u8]) -> Result<(u64, [u8; 32]), ChunkError> {
    const EXTENSION: &[u8] = b";chunk-signature=";
    let semicolon = canonical::find_byte(b';', line).ok_or(ChunkError::Malformed)?;
    let (size, rest) = line.split_at(semicolon);
    let signature = rest
        .strip_prefix(EXTENSION)
        .and_then(canonical::decode_hex32)
        .ok_or(ChunkError::Malformed)?;
    if size.is_empty() || size.len() > 16 {
        return Err(ChunkError::Malformed);
    }
    let size = size.iter().try_fold(0u64, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(digit))
    });
    Ok((size.ok_or(ChunkError::Malformed)?, signature))
}

/// The signature of one chunk, chained from `previous`.
fn chunk_signature(key: &SigningKey, head: &[u8], previous: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut sts = Vec::with_capacity(head.len() + 64 * 3 + 2);
    sts.extend_from_slice(head);
    sts.extend_from_slice(canonical::hex32(previous).as_str().as_bytes());
    sts.push(b'\n');
    sts.extend_from_slice(EMPTY_SHA256.as_bytes());
    sts.push(b'\n');
    let digest: [u8; 32] = Sha256::digest(data).into();
    sts.extend_from_slice(canonical::hex32(&digest).as_str().as_bytes());
    key.sign(&sts)
}

/// Encodes `data` as `aws-chunked` with chunks of `chunk_size` bytes (at least
/// [`MIN_CHUNK`]), each signed in the chain that starts at the request's signature `seed`:
/// the client side of [`ChunkedDecoder`].
pub fn encode_chunked(
    key: &SigningKey,
    amz_date: &str,
    scope: &str,
    seed: &[u8; 32],
    data: &[u8],
    chunk_size: usize,
) -> Vec<u8> {
    let head = format!("{CHUNK_ALGORITHM}\n{amz_date}\n{scope}\n").into_bytes();
    let chunk_size = chunk_size.max(MIN_CHUNK);
    let mut out = Vec::with_capacity(data.len() + (data.len() / chunk_size + 2) * 100);
    let mut previous = *seed;
    for chunk in data.chunks(chunk_size).chain(std::iter::once(&[][..])) {
        let signature = chunk_signature(key, &head, &previous, chunk);
        out.extend_from_slice(
            format!(
                "{:x};chunk-signature={}\r\n",
                chunk.len(),
                canonical::hex32(&signature).as_str()
            )
            .as_bytes(),
        );
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        previous = signature;
    }
    out
}

/// The longest aws-chunked body that can carry `decoded` bytes in chunks of at least
/// [`MIN_CHUNK`]: the bound on what is read for a stream.
pub fn max_encoded_len(decoded: u64) -> u64 {
    // Every chunk but the last data chunk and the final one holds at least MIN_CHUNK bytes.
    let chunks = decoded / MIN_CHUNK as u64 + 2;
    decoded.saturating_add(chunks.saturating_mul(MAX_HEADER as u64 + 2))
}

/// The length of [`encode_chunked`]'s output for `len` bytes in chunks of `chunk_size`.
pub fn encoded_len(len: usize, chunk_size: usize) -> usize {
    let chunk_size = chunk_size.max(MIN_CHUNK);
    let framing = |size: usize| format!("{size:x}").len() + ";chunk-signature=".len() + 64 + 4;
    let full = len / chunk_size;
    let rest = len % chunk_size;
    len + full * framing(chunk_size) + if rest > 0 { framing(rest) } else { 0 } + framing(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example of a signed streaming upload ("Signature Calculations for the
    /// Authorization Header: Transferring Payload in Multiple Chunks"): 66,560 bytes of `a` in
    /// a 64 KiB chunk, a 1 KiB chunk and the final one, chained from the request signature.
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const CHUNKS: [(usize, &str); 3] = [
        (
            65536,
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        ),
        (
            1024,
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        ),
        (
            0,
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ),
    ];
    const DATE: &str = "20130524T000000Z";
    const SCOPE: &str = "20130524/us-east-1/s3/aws4_request";

    fn example_key() -> SigningKey {
        SigningKey::derive(
            b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        )
    }

    fn seed() -> [u8; 32] {
        canonical::decode_hex32(SEED.as_bytes()).unwrap()
    }

    fn example_body() -> Vec<u8> {
        let mut body = Vec::new();
        for (size, signature) in CHUNKS {
            body.extend_from_slice(format!("{size:x};chunk-signature={signature}\r\n").as_bytes());
            body.extend(std::iter::repeat_n(b'a', size));
            body.extend_from_slice(b"\r\n");
        }
        body
    }

    fn decode(body: &[u8], expected: u64, step: usize) -> Result<Bytes, ChunkError> {
        let mut decoder = ChunkedDecoder::new(example_key(), DATE, SCOPE, seed(), expected);
        for piece in body.chunks(step.max(1)) {
            decoder.feed(piece)?;
        }
        decoder.finish()
    }

    #[test]
    fn aws_published_example_decodes_in_any_framing() {
        let body = example_body();
        for step in [1, 7, 100, 4096, 65_600, body.len()] {
            let decoded = decode(&body, 66_560, step).unwrap();
            assert_eq!(decoded.len(), 66_560);
            assert!(decoded.iter().all(|&b| b == b'a'));
        }
        // The encoder writes the same bytes, signatures included.
        assert_eq!(
            encode_chunked(
                &example_key(),
                DATE,
                SCOPE,
                &seed(),
                &[b'a'; 66_560],
                65_536
            ),
            body
        );
        assert_eq!(encoded_len(66_560, 65_536), body.len());
    }

    #[test]
    fn tampering_is_refused() {
        let body = example_body();
        let data_at = body.iter().position(|&b| b == b'\n').unwrap() + 1;
        let second = String::from_utf8_lossy(&body).find("400;").unwrap();
        let mut flipped = body.clone();
        flipped[data_at + 100] = b'b';
        let mut second_flipped = body.clone();
        second_flipped[second + 90] = b'b';
        let mut bad_signature = body.clone();
        bad_signature[30] = if body[30] == b'0' { b'1' } else { b'0' };
        let cases: Vec<(&str, Vec<u8>, u64, ChunkError)> = vec![
            (
                "a flipped byte in the first chunk",
                flipped,
                66_560,
                ChunkError::BadSignature,
            ),
            (
                "a flipped byte in the second chunk",
                second_flipped,
                66_560,
                ChunkError::BadSignature,
            ),
            (
                "a changed signature",
                bad_signature,
                66_560,
                ChunkError::BadSignature,
            ),
            (
                "only the first chunk",
                body[..second].to_vec(),
                66_560,
                ChunkError::Truncated,
            ),
            (
                "a longer signed length",
                body.clone(),
                70_000,
                ChunkError::Truncated,
            ),
            (
                "a shorter signed length",
                body.clone(),
                65_536,
                ChunkError::TooLong,
            ),
            (
                "bytes after the end",
                [&body[..], b"x"].concat(),
                66_560,
                ChunkError::TrailingBytes,
            ),
            (
                "a cut body",
                body[..body.len() - 3].to_vec(),
                66_560,
                ChunkError::Truncated,
            ),
        ];
        for (what, body, expected, error) in cases {
            for step in [1, 4096, body.len().max(1)] {
                assert_eq!(
                    decode(&body, expected, step),
                    Err(error),
                    "{what} (step {step})"
                );
            }
        }
        // Chunks reordered: the chain breaks at the first one.
        let first_len = second;
        let reordered = [
            &body[first_len..body.len() - 86],
            &body[..first_len],
            &body[body.len() - 86..],
        ]
        .concat();
        assert_eq!(
            decode(&reordered, 66_560, 4096),
            Err(ChunkError::BadSignature)
        );
    }

    /// Three chunks of the minimum size: a dropped, a duplicated or a swapped chunk breaks the
    /// chain at that chunk; the untouched body decodes.
    #[test]
    fn the_chain_holds_every_chunk_in_place() {
        let data: Vec<u8> = (0..3 * MIN_CHUNK).map(|i| (i % 251) as u8).collect();
        let body = encode_chunked(&example_key(), DATE, SCOPE, &seed(), &data, MIN_CHUNK);
        // Each framed chunk: header (`2000;chunk-signature=<64>\r\n`), data, CRLF.
        let framed = 4 + 17 + 64 + 2 + MIN_CHUNK + 2;
        let chunk = |i: usize| &body[i * framed..(i + 1) * framed];
        let last = &body[3 * framed..];
        let expected = data.len() as u64;
        assert_eq!(
            decode(&body, expected, 1000).unwrap(),
            Bytes::from(data.clone())
        );
        for (what, body, error) in [
            (
                "the middle chunk dropped",
                [chunk(0), chunk(2), last].concat(),
                ChunkError::BadSignature,
            ),
            (
                "the first chunk twice",
                [chunk(0), chunk(0), chunk(1), chunk(2), last].concat(),
                ChunkError::BadSignature,
            ),
            (
                "two chunks swapped",
                [chunk(1), chunk(0), chunk(2), last].concat(),
                ChunkError::BadSignature,
            ),
            (
                "the final chunk dropped",
                [chunk(0), chunk(1), chunk(2)].concat(),
                ChunkError::Truncated,
            ),
        ] {
            assert_eq!(decode(&body, expected, 1000), Err(error), "{what}");
        }
    }

    /// A chunk size past anything addressable, under a huge signed length, is an error, not a
    /// panic; and a decoder that failed stays failed.
    #[test]
    fn hostile_sizes_and_reuse_after_failure() {
        let sig = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
        let header = format!("ffffffffffffffff;chunk-signature={sig}\r\n");
        let mut decoder = ChunkedDecoder::new(example_key(), DATE, SCOPE, seed(), u64::MAX);
        assert_eq!(decoder.feed(header.as_bytes()), Err(ChunkError::TooLong));
        let mut decoder = ChunkedDecoder::new(example_key(), DATE, SCOPE, seed(), 66_560);
        assert_eq!(
            decoder.feed(&[&example_body()[..], b"junk"].concat()),
            Err(ChunkError::TrailingBytes)
        );
        assert_eq!(decoder.feed(b""), Err(ChunkError::TrailingBytes));
        assert_eq!(decoder.finish(), Err(ChunkError::TrailingBytes));
    }

    #[test]
    fn small_chunks_before_the_last_are_refused() {
        let key = example_key();
        let data = vec![b'z'; 3 * MIN_CHUNK];
        // A signer that cuts 1 KiB chunks (below the minimum) is refused at the second chunk.
        let mut body = Vec::new();
        let head = format!("{CHUNK_ALGORITHM}\n{DATE}\n{SCOPE}\n").into_bytes();
        let mut previous = seed();
        for chunk in data.chunks(1024).chain(std::iter::once(&[][..])) {
            let signature = chunk_signature(&key, &head, &previous, chunk);
            body.extend_from_slice(
                format!(
                    "{:x};chunk-signature={}\r\n",
                    chunk.len(),
                    hex::encode(signature)
                )
                .as_bytes(),
            );
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
            previous = signature;
        }
        assert_eq!(
            decode(&body, data.len() as u64, 512),
            Err(ChunkError::ShortChunk)
        );
        // The same data in minimum-size chunks passes.
        let good = encode_chunked(&key, DATE, SCOPE, &seed(), &data, MIN_CHUNK);
        assert_eq!(
            decode(&good, data.len() as u64, 512).unwrap(),
            Bytes::from(data)
        );
    }

    #[test]
    fn headers_are_strict() {
        let sig = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
        for bad in [
            format!(";chunk-signature={sig}"),
            format!("x;chunk-signature={sig}"),
            format!("10000000000000000;chunk-signature={sig}"),
            format!("10000;chunk-signature={}", &sig[..63]),
            format!("10000;chunk-signature={}", sig.to_uppercase()),
            format!("10000 ;chunk-signature={sig}"),
            format!("10000;chunk-signature={sig};x=y"),
            "10000".to_owned(),
        ] {
            assert_eq!(
                parse_header(bad.as_bytes()),
                Err(ChunkError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            parse_header(format!("10000;chunk-signature={sig}").as_bytes())
                .unwrap()
                .0,
            0x10000
        );
        // A header line that never ends is refused once it is longer than any valid one.
        assert_eq!(
            decode(&[b'1'; MAX_HEADER + 1], 10, MAX_HEADER + 1),
            Err(ChunkError::Malformed)
        );
    }
}
