//! Words of a body: what `q=WORD` matches (DESIGN.md section 12).
//!
//! A **word** is a maximal run of word bytes: ASCII letters, digits, `_`,
//! and every byte of a non-ASCII UTF-8 character (so `naïve`, `日志` and
//! `blk_38865049064139660` are one word each, and `10.251.42.84:50010` is
//! five). Words compare **case-insensitively in ASCII**: `ERROR`, `Error`
//! and `error` are one word; non-ASCII letters compare byte for byte (full
//! Unicode case folding would cost a table lookup per character on the
//! write path for the few logs that need it).
//!
//! Both sides use this module, so they cannot disagree:
//!
//! * the write path hashes every word of every body into the block's word
//!   filter ([`for_each_filtered_word_hash`]: the words of at least
//!   [`FILTERED_WORD_BYTES_MIN`] bytes);
//! * a query hashes its words the same way ([`word_hash`]) to ask the filters
//!   which blocks may hold them, then checks each entry exactly
//!   ([`WordQuery::matches`]), so a filter's false positive costs a block
//!   read and never a wrong answer.
//!
//! The hash is persisted (filters are written into index files), so it is
//! part of the file format: [`word_hash`] must never change. It is defined
//! here, not taken from a crate whose output may change between versions,
//! and `words_hash_is_stable` pins its values.

use crate::limits::{QUERY_WORDS_MAX, QUERY_WORD_BYTES_MAX};

/// Per byte: its ASCII-folded value if it is a word byte, 0 if it separates
/// words. (0 itself is a separator, so 0 never stands for a word byte.)
const FOLD: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0usize;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = match b {
            b'A'..=b'Z' => b + 32,
            b'a'..=b'z' | b'0'..=b'9' | b'_' => b,
            0x80..=0xff => b,
            _ => 0,
        };
        byte += 1;
    }
    table
};

/// Whether `byte` belongs to a word.
#[inline]
pub fn is_word_byte(byte: u8) -> bool {
    FOLD[byte as usize] != 0
}

/// The words of `body`, in order, as they appear (not folded).
pub fn words(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&byte| !is_word_byte(byte)).filter(|word| !word.is_empty())
}

const SEED0: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED1: u64 = 0xbf58_476d_1ce4_e5b9;
const SEED2: u64 = 0x94d0_49bb_1331_11eb;
const SEED3: u64 = 0xff51_afd7_ed55_8ccd;

/// Folds the word bytes of `chunk` (and 0, the padding past a word's
/// end): sets bit 5 of every byte whose top three bits are `010`, which
/// among word bytes are the ASCII capitals (made lower case) and `_`
/// (made 0x7f, a byte no word holds, so no two words fold alike). Every
/// other word byte is left alone. Five operations for eight bytes.
#[inline]
fn fold_word_bytes(chunk: u64) -> u64 {
    const BIT_5: u64 = 0x2020_2020_2020_2020;
    // Bit 5 of each byte of `chunk >> 1` is its bit 6, of `chunk >> 2` its
    // bit 7; bits shifted in from the next byte land outside bit 5.
    chunk | ((chunk >> 1) & !(chunk >> 2) & !chunk & BIT_5)
}

/// The 128-bit product of `a` and `b`, as its low and high halves (the
/// "mum" step of wyhash and rapidhash: one multiply that mixes every bit
/// of both operands into the high half).
#[inline]
fn multiply(a: u64, b: u64) -> (u64, u64) {
    let product = u128::from(a) * u128::from(b);
    (product as u64, (product >> 64) as u64)
}

/// The hash of a word from its folded 8-byte chunks: the first two (zero
/// past the word's end), then each further pair, then a final mix with the
/// length. Two multiplies for a word of up to 16 bytes, the common case.
#[inline]
fn hash_chunks(len: usize, first: u64, second: u64, mut more: impl FnMut(usize) -> (u64, u64)) -> u64 {
    let (mut low, mut high) = multiply(first ^ SEED0, second ^ SEED1);
    let mut index = 2;
    while index * 8 < len {
        let (third, fourth) = more(index);
        (low, high) = multiply(third ^ low ^ SEED0, fourth ^ high ^ SEED1);
        index += 2;
    }
    let (low, high) = multiply(low ^ SEED2 ^ len as u64, high ^ SEED3);
    low ^ high
}

