//! The coordinator's round state machine. Its storage is behind [`crate::store`]; its time is
//! an injected [`Clock`], so deadlines are tested by moving a clock, not by sleeping.
//!
//! A round moves open → collecting → aggregated → published. Everything that decides what a
//! round contains is on disk before it is acknowledged:
//!
//! - an update's values are spooled (tree `spool`, fixed blocks of [`BLOCK`] floats) while
//!   they stream in and are checked; the update counts only once its **receipt** (tree
//!   `receipts`, key round ‖ node) is written and flushed — that write is the acceptance;
//! - closing a round writes the new model version (tree `models`) and flushes, then moves
//!   the round state (tree `meta`) to the next round and flushes.
//!
//! After a crash, [`Coordinator::open`] finishes a publication whose model was written,
//! drops spooled blocks that never got a receipt, and rebuilds the running sum from the
//! accepted updates' spooled blocks, so no update is counted twice or lost. A node that was
//! cut off mid-upload simply uploads again (its receipt is missing, so it is not a duplicate).

use crate::config::Plan;
use crate::store::Store;
use crate::{Actor, CoordinatorError, Result};
use amble_audit::{Action, AuditLog, Clock, Decision, EntryDraft};
use amble_audit::{Checkpoint, NoteSigner, NoteVerifier, verify_note};
use amble_crypto::SigningKey;
use amble_learn::federation::{Rejection, Rule, UpdateCheck, WeightedSum, aggregate_blocks};
use amble_learn::model::IntentModel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Floats per spooled block (256 KiB): the unit of robust aggregation's reads.
pub const BLOCK: usize = 1 << 16;
const MODEL_NAME: &str = "intent";

/// Where the current round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the first update.
    Open,
    /// At least one update accepted.
    Collecting,
    /// The last round was published; nothing more to do.
    Done,
}

/// The persisted round state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundState {
    /// 1-based round number; round r trains from version r − 1 and publishes version r.
    pub round: u64,
    /// Where the round is.
    pub phase: Phase,
    /// When the round opened, in ms since the Unix epoch (coordinator's clock).
    pub opened_ms: u64,
    /// When the round closes if the quota is not reached first, in ms since the Unix epoch;
    /// moved on if too few updates had arrived by then.
    pub deadline_ms: u64,
    /// Nodes that declined this round, with their reason.
    pub declined: BTreeMap<String, String>,
}

impl RoundState {
    /// The model version this round trains from.
    pub fn base_version(&self) -> u64 {
        self.round - 1
    }
}

/// What the coordinator wrote when it accepted an update: the update's acceptance (stored in
/// the `receipts` tree; not a consent receipt, which is `amble_consent::SignedReceipt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The round the update was accepted in.
    pub round: u64,
    /// Id of the node that sent it (from its certificate).
    pub node: String,
    /// L2 norm of the update as received; never above the plan's clip bound.
    pub norm: f64,
    /// Weight in the mean: 1 under DP; otherwise the node's stated weight clamped to [1, 10⁶].
    pub weight: f64,
    /// Number of values in the update (the model's parameter count).
    pub values: u64,
    /// Hex SHA-256 of the little-endian values.
    pub sha256: String,
    /// What the node reported about its round.
    pub record: TrainingRecord,
    /// When the update was accepted, in ms since the Unix epoch.
    pub received_ms: u64,
}

/// What a node's round used, as it reported it: counts and a hash, never identities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// People whose data the node's round used.
    pub subjects: u64,
    /// Examples the node trained on.
    pub examples: u64,
    /// The node's hash over the sorted pseudonyms it used (at most 128 characters kept).
    pub consent_state_hash: String,
    /// ε the round cost at the node (0 for plain training).
    pub epsilon_round: f64,
    /// The model's cumulative ε at the node after the round (0 for plain training).
    pub epsilon_total: f64,
    /// δ the node's ε is stated at (0 for plain training).
    pub delta: f64,
}

/// A member of the federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id, from its certificate.
    pub id: String,
    /// The node's audit-log verifier key, pinned at its first Join.
    pub log_key: String,
    /// When the node first joined, in ms since the Unix epoch.
    pub joined_ms: u64,
    /// The last checkpoint this coordinator cosigned for the node: size and base64 root.
    pub cosigned: Option<(u64, String)>,
}

