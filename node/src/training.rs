//! One home for the privacy rules every training run follows, whatever it trains (the intent
//! classifier here or in a federated round, the need model):
//!
//! 1. **Who is read**: every person whose consent for the run's purpose holds *now*, through
//!    the policy's projection of that purpose, and no one else ([`Node::read_consenting`]).
//! 2. **What it costs them**: a private run is checked against the budget ledger and charged
//!    *before* any noise is drawn; a run that would overspend is refused with what is left
//!    ([`Node::charge_run`]).
//! 3. **What is logged**: one `train` entry per person whose data the run used — so their
//!    access log names the run — then one summary with counts, the consent-state hash and the
//!    ε spent, never contents ([`Node::log_training_run`]).
//!
//! The consent-state hash ([`consent_state`]) is the SHA-256 of the sorted pseudonyms of the
//! people used: an auditor can tell two runs apart by who they read without learning who.

use crate::{Actor, Collection, Node, Result, TimeRange};
use amble_audit::Action;
use amble_crypto::SubjectId;
use amble_learn::privacy::SampledGaussian;
use amble_learn::privacy::{Budget, Charge, PlannedRun};
use amble_policy::{Decision, ProjectedRecord, decide};

/// One person whose consent for the purpose holds, with what the policy lets the run see.
pub(crate) struct Consenting {
    /// The person's position among all the archive's subjects (a per-person id for DP-SGD's
    /// grouping, stable within the run).
    pub(crate) index: usize,
    pub(crate) subject: SubjectId,
    pub(crate) records: Vec<ProjectedRecord>,
}

/// The sorted pseudonyms (hex) of the people a run used, and their SHA-256.
pub(crate) fn consent_state(subjects: &[SubjectId]) -> (Vec<String>, String) {
    let mut sorted: Vec<String> = subjects.iter().map(SubjectId::to_hex).collect();
    sorted.sort();
    let hash = hex::encode(amble_crypto::sha256(sorted.join("\n").as_bytes()));
    (sorted, hash)
}

/// What a training run's audit entries say.
pub(crate) struct TrainingLog<'a> {
    pub(crate) purpose: &'static str,
    /// `intent`, `intent federated`, `needs`: the model, as the summary's reason names it.
    pub(crate) model: &'static str,
    pub(crate) collections: &'a [Collection],
    pub(crate) used: &'a [SubjectId],
    pub(crate) refused: usize,
    pub(crate) examples: usize,
    pub(crate) consent_state_hash: &'a str,
    pub(crate) charge: Option<&'a Charge>,
    /// Counts every entry of the run carries (round and model version, or run number).
    pub(crate) counts: &'a [(&'static str, u64)],
}

impl Node {
    /// Reads every person whose consent for `purpose` holds now, through the policy's
    /// projection, and calls `each` with them. A person whose grant does not allow `required`
    /// is skipped; of `collections`, only those the grant allows are read. Returns how many
    /// people the policy refused.
    pub(crate) fn read_consenting(
        &self,
        actor: &Actor,
        purpose: &str,
        required: Collection,
        collections: &[Collection],
        mut each: impl FnMut(Consenting) -> Result<()>,
    ) -> Result<usize> {
        let policy = self.policy();
        let now = self.now();
        let mut refused = 0;
        for (index, subject) in self.archive.subjects()?.into_iter().enumerate() {
            let history = self.archive.load_consent(&subject)?;
            // Anything but an allow (a denial, or a decision this node does not know) refuses.
            let Decision::Allow(grant) =
                decide(&policy, &actor.id, actor.role, purpose, &history, now)
            else {
                refused += 1;
                continue;
            };
            if !grant.allows_collection(required) {
                continue;
            }
            let dek = self.archive.data_key(&subject)?;
            let mut records = Vec::new();
            for c in collections.iter().filter(|c| grant.allows_collection(**c)) {
                for r in self
                    .archive
                    .read_records_with(&dek, &subject, *c, TimeRange::ALL)?
                {
                    records.extend(grant.project(r.collection, r.time, &r.data));
                }
            }
            each(Consenting {
                index,
                subject,
                records,
            })?;
        }
        Ok(refused)
    }

    /// Checks a private run against the ledger (`budget`) and charges it to `model` for the
    /// people in `sorted_subjects`, before any noise is drawn.
    pub(crate) fn charge_run(
        &self,
        budget: Budget,
        model: &str,
        mechanism: SampledGaussian,
        steps: u64,
        sorted_subjects: Vec<String>,
    ) -> Result<Charge> {
        let mut ledger = self.ledger(budget)?;
        let charge = ledger.check_and_charge(&PlannedRun {
            model: model.into(),
            mechanism,
            steps,
            subjects: sorted_subjects,
        })?;
        self.save_ledger(&ledger)?;
        Ok(charge)
    }

    /// Writes a run's audit entries, durably, in one batch: one per person used, then the
    /// summary.
    pub(crate) fn log_training_run(&self, actor: &Actor, run: &TrainingLog<'_>) -> Result<()> {
        let collections: Vec<String> = run
            .collections
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        let policy_version = Some(self.policy().version());
        let with_counts = |mut d: amble_audit::EntryDraft| {
            for (name, value) in run.counts {
                d = d.count(*name, *value);
            }
            d.collections = collections.clone();
            d.policy_version = policy_version;
            d
        };
        let mut drafts = Vec::with_capacity(run.used.len() + 1);
        for subject in run.used {
            drafts.push(with_counts(
                actor
                    .draft(Action::Train)
                    .subject(*subject)
                    .purpose(run.purpose)
                    .decision(amble_audit::Decision::Allow)
                    .reason(format!("model={}", run.model)),
            ));
        }
        let epsilon = run.charge.map_or("none (not private)".to_owned(), |c| {
            format!("{:.4}", c.run.epsilon.value())
        });
        drafts.push(with_counts(
            actor
                .draft(Action::Train)
                .purpose(run.purpose)
                .count("subjects_used", run.used.len() as u64)
                .count("subjects_refused", run.refused as u64)
                .count("examples", run.examples as u64)
                .reason(format!(
                    "model={} consent_state={} epsilon={epsilon}",
                    run.model, run.consent_state_hash
                )),
        ));
        self.audit.append_batch(drafts)?;
        Ok(())
    }
}
