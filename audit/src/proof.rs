//! Pure proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2) and the portable JSON form of
//! proofs. No storage, no clock: what an offline verifier, or any other RFC 9162
//! implementation, needs to check what an amble node hands out.
//!
//! The checks follow the transparency-dev/merkle reference verifier, and so agree with its
//! published test vectors, including two deliberate choices the RFC leaves open:
//! a consistency proof *from* the empty tree is refused (it proves nothing), and two trees
//! of equal size are consistent only with an empty proof and equal roots.

use crate::error::ProofError;
use crate::hash::{Hash, node_hash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

fn as_hash(bytes: &[u8], what: &'static str) -> Result<Hash, ProofError> {
    bytes.try_into().map_err(|_| ProofError::BadHashLength {
        what,
        len: bytes.len(),
    })
}

fn hashes<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, ProofError> {
    proof
        .iter()
        .map(|p| as_hash(p.as_ref(), "proof element"))
        .collect()
}

/// (inner, border): how many proof elements lie below the point where the path to `index`
/// leaves the right edge of a tree of `size` leaves, and how many lie on that edge.
fn decomp_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(seed: Hash, proof: &[Hash]) -> Hash {
    proof.iter().fold(seed, |acc, h| node_hash(h, &acc))
}

/// When nothing is left to prove: the proof must be empty and the two hashes equal.
fn empty_proof_and_equal(proof_len: usize, a: &[u8], b: &[u8]) -> Result<(), ProofError> {
    if proof_len != 0 {
        return Err(ProofError::WrongProofLength {
            got: proof_len,
            want: 0,
        });
    }
    if a != b {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The root an inclusion proof implies for leaf `index` in a tree of `size` leaves.
pub fn root_from_inclusion_proof<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = as_hash(leaf_hash, "leaf hash")?;
    let proof = hashes(proof)?;
    let (inner, border) = decomp_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let res = chain_inner(leaf, &proof[..inner], index);
    Ok(chain_border_right(res, &proof[inner..]))
}

/// RFC 9162 §2.1.3.2: does `proof` show that `leaf_hash` is leaf `index` of the tree of
/// `size` leaves whose root is `root`?
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    let calc = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if calc.as_slice() != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `size1` leaves with root `root1`
/// is a prefix of the tree of `size2` leaves with root `root2`?
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 || size1 == 0 {
        return Err(ProofError::BadSizes {
            old: size1,
            new: size2,
        });
    }
    if size1 == size2 {
        return empty_proof_and_equal(proof.len(), root1, root2);
    }
    if proof.is_empty() {
        return Err(ProofError::WrongProofLength { got: 0, want: 1 });
    }
    let proof = hashes(proof)?;
    let r1 = as_hash(root1, "old root")?;
    let r2 = as_hash(root2, "new root")?;

    let (inner, border) = decomp_inclusion(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift;
    // The proof starts with the hash of the subtree of size 2^shift that ends at size1,
    // unless that subtree is the whole old tree, whose root the verifier already has.
    let (seed, rest) = if size1 == 1u64 << shift {
        (r1, &proof[..])
    } else {
        (proof[0], &proof[1..])
    };
    if rest.len() != inner + border {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want: proof.len() - rest.len() + inner + border,
        });
    }
    let mask = (size1 - 1) >> shift;
    let h1 = chain_border_right(
        chain_inner_right(seed, &rest[..inner], mask),
        &rest[inner..],
    );
    if h1 != r1 {
        return Err(ProofError::RootMismatch);
    }
    let h2 = chain_border_right(chain_inner(seed, &rest[..inner], mask), &rest[inner..]);
    if h2 != r2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        let v = B64.decode(s.as_bytes()).map_err(D::Error::custom)?;
        v.try_into()
            .map_err(|_| D::Error::custom("hash is not 32 bytes"))
    }
}

pub(crate) mod b64_vec {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error, ser::SerializeSeq};

    pub(crate) fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&B64.encode(h))?;
        }
        seq.end()
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                let b = B64.decode(s.as_bytes()).map_err(D::Error::custom)?;
                b.try_into()
                    .map_err(|_| D::Error::custom("hash is not 32 bytes"))
            })
            .collect()
    }
}

pub(crate) use self::b64_vec as serde_b64_vec;

/// An inclusion proof with everything needed to check it (hashes in standard base64 in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Index (seq) of the leaf the proof is for.
    pub leaf_index: u64,
    /// Size of the tree the proof is for; compare with a checkpoint of this size.
    pub tree_size: u64,
    /// RFC 9162 leaf hash of the entry's canonical JSON.
    #[serde(with = "b64")]
    pub leaf_hash: Hash,
    /// Root of the tree of `tree_size` leaves that the proof leads to.
    #[serde(with = "b64")]
    pub root_hash: Hash,
    /// Sibling hashes, leaf side first (RFC 9162 PATH).
    #[serde(with = "b64_vec")]
    pub proof: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof against its own root. Compare `root_hash` with a signed checkpoint
    /// to make it mean something.
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &self.leaf_hash,
            &self.proof,
            &self.root_hash,
        )
    }

    /// Pretty-printed JSON, hashes in standard base64 (empty string if serialisation fails,
    /// which it cannot for this type).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses the JSON form; [`ProofError::Json`] if a field is missing, unknown or malformed.
    /// The proof itself is not checked: call [`InclusionProof::verify`].
    pub fn from_json(s: &str) -> Result<Self, ProofError> {
        serde_json::from_str(s).map_err(|e| ProofError::Json(e.to_string()))
    }
}

