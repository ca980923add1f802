//! The frame codec, without IO: a big-endian `u32` length, that many bytes of CBOR header, then
//! for images exactly `size` raw bytes. Bodies are never CBOR-encoded, so cached `Bytes` go to the
//! stream without a copy. The async readers over QUIC streams are `net::frame`; every check on
//! untrusted bytes lives here so it is tested (and fuzzed) without a network.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ids::Digest;
use crate::limits::{MAX_HEADER_BYTES, MAX_IMAGE_BYTES, MAX_REFUSAL_CHARS};
use crate::message::ImageMeta;

/// A framing failure. Each one ends the stream; none of them ends the connection or server.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream closed before a complete header arrived")]
    Truncated,
    #[error("header of {0} bytes exceeds the limit of {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge(u32),
    /// The header's bytes are not a message of this protocol; the reason is a plain
    /// sentence (see [`describe_decode_error`]), never the decoder's debug text.
    #[error("the header is not a valid Flotilla message: {0}")]
    Malformed(String),
    #[error("body of {0} bytes exceeds the limit of {MAX_IMAGE_BYTES} bytes")]
    BodyTooLarge(u64),
    #[error("body ended after {received} of {expected} bytes")]
    BodyTruncated { received: u64, expected: u64 },
    #[error("body is longer than the {expected} bytes announced")]
    BodyTooLong { expected: u64 },
    #[error("digest mismatch for image {id}: expected {expected}, got {actual}")]
    DigestMismatch {
        id: u64,
        expected: Digest,
        actual: Digest,
    },
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `header` as CBOR behind its length prefix, in one buffer.
pub fn encode_header<T: Serialize>(header: &T) -> Result<Vec<u8>, FrameError> {
    let mut buffer = vec![0u8; 4];
    ciborium::into_writer(header, &mut buffer)
        .map_err(|error| FrameError::Malformed(describe_encode_error(error)))?;
    let length = (buffer.len() - 4) as u32;
    if length > MAX_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(length));
    }
    buffer[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buffer)
}

/// Reads a header's length prefix, refusing anything over [`MAX_HEADER_BYTES`] before a byte
/// of the header is allocated.
pub fn header_length(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(prefix);
    if length > MAX_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(length));
    }
    Ok(length as usize)
}

/// Decodes a CBOR header (the bytes after the length prefix).
pub fn decode_header<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    ciborium::from_reader(bytes)
        .map_err(|error| FrameError::Malformed(describe_decode_error(error)))
}

/// A CBOR decoding failure as a plain sentence. ciborium's `Display` is its `Debug`
/// (`Semantic(None, "…")`), which must not reach an error reply or a terminal.
pub fn describe_decode_error<E>(error: ciborium::de::Error<E>) -> String {
    use ciborium::de::Error;
    match error {
        Error::Io(_) => "it ends in the middle of a value".to_string(),
        Error::Syntax(offset) => format!("byte {offset} is not valid CBOR"),
        Error::Semantic(Some(offset), reason) => printable(&format!("{reason} (at byte {offset})")),
        Error::Semantic(None, reason) => printable(&reason),
        Error::RecursionLimitExceeded => "its values are nested too deeply".to_string(),
    }
}

/// A decoder's reason made fit for one line of text: it may quote the refused bytes (serde
/// names an unknown variant), so control characters are escaped and it is cut to
/// [`MAX_REFUSAL_CHARS`].
fn printable(reason: &str) -> String {
    let mut escaped = String::with_capacity(reason.len());
    for character in reason.chars() {
        if character.is_control() {
            escaped.extend(character.escape_default());
        } else {
            escaped.push(character);
        }
    }
    if escaped.chars().count() <= MAX_REFUSAL_CHARS {
        return escaped;
    }
    let mut line: String = escaped.chars().take(MAX_REFUSAL_CHARS - 1).collect();
    line.push('…');
    line
}

/// A CBOR encoding failure as a plain sentence (see [`describe_decode_error`]).
pub fn describe_encode_error<E: std::fmt::Display>(error: ciborium::ser::Error<E>) -> String {
    match error {
        ciborium::ser::Error::Io(error) => format!("it could not be written: {error}"),
        ciborium::ser::Error::Value(reason) => reason,
    }
}

/// Decodes one whole frame held in memory: the length prefix and exactly that many header
/// bytes, nothing more.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (prefix, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(FrameError::Truncated)?;
    let length = header_length(*prefix)?;
    match rest.len().cmp(&length) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Greater => Err(FrameError::Malformed(format!(
            "{} bytes after a {length}-byte header",
            rest.len() - length
        ))),
        std::cmp::Ordering::Equal => decode_header(rest),
    }
}

/// Refuses a body size over [`MAX_IMAGE_BYTES`] before anything is allocated for it.
pub fn body_length(meta: &ImageMeta) -> Result<usize, FrameError> {
    if meta.size > MAX_IMAGE_BYTES {
        return Err(FrameError::BodyTooLarge(meta.size));
    }
    Ok(meta.size as usize)
}