/// The folded chunk `index` (bytes `8 * index ..`) of `word`, zero past its
/// end.
#[inline]
fn chunk_of(word: &[u8], index: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let part = word.get(index * 8..).unwrap_or(&[]);
    let count = part.len().min(8);
    bytes[..count].copy_from_slice(&part[..count]);
    fold_word_bytes(u64::from_le_bytes(bytes))
}

/// The hash of a word, case-folded: `word_hash(b"Error") ==
/// word_hash(b"ERROR")`. `word` should be one word (see the module docs);
/// any bytes are accepted. Persisted in index files: never change it.
///
/// The word is read as little-endian 8-byte chunks, zero past its end,
/// each folded by `fold_word_bytes`; `(low, high)` is the 128-bit
/// product of `chunk0 ^ SEED0` and `chunk1 ^ SEED1`; each further pair of
/// chunks `(a, b)` makes it the product of `a ^ low ^ SEED0` and
/// `b ^ high ^ SEED1`; the hash is `low ^ high` of the product of
/// `low ^ SEED2 ^ len` and `high ^ SEED3`.
#[inline]
pub fn word_hash(word: &[u8]) -> u64 {
    hash_chunks(word.len(), chunk_of(word, 0), chunk_of(word, 1), |index| {
        (chunk_of(word, index), chunk_of(word, index + 1))
    })
}

/// Words shorter than this many bytes are left out of the word filters
/// ([`for_each_filtered_word_hash`]), and a query never asks a filter about
/// one. They are a quarter to a third of the words of log text (IP octets,
/// `to`, `of`, `id`), so leaving them out spares that share of the write
/// path's hashing, and a word that short is in nearly every block anyway:
/// a filter would prune nothing for it. A query for one still answers
/// exactly; only its blocks are not pruned by word.
pub const FILTERED_WORD_BYTES_MIN: usize = 3;

/// Calls `each` with the [`word_hash`] of every word of `body` of at least
/// [`FILTERED_WORD_BYTES_MIN`] bytes, in order, repeats included: what a
/// block's word filter holds.
///
/// The write path's hot loop (every word of every body), so it costs one
/// short iteration per word it hashes and none per byte or per short word.
/// It classifies 64 bytes at a time into a bit mask ([`word_mask`]) and
/// keeps the masks of the 64 bytes before and after beside it; a word of at
/// least three bytes *starts* at a word byte after a separator followed by
/// two more word bytes, and *ends* at a word byte before a separator
/// preceded by two more word bytes. These starts and ends, found with a
/// few mask operations per 64 bytes, pair up in order: the k-th start with
/// the k-th end. A word whose end lies in a later 64 bytes waits for it.
/// A word of up to 16 bytes is hashed from one unaligned 16-byte load of
/// the body, masked to the word, with no copy and no branch on its length.
#[inline(always)]
pub fn for_each_filtered_word_hash(body: &[u8], mut each: impl FnMut(u64)) {
    for_each_filtered_word(
        body,
        #[inline(always)]
        |start, end| each(word_hash_in(body, start, end)),
    );
}

