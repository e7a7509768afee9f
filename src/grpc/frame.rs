//! gRPC length-prefixed message framing: the pure bottom layer of the gRPC
//! stack. No I/O: the h2 layer above pushes the DATA chunks it received and
//! takes whole messages out.
//!
//! Every message on a gRPC stream is preceded by a 5-byte prefix
//! (gRPC over HTTP/2, "Length-Prefixed-Message"):
//!
//! ```text
//!  offset  0           1                          5
//!         +-----------+--------------------------+---------------------+
//!         | flag (u8) | length (u32, big-endian) | message (length B)  |
//!         +-----------+--------------------------+---------------------+
//! ```
//!
//! `flag` is 0 for an uncompressed message and 1 for a compressed one.
//! Compression is negotiated per method: only a stream whose service takes
//! compressed messages (OTLP's `LogsService/Export`, see
//! [`super::transport::Service::accepts_gzip`]) makes its decoder
//! [`Decoder::accept_compressed`] and reads [`Decoder::next_frame`]; on
//! every other stream a peer that sets 1 breaks the protocol:
//! [`FrameError::Compressed`], which the caller answers with `INTERNAL` as
//! the gRPC spec asks. Any other flag is [`FrameError::BadFlag`]. The
//! length is the bytes as sent (compressed or not), checked against the
//! maximum like any other. Unlike the rest of wormdb's formats, this one is
//! big-endian: it is gRPC's, not ours.
//!
//! A message may span any number of DATA frames and one DATA frame may hold
//! many messages; [`Decoder`] reassembles them with a bound on the message
//! size and so on the bytes it holds.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Offset of the compressed flag in the prefix.
const FLAG_OFFSET: usize = 0;
/// Offset of the big-endian message length in the prefix.
const LENGTH_OFFSET: usize = FLAG_OFFSET + 1;
/// Bytes of the length-prefix in front of every message.
pub const PREFIX_BYTES: usize = LENGTH_OFFSET + 4;
const _: () = assert!(PREFIX_BYTES == 5, "the gRPC prefix is 5 bytes");

/// The flag of an uncompressed message.
const FLAG_UNCOMPRESSED: u8 = 0;
/// The flag of a message compressed with the stream's `grpc-encoding`.
const FLAG_COMPRESSED: u8 = 1;

/// Appends the prefix and the protobuf encoding of `message` to `out`,
/// reserving room for both first (one allocation at most).
///
/// # Panics
/// If the encoding is longer than `u32::MAX` bytes, which the prefix cannot
/// express. Callers bound their messages by [`crate::limits::MESSAGE_BYTES_MAX`]
/// long before that.
pub fn encode_message(message: &impl prost::Message, out: &mut BytesMut) {
    let length = message.encoded_len();
    out.reserve(PREFIX_BYTES + length);
    let start = out.len();
    out.put_slice(&prefix(length));
    // A BytesMut grows on demand, so encoding into it cannot run out of room.
    message.encode(out).expect("a BytesMut grows to fit the message");
    assert_eq!(out.len() - start, PREFIX_BYTES + length, "prost wrote what encoded_len announced");
}

/// The prefix of an uncompressed message of `len` bytes.
///
/// # Panics
/// If `len` does not fit in the prefix's u32.
pub fn prefix(len: usize) -> [u8; PREFIX_BYTES] {
    let length = u32::try_from(len).expect("a gRPC message is at most u32::MAX bytes");
    let mut bytes = [0; PREFIX_BYTES];
    bytes[FLAG_OFFSET] = FLAG_UNCOMPRESSED;
    bytes[LENGTH_OFFSET..PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    bytes
}

/// One message as it came: its bytes as sent, and whether its prefix
/// flagged them compressed (with the stream's `grpc-encoding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The prefix's flag was 1.
    pub compressed: bool,
    /// The message bytes, still compressed when `compressed`.
    pub bytes: Bytes,
}