/// One published round, for status and the demo's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round number.
    pub round: u64,
    /// The model version it published (equal to the round number).
    pub version: u64,
    /// The accepted updates that went into the aggregate.
    pub updates: Vec<Acceptance>,
    /// Nodes that declined the round, with their reason.
    pub declined: BTreeMap<String, String>,
    /// Why the round closed: `quota`, `all_answered` or `deadline`.
    pub closed_by: String,
    /// When the round closed, in ms since the Unix epoch.
    pub closed_ms: u64,
    /// L2 norm of the aggregate that was applied.
    pub aggregate_norm: f64,
}

/// Where the federation is: what `Federation.Status` returns as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationStatus {
    /// The federation's name, from the coordinator's certificate.
    pub federation: String,
    /// Rounds the plan runs.
    pub rounds_total: u64,
    /// The current round (the last one once the federation is done).
    pub round: u64,
    /// Where the current round is.
    pub phase: Phase,
    /// Latest published model version (the current round's base; the last round once done).
    pub model_version: u64,
    /// Ids of nodes whose update the current round accepted.
    pub accepted_in_round: Vec<String>,
    /// When the current round closes at the latest, in ms since the Unix epoch.
    pub deadline_ms: u64,
    /// Every node that joined.
    pub members: Vec<Member>,
    /// Every published round, oldest first.
    pub history: Vec<RoundSummary>,
    /// ε per person at each node over all rounds, if the plan is private.
    pub epsilon: Option<f64>,
    /// δ that ε is stated at, if the plan is private.
    pub delta: Option<f64>,
}

/// A task for one node, as the service will send it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskFor {
    /// Train on the current round: download `version`, send an update before `deadline_ms`.
    Train {
        /// The round to send the update for.
        round: u64,
        /// The model version to train from.
        version: u64,
        /// When the round closes at the latest, in ms since the Unix epoch.
        deadline_ms: u64,
    },
    /// Nothing to do now (update already in, round declined, upload in progress); holds why.
    Wait(String),
    /// The federation has published its last round.
    Done,
}

/// An update being received: checked and spooled as its chunks arrive.
pub struct Upload {
    /// The round the update is for.
    pub round: u64,
    /// Id of the node sending it.
    pub node: String,
    check: UpdateCheck,
    digest: ring::digest::Context,
    pending: Vec<f32>,
    next_block: u32,
    expected_sha: Vec<u8>,
    weight: f64,
    record: TrainingRecord,
}

struct Inner {
    state: RoundState,
    global: IntentModel,
    /// The server's momentum after `global` was published (empty without momentum).
    velocity: Vec<f32>,
    sum: WeightedSum,
    accepted: BTreeMap<String, Acceptance>,
    uploading: BTreeSet<String>,
}

/// The coordinator: plan, store, round state, audit log, witness key.
pub struct Coordinator {
    plan: Plan,
    federation: String,
    id: String,
    store: Store,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    signer: SigningKey,
    origin: String,
    witness: NoteSigner,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

/// The version-0 model: zeros plus the optional label-name prior (public information only).
pub fn initial_model(plan: &Plan) -> Result<IntentModel> {
    Ok(IntentModel::initial(
        plan.labels.clone(),
        plan.features.clone(),
        plan.label_prior,
    )?)
}

/// The audit log of a stopped coordinator's data directory, every entry in order (for an
/// auditor, or a test, reading it offline; a running coordinator holds the directory's lock).
pub fn audit_entries(data_dir: &std::path::Path) -> Result<Vec<amble_audit::Entry>> {
    let log = Store::open(&data_dir.join("db"))?.audit_log()?;
    Ok(log.entries(0..log.size())?)
}

impl Coordinator {
    /// Opens (or creates) the coordinator's store in `data_dir` and resumes where it stopped.
    /// `federation` and `id` come from the coordinator's own certificate.
    pub fn open(
        data_dir: &std::path::Path,
        plan: Plan,
        federation: &str,
        id: &str,
    ) -> Result<Self> {
        Self::open_with_clock(data_dir, plan, federation, id, amble_audit::clock::system())
    }

