//! Published test vectors: RFC 6962/9162 trees and proofs (transparency-dev/merkle) and the
//! C2SP signed-note example. Vendored under tests/data/merkle-vectors (Apache-2.0).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{
    MemoryTree, NoteSigner, NoteVerifier, ProofError, open_note, reference_root,
    verify_consistency, verify_inclusion, verify_subtree_consistency, verify_subtree_inclusion,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/merkle-vectors")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut items: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    items.sort();
    for p in items {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

/// base64 as the Go JSON encoder writes []byte; the vectors contain deliberately short
/// "hashes" (e.g. "don't care") which must decode and then fail verification.
fn b64(s: &Option<String>) -> Vec<u8> {
    s.as_deref()
        .map(|s| B64.decode(s).expect("vector base64"))
        .unwrap_or_default()
}

fn b64_list(v: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    v.iter()
        .flatten()
        .map(|s| B64.decode(s).expect("vector base64"))
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
struct ReferenceTree {
    leaf_inputs_hex: Vec<String>,
    root_hashes_hex_by_size: Vec<String>,
}

#[test]
fn reference_tree_roots_match_for_every_size_0_to_8() {
    let raw = std::fs::read_to_string(data_dir().join("reference-tree.json")).unwrap();
    let rt: ReferenceTree = serde_json::from_str(&raw).unwrap();
    assert_eq!(rt.leaf_inputs_hex.len(), 8);
    assert_eq!(rt.root_hashes_hex_by_size.len(), 9);
    let leaves: Vec<Vec<u8>> = rt
        .leaf_inputs_hex
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect();
    let mut tree = MemoryTree::new();
    assert_eq!(hex::encode(tree.root()), rt.root_hashes_hex_by_size[0]);
    for (i, leaf) in leaves.iter().enumerate() {
        tree.push_entry(leaf);
        let want = &rt.root_hashes_hex_by_size[i + 1];
        assert_eq!(
            &hex::encode(tree.root()),
            want,
            "frontier root, size {}",
            i + 1
        );
        let hashes: Vec<_> = leaves[..=i]
            .iter()
            .map(|l| amble_audit::leaf_hash(l))
            .collect();
        assert_eq!(
            &hex::encode(reference_root(&hashes)),
            want,
            "reference, size {}",
            i + 1
        );
    }
    for size in 0..=8u64 {
        assert_eq!(
            hex::encode(tree.root_at(size).unwrap()),
            rt.root_hashes_hex_by_size[size as usize],
            "stored-hash root at size {size}"
        );
    }
}

#[test]
fn proofs_from_the_reference_tree_match_the_published_happy_paths() {
    // The happy-path vectors are proofs over the 8 reference leaves; our builder must
    // produce exactly those proofs, not merely proofs that verify.
    let raw = std::fs::read_to_string(data_dir().join("reference-tree.json")).unwrap();
    let rt: ReferenceTree = serde_json::from_str(&raw).unwrap();
    let tree = MemoryTree::from_leaf_hashes(
        rt.leaf_inputs_hex
            .iter()
            .map(|h| amble_audit::leaf_hash(&hex::decode(h).unwrap())),
    );
    let mut checked = 0;
    for dir in ["0", "1", "2", "3", "4"] {
        let p = data_dir().join(format!("testdata/inclusion/{dir}/happy-path.json"));
        let c: InclusionCase = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if c.tree_size <= 8 && c.leaf_idx < c.tree_size {
            let got: Vec<Vec<u8>> = tree
                .inclusion_proof(c.leaf_idx, c.tree_size)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect();
            assert_eq!(got, b64_list(&c.proof), "inclusion {dir}");
            checked += 1;
        }
        let p = data_dir().join(format!("testdata/consistency/{dir}/happy-path.json"));
        let c: ConsistencyCase =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if c.size2 <= 8 && c.size1 > 0 {
            let got: Vec<Vec<u8>> = tree
                .consistency_proof(c.size1, c.size2)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect();
            assert_eq!(got, b64_list(&c.proof), "consistency {dir}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[derive(Deserialize)]
struct NoteVector {
    signer_key: String,
    verifier_key: String,
    text: String,
    signed_note: String,
}

fn note_vector() -> NoteVector {
    let raw = std::fs::read_to_string(data_dir().join("signed-note-vector.json")).unwrap();
    serde_json::from_str(&raw).unwrap()
}

#[test]
fn signing_the_published_text_reproduces_the_published_note_byte_for_byte() {
    let v = note_vector();
    let signer = NoteSigner::parse(&v.signer_key).unwrap();
    assert_eq!(signer.sign(&v.text).unwrap(), v.signed_note);
    assert_eq!(signer.verifier().to_string(), v.verifier_key);
    assert_eq!(*signer.to_private_key_string(), v.signer_key);
    let verifier = NoteVerifier::parse(&v.verifier_key).unwrap();
    assert_eq!(verifier.to_string(), v.verifier_key);
}

#[test]
fn published_note_verifies_and_any_changed_byte_is_rejected() {
    let v = note_vector();
    let verifier = NoteVerifier::parse(&v.verifier_key).unwrap();
    let opened = open_note(&v.signed_note, std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(opened.text, v.text);
    assert_eq!(opened.verified_by, vec![verifier.clone()]);

    let bytes = v.signed_note.as_bytes();
    let mut rejected = 0;
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut b = bytes.to_vec();
            b[i] ^= flip;
            // A flip that breaks UTF-8 cannot even be presented as a note.
            let Ok(s) = String::from_utf8(b) else {
                rejected += 1;
                continue;
            };
            assert!(
                open_note(&s, std::slice::from_ref(&verifier)).is_err(),
                "byte {i} ^ {flip:#x} accepted: {s:?}"
            );
            rejected += 1;
        }
    }
    assert_eq!(rejected, bytes.len() * 3);
}

#[test]
fn key_strings_with_a_wrong_key_id_are_refused() {
    let v = note_vector();
    let bad = v.verifier_key.replace("+c74f20a3+", "+c74f20a4+");
    assert!(NoteVerifier::parse(&bad).is_err());
    let bad = v.signer_key.replace("+c74f20a3+", "+00000000+");
    assert!(NoteSigner::parse(&bad).is_err());
    let other_name = v.verifier_key.replace("PeterNeumann", "PeterNeuman");
    assert!(NoteVerifier::parse(&other_name).is_err());
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubtreeInclusionCase {
    leaf_idx: u64,
    start: u64,
    end: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubtreeConsistencyCase {
    start: u64,
    end: u64,
    size: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// One published proof case: what it claims, and our verdict on it.
trait Case: serde::de::DeserializeOwned {
    fn want_err(&self) -> bool;
    fn desc(&self) -> &str;
    fn check(&self) -> Result<(), ProofError>;
}

/// Runs every case under `testdata/<dir>`, asserting each verdict matches the published
/// one; returns (cases that verified, cases that were refused, cases under `additional/`).
fn run_cases<T: Case>(dir: &str) -> (usize, usize, usize) {
    let mut files = Vec::new();
    json_files(&data_dir().join("testdata").join(dir), &mut files);
    let (mut ok, mut err, mut additional) = (0, 0, 0);
    for f in &files {
        let c: T = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let res = c.check();
        assert_eq!(
            res.is_err(),
            c.want_err(),
            "{} ({}): got {res:?}",
            f.display(),
            c.desc()
        );
        if f.to_string_lossy().contains("/additional/") {
            additional += 1;
        }
        if c.want_err() { err += 1 } else { ok += 1 }
    }
    (ok, err, additional)
}

macro_rules! case {
    ($t:ty, |$c:ident| $check:expr) => {
        impl Case for $t {
            fn want_err(&self) -> bool {
                self.want_err
            }
            fn desc(&self) -> &str {
                &self.desc
            }
            fn check(&self) -> Result<(), ProofError> {
                let $c = self;
                $check
            }
        }
    };
}

case!(InclusionCase, |c| verify_inclusion(
    c.leaf_idx,
    c.tree_size,
    &b64(&c.leaf_hash),
    &b64_list(&c.proof),
    &b64(&c.root)
));
case!(ConsistencyCase, |c| verify_consistency(
    c.size1,
    c.size2,
    &b64_list(&c.proof),
    &b64(&c.root1),
    &b64(&c.root2)
));
case!(SubtreeInclusionCase, |c| verify_subtree_inclusion(
    c.leaf_idx,
    c.start,
    c.end,
    &b64(&c.leaf_hash),
    &b64_list(&c.proof),
    &b64(&c.root)
));
case!(SubtreeConsistencyCase, |c| verify_subtree_consistency(
    c.start,
    c.end,
    c.size,
    &b64_list(&c.proof),
    &b64(&c.root1),
    &b64(&c.root2)
));

#[test]
fn every_published_inclusion_case_passes_or_fails_as_published() {
    // 98 files: 6 that must verify, 92 that must not (12 of them under additional/).
    assert_eq!(run_cases::<InclusionCase>("inclusion"), (6, 92, 12));
}

#[test]
fn every_published_consistency_case_passes_or_fails_as_published() {
    assert_eq!(run_cases::<ConsistencyCase>("consistency"), (6, 92, 14));
}

#[test]
fn every_published_subtree_inclusion_case_passes_or_fails_as_published() {
    assert_eq!(
        run_cases::<SubtreeInclusionCase>("subtreeinclusion"),
        (12, 192, 24)
    );
}

#[test]
fn every_published_subtree_consistency_case_passes_or_fails_as_published() {
    assert_eq!(
        run_cases::<SubtreeConsistencyCase>("subtreeconsistency"),
        (12, 106, 30)
    );
}
