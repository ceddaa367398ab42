//! Need prediction on the node: the local trainer (purpose `train.needs`) and
//! `Assist.PredictNeeds` (purpose `personalisation`).
//!
//! # What the model sees
//!
//! A person's *timeline*: their event kinds in time order, and as tags their life stage and
//! age band as they stood at each moment. The training set is the one the learn crate's
//! [`amble_learn::train::case_prefixes`] builds for an event log: for every event after the
//! first, the history before it (and the tags as of the previous event) is the context, and
//! the event's kind is the need that followed. A prediction asks the same question of the
//! whole history: what comes next for this person.
//!
//! Only fields that **both** purposes grant in the example policy are turned into features —
//! `events.kind`, `life_stage.tags` (and `life_stage.stage`, which `personalisation` grants;
//! both become `stage:VALUE`, so a stage also recorded as a tag looks the same to training and
//! prediction) and `profile.birth_year|age_band` (only as a band: a raw birth year is not used).
//! A feature training never saw has no weight, so a field only one purpose grants cannot
//! change a prediction; it can only show up with zero contribution, and such drivers are not
//! returned.
//!
//! # Privacy
//!
//! With [`Privacy::Dp`] the weights are trained by DP-SGD with per-subject clipping (one person
//! is the unit of privacy, however many events they have), the ε ledger is charged for model
//! `needs` *before* any noise is drawn, and a run that would exceed the budget is refused. Not
//! covered by ε: the *set of needs* the model can name is taken from the data (event kinds
//! seen at at least `min_label_subjects` consenting people), unless the operator passes a
//! public list in [`NeedsTrainConfig::labels`]. With [`Privacy::None`] there is no guarantee
//! and the run's audit entry says so.
//!
//! # Audit
//!
//! Training: one `train` entry per person whose data the run used (purpose `train.needs`, the
//! run number in its counts) and one summary entry, written under the consent gate before the
//! model is trained. Prediction: the read through `personalisation` is logged exactly like
//! [`Node::read`] (allowed with the fields, or denied with the reason) and that is the one
//! entry of the call; a call while no model exists reads nothing and is not logged.

use crate::training::{TrainingLog, consent_state};
use crate::{Actor, Collection, Node, NodeError, ReadOutcome, TimeRange};
use amble_crypto::{ExternalRef, SubjectId};
use amble_learn::model::{NeedContext, NeedFeatureConfig, NeedModel, NeedPrediction};
use amble_learn::model::{ProgressFn, SgdConfig};
use amble_learn::privacy::NoiseSource;
use amble_learn::privacy::{Budget, Charge};
use amble_learn::privacy::{DpSgdConfig, train_dp_sgd};
use amble_learn::train::{DpIntentConfig, Privacy};
use amble_policy::{DenyReason, ProjectedRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use time::OffsetDateTime;

/// The purpose need training reads through.
pub const TRAIN_NEEDS: &str = "train.needs";
/// The purpose a need prediction reads the person's archive through.
pub const PERSONALISATION: &str = "personalisation";
/// Needs returned when the caller does not say.
pub const DEFAULT_NEEDS_K: usize = 3;
/// Most needs one request may ask for.
pub const MAX_NEEDS_K: usize = 20;
/// Explaining features returned per need.
pub const DRIVERS_PER_NEED: usize = 5;

const NEEDS_MODEL_KEY: &str = "model/needs";
const NEEDS_MODEL_INFO_KEY: &str = "model/needs/info";
const NEEDS_RUNS_KEY: &str = "needs/runs";
/// The `meta` key of the node's privacy ledger (the same key `train.rs` reads and writes).
/// The ledger's name for the need model.
const LEDGER_MODEL: &str = "needs";
/// Collections whose fields become features (see the module doc).
const READ: [Collection; 3] = [
    Collection::Events,
    Collection::LifeStage,
    Collection::Profile,
];

/// What stops a need prediction or a need training run; each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NeedsError {
    /// A prediction was asked for before any need model was trained on this node; nothing was
    /// read.
    #[error(
        "no need model yet: run `amble train needs --data-dir DATA_DIR` on this node (add --epsilon for a private run)"
    )]
    NoNeedModel,
    /// The number of needs asked for is outside `1..=MAX_NEEDS_K`. Holds the number asked for.
    #[error("k = {0}: ask for 1..={MAX_NEEDS_K} needs (0 means {DEFAULT_NEEDS_K})")]
    BadK(usize),
    /// The policy refused to read the person's archive for `personalisation`; the denied read is
    /// already in the audit log. Holds the policy's reason.
    #[error(
        "the policy refused to read this person's archive for {PERSONALISATION}: {0} ({code}); needs are predicted only for people who consented to {PERSONALISATION}, for the roles the policy lists for it", code = .0.code()
    )]
    Denied(DenyReason),
    /// No consenting person has an event after their first whose kind is among the needs kept, so
    /// there is no example to train on.
    #[error(
        "nothing to train needs on: no person with consent for {TRAIN_NEEDS} has two or more events whose kind is among the needs kept (min_label_subjects or the labels list)"
    )]
    NothingToTrain,
    /// A DP training config sets `label_prior`, which the need model cannot use. Holds the value.
    #[error(
        "label_prior = {0} has no meaning for the need model (its labels are event kinds, not phrases); set it to 0"
    )]
    LabelPrior(f32),
    /// Reading the archive or the policy, charging the ledger, training, storing the model or
    /// writing the audit log failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A refusal by consent or policy is PERMISSION_DENIED with the reason (the refusal is already