/// Checks `body` against the size and digest in `meta`.
pub fn verify(meta: &ImageMeta, body: &[u8]) -> Result<(), FrameError> {
    if body.len() as u64 != meta.size {
        return Err(FrameError::BodyTruncated {
            received: body.len() as u64,
            expected: meta.size,
        });
    }
    let actual = Digest::of(body);
    if actual != meta.digest {
        return Err(FrameError::DigestMismatch {
            id: meta.id.0,
            expected: meta.digest,
            actual,
        });
    }
    Ok(())
}

/// What a reader that does not keep a body checks of it ([`BodyTally`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// The size and the signed SHA-256 digest, as [`verify`] checks.
    Digest,
    /// The size only, as an HTTP load generator such as wrk checks. Hashing is most of a
    /// reader's work on a hit, so a load generator that hashes every body measures its own
    /// core rather than the server's.
    Size,
}

/// Checks a body fed in pieces, as they arrive, against the size (and, with
/// [`BodyCheck::Digest`], the digest) in its metadata, without holding it.
pub struct BodyTally<'m> {
    meta: &'m ImageMeta,
    received: u64,
    digest: Option<crate::DigestBuilder>,
}

impl<'m> BodyTally<'m> {
    /// Refuses a size over [`MAX_IMAGE_BYTES`] before a byte is read.
    pub fn new(meta: &'m ImageMeta, check: BodyCheck) -> Result<BodyTally<'m>, FrameError> {
        body_length(meta)?;
        Ok(BodyTally {
            meta,
            received: 0,
            digest: (check == BodyCheck::Digest).then(Digest::incremental),
        })
    }

    /// The next piece; refuses one that runs past the announced size.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), FrameError> {
        self.received += piece.len() as u64;
        if self.received > self.meta.size {
            return Err(FrameError::BodyTooLong {
                expected: self.meta.size,
            });
        }
        if let Some(digest) = &mut self.digest {
            digest.update(piece);
        }
        Ok(())
    }

    /// At the end of the stream: the bytes received, if the body was whole and matched.
    pub fn finish(self) -> Result<u64, FrameError> {
        if self.received < self.meta.size {
            return Err(FrameError::BodyTruncated {
                received: self.received,
                expected: self.meta.size,
            });
        }
        if let Some(digest) = self.digest {
            let actual = digest.finish();
            if actual != self.meta.digest {
                return Err(FrameError::DigestMismatch {
                    id: self.meta.id.0,
                    expected: self.meta.digest,
                    actual,
                });
            }
        }
        Ok(self.received)
    }
}

/// Stream reset code: the reader took the body too slowly (or not at all) and the sender gave
/// up on it ([`crate::limits::SEND_STALL_TIMEOUT`], [`crate::limits::REPLY_SEND_DEADLINE`]).
pub const RESET_STALLED: u32 = 1;

/// Stream reset code: the sender found, while streaming, that its source no longer matches the
/// digest it announced, and withheld the rest of the body.
pub const RESET_CORRUPT: u32 = 2;