/// The words [`for_each_filtered_word_hash`] hashes, as `each(start, end)`:
/// `body[start..end]` is the word.
#[inline(always)]
pub fn for_each_filtered_word(body: &[u8], mut each: impl FnMut(usize, usize)) {
    const _: () = assert!(FILTERED_WORD_BYTES_MIN == 3, "the masks below test two more bytes");
    let chunk_mask =
        |base: usize| if base < body.len() { word_mask(&body[base..body.len().min(base + 64)]) } else { 0 };
    let (mut previous, mut current) = (0_u64, chunk_mask(0));
    // The start of a word whose end is in a later chunk.
    let mut open: Option<usize> = None;
    let mut base = 0;
    while base < body.len() {
        let next = chunk_mask(base + 64);
        // Bit i of `after1`: byte i + 1 is a word byte; of `before1`: byte i - 1.
        let (after1, after2) = ((current >> 1) | (next << 63), (current >> 2) | (next << 62));
        let (before1, before2) = ((current << 1) | (previous >> 63), (current << 2) | (previous >> 62));
        let mut starts = current & !before1 & after1 & after2;
        let mut ends = current & !after1 & before1 & before2;
        if let Some(start) = open {
            if ends == 0 {
                // Still inside the word (a word longer than 64 bytes).
                previous = current;
                current = next;
                base += 64;
                continue;
            }
            each(start, base + ends.trailing_zeros() as usize + 1);
            ends &= ends - 1;
            open = None;
        }
        while starts != 0 {
            let start = base + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if ends == 0 {
                // The last start of the chunk; its word ends further on.
                open = Some(start);
                break;
            }
            each(start, base + ends.trailing_zeros() as usize + 1);
            ends &= ends - 1;
        }
        previous = current;
        current = next;
        base += 64;
    }
    debug_assert!(open.is_none(), "the mask past the body's end is 0, which ends every word");
}

/// `LOW_BYTES[len]`: the low `len` bytes of a u128 set.
const LOW_BYTES: [u128; 17] = {
    let mut masks = [0_u128; 17];
    let mut len = 1;
    while len <= 16 {
        masks[len] = u128::MAX >> (128 - 8 * len);
        len += 1;
    }
    masks
};

/// [`word_hash`] of `body[start..end]` (`start < end`), reading a word of
/// up to 16 bytes as one 16-byte load from `body` (the bytes past the word
/// masked off) when `body` has 16 bytes.
#[inline(always)]
fn word_hash_in(body: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    if len > 16 || body.len() < 16 {
        return word_hash(&body[start..end]);
    }
    let loaded = if let Some(sixteen) = body.get(start..start + 16) {
        u128::from_le_bytes(sixteen.try_into().expect("16 bytes"))
    } else {
        // Fewer than 16 bytes follow the word's start: the last 16 of the
        // body, shifted down to the word.
        let tail = u128::from_le_bytes(body[body.len() - 16..].try_into().expect("16 bytes"));
        tail >> (8 * (start + 16 - body.len()))
    };
    let word = loaded & LOW_BYTES[len];
    hash_chunks(len, fold_word_bytes(word as u64), fold_word_bytes((word >> 64) as u64), |_| (0, 0))
}

/// Bit i set iff `chunk[i]` is a word byte (`chunk` has at most 64 bytes).
#[inline]
fn word_mask(chunk: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        word_mask_sse2(chunk)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        word_mask_table(chunk)
    }
}

/// [`word_mask`] one byte at a time, with the [`FOLD`] table.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn word_mask_table(chunk: &[u8]) -> u64 {
    let mut mask = 0_u64;
    for (index, &byte) in chunk.iter().enumerate() {
        mask |= u64::from(is_word_byte(byte)) << index;
    }
    mask
}