    /// [`Coordinator::open`] with the clock that times its rounds (tests move a
    /// [`amble_audit::ManualClock`]).
    pub fn open_with_clock(
        data_dir: &std::path::Path,
        plan: Plan,
        federation: &str,
        id: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        // Owner-only: the spooled updates, receipts and audit log are not for other users.
        amble_crypto::create_private_dir(data_dir).map_err(|source| CoordinatorError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let signer = crate::key::load_or_create(&data_dir.join("coordinator.key"))?;
        let store = Store::open(&data_dir.join("db"))?;
        let audit = store.audit_log()?.with_clock(Arc::clone(&clock));
        let origin = format!("amble.coordinator/{federation}/{id}");
        let witness = NoteSigner::from_key(&origin, &signer)?;

        if let Some(old) = store.plan()? {
            if old != plan {
                return Err(CoordinatorError::Config(
                    "the federation plan differs from the one this data directory was started \
                     with; start a new federation in a new data_dir, or restore the old \
                     coordinator.toml"
                        .into(),
                ));
            }
        } else {
            store.set_plan(&plan)?;
        }
        if !store.has_model(0)? {
            store.set_model(0, initial_model(&plan)?.to_bytes()?)?;
        }
        let mut state: RoundState = match store.round_state()? {
            Some(state) => state,
            None => {
                let now = clock.now_ms();
                RoundState {
                    round: 1,
                    phase: Phase::Open,
                    opened_ms: now,
                    deadline_ms: now + plan.round_deadline_secs * 1000,
                    declined: BTreeMap::new(),
                }
            }
        };
        // A crash between writing model r and moving the state on: the round was aggregated;
        // finish publishing it.
        if state.phase != Phase::Done && store.has_model(state.round)? {
            tracing::info!(
                round = state.round,
                "resuming: round was aggregated before a restart; publishing it"
            );
            let now = clock.now_ms();
            let finished = state.round;
            state = if finished >= plan.rounds {
                RoundState {
                    phase: Phase::Done,
                    declined: BTreeMap::new(),
                    ..state
                }
            } else {
                RoundState {
                    round: finished + 1,
                    phase: Phase::Open,
                    opened_ms: now,
                    deadline_ms: now + plan.round_deadline_secs * 1000,
                    declined: BTreeMap::new(),
                }
            };
            store.clear_spool(finished)?;
        }
        store.set_round_state(&state)?;
        store.flush()?;

        let version = if state.phase == Phase::Done {
            plan.rounds
        } else {
            state.base_version()
        };
        let global = IntentModel::from_bytes(&store.model(version)?.ok_or_else(|| {
            CoordinatorError::Corrupt(format!("model version {version} missing"))
        })?)?;
        let len = global.flat_len();
        let (changed, _) = watch::channel(state.round);
        let c = Coordinator {
            federation: federation.to_owned(),
            id: id.to_owned(),
            inner: Mutex::new(Inner {
                state,
                velocity: store.velocity(version)?,
                global,
                sum: WeightedSum::new(len),
                accepted: BTreeMap::new(),
                uploading: BTreeSet::new(),
            }),
            plan,
            store,
            clock,
            audit,
            signer,
            origin,
            witness,
            changed,
        };
        c.rebuild_round()?;
        Ok(c)
    }

    /// Rebuilds the accepted set and the running sum of the current round from disk, and drops
    /// spooled blocks that never got a receipt (uploads cut off by the crash).
    fn rebuild_round(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.state.phase == Phase::Done {
            return Ok(());
        }
        let round = inner.state.round;
        let accepted: BTreeMap<String, Acceptance> = self
            .store
            .receipts_of(round)?
            .into_iter()
            .map(|r| (r.node.clone(), r))
            .collect();
        let mut dropped_partial_blocks = 0;
        for (node, blocks) in self.store.spooled_nodes(round)? {
            if !accepted.contains_key(&node) {
                self.store.clear_spool_of(round, &node)?;
                dropped_partial_blocks += blocks;
            }
        }
        let mut sum = WeightedSum::new(inner.global.flat_len());
        if self.plan.aggregation == Rule::Mean {
            for r in accepted.values() {
                self.add_spooled(&mut sum, round, &r.node, r.weight)?;
            }
        }
        if !accepted.is_empty() {
            tracing::info!(
                round,
                accepted = accepted.len(),
                dropped_partial_blocks,
                "resumed round from stored updates"
            );
        }
        inner.sum = sum;
        inner.accepted = accepted;
        inner.uploading.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn add_spooled(
        &self,
        sum: &mut WeightedSum,
        round: u64,
        node: &str,
        weight: f64,
    ) -> Result<()> {
        let mut offset = 0usize;
        self.store.for_each_spooled_block(round, node, |block| {
            sum.add_chunk(offset, &block, weight)
                .map_err(|e| CoordinatorError::Corrupt(format!("spooled update: {e}")))?;
            offset += block.len();
            Ok(())
        })?;
        if offset != sum.len() {
            return Err(CoordinatorError::Corrupt(format!(
                "spooled update of {node} has {offset} values, expected {}",
                sum.len()
            )));
        }
        sum.commit(weight);
        Ok(())
    }

    /// The federation plan this coordinator runs, as resolved from its configuration.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The federation's name, from the coordinator's certificate.
    pub fn federation(&self) -> &str {
        &self.federation
    }

    /// The witness key nodes and auditors verify cosignatures with.
    pub fn witness_key(&self) -> NoteVerifier {
        self.witness.verifier()
    }

    /// The coordinator's own audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The coordinator's Ed25519 key: it signs the coordinator's own checkpoints and cosigns
    /// nodes' checkpoints as witness.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signer
    }

    /// The coordinator's log origin and witness key name: `amble.coordinator/FEDERATION/ID`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A receiver that changes whenever a round closes (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn log(&self, draft: EntryDraft) -> Result<()> {
        self.audit.append_durable(draft)?;
        Ok(())
    }

