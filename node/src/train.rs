//! The node's local trainer: training data is read through the policy's `train.*` purposes
//! (only subjects whose consent holds *now*, only the fields the purpose may see), the privacy
//! budget ledger is charged before any noise is drawn, and each run writes an audit entry per
//! person it used (so their access log names it) and a summary with counts, the purpose and
//! the ε spent — never contents. The rules themselves live in `training.rs`.

use crate::training::{TrainingLog, consent_state};
use crate::{Actor, Collection, Node, NodeError, Result};
use amble_crypto::SubjectId;
use amble_learn::federation::{LocalTraining, local_update};
use amble_learn::model::Example;
use amble_learn::model::IntentModel;
use amble_learn::model::ProgressFn;
use amble_learn::privacy::NoiseSource;
use amble_learn::privacy::{Budget, BudgetLedger, Charge};
use amble_learn::train::{IntentReport, IntentTrainConfig, Privacy, TextRow, train_intent};
use serde::Serialize;

const LEDGER_KEY: &str = "privacy_ledger";
pub(crate) const INTENT_MODEL_KEY: &str = "model/intent";
const INTENT_MODEL_INFO_KEY: &str = "model/intent/info";
const TRAINING_RUNS_KEY: &str = "federation/training_runs";
/// The purpose intent training reads through.
pub const TRAIN_INTENT: &str = "train.intent";

/// What a training run read and spent.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRun {
    /// The purpose the run read through (always [`TRAIN_INTENT`]).
    pub purpose: &'static str,
    /// People who contributed at least one example.
    pub subjects_used: usize,
    /// People the policy refused for the purpose (no consent now, or the grant lacks the
    /// collection); none of their records was read.
    pub subjects_refused: usize,
    /// Training examples: interactions with a resolved intent.
    pub examples: usize,
    /// SHA-256 over the sorted pseudonyms used: names the consent state without naming anyone.
    pub consent_state_hash: String,
    /// How the model did on the test rows, and how training went.
    pub report: IntentReport,
    /// What the run cost the privacy budget; `None` when it ran without differential privacy.
    pub charge: Option<Charge>,
}

impl Node {
    /// The persisted privacy budget ledger, held to the `configured` budget: what was spent is
    /// kept, and the budget in force is always the one configured now (`epsilon_budget`,
    /// `--budget`), so lowering it takes effect at the next run.
    pub fn ledger(&self, configured: Budget) -> Result<BudgetLedger> {
        match self.stored_ledger()? {
            Some(mut l) => {
                l.set_budget(configured);
                Ok(l)
            }
            None => Ok(BudgetLedger::new(configured)),
        }
    }

