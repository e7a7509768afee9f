//! Tag sets (streams) of one segment: which distinct sets of pairs its
//! entries carry, and which blocks hold each set (DESIGN.md section 12).
//!
//! See the [module documentation](crate::index) for the caps and the
//! fallback. Two representations of "which blocks hold which set":
//!
//! * while a segment is written, **by block**: each block appends the
//!   numbers of its sets to one flat vector (4 bytes per block and set, no
//!   allocation per set); a query scans it, which costs a few milliseconds
//!   for the one active segment of a shard;
//! * once decoded from a file, **by set**: each set's increasing block
//!   positions as delta varints (about 2 bytes per block and set), with an
//!   offset per set, so a query decodes only the postings of the sets that
//!   match.

use crate::index::set_table::{SetTable, Sets};

/// Which blocks hold which set.
#[derive(Clone, Debug)]
pub(crate) enum SetBlocks {
    /// Per block position, its set numbers (`ends[position]` is the end of
    /// that block's numbers in `sets`); one end per block pushed.
    ByBlock { sets: Vec<u32>, ends: Vec<u32> },
    /// Per set, the delta varints of its increasing block positions
    /// (`deltas[offsets[set]..offsets[set + 1]]`): the first position, then
    /// each difference (>= 1) from the previous one.
    BySet { offsets: Vec<u32>, deltas: Vec<u8> },
}

/// The tag sets of a segment. Members are pair numbers
/// ([`crate::index::segment_index::PairTerm::id`]).
#[derive(Clone, Debug)]
pub(crate) struct TagSets {
    /// Cap on distinct sets.
    pub(crate) sets_max: usize,
    /// Cap on cells: members of all sets plus (block, set) postings.
    pub(crate) cells_max: usize,
    pub(crate) cells: usize,
    /// Blocks at this position and later record no set.
    pub(crate) saturated_from: Option<u32>,
    /// Number of distinct sets.
    pub(crate) count: usize,
    /// While blocks are pushed: members of every set, each set's
    /// increasing, set after set (empty once decoded: `pair_sets` holds
    /// the same, and is what queries need).
    pub(crate) members: Vec<u32>,
    /// End of each set's members (empty once decoded).
    pub(crate) ends: Vec<u32>,
    /// Per pair number, the increasing numbers of the sets that hold it
    /// (derived from `members`; not stored in the file).
    pub(crate) pair_sets: Vec<Vec<u32>>,
    pub(crate) blocks: SetBlocks,
    /// Set numbers by their members, while blocks are pushed.
    table: SetTable,
    /// Per set of the block being pushed, its number if known (reused).
    found: Vec<Option<u32>>,
}

impl PartialEq for TagSets {
    fn eq(&self, other: &Self) -> bool {
        // Pairs after the last one in a set have no list while building.
        let used = |pair_sets: &[Vec<u32>]| {
            pair_sets.len() - pair_sets.iter().rev().take_while(|sets| sets.is_empty()).count()
        };
        self.sets_max == other.sets_max
            && self.cells_max == other.cells_max
            && self.cells == other.cells
            && self.count == other.count
            && self.saturated_from == other.saturated_from
            && self.pair_sets[..used(&self.pair_sets)] == other.pair_sets[..used(&other.pair_sets)]
            && self.by_set() == other.by_set()
    }
}

impl Eq for TagSets {}

impl TagSets {
    pub(crate) fn new(sets_max: usize, cells_max: usize) -> Self {
        Self {
            sets_max,
            cells_max,
            cells: 0,
            count: 0,
            saturated_from: None,
            members: Vec::new(),
            ends: Vec::new(),
            pair_sets: Vec::new(),
            blocks: SetBlocks::ByBlock { sets: Vec::new(), ends: Vec::new() },
            table: SetTable::default(),
            found: Vec::new(),
        }
    }