/// in the audit log as a denied read).
impl amble_net::ServiceError for NeedsError {
    fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            NeedsError::NoNeedModel | NeedsError::NothingToTrain => Code::FailedPrecondition,
            NeedsError::Denied(DenyReason::UnknownPurpose { .. }) => Code::FailedPrecondition,
            NeedsError::Denied(_) => Code::PermissionDenied,
            NeedsError::BadK(_) | NeedsError::LabelPrior(_) => Code::InvalidArgument,
            NeedsError::Node(n) => n.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            NeedsError::Node(n) => n.message(),
            _ => self.to_string(),
        }
    }
}

impl From<amble_learn::LearnError> for NeedsError {
    fn from(e: amble_learn::LearnError) -> Self {
        NeedsError::Node(NodeError::Learn(e))
    }
}

impl From<amble_audit::AuditError> for NeedsError {
    fn from(e: amble_audit::AuditError) -> Self {
        NeedsError::Node(NodeError::from(e))
    }
}

/// How to train the need model on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedsTrainConfig {
    /// How a timeline becomes features: hashed dimension and how many recent events are placed.
    pub features: NeedFeatureConfig,
    /// DP-SGD (the ε ledger is charged) or plain SGD (no guarantee). `label_prior` must be 0.
    pub privacy: Privacy,
    /// An event kind becomes a need the model can name only if at least this many consenting
    /// people have it as a next event. Ignored when `labels` is given.
    pub min_label_subjects: usize,
    /// A public list of needs (event kinds): the model names only these, and the label set
    /// then depends on no one's data.
    pub labels: Option<Vec<String>>,
}

impl NeedsTrainConfig {
    /// Plain SGD: no privacy guarantee.
    pub fn not_private() -> Self {
        NeedsTrainConfig {
            features: NeedFeatureConfig {
                dim_log2: 12,
                last_k: 4,
            },
            // 30 epochs: with 10 the model was still underfit on a few hundred people and its
            // held-out accuracy swung with the order people were read in — 0.11–0.26 against a
            // base rate of 0.14 on the synthetic archive of `tests/needs.rs` — 0.21–0.31 now.
            privacy: Privacy::None(SgdConfig {
                epochs: 30,
                ..SgdConfig::default()
            }),
            min_label_subjects: 2,
            labels: None,
        }
    }

    /// DP-SGD at `epsilon` per person (at `delta`), with settings chosen on synthetic
    /// archives of a few hundred people.
    pub fn private(epsilon: f64, delta: f64) -> Self {
        NeedsTrainConfig {
            privacy: Privacy::Dp(DpIntentConfig {
                epsilon,
                delta,
                sample_rate: 0.3,
                epochs: 20.0,
                clip_norm: 1.0,
                learning_rate: 20.0,
                average_tail: 0.5,
                final_lr_fraction: 0.2,
                fit_bias: true,
                label_prior: 0.0,
                threads: 2,
            }),
            min_label_subjects: 5,
            ..NeedsTrainConfig::not_private()
        }
    }
}