    /// The ledger as last saved (with the budget that was in force then), if any.
    pub fn stored_ledger(&self) -> Result<Option<BudgetLedger>> {
        self.archive
            .store()
            .meta(LEDGER_KEY)?
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| NodeError::Corrupt(format!("privacy ledger: {e}")))
            })
            .transpose()
    }

    pub(crate) fn save_ledger(&self, ledger: &BudgetLedger) -> Result<()> {
        let bytes = serde_json::to_vec(ledger)
            .map_err(|e| NodeError::Corrupt(format!("privacy ledger: {e}")))?;
        self.archive.store().set_meta(LEDGER_KEY, &bytes)?;
        self.archive.flush()
    }

    /// Sets the node's budget (spent ε is kept).
    pub fn set_budget(&self, budget: Budget) -> Result<BudgetLedger> {
        let l = self.ledger(budget)?;
        self.save_ledger(&l)?;
        Ok(l)
    }

    /// Collects intent-training rows: interactions with a resolved intent, of every subject
    /// whose consent for `train.intent` holds now, projected by the policy (text masked).
    /// Returns the rows, the people they came from and how many people the policy refused.
    fn intent_rows(&self, actor: &Actor) -> Result<(Vec<TextRow>, Vec<SubjectId>, usize)> {
        let (mut rows, mut used) = (Vec::new(), Vec::new());
        let refused = self.read_consenting(
            actor,
            TRAIN_INTENT,
            Collection::Interactions,
            &[Collection::Interactions],
            |person| {
                let before = rows.len();
                for p in &person.records {
                    let text = p.get("text").and_then(|v| v.as_str());
                    let label = p.get("intent").and_then(|v| v.as_str());
                    if let (Some(text), Some(label)) = (text, label)
                        && !label.is_empty()
                        && label != "unknown"
                    {
                        rows.push(TextRow {
                            text: text.to_owned(),
                            label: label.to_owned(),
                            subject: Some(person.index as u64),
                        });
                    }
                }
                if rows.len() > before {
                    used.push(person.subject);
                }
                Ok(())
            },
        )?;
        Ok((rows, used, refused))
    }

    /// Trains the intent classifier on this node's archive and evaluates it on `test`.
    ///
    /// With differential privacy, the run is checked against and charged to the budget
    /// ledger *before* training; a run that would exceed the budget is refused with what is
    /// left. The model is stored in the node (`models`), never its training data.
    pub fn train_intent(
        &self,
        actor: &Actor,
        cfg: &IntentTrainConfig,
        budget: Budget,
        test: &[TextRow],
        progress: ProgressFn<'_>,
    ) -> Result<TrainRun> {
        let (rows, used, refused) = self.intent_rows(actor)?;
        if rows.is_empty() {
            return Err(NodeError::NothingToTrain(TRAIN_INTENT));
        }
        let (sorted, consent_state_hash) = consent_state(&used);
        let charge = match &cfg.privacy {
            Privacy::Dp(dp) => {
                let (mechanism, steps) = dp.plan()?;
                Some(self.charge_run(budget, "intent", mechanism, steps, sorted)?)
            }
            Privacy::None(_) => None,
        };
        self.log_training_run(
            actor,
            &TrainingLog {
                purpose: TRAIN_INTENT,
                model: "intent",
                collections: &[Collection::Interactions],
                used: &used,
                refused,
                examples: rows.len(),
                consent_state_hash: &consent_state_hash,
                charge: charge.as_ref(),
                counts: &[],
            },
        )?;
        let (model, report) = train_intent(&rows, test, cfg, progress)?;
        self.store_intent_model(&model)?;
        Ok(TrainRun {
            purpose: TRAIN_INTENT,
            subjects_used: used.len(),
            subjects_refused: refused,
            examples: rows.len(),
            consent_state_hash,
            report,
            charge,
        })
    }

    fn store_intent_model(&self, model: &IntentModel) -> Result<()> {
        let bytes = model.to_bytes()?;
        self.archive.store().set_model(INTENT_MODEL_KEY, &bytes)?;
        self.archive.flush()
    }

    /// The intent model trained last on this node, if any.
    pub fn intent_model(&self) -> Result<Option<IntentModel>> {
        match self.archive.store().model(INTENT_MODEL_KEY)? {
            Some(b) => Ok(Some(IntentModel::from_bytes(&b)?)),
            None => Ok(None),
        }
    }
}

/// What the coordinator asked this node to do in one round.
#[derive(Debug, Clone)]
pub struct RoundTask {
    /// The round number the coordinator is running.
    pub round: u64,
    /// The global model version the round trains from.
    pub base_version: u64,
    /// What to run locally (plain SGD or DP-SGD) and with which settings.
    pub training: LocalTraining,
    /// The L2 bound the update must respect.
    pub clip_bound: f64,
}

/// One federated round as this node ran it: what it read and spent, never who.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RoundRun {
    /// The round number.
    pub round: u64,
    /// The global model version the round trained from.
    pub base_version: u64,
    /// People who contributed at least one example.
    pub subjects_used: usize,
    /// People the policy refused for [`TRAIN_INTENT`]; none of their records was read.
    pub subjects_refused: usize,
    /// Examples trained on: rows whose intent the federation's model knows.
    pub examples: usize,
    /// Rows whose intent the federation's model does not know (left out).
    pub unknown_labels: usize,
    /// SHA-256 over the sorted pseudonyms used: names the consent state without naming anyone.
    pub consent_state_hash: String,
    /// ε of this round alone, and the model's cumulative ε at this node after it (DP only).
    pub epsilon_round: Option<f64>,
    /// The model's cumulative ε at this node after this round (DP only).
    pub epsilon_total: Option<f64>,
    /// δ of this round's guarantee (DP only).
    pub delta: Option<f64>,
    /// L2 norm of the update before it was clipped to the federation's bound.
    pub raw_norm: f64,
    /// Whether the update was scaled down to the clip bound.
    pub clipped: bool,
}

/// Where the node's current intent model came from.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// `local` (trained here) or the coordinator's federation name.
    pub source: String,
    /// Global model version (0 for a local model).
    pub version: u64,
    /// Hex SHA-256 of the serialised model.
    pub sha256: String,
}

