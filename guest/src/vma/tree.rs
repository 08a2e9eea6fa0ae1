//! The VMA tree: a B+tree of disjoint ranges keyed by their ends, in two arenas.
//!
//! ```text
//! nodes: [VmaNode]   root ──▶ branch: ends[i] = greatest end in child slots[i]
//!                                 └──▶ leaf: ends[i] = vmas[slots[i]].end
//! vmas:  [Vma]       a VMA keeps its index for life: callers hold indices, not references
//! ```
//!
//! Invariants, checked by [`VmaTree::validate`] in the tests:
//! (a) keys are strictly increasing within a node; unused entries hold `u64::MAX`/`NO_INDEX`;
//! (b) a branch's key for a child equals the child's last key;
//! (c) every node but the root holds at least [`MIN_FILL`] entries; all leaves are at depth
//!     `height - 1`;
//! (d) leaves, in order, list the VMAs sorted and disjoint.
//!
//! `find` counts keys ≤ addr at each level without a branch per key, reading only keys
//! and slots (five of a node's eight cache lines: the four of keys and one of slots), so a
//! lookup costs `height` node scans.
//! A full node hands an entry to a sibling with room before it splits (a B*-tree's
//! overflow), so in-order inserts fill nodes: 10 000 VMAs make a tree of height 3. Linux's
//! maple tree makes the same choices (wide nodes, keys are range ends, no half-empty
//! nodes on append) for the same reason: few cache lines per lookup.

use crate::hint::hide;
use alloc::vec::Vec;
use shared::process::{Vma, VmaNode, NO_INDEX, VMA_FANOUT, VMA_TREE_MAX_HEIGHT};

/// A node other than the root never holds fewer entries.
pub const MIN_FILL: usize = VMA_FANOUT / 2;

/// The ordered set of a process's VMAs.
#[derive(Clone, Debug)]
pub struct VmaTree {
    nodes: Vec<VmaNode>,
    vmas: Vec<Vma>,
    free_nodes: Vec<u32>,
    free_vmas: Vec<u32>,
    root: u32,
    height: u32,
    len: usize,
}

impl Default for VmaTree {
    fn default() -> Self {
        Self::new()
    }
}

/// Keys in a group: `rank` picks one of a node's eight groups, then counts keys in it.
const GROUP: usize = 4;

#[inline(always)]
fn le(key: u64, addr: u64) -> usize {
    usize::from(key <= addr)
}

/// Number of keys in `node` that are ≤ `addr` (the unused ones are `u64::MAX`, above every
/// address a VMA can end at). `LAST_ABOVE` says the caller knows the node's last key is
/// above `addr`, which saves a compare.
#[inline(always)]
fn rank<const LAST_ABOVE: bool>(node: &VmaNode, addr: u64) -> usize {
    // Two rounds of compares that do not wait on each other: the last keys of the first
    // seven groups pick the group, then the group's keys are counted. Its last key needs
    // no compare when it is known to be above `addr`: in the first seven, it is why the
    // group was picked; in the eighth, it is the node's last. A binary search's five steps
    // each wait on the last one's load; other splits cost more (docs/PERFORMANCE.md).
    debug_assert!(!LAST_ABOVE || node.ends[VMA_FANOUT - 1] > addr);
    let ends = &node.ends;
    let group = (1..VMA_FANOUT / GROUP).map(|g| le(ends[g * GROUP - 1], addr)).sum::<usize>();
    let base = group * GROUP;
    let keys: &[u64; GROUP] = ends[base..base + GROUP].try_into().unwrap_or(&[u64::MAX; GROUP]);
    let compared = if LAST_ABOVE { GROUP - 1 } else { GROUP };
    base + keys[..compared].iter().map(|&end| le(end, addr)).sum::<usize>()
}

/// Number of keys in `node` that are ≤ `addr`.
#[inline(always)]
fn rank_le(node: &VmaNode, addr: u64) -> usize {
    rank::<false>(node, addr)
}

/// Number of keys in `node` below `key`.
#[inline(always)]
fn rank_lt(node: &VmaNode, key: u64) -> usize {
    // Keys are VMA ends, above zero.
    rank_le(node, key.saturating_sub(1))
}