/// What a need training run read and spent: counts, never identities or contents.
#[derive(Debug, Clone, Serialize)]
pub struct NeedsRun {
    /// The purpose the run read through (always [`TRAIN_NEEDS`]).
    pub purpose: &'static str,
    /// This node's need-training run number (also in the run's audit entries).
    pub run: u64,
    /// People whose data shaped the model (each has a `train` audit entry).
    pub subjects_used: usize,
    /// People the policy refused (no consent for `train.needs` now, or withdrawn).
    pub subjects_refused: usize,
    /// Training examples (one per event after a person's first).
    pub examples: usize,
    /// Needs the model can name.
    pub needs: usize,
    /// Event kinds left out for being seen at too few people.
    pub needs_dropped: usize,
    /// SHA-256 over the sorted pseudonyms used: names the consent state without naming anyone.
    pub consent_state_hash: String,
    /// SHA-256 (hex) of the stored model.
    pub model_sha256: String,
    /// What the run cost the privacy budget; `None` when it ran without differential privacy.
    pub charge: Option<Charge>,
    /// Wall-clock time spent training, in seconds (reading the archive not included).
    pub train_seconds: f64,
}

/// Where the stored need model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedsModelInfo {
    /// The need-training run number that produced the model.
    pub run: u64,
    /// SHA-256 (hex) of the stored model bytes.
    pub sha256: String,
    /// ε of the run that trained it (None: not private).
    pub epsilon: Option<f64>,
}

/// A prediction for one person.
#[derive(Debug, Clone, Serialize)]
pub struct NeedsAnswer {
    /// Most likely first, each with the features that drove it.
    pub needs: Vec<NeedPrediction>,
    /// SHA-256 (hex) of the model that answered.
    pub model_sha256: String,
}

/// A person's projected records as the need model reads them.
#[derive(Debug, Default)]
struct Timeline {
    /// Event kinds, oldest first.
    events: Vec<(OffsetDateTime, String)>,
    /// Life-stage tags and age bands, each from one record, oldest first.
    stages: Vec<(OffsetDateTime, Vec<String>)>,
    ages: Vec<(OffsetDateTime, String)>,
}

impl Timeline {
    fn from_records<'a>(records: impl IntoIterator<Item = &'a ProjectedRecord>) -> Self {
        let mut t = Timeline::default();
        for r in records {
            match r.collection() {
                Collection::Events => {
                    if let Some(kind) = r.get("kind").and_then(|v| v.as_str()) {
                        if !kind.trim().is_empty() {
                            t.events.push((r.time(), kind.to_owned()));
                        }
                    }
                }
                Collection::LifeStage => {
                    let mut tags: Vec<String> = r
                        .get("tags")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .chain(r.get("stage").and_then(|v| v.as_str()))
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| format!("stage:{s}"))
                        .collect();
                    tags.sort();
                    tags.dedup();
                    if !tags.is_empty() {
                        t.stages.push((r.time(), tags));
                    }
                }
                Collection::Profile => {
                    // Only a band (the policy's `age_band` transform), never a raw birth year.
                    if let Some(band) = r.get("birth_year").and_then(|v| v.as_str()) {
                        t.ages.push((r.time(), format!("age:{band}")));
                    }
                }
                _ => {}
            }
        }
        // Stable: records of one collection arrive in time order already.
        t.events.sort_by_key(|(at, _)| *at);
        t.stages.sort_by_key(|(at, _)| *at);
        t.ages.sort_by_key(|(at, _)| *at);
        t
    }

    /// The first `n` events, with the tags as they stood at `at`.
    fn context(&self, n: usize, at: OffsetDateTime) -> NeedContext {
        let mut tags = Vec::new();
        if let Some((_, s)) = self.stages.iter().rev().find(|(t, _)| *t <= at) {
            tags.extend(s.iter().cloned());
        }
        if let Some((_, a)) = self.ages.iter().rev().find(|(t, _)| *t <= at) {
            tags.push(a.clone());
        }
        NeedContext {
            events: self.events[..n.min(self.events.len())]
                .iter()
                .map(|(_, k)| k.clone())
                .collect(),
            tags,
        }
    }

    /// The whole history, tags as they stand at `now`.
    fn at(&self, now: OffsetDateTime) -> NeedContext {
        self.context(self.events.len(), now)
    }

    /// (context, next need) for every event after the first.
    fn prefixes(&self) -> Vec<(NeedContext, String)> {
        (1..self.events.len())
            .map(|i| {
                (
                    self.context(i, self.events[i - 1].0),
                    self.events[i].1.clone(),
                )
            })
            .collect()
    }
}

