//! A synthetic life-archive generator with a planted, known rule for the next need, so a need
//! predictor's accuracy can be measured against ground truth; it also feeds the demo.
//!
//! Deterministic by seed (ChaCha8; this is test data, not a privacy mechanism). Each subject has
//! a life stage, a profile, goals, a time-ordered list of events drawn from stage-dependent
//! weights, and a few interactions (text + intent). The true next need is
//! [`planted_need`]: the need implied by the most recent non-routine event, for some events
//! depending on the life stage.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::NeedContext;

/// Life stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeStage {
    /// In education.
    Student,
    /// Recently had a child.
    NewParent,
    /// Self-employed.
    Freelancer,
    /// Retired.
    Retiree,
    /// Buying a first home.
    Homebuyer,
    /// Recently moved from abroad.
    Expat,
}

impl LifeStage {
    /// Every stage.
    pub const ALL: [LifeStage; 6] = [
        LifeStage::Student,
        LifeStage::NewParent,
        LifeStage::Freelancer,
        LifeStage::Retiree,
        LifeStage::Homebuyer,
        LifeStage::Expat,
    ];

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            LifeStage::Student => "student",
            LifeStage::NewParent => "new_parent",
            LifeStage::Freelancer => "freelancer",
            LifeStage::Retiree => "retiree",
            LifeStage::Homebuyer => "homebuyer",
            LifeStage::Expat => "expat",
        }
    }

    fn ages(self) -> (u32, u32) {
        match self {
            LifeStage::Student => (18, 26),
            LifeStage::NewParent => (24, 42),
            LifeStage::Freelancer => (22, 60),
            LifeStage::Retiree => (62, 90),
            LifeStage::Homebuyer => (25, 45),
            LifeStage::Expat => (21, 55),
        }
    }

    /// Events typical of the stage.
    fn typical(self) -> &'static [&'static str] {
        match self {
            LifeStage::Student => &[
                "exam_period",
                "tuition_due",
                "part_time_income",
                "rent_paid",
                "moved_home",
            ],
            LifeStage::NewParent => &[
                "baby_born",
                "childcare_search",
                "moved_home",
                "medical_appointment",
            ],
            LifeStage::Freelancer => &[
                "invoice_sent",
                "late_payment_received",
                "tax_deadline",
                "travel_booked",
            ],
            LifeStage::Retiree => &[
                "pension_payment",
                "medical_appointment",
                "travel_booked",
                "moved_home",
            ],
            LifeStage::Homebuyer => &[
                "mortgage_enquiry",
                "moved_home",
                "rent_paid",
                "tax_deadline",
            ],
            LifeStage::Expat => &[
                "foreign_transfer",
                "visa_renewal",
                "moved_home",
                "rent_paid",
            ],
        }
    }

    fn goals(self) -> &'static [&'static str] {
        match self {
            LifeStage::Student => &["finish_degree", "avoid_debt", "first_job"],
            LifeStage::NewParent => &["save_for_child", "more_family_time", "bigger_home"],
            LifeStage::Freelancer => &["steady_income", "pay_less_tax", "pension_plan"],
            LifeStage::Retiree => &["stay_healthy", "travel", "leave_inheritance"],
            LifeStage::Homebuyer => &["buy_home", "lower_mortgage", "renovate"],
            LifeStage::Expat => &["settle_in", "send_money_home", "learn_language"],
        }
    }
}

/// Routine events that imply no need; the rule looks past them.
pub const ROUTINE_EVENTS: [&str; 3] = ["app_login", "statement_viewed", "salary_paid"];

const ALL_EVENTS: [&str; 19] = [
    "exam_period",
    "tuition_due",
    "part_time_income",
    "rent_paid",
    "moved_home",
    "baby_born",
    "childcare_search",
    "invoice_sent",
    "late_payment_received",
    "tax_deadline",
    "pension_payment",
    "medical_appointment",
    "travel_booked",
    "mortgage_enquiry",
    "card_lost",
    "foreign_transfer",
    "visa_renewal",
    "app_login",
    "statement_viewed",
];

