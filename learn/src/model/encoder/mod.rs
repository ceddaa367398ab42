//! Sentence embeddings from a pretrained, public encoder — the features that let a private
//! classifier learn from few people.
//!
//! Differential privacy pays for every direction a model must learn; a linear model on top of
//! a good public representation has far less to learn than one on raw n-grams, so the same
//! noise costs it much less accuracy (Tramèr & Boneh, "Differentially Private Learning Needs
//! Better Features", 2021). The encoder is fixed and public: it is the same file on every node,
//! identified by the SHA-256 of its weights, never trained, and it never sees anything but the
//! text being featurised, on the node, in memory.
//!
//! amble ships all-MiniLM-L6-v2 (`data/models/all-MiniLM-L6-v2`, Apache-2.0; 384 dimensions,
//! English) in half precision, compiled into the binary by the default `builtin-encoder`
//! feature ([`SentenceEncoder::builtin`]); [`SentenceEncoder::from_dir`] loads any BERT
//! WordPiece encoder laid out the same way. [`wordpiece`] is the tokenizer, [`bert`] the forward
//! pass; both are checked against reference outputs in `tests/encoder.rs`.

pub mod bert;
pub mod wordpiece;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::{ProgressFn, report};
use bert::{Bert, BertConfig};
use wordpiece::WordPiece;

/// Which encoder a model's features came from: its name and the SHA-256 of its weights file.
/// Part of every model that uses sentence features, so a node cannot silently combine weights
/// trained on one encoder with features from another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderId {
    /// Human-readable name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// Lower-case hex SHA-256 of the safetensors file.
    pub weights_sha256: String,
}

impl std::fmt::Display for EncoderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self
            .weights_sha256
            .get(..12)
            .unwrap_or(&self.weights_sha256);
        write!(f, "{} (weights {short}…)", self.name)
    }
}

/// Longest input in tokens, `[CLS]` and `[SEP]` included (the reference pipeline's limit for
/// all-MiniLM-L6-v2); longer texts are cut, as there.
pub const MAX_TOKENS: usize = 256;

/// Roughly how many tokens go into one batch: enough rows for the matrix products to run at
/// full speed, few enough that a batch's activations stay in cache-friendly sizes.
const BATCH_TOKENS: usize = 2048;

/// A pretrained sentence encoder: text → unit vector.
#[derive(Debug)]
pub struct SentenceEncoder {
    id: EncoderId,
    tokenizer: WordPiece,
    bert: Bert,
    max_tokens: usize,
}

/// The name of the encoder compiled into amble.
pub const BUILTIN_NAME: &str = "all-MiniLM-L6-v2";

/// SHA-256 of `data/models/all-MiniLM-L6-v2/model.f16.safetensors`, the weights compiled in;
/// checked when they are loaded.
pub const BUILTIN_WEIGHTS_SHA256: &str =
    "1412996879d32323c08ebaab855fa26bf876057b4290314af56ebe0c29270541";

#[cfg(feature = "builtin-encoder")]
mod builtin {
    pub(super) const CONFIG: &[u8] =
        include_bytes!("../../../../data/models/all-MiniLM-L6-v2/config.json");
    pub(super) const VOCAB: &str =
        include_str!("../../../../data/models/all-MiniLM-L6-v2/vocab.txt");
    pub(super) const WEIGHTS: &[u8] =
        include_bytes!("../../../../data/models/all-MiniLM-L6-v2/model.f16.safetensors");
}