    /// Sets decoded from a file: `pair_sets` per pair number, the sets
    /// that hold it; `members` the total of the sets' members.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decoded(
        sets_max: usize,
        cells_max: usize,
        saturated_from: Option<u32>,
        count: usize,
        pair_sets: Vec<Vec<u32>>,
        members: usize,
        offsets: Vec<u32>,
        deltas: Vec<u8>,
        postings: usize,
    ) -> Self {
        Self {
            cells: members + postings,
            count,
            saturated_from,
            pair_sets,
            blocks: SetBlocks::BySet { offsets, deltas },
            ..Self::new(sets_max, cells_max)
        }
    }

    /// The increasing numbers of the sets that hold pair `pair`.
    pub(crate) fn sets_of_pair(&self, pair: u32) -> &[u32] {
        self.pair_sets.get(pair as usize).map_or(&[], Vec::as_slice)
    }

    /// Number of distinct sets.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Records that the block at `position` (the next one) holds `sets`, each
    /// the increasing pair numbers of one set, or saturates from it if
    /// `sets` is `None` (a pair of the block is not indexed) or the block
    /// would go over a cap. Checks the caps against the block's cells
    /// before adding any, so a block is recorded whole or not at all.
    /// `sets` is the members of all sets, set after set, and the end of each.
    pub(crate) fn push_block(&mut self, position: u32, sets: Option<(&[u32], &[u32])>) {
        let SetBlocks::ByBlock { ends, .. } = &self.blocks else {
            panic!("a decoded index is sealed: no block can be added to it");
        };
        debug_assert_eq!(ends.len(), position as usize);
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        if self.saturated_from.is_none() {
            match sets {
                None => self.saturated_from = Some(position),
                Some((all_members, set_ends)) => {
                    // New sets add their members and one posting each; known
                    // sets one posting: bound by the worst case.
                    let cells = all_members.len() + set_ends.len();
                    if self.count + set_ends.len() > self.sets_max || self.cells + cells > self.cells_max {
                        self.saturated_from = Some(position);
                    } else {
                        let block = Sets { members: all_members, ends: set_ends };
                        found.resize(set_ends.len(), None);
                        self.table.find_all(
                            Sets { members: &self.members, ends: &self.ends },
                            block,
                            |index, number| found[index] = number,
                        );
                        for (index, known) in found.iter_mut().enumerate() {
                            if known.is_none() {
                                *known = Some(self.add(block.set(index as u32)));
                            }
                        }
                    }
                }
            }
        }
        let SetBlocks::ByBlock { sets: block_sets, ends } = &mut self.blocks else {
            unreachable!("checked above");
        };
        block_sets.extend(found.iter().flatten());
        ends.push(block_sets.len() as u32);
        self.cells += found.len();
        self.found = found;
    }

    /// Adds a set the segment does not hold yet: its number.
    fn add(&mut self, set: &[u32]) -> u32 {
        let number = self.count as u32;
        self.members.extend_from_slice(set);
        self.ends.push(self.members.len() as u32);
        self.table.insert(Sets { members: &self.members, ends: &self.ends }, number, set);
        self.cells += set.len();
        self.count += 1;
        for &member in set {
            let member = member as usize;
            if self.pair_sets.len() <= member {
                self.pair_sets.resize_with(member + 1, Vec::new);
            }
            self.pair_sets[member].push(number);
        }
        number
    }

    /// Positions, increasing, of the blocks that hold at least one of
    /// `sets` (increasing set numbers). Every such block is before
    /// [`saturated_from`](Self::saturated_from).
    pub(crate) fn blocks_of(&self, sets: &[u32]) -> Vec<u32> {
        if sets.is_empty() {
            return Vec::new();
        }
        match &self.blocks {
            SetBlocks::ByBlock { sets: block_sets, ends } => {
                let mut wanted = vec![0_u64; self.len().div_ceil(64)];
                for &set in sets {
                    wanted[set as usize / 64] |= 1 << (set % 64);
                }
                let mut out = Vec::new();
                let mut start = 0;
                for (position, &end) in ends.iter().enumerate() {
                    let held = &block_sets[start..end as usize];
                    if held.iter().any(|&set| wanted[set as usize / 64] & (1 << (set % 64)) != 0) {
                        out.push(position as u32);
                    }
                    start = end as usize;
                }
                out
            }
            SetBlocks::BySet { offsets, deltas } => {
                let mut out = Vec::new();
                for &set in sets {
                    let bytes = &deltas[offsets[set as usize] as usize..offsets[set as usize + 1] as usize];
                    let mut position = 0_u32;
                    for_each_varint(bytes, |delta| {
                        position = position.wrapping_add(delta);
                        out.push(position);
                    });
                }
                if sets.len() > 1 {
                    out.sort_unstable();
                    out.dedup();
                }
                out
            }
        }
    }

    /// Calls `each(members, blocks)` for every set in number order: its
    /// increasing pair numbers and its increasing block positions, as the
    /// file stores them. Flat buffers, no allocation per set (the writer
    /// encodes a full segment's sets when it seals it, on the shard's core).
    pub(crate) fn for_each_set(&self, mut each: impl FnMut(&[u32], &[u32])) {
        let (members, member_ends) = if self.ends.len() == self.count {
            (std::borrow::Cow::Borrowed(&self.members[..]), std::borrow::Cow::Borrowed(&self.ends[..]))
        } else {
            let lists: Vec<&[u32]> = self.pair_sets.iter().map(Vec::as_slice).collect();
            let (flat, ends) = invert(&lists, self.count);
            (std::borrow::Cow::Owned(flat), std::borrow::Cow::Owned(ends))
        };
        let mut member_start = 0;
        match &self.blocks {
            SetBlocks::ByBlock { sets, ends } => {
                // Counting sort of (set, block) by set, blocks increasing.
                let mut lists: Vec<&[u32]> = Vec::with_capacity(ends.len());
                let mut start = 0;
                for &end in ends {
                    lists.push(&sets[start..end as usize]);
                    start = end as usize;
                }
                let (flat, block_ends) = invert(&lists, self.count);
                let mut block_start = 0;
                for (&member_end, &block_end) in member_ends.iter().zip(&block_ends) {
                    each(&members[member_start..member_end as usize], &flat[block_start..block_end as usize]);
                    member_start = member_end as usize;
                    block_start = block_end as usize;
                }
            }
            SetBlocks::BySet { offsets, deltas } => {
                let mut blocks = Vec::new();
                for (set, &member_end) in member_ends.iter().enumerate() {
                    blocks.clear();
                    let mut position = 0_u32;
                    for_each_varint(&deltas[offsets[set] as usize..offsets[set + 1] as usize], |delta| {
                        position = position.wrapping_add(delta);
                        blocks.push(position);
                    });
                    each(&members[member_start..member_end as usize], &blocks);
                    member_start = member_end as usize;
                }
            }
        }
    }

    /// Per set, its increasing block positions: the by-set form of the
    /// postings, as the file stores them.
    pub(crate) fn by_set(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.len()];
        match &self.blocks {
            SetBlocks::ByBlock { sets, ends } => {
                let mut start = 0;
                for (position, &end) in ends.iter().enumerate() {
                    for &set in &sets[start..end as usize] {
                        out[set as usize].push(position as u32);
                    }
                    start = end as usize;
                }
            }
            SetBlocks::BySet { offsets, deltas } => {
                for (set, list) in out.iter_mut().enumerate() {
                    let mut position = 0_u32;
                    for_each_varint(&deltas[offsets[set] as usize..offsets[set + 1] as usize], |delta| {
                        position = position.wrapping_add(delta);
                        list.push(position);
                    });
                }
            }
        }
        out
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.members.shrink_to_fit();
        self.ends.shrink_to_fit();
        for sets in &mut self.pair_sets {
            sets.shrink_to_fit();
        }
        match &mut self.blocks {
            SetBlocks::ByBlock { sets, ends } => {
                sets.shrink_to_fit();
                ends.shrink_to_fit();
            }
            SetBlocks::BySet { offsets, deltas } => {
                offsets.shrink_to_fit();
                deltas.shrink_to_fit();
            }
        }
    }

    /// Estimated heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        let vectors = match &self.blocks {
            SetBlocks::ByBlock { sets, ends } => (sets.capacity() + ends.capacity()) * 4,
            SetBlocks::BySet { offsets, deltas } => offsets.capacity() * 4 + deltas.capacity(),
        };
        let pair_sets: usize = self.pair_sets.iter().map(|sets| 24 + sets.capacity() * 4).sum();
        vectors + pair_sets + (self.members.capacity() + self.ends.capacity()) * 4 + self.table.memory_bytes()
    }
}