/// [`word_mask`] 16 bytes at a time with SSE2, which every x86_64 has: a
/// byte is a word byte if it is >= 0x80 (its sign bit), or `byte | 0x20` is
/// a lower-case letter, or it is a digit or `_` (ranges tested with signed
/// compares after shifting the range's start to -128).
#[cfg(target_arch = "x86_64")]
#[inline]
fn word_mask_sse2(chunk: &[u8]) -> u64 {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let mut padded = [0_u8; 64];
    let bytes: &[u8; 64] = match chunk.try_into() {
        Ok(full) => full,
        Err(_) => {
            padded[..chunk.len()].copy_from_slice(chunk);
            &padded
        }
    };
    let mut mask = 0_u64;
    for (index, sixteen) in bytes.chunks_exact(16).enumerate() {
        let low = i64::from_le_bytes(sixteen[..8].try_into().expect("8 bytes"));
        let high = i64::from_le_bytes(sixteen[8..].try_into().expect("8 bytes"));
        // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics
        // are always available; none of them touches memory. (Rust 1.87 and
        // later call them safe functions, hence the allow.)
        #[allow(unused_unsafe)]
        let bits = unsafe {
            let v = _mm_set_epi64x(high, low);
            let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let letter = _mm_cmplt_epi8(
                _mm_add_epi8(lower, _mm_set1_epi8((0x80_u8.wrapping_sub(b'a')) as i8)),
                _mm_set1_epi8((0x80_u8 + 26) as i8),
            );
            let digit = _mm_cmplt_epi8(
                _mm_add_epi8(v, _mm_set1_epi8((0x80_u8.wrapping_sub(b'0')) as i8)),
                _mm_set1_epi8((0x80_u8 + 10) as i8),
            );
            let underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'_' as i8));
            // Bytes >= 0x80 have their sign bit set already.
            let word = _mm_or_si128(_mm_or_si128(letter, digit), _mm_or_si128(underscore, v));
            _mm_movemask_epi8(word) as u32 as u64
        };
        mask |= bits << (16 * index);
    }
    // Padding bytes are 0, not word bytes.
    mask
}

/// Whether `word` equals `folded` (already lower case) ignoring ASCII case.
#[inline]
fn eq_folded(word: &[u8], folded: &[u8]) -> bool {
    word.len() == folded.len() && word.iter().zip(folded).all(|(&byte, &want)| FOLD[byte as usize] == want)
}

/// Why a `q=` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    /// The value has no word byte at all (only punctuation or spaces).
    #[error("q={0:?} has no word in it: a word is a run of letters, digits and '_'")]
    NoWord(String),
    /// A word is longer than [`QUERY_WORD_BYTES_MAX`].
    #[error("a word of q is {0} bytes long; at most {QUERY_WORD_BYTES_MAX} are allowed")]
    WordTooLong(usize),
    /// More words than [`QUERY_WORDS_MAX`] over all `q=` values.
    #[error("q names more than {QUERY_WORDS_MAX} words")]
    TooManyWords,
}

/// The words a query asks for (`q=`, all of them must occur), folded and
/// hashed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordQuery {
    /// Distinct words, folded to lower case, in the order first given.
    words: Vec<Box<[u8]>>,
    /// `word_hash` of each word a word filter can rule out (of at least
    /// [`FILTERED_WORD_BYTES_MIN`] bytes), same order.
    filter_hashes: Vec<u64>,
}

impl WordQuery {
    /// The words of the `q=` values. A value that holds several words (say
    /// `q=connection refused` or `q=10.0.0.1`) asks for each of them. Every
    /// value must hold at least one word.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, WordsError> {
        let mut query = WordQuery::default();
        for value in values {
            let mut any = false;
            for word in words(value.as_bytes()) {
                any = true;
                if word.len() > QUERY_WORD_BYTES_MAX {
                    return Err(WordsError::WordTooLong(word.len()));
                }
                let folded: Box<[u8]> = word.iter().map(|&byte| FOLD[byte as usize]).collect();
                if query.words.contains(&folded) {
                    continue;
                }
                if query.words.len() == QUERY_WORDS_MAX {
                    return Err(WordsError::TooManyWords);
                }
                if folded.len() >= FILTERED_WORD_BYTES_MIN {
                    query.filter_hashes.push(word_hash(&folded));
                }
                query.words.push(folded);
            }
            if !any {
                return Err(WordsError::NoWord(value.to_owned()));
            }
        }
        Ok(query)
    }

    /// Whether the query asks for no word (every body matches).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The hashes of the words a block's word filter can rule out: those
    /// of at least [`FILTERED_WORD_BYTES_MIN`] bytes (filters leave shorter
    /// words out, so they never rule a block out for one).
    pub fn filter_hashes(&self) -> &[u64] {
        &self.filter_hashes
    }

    /// The words, folded to lower case.
    pub fn words(&self) -> impl Iterator<Item = &[u8]> {
        self.words.iter().map(|word| &**word)
    }

    /// Whether `body` holds every word of the query as a whole word.
    pub fn matches(&self, body: &[u8]) -> bool {
        match self.words.len() {
            0 => true,
            1 => words(body).any(|word| eq_folded(word, &self.words[0])),
            count => {
                // Bit i: word i seen. Count <= QUERY_WORDS_MAX <= 64.
                let all = if count == 64 { u64::MAX } else { (1u64 << count) - 1 };
                let mut seen = 0u64;
                for word in words(body) {
                    for (index, wanted) in self.words.iter().enumerate() {
                        if eq_folded(word, wanted) {
                            seen |= 1 << index;
                        }
                    }
                    if seen == all {
                        return true;
                    }
                }
                false
            }
        }
    }
}

