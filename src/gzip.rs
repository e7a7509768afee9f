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