    fn draft(caller: &Actor, action: &str) -> EntryDraft {
        caller.draft(Action::Other(action.to_owned()))
    }

    /// Logs a call refused for the caller's role or federation.
    pub fn log_denied(&self, caller: &Actor, method: &str, reason: &str) -> Result<()> {
        let mut d = caller
            .draft(Action::DeniedCall)
            .decision(Decision::Deny)
            .reason(reason.to_owned());
        d.purpose = Some(method.to_owned());
        self.log(d)
    }

    /// Logs a call refused because its certificate names no usable identity; `certificate`
    /// (`cert:` and 16 hex digits of the leaf's SHA-256) stands in for the caller.
    pub fn log_unidentified(&self, certificate: &str, method: &str, why: &str) -> Result<()> {
        let mut rid = [0u8; 8];
        // A request id only correlates entries; a failed RNG leaves zeros, not an error.
        let _ = amble_crypto::random_bytes(&mut rid);
        let mut d = EntryDraft::new(
            certificate,
            "unidentified",
            Action::DeniedCall,
            hex::encode(rid),
        )
        .decision(Decision::Deny)
        .reason(why.to_owned());
        d.purpose = Some(method.to_owned());
        self.log(d)
    }

    /// Admits the calling node, pinning `log_key` (a C2SP verifier key string) at its first Join;
    /// a later Join with another key is refused and logged. Every Join is logged.
    pub fn join(&self, caller: &Actor, log_key: &str) -> Result<Member> {
        NoteVerifier::parse(log_key).map_err(|e| {
            CoordinatorError::Refused(format!("log_key is not a C2SP verifier key: {e}"))
        })?;
        let member = match self.store.member(&caller.id)? {
            Some(m) => {
                if m.log_key != log_key {
                    self.log(
                        Self::draft(caller, "join")
                            .decision(Decision::Deny)
                            .reason("audit-log key differs from the one pinned at first join"),
                    )?;
                    return Err(CoordinatorError::Refused(format!(
                        "node {} joined before with another audit-log key; a node's log key \
                         cannot change (an operator must remove the member first)",
                        caller.id
                    )));
                }
                m
            }
            None => {
                let m = Member {
                    id: caller.id.clone(),
                    log_key: log_key.to_owned(),
                    joined_ms: self.clock.now_ms(),
                    cosigned: None,
                };
                self.store.put_member(&m)?;
                m
            }
        };
        self.log(Self::draft(caller, "join").decision(Decision::Allow))?;
        Ok(member)
    }

    fn member(&self, id: &str) -> Result<Member> {
        self.store
            .member(id)?
            .ok_or_else(|| CoordinatorError::NotMember(id.to_owned()))
    }

    /// What `node` should do now.
    pub fn task_for(&self, node: &str) -> Result<TaskFor> {
        self.member(node)?;
        let inner = self.lock();
        let s = &inner.state;
        if s.phase == Phase::Done {
            return Ok(TaskFor::Done);
        }
        if inner.accepted.contains_key(node) {
            return Ok(TaskFor::Wait(format!(
                "your update for round {} is in; waiting for the round to close",
                s.round
            )));
        }
        if s.declined.contains_key(node) {
            return Ok(TaskFor::Wait(format!("you declined round {}", s.round)));
        }
        if inner.uploading.contains(node) {
            return Ok(TaskFor::Wait("your upload is in progress".into()));
        }
        Ok(TaskFor::Train {
            round: s.round,
            version: s.base_version(),
            deadline_ms: s.deadline_ms,
        })
    }