impl SentenceEncoder {
    /// The encoder compiled into amble (all-MiniLM-L6-v2), loaded once per process and shared.
    #[cfg(feature = "builtin-encoder")]
    pub fn builtin() -> Result<Arc<SentenceEncoder>> {
        static CELL: std::sync::OnceLock<std::result::Result<Arc<SentenceEncoder>, String>> =
            std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let enc = SentenceEncoder::from_parts(
                BUILTIN_NAME,
                builtin::CONFIG,
                builtin::VOCAB,
                builtin::WEIGHTS,
            )
            .map_err(|e| e.to_string())?;
            if enc.id.weights_sha256 != BUILTIN_WEIGHTS_SHA256 {
                return Err(format!(
                    "the built-in encoder's weights have SHA-256 {}, expected {BUILTIN_WEIGHTS_SHA256}",
                    enc.id.weights_sha256
                ));
            }
            Ok(Arc::new(enc))
        })
        .clone()
        .map_err(LearnError::ModelFormat)
    }

    /// Without the `builtin-encoder` feature there is no compiled-in encoder.
    #[cfg(not(feature = "builtin-encoder"))]
    pub fn builtin() -> Result<Arc<SentenceEncoder>> {
        Err(LearnError::InvalidConfig(
            "this build has no built-in sentence encoder (built without the `builtin-encoder` feature)".into(),
        ))
    }

    /// The identity of the built-in encoder, without loading it (in every build, so a build
    /// without the weights can still name — and refuse — models that need them).
    pub fn builtin_id() -> EncoderId {
        EncoderId {
            name: BUILTIN_NAME.into(),
            weights_sha256: BUILTIN_WEIGHTS_SHA256.into(),
        }
    }

    /// Loads `config.json`, `vocab.txt` and the one `*.safetensors` file from `dir`; the
    /// encoder is named after the directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &Path| {
            std::fs::read(name).map_err(|e| LearnError::Data {
                path: name.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let entries = std::fs::read_dir(dir).map_err(|e| LearnError::Data {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut weights: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        let weights = match weights.len() {
            1 => weights.remove(0),
            n => {
                return Err(LearnError::Data {
                    path: dir.to_path_buf(),
                    reason: format!("expected exactly one .safetensors file, found {n}"),
                });
            }
        };
        let vocab_path = dir.join("vocab.txt");
        let vocab = String::from_utf8(read(&vocab_path)?).map_err(|e| LearnError::Data {
            path: vocab_path,
            reason: e.to_string(),
        })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "encoder".into());
        SentenceEncoder::from_parts(
            &name,
            &read(&dir.join("config.json"))?,
            &vocab,
            &read(&weights)?,
        )
    }

    /// Builds an encoder from the contents of its three files.
    pub fn from_parts(name: &str, config: &[u8], vocab: &str, weights: &[u8]) -> Result<Self> {
        let config: BertConfig = serde_json::from_slice(config)
            .map_err(|e| LearnError::ModelFormat(format!("encoder config.json: {e}")))?;
        let tokenizer = WordPiece::from_vocab(vocab)?;
        if tokenizer.len() != config.vocab_size {
            return Err(LearnError::ModelFormat(format!(
                "vocab.txt has {} entries, config.json says {}",
                tokenizer.len(),
                config.vocab_size
            )));
        }
        let max_tokens = MAX_TOKENS.min(config.max_position_embeddings);
        Ok(SentenceEncoder {
            id: EncoderId {
                name: name.to_string(),
                weights_sha256: sha256_hex(weights),
            },
            bert: Bert::load(config, weights)?,
            tokenizer,
            max_tokens,
        })
    }

    /// Name and weights hash.
    pub fn id(&self) -> &EncoderId {
        &self.id
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// Token ids of `text` as the encoder sees them (`[CLS] … [SEP]`, truncated).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.max_tokens)
    }

    /// The unit-norm embedding of one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        let mut v = self.bert.embed(&[self.tokenize(text)])?;
        v.pop()
            .ok_or_else(|| LearnError::Shape("encoder returned no embedding".into()))
    }

    /// Unit-norm embeddings of `texts`, in order, computed on up to `threads` threads in
    /// batches of about 2,048 tokens. Reports `"embed"` progress in texts.
    pub fn embed(
        &self,
        texts: &[&str],
        threads: usize,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        // Batches of consecutive texts (order kept; lengths need no sorting since nothing is padded).
        let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut start, mut filled) = (0, 0);
        for (i, t) in tokens.iter().enumerate() {
            filled += t.len();
            if filled >= BATCH_TOKENS {
                batches.push(start..i + 1);
                (start, filled) = (i + 1, 0);
            }
        }
        if start < tokens.len() {
            batches.push(start..tokens.len());
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let next = AtomicUsize::new(0);
        let workers = threads.clamp(1, batches.len().max(1));
        report(progress, "embed", 0, texts.len() as u64);
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<(usize, Result<Vec<Vec<f32>>>)>();
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, batches, tokens) = (&next, &batches, &tokens);
                scope.spawn(move || {
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        let Some(range) = batches.get(b) else { break };
                        let r = self.bert.embed(&tokens[range.clone()]);
                        let failed = r.is_err();
                        if tx.send((b, r)).is_err() || failed {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut done = 0u64;
            for (b, r) in rx {
                let range = batches[b].clone();
                done += range.len() as u64;
                for (slot, v) in out[range].iter_mut().zip(r?) {
                    *slot = v;
                }
                report(progress, "embed", done, texts.len() as u64);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The embeddings of the texts of the latest [`EmbeddingCache::embed`] call, keyed by the
/// SHA-256 of each text, for a process that featurises (nearly) the same texts round after
/// round — a node in a federation.
///
/// It lives in memory only and holds data derived from people's text, so it keeps no more
/// than the latest call read: each call serves what it can from the previous call's entries
/// and keeps exactly its own texts (a person left out of a round is gone from the cache when
/// the round is). [`EmbeddingCache::clear`] empties it at once and voids every call begun
/// before it: such a call still returns its embeddings but does not store them. Take the
/// [`Ticket`] *before* reading the data the texts come from, so that a withdrawal or an
/// erasure that lands between the read and the end of the call is honoured. Safe to share
/// between threads; the lock is never held while the encoder runs.
#[derive(Default)]
pub struct EmbeddingCache {
    inner: std::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    encoder: Option<EncoderId>,
    /// Bumped by every clear.
    generation: u64,
    map: std::collections::HashMap<[u8; 32], Vec<f32>>,
}

/// A call's right to store into an [`EmbeddingCache`]: void once the cache is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl std::fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("entries", &self.len())
            .finish()
    }
}

fn text_key(text: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest::digest(&digest::SHA256, text.as_bytes()).as_ref());
    k
}

impl EmbeddingCache {
    /// An empty cache.
    pub fn new() -> Self {
        EmbeddingCache::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic elsewhere cannot leave the map half-written in a way that matters: at worst
        // it holds fewer entries. Keep serving (and clearing) it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of cached embeddings.
    pub fn len(&self) -> usize {
        self.state().map.len()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The right to store the results of a call that starts reading its data now.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.state().generation)
    }

    /// Forgets everything, and voids every ticket issued so far.
    pub fn clear(&self) {
        let mut s = self.state();
        s.map.clear();
        s.generation += 1;
    }

    /// Embeds `texts` with `encoder` (see [`SentenceEncoder::embed`]), computing only those the
    /// previous call did not; afterwards the cache holds exactly these texts — unless it was
    /// cleared since `ticket` was taken, in which case it stays empty.
    pub fn embed(
        &self,
        encoder: &SentenceEncoder,
        texts: &[&str],
        threads: usize,
        ticket: Ticket,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| text_key(t)).collect();
        // Take the previous call's entries out: what this call does not need is dropped now.
        let mut have = {
            let mut s = self.state();
            let previous = std::mem::take(&mut s.map);
            if s.encoder.as_ref() == Some(encoder.id()) && s.generation == ticket.0 {
                previous
            } else {
                std::collections::HashMap::new()
            }
        };
        let wanted: std::collections::HashSet<[u8; 32]> = keys.iter().copied().collect();
        have.retain(|k, _| wanted.contains(k));
        let mut missing: Vec<usize> = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            if !have.contains_key(k) && queued.insert(*k) {
                missing.push(i);
            }
        }
        let todo: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
        let fresh = encoder.embed(&todo, threads, progress)?;
        for (&i, v) in missing.iter().zip(fresh) {
            have.insert(keys[i], v);
        }
        let out = keys
            .iter()
            .map(|k| {
                have.get(k)
                    .cloned()
                    .ok_or_else(|| LearnError::Shape("embedding cache lost an entry".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut s = self.state();
        if s.generation == ticket.0 {
            s.map = have;
            s.encoder = Some(encoder.id().clone());
        }
        Ok(out)
    }
}

/// Lower-case hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}