fn idx(i: u32) -> usize {
    i as usize
}

impl VmaTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            nodes: alloc::vec![VmaNode::empty(true)],
            vmas: Vec::new(),
            free_nodes: Vec::new(),
            free_vmas: Vec::new(),
            root: 0,
            height: 1,
            len: 0,
        }
    }

    /// VMAs in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no VMA.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Levels of nodes (1 for a lone leaf).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The root node's index.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The node arena (what the host reads).
    pub fn nodes(&self) -> &[VmaNode] {
        &self.nodes
    }

    /// The VMA arena (what the host reads; free slots hold stale VMAs).
    pub fn vma_arena(&self) -> &[Vma] {
        &self.vmas
    }

    /// The VMA at `index`.
    pub fn get(&self, index: u32) -> &Vma {
        &self.vmas[idx(index)]
    }

    /// Linux's `find_vma`: the first VMA that ends above `addr` (it may start above too).
    #[inline]
    pub fn find(&self, addr: u64) -> Option<u32> {
        // Below the root, a node's last key is above `addr`: by invariant (b) it equals the
        // parent's key for the node, chosen for being above. Only keys and slots are read
        // on the way down (not the header: the height says where the leaves are, and a slot
        // past `count` is NO_INDEX, which indexes no node).
        // `hide` makes the compiler add arena and offset once per node; otherwise it adds
        // them in every compare's address, and Intel cores split a compare with an indexed
        // address into two micro-ops, so fewer finds fit in flight (docs/PERFORMANCE.md).
        let mut node = hide(&self.nodes[idx(self.root)]);
        let mut i = rank::<false>(node, addr);
        for _ in 1..self.height {
            node = hide(self.nodes.get(idx(*node.slots.get(i)?))?);
            i = rank::<true>(node, addr);
        }
        node.slots.get(i).copied().filter(|&slot| slot != NO_INDEX)
    }

    /// The last VMA that ends at or below `addr` (Linux's `find_vma_prev`'s `pprev`).
    pub fn find_prev(&self, addr: u64) -> Option<u32> {
        self.find_prev_in(self.root, addr)
    }

    fn find_prev_in(&self, n: u32, addr: u64) -> Option<u32> {
        let node = &self.nodes[idx(n)];
        let i = rank_le(node, addr);
        if node.leaf != 0 {
            return i.checked_sub(1).map(|i| node.slots[i]);
        }
        // Child i holds keys above addr, maybe some below too; child i-1 only below.
        let here = (i < node.count as usize).then(|| self.find_prev_in(node.slots[i], addr));
        here.flatten().or_else(|| i.checked_sub(1).map(|i| self.last_in(node.slots[i])))
    }

    fn last_in(&self, mut n: u32) -> u32 {
        loop {
            let node = &self.nodes[idx(n)];
            let slot = node.slots[node.count as usize - 1];
            if node.leaf != 0 {
                return slot;
            }
            n = slot;
        }
    }

    /// Adds `vma`, which must not overlap any VMA in the tree; returns its index.
    pub fn insert(&mut self, vma: Vma) -> u32 {
        debug_assert!(vma.start < vma.end);
        debug_assert!(self.find(vma.start).is_none_or(|i| self.get(i).start >= vma.end));
        let index = match self.free_vmas.pop() {
            Some(free) => {
                self.vmas[idx(free)] = vma;
                free
            }
            None => {
                self.vmas.push(vma);
                u32::try_from(self.vmas.len() - 1).unwrap_or(NO_INDEX)
            }
        };
        if let Some(right) = self.insert_in(self.root, vma.end, index) {
            let left = self.root;
            let mut root = VmaNode::empty(false);
            root.count = 2;
            root.ends[0] = self.max_key(left);
            root.slots[0] = left;
            root.ends[1] = self.max_key(right);
            root.slots[1] = right;
            self.root = self.alloc_node(root);
            self.height += 1;
            debug_assert!(self.height <= VMA_TREE_MAX_HEIGHT);
        }
        self.len += 1;
        index
    }

    /// Inserts `(key, slot)` below node `n`; returns the new right sibling if `n` split.
    fn insert_in(&mut self, n: u32, key: u64, slot: u32) -> Option<u32> {
        let node = &self.nodes[idx(n)];
        let pos = rank_lt(node, key);
        if node.leaf != 0 {
            return self.insert_entry(n, pos, key, slot);
        }
        // The child whose range takes the key: the first whose greatest key is above it,
        // else the last (the key becomes its new greatest).
        let i = pos.min(node.count as usize - 1);
        let child = node.slots[i];
        self.make_room(n, i, key);
        let split = self.insert_in(child, key, slot);
        self.nodes[idx(n)].ends[i] = self.max_key(child);
        let right = split?;
        let right_key = self.max_key(right);
        self.insert_entry(n, i + 1, right_key, right)
    }

    /// Before `key` goes into child `i` of branch `n`: if that child is full, hands its
    /// first entry to its left sibling, or its last to its right one, where there is room
    /// and `key` lies outside what the entry covers, so that it still belongs in the child
    /// (a B*-tree's overflow). In-order inserts then fill
    /// nodes instead of leaving each split half empty, which keeps the tree one level
    /// lower (docs/PERFORMANCE.md).
    fn make_room(&mut self, n: u32, i: usize, key: u64) {
        let parent = &self.nodes[idx(n)];
        let child = &self.nodes[idx(parent.slots[i])];
        let count = child.count as usize;
        if count < VMA_FANOUT {
            return;
        }
        let room = |sibling: u32| (self.nodes[idx(sibling)].count as usize) < VMA_FANOUT;
        let left = i.checked_sub(1).map(|l| parent.slots[l]).filter(|&l| room(l));
        let right =
            (i + 1 < parent.count as usize).then(|| parent.slots[i + 1]).filter(|&r| room(r));
        // An entry may move only if `key` lies outside what it covers: in a branch it is
        // a whole subtree, from the key before it (exclusive) to its own.
        let (first, last, below_last) =
            (child.ends[0], child.ends[count - 1], child.ends[count - 2]);
        let child = parent.slots[i];
        if let Some(left) = left.filter(|_| key > first) {
            let moved = (first, self.nodes[idx(child)].slots[0]);
            let node = &mut self.nodes[idx(child)];
            node.ends.copy_within(1..count, 0);
            node.slots.copy_within(1..count, 0);
            (node.ends[count - 1], node.slots[count - 1]) = (u64::MAX, NO_INDEX);
            node.count -= 1;
            let sibling = &mut self.nodes[idx(left)];
            let at = sibling.count as usize;
            (sibling.ends[at], sibling.slots[at]) = moved;
            sibling.count += 1;
            self.nodes[idx(n)].ends[i - 1] = first;
        } else if let Some(right) = right.filter(|_| key < below_last) {
            let moved = (last, self.nodes[idx(child)].slots[count - 1]);
            let node = &mut self.nodes[idx(child)];
            (node.ends[count - 1], node.slots[count - 1]) = (u64::MAX, NO_INDEX);
            node.count -= 1;
            let new_max = below_last;
            let sibling = &mut self.nodes[idx(right)];
            let at = sibling.count as usize;
            sibling.ends.copy_within(0..at, 1);
            sibling.slots.copy_within(0..at, 1);
            (sibling.ends[0], sibling.slots[0]) = moved;
            sibling.count += 1;
            self.nodes[idx(n)].ends[i] = new_max;
        }
    }

    /// Puts `(key, slot)` at `pos` of node `n`, splitting a full node in two halves.
    fn insert_entry(&mut self, n: u32, pos: usize, key: u64, slot: u32) -> Option<u32> {
        let node = &mut self.nodes[idx(n)];
        let count = node.count as usize;
        if count < VMA_FANOUT {
            node.ends.copy_within(pos..count, pos + 1);
            node.slots.copy_within(pos..count, pos + 1);
            node.ends[pos] = key;
            node.slots[pos] = slot;
            node.count += 1;
            return None;
        }
        let mut ends = [0u64; VMA_FANOUT + 1];
        let mut slots = [0u32; VMA_FANOUT + 1];
        ends[..pos].copy_from_slice(&node.ends[..pos]);
        slots[..pos].copy_from_slice(&node.slots[..pos]);
        ends[pos] = key;
        slots[pos] = slot;
        ends[pos + 1..].copy_from_slice(&node.ends[pos..]);
        slots[pos + 1..].copy_from_slice(&node.slots[pos..]);
        let half = VMA_FANOUT.div_ceil(2);
        let leaf = node.leaf != 0;
        fill(node, &ends[..half], &slots[..half]);
        let mut right = VmaNode::empty(leaf);
        fill(&mut right, &ends[half..], &slots[half..]);
        Some(self.alloc_node(right))
    }

    /// Removes the VMA at `index` (it must be in the tree) and returns it.
    pub fn remove(&mut self, index: u32) -> Vma {
        let vma = self.vmas[idx(index)];
        let removed = self.remove_in(self.root, vma.end);
        debug_assert_eq!(removed, Some(index));
        let root = &self.nodes[idx(self.root)];
        if root.leaf == 0 && root.count == 1 {
            let old = self.root;
            self.root = root.slots[0];
            self.height -= 1;
            self.free_node(old);
        }
        self.free_vmas.push(index);
        self.len -= 1;
        vma
    }

    /// Removes the entry keyed `key` below node `n`, rebalancing children that fall under
    /// [`MIN_FILL`].
    fn remove_in(&mut self, n: u32, key: u64) -> Option<u32> {
        let node = &self.nodes[idx(n)];
        let i = rank_lt(node, key);
        if i >= node.count as usize {
            return None;
        }
        if node.leaf != 0 {
            if node.ends[i] != key {
                return None;
            }
            let slot = node.slots[i];
            self.remove_entry(n, i);
            return Some(slot);
        }
        let child = node.slots[i];
        let removed = self.remove_in(child, key)?;
        if (self.nodes[idx(child)].count as usize) < MIN_FILL {
            self.rebalance(n, i);
        } else {
            self.nodes[idx(n)].ends[i] = self.max_key(child);
        }
        Some(removed)
    }

    fn remove_entry(&mut self, n: u32, i: usize) {
        let node = &mut self.nodes[idx(n)];
        let count = node.count as usize;
        node.ends.copy_within(i + 1..count, i);
        node.slots.copy_within(i + 1..count, i);
        node.ends[count - 1] = u64::MAX;
        node.slots[count - 1] = NO_INDEX;
        node.count -= 1;
    }

    /// Child `i` of branch `n` is under-full: merge it with a sibling when both fit in one
    /// node, else share their entries evenly.
    fn rebalance(&mut self, n: u32, i: usize) {
        let parent = &self.nodes[idx(n)];
        let (li, ri) = if i + 1 < parent.count as usize { (i, i + 1) } else { (i - 1, i) };
        let (l, r) = (parent.slots[li], parent.slots[ri]);
        let (left, right) = (self.nodes[idx(l)], self.nodes[idx(r)]);
        let (lc, rc) = (left.count as usize, right.count as usize);
        let mut ends = [0u64; 2 * VMA_FANOUT];
        let mut slots = [0u32; 2 * VMA_FANOUT];
        ends[..lc].copy_from_slice(&left.ends[..lc]);
        slots[..lc].copy_from_slice(&left.slots[..lc]);
        ends[lc..lc + rc].copy_from_slice(&right.ends[..rc]);
        slots[lc..lc + rc].copy_from_slice(&right.slots[..rc]);
        let total = lc + rc;
        if total <= VMA_FANOUT {
            fill(&mut self.nodes[idx(l)], &ends[..total], &slots[..total]);
            self.free_node(r);
            self.remove_entry(n, ri);
            self.nodes[idx(n)].ends[li] = ends[total - 1];
        } else {
            let half = total / 2;
            fill(&mut self.nodes[idx(l)], &ends[..half], &slots[..half]);
            fill(&mut self.nodes[idx(r)], &ends[half..total], &slots[half..total]);
            let parent = &mut self.nodes[idx(n)];
            parent.ends[li] = ends[half - 1];
            parent.ends[ri] = ends[total - 1];
        }
    }

    fn max_key(&self, n: u32) -> u64 {
        let node = &self.nodes[idx(n)];
        node.ends[node.count as usize - 1]
    }

    fn alloc_node(&mut self, node: VmaNode) -> u32 {
        match self.free_nodes.pop() {
            Some(free) => {
                self.nodes[idx(free)] = node;
                free
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).unwrap_or(NO_INDEX)
            }
        }
    }

    fn free_node(&mut self, n: u32) {
        self.nodes[idx(n)] = VmaNode::empty(true);
        self.free_nodes.push(n);
    }

    /// The VMAs in address order, with their indices.
    pub fn iter(&self) -> Iter<'_> {
        let mut iter = Iter { tree: self, stack: [(0, 0); VMA_TREE_MAX_HEIGHT as usize], depth: 0 };
        iter.stack[0] = (self.root, 0);
        iter.depth = 1;
        iter
    }

    /// Checks invariants (a) to (d); returns the first broken one.
    pub fn validate(&self) -> Result<(), &'static str> {
        let mut last_end = 0;
        let mut seen = 0;
        self.validate_node(self.root, 1, &mut last_end, &mut seen)?;
        if seen != self.len {
            return Err("count of VMAs");
        }
        Ok(())
    }

    fn validate_node(
        &self,
        n: u32,
        depth: u32,
        last_end: &mut u64,
        seen: &mut usize,
    ) -> Result<(), &'static str> {
        let node = &self.nodes[idx(n)];
        let count = node.count as usize;
        if n != self.root && count < MIN_FILL {
            return Err("(c) under-full node");
        }
        if node.ends[count..].iter().any(|&e| e != u64::MAX)
            || node.slots[count..].iter().any(|&s| s != NO_INDEX)
        {
            return Err("(a) unused entries");
        }
        if node.ends[..count].windows(2).any(|w| w[0] >= w[1]) {
            return Err("(a) keys not increasing");
        }
        if (node.leaf != 0) != (depth == self.height) {
            return Err("(c) leaf depth");
        }
        for (&key, &slot) in node.ends[..count].iter().zip(&node.slots[..count]) {
            if node.leaf != 0 {
                let vma = self.get(slot);
                if vma.end != key || vma.start >= vma.end || vma.start < *last_end {
                    return Err("(d) VMAs sorted and disjoint");
                }
                *last_end = vma.end;
                *seen += 1;
            } else {
                if self.max_key(slot) != key {
                    return Err("(b) branch key");
                }
                self.validate_node(slot, depth + 1, last_end, seen)?;
            }
        }
        Ok(())
    }
}

/// Writes `ends`/`slots` into `node` and clears the rest.
fn fill(node: &mut VmaNode, ends: &[u64], slots: &[u32]) {
    let count = ends.len();
    node.ends[..count].copy_from_slice(ends);
    node.slots[..count].copy_from_slice(slots);
    node.ends[count..].fill(u64::MAX);
    node.slots[count..].fill(NO_INDEX);
    node.count = u32::try_from(count).unwrap_or(0);
}

/// In-order iteration: (index, VMA).
pub struct Iter<'a> {
    tree: &'a VmaTree,
    stack: [(u32, usize); VMA_TREE_MAX_HEIGHT as usize],
    depth: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (u32, &'a Vma);

    fn next(&mut self) -> Option<Self::Item> {
        while self.depth > 0 {
            let (n, i) = self.stack[self.depth - 1];
            let node = &self.tree.nodes[idx(n)];
            if i >= node.count as usize {
                self.depth -= 1;
                continue;
            }
            self.stack[self.depth - 1].1 = i + 1;
            let slot = node.slots[i];
            if node.leaf != 0 {
                return Some((slot, self.tree.get(slot)));
            }
            self.stack[self.depth] = (slot, 0);
            self.depth += 1;
        }
        None
    }
}
