//! The sentence encoder against the reference implementation (Hugging Face tokenizers and
//! sentence-transformers on PyTorch, original float32 weights): `tests/data/minilm-reference.json`,
//! written by `tests/data/minilm_reference.py`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::PathBuf;

use amble_learn::model::{BUILTIN_NAME, SentenceEncoder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    tokens: Vec<Tokens>,
    banking77_test_ids: Vec<Vec<u32>>,
    embeddings: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Tokens {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Embedding {
    text: String,
    embedding: Vec<f32>,
}

fn here(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn reference() -> Reference {
    let bytes = std::fs::read(here("tests/data/minilm-reference.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn banking77_test_texts() -> Vec<String> {
    amble_learn::train::read_intent_csv(&here("../data/banking77/test.csv"))
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect()
}

#[test]
fn tokenizer_gives_the_reference_ids_for_awkward_text() {
    let enc = SentenceEncoder::builtin().unwrap();
    let r = reference();
    assert_eq!(r.max_seq_length, amble_learn::model::MAX_TOKENS);
    assert!(r.tokens.len() >= 20);
    for t in &r.tokens {
        assert_eq!(enc.tokenize(&t.text), t.ids, "text {:?}", t.text);
    }
}

#[test]
fn tokenizer_gives_the_reference_ids_for_every_banking77_test_sentence() {
    let enc = SentenceEncoder::builtin().unwrap();
    let r = reference();
    let texts = banking77_test_texts();
    assert_eq!(texts.len(), 3080);
    assert_eq!(r.banking77_test_ids.len(), texts.len());
    let wrong: Vec<&String> = texts
        .iter()
        .zip(&r.banking77_test_ids)
        .filter(|(t, ids)| enc.tokenize(t) != **ids)
        .map(|(t, _)| t)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} differ, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Half-precision weights and amble's own forward pass land within 1e-3 per coordinate and a
/// cosine of 0.9999 of the float32 reference, long (truncated) and non-English texts included.
#[test]
fn embeddings_match_the_reference_implementation() {
    let enc = SentenceEncoder::builtin().unwrap();
    let r = reference();
    let texts: Vec<&str> = r.embeddings.iter().map(|e| e.text.as_str()).collect();
    let got = enc.embed(&texts, 2, None).unwrap();
    assert_eq!(got.len(), r.embeddings.len());
    let mut worst_cos = 1.0f64;
    let mut worst_abs = 0.0f32;
    for (g, want) in got.iter().zip(&r.embeddings) {
        assert_eq!(g.len(), 384);
        worst_cos = worst_cos.min(cosine(g, &want.embedding));
        for (a, b) in g.iter().zip(&want.embedding) {
            worst_abs = worst_abs.max((a - b).abs());
        }
    }
    assert!(worst_cos > 0.9999, "worst cosine {worst_cos}");
    assert!(worst_abs < 1e-3, "worst coordinate difference {worst_abs}");
}

#[test]
fn batching_and_threads_do_not_change_an_embedding() {
    let enc = SentenceEncoder::builtin().unwrap();
    let texts = banking77_test_texts();
    let some: Vec<&str> = texts.iter().take(300).map(String::as_str).collect();
    let two = enc.embed(&some, 2, None).unwrap();
    let one = enc.embed(&some, 1, None).unwrap();
    assert_eq!(one, two, "thread count changed the result");
    for i in [0, 137, 299] {
        let alone = enc.embed_one(some[i]).unwrap();
        let d = alone
            .iter()
            .zip(&two[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "text {i} differs by {d} alone vs in a batch");
        assert!((alone.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn builtin_encoder_is_the_vendored_directory_and_says_so() {
    let enc = SentenceEncoder::builtin().unwrap();
    assert_eq!(enc.id().name, BUILTIN_NAME);
    assert_eq!(enc.id(), &SentenceEncoder::builtin_id());
    let readme =
        std::fs::read_to_string(here("../data/models/all-MiniLM-L6-v2/README.md")).unwrap();
    assert!(
        readme.contains(&enc.id().weights_sha256),
        "README.md does not state the weights' SHA-256 {}",
        enc.id().weights_sha256
    );
    let from_dir = SentenceEncoder::from_dir(&here("../data/models/all-MiniLM-L6-v2")).unwrap();
    assert_eq!(from_dir.id(), enc.id());
    let text = "I still have not received my new card";
    assert_eq!(
        from_dir.embed_one(text).unwrap(),
        enc.embed_one(text).unwrap()
    );
}

#[test]
fn damaged_encoder_files_are_refused_with_a_reason() {
    let dir = here("../data/models/all-MiniLM-L6-v2");
    let config = std::fs::read(dir.join("config.json")).unwrap();
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    let weights = std::fs::read(dir.join("model.f16.safetensors")).unwrap();

    let truncated =
        SentenceEncoder::from_parts("x", &config, &vocab, &weights[..weights.len() / 2]);
    assert!(
        truncated
            .unwrap_err()
            .to_string()
            .contains("encoder weights")
    );

    let short_vocab: String = vocab.lines().take(1000).map(|l| format!("{l}\n")).collect();
    let e = SentenceEncoder::from_parts("x", &config, &short_vocab, &weights).unwrap_err();
    assert!(e.to_string().contains("vocab.txt has 1000 entries"), "{e}");

    let wide = String::from_utf8(config.clone())
        .unwrap()
        .replace("\"hidden_size\": 384", "\"hidden_size\": 768");
    let e = SentenceEncoder::from_parts("x", wide.as_bytes(), &vocab, &weights).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");

    let tanh = String::from_utf8(config)
        .unwrap()
        .replace("\"gelu\"", "\"tanh\"");
    let e = SentenceEncoder::from_parts("x", tanh.as_bytes(), &vocab, &weights).unwrap_err();
    assert!(e.to_string().contains("activation"), "{e}");

    let missing = SentenceEncoder::from_dir(&here("tests/data")).unwrap_err();
    assert!(missing.to_string().contains("safetensors"), "{missing}");
}
