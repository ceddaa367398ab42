//! The node's local trainer: training data is read through the policy's `train.*` purposes
//! (only subjects whose consent holds *now*, only the fields the purpose may see), the privacy
//! budget ledger is charged before any noise is drawn, and each run writes one audit entry
//! with counts, the purpose and the ε spent — never identities or contents.

use crate::{Actor, Collection, Node, NodeError, Result};
use amble_audit::Action;
use amble_learn::eval::{IntentReport, IntentTrainConfig, Privacy, TextRow, train_intent};
use amble_learn::intent::IntentModel;
use amble_learn::ledger::{Budget, BudgetLedger, Charge, PlannedRun};
use amble_learn::softmax::ProgressFn;
use amble_policy::{Decision, decide};
use serde::Serialize;
use time::OffsetDateTime;

const LEDGER_KEY: &str = "privacy_ledger";
const INTENT_MODEL_KEY: &str = "model/intent";
/// The purpose intent training reads through.
pub const TRAIN_INTENT: &str = "train.intent";

/// What a training run read and spent.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRun {
    pub purpose: &'static str,
    pub subjects_used: usize,
    pub subjects_refused: usize,
    pub examples: usize,
    /// SHA-256 over the sorted pseudonyms used: names the consent state without naming anyone.
    pub consent_state_hash: String,
    pub report: IntentReport,
    pub charge: Option<Charge>,
}

impl Node {
    /// The persisted privacy budget ledger (a new one with `default` if none is stored).
    pub fn ledger(&self, default: Budget) -> Result<BudgetLedger> {
        match self.archive.store().meta.get(LEDGER_KEY)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| NodeError::Corrupt(format!("privacy ledger: {e}"))),
            None => Ok(BudgetLedger::new(default)),
        }
    }

    fn save_ledger(&self, ledger: &BudgetLedger) -> Result<()> {
        let bytes = serde_json::to_vec(ledger)
            .map_err(|e| NodeError::Corrupt(format!("privacy ledger: {e}")))?;
        self.archive.store().meta.insert(LEDGER_KEY, bytes)?;
        self.archive.flush()
    }

    /// Sets the node's budget (spent ε is kept).
    pub fn set_budget(&self, budget: Budget) -> Result<BudgetLedger> {
        let mut l = self.ledger(budget.clone())?;
        l.set_budget(budget);
        self.save_ledger(&l)?;
        Ok(l)
    }

    /// Collects intent-training rows: interactions with a resolved intent, of every subject
    /// whose consent for `train.intent` holds now, projected by the policy (text masked).
    fn intent_rows(&self, actor: &Actor) -> Result<(Vec<TextRow>, Vec<String>, usize)> {
        let policy = self.policy();
        let now = OffsetDateTime::now_utc();
        let (mut rows, mut used, mut refused) = (Vec::new(), Vec::new(), 0);
        for (n, subject) in self.archive.subjects()?.into_iter().enumerate() {
            let history = self.archive.load_consent(&subject)?;
            let grant = match decide(&policy, &actor.id, actor.role, TRAIN_INTENT, &history, now) {
                Decision::Allow(g) => g,
                Decision::Deny(_) => {
                    refused += 1;
                    continue;
                }
            };
            if !grant.allows_collection(Collection::Interactions) {
                continue;
            }
            let dek = self.archive.data_key(&subject)?;
            let recs = self.archive.read_records_with(
                &dek,
                &subject,
                Collection::Interactions,
                crate::TimeRange::ALL,
            )?;
            let before = rows.len();
            for r in &recs {
                let Some(p) = grant.project(r.collection, r.time, &r.data) else {
                    continue;
                };
                let text = p.get("text").and_then(|v| v.as_str());
                let label = p.get("intent").and_then(|v| v.as_str());
                if let (Some(text), Some(label)) = (text, label) {
                    if !label.is_empty() && label != "unknown" {
                        rows.push(TextRow {
                            text: text.to_owned(),
                            label: label.to_owned(),
                            subject: Some(n as u64),
                        });
                    }
                }
            }
            if rows.len() > before {
                used.push(subject.to_hex());
            }
        }
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
        let mut sorted = used.clone();
        sorted.sort();
        let consent_state_hash = hex(&amble_crypto::sha256(sorted.join("\n").as_bytes()));
        let charge = match &cfg.privacy {
            Privacy::Dp(dp) => {
                let (mechanism, steps) = dp.plan()?;
                let mut ledger = self.ledger(budget)?;
                let charge = ledger.check_and_charge(&PlannedRun {
                    model: "intent".into(),
                    mechanism,
                    steps,
                    subjects: used.clone(),
                })?;
                self.save_ledger(&ledger)?;
                Some(charge)
            }
            Privacy::None(_) => None,
        };
        let mut entry = actor
            .draft(Action::Train)
            .purpose(TRAIN_INTENT)
            .count("subjects_used", used.len() as u64)
            .count("subjects_refused", refused as u64)
            .count("examples", rows.len() as u64)
            .reason(format!(
                "model=intent consent_state={consent_state_hash} epsilon={}",
                charge
                    .as_ref()
                    .map_or("none (not private)".to_owned(), |c| format!(
                        "{:.4}",
                        c.run.epsilon.value()
                    ))
            ));
        entry.collections = vec![Collection::Interactions.as_str().to_owned()];
        entry.policy_version = Some(self.policy().version());
        self.audit.append_durable(entry)?;
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
        self.archive
            .store()
            .models
            .insert(INTENT_MODEL_KEY, bytes)?;
        self.archive.flush()
    }

    /// The intent model trained last on this node, if any.
    pub fn intent_model(&self) -> Result<Option<IntentModel>> {
        match self.archive.store().models.get(INTENT_MODEL_KEY)? {
            Some(b) => Ok(Some(IntentModel::from_bytes(&b)?)),
            None => Ok(None),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