    /// A stored model version (`None` = latest published) as its serialised bytes.
    pub fn model_bytes(&self, caller: &Actor, version: Option<u64>) -> Result<(u64, Vec<u8>)> {
        let version = match version {
            Some(v) => v,
            None => {
                let inner = self.lock();
                if inner.state.phase == Phase::Done {
                    self.plan.rounds
                } else {
                    inner.state.base_version()
                }
            }
        };
        let bytes = self
            .store
            .model(version)?
            .ok_or(CoordinatorError::NoSuchVersion(version))?;
        self.log(
            Self::draft(caller, "model_download")
                .decision(Decision::Allow)
                .count("version", version)
                .count("bytes", bytes.len() as u64),
        )?;
        Ok((version, bytes))
    }

    /// Number of parameters of the model (the length of every update).
    pub fn parameters(&self) -> usize {
        self.lock().global.flat_len()
    }

    /// Starts receiving an update. Refuses (and logs) a wrong round or version, a wrong shape,
    /// a node that already has an update in this round, or a second concurrent upload.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_upload(
        &self,
        caller: &Actor,
        round: u64,
        model: &str,
        base_version: u64,
        values: u64,
        weight: f64,
        sha256: Vec<u8>,
        record: TrainingRecord,
    ) -> Result<Upload> {
        self.member(&caller.id)?;
        let refused = {
            let mut inner = self.lock();
            let s = &inner.state;
            let len = inner.global.flat_len();
            let why = if s.phase == Phase::Done {
                Some("the federation is done; no more updates".to_owned())
            } else if model != MODEL_NAME {
                Some(format!("model {model:?} is not trained by this federation"))
            } else if round != s.round {
                Some(format!(
                    "update is for round {round}, but round {} is open{}",
                    s.round,
                    if round < s.round {
                        " (stale or replayed update)"
                    } else {
                        ""
                    }
                ))
            } else if base_version != s.base_version() {
                Some(format!(
                    "update was trained from version {base_version}, round {} trains from {}",
                    s.round,
                    s.base_version()
                ))
            } else if values != len as u64 {
                Some(format!(
                    "update has {values} values, the model has {len} parameters"
                ))
            } else if sha256.len() != 32 {
                Some("sha256 must be 32 bytes".to_owned())
            } else if inner.accepted.contains_key(&caller.id) {
                Some(format!(
                    "duplicate: node {} already has an accepted update in round {round}",
                    caller.id
                ))
            } else if inner.uploading.contains(&caller.id) {
                Some("another upload from this node is in progress".to_owned())
            } else {
                None
            };
            if why.is_none() {
                inner.uploading.insert(caller.id.clone());
            }
            why.map(|w| (w, len))
        };
        if let Some((why, _)) = refused {
            self.log_refusal(caller, round, &why)?;
            return Err(CoordinatorError::Refused(why));
        }
        let weight = match self.plan.privacy {
            // Under DP every node's update is weighted equally: its weight would reveal how
            // many people it trained on, and the noise each node adds is the same.
            Some(_) => 1.0,
            None if weight.is_finite() => weight.clamp(1.0, 1e6),
            None => 1.0,
        };
        Ok(Upload {
            round,
            node: caller.id.clone(),
            check: UpdateCheck::new(self.parameters(), self.plan.clip_bound),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            pending: Vec::with_capacity(BLOCK),
            next_block: 0,
            expected_sha: sha256,
            weight,
            record,
        })
    }

    fn log_refusal(&self, caller: &Actor, round: u64, why: &str) -> Result<()> {
        tracing::warn!(node = %caller.id, round, reason = %why, "update refused");
        self.log(
            Self::draft(caller, "update_upload")
                .decision(Decision::Deny)
                .reason(why.to_owned())
                .count("round", round),
        )
    }

    /// Feeds a chunk of little-endian f32 values; refuses a bad chunk at once.
    pub fn feed(&self, up: &mut Upload, caller: &Actor, bytes: &[u8]) -> Result<()> {
        let res = (|| -> std::result::Result<(), Rejection> {
            let values = amble_learn::federation::f32_from_le(bytes)?;
            up.check.feed(&values)?;
            up.digest.update(bytes);
            up.pending.extend_from_slice(&values);
            Ok(())
        })();
        if let Err(e) = res {
            return Err(self.abort(up, caller, &e.to_string()));
        }
        while up.pending.len() >= BLOCK {
            let rest = up.pending.split_off(BLOCK);
            let block = std::mem::replace(&mut up.pending, rest);
            self.spool_block(up, &block)?;
        }
        Ok(())
    }

