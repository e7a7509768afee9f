//! Per-block word filters: a Bloom filter of the [`word_hash`]es of every
//! word of a block's bodies (DESIGN.md section 12), so that a `q=WORD` query
//! decodes only the blocks that may hold the word.
//!
//! # Built while words stream by, sized when the block closes
//!
//! The write path cannot afford a set of a block's distinct words (a hash
//! probe and often an allocation per word) nor a sort. Instead every word's
//! hash sets [`PROBES`] bits of a fixed [`BUILD_BITS`]-bit filter, in a
//! buffer that stays in the L1 cache; repeats set the same bits and cost
//! nothing more. When the block closes ([`WordFilterBuilder::finish`]), the
//! number of distinct words is estimated from the share of bits set
//! (`n ≈ -(m / k) ln(1 - set / m)`), and the filter is **folded**: its two
//! halves OR-ed together, as long as it keeps at least [`BITS_PER_WORD`]
//! bits per estimated word. Folding is exact for a Bloom filter whose probe
//! positions are taken modulo a power of two (a position modulo `m / 2` is
//! the position modulo `m`, modulo `m / 2`), so the folded filter answers
//! as if it had been built at its final size.
//!
//! # Probes
//!
//! The probes of a word are **blocked**: all fall in one 512-bit line (a
//! cache line), and within it in two u64 words, three bits each, so adding
//! a word is two OR-s into memory and testing it two loads, where probes
//! spread over the whole filter cost one access each. Probe `i` of a
//! (well mixed, see [`word_hash`]) hash `h`, numbering `h`'s bits from the
//! lowest, is bit
//! `(line * 512 + word_i * 64 + bit_i) mod m` with `line = h[54..64]`,
//! `word_i = h[48..51]` for even `i` and `h[51..54]` for odd `i`, and
//! `bit_i = h[6 (i mod 8) .. 6 (i mod 8) + 6]`. As any probe rule taken
//! modulo the (power of two) filter size, it folds exactly. A blocked
//! filter has a slightly higher false-positive rate than one whose probes
//! spread over all its bits, at the same size (the words of a line are not
//! spread evenly); measured on LogHub text, in `docs/format.md`. The probe
//! rule and [`word_hash`] are persisted with the filters: both are part of
//! the index file format.
//!
//! # Sizing, measured
//!
//! [`BITS_PER_WORD`] and [`PROBES`] were chosen with the `word_filter`
//! benchmark of `benches/index.rs` over the LogHub samples (false-positive
//! rate against bytes per block); the figures are in `docs/format.md`.
//!
//! [`word_hash`]: crate::index::words::word_hash

use crate::index::words::for_each_filtered_word_hash;

/// Bits of the filter while a block is built: a power of two. 16 KiB, which
/// stays in L1; a block of [`crate::limits::BLOCK_RAW_BYTES_TARGET`] raw
/// bytes of log text has a few thousand distinct words, well under the
/// `BUILD_BITS / BITS_PER_WORD` this holds at full precision (a block with
/// more words keeps a fuller filter: more false positives, never a miss).
pub const BUILD_BITS: usize = 1 << 17;
/// Bits a finished filter keeps per (estimated) distinct word, at least:
/// with [`PROBES`] blocked probes, about 0.2 % of false positives on LogHub
/// text (10 bits gave 0.4 %); folding halves the size, so a filter ends
/// between this and twice this many bits per word.
pub const BITS_PER_WORD: usize = 12;
/// Bits set and tested per word.
pub const PROBES: u32 = 6;
/// Smallest finished filter, in bits: one u64.
pub const FILTER_BITS_MIN: usize = 64;

const _: () = assert!(BUILD_BITS.is_power_of_two());
const _: () = assert!(FILTER_BITS_MIN.is_power_of_two() && FILTER_BITS_MIN >= 64);

