//! Framing on a stream: the async readers and writers over `wire::frame`'s codec. Every read here
//! is bounded in size (the codec refuses a length before it is allocated); callers bound it in
//! time.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use wire::frame::{encode_header, verify, BodyCheck, BodyTally, FrameError};
use wire::message::ImageMeta;

/// Writes one length-prefixed CBOR header.
pub async fn write_header<W, T>(writer: &mut W, header: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buffer = encode_header(header)?;
    writer.write_all(&buffer).await?;
    Ok(())
}

/// Reads one length-prefixed CBOR header, refusing an oversized length before allocating.
pub async fn read_header<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(error),
        })?;
    let mut buffer = vec![0u8; wire::frame::header_length(prefix)?];
    reader
        .read_exact(&mut buffer)
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(error),
        })?;
    wire::frame::decode_header(&buffer)
}

/// Reads exactly `meta.size` body bytes, checks that nothing follows, and verifies the digest.
/// Bytes are only returned when they match `meta.digest`.
pub async fn read_body<R>(reader: &mut R, meta: &ImageMeta) -> Result<Bytes, FrameError>
where
    R: AsyncRead + Unpin,
{
    let expected = wire::frame::body_length(meta)?;
    let mut body = BytesMut::with_capacity(expected);
    while body.len() < expected {
        // Never let a read grow the buffer past the announced size.
        let mut limited = (&mut *reader).take((expected - body.len()) as u64);
        let read = limited.read_buf(&mut body).await?;
        if read == 0 {
            return Err(FrameError::BodyTruncated {
                received: body.len() as u64,
                expected: meta.size,
            });
        }
    }
    refuse_trailing(reader, meta).await?;
    let body = body.freeze();
    verify(meta, &body)?;
    Ok(body)
}

/// Fails unless the stream ends where the announced body does.
async fn refuse_trailing<R>(reader: &mut R, meta: &ImageMeta) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut probe = [0u8; 1];
    if reader.read(&mut probe).await? != 0 {
        return Err(FrameError::BodyTooLong {
            expected: meta.size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::limits::MAX_HEADER_BYTES;
    use wire::message::{Request, Response};
    use wire::{Digest, ImageId};

    fn meta_for(body: &[u8]) -> ImageMeta {
        ImageMeta {
            id: ImageId(7),
            size: body.len() as u64,
            content_type: "image/png".into(),
            digest: Digest::of(body),
        }
    }

    #[tokio::test]
    async fn header_round_trips() {
        let request = Request::GetImage { id: ImageId(123) };
        let bytes = encode_header(&request).unwrap();
        let decoded: Request = read_header(&mut bytes.as_slice()).await.unwrap();
        assert_eq!(decoded, request);
    }

    #[tokio::test]
    async fn oversized_header_is_refused_before_allocation() {
        let mut bytes = (MAX_HEADER_BYTES + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let error = read_header::<_, Request>(&mut bytes.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::HeaderTooLarge(_)), "{error}");
    }

    #[tokio::test]
    async fn garbage_header_is_malformed_not_a_panic() {
        let mut bytes = 8u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0x13, 0x00, 0xba, 0xad, 0xf0, 0x0d, 0x99]);
        let error = read_header::<_, Response>(&mut bytes.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");
    }

    #[tokio::test]
    async fn truncated_header_is_reported() {
        let bytes = encode_header(&Request::Status).unwrap();
        let cut = &bytes[..bytes.len() - 1];
        let error = read_header::<_, Request>(&mut &cut[..]).await.unwrap_err();
        assert!(matches!(error, FrameError::Truncated), "{error}");
    }

    #[tokio::test]
    async fn body_is_verified_against_its_digest() {
        let body = b"not really a png".to_vec();
        let meta = meta_for(&body);
        let read = read_body(&mut body.as_slice(), &meta).await.unwrap();
        assert_eq!(&read[..], &body[..]);

        let mut corrupted = body.clone();
        corrupted[3] ^= 0x40;
        let error = read_body(&mut corrupted.as_slice(), &meta)
            .await
            .unwrap_err();
        assert!(
            matches!(error, FrameError::DigestMismatch { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn short_and_long_bodies_are_refused() {
        let body = vec![1u8; 1000];
        let meta = meta_for(&body);
        let error = read_body(&mut &body[..999], &meta).await.unwrap_err();
        assert!(matches!(error, FrameError::BodyTruncated { .. }), "{error}");
        let mut long = body.clone();
        long.push(0);
        let error = read_body(&mut long.as_slice(), &meta).await.unwrap_err();
        assert!(matches!(error, FrameError::BodyTooLong { .. }), "{error}");
    }

    #[tokio::test]
    async fn empty_body_round_trips() {
        let meta = meta_for(b"");
        let read = read_body(&mut &b""[..], &meta).await.unwrap();
        assert!(read.is_empty());
    }
}
