//! Text → sparse feature vector, the same on every machine.
//!
//! Hashed character n-grams over the lowercased text (Unicode scalar values, so Chinese or
//! Japanese need no word segmentation) plus hashed word uni/bi-grams, sublinear term frequency
//! `1 + ln tf` and L2 normalisation. The hash is 64-bit FNV-1a with a per-family tag, never
//! `std`'s randomly keyed hasher: a model trained on one node must see the same indices on another.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};

/// A sparse vector: strictly increasing `indices` and their `values` (same length).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SparseVec {
    /// Feature indices, strictly increasing, each `< dim`.
    pub indices: Vec<u32>,
    /// One value per index.
    pub values: Vec<f32>,
}

impl SparseVec {
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Euclidean norm.
    pub fn l2_norm(&self) -> f32 {
        self.values.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// Builds a vector from unsorted `(index, value)` pairs, summing duplicates.
    pub fn from_pairs(mut pairs: Vec<(u32, f32)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        let mut out = SparseVec::default();
        for (i, v) in pairs {
            if out.indices.last() == Some(&i) {
                if let Some(last) = out.values.last_mut() {
                    *last += v;
                }
            } else {
                out.indices.push(i);
                out.values.push(v);
            }
        }
        out
    }

    /// Scales to unit L2 norm (no-op on the zero vector).
    pub fn normalise(&mut self) {
        let n = self.l2_norm();
        if n > 0.0 {
            for v in &mut self.values {
                *v /= n;
            }
        }
    }
}

/// How text is turned into features. Part of a serialised model: the same config must be used
/// at training and prediction time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// log2 of the feature dimension (the dimension is a power of two so hashing is a mask).
    pub dim_log2: u8,
    /// Smallest character n-gram (0 disables character n-grams).
    pub char_min: u8,
    /// Largest character n-gram.
    pub char_max: u8,
    /// Largest word n-gram (0 disables words; 1 = unigrams; 2 = uni+bigrams).
    pub word_max: u8,
}

impl Default for FeatureConfig {
    /// Character 2–5-grams plus word uni/bi-grams in 2^16 buckets.
    fn default() -> Self {
        FeatureConfig {
            dim_log2: 16,
            char_min: 2,
            char_max: 5,
            word_max: 2,
        }
    }
}

impl FeatureConfig {
    /// The feature dimension `2^dim_log2`.
    pub fn dim(&self) -> usize {
        1usize << self.dim_log2
    }

    /// Checks the ranges; every public entry point calls this.
    pub fn validate(&self) -> Result<()> {
        if !(4..=24).contains(&self.dim_log2) {
            return Err(LearnError::InvalidConfig(format!(
                "dim_log2 = {} must be in 4..=24",
                self.dim_log2
            )));
        }
        if self.char_min > self.char_max || self.char_max > 16 || self.word_max > 4 {
            return Err(LearnError::InvalidConfig(format!(
                "n-gram ranges char {}..={} (max 16) / word ≤{} (max 4) are not valid",
                self.char_min, self.char_max, self.word_max
            )));
        }
        if self.char_min == 0 && self.char_max > 0 {
            return Err(LearnError::InvalidConfig(
                "char_min = 0 disables character n-grams; set char_max = 0 too".into(),
            ));
        }
        if self.char_max == 0 && self.word_max == 0 {
            return Err(LearnError::InvalidConfig(
                "both character and word n-grams are disabled; no features would be produced"
                    .into(),
            ));
        }
        Ok(())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Text boundary markers: control characters never survive normalisation, so they cannot
/// collide with real text.
const BEGIN: char = '\u{2}';
const END: char = '\u{3}';
const WORD_SEP: u8 = 0x1f;

/// 64-bit FNV-1a, fed incrementally.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn with_tag(tag: u8) -> Self {
        let mut h = Fnv(FNV_OFFSET);
        h.byte(tag);
        h
    }
    #[inline]
    pub(crate) fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }
    #[inline]
    pub(crate) fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }
    #[inline]
    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.bytes(c.encode_utf8(&mut buf).as_bytes());
    }
    /// Final mixing (xor-shift) so the low bits used as the index depend on all input bytes.
    #[inline]
    pub(crate) fn finish(self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

/// Hashes an arbitrary named feature (used by the need predictor) into `dim` buckets.
pub(crate) fn hash_name(name: &str, mask: u64) -> u32 {
    let mut h = Fnv::with_tag(b'n');
    h.bytes(name.as_bytes());
    (h.finish() & mask) as u32
}

/// Turns text into [`SparseVec`]s. Cheap to construct and `Sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct Featuriser {
    config: FeatureConfig,
    mask: u64,
}