/// The planted rule: the need implied by the most recent non-routine event, given the stage.
pub fn planted_need(stage: LifeStage, events: &[String]) -> &'static str {
    let last = events
        .iter()
        .rev()
        .find(|e| !ROUTINE_EVENTS.contains(&e.as_str()) && e.as_str() != "salary_paid");
    let Some(e) = last else {
        return "budgeting_tool";
    };
    match (e.as_str(), stage) {
        ("card_lost", _) => "replace_card",
        ("moved_home", LifeStage::Student) => "renters_insurance",
        ("moved_home", LifeStage::NewParent | LifeStage::Homebuyer) => "home_insurance",
        ("moved_home", LifeStage::Retiree) => "downsizing_advice",
        ("moved_home", _) => "address_update",
        ("baby_born", _) => "child_savings_account",
        ("childcare_search", _) => "childcare_budgeting",
        ("exam_period", _) => "student_overdraft",
        ("tuition_due", _) => "student_loan",
        ("invoice_sent" | "late_payment_received", _) => "invoice_financing",
        ("tax_deadline", LifeStage::Freelancer) => "tax_savings_pot",
        ("tax_deadline", _) => "tax_help",
        ("pension_payment", _) => "pension_advice",
        ("medical_appointment", _) => "health_insurance",
        ("travel_booked", _) => "travel_insurance",
        ("foreign_transfer", _) => "fx_account",
        ("visa_renewal", _) => "document_help",
        ("mortgage_enquiry", _) => "mortgage_advice",
        _ => "budgeting_tool",
    }
}

/// Interaction templates: (intent, text). Intents are Banking77 labels so the intent classifier
/// trained on Banking77 can be demonstrated on them; some texts are Chinese.
const INTERACTIONS: [(&str, &str); 12] = [
    ("lost_or_stolen_card", "I lost my card, what should I do?"),
    ("lost_or_stolen_card", "我的银行卡丢了，怎么办？"),
    ("card_arrival", "My new card still hasn't arrived."),
    ("card_arrival", "我的新卡还没有寄到。"),
    (
        "exchange_rate",
        "What exchange rate do you use for transfers abroad?",
    ),
    ("exchange_rate", "你们的汇率是多少？"),
    (
        "transfer_not_received_by_recipient",
        "My friend says my transfer never arrived.",
    ),
    ("top_up_failed", "My top up failed again."),
    (
        "balance_not_updated_after_bank_transfer",
        "I transferred money but my balance did not change.",
    ),
    ("change_pin", "How can I change my PIN?"),
    (
        "pending_card_payment",
        "A card payment has been pending for days.",
    ),
    ("declined_card_payment", "Why was my card payment declined?"),
];

/// Settings of [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Number of subjects.
    pub subjects: usize,
    /// Seed; the same seed gives the same archive.
    pub seed: u64,
    /// Fewest events per subject (≥ 1).
    pub min_events: usize,
    /// Most events per subject.
    pub max_events: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            subjects: 1000,
            seed: 7,
            min_events: 3,
            max_events: 12,
        }
    }
}

/// A synthetic event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthEvent {
    /// Event kind.
    pub kind: String,
    /// Day number (increasing).
    pub day: u32,
}

/// A synthetic interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// What the person wrote.
    pub text: String,
    /// The true intent.
    pub intent: String,
}

/// One synthetic person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSubject {
    /// External-style reference (`synth:000042`).
    pub reference: String,
    /// Life stage.
    pub stage: LifeStage,
    /// Age in years.
    pub age: u32,
    /// City.
    pub city: String,
    /// Income band (`low`, `middle`, `high`).
    pub income_band: String,
    /// Goals.
    pub goals: Vec<String>,
    /// Events, oldest first.
    pub events: Vec<SynthEvent>,
    /// Interactions.
    pub interactions: Vec<Interaction>,
    /// Ground truth: [`planted_need`] of the stage and events.
    pub true_next_need: String,
}

/// A record shaped like the archive's collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthRecord {
    /// Collection (`profile`, `life_stage`, `goals`, `events`, `interactions`).
    pub collection: String,
    /// The record.
    pub value: serde_json::Value,
}

impl SynthSubject {
    /// The predictor input: events and the stage tag.
    pub fn context(&self) -> NeedContext {
        NeedContext {
            events: self.events.iter().map(|e| e.kind.clone()).collect(),
            tags: vec![format!("stage:{}", self.stage.name())],
        }
    }

    /// The subject's records, one per archive entry.
    pub fn to_records(&self) -> Vec<SynthRecord> {
        let rec = |c: &str, v| SynthRecord {
            collection: c.to_string(),
            value: v,
        };
        let mut out = vec![
            rec(
                "profile",
                json!({"age": self.age, "city": self.city, "income_band": self.income_band}),
            ),
            rec("life_stage", json!({"stage": self.stage.name()})),
        ];
        out.extend(self.goals.iter().map(|g| rec("goals", json!({"goal": g}))));
        out.extend(
            self.events
                .iter()
                .map(|e| rec("events", json!({"kind": e.kind, "day": e.day}))),
        );
        out.extend(
            self.interactions
                .iter()
                .map(|i| rec("interactions", json!({"text": i.text, "intent": i.intent}))),
        );
        out
    }
}