/// Inverts `lists` (list `i` holds values `< count`): for each value, the
/// increasing `i` of the lists that hold it, flat, with each value's end.
fn invert(lists: &[&[u32]], count: usize) -> (Vec<u32>, Vec<u32>) {
    let mut ends = vec![0_u32; count];
    for list in lists {
        for &value in *list {
            ends[value as usize] += 1;
        }
    }
    let mut total = 0;
    for end in &mut ends {
        total += *end;
        *end = total;
    }
    let mut next: Vec<u32> = std::iter::once(0).chain(ends.iter().copied()).take(count).collect();
    let mut flat = vec![0_u32; total as usize];
    for (index, list) in lists.iter().enumerate() {
        for &value in *list {
            flat[next[value as usize] as usize] = index as u32;
            next[value as usize] += 1;
        }
    }
    (flat, ends)
}

/// Calls `each` with every LEB128 varint of `bytes` (well formed: checked
/// when the file was decoded).
#[inline]
pub(crate) fn for_each_varint(bytes: &[u8], mut each: impl FnMut(u32)) {
    let mut value = 0_u32;
    let mut shift = 0;
    for &byte in bytes {
        value |= u32::from(byte & 0x7f).wrapping_shl(shift);
        if byte & 0x80 == 0 {
            each(value);
            value = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
}

/// The intersection of increasing lists, increasing: walks the shortest,
/// moving a cursor forward in each other list by galloping (steps of 1, 2,
/// 4, ... then a binary search), so lists of similar length cost a merge
/// and a short list against a long one a search per value.
pub(crate) fn intersect(lists: &[&[u32]]) -> Vec<u32> {
    let Some(shortest) = lists.iter().min_by_key(|list| list.len()) else { return Vec::new() };
    let mut cursors = vec![0_usize; lists.len()];
    let mut out = Vec::new();
    'values: for &value in *shortest {
        for (list, cursor) in lists.iter().zip(&mut cursors) {
            *cursor = gallop(list, *cursor, value);
            match list.get(*cursor) {
                None => break 'values,
                Some(&found) if found != value => continue 'values,
                Some(_) => {}
            }
        }
        out.push(value);
    }
    out
}

/// The first position at or after `from` in increasing `list` whose value
/// is at least `value` (`list.len()` if none).
fn gallop(list: &[u32], from: usize, value: u32) -> usize {
    let mut step = 1;
    let mut low = from;
    let mut high = from;
    while high < list.len() && list[high] < value {
        low = high + 1;
        high += step;
        step *= 2;
    }
    let high = high.min(list.len());
    low + list[low..high].partition_point(|&item| item < value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn intersect_agrees_with_a_set_intersection() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x1a7e);
        for round in 0..500 {
            let lists: Vec<Vec<u32>> = (0..rng.gen_range(1..4))
                .map(|_| {
                    let mut list: Vec<u32> =
                        (0..rng.gen_range(0..[5, 50, 500][round % 3])).map(|_| rng.gen_range(0..300)).collect();
                    list.sort_unstable();
                    list.dedup();
                    list
                })
                .collect();
            let slices: Vec<&[u32]> = lists.iter().map(Vec::as_slice).collect();
            let expected: Vec<u32> =
                lists[0].iter().copied().filter(|value| lists.iter().all(|list| list.contains(value))).collect();
            assert_eq!(intersect(&slices), expected, "round {round}");
        }
        assert_eq!(intersect(&[]), Vec::<u32>::new());
    }
}
