//! What one block gives the index: its distinct `key=value` pairs, its
//! distinct tag sets, and (see [`crate::index::word_filter`]) the words of its
//! bodies, gathered entry by entry while the block fills.
//!
//! The shard's writer feeds one [`BlockTerms`] per pending block as entries
//! are appended, and recovery feeds one per block it scans, in the same
//! entry order, so both hand the index the same pairs and sets in the same
//! order (the order decides which pairs and sets an index over its caps
//! takes, so it must not depend on who built the block).
//!
//! # Blocks replicated as they were encoded
//!
//! A block that another node encoded is stored as it is. On a leader, which
//! checks each pushed block entry by entry
//! (`codec::block::check_foreign_block_with`), the check feeds a
//! `BlockTerms` while it has the block decompressed, so a pushed block is
//! indexed like a written one (the cost is the write path's). A tier
//! replica does not decompress blocks: it gets only the union of each
//! block's pairs (`Proposal.block_tags`), and so does a leader for blocks
//! whose tags came with them ([`BlockTerms::from_tag_set`]): the union is
//! recorded as the block's one tag set, and the block gets no word filter.
//! That is always correct (the union holds every entry's set, and a block
//! without a filter is a candidate for any word); such blocks are only
//! pruned less. A tier leader therefore sends each block's terms with its
//! proposals too (`Proposal.block_terms`, laid out by `tier::proposal`):
//! its pairs in order, its sets and its folded word filter, from which a
//! replica rebuilds the very `BlockTerms` the leader indexed
//! ([`BlockTerms::from_parts`]). Only a replica of an older leader, or a
//! block a snapshot brings, falls back to the union.
//!
//! # Cost on the write path
//!
//! Per entry: one hash probe per tag (a new pair appends its key and value
//! to one buffer of the block's pair text), a sort of the entry's few pair
//! numbers, and one hash probe for its tag set (a new set appends its pair
//! numbers to one flat vector). Nothing is allocated per pair or per set:
//! only the block's few vectors grow, and growing a table rehashes nothing
//! (each pair's and set's hash is kept).

use std::borrow::Cow;

use hashbrown::HashTable;

use crate::codec::block::TagSet;
use crate::index::set_table::set_hash;
use crate::index::word_filter::{WordFilter, WordFilterBuilder};

/// The distinct pairs and tag sets of one block's entries, in order of
/// first appearance, plus its word filter while it is built.
///
/// A *tag set* is the set of all pairs of one entry, stored as the sorted,
/// distinct numbers of its pairs (positions in [`pairs`](Self::pairs)). An
/// entry without tags has the empty set, which is not recorded (no tag
/// predicate can select it through a set).
#[derive(Clone, Debug, Default)]
pub struct BlockTerms {
    hasher: ahash::RandomState,
    /// Positions in `pairs`, looked up by the pair's hash.
    pair_table: HashTable<u32>,
    /// Per pair, where its key and value are in `pair_text`: the key's
    /// start, the value's start, the value's end.
    pairs: Vec<[u32; 3]>,
    /// Keys and values of all pairs, one after the other (one buffer for
    /// the block rather than two strings per pair).
    pair_text: String,
    /// The hash of each pair, so that growing `pair_table` hashes nothing.
    pair_hashes: Vec<u64>,
    /// Set numbers, looked up by the hash of their member list.
    set_table: HashTable<u32>,
    /// Members of every set, set after set.
    set_members: Vec<u32>,
    /// End of each set's members in `set_members`.
    set_ends: Vec<u32>,
    /// The hash of each set, so that growing `set_table` hashes nothing.
    set_hashes: Vec<u64>,
    /// The pair numbers of the entry being added.
    scratch: Vec<u32>,
    /// Sets are unknown: the block was described by the union of its pairs
    /// only ([`from_union`](Self::from_union)), recorded as one set.
    union_only: bool,
    words: Option<WordFilterBuilder>,
    /// The block's finished word filter, when another node built it
    /// ([`from_parts`](Self::from_parts)).
    filter: Option<WordFilter>,
}

