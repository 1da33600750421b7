//! RecordIO, the framing of Mesos' HTTP event streams: each record is its length in bytes as
//! decimal ASCII, a newline, then the record (`12\n{"type":"A"}`). The decoder is incremental
//! (bytes arrive in arbitrary chunks), bounded, and returns errors instead of panicking.

use bytes::{Buf, Bytes, BytesMut};

/// The default bound on one record.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// A length prefix longer than this many digits is garbage.
const MAX_LENGTH_DIGITS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("record length prefix {0:?} is not a decimal number")]
    BadLength(String),
    #[error("record of {length} bytes exceeds the maximum of {max}")]
    TooLarge { length: usize, max: usize },
    #[error("stream ended inside a record ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Frames one record.
pub fn encode(record: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    Bytes::from(out)
}

/// An incremental decoder.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buffer: BytesMut::new(),
            max: MAX_RECORD_BYTES,
        }
    }
}

impl Decoder {
    pub fn with_max(max: usize) -> Self {
        Decoder {
            buffer: BytesMut::new(),
            max,
        }
    }

    /// Adds bytes that arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete record, if there is one.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let Some(newline) = self
            .buffer
            .iter()
            .take(MAX_LENGTH_DIGITS + 1)
            .position(|b| *b == b'\n')
        else {
            if self.buffer.len() > MAX_LENGTH_DIGITS {
                return Err(RecordIoError::BadLength(
                    String::from_utf8_lossy(&self.buffer[..MAX_LENGTH_DIGITS]).into_owned(),
                ));
            }
            return Ok(None);
        };
        let prefix = &self.buffer[..newline];
        let text = std::str::from_utf8(prefix)
            .map_err(|_| RecordIoError::BadLength(String::from_utf8_lossy(prefix).into_owned()))?;
        let length: usize = text
            .trim()
            .parse()
            .map_err(|_| RecordIoError::BadLength(text.to_string()))?;
        if length > self.max {
            return Err(RecordIoError::TooLarge {
                length,
                max: self.max,
            });
        }
        if self.buffer.len() < newline + 1 + length {
            return Ok(None);
        }
        self.buffer.advance(newline + 1);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }

    /// At the end of the stream: an error if a record was cut short.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(RecordIoError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_in_any_chunking() {
        let records = [&b"{\"type\":\"HEARTBEAT\"}"[..], b"", b"x\ny"];
        let wire: Vec<u8> = records.iter().flat_map(|r| encode(r).to_vec()).collect();
        for chunk in 1..wire.len() {
            let mut decoder = Decoder::default();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.feed(piece);
                while let Some(record) = decoder.next_record().unwrap() {
                    out.push(record);
                }
            }
            assert_eq!(
                out,
                records
                    .iter()
                    .map(|r| Bytes::copy_from_slice(r))
                    .collect::<Vec<_>>()
            );
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn bad_prefixes_and_sizes_are_errors() {
        let mut decoder = Decoder::with_max(10);
        decoder.feed(b"11\n");
        assert_eq!(
            decoder.next_record(),
            Err(RecordIoError::TooLarge {
                length: 11,
                max: 10
            })
        );
        let mut decoder = Decoder::default();
        decoder.feed(b"1x\n");
        assert_eq!(
            decoder.next_record(),
            Err(RecordIoError::BadLength("1x".into()))
        );
        let mut decoder = Decoder::default();
        decoder.feed(&[b'9'; 30]);
        assert!(decoder.next_record().is_err());
        let mut decoder = Decoder::default();
        decoder.feed(b"5\nab");
        assert_eq!(decoder.next_record(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(RecordIoError::Truncated { buffered: 4 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = Decoder::with_max(64);
            decoder.feed(&bytes);
            while let Ok(Some(_)) = decoder.next_record() {}
        }
    }
}