/// A consistency proof between two tree sizes (hashes in standard base64 in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Size of the earlier tree; must be at least 1.
    pub old_size: u64,
    /// Size of the later tree; at least `old_size`.
    pub new_size: u64,
    /// Root of the tree of `old_size` leaves.
    #[serde(with = "b64")]
    pub old_root: Hash,
    /// Root of the tree of `new_size` leaves.
    #[serde(with = "b64")]
    pub new_root: Hash,
    /// Hashes of the RFC 9162 consistency proof (SUBPROOF order); empty when the sizes are equal.
    #[serde(with = "b64_vec")]
    pub proof: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks that the tree with `old_root` is a prefix of the tree with `new_root`. Compare
    /// both roots with signed checkpoints to make it mean something.
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_consistency(
            self.old_size,
            self.new_size,
            &self.proof,
            &self.old_root,
            &self.new_root,
        )
    }

    /// Pretty-printed JSON, hashes in standard base64 (empty string if serialisation fails,
    /// which it cannot for this type).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses the JSON form; [`ProofError::Json`] if a field is missing, unknown or malformed.
    /// The proof itself is not checked: call [`ConsistencyProof::verify`].
    pub fn from_json(s: &str) -> Result<Self, ProofError> {
        serde_json::from_str(s).map_err(|e| ProofError::Json(e.to_string()))
    }
}

/// `[start, end)` is a subtree in the sense of the Merkle Tree Certificates draft: non-empty,
/// and `start` a multiple of the smallest power of two ≥ `end - start`. Returns that width.
fn subtree_width(start: u64, end: u64) -> Result<u64, ProofError> {
    let bad = ProofError::BadSubtree { start, end };
    if start >= end {
        return Err(bad);
    }
    let width = (end - start)
        .checked_next_power_of_two()
        .ok_or(bad.clone())?;
    if start % width != 0 {
        return Err(bad);
    }
    Ok(width)
}

/// Subtree inclusion: `leaf_hash` is leaf `index` of the subtree `[start, end)` whose hash
/// is `subtree_root`. (Newer transparency-dev/merkle feature; amble does not issue these.)
pub fn verify_subtree_inclusion<P: AsRef<[u8]>>(
    index: u64,
    start: u64,
    end: u64,
    leaf_hash: &[u8],
    proof: &[P],
    subtree_root: &[u8],
) -> Result<(), ProofError> {
    subtree_width(start, end)?;
    if index < start || index >= end {
        return Err(ProofError::IndexOutOfRange { index, size: end });
    }
    verify_inclusion(index - start, end - start, leaf_hash, proof, subtree_root)
}

/// Subtree consistency: the subtree `[start, end)` with hash `subtree_root` is part of the
/// tree of `size` leaves with root `root`. The proof is an RFC 9162 consistency proof inside
/// the enclosing node (from `end - start` leaves to as many as the tree has there), followed
/// by that node's inclusion path. (Newer transparency-dev/merkle feature; amble does not
/// issue these.)
pub fn verify_subtree_consistency<P: AsRef<[u8]>>(
    start: u64,
    end: u64,
    size: u64,
    proof: &[P],
    subtree_root: &[u8],
    root: &[u8],
) -> Result<(), ProofError> {
    if start == end && end <= size {
        // The empty subtree is part of every tree; its hash must be the empty root.
        return empty_proof_and_equal(proof.len(), subtree_root, &crate::hash::empty_root());
    }
    let width = subtree_width(start, end)?;
    if end > size {
        return Err(ProofError::BadSizes {
            old: end,
            new: size,
        });
    }
    let level = width.trailing_zeros();
    let s1 = end - start;
    let s2 = width.min(size - start);
    if start == 0 && end == size {
        // The subtree is the whole tree: as for equal sizes in RFC 9162 consistency.
        return empty_proof_and_equal(proof.len(), subtree_root, root);
    }
    let sub = as_hash(subtree_root, "subtree hash")?;
    let proof = hashes(proof)?;
    // Hash of the enclosing node as the tree of `size` leaves has it.
    let (node, rest) = if s1 == s2 {
        (sub, &proof[..])
    } else {
        let (inner, border) = decomp_inclusion(s1 - 1, s2);
        let shift = s1.trailing_zeros() as usize;
        let inner = inner - shift;
        let (seed, used) = if s1 == 1u64 << shift {
            (sub, 0)
        } else {
            (
                *proof
                    .first()
                    .ok_or(ProofError::WrongProofLength { got: 0, want: 1 })?,
                1,
            )
        };
        let need = used + inner + border;
        if proof.len() < need {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want: need,
            });
        }
        let part = &proof[used..need];
        let mask = (s1 - 1) >> shift;
        let h1 = chain_border_right(
            chain_inner_right(seed, &part[..inner], mask),
            &part[inner..],
        );
        if h1 != sub {
            return Err(ProofError::RootMismatch);
        }
        let h2 = chain_border_right(chain_inner(seed, &part[..inner], mask), &part[inner..]);
        (h2, &proof[need..])
    };
    let node_index = start >> level;
    let level_size = ((size - 1) >> level) + 1;
    verify_inclusion(node_index, level_size, &node, rest, root)
}
