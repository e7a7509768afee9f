//! gzip (RFC 1952) inflated within a bound, for every place a peer may
//! send compressed bytes: HTTP bodies (`Content-Encoding`) and gRPC
//! messages (`grpc-encoding`). Pure.
//!
//! A compressed input is small on the wire and may be huge inflated (a
//! "zip bomb"): it is inflated in steps and refused one byte past the
//! limit, never inflated whole first.

use std::io::Read;

/// Why gzip bytes could not be inflated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The bytes are not valid gzip (corrupt or truncated).
    #[error("{0}")]
    Corrupt(String),
    /// Inflated, they pass the limit.
    #[error("inflates to over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// `compressed` inflated (every member of a multi-member stream), refused
/// once it passes `limit` bytes.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    // Read one byte past the limit: reaching it means the input is over.
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    decoder.read_to_end(&mut out).map_err(|error| InflateError::Corrupt(error.to_string()))?;
    if out.len() > limit {
        return Err(InflateError::TooLarge { limit });
    }
    Ok(out)
}

/// `bytes` compressed as one gzip member, at the default level: what
/// clients send (the tests' clients, and `wormdb-loadgen`).
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 2), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_compressed_inflates_back_within_its_limit_only() {
        let text = b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block terminating\n"
            .repeat(50);
        let compressed = compress(&text);
        assert!(compressed.len() < text.len() / 4);
        assert_eq!(inflate(&compressed, text.len()).unwrap(), text);
        assert_eq!(inflate(&compressed, text.len() - 1), Err(InflateError::TooLarge { limit: text.len() - 1 }));
        assert!(matches!(inflate(&compressed[..compressed.len() / 2], text.len()), Err(InflateError::Corrupt(_))));
    }
}
