//! The numbers of a segment's distinct tag sets, looked up by their members
//! a block at a time (the write path's block close, see
//! [`TagSets::push_block`](crate::index::tag_sets::TagSets)).
//!
//! # Why not a general hash map
//!
//! A segment of entries with varied tags holds hundreds of thousands of
//! sets, so the table and the members are far larger than the caches, and
//! looking a set up costs three dependent cache misses: the slot, then the
//! set's end (where its members start), then its members, to compare them.
//! One at a time, that was most of the cost of closing a block.
//!
//! A block brings all its sets at once, so this table looks them up in
//! **stages**, each touching one kind of memory for every set of the block
//! and prefetching what the next stage reads: the slots, then the ends of
//! the sets whose tag matched, then their members, and only then the exact
//! lookup, whose loads now hit the cache. The misses of a block's sets
//! overlap instead of following each other. The prefetches are hints: the
//! last stage is an ordinary lookup, exact whatever they fetched.
//!
//! # Layout
//!
//! Open addressing with linear probing over a power of two of `u64` slots,
//! at most half full: 0 is empty, otherwise the slot holds the set's number
//! plus one in its low 32 bits and the high 32 bits of its hash (the tag)
//! in its high 32 bits, so a probe rejects almost every other set without
//! reading its members. The members themselves stay with the caller's
//! [`TagSets`](crate::index::tag_sets::TagSets): the table borrows them.

/// Slots of a new table (a power of two).
const SLOTS_MIN: usize = 1024;

/// Set numbers by their members.
#[derive(Clone, Debug, Default)]
pub(crate) struct SetTable {
    slots: Vec<u64>,
    len: usize,
    // Reused per block: the hash of each set, and the number it may be.
    hashes: Vec<u64>,
    candidates: Vec<u32>,
}

/// Members of every set (`members`), set after set, with the end of each
/// (`ends`): where the table reads the sets it compares.
#[derive(Clone, Copy)]
pub(crate) struct Sets<'a> {
    pub(crate) members: &'a [u32],
    pub(crate) ends: &'a [u32],
}

impl Sets<'_> {
    fn start(&self, number: u32) -> usize {
        if number == 0 {
            0
        } else {
            self.ends[number as usize - 1] as usize
        }
    }

    pub(crate) fn set(&self, number: u32) -> &[u32] {
        &self.members[self.start(number)..self.ends[number as usize] as usize]
    }
}

/// The hash of a set's members (increasing pair numbers): a multiply per
/// member, then a 128-bit multiply that mixes every bit into both halves.
#[inline]
pub(crate) fn set_hash(members: &[u32]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = members.len() as u64;
    for &member in members {
        hash = (hash ^ u64::from(member)).wrapping_mul(K).rotate_left(26);
    }
    let product = u128::from(hash ^ 0xbf58_476d_1ce4_e5b9) * u128::from(K);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline]
fn tag_of(hash: u64) -> u64 {
    hash >> 32
}