const _: () = assert!(QUERY_WORDS_MAX <= 64, "WordQuery::matches keeps one bit per word in a u64");

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn words_are_runs_of_letters_digits_underscores_and_non_ascii() {
        let body = "INFO dfs.DataNode$PacketResponder: blk_-1608999687919862906 from /10.251.42.84:50010 naïve 日志!";
        let found: Vec<&[u8]> = words(body.as_bytes()).collect();
        let expected: Vec<&[u8]> = vec![
            b"INFO",
            b"dfs",
            b"DataNode",
            b"PacketResponder",
            b"blk_",
            b"1608999687919862906",
            b"from",
            b"10",
            b"251",
            b"42",
            b"84",
            b"50010",
            "naïve".as_bytes(),
            "日志".as_bytes(),
        ];
        assert_eq!(found, expected);
        assert_eq!(words(b"").count(), 0);
        assert_eq!(words(b" -- ").count(), 0);
    }

    #[test]
    fn words_hash_is_stable() {
        // Persisted in index files: these values must never change.
        let pinned: [(&[u8], u64); 4] = [
            (b"", 0x1152_b5a8_51ba_ea61),
            (b"error", 0x1b79_ffd5_5ba2_75d8),
            (b"ERROR", 0x1b79_ffd5_5ba2_75d8),
            (b"blk_38865049064139660", 0x45b3_de09_e027_ed7b),
        ];
        for (word, expected) in pinned {
            assert_eq!(word_hash(word), expected, "{:?}", String::from_utf8_lossy(word));
        }
    }

    #[test]
    fn folding_lowers_capitals_and_moves_underscore_only() {
        for byte in (0..=255u8).filter(|&byte| is_word_byte(byte)) {
            let chunk = u64::from_le_bytes([byte, b'A', b'Z', b'_', 0, 0x80 | byte, b'a', b'9']);
            let folded = fold_word_bytes(chunk).to_le_bytes();
            let expected = if byte == b'_' { 0x7f } else { byte.to_ascii_lowercase() };
            assert_eq!(folded[0], expected, "byte {byte:#04x}");
            assert_eq!(&folded[1..], &[b'a', b'z', 0x7f, 0, 0x80 | byte, b'a', b'9']);
        }
    }

    #[test]
    fn a_query_matches_whole_words_ignoring_ascii_case() {
        let query = WordQuery::parse(["Refused"]).unwrap();
        assert!(query.matches(b"connection REFUSED by peer"));
        assert!(query.matches(b"refused"));
        assert!(!query.matches(b"connection refusedly"));
        assert!(!query.matches(b"unrefused"));
        let both = WordQuery::parse(["blk_42", "ERROR"]).unwrap();
        assert!(both.matches(b"error on blk_42: gone"));
        assert!(!both.matches(b"error on blk_43"));
        let phrase = WordQuery::parse(["10.0.0.1"]).unwrap();
        assert_eq!(phrase.words().count(), 3, "10, 0 and 1 (0 once)");
        assert!(phrase.matches(b"from 1.10.0.99"));
    }

    #[test]
    fn bad_query_words_are_refused() {
        assert_eq!(WordQuery::parse(["--"]), Err(WordsError::NoWord("--".into())));
        let long = "x".repeat(QUERY_WORD_BYTES_MAX + 1);
        assert_eq!(WordQuery::parse([long.as_str()]), Err(WordsError::WordTooLong(QUERY_WORD_BYTES_MAX + 1)));
        let many: Vec<String> = (0..=QUERY_WORDS_MAX).map(|index| format!("w{index}")).collect();
        assert_eq!(WordQuery::parse(many.iter().map(String::as_str)), Err(WordsError::TooManyWords));
        assert!(WordQuery::parse(many[..QUERY_WORDS_MAX].iter().map(String::as_str)).is_ok());
    }

    proptest! {
        /// The fused walk hashes exactly the words of at least
        /// FILTERED_WORD_BYTES_MIN bytes that `words` yields, and the hash
        /// ignores ASCII case.
        #[test]
        fn hashing_agrees_with_the_word_split(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut hashed = Vec::new();
            for_each_filtered_word_hash(&body, |hash| hashed.push(hash));
            let expected: Vec<u64> =
                words(&body).filter(|word| word.len() >= FILTERED_WORD_BYTES_MIN).map(word_hash).collect();
            prop_assert_eq!(&hashed, &expected);
            let upper: Vec<u8> = body.to_ascii_uppercase();
            let mut hashed_upper = Vec::new();
            for_each_filtered_word_hash(&upper, |hash| hashed_upper.push(hash));
            prop_assert_eq!(hashed, hashed_upper);
        }

        /// `matches` agrees with a naive definition.
        #[test]
        fn matching_agrees_with_a_naive_check(
            body in "[a-cA-C _.]{0,40}",
            wanted in proptest::collection::vec("[a-cA-C]{1,3}", 1..4),
        ) {
            let query = WordQuery::parse(wanted.iter().map(String::as_str)).unwrap();
            let body_words: Vec<String> = body
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| !word.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            let naive = wanted.iter().all(|word| body_words.contains(&word.to_ascii_lowercase()));
            prop_assert_eq!(query.matches(body.as_bytes()), naive);
        }
    }

    #[test]
    fn word_masks_agree_with_the_table() {
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(64).chain(all.chunks(37)).chain([&all[..0], &all[250..]]) {
            let expected = chunk
                .iter()
                .enumerate()
                .fold(0_u64, |mask, (index, &byte)| mask | (u64::from(is_word_byte(byte)) << index));
            assert_eq!(word_mask(chunk), expected, "{chunk:?}");
            assert_eq!(word_mask_table(chunk), expected, "{chunk:?}");
        }
    }

    #[test]
    fn the_filtered_walk_hashes_the_words_of_three_bytes_or_more() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x3032);
        let word_bytes = b"aZ_9\xc3\xa9";
        let separators = b" .:-/\t\0";
        for round in 0..3_000 {
            // Words of every length around the 64- and 128-byte edges of the
            // walk's masks, at every offset.
            let mut body = Vec::new();
            let len = [0, 1, 2, 3, 63, 64, 65, 127, 128, 129, 200, 300][round % 12];
            while body.len() < len {
                let word = match rng.gen_range(0..10) {
                    0 => rng.gen_range(60..200),
                    1..=3 => rng.gen_range(1..3),
                    _ => rng.gen_range(3..20),
                };
                body.extend((0..word).map(|_| word_bytes[rng.gen_range(0..word_bytes.len())]));
                body.extend((0..rng.gen_range(1..3)).map(|_| separators[rng.gen_range(0..separators.len())]));
            }
            body.truncate(len);
            let mut fast = Vec::new();
            for_each_filtered_word_hash(&body, |hash| fast.push(hash));
            let expected: Vec<u64> =
                words(&body).filter(|word| word.len() >= FILTERED_WORD_BYTES_MIN).map(word_hash).collect();
            assert_eq!(fast, expected, "round {round}: {body:?}");
        }
    }
}
