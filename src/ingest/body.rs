//! Compressed request bodies: the `Content-Encoding` (or gRPC
//! `grpc-encoding`) a shipper may use, and inflating it within a bound.
//!
//! A compressed body is small on the wire and may be huge inflated (a
//! "zip bomb"): it is inflated in steps and refused as soon as it passes
//! the limit, never inflated whole first.

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As it is.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

/// Why a body could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The encoding is not one wormdb reads (HTTP 415).
    #[error("content encoding {0:?} is not supported: send gzip or identity")]
    UnsupportedEncoding(String),
    /// The compressed bytes are not valid (HTTP 400).
    #[error("the {encoding} body is corrupt: {reason}")]
    Corrupt {
        /// The encoding.
        encoding: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// Inflated, the body passes the limit (HTTP 413).
    #[error("the body inflates to over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// The encoding a `Content-Encoding` or `grpc-encoding` value names;
/// `None` (no header) is identity.
pub fn encoding(value: Option<&str>) -> Result<Encoding, BodyError> {
    match value.map(|value| value.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok(Encoding::Identity),
        Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// Inflates `body` from gzip, refusing it once it passes `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    crate::gzip::inflate(body, limit).map_err(|error| match error {
        crate::gzip::InflateError::Corrupt(reason) => BodyError::Corrupt { encoding: "gzip", reason },
        crate::gzip::InflateError::TooLarge { limit } => BodyError::TooLarge { limit },
    })
}

/// `body` decoded from `encoding`, at most `limit` bytes.
pub fn decode(encoding: Encoding, body: bytes::Bytes, limit: usize) -> Result<bytes::Bytes, BodyError> {
    match encoding {
        Encoding::Identity if body.len() > limit => Err(BodyError::TooLarge { limit }),
        Encoding::Identity => Ok(body),
        Encoding::Gzip => gunzip(&body, limit).map(bytes::Bytes::from),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        crate::gzip::compress(bytes)
    }

    #[test]
    fn encodings_are_named_case_insensitively() {
        assert_eq!(encoding(None), Ok(Encoding::Identity));
        assert_eq!(encoding(Some("identity")), Ok(Encoding::Identity));
        assert_eq!(encoding(Some(" GZIP ")), Ok(Encoding::Gzip));
        assert_eq!(encoding(Some("x-gzip")), Ok(Encoding::Gzip));
        assert!(matches!(encoding(Some("br")), Err(BodyError::UnsupportedEncoding(name)) if name == "br"));
    }

    #[test]
    fn gzip_inflates_within_its_limit() {
        let text = b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure\n".repeat(100);
        let compressed = gzip(&text);
        assert_eq!(gunzip(&compressed, text.len()).unwrap(), text);
        assert_eq!(gunzip(&compressed, text.len() - 1), Err(BodyError::TooLarge { limit: text.len() - 1 }));
    }

    #[test]
    fn a_bomb_is_refused_without_inflating_it_whole() {
        // 1 GiB of zeros compresses to about 1 MiB; it must stop at the limit.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert_eq!(gunzip(&bomb, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn corrupt_and_truncated_gzip_are_refused() {
        let compressed = gzip(b"a line");
        assert!(matches!(gunzip(&compressed[..compressed.len() - 3], 1024), Err(BodyError::Corrupt { .. })));
        assert!(matches!(gunzip(b"not gzip at all", 1024), Err(BodyError::Corrupt { .. })));
        assert_eq!(
            decode(Encoding::Identity, bytes::Bytes::from_static(b"12345"), 4),
            Err(BodyError::TooLarge { limit: 4 })
        );
    }
}