impl Featuriser {
    /// Validates `config`.
    pub fn new(config: FeatureConfig) -> Result<Self> {
        config.validate()?;
        let mask = (config.dim() as u64) - 1;
        Ok(Featuriser { config, mask })
    }

    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.config.dim()
    }

    /// Featurises one text: sublinear TF over hashed n-grams, L2-normalised.
    /// Empty or whitespace-only text gives the zero vector.
    pub fn featurise(&self, text: &str) -> SparseVec {
        let mut buckets: Vec<u32> = Vec::with_capacity(text.len() * 4);
        let chars = normalise_text(text);
        if chars.is_empty() {
            return SparseVec::default();
        }
        let (cmin, cmax) = (
            usize::from(self.config.char_min),
            usize::from(self.config.char_max),
        );
        if cmax > 0 {
            let mut padded = Vec::with_capacity(chars.len() + 2);
            padded.push(BEGIN);
            padded.extend_from_slice(&chars);
            padded.push(END);
            for start in 0..padded.len() {
                let mut h = Fnv::with_tag(b'c');
                for (len, &c) in padded[start..].iter().take(cmax).enumerate() {
                    h.char(c);
                    if len + 1 >= cmin {
                        buckets.push((h.finish() & self.mask) as u32);
                    }
                }
            }
        }
        if self.config.word_max > 0 {
            let words = split_words(&chars);
            for n in 1..=usize::from(self.config.word_max) {
                for win in words.windows(n) {
                    let mut h = Fnv::with_tag(b'w');
                    h.byte(n as u8);
                    for (k, w) in win.iter().enumerate() {
                        if k > 0 {
                            h.byte(WORD_SEP);
                        }
                        for &c in *w {
                            h.char(c);
                        }
                    }
                    buckets.push((h.finish() & self.mask) as u32);
                }
            }
        }
        buckets.sort_unstable();
        let mut out = SparseVec {
            indices: Vec::with_capacity(buckets.len()),
            values: Vec::with_capacity(buckets.len()),
        };
        let mut i = 0;
        while i < buckets.len() {
            let b = buckets[i];
            let mut j = i;
            while j < buckets.len() && buckets[j] == b {
                j += 1;
            }
            out.indices.push(b);
            out.values.push(1.0 + ((j - i) as f32).ln());
            i = j;
        }
        out.normalise();
        out
    }
}

/// Lowercases, drops control characters and collapses whitespace runs to one space.
fn normalise_text(text: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if !c.is_control() {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Words are maximal runs of alphanumeric characters (a run of CJK characters counts as one
/// word; the character n-grams carry the signal there).
fn split_words(chars: &[char]) -> Vec<&[char]> {
    chars
        .split(|c| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_case_do_not_change_features() {
        let f = Featuriser::new(FeatureConfig::default()).unwrap();
        assert_eq!(
            f.featurise("Where is  my CARD?"),
            f.featurise("where is my card?  ")
        );
    }

    #[test]
    fn output_is_sorted_unique_and_unit_norm() {
        let f = Featuriser::new(FeatureConfig::default()).unwrap();
        let v = f.featurise("I still have not received my new card, I ordered over a week ago.");
        assert!(v.indices.windows(2).all(|w| w[0] < w[1]));
        assert!((v.l2_norm() - 1.0).abs() < 1e-5);
        assert!(v.indices.iter().all(|&i| (i as usize) < f.dim()));
    }

    #[test]
    fn empty_text_is_zero_vector() {
        let f = Featuriser::new(FeatureConfig::default()).unwrap();
        assert_eq!(f.featurise("   \n\t").nnz(), 0);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = FeatureConfig {
            dim_log2: 40,
            ..FeatureConfig::default()
        };
        assert!(Featuriser::new(bad).is_err());
        let none = FeatureConfig {
            char_min: 0,
            char_max: 0,
            word_max: 0,
            ..FeatureConfig::default()
        };
        assert!(Featuriser::new(none).is_err());
    }
}
