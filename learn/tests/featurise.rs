//! The featuriser is deterministic across machines and runs: golden indices were computed once
//! and must never change (a change would silently break every deployed model).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_learn::model::{FeatureConfig, Featuriser};

fn f() -> Featuriser {
    Featuriser::new(FeatureConfig::default()).unwrap()
}

#[test]
fn english_text_featurises_to_golden_indices() {
    let v = f().featurise("Where is my card?").unwrap();
    assert_eq!(v.nnz(), GOLDEN_EN.len());
    assert_eq!(&v.indices[..], GOLDEN_EN);
    // Every n-gram occurs once: 1 + ln 1 = 1, then L2 normalisation.
    let want = 1.0 / (GOLDEN_EN.len() as f32).sqrt();
    assert!(v.values.iter().all(|&x| (x - want).abs() < 1e-6));
}

#[test]
fn chinese_text_featurises_to_golden_indices_without_segmentation() {
    let v = f().featurise("我的银行卡丢了").unwrap();
    assert_eq!(&v.indices[..], GOLDEN_ZH);
}

#[test]
fn same_text_gives_same_features_across_instances_and_threads() {
    let texts = [
        "I lost my card",
        "我的新卡还没有寄到。",
        "Überweisung fehlgeschlagen",
    ];
    let here: Vec<_> = texts.iter().map(|t| f().featurise(t).unwrap()).collect();
    let there = std::thread::spawn(move || {
        texts
            .iter()
            .map(|t| f().featurise(t).unwrap())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(here, there);
}

#[test]
fn related_texts_share_features_unrelated_do_not_much() {
    let a = f().featurise("my card has not arrived").unwrap();
    let b = f().featurise("the card hasn't arrived yet").unwrap();
    let c = f().featurise("我的银行卡丢了").unwrap();
    let dot = |x: &amble_learn::model::SparseVec, y: &amble_learn::model::SparseVec| {
        x.indices
            .iter()
            .zip(&x.values)
            .filter_map(|(i, v)| y.indices.binary_search(i).ok().map(|j| v * y.values[j]))
            .sum::<f32>()
    };
    assert!(dot(&a, &b) > 0.3);
    assert!(dot(&a, &c) < 0.05);
}

/// "Where is my card?": 66 character 2–5-grams (with boundary markers) + 4 words + 3 bigrams,
/// 2^16 buckets, computed once with FNV-1a + final mix.
#[rustfmt::skip]
const GOLDEN_EN: &[u32] = &[144, 1218, 1296, 4683, 4779, 5343, 5384, 5471, 7000, 7504, 8296, 10236, 13948, 15940, 17194, 17890, 20181, 20219, 20472, 20552, 22409, 22789, 23055, 23888, 23955, 24206, 25218, 26134, 26250, 26265, 27636, 27781, 28630, 28776, 29559, 29634, 30938, 31168, 31473, 33062, 33727, 35241, 35467, 36513, 38587, 38769, 39681, 40158, 40814, 42509, 42695, 43715, 44539, 44638, 45716, 46124, 47775, 48487, 48736, 48962, 49559, 49710, 50256, 53974, 55874, 59029, 60563, 61578, 62491, 63739, 64436, 64524, 64527];
/// "我的银行卡丢了": 26 character 2–5-grams + the run as one word.
#[rustfmt::skip]
const GOLDEN_ZH: &[u32] = &[7469, 8999, 9517, 10423, 11839, 16100, 18147, 19503, 24296, 31648, 33076, 41292, 43386, 47494, 49482, 50709, 51680, 52137, 56910, 57504, 57798, 59398, 62560, 62618, 63888, 64097, 65530];

mod sentence {
    use amble_learn::model::{EmbeddingCache, SentenceEncoder};
    use amble_learn::model::{FeatureConfig, Featuriser, SENTENCE_DIM_HINT, SparseVec};
    use amble_learn::model::{IntentModel, label_phrase};

    fn norm2(v: &SparseVec, range: std::ops::Range<u32>) -> f32 {
        v.indices
            .iter()
            .zip(&v.values)
            .filter(|(i, _)| range.contains(i))
            .map(|(_, x)| x * x)
            .sum()
    }

    fn cos(a: &SparseVec, b: &SparseVec) -> f32 {
        a.indices
            .iter()
            .zip(&a.values)
            .filter_map(|(i, v)| b.indices.binary_search(i).ok().map(|j| v * b.values[j]))
            .sum()
    }

    #[test]
    fn sentence_features_are_deterministic_unit_vectors_that_know_paraphrases() {
        let f = Featuriser::new(FeatureConfig::sentence()).unwrap();
        assert_eq!(f.dim(), SENTENCE_DIM_HINT);
        let a = f.featurise("my card has not arrived").unwrap();
        assert_eq!(a, f.featurise("my card has not arrived").unwrap());
        assert_eq!(a.nnz(), SENTENCE_DIM_HINT);
        assert!((a.l2_norm() - 1.0).abs() < 1e-5);
        let b = f
            .featurise("the card I ordered still hasn't been delivered")
            .unwrap();
        let c = f.featurise("what is the exchange rate for euros").unwrap();
        // The hashed n-grams of a and b share little; the encoder sees the same request.
        assert!(
            cos(&a, &b) > cos(&a, &c) + 0.3,
            "{} vs {}",
            cos(&a, &b),
            cos(&a, &c)
        );
        let batch = f
            .featurise_all(
                &[
                    "my card has not arrived",
                    "what is the exchange rate for euros",
                ],
                None,
            )
            .unwrap();
        for (x, y) in batch[0].values.iter().zip(&a.values) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn combined_features_give_the_sentence_block_its_share_and_keep_chinese_ngrams() {
        let f = Featuriser::new(FeatureConfig::combined(12, 0.7)).unwrap();
        assert_eq!(f.dim(), 4096 + SENTENCE_DIM_HINT);
        for text in ["I lost my card", "我的银行卡丢了"] {
            let v = f.featurise(text).unwrap();
            assert!((v.l2_norm() - 1.0).abs() < 1e-5);
            assert!((norm2(&v, 0..4096) - 0.3).abs() < 1e-4, "{text}");
            assert!((norm2(&v, 4096..4096 + 384) - 0.7).abs() < 1e-4, "{text}");
        }
    }

    fn labels() -> Vec<String> {
        ["card_arrival", "lost_or_stolen_card", "exchange_rate"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_new_intent_model_centres_on_the_mean_embedding_of_its_label_names() {
        let m = IntentModel::new(labels(), FeatureConfig::sentence()).unwrap();
        let center = &m.featuriser().config().sentence.as_ref().unwrap().center;
        let enc = SentenceEncoder::builtin().unwrap();
        let phrases: Vec<String> = labels().iter().map(|l| label_phrase(l)).collect();
        let refs: Vec<&str> = phrases.iter().map(String::as_str).collect();
        let e = enc.embed(&refs, 1, None).unwrap();
        assert_eq!(center.len(), 384);
        for (k, c) in center.iter().enumerate() {
            let mean = (e[0][k] + e[1][k] + e[2][k]) / 3.0;
            assert!((c - mean).abs() < 1e-6);
        }
        // The centre is subtracted before normalising: the feature is the unit vector of
        // embedding − centre.
        let raw = enc.embed_one("where is my card").unwrap();
        let mut want: Vec<f32> = raw.iter().zip(center).map(|(x, c)| x - c).collect();
        let n = want.iter().map(|v| v * v).sum::<f32>().sqrt();
        want.iter_mut().for_each(|v| *v /= n);
        let got = m.featuriser().featurise("where is my card").unwrap();
        for (g, w) in got.values.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
    }

    #[test]
    fn a_sentence_model_round_trips_and_refuses_another_encoder() {
        let mut m = IntentModel::new(labels(), FeatureConfig::sentence()).unwrap();
        m.add_label_name_prior(5.0).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = IntentModel::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.predict("I think someone stole my card", 1).unwrap()[0].label,
            "lost_or_stolen_card"
        );
        // The same bytes, claiming another encoder's weights.
        let hash = m
            .featuriser()
            .encoder()
            .unwrap()
            .id()
            .weights_sha256
            .clone();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains(&hash));
        let other = "0".repeat(64);
        let forged: Vec<u8> = {
            let at = bytes
                .windows(64)
                .position(|w| w == hash.as_bytes())
                .unwrap();
            let mut b = bytes.clone();
            b[at..at + 64].copy_from_slice(other.as_bytes());
            b
        };
        let e = IntentModel::from_bytes(&forged).unwrap_err().to_string();
        assert!(e.contains("encoder"), "{e}");
    }

    #[test]
    fn the_embedding_cache_returns_what_the_encoder_computes_and_forgets_on_request() {
        let f = Featuriser::new(FeatureConfig::sentence()).unwrap();
        let texts = ["first text", "second text", "first text"];
        let plain = f.featurise_all(&texts, None).unwrap();
        let cache = EmbeddingCache::new();
        assert_eq!(
            f.featurise_all_cached(&texts, &cache, cache.ticket(), None)
                .unwrap(),
            plain
        );
        assert_eq!(cache.len(), 2);
        // A second pass is served from the cache and gives the same features.
        assert_eq!(
            f.featurise_all_cached(&texts, &cache, cache.ticket(), None)
                .unwrap(),
            plain
        );
        // A call keeps only its own texts.
        f.featurise_all_cached(&["second text"], &cache, cache.ticket(), None)
            .unwrap();
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        // A call whose ticket predates a clear returns its features but stores nothing.
        let stale = cache.ticket();
        cache.clear();
        assert_eq!(
            f.featurise_all_cached(&texts, &cache, stale, None).unwrap(),
            plain
        );
        assert!(cache.is_empty());
    }
}