    fn spool_block(&self, up: &mut Upload, block: &[f32]) -> Result<()> {
        self.store
            .spool_block(up.round, &up.node, up.next_block, block)?;
        up.next_block += 1;
        Ok(())
    }

    /// Refuses an upload in progress: logs why, drops what was spooled.
    pub fn abort(&self, up: &Upload, caller: &Actor, why: &str) -> CoordinatorError {
        let _ = self.store.clear_spool_of(up.round, &up.node);
        self.lock().uploading.remove(&up.node);
        match self.log_refusal(caller, up.round, why) {
            Ok(()) => CoordinatorError::Refused(why.to_owned()),
            Err(e) => e,
        }
    }

    /// Ends an upload: final checks (length, norm, hash, replay); on success writes the receipt
    /// (the acceptance), adds the update to the round and closes the round if it is complete.
    pub fn finish(&self, mut up: Upload, caller: &Actor) -> Result<(Acceptance, usize)> {
        let pending = std::mem::take(&mut up.pending);
        if !pending.is_empty() {
            self.spool_block(&mut up, &pending)?;
        }
        let check = std::mem::replace(&mut up.check, UpdateCheck::new(0, 1.0));
        let norm = match check.finish() {
            Ok(n) => n,
            Err(e) => return Err(self.abort(&up, caller, &e.to_string())),
        };
        let digest = up.digest.clone().finish();
        if digest.as_ref() != up.expected_sha.as_slice() {
            return Err(self.abort(
                &up,
                caller,
                "the values do not match the header's sha256 (corrupted or truncated upload)",
            ));
        }
        let sha = hex::encode(digest.as_ref());
        if let Some(old) = self.previous_with_hash(&up.node, &sha)? {
            return Err(self.abort(
                &up,
                caller,
                &format!("replay: this exact update was already accepted in round {old}"),
            ));
        }
        let receipt = Acceptance {
            round: up.round,
            node: up.node.clone(),
            norm,
            weight: up.weight,
            values: self.parameters() as u64,
            sha256: sha,
            record: up.record.clone(),
            received_ms: self.clock.now_ms(),
        };
        let mut inner = self.lock();
        inner.uploading.remove(&up.node);
        if inner.state.round != up.round || inner.state.phase == Phase::Done {
            drop(inner);
            return Err(self.abort(
                &up,
                caller,
                &format!("round {} closed while the update was streaming", up.round),
            ));
        }
        // The acceptance: durable before it is acknowledged.
        self.store.put_receipt(&receipt)?;
        self.store.flush()?;
        if self.plan.aggregation == Rule::Mean {
            let mut sum = std::mem::replace(&mut inner.sum, WeightedSum::new(0));
            let added = self.add_spooled(&mut sum, up.round, &up.node, up.weight);
            inner.sum = sum;
            added?;
        }
        inner.accepted.insert(up.node.clone(), receipt.clone());
        if inner.state.phase == Phase::Open {
            inner.state.phase = Phase::Collecting;
        }
        let count = inner.accepted.len();
        self.log(
            Self::draft(caller, "update_upload")
                .decision(Decision::Allow)
                .count("round", up.round)
                .count("subjects", receipt.record.subjects)
                .count("examples", receipt.record.examples)
                .reason(format!(
                    "norm={:.4} consent_state={} epsilon_round={:.4}",
                    norm, receipt.record.consent_state_hash, receipt.record.epsilon_round
                )),
        )?;
        self.maybe_close(&mut inner, false)?;
        Ok((receipt, count))
    }

    fn previous_with_hash(&self, node: &str, sha: &str) -> Result<Option<u64>> {
        Ok(self
            .store
            .find_receipt(|r| r.node == node && r.sha256 == sha)?
            .map(|r| r.round))
    }

    /// A node will not take part in the current round.
    pub fn decline(&self, caller: &Actor, round: u64, reason: &str) -> Result<()> {
        self.member(&caller.id)?;
        let mut inner = self.lock();
        if inner.state.round != round || inner.state.phase == Phase::Done {
            return Err(CoordinatorError::Refused(format!(
                "round {round} is not open (round {} is)",
                inner.state.round
            )));
        }
        let reason: String = reason.chars().take(500).collect();
        inner
            .state
            .declined
            .insert(caller.id.clone(), reason.clone());
        self.store.set_round_state(&inner.state)?;
        self.store.flush()?;
        self.log(
            Self::draft(caller, "decline")
                .count("round", round)
                .reason(reason),
        )?;
        self.maybe_close(&mut inner, false)
    }