struct Rng(ChaCha8Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (self.0.next_u64() % n as u64) as usize
        }
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as usize) as u32
    }
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const CITIES: [&str; 8] = [
    "Shanghai", "Shenzhen", "Chengdu", "Milan", "Lyon", "Leeds", "Austin", "Osaka",
];

/// Generates `cfg.subjects` people.
pub fn generate(cfg: &SynthConfig) -> Vec<SynthSubject> {
    let mut rng = Rng(ChaCha8Rng::seed_from_u64(cfg.seed));
    let (lo, hi) = (
        cfg.min_events.max(1),
        cfg.max_events.max(cfg.min_events.max(1)),
    );
    (0..cfg.subjects)
        .map(|i| {
            let stage = LifeStage::ALL[rng.below(LifeStage::ALL.len())];
            let (a0, a1) = stage.ages();
            let age = rng.range(a0, a1);
            let n = lo + rng.below(hi - lo + 1);
            let mut day = 0;
            let typical = stage.typical();
            let events: Vec<SynthEvent> = (0..n)
                .map(|_| {
                    day += 1 + rng.below(20) as u32;
                    let u = rng.unit();
                    let kind = if u < 0.45 {
                        typical[rng.below(typical.len())]
                    } else if u < 0.80 {
                        ROUTINE_EVENTS[rng.below(ROUTINE_EVENTS.len())]
                    } else {
                        ALL_EVENTS[rng.below(ALL_EVENTS.len())]
                    };
                    SynthEvent {
                        kind: kind.to_string(),
                        day,
                    }
                })
                .collect();
            let goals_all = stage.goals();
            let g0 = rng.below(goals_all.len());
            let mut goals = vec![goals_all[g0].to_string()];
            if rng.unit() < 0.5 {
                goals.push(goals_all[(g0 + 1) % goals_all.len()].to_string());
            }
            let interactions = (0..1 + rng.below(3))
                .map(|_| {
                    let lost = events.iter().any(|e| e.kind == "card_lost");
                    let abroad = events.iter().any(|e| e.kind == "foreign_transfer");
                    let pick = if lost && rng.unit() < 0.7 {
                        rng.below(2)
                    } else if abroad && rng.unit() < 0.7 {
                        4 + rng.below(2)
                    } else {
                        rng.below(INTERACTIONS.len())
                    };
                    let (intent, text) = INTERACTIONS[pick];
                    Interaction {
                        text: text.to_string(),
                        intent: intent.to_string(),
                    }
                })
                .collect();
            let kinds: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
            let band = ["low", "middle", "high"][rng.below(3)];
            SynthSubject {
                reference: format!("synth:{i:06}"),
                stage,
                age,
                city: CITIES[rng.below(CITIES.len())].to_string(),
                income_band: band.to_string(),
                goals,
                true_next_need: planted_need(stage, &kinds).to_string(),
                events,
                interactions,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_archive_different_seed_different_archive() {
        let cfg = SynthConfig {
            subjects: 50,
            ..SynthConfig::default()
        };
        assert_eq!(generate(&cfg), generate(&cfg));
        let other = SynthConfig {
            seed: 8,
            ..cfg.clone()
        };
        assert_ne!(generate(&cfg), generate(&other));
    }

    #[test]
    fn planted_rule_looks_past_routine_events_and_uses_the_stage() {
        let ev = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            planted_need(LifeStage::Student, &ev(&["moved_home", "app_login"])),
            "renters_insurance"
        );
        assert_eq!(
            planted_need(LifeStage::Retiree, &ev(&["moved_home"])),
            "downsizing_advice"
        );
        assert_eq!(
            planted_need(LifeStage::Expat, &ev(&["app_login"])),
            "budgeting_tool"
        );
    }

    #[test]
    fn records_cover_every_collection() {
        let s = &generate(&SynthConfig {
            subjects: 1,
            ..SynthConfig::default()
        })[0];
        let cols: std::collections::BTreeSet<String> =
            s.to_records().into_iter().map(|r| r.collection).collect();
        for c in ["profile", "life_stage", "goals", "events", "interactions"] {
            assert!(cols.contains(c), "{c} missing");
        }
    }
}
