//! The featuriser is deterministic across machines and runs: golden indices were computed once
//! and must never change (a change would silently break every deployed model).

use amble_learn::featurise::{FeatureConfig, Featuriser};

fn f() -> Featuriser {
    Featuriser::new(FeatureConfig::default()).unwrap()
}

#[test]
fn english_text_featurises_to_golden_indices() {
    let v = f().featurise("Where is my card?");
    assert_eq!(v.nnz(), GOLDEN_EN.len());
    assert_eq!(&v.indices[..], GOLDEN_EN);
    // Every n-gram occurs once: 1 + ln 1 = 1, then L2 normalisation.
    let want = 1.0 / (GOLDEN_EN.len() as f32).sqrt();
    assert!(v.values.iter().all(|&x| (x - want).abs() < 1e-6));
}

#[test]
fn chinese_text_featurises_to_golden_indices_without_segmentation() {
    let v = f().featurise("我的银行卡丢了");
    assert_eq!(&v.indices[..], GOLDEN_ZH);
}

#[test]
fn same_text_gives_same_features_across_instances_and_threads() {
    let texts = [
        "I lost my card",
        "我的新卡还没有寄到。",
        "Überweisung fehlgeschlagen",
    ];
    let here: Vec<_> = texts.iter().map(|t| f().featurise(t)).collect();
    let there =
        std::thread::spawn(move || texts.iter().map(|t| f().featurise(t)).collect::<Vec<_>>())
            .join()
            .unwrap();
    assert_eq!(here, there);
}

#[test]
fn related_texts_share_features_unrelated_do_not_much() {
    let a = f().featurise("my card has not arrived");
    let b = f().featurise("the card hasn't arrived yet");
    let c = f().featurise("我的银行卡丢了");
    let dot = |x: &amble_learn::featurise::SparseVec, y: &amble_learn::featurise::SparseVec| {
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