    /// Called periodically: closes a round whose deadline passed with enough updates, or
    /// moves the deadline on if there are too few (so stragglers can still come in).
    pub fn tick(&self) -> Result<()> {
        let mut inner = self.lock();
        self.maybe_close(&mut inner, true)
    }

    fn maybe_close(&self, inner: &mut Inner, tick: bool) -> Result<()> {
        if inner.state.phase == Phase::Done {
            return Ok(());
        }
        let accepted = inner.accepted.len();
        let members = self.store.member_count();
        let answered = accepted + inner.state.declined.len();
        let now = self.clock.now_ms();
        let closed_by = if accepted >= self.plan.nodes_per_round {
            "quota"
        } else if accepted >= self.plan.min_nodes && answered >= members {
            "all_answered"
        } else if tick && now >= inner.state.deadline_ms {
            if accepted >= self.plan.min_nodes {
                "deadline"
            } else {
                inner.state.deadline_ms = now + self.plan.round_deadline_secs * 1000;
                self.store.set_round_state(&inner.state)?;
                tracing::warn!(
                    round = inner.state.round,
                    accepted,
                    min = self.plan.min_nodes,
                    "round deadline passed with too few updates; extending it"
                );
                return Ok(());
            }
        } else {
            return Ok(());
        };
        self.close(inner, closed_by)
    }

    fn close(&self, inner: &mut Inner, closed_by: &str) -> Result<()> {
        let round = inner.state.round;
        let len = inner.global.flat_len();
        let aggregate = match self.plan.aggregation {
            Rule::Mean => inner.sum.mean().ok_or_else(|| {
                CoordinatorError::Corrupt("closing a round without updates".into())
            })?,
            rule => {
                let nodes: Vec<&String> = inner.accepted.keys().collect();
                aggregate_blocks(nodes.len(), len, BLOCK, rule, |u, offset, buf| {
                    self.store
                        .read_spooled_block(round, nodes[u], (offset / BLOCK) as u32, buf)
                })
                .map_err(|e| CoordinatorError::Corrupt(format!("robust aggregation: {e}")))?
            }
        };
        let aggregate_norm = amble_learn::federation::l2_norm(&aggregate);
        let mut next = inner.global.clone();
        let mut velocity = inner.velocity.clone();
        self.plan
            .server_step()
            .apply(&mut next, &aggregate, round, &mut velocity)?;
        // 1. the new version (its momentum first: a stored model always has it), durable;
        // 2. the round summary and the next state, durable.
        self.store.set_velocity(round, &velocity)?;
        self.store.set_model(round, next.to_bytes()?)?;
        self.store.flush()?;
        let summary = RoundSummary {
            round,
            version: round,
            updates: inner.accepted.values().cloned().collect(),
            declined: inner.state.declined.clone(),
            closed_by: closed_by.to_owned(),
            closed_ms: self.clock.now_ms(),
            aggregate_norm,
        };
        self.store.put_round_summary(&summary)?;
        let now = self.clock.now_ms();
        inner.state = if round >= self.plan.rounds {
            RoundState {
                phase: Phase::Done,
                declined: BTreeMap::new(),
                ..inner.state.clone()
            }
        } else {
            RoundState {
                round: round + 1,
                phase: Phase::Open,
                opened_ms: now,
                deadline_ms: now + self.plan.round_deadline_secs * 1000,
                declined: BTreeMap::new(),
            }
        };
        self.store.set_round_state(&inner.state)?;
        self.store.flush()?;
        self.store.clear_spool(round)?;
        inner.global = next;
        inner.velocity = velocity;
        inner.sum = WeightedSum::new(len);
        inner.accepted.clear();
        self.audit.append_durable(
            EntryDraft::new(
                format!("coordinator:{}", self.id),
                "coordinator",
                Action::Other("round_published".into()),
                format!("round-{round}"),
            )
            .decision(Decision::Allow)
            .count("round", round)
            .count("version", round)
            .count("updates", summary.updates.len() as u64)
            .count("declined", summary.declined.len() as u64)
            .reason(format!(
                "closed_by={closed_by} aggregate_norm={aggregate_norm:.4}"
            )),
        )?;
        tracing::info!(
            round,
            updates = summary.updates.len(),
            closed_by,
            "round published"
        );
        self.changed
            .send_replace(inner.state.round + u64::from(inner.state.phase == Phase::Done));
        Ok(())
    }

