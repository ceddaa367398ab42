//! Text → feature vector, the same on every machine.
//!
//! Two blocks, either or both:
//!
//! - **Hashed n-grams**: character n-grams over the lowercased text (Unicode scalar values, so
//!   Chinese or Japanese need no word segmentation) plus word uni/bi-grams, sublinear term
//!   frequency `1 + ln tf`, L2-normalised. The hash is 64-bit FNV-1a with a per-family tag, never
//!   `std`'s randomly keyed hasher: a model trained on one node must see the same indices on
//!   another. Indices `0 .. 2^dim_log2`.
//! - **Sentence embedding** ([`SentenceFeatures`]): the public pretrained encoder's unit vector
//!   for the text (see [`crate::model`]), minus a public centre, renormalised. Indices
//!   `2^dim_log2 ..` (or from 0 without a hashed block).
//!
//! With both, the sentence block carries `share` of the squared norm and the n-grams the rest, so
//! every vector still has norm 1 — what DP-SGD's clipping and the noise scale assume.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::ProgressFn;
use crate::model::{EmbeddingCache, EncoderId, SentenceEncoder, Ticket};

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
    /// log2 of the hashed block's size (a power of two so hashing is a mask).
    pub dim_log2: u8,
    /// Smallest character n-gram (0 disables character n-grams).
    pub char_min: u8,
    /// Largest character n-gram.
    pub char_max: u8,
    /// Largest word n-gram (0 disables words; 1 = unigrams; 2 = uni+bigrams).
    pub word_max: u8,
    /// Sentence-encoder features after the hashed block (none in models from before they
    /// existed, which therefore read unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence: Option<SentenceFeatures>,
}

/// The three featurisers by name — what `amble train intent --features` and the coordinator's
/// `[model] features` choose between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// [`FeatureConfig::sentence`]: the built-in sentence encoder alone.
    #[default]
    Sentence,
    /// Hashed n-grams alone ([`FeatureConfig::default`] in `2^dim_log2` buckets).
    Hashed,
    /// [`FeatureConfig::combined`]: both blocks.
    Both,
}

impl FeatureKind {
    /// The configuration: `dim_log2` sizes the n-gram block, `share` is the sentence block's
    /// part of the norm when there are both.
    pub fn config(self, dim_log2: u8, share: f32) -> FeatureConfig {
        match self {
            FeatureKind::Sentence => FeatureConfig::sentence(),
            FeatureKind::Hashed => FeatureConfig {
                dim_log2,
                ..FeatureConfig::default()
            },
            FeatureKind::Both => FeatureConfig::combined(dim_log2, share),
        }
    }

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Sentence => "sentence",
            FeatureKind::Hashed => "hashed",
            FeatureKind::Both => "both",
        }
    }
}

/// The sentence-embedding block of a [`FeatureConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceFeatures {
    /// The encoder, by name and weights hash; a featuriser refuses any other.
    pub encoder: EncoderId,
    /// Share of each vector's squared norm given to this block when hashed n-grams are on too
    /// (in (0, 1]; ignored without them).
    pub share: f32,
    /// Subtracted from every embedding before renormalising (empty = nothing). Sentence
    /// embeddings of one domain share a large common direction that carries no class
    /// information but would still carry noise; [`crate::model::IntentModel::new`] sets this to
    /// the mean embedding of the intent *names* — public, so it costs no privacy — which is
    /// within a few degrees of the data's own mean.
    #[serde(default)]
    pub center: Vec<f32>,
}

impl Default for FeatureConfig {
    /// Character 2–5-grams plus word uni/bi-grams in 2^16 buckets, no sentence encoder.
    fn default() -> Self {
        FeatureConfig {
            dim_log2: 16,
            char_min: 2,
            char_max: 5,
            word_max: 2,
            sentence: None,
        }
    }
}

impl FeatureConfig {
    /// The built-in sentence encoder alone (no n-grams): 384 features. The best choice for
    /// English under differential privacy (see `docs/ARCHITECTURE.md`, "Features").
    pub fn sentence() -> Self {
        FeatureConfig {
            char_min: 0,
            char_max: 0,
            word_max: 0,
            sentence: Some(SentenceFeatures {
                encoder: SentenceEncoder::builtin_id(),
                share: 1.0,
                center: Vec::new(),
            }),
            ..FeatureConfig::default()
        }
    }

