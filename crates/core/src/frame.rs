//! The node-to-node frame codec.
//!
//! On the wire a frame is a 4-byte big-endian length followed by that many bytes of payload. The
//! payload is an envelope: one version byte, then the message as JSON (version 1) or a kind byte and
//! caller-encoded bytes (version 2). Frames longer than the
//! codec's maximum are refused before any of their bytes are buffered, and every decoding problem
//! is an error value: nothing a peer sends can make the decoder panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// The default bound on one frame's payload.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

const LENGTH_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the maximum of {max} bytes")]
    TooLarge { length: usize, max: usize },
    #[error("frame has envelope version {found}, expected {ENVELOPE_VERSION}")]
    UnsupportedVersion { found: u8 },
    #[error("empty frame: expected a version byte")]
    Empty,
    #[error("frame body is not a valid message: {0}")]
    Malformed(String),
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Length-delimited frames with a size limit (a `tokio_util` codec).
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl FrameCodec {
    pub fn with_max(max_frame_bytes: usize) -> Self {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = src.get(..LENGTH_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if length > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                length,
                max: self.max_frame_bytes,
            });
        }
        if src.len() < LENGTH_BYTES + length {
            src.reserve(LENGTH_BYTES + length - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_BYTES);
        Ok(Some(src.split_to(length).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.len() > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                length: frame.len(),
                max: self.max_frame_bytes,
            });
        }
        dst.reserve(LENGTH_BYTES + frame.len());
        dst.put_u32(frame.len() as u32);
        dst.put_slice(&frame);
        Ok(())
    }
}

/// The envelope version of binary frames: a kind byte, then bytes the caller encodes itself (for
/// payloads such as raft messages that already have an encoding).
pub const BINARY_ENVELOPE_VERSION: u8 = 2;

/// Wraps already-encoded bytes of a caller-defined `kind` in the binary envelope.
pub fn encode_binary(kind: u8, body: &[u8]) -> Bytes {
    let mut payload = Vec::with_capacity(body.len() + 2);
    payload.push(BINARY_ENVELOPE_VERSION);
    payload.push(kind);
    payload.extend_from_slice(body);
    Bytes::from(payload)
}

/// Opens a binary envelope: the kind byte and the body.
pub fn decode_binary(frame: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    match frame {
        [] => Err(FrameError::Empty),
        [BINARY_ENVELOPE_VERSION, kind, body @ ..] => Ok((*kind, body)),
        [BINARY_ENVELOPE_VERSION] => Err(FrameError::Malformed(
            "binary frame without a kind byte".into(),
        )),
        [version, ..] => Err(FrameError::UnsupportedVersion { found: *version }),
    }
}

/// Wraps a message in the current envelope.
pub fn encode_message<T: Serialize>(message: &T) -> Result<Bytes, FrameError> {
    let mut payload = vec![ENVELOPE_VERSION];
    serde_json::to_writer(&mut payload, message)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(Bytes::from(payload))
}

/// Opens an envelope and decodes the message inside.
pub fn decode_message<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    if version != ENVELOPE_VERSION {
        return Err(FrameError::UnsupportedVersion { found: version });
    }
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// One framed exchange that did not happen within its deadline, or broke.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("nothing within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the connection closed")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<ExchangeError> for std::io::Error {
    fn from(error: ExchangeError) -> std::io::Error {
        use std::io::{Error, ErrorKind};
        match error {
            ExchangeError::TimedOut(_) => Error::new(ErrorKind::TimedOut, error.to_string()),
            ExchangeError::Closed => Error::new(ErrorKind::ConnectionAborted, error.to_string()),
            ExchangeError::Frame(FrameError::Io(error)) => error,
            ExchangeError::Frame(other) => Error::other(other.to_string()),
        }
    }
}

/// Sends `message` as one frame on `frames`, unless that takes longer than `within`.
pub async fn send_within<T: Serialize, C>(
    frames: &mut tokio_util::codec::Framed<C, FrameCodec>,
    message: &T,
    within: std::time::Duration,
) -> Result<(), ExchangeError>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt as _;
    let frame = encode_message(message)?;
    match tokio::time::timeout(within, frames.send(frame)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(ExchangeError::TimedOut(within)),
    }
}