/// Stream reset code: the sender could not produce the rest of the body (a read failed).
pub const RESET_FAILED: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ImageId;
    use crate::message::{Request, Response};

    fn meta_for(body: &[u8]) -> ImageMeta {
        ImageMeta {
            id: ImageId(7),
            size: body.len() as u64,
            content_type: "image/png".into(),
            digest: Digest::of(body),
        }
    }

    #[test]
    fn header_round_trips() {
        let request = Request::GetImage { id: ImageId(123) };
        let bytes = encode_header(&request).unwrap();
        assert_eq!(decode_frame::<Request>(&bytes).unwrap(), request);
    }

    /// The exact bytes of two requests, as `tests/quic-peer/peer.py` writes them by hand
    /// (serde's externally tagged enums: a unit variant is its name as a text string, a
    /// struct variant a one-entry map from its name to a map of its fields). A change here
    /// breaks that independent peer; update both together.
    #[test]
    fn request_encoding_is_what_the_python_peer_sends() {
        let hex = |bytes: Vec<u8>| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        assert_eq!(
            hex(encode_header(&Request::GetImage { id: ImageId(123) }).unwrap()),
            "00000010a168476574496d616765a1626964187b"
        );
        assert_eq!(
            hex(encode_header(&Request::Ping).unwrap()),
            "000000056450696e67"
        );
    }

    #[test]
    fn oversized_header_is_refused_before_allocation() {
        let mut bytes = (MAX_HEADER_BYTES + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let error = decode_frame::<Request>(&bytes).unwrap_err();
        assert!(matches!(error, FrameError::HeaderTooLarge(_)), "{error}");
    }

    #[test]
    fn garbage_header_is_malformed_not_a_panic() {
        let mut bytes = 8u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0x13, 0x00, 0xba, 0xad, 0xf0, 0x0d, 0x99]);
        let error = decode_frame::<Response>(&bytes).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");
    }

    #[test]
    fn malformed_headers_are_described_in_plain_words() {
        let mut wrong_shape = Vec::new();
        ciborium::into_writer(&("not", "a", "request"), &mut wrong_shape).unwrap();
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("wrong shape", wrong_shape, "expected enum"),
            (
                "reserved cbor",
                vec![0x1c, 0x00],
                "byte 0 is not valid CBOR",
            ),
            (
                "cut short",
                vec![0xa1, 0x68, b'G', b'e'],
                "it ends in the middle of a value",
            ),
            (
                "garbage",
                vec![0xff, 0x13, 0x00, 0xba],
                "invalid type: break",
            ),
        ];
        for (what, cbor, says) in cases {
            let message = decode_header::<Request>(&cbor).unwrap_err().to_string();
            assert!(
                message.starts_with("the header is not a valid Flotilla message: ")
                    && message.contains(says),
                "{what}: {message}"
            );
            for debug in ["Semantic(", "Syntax(", "Io(", "Some(", "None"] {
                assert!(!message.contains(debug), "{what}: {message}");
            }
        }
    }

    #[test]
    fn a_quoted_variant_is_one_printable_bounded_line() {
        let mut cbor = Vec::new();
        ciborium::into_writer(&"Heart\0\nbeat\u{1b}[2J", &mut cbor).unwrap();
        let message = decode_header::<crate::election::ElectionKind>(&cbor)
            .unwrap_err()
            .to_string();
        assert!(message.contains(r"Heart\u{0}\nbeat\u{1b}[2J"), "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
        let mut long = Vec::new();
        ciborium::into_writer(&"x".repeat(1_000), &mut long).unwrap();
        let error = decode_header::<crate::election::ElectionKind>(&long).unwrap_err();
        let FrameError::Malformed(reason) = error else {
            panic!("not malformed");
        };
        assert_eq!(reason.chars().count(), MAX_REFUSAL_CHARS, "{reason}");
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn truncated_and_trailing_frames_are_refused() {
        let bytes = encode_header(&Request::Status).unwrap();
        let error = decode_frame::<Request>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(error, FrameError::Truncated), "{error}");
        let error = decode_frame::<Request>(&bytes[..3]).unwrap_err();
        assert!(matches!(error, FrameError::Truncated), "{error}");
        let mut long = bytes.clone();
        long.push(0);
        let error = decode_frame::<Request>(&long).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");
    }

    #[test]
    fn bodies_are_verified_against_size_and_digest() {
        let body = b"not really a png".to_vec();
        let meta = meta_for(&body);
        verify(&meta, &body).unwrap();
        let mut corrupted = body.clone();
        corrupted[3] ^= 0x40;
        let error = verify(&meta, &corrupted).unwrap_err();
        assert!(
            matches!(error, FrameError::DigestMismatch { .. }),
            "{error}"
        );
        let error = verify(&meta, &body[1..]).unwrap_err();
        assert!(matches!(error, FrameError::BodyTruncated { .. }), "{error}");
    }

    /// Feeds `body` to a tally in pieces of `piece` bytes.
    fn tally(
        meta: &ImageMeta,
        check: BodyCheck,
        body: &[u8],
        piece: usize,
    ) -> Result<u64, FrameError> {
        let mut tally = BodyTally::new(meta, check)?;
        for piece in body.chunks(piece) {
            tally.feed(piece)?;
        }
        tally.finish()
    }

    #[test]
    fn a_tallied_body_is_checked_as_asked() {
        let body: Vec<u8> = (0..10_000u32).map(|n| (n * 7 % 251) as u8).collect();
        let meta = meta_for(&body);
        for piece in [1, 1000, 4096, 20_000] {
            assert_eq!(
                tally(&meta, BodyCheck::Digest, &body, piece).unwrap(),
                10_000
            );
        }
        let mut corrupted = body.clone();
        corrupted[5_000] ^= 1;
        let error = tally(&meta, BodyCheck::Digest, &corrupted, 1000).unwrap_err();
        assert!(
            matches!(error, FrameError::DigestMismatch { .. }),
            "{error}"
        );
        // Size only: a flipped bit passes, a missing or extra byte does not.
        assert_eq!(
            tally(&meta, BodyCheck::Size, &corrupted, 1000).unwrap(),
            10_000
        );
        for check in [BodyCheck::Digest, BodyCheck::Size] {
            let error = tally(&meta, check, &body[..9_999], 1000).unwrap_err();
            assert!(
                matches!(
                    error,
                    FrameError::BodyTruncated {
                        received: 9_999,
                        ..
                    }
                ),
                "{error}"
            );
            let mut long = body.clone();
            long.push(0);
            let error = tally(&meta, check, &long, 1000).unwrap_err();
            assert!(matches!(error, FrameError::BodyTooLong { .. }), "{error}");
        }
        let mut huge = meta.clone();
        huge.size = MAX_IMAGE_BYTES + 1;
        assert!(matches!(
            BodyTally::new(&huge, BodyCheck::Size),
            Err(FrameError::BodyTooLarge(_))
        ));
    }

    #[test]
    fn oversized_bodies_are_refused_from_metadata() {
        let mut meta = meta_for(b"");
        meta.size = MAX_IMAGE_BYTES + 1;
        assert!(matches!(
            body_length(&meta),
            Err(FrameError::BodyTooLarge(_))
        ));
    }
}