/// How the weights of one run are fitted, decided (and, for DP, charged) before training.
enum Trainer<'c> {
    Plain(&'c SgdConfig),
    Dp(DpSgdConfig),
}

/// One consenting person's training pairs.
struct PersonRows {
    subject: SubjectId,
    rows: Vec<(NeedContext, String)>,
}

impl Node {
    /// Reads every person whose consent for `train.needs` holds now, through the policy's
    /// projection, and turns their timelines into training pairs. Returns the people with at
    /// least one pair and the number refused.
    fn need_rows(&self, actor: &Actor) -> Result<(Vec<PersonRows>, usize), NeedsError> {
        let mut people = Vec::new();
        let refused =
            self.read_consenting(actor, TRAIN_NEEDS, Collection::Events, &READ, |person| {
                let rows = Timeline::from_records(&person.records).prefixes();
                if !rows.is_empty() {
                    people.push(PersonRows {
                        subject: person.subject,
                        rows,
                    });
                }
                Ok(())
            })?;
        Ok((people, refused))
    }

    /// Trains the need model on this node's archive and stores it (`models`, key
    /// `model/needs`); see the module doc for what is read, what is private and what is logged.
    ///
    /// Consent is read under the consent gate and the gate is held until the run's audit
    /// entries are written, so a withdrawal lands wholly before the run (the person is left
    /// out) or wholly after it. With DP the ledger is charged for model `needs` before
    /// training; a run that would exceed `budget` is refused and leaves no entries.
    pub fn train_needs(
        &self,
        actor: &Actor,
        cfg: &NeedsTrainConfig,
        budget: Budget,
        progress: ProgressFn<'_>,
    ) -> Result<NeedsRun, NeedsError> {
        if let Privacy::Dp(dp) = &cfg.privacy {
            if dp.label_prior != 0.0 {
                return Err(NeedsError::LabelPrior(dp.label_prior));
            }
        }
        let gate = self.consent_gate();
        let (people, refused) = self.need_rows(actor)?;

        // Which needs the model can name.
        let mut seen_at: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for (n, p) in people.iter().enumerate() {
            for (_, next) in &p.rows {
                seen_at.entry(next.as_str()).or_default().insert(n);
            }
        }
        let labels: Vec<String> = match &cfg.labels {
            Some(list) => {
                let mut l = list.clone();
                l.sort();
                l.dedup();
                l
            }
            None => seen_at
                .iter()
                .filter(|(_, who)| who.len() >= cfg.min_label_subjects.max(1))
                .map(|(k, _)| (*k).to_owned())
                .collect(),
        };
        let needs_dropped = seen_at
            .keys()
            .filter(|k| labels.binary_search_by(|l| l.as_str().cmp(**k)).is_err())
            .count();
        if labels.is_empty() {
            return Err(NeedsError::NothingToTrain);
        }
        let mut model = NeedModel::new(labels, cfg.features.clone())?;
        let mut examples = Vec::new();
        for (n, p) in people.iter().enumerate() {
            for (ctx, next) in &p.rows {
                if model.label_index(next).is_ok() {
                    examples.push(model.example(ctx, next, n as u64)?);
                }
            }
        }
        if examples.is_empty() {
            return Err(NeedsError::NothingToTrain);
        }
        // Everyone read with a history shaped the label set, so everyone counts as used.
        let used: Vec<SubjectId> = people.iter().map(|p| p.subject).collect();
        let (sorted, consent_state_hash) = consent_state(&used);

        let (trainer, charge) = match &cfg.privacy {
            Privacy::Dp(dp) => {
                let (mechanism, steps) = dp.plan()?;
                // The node's one ledger, shared with intent training.
                let charge = self.charge_run(budget, LEDGER_MODEL, mechanism, steps, sorted)?;
                let sgd = dp.sgd_config(&mechanism, steps);
                (Trainer::Dp(sgd), Some(charge))
            }
            Privacy::None(sgd) => (Trainer::Plain(sgd), None),
        };
        let run = self.next_needs_run()?;
        self.log_training_run(
            actor,
            &TrainingLog {
                purpose: TRAIN_NEEDS,
                model: "needs",
                collections: &READ,
                used: &used,
                refused,
                examples: examples.len(),
                consent_state_hash: &consent_state_hash,
                charge: charge.as_ref(),
                counts: &[("run", run)],
            },
        )?;
        drop(gate);

        let t0 = Instant::now();
        match trainer {
            Trainer::Dp(sgd) => {
                let mut noise = NoiseSource::from_os()?;
                train_dp_sgd(model.softmax_mut(), &examples, &sgd, &mut noise, progress)?;
            }
            Trainer::Plain(sgd) => {
                model.train(&examples, sgd, progress)?;
            }
        }
        let train_seconds = t0.elapsed().as_secs_f64();

        let bytes = model.to_bytes()?;
        let model_sha256 = hex::encode(amble_crypto::sha256(&bytes));
        let info = NeedsModelInfo {
            run,
            sha256: model_sha256.clone(),
            epsilon: charge.as_ref().map(|c| c.run.epsilon.value()),
        };
        let store = self.archive.store();
        store.set_model(NEEDS_MODEL_KEY, &bytes)?;
        store.set_model(
            NEEDS_MODEL_INFO_KEY,
            &serde_json::to_vec(&info).map_err(|e| NodeError::Corrupt(e.to_string()))?,
        )?;
        self.archive.flush()?;
        tracing::info!(
            run,
            subjects = people.len(),
            examples = examples.len(),
            needs = model.labels().len(),
            "need model trained"
        );
        Ok(NeedsRun {
            purpose: TRAIN_NEEDS,
            run,
            subjects_used: people.len(),
            subjects_refused: refused,
            examples: examples.len(),
            needs: model.labels().len(),
            needs_dropped,
            consent_state_hash,
            model_sha256,
            charge,
            train_seconds,
        })
    }

