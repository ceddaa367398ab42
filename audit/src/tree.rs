//! Tree shape and proof generation, shared by the stored log and the in-memory tree.
//!
//! Both stores keep the hash of every *perfect* subtree (2^level leaves, aligned) once it is
//! complete. Any subtree hash the RFC 9162 recursive definitions ask for is then either one
//! stored hash, or — only on the right edge of a tree whose size is not a power of two — a
//! fold of at most log2(n) stored hashes. The proof builders below follow RFC 9162 §2.1.3.1
//! (PATH) and §2.1.4.1 (SUBPROOF) literally; the right-edge fold happens at most once per
//! proof, so a proof costs O(log n) lookups and never rehashes leaves.

use crate::error::ProofError;
use crate::hash::{Hash, empty_root, node_hash};

/// Where perfect-subtree hashes come from.
pub(crate) trait PerfectNodes {
    type Error: From<ProofError>;
    /// Hash of the perfect subtree covering leaves `[index << level, (index + 1) << level)`.
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up `[start, end)`, largest first, as `(level, index)`.
/// `start` must be a multiple of a power of two ≥ `end - start` (true for every RFC subtree).
pub(crate) fn decompose(start: u64, end: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut s = start;
    while s < end {
        let len = end - s;
        let mut level = 63 - len.leading_zeros();
        if s != 0 {
            level = level.min(s.trailing_zeros());
        }
        out.push((level as u8, s >> level));
        s += 1u64 << level;
    }
    out
}

/// MTH(D[start:end]) from stored perfect-subtree hashes.
pub(crate) fn range_hash<S: PerfectNodes>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    if start >= end {
        return Ok(empty_root());
    }
    let pieces = decompose(start, end);
    let mut iter = pieces.iter().rev();
    let mut acc = match iter.next() {
        Some(&(l, i)) => src.perfect(l, i)?,
        None => return Ok(empty_root()),
    };
    for &(l, i) in iter {
        acc = node_hash(&src.perfect(l, i)?, &acc);
    }
    Ok(acc)
}

/// RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf-side first.
pub(crate) fn inclusion_path<S: PerfectNodes>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    // Walk down collecting siblings top-first, then reverse.
    let mut siblings = Vec::new();
    let (mut a, mut b) = (0u64, size);
    while b - a > 1 {
        let k = split_point(b - a);
        if index < a + k {
            siblings.push(range_hash(src, a + k, b)?);
            b = a + k;
        } else {
            siblings.push(range_hash(src, a, a + k)?);
            a += k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1 PROOF(old, D[0:new]) = SUBPROOF(old, D[0:new], true).
pub(crate) fn consistency_path<S: PerfectNodes>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    if old == 0 || old > new {
        return Err(ProofError::BadSizes { old, new }.into());
    }
    let mut top_first = Vec::new();
    let (mut a, mut b, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == b - a {
            if !whole {
                top_first.push(range_hash(src, a, b)?);
            }
            break;
        }
        let k = split_point(b - a);
        if m <= k {
            top_first.push(range_hash(src, a + k, b)?);
            b = a + k;
        } else {
            top_first.push(range_hash(src, a, a + k)?);
            a += k;
            m -= k;
            whole = false;
        }
    }
    top_first.reverse();
    Ok(top_first)
}

/// The compact range `[0, size)`: one perfect-subtree hash ("peak") per set bit of `size`,
/// largest first. Enough to append further leaves and to compute the root, so the log keeps
/// it in memory and an export of a pruned log carries it in place of the pruned entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a frontier from its peaks (largest first); the count must match `size`.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Result<Self, ProofError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(ProofError::BadPeaks {
                size,
                got: peaks.len(),
            });
        }
        Ok(Frontier { size, peaks })
    }

    /// `(level, index)` of each peak of a tree of `size` leaves, largest first.
    pub fn peak_positions(size: u64) -> Vec<(u8, u64)> {
        decompose(0, size)
    }

    /// Number of leaves in the tree this frontier describes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hashes of the perfect subtrees that make up the tree, largest (leftmost) first; one per
    /// set bit of the size.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash. `completed` sees every perfect subtree this append completes,
    /// the leaf itself first (level 0), so a store can keep them.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let index = self.size;
        completed(0, index, &leaf);
        let mut h = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            // A right child: its left sibling is the last peak.
            let left = self.peaks.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            level += 1;
            completed(level, index >> level, &h);
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root hash of the tree this frontier describes (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, p| node_hash(p, &acc))
    }
}

/// A whole Merkle tree in memory: every perfect-subtree hash, by level.
///
/// Used by the offline verifier and by tests as an independent recomputation; it needs no
/// storage and shares the proof builders with [`crate::AuditLog`].
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        MemoryTree::default()
    }

    /// A tree over the given leaf hashes.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = MemoryTree::new();
        for l in leaves {
            t.push_leaf_hash(l);
        }
        t
    }

    /// Appends an entry (hashing it as a leaf); returns its index.
    pub fn push_entry(&mut self, entry: &[u8]) -> u64 {
        self.push_leaf_hash(crate::hash::leaf_hash(entry))
    }

    /// Appends a leaf hash; returns its index.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.frontier.size();
        let levels = &mut self.levels;
        self.frontier.push(leaf, |level, _idx, h| {
            let level = level as usize;
            if levels.len() <= level {
                levels.push(Vec::new());
            }
            levels[level].push(*h);
        });
        index
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        range_hash(self, 0, size)
    }

    /// Hash of leaf `index`; [`ProofError::MissingNode`] if the tree has no such leaf.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, ProofError> {
        self.perfect(0, index)
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        inclusion_path(self, index, size)
    }

    /// Consistency proof between the trees of the first `old` and `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        consistency_path(self, old, new)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::BeyondTree {
                size,
                tree_size: self.size(),
            });
        }
        Ok(())
    }
}

impl PerfectNodes for MemoryTree {
    type Error = ProofError;
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or(ProofError::MissingNode { level, index })
    }
}

/// RFC 9162 §2.1.1 MTH computed straight from the definition, by recursion over leaf hashes.
/// Slow (O(n) per call) and independent of the stored-hash machinery: the reference the tests
/// compare everything else against.
pub fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}
