//! Every size, count and queue bound in wormdb, in one place, each with
//! the reason for its value.
//!
//! A length read from disk or from the network is checked against these
//! before anything is allocated for it. Errors that a limit causes name the
//! limit (see [`LimitExceeded`]), so an operator can tell which knob it was.

/// The unit of O_DIRECT alignment and of tail-page packing: the page size
/// of the file systems wormdb runs on (ext4, XFS).
pub const PAGE_BYTES: usize = 4096;

/// How many written batches may wait for their fdatasync at once. With 2 the
/// next batch is written while the previous one syncs; more would only
/// widen what a crash can leave torn (recovery scrubs that much).
pub const UNSYNCED_WRITES_MAX: usize = 2;

/// Size of the fixed block header (`docs/format.md`; the codec asserts that
/// its layout ends here).
pub const BLOCK_HEADER_BYTES: usize = 64;

/// Largest number of bytes one encoded block of `raw_len` payload bytes may
/// take while it is being encoded: the header plus lz4_flex's own bound
/// (about 1.1x plus 20 bytes), which `compress_into` insists on for its
/// output buffer. What is stored is never more than the raw payload.
pub const fn block_encoded_bytes_max(raw_len: usize) -> usize {
    BLOCK_HEADER_BYTES + lz4_flex::block::get_maximum_output_size(raw_len)
}

/// Largest body of one entry, in bytes.
pub const ENTRY_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest number of tags on one entry.
pub const ENTRY_TAGS_MAX: usize = 64;
/// Largest tag key, in bytes. Keys must also be non-empty.
pub const TAG_KEY_BYTES_MAX: usize = 256;
/// Largest tag value, in bytes.
pub const TAG_VALUE_BYTES_MAX: usize = 4096;
/// Most OTLP resource attributes `--otlp-tag-attributes` may name: every
/// one of them and `level` must fit an entry's [`ENTRY_TAGS_MAX`] tags.
pub const OTLP_TAG_ATTRIBUTES_MAX: usize = ENTRY_TAGS_MAX - 1;
/// Largest number of fields on one entry. Fields are not indexed, so they
/// cost no index memory, but every one is parsed when a `field=` predicate
/// scans a block; OTLP resources and Elasticsearch documents commonly carry a
/// few dozen attributes, and 128 leaves room without letting one entry be
/// mostly map framing.
pub const ENTRY_FIELDS_MAX: usize = 128;
/// Largest field key, in bytes, like a tag key. Keys must also be non-empty.
pub const FIELD_KEY_BYTES_MAX: usize = 256;
/// Largest field value, in bytes: larger than a tag value (a field holds an
/// attribute such as a URL or a user agent, not a low-cardinality label),
/// while anything longer belongs in the body.
pub const FIELD_VALUE_BYTES_MAX: usize = 16 * 1024;
/// Largest sum of the key and value bytes of one entry's fields. It keeps
/// the fields of one entry well below its body limit, so
/// [`ENTRY_ENCODED_BYTES_MAX`] (and with it every buffer sized from it)
/// grows by a small fraction only.
pub const ENTRY_FIELDS_BYTES_MAX: usize = 64 * 1024;
/// Largest protobuf encoding of one entry (body, tags, fields and framing).
pub const ENTRY_ENCODED_BYTES_MAX: usize = ENTRY_BODY_BYTES_MAX
    + ENTRY_TAGS_MAX * (TAG_KEY_BYTES_MAX + TAG_VALUE_BYTES_MAX + 16)
    + ENTRY_FIELDS_BYTES_MAX
    + ENTRY_FIELDS_MAX * 16
    + 64;

/// A block is closed once its uncompressed payload reaches this size; it is
/// the unit of compression, checksumming and index postings.
pub const BLOCK_RAW_BYTES_TARGET: usize = 256 * 1024;
/// Largest uncompressed payload of one block. One entry of the largest size
/// always fits in a block of its own.
pub const BLOCK_RAW_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Largest number of entries in one block.
pub const BLOCK_ENTRIES_MAX: usize = 65_536;
/// Largest stored payload of one block. A payload that LZ4 would not shrink
/// is stored uncompressed, so this equals [`BLOCK_RAW_BYTES_MAX`].
pub const BLOCK_STORED_BYTES_MAX: usize = BLOCK_RAW_BYTES_MAX;

/// Largest amount of uncompressed entry data waiting for one group commit on
/// a shard. An append that would pass it is refused with backpressure.
pub const PENDING_RAW_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest number of appends waiting for one group commit on a shard.
pub const PENDING_APPENDS_MAX: usize = 4096;
/// Largest DMA buffer of one group commit, and so the largest extent one
/// write can touch: the rewritten tail page plus every block of the batch
/// at LZ4's worst-case bound, rounded up to whole pages. Blocks close at
/// [`BLOCK_RAW_BYTES_TARGET`], and each append may start one (replicated
/// appends do), which bounds the block count and so the header overhead.
pub const COMMIT_WRITE_BYTES_MAX: usize = 2 * PAGE_BYTES
    + PENDING_RAW_BYTES_MAX * 110 / 100
    + (PENDING_APPENDS_MAX + PENDING_RAW_BYTES_MAX / BLOCK_RAW_BYTES_TARGET + 2) * block_encoded_bytes_max(0);