    /// The built-in sentence encoder with `share` of the norm, plus the default n-grams in
    /// `2^dim_log2` buckets for the rest (for text the encoder does not know, e.g. Chinese).
    pub fn combined(dim_log2: u8, share: f32) -> Self {
        FeatureConfig {
            dim_log2,
            sentence: Some(SentenceFeatures {
                encoder: SentenceEncoder::builtin_id(),
                share,
                center: Vec::new(),
            }),
            ..FeatureConfig::default()
        }
    }

    /// True if the hashed n-gram block is on.
    pub fn hashed(&self) -> bool {
        self.char_max > 0 || self.word_max > 0
    }

    /// Size of the hashed block (0 if it is off).
    pub fn hashed_dim(&self) -> usize {
        if self.hashed() {
            1usize << self.dim_log2
        } else {
            0
        }
    }

    /// The feature dimension: the hashed block plus the sentence block.
    pub fn dim(&self) -> usize {
        self.hashed_dim() + self.sentence.as_ref().map_or(0, |_| SENTENCE_DIM_HINT)
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
        match &self.sentence {
            None if !self.hashed() => {
                return Err(LearnError::InvalidConfig(
                    "both character and word n-grams are disabled and there is no sentence encoder; no features would be produced"
                        .into(),
                ));
            }
            Some(s) => {
                if !(s.share > 0.0 && s.share <= 1.0) {
                    return Err(LearnError::InvalidConfig(format!(
                        "sentence share = {} must be in (0, 1]",
                        s.share
                    )));
                }
                if !s.center.is_empty() && s.center.len() != SENTENCE_DIM_HINT {
                    return Err(LearnError::InvalidConfig(format!(
                        "sentence centre has {} values, the encoder gives {SENTENCE_DIM_HINT}",
                        s.center.len()
                    )));
                }
                if s.center.iter().any(|v| !v.is_finite()) {
                    return Err(LearnError::InvalidConfig(
                        "sentence centre holds a non-finite value".into(),
                    ));
                }
            }
            None => {}
        }
        Ok(())
    }
}

/// Width of the sentence block. Every encoder amble accepts must produce this many values
/// (checked when a featuriser is built), so a configuration's dimension is known without
/// loading the encoder.
pub const SENTENCE_DIM_HINT: usize = 384;

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

/// Turns text into [`SparseVec`]s. Cheap to clone and `Sync`; with sentence features it holds
/// the (shared) encoder.
#[derive(Debug, Clone)]
pub struct Featuriser {
    config: FeatureConfig,
    mask: u64,
    encoder: Option<Arc<SentenceEncoder>>,
    threads: usize,
}