/// Bit `probe` of `hash` in a filter of `bits_mask + 1` bits (see the
/// module docs: a 512-bit line, one of two u64 words in it, a bit in it).
#[inline]
fn probe_position(hash: u64, probe: u32, bits_mask: u64) -> u64 {
    let line = hash >> 54;
    let word = (hash >> (48 + 3 * (probe & 1))) & 7;
    let bit = (hash >> ((6 * probe) % 48)) & 63;
    ((line << 9) | (word << 6) | bit) & bits_mask
}

/// The [`PROBES`] probes of `hash` as two (word index, bits) pairs in a
/// filter of `words_mask + 1` u64 words (even probes in the first word, odd
/// ones in the second; the two words may be the same).
#[inline]
fn probe_words(hash: u64, words_mask: u64) -> [(usize, u64); 2] {
    let line = (hash >> 54) << 3;
    let bit = |probe: u32| 1_u64 << ((hash >> (6 * probe)) & 63);
    [
        (((line | ((hash >> 48) & 7)) & words_mask) as usize, bit(0) | bit(2) | bit(4)),
        (((line | ((hash >> 51) & 7)) & words_mask) as usize, bit(1) | bit(3) | bit(5)),
    ]
}

const _: () = assert!(PROBES == 6, "probe_words sets three bits in each of two words");

/// A word filter being built: OR-ed into while words stream by.
#[derive(Clone, Debug)]
pub struct WordFilterBuilder {
    // A fixed-size array, so the masked index needs no bounds check.
    bits: Box<[u64; BUILD_BITS / 64]>,
}

impl Default for WordFilterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl WordFilterBuilder {
    /// An empty filter of [`BUILD_BITS`] bits.
    pub fn new() -> Self {
        Self { bits: Box::new([0_u64; BUILD_BITS / 64]) }
    }

    /// Adds a word by its [`word_hash`](crate::index::words::word_hash).
    #[inline(always)]
    pub fn add_hash(&mut self, hash: u64) {
        for (word, bits) in probe_words(hash, (BUILD_BITS / 64 - 1) as u64) {
            // The mask keeps the index below BUILD_BITS / 64.
            self.bits[word % (BUILD_BITS / 64)] |= bits;
        }
    }

    /// Adds every word of `body` of at least
    /// [`FILTERED_WORD_BYTES_MIN`](crate::index::words::FILTERED_WORD_BYTES_MIN)
    /// bytes (shorter words are left out of filters).
    #[inline]
    pub fn add_body(&mut self, body: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("bmi1") && std::is_x86_feature_detected!("bmi2") {
            // SAFETY: the CPU has BMI1 and BMI2, which is all the function
            // requires beyond the baseline.
            unsafe { self.add_body_bmi(body) };
            return;
        }
        self.add_body_portable(body);
    }

    /// [`add_body`](Self::add_body) compiled for BMI1 and BMI2: the same
    /// code, whose bit scans (`tzcnt`, `blsr`) and variable shifts (`shlx`,
    /// one instruction where the baseline's `shl` by `cl` takes three) are
    /// most of the word walk and the probes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "bmi1,bmi2")]
    unsafe fn add_body_bmi(&mut self, body: &[u8]) {
        self.add_body_portable(body);
    }

    #[inline(always)]
    fn add_body_portable(&mut self, body: &[u8]) {
        for_each_filtered_word_hash(
            body,
            #[inline(always)]
            |hash| self.add_hash(hash),
        );
    }

    /// Folds the filter to its final size and returns it: the smallest power
    /// of two of bits (at least [`FILTER_BITS_MIN`]) that keeps
    /// [`BITS_PER_WORD`] bits per estimated distinct word. An empty builder
    /// gives an all-zero filter of [`FILTER_BITS_MIN`] bits.
    pub fn finish(&self) -> WordFilter {
        self.finish_with(BITS_PER_WORD)
    }