/// Why a stream of gRPC messages cannot be decoded. Each one ends the stream:
/// a [`Decoder`] that returned one returns it again from then on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A prefix announced a message longer than the decoder's maximum
    /// (gRPC answers this with `RESOURCE_EXHAUSTED`). Nothing was allocated
    /// for it.
    #[error("gRPC message of {len} bytes is over the maximum of {max} bytes")]
    TooLarge {
        /// The length the prefix announced.
        len: u64,
        /// The decoder's maximum message size.
        max: usize,
    },
    /// A message has the compressed flag set, but the stream takes no
    /// compressed messages (gRPC answers this with `INTERNAL`).
    #[error("compressed gRPC message, but no compression was negotiated")]
    Compressed,
    /// A prefix's flag byte is neither 0 (uncompressed) nor 1 (compressed).
    #[error("gRPC message prefix has flag {0}, expected 0 or 1")]
    BadFlag(u8),
    /// The stream ended inside a message: `buffered` bytes of it (prefix
    /// included) had arrived.
    #[error("gRPC stream ended inside a message, {buffered} bytes of it buffered")]
    Truncated {
        /// Bytes of the partial message, its prefix (or part of it) included.
        buffered: usize,
    },
}

/// Reassembles gRPC messages from DATA chunks of any size.
///
/// - A message whose bytes all arrived in one chunk is returned zero-copy, as
///   a [`Bytes::slice`] of that chunk (its prefix may have been in the chunk
///   before). A message spanning chunks is copied once, into a buffer of its
///   exact size.
/// - Chunks are kept as they arrived until the message they complete is
///   taken out, so the memory held always follows the bytes the peer really
///   sent: a prefix that announces a large message allocates nothing until
///   the whole message is here (no amplification from a 5-byte prefix).
/// - A prefix's length is checked against the maximum as soon as the prefix
///   is complete. So, if the caller drains [`Decoder::next_message`] until
///   `Ok(None)` after every [`Decoder::push`], [`Decoder::buffered_bytes`] is
///   below `PREFIX_BYTES + max_message_bytes` between pushes, and at most
///   that plus the one chunk just pushed. See [`Decoder::buffered_bytes_bound`].
/// - After an error the decoder drops what it holds, ignores further chunks
///   and returns the same error from every call.
#[derive(Debug)]
pub struct Decoder {
    max_message_bytes: usize,
    /// Received chunks not yet returned, none of them empty; the front one
    /// may have been partly consumed (`Bytes::advance`).
    chunks: VecDeque<Bytes>,
    /// Sum of the lengths of `chunks`.
    buffered_bytes: usize,
    /// The length announced by the prefix at the front of `chunks`, once it
    /// arrived and was checked, and whether it flags a compressed message;
    /// the prefix stays in `chunks` until its message is complete.
    message_bytes: Option<(bool, usize)>,
    /// Whether a prefix may flag its message compressed.
    accept_compressed: bool,
    /// The error that ended the stream.
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message_bytes`
    /// (usually [`crate::limits::MESSAGE_BYTES_MAX`]).
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            max_message_bytes,
            chunks: VecDeque::with_capacity(8),
            buffered_bytes: 0,
            message_bytes: None,
            accept_compressed: false,
            failed: None,
        }
    }

    /// Lets prefixes flag their message compressed: take them out with
    /// [`Decoder::next_frame`], which says which are (and decompress them
    /// within the maximum message size).
    pub fn accept_compressed(&mut self) {
        self.accept_compressed = true;
    }

    /// The maximum message size this decoder was made with.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The most bytes the decoder holds between pushes when its caller
    /// drains it after every push: one byte less than a prefix and a message
    /// of the maximum size. Pushing a chunk adds at most its length to that.
    pub fn buffered_bytes_bound(&self) -> usize {
        self.max_message_bytes.saturating_add(PREFIX_BYTES - 1)
    }

    /// Queues one DATA chunk (of any size, empty included). Does no decoding:
    /// call [`Decoder::next_message`] until it returns `Ok(None)` to drain it.
    /// Ignored once the decoder has failed.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() || self.failed.is_some() {
            return;
        }
        self.buffered_bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// The next complete message, which must not be compressed; `Ok(None)`
    /// if more data is needed first.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`], [`FrameError::Compressed`] or
    /// [`FrameError::BadFlag`] as soon as such a prefix is complete (a
    /// compressed one once its message is, when the decoder
    /// [accepts compressed messages](Decoder::accept_compressed)), and the
    /// same error on every later call.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(Message { compressed: false, bytes }) => Ok(Some(bytes)),
            Some(Message { compressed: true, .. }) => Err(self.fail(FrameError::Compressed)),
        }
    }

    /// The next complete message and its flag; `Ok(None)` if more data is
    /// needed first.
    ///
    /// # Errors
    /// As [`Decoder::next_message`], but a compressed message is returned
    /// when the decoder [accepts them](Decoder::accept_compressed).
    pub fn next_frame(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let (compressed, message_bytes) = match self.message_bytes {
            Some(checked) => checked,
            None => {
                if self.buffered_bytes < PREFIX_BYTES {
                    return Ok(None);
                }
                match self.check_prefix() {
                    Ok(checked) => {
                        self.message_bytes = Some(checked);
                        checked
                    }
                    Err(error) => return Err(self.fail(error)),
                }
            }
        };
        // The checked prefix is still buffered, so this does not underflow.
        if self.buffered_bytes - PREFIX_BYTES < message_bytes {
            return Ok(None);
        }
        self.message_bytes = None;
        self.consume(PREFIX_BYTES);
        Ok(Some(Message { compressed, bytes: self.take(message_bytes) }))
    }

    /// Bytes received and not yet returned, including the prefix of the
    /// message being reassembled.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Call at the end of the stream, after draining [`Decoder::next_message`].
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if part of a message is buffered; the error
    /// that ended the stream, if one did.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffered_bytes > 0 {
            return Err(FrameError::Truncated { buffered: self.buffered_bytes });
        }
        Ok(())
    }

    /// Reads and checks the prefix at the front, `(compressed, length)`;
    /// `buffered_bytes >= PREFIX_BYTES`.
    fn check_prefix(&self) -> Result<(bool, usize), FrameError> {
        let mut prefix = [0_u8; PREFIX_BYTES];
        let mut filled = 0;
        // Usually the whole prefix is in the front chunk: one copy.
        for chunk in &self.chunks {
            let count = chunk.len().min(PREFIX_BYTES - filled);
            prefix[filled..filled + count].copy_from_slice(&chunk[..count]);
            filled += count;
            if filled == PREFIX_BYTES {
                break;
            }
        }
        assert_eq!(filled, PREFIX_BYTES, "called with a whole prefix buffered");

        let compressed = match prefix[FLAG_OFFSET] {
            FLAG_UNCOMPRESSED => false,
            FLAG_COMPRESSED if self.accept_compressed => true,
            FLAG_COMPRESSED => return Err(FrameError::Compressed),
            flag => return Err(FrameError::BadFlag(flag)),
        };
        let mut length = [0_u8; 4];
        length.copy_from_slice(&prefix[LENGTH_OFFSET..PREFIX_BYTES]);
        let length = u32::from_be_bytes(length);
        match usize::try_from(length) {
            Ok(length) if length <= self.max_message_bytes => Ok((compressed, length)),
            _ => Err(FrameError::TooLarge { len: u64::from(length), max: self.max_message_bytes }),
        }
    }

    /// Drops the first `count` buffered bytes; `count <= buffered_bytes`.
    fn consume(&mut self, mut count: usize) {
        assert!(count <= self.buffered_bytes);
        self.buffered_bytes -= count;
        while count > 0 {
            let Some(front) = self.chunks.front_mut() else {
                unreachable!("buffered_bytes counts the bytes in chunks");
            };
            if front.len() > count {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.chunks.pop_front();
        }
    }

    /// Takes the first `count` buffered bytes out as one message;
    /// `count <= buffered_bytes`.
    fn take(&mut self, count: usize) -> Bytes {
        assert!(count <= self.buffered_bytes);
        if count == 0 {
            return Bytes::new();
        }
        let Some(front) = self.chunks.front_mut() else {
            unreachable!("buffered_bytes counts the bytes in chunks");
        };
        if front.len() >= count {
            // Within one chunk: zero-copy.
            let message = front.split_to(count);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.buffered_bytes -= count;
            return message;
        }
        // Spanning chunks: one copy into a buffer of the exact size, whose
        // length was checked against the maximum with the prefix.
        let mut message = BytesMut::with_capacity(count);
        let mut missing = count;
        while missing > 0 {
            let Some(front) = self.chunks.front_mut() else {
                unreachable!("buffered_bytes counts the bytes in chunks");
            };
            if front.len() > missing {
                message.put_slice(&front[..missing]);
                front.advance(missing);
                break;
            }
            missing -= front.len();
            message.put_slice(front);
            self.chunks.pop_front();
        }
        self.buffered_bytes -= count;
        debug_assert_eq!(message.len(), count);
        message.freeze()
    }

    /// Ends the stream with `error`: drops the buffered chunks.
    fn fail(&mut self, error: FrameError) -> FrameError {
        self.chunks = VecDeque::new();
        self.buffered_bytes = 0;
        self.message_bytes = None;
        self.failed = Some(error.clone());
        error
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Splits at every byte, spanning and packed messages, the size bound at
    //! max and max + 1, every flag, truncation, zero-copy, and property tests
    //! against a whole-buffer reference decoder.

    use proptest::prelude::*;

    use super::*;
    use crate::proto::LogEntry;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for message in messages {
            bytes.extend_from_slice(&prefix(message.len()));
            bytes.extend_from_slice(message);
        }
        bytes
    }

    /// Pushes each chunk and drains after every push, checking the bound.
    fn decode_chunks(decoder: &mut Decoder, chunks: &[&[u8]]) -> (Vec<Bytes>, Result<(), FrameError>) {
        let mut messages = Vec::new();
        for chunk in chunks {
            decoder.push(Bytes::copy_from_slice(chunk));
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(error) => return (messages, Err(error)),
                }
            }
            assert!(decoder.buffered_bytes() <= decoder.buffered_bytes_bound());
        }
        (messages, decoder.finish())
    }

    /// The same stream decoded in one piece, without the Decoder: the model.
    fn reference_decode(mut bytes: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
        let mut messages = Vec::new();
        loop {
            if bytes.is_empty() {
                return (messages, Ok(()));
            }
            if bytes.len() < PREFIX_BYTES {
                return (messages, Err(FrameError::Truncated { buffered: bytes.len() }));
            }
            match bytes[0] {
                0 => {}
                1 => return (messages, Err(FrameError::Compressed)),
                flag => return (messages, Err(FrameError::BadFlag(flag))),
            }
            let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if len > max {
                return (messages, Err(FrameError::TooLarge { len: len as u64, max }));
            }
            if bytes.len() < PREFIX_BYTES + len {
                return (messages, Err(FrameError::Truncated { buffered: bytes.len() }));
            }
            messages.push(bytes[PREFIX_BYTES..PREFIX_BYTES + len].to_vec());
            bytes = &bytes[PREFIX_BYTES + len..];
        }
    }

    /// `bytes` cut at each of `cuts` (positions, any order, clamped).
    fn split_at_cuts<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|pair| &bytes[pair[0]..pair[1]]).collect()
    }

    fn assert_matches_reference(bytes: &[u8], cuts: &[usize], max: usize) {
        let chunks = split_at_cuts(bytes, cuts);
        let mut decoder = Decoder::new(max);
        let (messages, end) = decode_chunks(&mut decoder, &chunks);
        let (expected, expected_end) = reference_decode(bytes, max);
        let messages: Vec<Vec<u8>> = messages.iter().map(|message| message.to_vec()).collect();
        assert_eq!(messages, expected);
        assert_eq!(end, expected_end);
    }

    #[test]
    fn prefix_layout() {
        assert_eq!(prefix(0), [0, 0, 0, 0, 0]);
        assert_eq!(prefix(0x0102_0304), [0, 1, 2, 3, 4]);
        assert_eq!(prefix(u32::MAX as usize), [0, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    #[should_panic(expected = "u32::MAX")]
    fn prefix_refuses_lengths_over_u32() {
        prefix(u32::MAX as usize + 1);
    }

    #[test]
    fn encode_message_round_trips_through_the_decoder() {
        use prost::Message;
        let entry = LogEntry { seq: 7, body: Bytes::from_static(b"hello"), node_id: 3, ..LogEntry::default() };
        let mut out = BytesMut::from(&b"xy"[..]);
        encode_message(&entry, &mut out);
        encode_message(&LogEntry::default(), &mut out);
        assert_eq!(&out[..2], b"xy");
        assert_eq!(out[2..2 + PREFIX_BYTES], prefix(entry.encoded_len()));

        let mut decoder = Decoder::new(1024);
        decoder.push(out.freeze().slice(2..));
        let first = decoder.next_message().unwrap().unwrap();
        assert_eq!(LogEntry::decode(first).unwrap(), entry);
        let second = decoder.next_message().unwrap().unwrap();
        assert!(second.is_empty(), "a default message encodes to nothing");
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let bytes = framed(&[b"abc", b"", b"defghij", b"k"]);
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let chunks = [&bytes[..first], &bytes[first..second], &bytes[second..]];
                let (messages, end) = decode_chunks(&mut Decoder::new(16), &chunks);
                assert_eq!(messages, [&b"abc"[..], b"", b"defghij", b"k"], "cut at {first} and {second}");
                assert_eq!(end, Ok(()));
            }
        }
    }

    #[test]
    fn one_byte_chunks() {
        let bytes = framed(&[b"abc", b"", b"defghij"]);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut decoder = Decoder::new(16);
        let (messages, end) = decode_chunks(&mut decoder, &chunks);
        assert_eq!(messages, [&b"abc"[..], b"", b"defghij"]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn message_spanning_many_chunks() {
        let body: Vec<u8> = (0..100_000_u32).map(|index| (index * 7) as u8).collect();
        let bytes = framed(&[&body, b"tail"]);
        let chunks: Vec<&[u8]> = bytes.chunks(997).collect();
        assert!(chunks.len() > 100);
        let mut decoder = Decoder::new(body.len());
        let mut messages = Vec::new();
        for chunk in &chunks {
            decoder.push(Bytes::copy_from_slice(chunk));
            while let Some(message) = decoder.next_message().unwrap() {
                messages.push(message);
            }
        }
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0], body);
        assert_eq!(messages[1], &b"tail"[..]);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn zero_length_messages() {
        let bytes = framed(&[b"", b"", b""]);
        let mut decoder = Decoder::new(0);
        decoder.push(Bytes::from(bytes));
        for _ in 0..3 {
            assert_eq!(decoder.next_message(), Ok(Some(Bytes::new())));
        }
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn exactly_max_is_accepted_and_max_plus_one_refused() {
        let max = 1000;
        let body = vec![0x5a; max];
        let mut decoder = Decoder::new(max);
        decoder.push(Bytes::from(framed(&[&body])));
        assert_eq!(decoder.next_message().unwrap().unwrap(), body);

        let mut decoder = Decoder::new(max);
        // Only the prefix: the length is refused before the body arrives.
        decoder.push(Bytes::copy_from_slice(&prefix(max + 1)));
        let refused = FrameError::TooLarge { len: max as u64 + 1, max };
        assert_eq!(decoder.next_message(), Err(refused.clone()));
        assert_eq!(decoder.buffered_bytes(), 0, "a failed decoder holds nothing");
        decoder.push(Bytes::from(vec![0; 100]));
        assert_eq!(decoder.buffered_bytes(), 0, "nor takes more");
        assert_eq!(decoder.next_message(), Err(refused.clone()), "errors are sticky");
        assert_eq!(decoder.finish(), Err(refused));
    }

    #[test]
    fn largest_prefix_length_is_refused() {
        let mut decoder = Decoder::new(crate::limits::MESSAGE_BYTES_MAX);
        decoder.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        let error = decoder.next_message().unwrap_err();
        assert_eq!(error, FrameError::TooLarge { len: u64::from(u32::MAX), max: crate::limits::MESSAGE_BYTES_MAX });
    }

    #[test]
    fn compressed_flag_is_refused() {
        let mut decoder = Decoder::new(16);
        decoder.push(Bytes::from_static(&[1, 0, 0, 0, 2, b'h', b'i']));
        assert_eq!(decoder.next_message(), Err(FrameError::Compressed));
    }

    #[test]
    fn compressed_messages_come_flagged_once_accepted() {
        let bytes = [&[1, 0, 0, 0, 2, b'h', b'i'][..], &framed(&[b"plain"]), &[1, 0, 0, 0, 0]].concat();
        let mut decoder = Decoder::new(16);
        decoder.accept_compressed();
        decoder.push(Bytes::from(bytes));
        let message = |compressed, bytes: &'static [u8]| Message { compressed, bytes: Bytes::from_static(bytes) };
        assert_eq!(decoder.next_frame(), Ok(Some(message(true, b"hi"))));
        assert_eq!(decoder.next_frame(), Ok(Some(message(false, b"plain"))));
        assert_eq!(decoder.next_frame(), Ok(Some(message(true, b""))));
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Ok(()));

        // The size bound holds for compressed messages too, at the prefix.
        let mut decoder = Decoder::new(16);
        decoder.accept_compressed();
        decoder.push(Bytes::from_static(&[1, 0, 0, 0, 17]));
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: 17, max: 16 }));

        // next_message never hands out compressed bytes as if they were plain.
        let mut decoder = Decoder::new(16);
        decoder.accept_compressed();
        decoder.push(Bytes::from_static(&[1, 0, 0, 0, 2, b'h', b'i']));
        assert_eq!(decoder.next_message(), Err(FrameError::Compressed));
        assert_eq!(decoder.next_frame(), Err(FrameError::Compressed), "sticky");
    }

    #[test]
    fn bad_flags_are_refused() {
        for flag in [2, 3, 0x80, 0xff] {
            let mut decoder = Decoder::new(16);
            // A good message first, then the bad prefix split across chunks.
            decoder.push(Bytes::from([&framed(&[b"ok"])[..], &[flag, 0]].concat()));
            assert_eq!(decoder.next_message(), Ok(Some(Bytes::from_static(b"ok"))));
            assert_eq!(decoder.next_message(), Ok(None), "2 bytes of a prefix");
            decoder.push(Bytes::from_static(&[0, 0, 1]));
            assert_eq!(decoder.next_message(), Err(FrameError::BadFlag(flag)));
        }
    }

    #[test]
    fn truncated_at_finish() {
        let bytes = framed(&[b"abcdef"]);
        for length in 1..bytes.len() {
            let mut decoder = Decoder::new(16);
            decoder.push(Bytes::copy_from_slice(&bytes[..length]));
            assert_eq!(decoder.next_message(), Ok(None));
            assert_eq!(decoder.buffered_bytes(), length);
            assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: length }));
        }
        let mut decoder = Decoder::new(16);
        assert_eq!(decoder.finish(), Ok(()), "an empty stream is complete");
        decoder.push(Bytes::new());
        assert_eq!(decoder.finish(), Ok(()), "so is an empty chunk");
    }

    #[test]
    fn several_messages_in_one_chunk_are_zero_copy() {
        let bytes = Bytes::from(framed(&[b"one", b"", b"three", b"four!"]));
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let mut decoder = Decoder::new(16);
        decoder.push(bytes.clone());
        let mut messages = Vec::new();
        while let Some(message) = decoder.next_message().unwrap() {
            messages.push(message);
        }
        assert_eq!(messages, [&b"one"[..], b"", b"three", b"four!"]);
        for message in messages.iter().filter(|message| !message.is_empty()) {
            let start = message.as_ptr() as usize;
            assert!(range.contains(&start) && start + message.len() <= range.end, "shares the chunk's memory");
        }
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn body_in_one_chunk_after_a_split_prefix_is_zero_copy() {
        let mut decoder = Decoder::new(16);
        decoder.push(Bytes::from_static(&[0, 0, 0]));
        decoder.push(Bytes::from_static(&[0, 4]));
        assert_eq!(decoder.next_message(), Ok(None));
        let body = Bytes::from_static(b"body");
        decoder.push(body.clone());
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(message, body);
        assert_eq!(message.as_ptr(), body.as_ptr());
    }

    #[test]
    fn buffering_is_bounded_by_max_plus_one_chunk() {
        let max = 100;
        let mut decoder = Decoder::new(max);
        // A message of max bytes, then the start of the next, fed in chunks of 7.
        let bytes = framed(&[&[1; 100], &[2; 50]]);
        let bytes = &bytes[..bytes.len() - 1];
        let mut largest = 0;
        for chunk in bytes.chunks(7) {
            decoder.push(Bytes::copy_from_slice(chunk));
            largest = largest.max(decoder.buffered_bytes());
            while decoder.next_message().unwrap().is_some() {}
            assert!(decoder.buffered_bytes() <= decoder.buffered_bytes_bound());
        }
        assert_eq!(decoder.buffered_bytes_bound(), max + PREFIX_BYTES - 1);
        assert!(largest <= max + PREFIX_BYTES - 1 + 7);
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: PREFIX_BYTES + 49 }));
    }

    /// A stream of frames whose announced lengths may not match their bodies,
    /// with flags mostly 0: random bytes would nearly always stop at the
    /// first flag.
    fn frame_soup() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            prop::sample::select(vec![0_u8, 0, 0, 0, 0, 1, 2, 0xff]),
            prop_oneof![0_u32..40, Just(u32::MAX), any::<u32>()],
            prop::collection::vec(any::<u8>(), 0..40),
        );
        prop::collection::vec(frame, 0..12).prop_map(|frames| {
            let mut bytes = Vec::new();
            for (flag, length, body) in frames {
                bytes.push(flag);
                bytes.extend_from_slice(&length.to_be_bytes());
                bytes.extend_from_slice(&body);
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_messages_split_anywhere_decode_exactly(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
        ) {
            let bodies: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let bytes = framed(&bodies);
            let chunks = split_at_cuts(&bytes, &cuts);
            let (decoded, end) = decode_chunks(&mut Decoder::new(300), &chunks);
            prop_assert_eq!(decoded, messages);
            prop_assert_eq!(end, Ok(()));
        }

        #[test]
        fn random_bytes_match_the_reference(
            bytes in prop::collection::vec(prop::sample::select(vec![0_u8, 0, 0, 1, 2, 3, 0x7f, 0xff]), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in 0_usize..64,
        ) {
            assert_matches_reference(&bytes, &cuts, max);
        }

        #[test]
        fn frame_soup_matches_the_reference(
            bytes in frame_soup(),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in 0_usize..64,
        ) {
            assert_matches_reference(&bytes, &cuts, max);
        }
    }
}