impl PartialEq for Featuriser {
    /// Two featurisers are equal when they produce the same features: same configuration
    /// (which names the encoder by its weights hash).
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Featuriser {
    /// Validates `config`. Sentence features use the built-in encoder, which must be the one
    /// the configuration names.
    pub fn new(config: FeatureConfig) -> Result<Self> {
        config.validate()?;
        let encoder = match &config.sentence {
            None => None,
            Some(want) => {
                let builtin = SentenceEncoder::builtin_id();
                if want.encoder != builtin {
                    return Err(LearnError::InvalidConfig(format!(
                        "the model's features come from encoder {}, but the encoder here is {builtin}; \
                         load the model with the encoder it was trained with",
                        want.encoder
                    )));
                }
                let enc = SentenceEncoder::builtin()?;
                if enc.dim() != SENTENCE_DIM_HINT {
                    return Err(LearnError::InvalidConfig(format!(
                        "encoder {} gives {} values; amble's sentence block is {SENTENCE_DIM_HINT} wide",
                        enc.id(),
                        enc.dim()
                    )));
                }
                Some(enc)
            }
        };
        let mask = (1u64 << config.dim_log2) - 1;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Ok(Featuriser {
            config,
            mask,
            encoder,
            threads,
        })
    }

    /// The encoder, if the configuration has sentence features.
    pub fn encoder(&self) -> Option<&Arc<SentenceEncoder>> {
        self.encoder.as_ref()
    }

    /// Sets the sentence block's centre (see [`SentenceFeatures::center`]).
    pub fn set_center(&mut self, center: Vec<f32>) -> Result<()> {
        let mut config = self.config.clone();
        match config.sentence.as_mut() {
            Some(s) => s.center = center,
            None => {
                return Err(LearnError::InvalidConfig(
                    "no sentence features to centre".into(),
                ));
            }
        }
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.config.dim()
    }

    /// Featurises one text (see the module documentation). Without sentence features, empty or
    /// whitespace-only text gives the zero vector.
    pub fn featurise(&self, text: &str) -> Result<SparseVec> {
        let sentence = self
            .encoder
            .as_ref()
            .map(|e| e.embed_one(text))
            .transpose()?;
        Ok(self.assemble(self.hashed(text), sentence.as_deref()))
    }

    /// Featurises many texts, running the encoder in batches on several threads. Reports
    /// `"embed"` progress (in texts) when there is an encoder.
    pub fn featurise_all(
        &self,
        texts: &[&str],
        progress: ProgressFn<'_>,
    ) -> Result<Vec<SparseVec>> {
        let sentences = match &self.encoder {
            Some(e) => Some(e.embed(texts, self.threads, progress)?),
            None => None,
        };
        Ok(self.assemble_all(texts, sentences.as_deref()))
    }

    /// [`Featuriser::featurise_all`] through `cache` (see [`EmbeddingCache::embed`]; `ticket`
    /// was taken before the texts were read).
    pub fn featurise_all_cached(
        &self,
        texts: &[&str],
        cache: &EmbeddingCache,
        ticket: Ticket,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<SparseVec>> {
        let sentences = match &self.encoder {
            Some(e) => Some(cache.embed(e, texts, self.threads, ticket, progress)?),
            None => None,
        };
        Ok(self.assemble_all(texts, sentences.as_deref()))
    }

    fn assemble_all(&self, texts: &[&str], sentences: Option<&[Vec<f32>]>) -> Vec<SparseVec> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let s = sentences.and_then(|v| v.get(i)).map(Vec::as_slice);
                self.assemble(self.hashed(t), s)
            })
            .collect()
    }

    /// Joins the blocks: hashed (unit norm or zero) and the centred, renormalised embedding,
    /// weighted so the whole vector has unit norm.
    fn assemble(&self, hashed: SparseVec, sentence: Option<&[f32]>) -> SparseVec {
        let (Some(cfg), Some(raw)) = (&self.config.sentence, sentence) else {
            return hashed;
        };
        let mut e: Vec<f32> = if cfg.center.len() == raw.len() {
            raw.iter().zip(&cfg.center).map(|(x, c)| x - c).collect()
        } else {
            raw.to_vec()
        };
        let n = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            e.iter_mut().for_each(|v| *v /= n);
        }
        let have_hashed = hashed.nnz() > 0;
        let (hw, sw) = if have_hashed {
            ((1.0 - cfg.share).sqrt(), cfg.share.sqrt())
        } else {
            (0.0, 1.0)
        };
        let base = self.config.hashed_dim() as u32;
        let mut out = SparseVec {
            indices: Vec::with_capacity(hashed.nnz() + e.len()),
            values: Vec::with_capacity(hashed.nnz() + e.len()),
        };
        if hw > 0.0 {
            out.indices.extend_from_slice(&hashed.indices);
            out.values.extend(hashed.values.iter().map(|v| v * hw));
        }
        out.indices.extend((0..e.len() as u32).map(|i| base + i));
        out.values.extend(e.iter().map(|v| v * sw));
        out
    }

    /// The hashed n-gram block of `text`: sublinear TF, L2-normalised (zero if the block is off).
    fn hashed(&self, text: &str) -> SparseVec {
        if !self.config.hashed() {
            return SparseVec::default();
        }
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
            f.featurise("Where is  my CARD?").unwrap(),
            f.featurise("where is my card?  ").unwrap()
        );
    }

    #[test]
    fn output_is_sorted_unique_and_unit_norm() {
        let f = Featuriser::new(FeatureConfig::default()).unwrap();
        let v = f
            .featurise("I still have not received my new card, I ordered over a week ago.")
            .unwrap();
        assert!(v.indices.windows(2).all(|w| w[0] < w[1]));
        assert!((v.l2_norm() - 1.0).abs() < 1e-5);
        assert!(v.indices.iter().all(|&i| (i as usize) < f.dim()));
    }

    #[test]
    fn empty_text_is_zero_vector() {
        let f = Featuriser::new(FeatureConfig::default()).unwrap();
        assert_eq!(f.featurise("   \n\t").unwrap().nnz(), 0);
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