    /// [`finish`](Self::finish) keeping at least `bits_per_word` bits per
    /// estimated word instead of [`BITS_PER_WORD`] (for measurements).
    pub fn finish_with(&self, bits_per_word: usize) -> WordFilter {
        let set: u32 = self.bits.iter().map(|word| word.count_ones()).sum();
        let target = (estimate_words(set as usize, BUILD_BITS) * bits_per_word as f64).ceil() as usize;
        let mut bits_len = BUILD_BITS;
        while bits_len / 2 >= FILTER_BITS_MIN && bits_len / 2 >= target {
            bits_len /= 2;
        }
        let mut words = self.bits[..bits_len / 64].to_vec();
        for chunk in self.bits.chunks_exact(bits_len / 64).skip(1) {
            for (word, &other) in words.iter_mut().zip(chunk) {
                *word |= other;
            }
        }
        WordFilter { bits: words.into_boxed_slice() }
    }
}

/// Distinct words estimated from `set` bits set out of `bits_len` after
/// [`PROBES`] probes per word (Swamidass and Baldi's estimate).
pub fn estimate_words(set: usize, bits_len: usize) -> f64 {
    if set == 0 {
        return 0.0;
    }
    let empty_share = (bits_len - set.min(bits_len - 1)) as f64 / bits_len as f64;
    -(bits_len as f64 / f64::from(PROBES)) * empty_share.ln()
}

/// A finished word filter of one block: a power of two of bits, at least
/// [`FILTER_BITS_MIN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordFilter {
    bits: Box<[u64]>,
}

impl WordFilter {
    /// A filter over these bits (`bits.len()` a power of two, at least 1),
    /// as read from a file.
    ///
    /// # Panics
    /// If `bits.len()` is not a power of two.
    pub fn from_words(bits: Box<[u64]>) -> Self {
        assert!(bits.len().is_power_of_two(), "a word filter is a power of two of u64");
        Self { bits }
    }

    /// Whether a word of this hash may be in the block (false: it surely is
    /// not).
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        may_contain(&self.bits, hash)
    }

    /// The filter's bits, 64 at a time.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// [`WordFilter::may_contain`] over bits as stored (a power of two of u64).
#[inline]
pub fn may_contain(bits: &[u64], hash: u64) -> bool {
    may_contain_probes(bits, hash, PROBES)
}

/// The word filters of a segment's blocks, one span per block (empty: the
/// block has no filter and may hold any word), all in one vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordFilters {
    /// Probes per word the filters were built with ([`PROBES`] for filters
    /// this build writes).
    pub(crate) probes: u32,
    pub(crate) words: Vec<u64>,
    /// Per block, the end of its filter in `words`.
    pub(crate) ends: Vec<u32>,
}

impl WordFilters {
    /// No block yet; filters built with [`PROBES`].
    pub fn new() -> Self {
        Self { probes: PROBES, words: Vec::new(), ends: Vec::new() }
    }

    /// Appends the next block's filter (`None`: the block has none).
    pub fn push(&mut self, filter: Option<&WordFilter>) {
        if let Some(filter) = filter {
            self.words.extend_from_slice(filter.words());
        }
        self.ends.push(self.words.len() as u32);
    }

    /// The filter of the block at `position`, if it has one.
    pub fn filter(&self, position: u32) -> Option<&[u64]> {
        let position = position as usize;
        let start = if position == 0 { 0 } else { self.ends[position - 1] as usize };
        let words = &self.words[start..*self.ends.get(position)? as usize];
        (!words.is_empty()).then_some(words)
    }

    /// Number of blocks (with or without a filter).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no block.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether some block has a filter.
    pub fn any(&self) -> bool {
        !self.words.is_empty()
    }

    /// Whether the block at `position` may hold every word of `hashes`.
    pub fn may_contain_all(&self, position: u32, hashes: &[u64]) -> bool {
        match self.filter(position) {
            None => true,
            Some(bits) => hashes.iter().all(|&hash| may_contain_probes(bits, hash, self.probes)),
        }
    }

    /// Heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.words.capacity() * 8 + self.ends.capacity() * 4
    }
}

/// Sets the `probes` probes of `hash` in `bits` (a power of two of u64), as
/// the builder does for [`PROBES`] (for measurements of other counts).
pub fn add_probes(bits: &mut [u64], hash: u64, probes: u32) {
    debug_assert!(bits.len().is_power_of_two());
    let mask = (bits.len() as u64 * 64) - 1;
    for probe in 0..probes {
        let position = probe_position(hash, probe, mask);
        bits[(position >> 6) as usize] |= 1 << (position & 63);
    }
}