/// zstd level of the cold rewrite of sealed segments. Measured on the
/// LogHub samples (blocks of 256 KiB as the shard cuts them, one core of
/// the reference machine, `benches/cold_compression.rs`): raw payload
/// bytes per stored byte 7.7x at level 1, 8.1x at 3, 8.6x at 5, 8.9x at 6,
/// 9.1x at 9, against 4.5x for LZ4; compression took about 2.5 CPU-s per GB
/// of raw payload at levels 1 to 4, 6 at 5, 9 at 6 and 16 at 9. Level 3 is
/// past the 7x goal at the cost of levels 1 to 4, and decompresses at
/// 1.3 GB/s or more like every level (readers of cold segments pay that).
pub const COLD_ZSTD_LEVEL: i32 = 3;
/// Raw bytes the cold rewrite compresses between two yields to the shard's
/// executor: about 0.3 ms of zstd at [`COLD_ZSTD_LEVEL`], so the commits of
/// the shard never wait longer than that for the rewrite.
pub const COLD_STEP_BYTES: usize = 64 * 1024;
/// Bytes of rewritten blocks the cold rewrite gathers before it writes them
/// to the new segment file: one DMA write, and the bytes in flight per
/// shard (plus one block, which may be larger).
pub const COLD_WRITE_BYTES: usize = 1024 * 1024;
/// Shares of the cold rewrite's task queue on a shard's executor, against
/// glommio's default of 1000 for every other task (commits, queries,
/// pushes): when they all want the CPU, the rewrite gets about 1/20 of it,
/// and all of it when they are idle.
pub const COLD_TASK_SHARES: usize = 50;
/// Default of `--cold-after`: a sealed segment whose newest entry is older
/// than this is rewritten with zstd. Like Loki's chunk max age (2 h) and
/// the 2 h blocks of Prometheus and Thanos compaction: recent data, which
/// queries read most, stays LZ4 (it decompresses about twice as fast), and
/// a segment is rewritten once, well after it was sealed.
pub const COLD_AFTER_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long the cold rewrite leaves a segment whose rewrite failed (an I/O
/// error, a disk without room for the new file: it needs about 60 % of the
/// old one) before it tries again: long enough not to repeat a failure in a
/// loop, short enough that a disk given room again gets its savings.
pub const COLD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often a shard looks for segments that became old enough for the
/// cold rewrite, besides after each segment roll.
pub const COLD_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Distinct `key=value` pairs indexed per segment. Pairs first seen after the
/// cap is reached are not indexed: blocks from the saturation point on are
/// candidates for any predicate on such a pair and are filtered exactly on
/// read, so results stay correct while memory stays bounded.
pub const INDEX_TAG_VALUES_PER_SEGMENT_MAX: usize = 65_536;
/// Distinct tag sets (the sets of pairs that entries carry: streams)
/// recorded per segment. `wormdb-loadgen --tags 3:100` gives about 200 000
/// per 256 MiB segment (each of 3 tags drawn from 100 values, from a pool of
/// 200 000 entries); this leaves room for five times that. A segment that
/// reaches it records no set from that block on: those blocks fall back to
/// pair postings (see [`crate::index`]), so results stay exact.
pub const INDEX_TAG_SETS_PER_SEGMENT_MAX: usize = 1 << 20;
/// Cells of a segment's tag sets: the pairs of all its sets plus its
/// (block, set) postings, each a u32 in memory while the segment is written
/// (so at most 32 MiB), about 1 to 2 bytes in the file. The shape above
/// needs about 4.3 M (200 000 sets of 3 pairs, each set in about 17 of
/// 4 300 blocks); the cap is twice that. Reaching it saturates the sets as
/// [`INDEX_TAG_SETS_PER_SEGMENT_MAX`] does.
pub const INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX: usize = 1 << 23;
/// Largest persisted segment index file.
pub const INDEX_FILE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Distinct origins `(node, shard)` of replicated entries one shard archives
/// (and keeps a watermark for). An append from one more origin is refused.
pub const ORIGINS_PER_SHARD_MAX: usize = 65_536;
/// Records in the origin table of one index file. Above
/// [`ORIGINS_PER_SHARD_MAX`] because the shard checks that cap against its
/// durable watermarks, so the appends in flight (one pending batch and
/// `UNSYNCED_WRITES_MAX` written ones, each of up to
/// [`PENDING_APPENDS_MAX`] appends with one origin each) may add new origins
/// beyond it.
pub const INDEX_ORIGINS_MAX: usize = 2 * ORIGINS_PER_SHARD_MAX;
const _: () = assert!(ORIGINS_PER_SHARD_MAX + (UNSYNCED_WRITES_MAX + 1) * PENDING_APPENDS_MAX <= INDEX_ORIGINS_MAX);
/// Sealed segment indexes kept loaded per shard (least recently used evicted).
pub const INDEX_CACHE_SEGMENTS_MAX: usize = 16;
/// Estimated heap bytes of the sealed segment indexes kept loaded per shard
/// (least recently used evicted; the most recent one always stays). Word
/// filters are loaded only for word queries and count here once loaded.
///
/// Sized for the shape of issue 19 (`wormdb-loadgen --tags 3:100`, 85 M
/// entries on 2 shards, about 10-12 sealed 256 MiB segments per shard):
/// each segment's index holds about 180 000 tag sets in about 3.7 M (block,
/// set) postings and takes about 22 MiB in memory without its filters and
/// 30 MiB with them (`cargo bench --bench index_streams`); a 3-tag query
/// answers in well under a millisecond per loaded segment but takes tens of
/// milliseconds to load one. Queries visit segments in order, so a cache
/// even slightly smaller than the segments a query needs misses on every
/// one (least recently used is always the next one wanted): 512 MiB keeps
/// 12 such segments with their filters loaded, with room to spare. It is a
/// bound, not a reservation: data with few tag sets takes far less per
/// segment, and a node pays up to this per shard.
pub const INDEX_CACHE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Smallest and largest segment size accepted by configuration. The
/// smallest still holds a batch with the largest entry (see
/// [`pending_raw_bytes_max`]).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// See [`SEGMENT_BYTES_MIN`].
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Default segment size (DESIGN.md `--segment-bytes`).
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// The pending-batch bound of a shard whose segments hold `segment_bytes`:
/// [`PENDING_RAW_BYTES_MAX`], lowered for small segments so that any batch,
/// encoded at its worst case, fits in an empty segment. Without that, a
/// batch that fits no segment would roll forever.
pub const fn pending_raw_bytes_max(segment_bytes: u64) -> usize {
    let overhead = 3 * PAGE_BYTES
        + (PENDING_APPENDS_MAX + PENDING_RAW_BYTES_MAX / BLOCK_RAW_BYTES_TARGET + 2) * block_encoded_bytes_max(0);
    let usable = (segment_bytes as usize).saturating_sub(overhead) / 11 * 10;
    if usable < PENDING_RAW_BYTES_MAX {
        usable
    } else {
        PENDING_RAW_BYTES_MAX
    }
}

const _: () = assert!(pending_raw_bytes_max(SEGMENT_BYTES_MIN) >= ENTRY_ENCODED_BYTES_MAX + 64);

/// Largest gRPC message we accept (and send), in bytes: the length prefix
/// is checked against it before anything is allocated. Four times gRPC's
/// usual 4 MiB default, so that a push batch of many entries travels as one
/// message; senders split larger batches.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
// One entry of the largest size fits a PushBatch on its own (the entry's
// field key and length, follower_id and shard take under 64 bytes).
const _: () = assert!(MESSAGE_BYTES_MAX >= ENTRY_ENCODED_BYTES_MAX + 64);
/// Largest `grpc-message` header value we send, and largest status message
/// we keep from a peer, in bytes: enough for any error we write, small
/// enough that a status never makes a huge header.
pub const STATUS_MESSAGE_BYTES_MAX: usize = 1024;
/// Largest leader address in a not-leader hint (`wormdb-leader-addr`), sent
/// or kept: a DNS name (at most 253 bytes), a colon and a port (5 digits).
/// A longer one is dropped, never cut: a cut address would point elsewhere.
pub const LEADER_HINT_ADDR_BYTES_MAX: usize = 253 + 1 + 5;

/// Bytes of recent commit buffers a shard keeps in memory for readers of
/// recent blocks (a follower's pusher reads what was just committed): about
/// the last second of a busy shard's writes.
pub const RECENT_WRITES_BYTES_MAX: usize = 16 * 1024 * 1024;

/// (follower, shard) pairs one core archives as a leader; more are refused,
/// which bounds the archive state (a few hundred bytes a pair).
pub const ARCHIVE_PAIRS_MAX: usize = 65_536;
/// Raw bytes (bodies and tags) one archive group append may carry: a
/// larger group of queued batches is committed in several appends, in
/// order, stopping at the first failure. Half the pending batch, so an
/// archive group never fills a shard's pending batch alone.
pub const ARCHIVE_GROUP_BYTES_MAX: usize = 8 << 20;
const _: () = assert!(ARCHIVE_GROUP_BYTES_MAX <= PENDING_RAW_BYTES_MAX / 2);
/// Largest number of HTTP request body bytes one core holds at once (read
/// or being read, parsed, waiting for their commit), over all its
/// connections, and the default of `--max-body-bytes-in-flight`. Without
/// it, thousands of connections each sending a body of the
/// 16 MiB default cap could ask one core for 256 GiB. 256 MiB is sixteen
/// bodies of that cap, far more than a shard's pending batch
/// ([`PENDING_RAW_BYTES_MAX`]) needs to stay full, and the same budget a
/// core gives pushed gRPC batches. An ingest over it gets 429 before its
/// body is read.
pub const HTTP_BODY_BYTES_IN_FLIGHT_PER_CORE_MAX: usize = 256 * 1024 * 1024;

/// Largest number of entries one read call returns.
pub const READ_ENTRIES_MAX: usize = 1_000_000;

/// A bound that an input or a file crossed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {actual}, over the limit {name} = {limit}")]
pub struct LimitExceeded {
    /// The name of the constant in this module.
    pub name: &'static str,
    /// What was measured, in words.
    pub what: &'static str,
    /// The measured value.
    pub actual: u64,
    /// The bound.
    pub limit: u64,
}

/// Returns an error naming `name` when `actual > limit`.
pub fn check(name: &'static str, what: &'static str, actual: usize, limit: usize) -> Result<(), LimitExceeded> {
    if actual > limit {
        Err(LimitExceeded { name, what, actual: actual as u64, limit: limit as u64 })
    } else {
        Ok(())
    }
}

/// Largest header block a gRPC peer may send (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
/// gRPC metadata is small; this keeps a hostile peer's HPACK state bounded.
pub const GRPC_HEADER_BYTES_MAX: u32 = 64 * 1024;

// ---------------------------------------------------------------------------
// Front doors: connections, requests, streamed responses.
// ---------------------------------------------------------------------------

/// Listen backlog of each core's sockets: enough for a burst of connects
/// from a fleet of shippers restarting at once.
pub const LISTEN_BACKLOG: i32 = 4096;
/// How long an accept loop waits after a failed accept (EMFILE and
/// friends) before trying again, instead of spinning.
pub const ACCEPT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// Default `--max-connections`: connections one listener (HTTP or gRPC)
/// serves at once over all the node's cores (DESIGN.md section 10); more
/// are closed at accept and counted.
pub const CONNECTIONS_PER_LISTENER_DEFAULT: usize = 10_000;
/// Largest `--max-connections`. Each connection costs a file descriptor, a
/// task and a few KiB of buffers while idle (an HTTP/2 one may hold up to
/// its windows while busy, bounded by the push budget); at this bound idle
/// connections alone take about a GiB, and more would rather call for
/// more nodes. It replaces the per-core caps of earlier versions (16,384
/// HTTP and 4096 gRPC connections a core), which a node-wide count makes
/// moot: the kernel spreads connections over the cores' `SO_REUSEPORT`
/// sockets.
pub const CONNECTIONS_PER_LISTENER_MAX: usize = 100_000;
const _: () = assert!(CONNECTIONS_PER_LISTENER_DEFAULT <= CONNECTIONS_PER_LISTENER_MAX);
/// Largest syslog message (DESIGN.md section 11), framing excluded. An
/// octet count above it is a lie or a mistake and closes the connection
/// (the stream cannot be resynchronized); a line without its LF by then is
/// refused and skipped up to its LF. rsyslog's default is 8 KiB and
/// syslog-ng's 64 KiB; 256 KiB leaves room for stack traces while a
/// connection's read buffer (which holds at least one message) stays
/// small. Well under [`ENTRY_BODY_BYTES_MAX`], so any message is a body.
pub const SYSLOG_MESSAGE_BYTES_MAX: usize = 256 * 1024;
const _: () = assert!(SYSLOG_MESSAGE_BYTES_MAX <= ENTRY_BODY_BYTES_MAX);
/// Digits of an RFC 6587 octet count: enough for [`SYSLOG_MESSAGE_BYTES_MAX`];
/// a longer count is refused before it is parsed.
pub const SYSLOG_OCTET_COUNT_DIGITS_MAX: usize = 7;
const _: () = assert!(SYSLOG_MESSAGE_BYTES_MAX < 10_usize.pow(SYSLOG_OCTET_COUNT_DIGITS_MAX as u32));
/// Bytes one syslog TCP read asks for: a read's messages become one append,
/// so this bounds an append (a few hundred lines) and one connection's idle
/// buffer.
pub const SYSLOG_READ_BYTES: usize = 64 * 1024;
/// Appends of one syslog TCP connection that may wait for their group
/// commit at once. Syslog has no acknowledgement to wait for, so reading
/// goes on while commits run; at this bound (or when the shard answers
/// with backpressure) the connection stops reading until its oldest
/// append is durable, and TCP pushes back on the sender. 16 appends of a
/// [`SYSLOG_READ_BYTES`] read cover several commits' worth of lines.
pub const SYSLOG_APPENDS_IN_FLIGHT_MAX: usize = 16;
/// Syslog TCP connections the node serves at once (over all cores); more
/// are closed at accept and counted. Each holds a read buffer of
/// [`SYSLOG_READ_BYTES`] (up to [`SYSLOG_MESSAGE_BYTES_MAX`] while a long
/// message arrives); syslog senders are relays and hosts, a few per
/// machine, not one per request.
pub const SYSLOG_CONNECTIONS_MAX: usize = 4096;
/// Datagrams one syslog UDP batch takes (one append): those already queued
/// on the socket when the first arrives, up to this many.
pub const SYSLOG_UDP_BATCH_DATAGRAMS_MAX: usize = 256;
/// Receive buffer asked for each syslog UDP socket (`SO_RCVBUF`; the
/// kernel caps it at `net.core.rmem_max`): a burst of datagrams waits there
/// while the core parses the previous batch.
pub const SYSLOG_UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Largest UDP datagram (the IPv4 payload limit); a longer one cannot arrive.
pub const SYSLOG_UDP_DATAGRAM_BYTES_MAX: usize = 65_535;
/// Entries in one ingest request (HTTP): a 16 MiB body of the smallest
/// lines holds about this many.
pub const HTTP_ENTRIES_PER_REQUEST_MAX: usize = 1_000_000;
/// Names in one field-choice list of the Elasticsearch bulk and JSON-lines
/// APIs (`_msg_field`, `_time_field`, `_stream_fields`): each document is
/// looked up for every name, so the list bounds that work per document;
/// real lists name a handful.
pub const FIELD_CHOICE_NAMES_MAX: usize = 64;
/// Deepest nesting of objects in one Elasticsearch or JSON-lines document.
/// Nested objects are flattened to `a.b` keys, each level scanned once
/// more, so the depth bounds that work; log documents nest a few levels
/// (ECS, Kubernetes metadata), and a deeper one is refused by name.
pub const DOCUMENT_DEPTH_MAX: usize = 32;
/// Streamed HTTP responses (queries, tails) are written in chunks of about
/// this size: large enough to amortize a write, small enough to start fast.
pub const HTTP_STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between a streaming task and its connection, so a slow
/// reader holds at most this many chunks of a response in memory.
pub const HTTP_STREAM_CHUNKS_BUFFERED: usize = 8;
/// Default `limit` of a query (HTTP and gRPC), as in DESIGN.md section 7.
pub const QUERY_LIMIT_DEFAULT: usize = 1000;
/// Largest `limit` of a query (DESIGN.md section 7): results are streamed,
/// never buffered whole, so this bounds only the work of one request.
pub const QUERY_LIMIT_MAX: usize = 10_000_000;
/// Most `tag=` predicates in one query: an entry has at most this many tags,
/// so more could never match.
pub const QUERY_TAGS_MAX: usize = ENTRY_TAGS_MAX;
/// Most `field=` predicates in one query: an entry has at most this many
/// fields, so more could never match.
pub const QUERY_FIELDS_MAX: usize = ENTRY_FIELDS_MAX;
/// Most distinct words over a query's `q=` values: each word is one probe
/// of every candidate block's filter and one comparison per word of every
/// body read, and [`crate::index::words::WordQuery`] keeps one bit per word.
pub const QUERY_WORDS_MAX: usize = 16;
/// Longest word of `q=`: a body word is compared whole, and a word of a
/// request id or a hash is far shorter.
pub const QUERY_WORD_BYTES_MAX: usize = 256;
/// Longest `contains=` text: it is searched for in every body the other
/// predicates leave, and bodies are at most a few KiB in practice.
pub const QUERY_CONTAINS_BYTES_MAX: usize = 1024;
/// Most `contains=` predicates in one query (all must occur).
pub const QUERY_CONTAINS_MAX: usize = 8;
/// Entries one `WormIngest.Write` call may carry (as an HTTP ingest).
pub const WRITE_ENTRIES_MAX: usize = HTTP_ENTRIES_PER_REQUEST_MAX;

// ---------------------------------------------------------------------------
// TLS (DESIGN.md section 10).
// ---------------------------------------------------------------------------

/// How long an accepted connection has to finish its TLS handshake before
/// it is closed (and counted as a failed handshake). The handshake runs in
/// the connection's own task, so a client that connects and stays silent
/// holds only its own connection slot; this frees the slot. Ten seconds
/// cover a few round trips on a slow link with retransmits, as the default
/// `--header-read-timeout` does for request headers.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The read buffer under each TLS connection, allocated once with it.
/// rustls reads its socket 4 KiB at a time; without a buffer each of those
/// is a `recv` system call, four or five per 16 KiB record. One buffer of
/// a record's size fills with one call. It costs 16 KiB per connection
/// (16,384 TLS connections on a core: 256 MiB), which is why it is not
/// larger.
pub const TLS_READ_BUFFER_BYTES: usize = 16 * 1024;
/// Largest PEM file (certificate chain, key, CA bundle) read at start or
/// on SIGHUP: a chain or a CA bundle is a few KiB, a large system bundle
/// about 200 KiB; a larger file is not what the flag asks for.
pub const TLS_PEM_FILE_BYTES_MAX: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// The gRPC transport (DESIGN.md section 6; windows and frames as measured).
// ---------------------------------------------------------------------------

/// HTTP/2 receive window of one stream: a follower streams 4 MiB batches,
/// and one window lets a whole batch be in flight.
pub const GRPC_STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// HTTP/2 receive window of one connection: four streams' worth.
pub const GRPC_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Largest HTTP/2 frame we accept: fewer frames per batch than h2's
/// 16 KiB default, while a frame still fits comfortably in one read.
pub const GRPC_FRAME_BYTES_MAX: u32 = 256 << 10;
/// Streams one HTTP/2 connection may have open at once.
pub const GRPC_CONNECTION_STREAMS_MAX: u32 = 128;
/// Bytes h2 may buffer per stream on the send side.
pub const GRPC_SEND_BUFFER_BYTES: usize = 1 << 20;
/// Response bytes a call buffers before writing them out.
pub const GRPC_FLUSH_BYTES: usize = 64 << 10;
/// Longest `grpc-timeout` honoured (longer ones are cut to it).
pub const GRPC_CALL_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

// ---------------------------------------------------------------------------
// Between cores.
// ---------------------------------------------------------------------------

/// Requests queued per core from the other cores; a full queue makes the
/// sender wait, which is the backpressure between cores.
pub const PEER_QUEUE_MAX: usize = 256;
/// Entries per query chunk sent between cores.
pub const QUERY_CHUNK_ENTRIES: usize = 256;
/// Query chunks buffered per shard stream of one merged query: with
/// [`QUERY_CHUNK_ENTRIES`], at most about a thousand entries a shard.
pub const QUERY_CHUNKS_BUFFERED: usize = 4;
/// Entries a tail reads per pass.
pub const TAIL_READ_ENTRIES: usize = 4096;
/// Chunks buffered per tail subscription and shard before the subscriber
/// is declared too slow and disconnected.
pub const TAIL_CHUNKS_BUFFERED_MAX: usize = 64;

// ---------------------------------------------------------------------------
// Replication.
// ---------------------------------------------------------------------------

/// Batches of one push stream being archived at once: enough to keep the
/// owner's group commit fed while the previous group syncs.
pub const PUSH_BATCHES_IN_FLIGHT_MAX: usize = 16;
/// Bytes of pushed batches one core may hold between reading them from
/// their streams and their acks (all streams together); a stream waits
/// (and HTTP/2 flow control stops its sender) while the budget is spent.
pub const PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX: u64 = 256 << 20;
/// Entries a `ReplayFrom` reads from the owner core per round trip.
pub const REPLAY_CHUNK_ENTRIES: usize = 4096;
/// Most entries in one pushed batch of entries (a follower pushing
/// entries rather than blocks).
pub const PUSH_BATCH_ENTRIES_MAX: usize = 16_384;
/// Most entries in one pushed batch of blocks (a block has at most
/// [`BLOCK_ENTRIES_MAX`]).
pub const PUSH_BLOCK_BATCH_ENTRIES_MAX: usize = 65_536;
/// A follower's batches stop growing once their entries (or blocks) pass
/// this many bytes: a quarter of [`MESSAGE_BYTES_MAX`], so a batch plus the
/// block that crossed the target always fits one message.
pub const PUSH_BATCH_BYTES_TARGET: usize = 4 << 20;
const _: () = assert!(PUSH_BATCH_BYTES_TARGET + BLOCK_STORED_BYTES_MAX + BLOCK_HEADER_BYTES + 64 <= MESSAGE_BYTES_MAX);
/// Batches a follower's pusher has sent and not yet seen acknowledged.
pub const PUSH_BATCHES_UNACKED_MAX: usize = 4;
/// Entries `wormdb restore` appends per group commit.
pub const RESTORE_BATCH_ENTRIES: usize = 4096;
/// Addresses a follower may list in `--leader` (and `wormdb restore` in
/// `--from`): an archive tier has 3 or 5 nodes; 16 leaves room for a tier
/// replaced node by node, and bounds one pass over the list to 16 backoffs.
pub const LEADER_ADDRS_MAX: usize = 16;
/// Attempts in a row (connect, not-leader refusal, broken stream) that
/// `wormdb restore` makes for one shard without receiving an entry before
/// it gives up: with the reconnect backoff capped at 1 s, about 15 s of
/// trying, many times a tier's election timeout (about 1 s) and a pass
/// over the longest address list.
pub const RESTORE_ATTEMPTS_MAX: u32 = 24;

// ---------------------------------------------------------------------------
// Reads and scans of segment files, and the node's own setup.
// ---------------------------------------------------------------------------

/// How much of a segment one recovery (or `wormdb inspect`) read covers.
/// Larger than any block, so a block always fits in one window; 8 MiB reads
/// run near the disk's sequential rate without holding much memory.
pub const SCAN_WINDOW_BYTES: usize = 8 * 1024 * 1024;
const _: () = assert!(SCAN_WINDOW_BYTES >= BLOCK_HEADER_BYTES + BLOCK_STORED_BYTES_MAX + PAGE_BYTES);
/// Adjacent blocks a query or replay reads are coalesced into one I/O up to
/// this many bytes: fewer syscalls, and a bounded buffer per reader.
pub const READ_COALESCE_BYTES: u64 = 4 * 1024 * 1024;
/// The first read of an ordered query (one shard's part of a query) covers
/// at most this many bytes (a few LZ4 blocks), or its first block if that
/// is larger; each read after it may be twice as large as the one before,
/// up to [`READ_COALESCE_BYTES`]. A query answered by its first blocks
/// reads little more than them, and a query that finds no room in
/// [`QUERY_READ_BYTES_PER_CORE_MAX`] still progresses with reads this size.
pub const QUERY_FIRST_READ_BYTES: u64 = 256 * 1024;
/// Bytes of block reads one ordered query keeps in flight while it decodes
/// the block before, so the disk works while the core decompresses and
/// filters: two coalesced reads. Decoding is the slower side (a 4 MiB read
/// holds about 20 MiB of raw text, tens of milliseconds of decompression,
/// against a few milliseconds to read it), so more would only hold memory.
pub const QUERY_READ_BYTES_IN_FLIGHT_MAX: u64 = 2 * READ_COALESCE_BYTES;
/// Bytes of block reads that the ordered queries of one shard hold together
/// (in flight or being decoded), beyond one read of at most
/// [`QUERY_FIRST_READ_BYTES`] (or one block) per query that always
/// proceeds: however many queries scan at once, a core holds at most this
/// plus that for their reads. Room for a few scans at full speed.
pub const QUERY_READ_BYTES_PER_CORE_MAX: u64 = 64 * 1024 * 1024;
const _: () = assert!(QUERY_FIRST_READ_BYTES <= READ_COALESCE_BYTES);
const _: () = assert!(QUERY_READ_BYTES_IN_FLIGHT_MAX >= READ_COALESCE_BYTES);
const _: () = assert!(QUERY_READ_BYTES_PER_CORE_MAX >= QUERY_READ_BYTES_IN_FLIGHT_MAX + READ_COALESCE_BYTES);
/// Chunk size for zero-filling a spare segment and scrubbing a torn tail.
pub const ZERO_CHUNK_BYTES: usize = 1024 * 1024;
/// Zero-filling syncs the spare file every this many bytes. A commit's
/// fdatasync flushes the device's whole write cache, zeros of the spare
/// segment included: zeroing a 256 MiB segment in one go and syncing once
/// made commits wait for hundreds of MiB of zeros (fdatasync stalls of up to
/// a second under sustained ingest). Syncing as it goes keeps that backlog
/// to a few MiB.
pub const ZERO_SYNC_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes one socket read asks for (and zero-initializes first):
/// loopback delivers at most 64 KiB segments.
pub const NET_READ_WINDOW_BYTES: usize = 64 * 1024;
/// Default cap on one HTTP request body (`--max-body-bytes`, DESIGN.md
/// section 7's 413): sixteen thousand typical log lines.
pub const HTTP_BODY_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
/// Largest accepted `--max-body-bytes`: a body is held whole while it is
/// parsed, so this bounds one request's memory.
pub const HTTP_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Largest accepted `--shards`: one executor and one set of listeners each.
pub const SHARDS_MAX: usize = 256;

/// Most tier members (`--peers`): a Raft group's cost grows with its voters
/// (every entry goes to each), and 3 or 5 is what anyone runs; 7 leaves
/// room for a replacement joining a 5-node tier.
pub const TIER_MEMBERS_MAX: usize = 7;

/// Most bytes of pushed batches and direct writes in one Raft proposal (a
/// group commit): one entry of the group's log, written and fdatasynced on
/// every replica before it commits. Below the gRPC message cap, so a
/// proposal always fits in one Raft message.
pub const PROPOSAL_BYTES_MAX: usize = 8 << 20;
// A follower's largest batch (its target, the writer's slack, and the block
// that crossed it) fits one proposal: pushes are never refused for size.
const _: () = assert!(
    PUSH_BATCH_BYTES_TARGET + PUSH_BATCH_BYTES_TARGET / 8 + BLOCK_STORED_BYTES_MAX + BLOCK_HEADER_BYTES + 64
        <= PROPOSAL_BYTES_MAX
);

/// Most proposals a group leader has in flight (proposed, not yet applied).
/// Each holds its batches in memory until applied; beyond this, pushes wait
/// (the follower's log is the queue).
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 64;

/// Most bytes of batches waiting to be proposed on one group: a push that
/// would exceed it waits for room.
pub const PROPOSAL_QUEUE_BYTES_MAX: usize = 32 << 20;

/// Most Raft messages queued for one peer of one group while its connection
/// is down or slow: beyond that the oldest are dropped (Raft resends what
/// matters: heartbeats repeat, appends are retried from the match index).
pub const RAFT_OUTBOX_MESSAGES_MAX: usize = 4096;

/// Most entries a replica keeps in its Raft log behind the applied index,
/// for peers that lag: a peer further behind gets a snapshot instead. The
/// log's memory (its entries are held in memory to serve raft-rs) is
/// bounded by this times the proposal size, in practice far less (a
/// proposal is a group commit of whatever arrived during one fdatasync).
pub const RAFT_LOG_RETAINED_ENTRIES: u64 = 4096;

/// Most bytes of entries a replica keeps in its Raft log behind the applied
/// index, whatever their count: an entry carries whole pushed batches, so
/// under full load 4096 entries held about 2 GB per group, in memory (the
/// log raft-rs reads) and on disk. A peer further behind gets a snapshot,
/// which streams at several hundred MB/s.
pub const RAFT_LOG_RETAINED_BYTES: u64 = 64 << 20;

/// Most bytes of one Raft log segment file before a new one starts; whole
/// segments are deleted once compaction passes them.
pub const RAFT_LOG_SEGMENT_BYTES: u64 = 64 << 20;

/// Most bytes of the buffer a group's Raft log keeps between rounds to
/// build the next round's records in (a bigger round's buffer is freed
/// after it): rounds of up to a few group commits reuse it without
/// allocating or faulting pages in.
pub const RAFT_LOG_SCRATCH_BYTES_MAX: usize = 8 << 20;

/// Most bytes of one record of the Raft log on disk (one entry): a proposal
/// and its framing. A longer length read back is corruption.
pub const RAFT_RECORD_BYTES_MAX: usize = PROPOSAL_BYTES_MAX + (1 << 20);

/// A follower's lease on the tier (`--lease-ttl` default, DESIGN.md
/// section 9): its pushes, or a keepalive when it has nothing to push,
/// renew it.
pub const LEASE_TTL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);
/// The shortest accepted `--lease-ttl`: a few keepalives must fit in it.
pub const LEASE_TTL_MIN: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a follower's pusher stays idle before it sends a keepalive
/// (an empty batch) to renew its lease: a third of the shortest TTL.
pub const LEASE_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// A learner is promoted to voter once its log is within this many entries
/// of its leader's (a few group commits: it then keeps up as a voter
/// without holding back the quorum).
pub const PROMOTE_LAG_ENTRIES: u64 = 64;