impl Node {
    /// Runs this node's part of a federated round: reads training data through `train.intent`
    /// (only subjects whose consent holds now, only the fields the policy allows), charges the
    /// privacy ledger *before* training (a round that would exceed the budget is refused with
    /// what is left), trains from `global` and returns the clipped update.
    ///
    /// Every subject whose data the round used gets an audit entry (action `train`, the
    /// round and model version in its counts), so a subject's access log — and an auditor —
    /// can name the model versions that included them, and show that someone who withdrew
    /// is in none after. A summary entry records the counts and the consent-state hash.
    pub fn train_round(
        &self,
        actor: &Actor,
        global: &IntentModel,
        task: &RoundTask,
        budget: Budget,
    ) -> Result<(Vec<f32>, RoundRun)> {
        let (round, base_version) = (task.round, task.base_version);
        let gate = self.consent_gate();
        // Before the read: a withdrawal or erasure from here on voids what this round caches.
        let ticket = self.embeddings.ticket();
        let (rows, used, refused) = self.intent_rows(actor)?;
        let known: Vec<(&TextRow, usize)> = rows
            .iter()
            .filter_map(|r| global.label_index(&r.label).ok().map(|l| (r, l)))
            .collect();
        let unknown_labels = rows.len() - known.len();

        if known.is_empty() {
            return Err(NodeError::NothingToTrain(TRAIN_INTENT));
        }
        let (sorted, consent_state_hash) = consent_state(&used);
        let charge = match &task.training {
            LocalTraining::Dp(dp) => {
                Some(self.charge_run(budget, "intent", dp.mechanism()?, dp.steps, sorted)?)
            }
            LocalTraining::Plain { .. } => None,
        };
        self.log_training_run(
            actor,
            &TrainingLog {
                purpose: TRAIN_INTENT,
                model: "intent federated",
                collections: &[Collection::Interactions],
                used: &used,
                refused,
                examples: known.len(),
                consent_state_hash: &consent_state_hash,
                charge: charge.as_ref(),
                counts: &[("round", round), ("model_version", base_version)],
            },
        )?;
        drop(gate);

        let texts: Vec<&str> = known.iter().map(|(r, _)| r.text.as_str()).collect();
        // The cache keeps only what this round read: a person left out of it is gone.
        let features =
            global
                .featuriser()
                .featurise_all_cached(&texts, &self.embeddings, ticket, None)?;
        let examples: Vec<Example> = known
            .iter()
            .zip(features)
            .map(|((r, label), x)| Example {
                x,
                label: *label,
                subject: r.subject.unwrap_or(0),
            })
            .collect();

        let mut noise = NoiseSource::from_os()?;
        let update = local_update(
            global,
            &examples,
            &task.training,
            task.clip_bound,
            &mut noise,
            None,
        )?;
        let run = RoundRun {
            round,
            base_version,
            subjects_used: used.len(),
            subjects_refused: refused,
            examples: examples.len(),
            unknown_labels,
            consent_state_hash,
            epsilon_round: charge.as_ref().map(|c| c.run.epsilon.value()),
            epsilon_total: charge.as_ref().map(|c| c.model_total.epsilon.value()),
            delta: charge.as_ref().map(|c| c.run.delta.value()),
            raw_norm: update.raw_norm,
            clipped: update.clipped,
        };
        let mut runs = self.round_runs()?;
        runs.push(run.clone());
        self.archive.store().set_meta(
            TRAINING_RUNS_KEY,
            &serde_json::to_vec(&runs).map_err(|e| NodeError::Corrupt(e.to_string()))?,
        )?;
        self.archive.flush()?;
        Ok((update.delta, run))
    }

    /// A small value in the node's `meta` tree (federation bookkeeping; never personal data).
    pub(crate) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.archive.store().meta(key)?.map(|v| v.to_vec()))
    }

    /// Writes a `meta` value durably.
    pub(crate) fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.archive.store().set_meta(key, value)?;
        self.archive.flush()
    }

    /// Removes a `meta` value durably.
    pub(crate) fn remove_meta(&self, key: &str) -> Result<()> {
        self.archive.store().remove_meta(key)?;
        self.archive.flush()
    }

    /// Every federated round this node trained in, oldest first.
    pub fn round_runs(&self) -> Result<Vec<RoundRun>> {
        match self.archive.store().meta(TRAINING_RUNS_KEY)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| NodeError::Corrupt(format!("training runs: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// Installs a global model received from the coordinator: Assist answers with it from
    /// now on. Its bytes were checked against the SHA-256 the coordinator announced.
    pub fn install_model(&self, model: &IntentModel, info: &ModelInfo) -> Result<()> {
        self.store_intent_model(model)?;
        self.archive.store().set_model(
            INTENT_MODEL_INFO_KEY,
            &serde_json::to_vec(info).map_err(|e| NodeError::Corrupt(e.to_string()))?,
        )?;
        self.archive.flush()
    }

    /// Where the current intent model came from, if known.
    pub fn model_info(&self) -> Result<Option<ModelInfo>> {
        match self.archive.store().model(INTENT_MODEL_INFO_KEY)? {
            Some(b) => {
                Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                    NodeError::Corrupt(format!("model info: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }
}