impl BlockTerms {
    /// No entry yet; words are not gathered.
    pub fn new() -> Self {
        Self::default()
    }

    /// No entry yet; the words of the bodies given to
    /// [`add_body`](Self::add_body) are gathered into a word filter.
    pub fn with_words() -> Self {
        Self { words: Some(WordFilterBuilder::new()), ..Self::default() }
    }

    /// A block known only by the union of its entries' pairs (a block
    /// replicated with its tags but not its entries' sets): that union is
    /// recorded as the block's one tag set. A superset of every entry's set,
    /// so a conjunction that some entry satisfies is satisfied by the union
    /// too: the block is never missed, only pruned less.
    pub fn from_union<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut terms = Self::new();
        terms.add_entry(pairs);
        terms.union_only = true;
        terms
    }

    /// [`from_union`](Self::from_union) over a [`TagSet`].
    pub fn from_tag_set(tags: &TagSet) -> Self {
        Self::from_union(tags.iter().map(|(key, value)| (&**key, &**value)))
    }

    /// The terms another node gathered for a block, rebuilt: its distinct
    /// pairs in their order, its distinct sets (each the increasing
    /// numbers of its pairs in `pairs`), in their order, and its finished
    /// word filter, if it has one. The result indexes exactly like the
    /// sender's own (same pairs and sets in the same order).
    ///
    /// # Errors
    /// A pair given twice, an empty set, a set whose numbers do not
    /// increase or name no pair, or a set given twice: what the sender
    /// never makes, so the terms are not to be trusted.
    pub fn from_parts<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        sets: impl IntoIterator<Item = &'a [u32]>,
        filter: Option<WordFilter>,
    ) -> Result<Self, String> {
        let mut terms = Self::new();
        for (position, (key, value)) in pairs.into_iter().enumerate() {
            if terms.pair_number(key, value) as usize != position {
                return Err(format!("pair {position} ({key}={value}) is given twice"));
            }
        }
        let pair_count = terms.pairs.len() as u32;
        for (position, set) in sets.into_iter().enumerate() {
            let increasing = set.windows(2).all(|two| two[0] < two[1]);
            if set.is_empty() || !increasing || set.last().is_some_and(|&last| last >= pair_count) {
                return Err(format!("set {position} is not increasing numbers of the block's {pair_count} pairs"));
            }
            terms.intern_set(set);
            if terms.set_ends.len() != position + 1 {
                return Err(format!("set {position} is given twice"));
            }
        }
        terms.filter = filter;
        Ok(terms)
    }

    /// Adds one entry's tags (repeats allowed).
    pub fn add_entry<'a>(&mut self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut members = std::mem::take(&mut self.scratch);
        members.clear();
        for (key, value) in tags {
            members.push(self.pair_number(key, value));
        }
        members.sort_unstable();
        members.dedup();
        if !members.is_empty() {
            self.intern_set(&members);
        }
        self.scratch = members;
    }

    /// Adds the words of one entry's body to the word filter, if this block
    /// gathers words.
    #[inline]
    pub fn add_body(&mut self, body: &[u8]) {
        if let Some(words) = &mut self.words {
            words.add_body(body);
        }
    }

    fn pair_number(&mut self, key: &str, value: &str) -> u32 {
        let hash = self.hasher.hash_one((key, value));
        let (pairs, text) = (&self.pairs, &self.pair_text);
        let found = self.pair_table.find(hash, |&number| {
            let [key_start, value_start, value_end] = pairs[number as usize];
            text.as_bytes()[key_start as usize..value_start as usize] == *key.as_bytes()
                && text.as_bytes()[value_start as usize..value_end as usize] == *value.as_bytes()
        });
        if let Some(&number) = found {
            return number;
        }
        let number = self.pairs.len() as u32;
        // Keys and values are bounded (limits::TAG_KEY_BYTES_MAX and
        // TAG_VALUE_BYTES_MAX) and so are a block's entries, so a block's
        // pair text stays far below 4 GiB.
        let key_start = self.pair_text.len() as u32;
        self.pair_text.push_str(key);
        let value_start = self.pair_text.len() as u32;
        self.pair_text.push_str(value);
        self.pairs.push([key_start, value_start, self.pair_text.len() as u32]);
        self.pair_hashes.push(hash);
        let hashes = &self.pair_hashes;
        self.pair_table.insert_unique(hash, number, |&number| hashes[number as usize]);
        number
    }

    fn intern_set(&mut self, members: &[u32]) {
        let hash = set_hash(members);
        let (members_of, ends) = (&self.set_members, &self.set_ends);
        let slice = |number: u32| {
            let start = if number == 0 { 0 } else { ends[number as usize - 1] as usize };
            &members_of[start..ends[number as usize] as usize]
        };
        if self.set_table.find(hash, |&number| slice(number) == members).is_some() {
            return;
        }
        let number = self.set_ends.len() as u32;
        self.set_members.extend_from_slice(members);
        self.set_ends.push(self.set_members.len() as u32);
        self.set_hashes.push(hash);
        let hashes = &self.set_hashes;
        self.set_table.insert_unique(hash, number, |&number| hashes[number as usize]);
    }

    /// The pair numbered `number`.
    fn pair(&self, number: usize) -> (&str, &str) {
        let [key_start, value_start, value_end] = self.pairs[number];
        (
            &self.pair_text[key_start as usize..value_start as usize],
            &self.pair_text[value_start as usize..value_end as usize],
        )
    }

    /// The distinct pairs, in order of first appearance.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.pairs.len()).map(|number| self.pair(number))
    }

    /// Number of distinct pairs.
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// The distinct non-empty tag sets, in order of first appearance, each
    /// as the increasing numbers of its pairs in [`pairs`](Self::pairs).
    pub fn sets(&self) -> impl ExactSizeIterator<Item = &[u32]> + '_ {
        (0..self.set_ends.len()).map(move |number| {
            let start = if number == 0 { 0 } else { self.set_ends[number - 1] as usize };
            &self.set_members[start..self.set_ends[number] as usize]
        })
    }

    /// Number of distinct non-empty tag sets.
    pub fn set_count(&self) -> usize {
        self.set_ends.len()
    }

    /// Total members over all sets.
    pub fn set_members(&self) -> usize {
        self.set_members.len()
    }

    /// Whether the sets are only the union of the pairs
    /// ([`from_union`](Self::from_union)).
    pub fn union_only(&self) -> bool {
        self.union_only
    }

    /// The distinct pairs as a [`TagSet`] (for replication, which carries
    /// a block's pairs).
    pub fn tag_set(&self) -> TagSet {
        self.pairs().map(|(key, value)| (Box::from(key), Box::from(value))).collect()
    }

    /// The word filter builder, if this node gathers the block's words.
    pub fn words(&self) -> Option<&WordFilterBuilder> {
        self.words.as_ref()
    }

    /// The block's word filter, finished (folded to its size), if words
    /// were gathered or another node sent the filter.
    pub fn word_filter(&self) -> Option<Cow<'_, WordFilter>> {
        match (&self.words, &self.filter) {
            (Some(words), _) => Some(Cow::Owned(words.finish())),
            (None, filter) => filter.as_ref().map(Cow::Borrowed),
        }
    }

    /// Finishes the word filter now (the block is closed): what reads it
    /// later, more than once (a tier leader encodes it for the replicas,
    /// then indexes it), borrows it, and the builder's buffer is freed.
    pub fn finish_words(&mut self) {
        if let Some(words) = self.words.take() {
            self.filter = Some(words.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(terms: &BlockTerms) -> Vec<Vec<(&str, &str)>> {
        let pairs: Vec<_> = terms.pairs().collect();
        terms.sets().map(|set| set.iter().map(|&number| pairs[number as usize]).collect()).collect()
    }

    #[test]
    fn entries_give_distinct_pairs_and_sets_in_order_of_first_appearance() {
        let mut terms = BlockTerms::new();
        terms.add_entry([("app", "web"), ("host", "a")]);
        terms.add_entry([("host", "a"), ("app", "web"), ("host", "a")]);
        terms.add_entry([]);
        terms.add_entry([("app", "db")]);
        terms.add_entry([("app", "web"), ("host", "b")]);
        terms.add_entry([("app", "db")]);
        assert_eq!(terms.pairs().collect::<Vec<_>>(), [("app", "web"), ("host", "a"), ("app", "db"), ("host", "b")]);
        assert_eq!(
            sets(&terms),
            [vec![("app", "web"), ("host", "a")], vec![("app", "db")], vec![("app", "web"), ("host", "b")]]
        );
        assert_eq!((terms.set_count(), terms.set_members(), terms.pair_count()), (3, 5, 4));
        assert!(!terms.union_only());
    }

    #[test]
    fn terms_rebuilt_from_their_parts_index_like_the_original() {
        let mut original = BlockTerms::with_words();
        for (tags, body) in [
            (vec![("app", "web"), ("host", "a")], "GET /index served"),
            (vec![("host", "b")], "connection reset"),
            (vec![("app", "web"), ("host", "b")], "GET /health served"),
        ] {
            original.add_entry(tags);
            original.add_body(body.as_bytes());
        }
        let pairs: Vec<_> = original.pairs().collect();
        let sets: Vec<&[u32]> = original.sets().collect();
        let filter = original.word_filter().map(Cow::into_owned);
        let rebuilt = BlockTerms::from_parts(pairs.iter().copied(), sets.iter().copied(), filter).unwrap();
        assert_eq!(rebuilt.pairs().collect::<Vec<_>>(), pairs);
        assert_eq!(rebuilt.sets().collect::<Vec<_>>(), sets);
        assert_eq!(rebuilt.word_filter(), original.word_filter());
        assert!(!rebuilt.union_only());
        let without = BlockTerms::from_parts(pairs.iter().copied(), sets.iter().copied(), None).unwrap();
        assert_eq!(without.word_filter(), None);

        let refused = |pairs: &[(&str, &str)], sets: &[&[u32]]| {
            BlockTerms::from_parts(pairs.iter().copied(), sets.iter().copied(), None).unwrap_err()
        };
        assert!(refused(&[("a", "1"), ("a", "1")], &[]).contains("twice"));
        assert!(refused(&[("a", "1")], &[&[]]).contains("set 0"));
        assert!(refused(&[("a", "1"), ("b", "2")], &[&[1, 0]]).contains("set 0"));
        assert!(refused(&[("a", "1"), ("b", "2")], &[&[0, 0]]).contains("set 0"));
        assert!(refused(&[("a", "1")], &[&[1]]).contains("set 0"));
        assert!(refused(&[("a", "1"), ("b", "2")], &[&[0], &[0, 1], &[0]]).contains("set 2 is given twice"));
    }

    #[test]
    fn a_union_is_one_set() {
        let terms = BlockTerms::from_union([("a", "1"), ("b", "2"), ("a", "1")]);
        assert_eq!(sets(&terms), [vec![("a", "1"), ("b", "2")]]);
        assert!(terms.union_only());
        assert_eq!(BlockTerms::from_union([]).set_count(), 0);
    }

    #[test]
    fn many_sets_intern_without_collision_mixups() {
        let mut terms = BlockTerms::new();
        let values: Vec<String> = (0..50).map(|value| value.to_string()).collect();
        for round in 0..3 {
            for a in 0..50 {
                let b = (a * 7 + round) % 50;
                terms.add_entry([("a", values[a].as_str()), ("b", values[b].as_str())]);
            }
        }
        assert_eq!(terms.pair_count(), 100);
        assert_eq!(terms.set_count(), 150);
        let all = sets(&terms);
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 150);
    }
}