/// Most ReadIndex requests waiting on a group: linearizable watermark
/// reads beyond it are refused with `RESOURCE_EXHAUSTED`.
pub const READ_INDEX_WAITING_MAX: usize = 4096;

/// Entries per batch of entries in a snapshot stream (the entries of a
/// block cut at the snapshot's state: at most one block's per pair; every
/// batch of a snapshot of entries, sent to a member of an earlier version):
/// bounds the memory of both ends.
pub const SNAPSHOT_CHUNK_ENTRIES: usize = 4096;

/// Bytes of one batch of stored blocks (or of entries) in a snapshot
/// stream, at most. Each chunk costs the receiver one append and one
/// fdatasync, so chunks are large; the receiver appends a chunk at once,
/// so one must fit the pending batch of any shard, the smallest segments'
/// included; and any block, or entry, fits one on its own. With the
/// HTTP/2 stream window ([`GRPC_STREAM_WINDOW_BYTES`]) about one chunk is
/// in flight beyond the one being stored.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 3 << 20;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX <= pending_raw_bytes_max(SEGMENT_BYTES_MIN));
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX >= BLOCK_HEADER_BYTES + BLOCK_STORED_BYTES_MAX + 16);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX >= ENTRY_ENCODED_BYTES_MAX + 32);
/// Batches in one snapshot chunk, at most: each is one append on the
/// receiver, and a shard's group commit takes at most
/// [`PENDING_APPENDS_MAX`].
pub const SNAPSHOT_CHUNK_BATCHES_MAX: usize = 1024;
const _: () = assert!(SNAPSHOT_CHUNK_BATCHES_MAX <= PENDING_APPENDS_MAX);
/// Bytes of the blocks' tags one snapshot chunk carries, at most (a
/// block whose tags alone are more goes without them: the receiver then
/// reads them from the block).
pub const SNAPSHOT_CHUNK_TAG_BYTES_MAX: usize = 4 << 20;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX + SNAPSHOT_CHUNK_TAG_BYTES_MAX + (1 << 16) <= MESSAGE_BYTES_MAX);