/// Asks the CPU to bring the cache line of `value` closer; nothing else.
#[inline(always)]
fn prefetch<T>(value: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(value) = value {
        // SAFETY: a prefetch reads nothing architecturally and cannot
        // fault; the address is of a live value besides.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl SetTable {
    /// Number of sets.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.slots.capacity() + self.hashes.capacity()) * 8 + self.candidates.capacity() * 4
    }

    /// Calls `each(i, found)` for every set `i` of `block` (the members of
    /// one block's sets, as [`Sets`], distinct): `found` is the number of
    /// the equal set of `known` (the segment's sets so far), if any. Then
    /// the caller adds the new ones with [`insert`](Self::insert), in order.
    pub(crate) fn find_all(&mut self, known: Sets<'_>, block: Sets<'_>, mut each: impl FnMut(usize, Option<u32>)) {
        let count = block.ends.len();
        debug_assert!(
            {
                let mut sets: Vec<&[u32]> = (0..count as u32).map(|index| block.set(index)).collect();
                sets.sort_unstable();
                sets.windows(2).all(|pair| pair[0] != pair[1])
            },
            "a block's sets are distinct: a set twice would be numbered twice"
        );
        self.reserve(known, count);
        let mask = self.slots.len() - 1;
        // Stage 1: hash every set, fetch its first slot.
        self.hashes.clear();
        for index in 0..count as u32 {
            let hash = set_hash(block.set(index));
            prefetch(self.slots.get(hash as usize & mask));
            self.hashes.push(hash);
        }
        // Stage 2: the first set whose tag matches (almost surely the set,
        // if known): fetch its end, which says where its members start.
        self.candidates.clear();
        for &hash in &self.hashes {
            let candidate = self.probe(hash, |_| true);
            if let Some(number) = candidate {
                prefetch(known.ends.get(number.saturating_sub(1) as usize));
            }
            self.candidates.push(candidate.unwrap_or(u32::MAX));
        }
        // Stage 3: fetch the members of each candidate.
        for &candidate in &self.candidates {
            if candidate != u32::MAX {
                prefetch(known.members.get(known.start(candidate)));
            }
        }
        // Stage 4: the exact lookups, on memory now in the cache.
        for (index, &hash) in self.hashes.iter().enumerate() {
            let set = block.set(index as u32);
            each(index, self.probe(hash, |number| known.set(number) == set));
        }
    }

    /// Adds the set numbered `number` (the next number), whose members are
    /// `members` (not in the table).
    pub(crate) fn insert(&mut self, known: Sets<'_>, number: u32, members: &[u32]) {
        self.reserve(known, 1);
        self.place(set_hash(members), number);
        self.len += 1;
    }

    /// The number of the set of `hash` for which `equal` holds, probing
    /// from its slot to the first empty one.
    #[inline]
    fn probe(&self, hash: u64, mut equal: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let entry = self.slots[slot];
            if entry == 0 {
                return None;
            }
            let number = (entry as u32).wrapping_sub(1);
            if entry >> 32 == tag_of(hash) && equal(number) {
                return Some(number);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn place(&mut self, hash: u64, number: u32) {
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        while self.slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = (tag_of(hash) << 32) | u64::from(number + 1);
    }

    /// Makes room for `more` sets, keeping the table at most half full.
    fn reserve(&mut self, known: Sets<'_>, more: usize) {
        let needed = ((self.len + more) * 2).max(SLOTS_MIN);
        if needed <= self.slots.len() {
            return;
        }
        let slots = needed.next_power_of_two();
        self.slots = vec![0; slots];
        for number in 0..self.len as u32 {
            self.place(set_hash(known.set(number)), number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interns `sets` (each a block's sets) as `TagSets` does: the numbers
    /// given to each block's sets.
    fn intern_blocks(table: &mut SetTable, blocks: &[Vec<Vec<u32>>]) -> Vec<Vec<u32>> {
        let (mut members, mut ends) = (Vec::new(), Vec::new());
        let mut numbers = Vec::new();
        for block in blocks {
            let block_members: Vec<u32> = block.concat();
            let block_ends: Vec<u32> = block
                .iter()
                .scan(0, |end, set| {
                    *end += set.len() as u32;
                    Some(*end)
                })
                .collect();
            let mut found = vec![None; block.len()];
            table.find_all(
                Sets { members: &members, ends: &ends },
                Sets { members: &block_members, ends: &block_ends },
                |index, number| found[index] = number,
            );
            let mut block_numbers = Vec::new();
            for (set, found) in block.iter().zip(found) {
                let number = found.unwrap_or_else(|| {
                    let number = ends.len() as u32;
                    members.extend_from_slice(set);
                    ends.push(members.len() as u32);
                    table.insert(Sets { members: &members, ends: &ends }, number, set);
                    number
                });
                block_numbers.push(number);
            }
            numbers.push(block_numbers);
        }
        numbers
    }

    #[test]
    fn equal_sets_get_one_number_and_others_new_ones_in_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5e7);
        // Sets drawn from a small universe (many repeats, prefixes of one
        // another, the empty set) over enough blocks to grow the table.
        let blocks: Vec<Vec<Vec<u32>>> = (0..400)
            .map(|_| {
                let mut block: Vec<Vec<u32>> = Vec::new();
                for _ in 0..rng.gen_range(1..40) {
                    let mut set: Vec<u32> = (0..rng.gen_range(0..4)).map(|_| rng.gen_range(0..40)).collect();
                    set.sort_unstable();
                    set.dedup();
                    if !block.contains(&set) {
                        block.push(set);
                    }
                }
                block
            })
            .collect();
        let mut table = SetTable::default();
        let numbers = intern_blocks(&mut table, &blocks);
        // The model: numbers in order of first appearance.
        let mut seen: Vec<&Vec<u32>> = Vec::new();
        for (block, block_numbers) in blocks.iter().zip(&numbers) {
            for (set, &number) in block.iter().zip(block_numbers) {
                let expected = seen.iter().position(|known| *known == set).unwrap_or_else(|| {
                    seen.push(set);
                    seen.len() - 1
                });
                assert_eq!(number as usize, expected, "{set:?}");
            }
        }
        assert_eq!(table.len(), seen.len());
        assert!(table.slots.len() >= 2 * table.len(), "at most half full");
        assert!(table.slots.len() > SLOTS_MIN, "the table grew: {} sets", table.len());
    }
}