    /// Witnesses a node's checkpoint: the signature must verify with the key pinned at Join,
    /// and the tree must extend the last one cosigned for that node (consistency proof).
    pub fn cosign(&self, caller: &Actor, note: &str, proof_json: &str) -> Result<(String, u64)> {
        let mut member = self.member(&caller.id)?;
        let key = NoteVerifier::parse(&member.log_key)
            .map_err(|e| CoordinatorError::Corrupt(format!("pinned log key: {e}")))?;
        let refuse = |why: String| -> Result<(String, u64)> {
            self.log(
                Self::draft(caller, "cosign")
                    .decision(Decision::Deny)
                    .reason(why.clone()),
            )?;
            Err(CoordinatorError::Refused(why))
        };
        let opened = match verify_note(note, &key, &[]) {
            Ok(o) => o,
            Err(e) => {
                return refuse(format!(
                    "checkpoint is not signed by the node's pinned log key: {e}"
                ));
            }
        };
        let cp = match Checkpoint::parse(&opened.text) {
            Ok(c) => c,
            Err(e) => return refuse(format!("checkpoint: {e}")),
        };
        if cp.origin != key.name() {
            return refuse(format!(
                "checkpoint origin {:?} is not the node's log {:?}",
                cp.origin,
                key.name()
            ));
        }
        let previous = member.cosigned.clone();
        if let Some((old_size, old_root)) = &previous {
            let old_root = match base64_decode(old_root) {
                Some(r) => r,
                None => return Err(CoordinatorError::Corrupt("stored root".into())),
            };
            if cp.size < *old_size {
                return refuse(format!(
                    "the log shrank: {} entries now, {old_size} when last cosigned",
                    cp.size
                ));
            }
            if cp.size == *old_size {
                if cp.root.as_slice() != old_root.as_slice() {
                    return refuse("same size as the last cosigned checkpoint but another root: the log was rewritten".into());
                }
            } else {
                let proof = match amble_audit::ConsistencyProof::from_json(proof_json) {
                    Ok(p) if p.old_size == *old_size && p.new_size == cp.size => p,
                    Ok(p) => {
                        return refuse(format!(
                            "consistency proof is for sizes {}→{}, expected {old_size}→{}",
                            p.old_size, p.new_size, cp.size
                        ));
                    }
                    Err(e) => return refuse(format!("consistency proof: {e}")),
                };
                if let Err(e) = amble_audit::verify_consistency(
                    *old_size,
                    cp.size,
                    &proof.proof,
                    &old_root,
                    &cp.root,
                ) {
                    return refuse(format!(
                        "the log is not consistent with the checkpoint cosigned at size {old_size}: {e}"
                    ));
                }
            }
        }
        let cosigned = self.witness.add_signature(note)?;
        member.cosigned = Some((cp.size, base64_encode(&cp.root)));
        self.store.put_member(&member)?;
        self.log(
            Self::draft(caller, "cosign")
                .decision(Decision::Allow)
                .count("size", cp.size)
                .count("previous_size", previous.as_ref().map_or(0, |p| p.0)),
        )?;
        Ok((cosigned, previous.map_or(0, |p| p.0)))
    }

    /// Where the federation is.
    pub fn status(&self) -> Result<FederationStatus> {
        let (state, accepted, version) = {
            let inner = self.lock();
            let version = if inner.state.phase == Phase::Done {
                self.plan.rounds
            } else {
                inner.state.base_version()
            };
            (
                inner.state.clone(),
                inner.accepted.keys().cloned().collect(),
                version,
            )
        };
        let members = self.store.members()?;
        let history = self.store.round_summaries()?;
        Ok(FederationStatus {
            federation: self.federation.clone(),
            rounds_total: self.plan.rounds,
            round: state.round,
            phase: state.phase,
            model_version: version,
            accepted_in_round: accepted,
            deadline_ms: state.deadline_ms,
            members,
            history,
            epsilon: self.plan.privacy.as_ref().map(|p| p.epsilon),
            delta: self.plan.privacy.as_ref().map(|p| p.delta),
        })
    }

    /// The coordinator's own checkpoint, signed with its witness key.
    pub fn checkpoint(&self) -> Result<String> {
        Ok(self.audit.checkpoint(&self.signer, &self.origin)?)
    }

    /// Flushes everything to disk (on shutdown).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