    /// Takes the next need-training run number (persisted, so numbers are never reused).
    fn next_needs_run(&self) -> Result<u64, NeedsError> {
        let last = match self.meta(NEEDS_RUNS_KEY)? {
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| NodeError::Corrupt("need run counter".into()))?,
            None => 0,
        };
        let run = last + 1;
        self.set_meta(NEEDS_RUNS_KEY, &run.to_be_bytes())?;
        Ok(run)
    }

    /// The need model trained last on this node, if any.
    pub fn need_model(&self) -> Result<Option<NeedModel>, NeedsError> {
        match self.archive.store().model(NEEDS_MODEL_KEY)? {
            Some(b) => Ok(Some(NeedModel::from_bytes(&b)?)),
            None => Ok(None),
        }
    }

    /// Where the stored need model came from, if one is stored.
    pub fn need_model_info(&self) -> Result<Option<NeedsModelInfo>, NeedsError> {
        match self.archive.store().model(NEEDS_MODEL_INFO_KEY)? {
            Some(b) => {
                Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                    NodeError::Corrupt(format!("need model info: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The `k` most likely next needs of the person `r` names, each with the features that
    /// drove it (exact for this linear model: weight × value per feature).
    ///
    /// The person's archive is read through [`Node::read`] with purpose `personalisation`, so
    /// the call is logged exactly like a read and that entry is its one audit entry; a refusal
    /// is logged there too and returned as [`NeedsError::Denied`]. Without a stored model
    /// nothing is read.
    pub fn predict_needs(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        k: usize,
    ) -> Result<NeedsAnswer, NeedsError> {
        if !(1..=MAX_NEEDS_K).contains(&k) {
            return Err(NeedsError::BadK(k));
        }
        let bytes = self
            .archive
            .store()
            .model(NEEDS_MODEL_KEY)?
            .ok_or(NeedsError::NoNeedModel)?;
        let model = NeedModel::from_bytes(&bytes)?;
        let projection = match self.read(actor, r, PERSONALISATION, TimeRange::ALL)? {
            ReadOutcome::Allowed(p) => p,
            ReadOutcome::Denied(reason) => return Err(NeedsError::Denied(reason)),
        };
        let ctx = Timeline::from_records(projection.records()).at(self.now());
        let mut needs = model.predict(&ctx, k, DRIVERS_PER_NEED)?;
        for n in &mut needs {
            // Features training never saw carry no weight: they explain nothing.
            n.drivers.retain(|d| d.contribution != 0.0);
        }
        tracing::debug!(caller = %actor.id, k, "needs predicted");
        Ok(NeedsAnswer {
            needs,
            model_sha256: hex::encode(amble_crypto::sha256(&bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amble_policy::{Decision, Policy, Role, decide};
    use serde_json::json;

    const POLICY: &str = r#"
version = 1
[[purpose]]
id = "t"
description = "test"
legal_basis = "legitimate_interest"
roles = ["node"]
[purpose.read]
profile = ["birth_year|age_band"]
life_stage = ["stage", "tags"]
events = ["kind"]
"#;

    fn timeline(recs: &[(Collection, i64, serde_json::Value)]) -> (Timeline, OffsetDateTime) {
        let policy = Policy::from_toml_str(POLICY, "test").unwrap();
        let now = OffsetDateTime::now_utc();
        let h = amble_consent::ConsentHistory::default();
        let Decision::Allow(grant) = decide(&policy, "t", Role::Node, "t", &h, now) else {
            panic!("legitimate interest needs no consent")
        };
        let base = now - time::Duration::days(100);
        let projected: Vec<ProjectedRecord> = recs
            .iter()
            .filter_map(|(c, day, v)| grant.project(*c, base + time::Duration::days(*day), v))
            .collect();
        (Timeline::from_records(&projected), base)
    }

    #[test]
    fn each_prefix_sees_only_earlier_events_and_the_tags_of_its_time() {
        let (t, _) = timeline(&[
            (Collection::Profile, 0, json!({"birth_year": 1990})),
            (
                Collection::LifeStage,
                0,
                json!({"stage": "student", "tags": ["student"]}),
            ),
            (Collection::Events, 1, json!({"kind": "exam_period"})),
            (Collection::Events, 2, json!({"kind": "moved_home"})),
            (Collection::LifeStage, 3, json!({"stage": "new_parent"})),
            (
                Collection::Events,
                4,
                json!({"kind": "baby_born", "amount": 5}),
            ),
            (Collection::Events, 5, json!({"amount": 7})),
        ]);
        let p = t.prefixes();
        assert_eq!(p.len(), 2, "three events with a kind make two pairs");
        assert_eq!(p[0].0.events, ["exam_period"]);
        assert_eq!(p[0].1, "moved_home");
        assert_eq!(p[1].0.events, ["exam_period", "moved_home"]);
        assert_eq!(p[1].1, "baby_born");
        // Stage and a tag with the same value become one feature; the band, never the year.
        assert_eq!(p[1].0.tags[0], "stage:student");
        assert_eq!(p[1].0.tags.len(), 2);
        assert!(p[1].0.tags[1].starts_with("age:"), "{:?}", p[1].0.tags);
        assert!(!p[1].0.tags[1].contains("1990"));
        let now = t.at(OffsetDateTime::now_utc());
        assert_eq!(now.events.len(), 3);
        assert_eq!(
            now.tags[0], "stage:new_parent",
            "the latest stage applies now"
        );
    }

    #[test]
    fn a_raw_birth_year_and_unknown_collections_are_not_features() {
        let raw = Policy::from_toml_str(&POLICY.replace("birth_year|age_band", "birth_year"), "t")
            .unwrap();
        let h = amble_consent::ConsentHistory::default();
        let now = OffsetDateTime::now_utc();
        let Decision::Allow(grant) = decide(&raw, "t", Role::Node, "t", &h, now) else {
            panic!()
        };
        let rec = grant
            .project(Collection::Profile, now, &json!({"birth_year": 1990}))
            .unwrap();
        let t = Timeline::from_records([&rec]);
        assert!(t.ages.is_empty());
        assert!(t.at(now).tags.is_empty());
    }
}