// ---------------------------------------------------------------------------
// Authentication and abuse limits (DESIGN.md section 10, `crate::auth`).
// ---------------------------------------------------------------------------

/// Largest `--auth-tokens` file: about ten thousand tables of a few
/// hundred bytes. Checked before the file is read whole.
pub const AUTH_TOKEN_FILE_BYTES_MAX: u64 = 4 << 20;
/// Most `[[token]]` tables in the file. Every call compares the digest of
/// its secret with each token's in constant time (no early exit): 4096
/// comparisons of 32 bytes take a few microseconds, once per request or
/// stream.
pub const AUTH_TOKENS_MAX: usize = 4096;
/// Longest token `name`: it shows in logs, error messages and a metric
/// label.
pub const AUTH_TOKEN_NAME_BYTES_MAX: usize = 128;
/// Most `follower_ids` one token may list.
pub const AUTH_FOLLOWER_IDS_PER_TOKEN_MAX: usize = 4096;
/// Largest `rate_entries_per_s` of a token: what one node could not ingest
/// anyway (the load generator's own ceiling).
pub const AUTH_RATE_ENTRIES_PER_S_MAX: u64 = 1_000_000_000;
/// Largest secret file (`--peer-token-file`, `--token-file`): a secret is
/// a line of visible ASCII, `openssl rand -hex 32` makes 64 bytes.
pub const AUTH_SECRET_FILE_BYTES_MAX: u64 = 4096;
