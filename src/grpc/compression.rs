//! gRPC message compression (gRPC's "Compression" document): the
//! `grpc-encoding` a call's messages may be compressed with, and inflating
//! one message within the maximum message size. Pure.
//!
//! Only gzip, and only on the methods whose service asks for it
//! ([`super::transport::Service::accepts_gzip`]): OTLP exporters compress
//! by default, wormdb's own peers never do. The prefix's length (the
//! compressed size) is bounded by the frame decoder; the inflated size is
//! bounded here, inflating in steps and stopping one byte past the limit,
//! so a small message that inflates to gigabytes (a "zip bomb") costs at
//! most the limit.

use bytes::Bytes;

/// Request header naming the encoding of the call's compressed messages.
pub const GRPC_ENCODING: &str = "grpc-encoding";
/// Response header listing the encodings the server takes.
pub const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";
/// What a method that takes compressed messages advertises.
pub const ACCEPTED_ENCODINGS: &str = "gzip";

/// How a call's compressed messages are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// None (no `grpc-encoding`, or `identity`): a message flagged
    /// compressed breaks the protocol.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// The encoding a `grpc-encoding` value names; `None` (no header) is
    /// identity; `Err` holds an encoding wormdb does not read.
    pub fn from_header(value: Option<&[u8]>) -> Result<Encoding, String> {
        match value {
            None | Some(b"identity") => Ok(Encoding::Identity),
            Some(b"gzip") => Ok(Encoding::Gzip),
            Some(other) => Err(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

/// Why a compressed message cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The message is flagged compressed but the call named no encoding.
    #[error("a message is flagged compressed, but the call has no grpc-encoding")]
    NoEncoding,
    /// The bytes are not valid in the encoding.
    #[error("the gzip message is corrupt: {0}")]
    Corrupt(String),
    /// Inflated, the message passes the maximum message size.
    #[error("the gzip message inflates to over the maximum of {max} bytes")]
    TooLarge {
        /// The maximum message size.
        max: usize,
    },
}

/// `message` inflated from `encoding`, refused once it passes `max` bytes.
pub fn decompress(encoding: Encoding, message: &[u8], max: usize) -> Result<Bytes, DecompressError> {
    match encoding {
        Encoding::Identity => Err(DecompressError::NoEncoding),
        Encoding::Gzip => crate::gzip::inflate(message, max).map(Bytes::from).map_err(|error| match error {
            crate::gzip::InflateError::Corrupt(reason) => DecompressError::Corrupt(reason),
            crate::gzip::InflateError::TooLarge { .. } => DecompressError::TooLarge { max },
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        crate::gzip::compress(bytes)
    }

    #[test]
    fn encodings_are_named_exactly() {
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some(b"identity")), Ok(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some(b"gzip")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some(b"snappy")), Err("snappy".to_string()));
        assert_eq!(Encoding::from_header(Some(b"deflate")), Err("deflate".to_string()));
    }

    #[test]
    fn gzip_inflates_up_to_the_maximum_and_not_past_it() {
        let text = b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating\n".repeat(50);
        let compressed = gzip(&text);
        assert_eq!(decompress(Encoding::Gzip, &compressed, text.len()).unwrap(), text);
        assert_eq!(
            decompress(Encoding::Gzip, &compressed, text.len() - 1),
            Err(DecompressError::TooLarge { max: text.len() - 1 })
        );
        assert_eq!(decompress(Encoding::Gzip, &gzip(b""), 0).unwrap(), Bytes::new());
    }

    #[test]
    fn a_bomb_stops_at_the_maximum() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..32 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(decompress(Encoding::Gzip, &bomb, 1 << 20), Err(DecompressError::TooLarge { max: 1 << 20 }));
    }

    #[test]
    fn corrupt_truncated_and_unnegotiated_messages_are_refused() {
        let compressed = gzip(b"a message");
        assert!(matches!(
            decompress(Encoding::Gzip, &compressed[..compressed.len() - 4], 64),
            Err(DecompressError::Corrupt(_))
        ));
        assert!(matches!(decompress(Encoding::Gzip, b"not gzip", 64), Err(DecompressError::Corrupt(_))));
        assert_eq!(decompress(Encoding::Identity, &compressed, 64), Err(DecompressError::NoEncoding));
    }
}