/// The next frame on `frames` as a `T`, unless none comes within `within`.
pub async fn next_within<T: DeserializeOwned, C>(
    frames: &mut tokio_util::codec::Framed<C, FrameCodec>,
    within: std::time::Duration,
) -> Result<T, ExchangeError>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    match tokio::time::timeout(within, frames.next()).await {
        Ok(Some(frame)) => Ok(decode_message(&frame?)?),
        Ok(None) => Err(ExchangeError::Closed),
        Err(_) => Err(ExchangeError::TimedOut(within)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[tokio::test(start_paused = true)]
    async fn exchanges_within_a_deadline_say_what_went_wrong() {
        use std::time::Duration;
        use tokio_util::codec::Framed;
        let (a, b) = tokio::io::duplex(1024);
        let (mut a, mut b) = (
            Framed::new(a, FrameCodec::default()),
            Framed::new(b, FrameCodec::default()),
        );
        let second = Duration::from_secs(1);
        send_within(&mut a, &vec![1u8, 2], second).await.unwrap();
        assert_eq!(
            next_within::<Vec<u8>, _>(&mut b, second).await.unwrap(),
            vec![1, 2]
        );
        // Nothing comes: timed out (paused time runs ahead).
        let waited = next_within::<Vec<u8>, _>(&mut b, second).await.unwrap_err();
        assert!(matches!(waited, ExchangeError::TimedOut(_)), "{waited}");
        assert_eq!(
            std::io::Error::from(waited).kind(),
            std::io::ErrorKind::TimedOut
        );
        // Something else than expected: a frame error; then the other side goes.
        send_within(&mut a, &"text", second).await.unwrap();
        let wrong = next_within::<Vec<u8>, _>(&mut b, second).await.unwrap_err();
        assert!(
            matches!(wrong, ExchangeError::Frame(FrameError::Malformed(_))),
            "{wrong}"
        );
        drop(a);
        let closed = next_within::<Vec<u8>, _>(&mut b, second).await.unwrap_err();
        assert!(matches!(closed, ExchangeError::Closed), "{closed}");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        from: String,
        seq: u64,
    }

    fn frames(bytes: &[u8], codec: &mut FrameCodec) -> Result<Vec<Bytes>, FrameError> {
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buffer)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn message_round_trip_through_frames() {
        let ping = Ping {
            from: "agent-1".into(),
            seq: 9,
        };
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        codec
            .encode(encode_message(&ping).unwrap(), &mut wire)
            .unwrap();
        codec
            .encode(encode_message(&ping).unwrap(), &mut wire)
            .unwrap();
        let decoded = frames(&wire, &mut codec).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decode_message::<Ping>(&decoded[1]).unwrap(), ping);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut codec = FrameCodec::with_max(16);
        let mut wire = BytesMut::from(&[0u8, 0, 0, 17][..]);
        let err = codec.decode(&mut wire).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    length: 17,
                    max: 16
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_frame_is_an_error_at_eof() {
        let err = frames(&[0, 0, 0, 5, 1, 2], &mut FrameCodec::default()).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { buffered: 6 }),
            "{err}"
        );
    }

    #[test]
    fn bad_envelopes_are_errors() {
        assert!(matches!(
            decode_message::<Ping>(&[]),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            decode_message::<Ping>(&[2, b'{', b'}']),
            Err(FrameError::UnsupportedVersion { found: 2 })
        ));
        let err = decode_message::<Ping>(&[1, b'{', b'}']).unwrap_err();
        assert!(err.to_string().contains("missing field `from`"), "{err}");
    }

    #[test]
    fn binary_envelope_round_trip() {
        let frame = encode_binary(7, b"raw");
        assert_eq!(decode_binary(&frame).unwrap(), (7, &b"raw"[..]));
        assert!(matches!(decode_binary(&[2]), Err(FrameError::Malformed(_))));
        assert!(matches!(
            decode_binary(&encode_message(&1u8).unwrap()),
            Err(FrameError::UnsupportedVersion { found: 1 })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::with_max(64);
            if let Ok(found) = frames(&bytes, &mut codec) {
                for frame in found {
                    let _ = decode_message::<Ping>(&frame);
                }
            }
        }
    }
}