/// [`may_contain`] with `probes` probes.
#[inline]
pub fn may_contain_probes(bits: &[u64], hash: u64, probes: u32) -> bool {
    debug_assert!(bits.len().is_power_of_two());
    if probes == PROBES {
        let words_mask = bits.len() as u64 - 1;
        return probe_words(hash, words_mask).iter().all(|&(word, want)| bits[word] & want == want);
    }
    let mask = (bits.len() as u64 * 64) - 1;
    (0..probes).all(|probe| {
        let position = probe_position(hash, probe, mask);
        bits[(position >> 6) as usize] & (1 << (position & 63)) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::words::word_hash;

    #[test]
    fn every_added_word_is_found_after_folding() {
        for words in [0_usize, 1, 5, 100, 1_000, 5_000, 20_000, 100_000] {
            let mut builder = WordFilterBuilder::new();
            let names: Vec<String> = (0..words).map(|word| format!("w{word}x")).collect();
            for name in &names {
                builder.add_hash(word_hash(name.as_bytes()));
                builder.add_hash(word_hash(name.as_bytes()));
            }
            let filter = builder.finish();
            assert!(filter.bytes() * 8 >= FILTER_BITS_MIN);
            assert!(filter.bytes() * 8 <= BUILD_BITS);
            for name in &names {
                assert!(filter.may_contain(word_hash(name.as_bytes())), "{words} words: {name} missed");
            }
            if (50..BUILD_BITS / BITS_PER_WORD / 2).contains(&words) {
                // Sized to between BITS_PER_WORD and twice that per word (the
                // estimate is within a few percent).
                let bits_per_word = filter.bytes() * 8 / words;
                assert!(
                    (BITS_PER_WORD * 9 / 10..=BITS_PER_WORD * 22 / 10).contains(&bits_per_word),
                    "{words}: {bits_per_word}"
                );
                let false_positives = (0..10_000)
                    .filter(|probe| filter.may_contain(word_hash(format!("absent{probe}").as_bytes())))
                    .count();
                assert!(false_positives < 300, "{words} words: {false_positives} of 10000");
            }
        }
    }

    #[test]
    fn the_fast_probes_are_the_probe_rule() {
        for word in 0..2_000 {
            let hash = word_hash(format!("w{word}").as_bytes());
            for words_log2 in [0, 1, 3, 8, 11] {
                let words = 1_usize << words_log2;
                let mut by_rule = vec![0_u64; words];
                for probe in 0..PROBES {
                    let position = probe_position(hash, probe, (words * 64 - 1) as u64);
                    by_rule[(position >> 6) as usize] |= 1 << (position & 63);
                }
                let mut fast = vec![0_u64; words];
                for (index, bits) in probe_words(hash, words as u64 - 1) {
                    fast[index] |= bits;
                }
                assert_eq!(fast, by_rule, "{word} in {words} words");
                assert!(may_contain_probes(&by_rule, hash, PROBES));
            }
        }
    }

    #[test]
    fn bodies_add_their_words_of_three_bytes_or_more_case_folded() {
        let mut builder = WordFilterBuilder::new();
        builder.add_body(b"ERROR blk_123: Connection reset by peer 10.0.0.1");
        let filter = builder.finish();
        for word in ["error", "Error", "BLK_123", "connection", "peer", "RESET"] {
            assert!(filter.may_contain(word_hash(word.as_bytes())), "{word}");
        }
        // Five words of three bytes or more ("by", "10", "0" and "1" are
        // left out), at least BITS_PER_WORD bits each: 64 bits.
        assert_eq!(filter.bytes() * 8, 64);
        let mut short = WordFilterBuilder::new();
        short.add_body(b"by 10 0 1 a b cd");
        assert!(short.finish().words().iter().all(|&word| word == 0), "only short words: an empty filter");
        assert!(WordFilterBuilder::new().finish().words().iter().all(|&word| word == 0));
    }
}
