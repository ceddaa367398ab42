//! Models survive serialisation exactly, and malformed bytes are refused, not trusted.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_learn::model::FeatureConfig;
use amble_learn::model::IntentModel;
use amble_learn::model::{Example, SgdConfig};
use amble_learn::model::{NeedContext, NeedFeatureConfig, NeedModel};

fn trained_intent() -> IntentModel {
    let labels = vec![
        "card_arrival".to_string(),
        "lost_or_stolen_card".to_string(),
    ];
    let mut m = IntentModel::new(
        labels,
        FeatureConfig {
            dim_log2: 12,
            ..FeatureConfig::default()
        },
    )
    .unwrap();
    let rows = [
        ("my card has not arrived", 0),
        ("when will my new card arrive", 0),
        ("I lost my card", 1),
        ("my card was stolen", 1),
        ("我的银行卡丢了", 1),
    ];
    let data: Vec<Example> = rows
        .iter()
        .enumerate()
        .map(|(i, (t, l))| Example {
            x: m.featuriser().featurise(t).unwrap(),
            label: *l,
            subject: i as u64,
        })
        .collect();
    m.softmax_mut()
        .train_sgd(&data, &SgdConfig::default(), None)
        .unwrap();
    m
}

#[test]
fn intent_model_round_trips_through_bytes() {
    let m = trained_intent();
    let bytes = m.to_bytes().unwrap();
    let back = IntentModel::from_bytes(&bytes).unwrap();
    assert_eq!(m, back);
    assert_eq!(
        m.predict("stolen card", 2).unwrap(),
        back.predict("stolen card", 2).unwrap()
    );
    assert_eq!(
        back.predict("my card was stolen yesterday", 1).unwrap()[0].label,
        "lost_or_stolen_card"
    );
}

#[test]
fn truncated_or_foreign_bytes_are_refused() {
    let bytes = trained_intent().to_bytes().unwrap();
    assert!(IntentModel::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(IntentModel::from_bytes(b"not a model at all").is_err());
    let mut flipped = bytes.clone();
    flipped[3] ^= 0xff;
    assert!(IntentModel::from_bytes(&flipped).is_err());
    // An intent model is not a need model.
    assert!(NeedModel::from_bytes(&bytes).is_err());
}

#[test]
fn need_model_round_trips_through_bytes() {
    let labels = vec!["a".to_string(), "b".to_string()];
    let mut m = NeedModel::new(labels, NeedFeatureConfig::default()).unwrap();
    let ctx = |e: &str| NeedContext {
        events: vec![e.to_string()],
        tags: vec![],
    };
    let data = vec![
        m.example(&ctx("x"), "a", 0).unwrap(),
        m.example(&ctx("y"), "b", 1).unwrap(),
    ];
    m.train(&data, &SgdConfig::default(), None).unwrap();
    let back = NeedModel::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(m, back);
    assert_eq!(back.predict(&ctx("y"), 1, 3).unwrap()[0].need, "b");
}
