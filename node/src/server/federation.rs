//! The node's federation client: joins the coordinator with the node's own certificate, waits
//! for tasks, trains each round through the policy with per-person DP, uploads the update,
//! installs each new global model (so `Assist` answers with it) and has the coordinator
//! witness the node's audit checkpoint after every round.
//!
//! Failures never stop the node: the client reconnects with exponential backoff (1 s … 30 s).
//! An update computed for a round is kept — durably, in the node's store — until the
//! coordinator acknowledges it, so a coordinator restart *or a node restart* makes the node
//! upload the *same* update again rather than train (and spend privacy budget) twice; the
//! coordinator refuses it if it had already counted it. Before training, the node records
//! which round it is training: a node that restarts mid-training finds that mark without an
//! update and declines the round instead of training it again ([`plan_round`]).
//! A round the node's ε budget cannot afford is declined, and the coordinator is told why.

use super::Shared;
use crate::{Actor, NodeError};
use amble_learn::federation::LocalTraining;
use amble_learn::model::IntentModel;
use amble_learn::privacy::Budget;
use amble_net::ClientIdentity;
use amble_proto::v1 as pb;
use pb::federation_client::FederationClient;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

const CHUNK_VALUES: usize = 1 << 18;
const WITNESS_KEY: &str = "federation/witness_key";
const COSIGNED_KEY: &str = "federation/cosigned_checkpoint";
/// `ROUND:BASE_VERSION` of the round whose training started last (written before the charge).
const TRAINING_KEY: &str = "federation/training_round";
/// The pending update's header (JSON) and values (little-endian f32); the header is written
/// last and removed first, so its presence means the values are whole.
const PENDING_KEY: &str = "federation/pending";
const PENDING_VALUES_KEY: &str = "federation/pending_values";

/// `[federation]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The coordinator, `https://HOST:PORT`.
    pub coordinator: String,
    /// The most ε this node lets the federated intent model spend on any one person.
    pub epsilon_budget: f64,
    /// The δ that ε is stated at.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn default_delta() -> f64 {
    1e-5
}

impl FederationConfig {
    pub(crate) fn budget(&self) -> Result<Budget, NodeError> {
        let eps = amble_learn::privacy::Epsilon::new(self.epsilon_budget)?;
        Ok(Budget {
            model_epsilon: eps,
            subject_epsilon: eps,
            delta: amble_learn::privacy::Delta::new(self.delta)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Net(#[from] amble_net::NetError),
    #[error("{0}")]
    Node(#[from] NodeError),
    #[error("{0}")]
    Protocol(String),
}

/// An update computed but not yet acknowledged.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    round: u64,
    base_version: u64,
    delta: Vec<f32>,
    record: pb::TrainingRecord,
}

/// What the node does with a TRAIN task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundPlan {
    /// Upload the update already computed for this round (no new charge).
    Resubmit,
    /// Training of this round started before and left no update (the node restarted while
    /// training): its ε may already be charged, so decline rather than train it again.
    Decline,
    /// A new round: mark it, then train.
    Train,
}

/// The one rule for a TRAIN task of `round` on `base`, given the kept update and the mark of
/// the round whose training started last.
fn plan_round(
    round: u64,
    base: u64,
    pending: Option<&Pending>,
    training_mark: Option<(u64, u64)>,
) -> RoundPlan {
    if pending.is_some_and(|p| p.round == round && p.base_version == base) {
        RoundPlan::Resubmit
    } else if training_mark == Some((round, base)) {
        RoundPlan::Decline
    } else {
        RoundPlan::Train
    }
}

#[derive(serde::Serialize, Deserialize)]
struct PendingHeader {
    round: u64,
    base_version: u64,
    values: usize,
    subjects: u64,
    examples: u64,
    consent_state_hash: String,
    epsilon_round: f64,
    epsilon_total: f64,
    delta: f64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Corrupt(format!("{what}: {e}"))
}

/// Keeps `p` durably (values first, then the header that says they are whole).
fn save_pending(n: &crate::Node, p: &Pending) -> Result<(), NodeError> {
    let header = PendingHeader {
        round: p.round,
        base_version: p.base_version,
        values: p.delta.len(),
        subjects: p.record.subjects,
        examples: p.record.examples,
        consent_state_hash: p.record.consent_state_hash.clone(),
        epsilon_round: p.record.epsilon_round,
        epsilon_total: p.record.epsilon_total,
        delta: p.record.delta,
    };
    n.set_meta(
        PENDING_VALUES_KEY,
        &amble_learn::federation::f32_to_le(&p.delta),
    )?;
    let json = serde_json::to_vec(&header).map_err(|e| corrupt("pending update", e))?;
    n.set_meta(PENDING_KEY, &json)
}

/// The update kept by [`save_pending`], if any.
fn load_pending(n: &crate::Node) -> Result<Option<Pending>, NodeError> {
    let Some(json) = n.meta(PENDING_KEY)? else {
        return Ok(None);
    };
    let h: PendingHeader =
        serde_json::from_slice(&json).map_err(|e| corrupt("pending update", e))?;
    let bytes = n
        .meta(PENDING_VALUES_KEY)?
        .ok_or_else(|| corrupt("pending update", "its values are missing"))?;
    if bytes.len() != h.values * 4 {
        return Err(corrupt(
            "pending update",
            format!("{} bytes of values for {} values", bytes.len(), h.values),
        ));
    }
    let delta = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Some(Pending {
        round: h.round,
        base_version: h.base_version,
        delta,
        record: pb::TrainingRecord {
            subjects: h.subjects,
            examples: h.examples,
            consent_state_hash: h.consent_state_hash,
            epsilon_round: h.epsilon_round,
            epsilon_total: h.epsilon_total,
            delta: h.delta,
        },
    }))
}

/// Forgets the kept update (the coordinator settled it).
fn clear_pending(n: &crate::Node) -> Result<(), NodeError> {
    n.remove_meta(PENDING_KEY)?;
    n.remove_meta(PENDING_VALUES_KEY)
}

fn training_mark(n: &crate::Node) -> Result<Option<(u64, u64)>, NodeError> {
    Ok(n.meta(TRAINING_KEY)?.and_then(|b| {
        let s = String::from_utf8(b).ok()?;
        let (r, v) = s.split_once(':')?;
        Some((r.parse().ok()?, v.parse().ok()?))
    }))
}

/// Runs the client until `stop` turns true or the federation is done.
pub(crate) async fn run(
    shared: Arc<Shared>,
    config: FederationConfig,
    identity: ClientIdentity,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut pending: Option<Pending> = None;
    loop {
        let session = session(&shared, &config, &identity, &mut pending);
        let outcome = tokio::select! {
            r = session => r,
            _ = stop.changed() => return,
        };
        match outcome {
            Ok(()) => {
                tracing::info!("federation done; the node keeps serving the last global model");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "federation session ended");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Protocol(format!("task failed: {e}")))?
        .map_err(ClientError::from)
}

async fn session(
    shared: &Arc<Shared>,
    config: &FederationConfig,
    identity: &ClientIdentity,
    pending: &mut Option<Pending>,
) -> Result<(), ClientError> {
    let channel = identity
        .endpoint(&config.coordinator)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            ClientError::Protocol(format!(
                "cannot connect to {}: {}",
                config.coordinator,
                amble_net::source_chain(&e)
            ))
        })?;
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let log_key = {
        let s = Arc::clone(shared);
        blocking(move || {
            s.with_node(|n| {
                Ok(
                    amble_audit::NoteSigner::from_key(n.origin(), n.signing_key())
                        .map_err(|e| NodeError::Audit(e.into()))?
                        .verifier()
                        .to_string(),
                )
            })
        })
        .await?
    };
    let joined = client.join(pb::JoinRequest { log_key }).await?.into_inner();
    let me = joined.node_id.clone();
    {
        let s = Arc::clone(shared);
        let key = joined.witness_key.clone();
        blocking(move || s.with_node(|n| n.set_meta(WITNESS_KEY, key.as_bytes()))).await?;
    }
    tracing::info!(node = %me, federation = %joined.federation, "joined the federation");
    let budget = config.budget()?;
    let actor = Actor::local(
        format!("federation:{}", joined.federation),
        amble_policy::Role::Node,
    );
    loop {
        let task = client
            .next_task(pb::NextTaskRequest { wait_ms: 20_000 })
            .await?
            .into_inner();
        match pb::task::Kind::try_from(task.kind) {
            Ok(pb::task::Kind::Wait) => continue,
            Ok(pb::task::Kind::Done) => {
                install_latest(shared, &mut client, &task.model, &joined.federation).await?;
                cosign(shared, &mut client).await?;
                return Ok(());
            }
            Ok(pb::task::Kind::Train) => {}
            Err(_) => {
                return Err(ClientError::Protocol(format!(
                    "unknown task kind {}",
                    task.kind
                )));
            }
        }
        if pending.is_none() {
            let s = Arc::clone(shared);
            *pending = blocking(move || s.with_node(load_pending)).await?;
        }
        let mark = {
            let s = Arc::clone(shared);
            blocking(move || s.with_node(training_mark)).await?
        };
        let plan = plan_round(task.round, task.model_version, pending.as_ref(), mark);
        if plan == RoundPlan::Decline {
            let reason = "the node restarted while training this round; its privacy budget \
                          may already be charged, so it does not train the round again"
                .to_owned();
            tracing::warn!(
                round = task.round,
                "declining a round whose training was interrupted"
            );
            client
                .decline(pb::DeclineRequest {
                    round: task.round,
                    reason,
                })
                .await?;
            continue;
        }
        if plan == RoundPlan::Train {
            {
                let s = Arc::clone(shared);
                let mark = format!("{}:{}", task.round, task.model_version);
                blocking(move || s.with_node(|n| n.set_meta(TRAINING_KEY, mark.as_bytes())))
                    .await?;
            }
            let global = fetch(&mut client, &task.model, task.model_version).await?;
            let training: LocalTraining = serde_json::from_str(&task.training_json)
                .map_err(|e| ClientError::Protocol(format!("task training settings: {e}")))?;
            {
                let s = Arc::clone(shared);
                let (g, fed, v) = (
                    global.clone(),
                    joined.federation.clone(),
                    task.model_version,
                );
                blocking(move || s.with_node(|n| install(n, &g, &fed, v))).await?;
            }
            let s = Arc::clone(shared);
            let a = actor.clone();
            let round_task = crate::train::RoundTask {
                round: task.round,
                base_version: task.model_version,
                training,
                clip_bound: task.clip_bound,
            };
            let b = budget.clone();
            let trained = tokio::task::spawn_blocking(move || {
                s.with_node(|n| n.train_round(&a, &global, &round_task, b))
            })
            .await
            .map_err(|e| ClientError::Protocol(format!("training task failed: {e}")))?;
            let (delta, run) = match trained {
                Ok(t) => t,
                Err(e @ (NodeError::Learn(_) | NodeError::NothingToTrain(_))) => {
                    let reason = e.to_string();
                    tracing::warn!(round = task.round, reason = %reason, "declining the round");
                    client
                        .decline(pb::DeclineRequest {
                            round: task.round,
                            reason,
                        })
                        .await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            tracing::info!(
                round = task.round,
                subjects = run.subjects_used,
                examples = run.examples,
                epsilon_total = ?run.epsilon_total,
                "trained the round"
            );
            let p = Pending {
                round: task.round,
                base_version: task.model_version,
                delta,
                record: pb::TrainingRecord {
                    subjects: run.subjects_used as u64,
                    examples: run.examples as u64,
                    consent_state_hash: run.consent_state_hash,
                    epsilon_round: run.epsilon_round.unwrap_or(0.0),
                    epsilon_total: run.epsilon_total.unwrap_or(0.0),
                    delta: run.delta.unwrap_or(0.0),
                },
            };
            {
                let s = Arc::clone(shared);
                let kept = p.clone();
                blocking(move || s.with_node(|n| save_pending(n, &kept))).await?;
            }
            *pending = Some(p);
        }
        if let Some(p) = pending.as_ref() {
            match upload(&mut client, &task.model, p).await {
                Ok(receipt) => {
                    tracing::info!(
                        round = receipt.round,
                        norm = receipt.norm,
                        "update accepted"
                    );
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    // Already counted (a retry after a coordinator restart), or the round
                    // closed without us: either way this update is settled.
                    tracing::warn!(round = p.round, reason = %s.message(), "update not counted");
                }
                Err(s) => return Err(s.into()),
            }
            *pending = None;
            let s = Arc::clone(shared);
            blocking(move || s.with_node(clear_pending)).await?;
        }
        cosign(shared, &mut client).await?;
    }
}

fn install(
    n: &crate::Node,
    model: &IntentModel,
    federation: &str,
    version: u64,
) -> Result<(), NodeError> {
    let sha = amble_crypto::sha256(&model.to_bytes()?);
    n.install_model(
        model,
        &crate::train::ModelInfo {
            source: federation.to_owned(),
            version,
            sha256: hex::encode(sha),
        },
    )
}

async fn install_latest(
    shared: &Arc<Shared>,
    client: &mut FederationClient<Channel>,
    model: &str,
    federation: &str,
) -> Result<(), ClientError> {
    let (version, global) = fetch_version(client, model, None).await?;
    let s = Arc::clone(shared);
    let fed = federation.to_owned();
    blocking(move || s.with_node(|n| install(n, &global, &fed, version))).await
}

async fn fetch(
    client: &mut FederationClient<Channel>,
    model: &str,
    version: u64,
) -> Result<IntentModel, ClientError> {
    Ok(fetch_version(client, model, Some(version)).await?.1)
}

/// Downloads a model version and checks its size and SHA-256 against the header.
async fn fetch_version(
    client: &mut FederationClient<Channel>,
    model: &str,
    version: Option<u64>,
) -> Result<(u64, IntentModel), ClientError> {
    let mut stream = client
        .fetch_model(pb::FetchModelRequest {
            model: model.to_owned(),
            version: version.unwrap_or(0),
            latest: version.is_none(),
        })
        .await?
        .into_inner();
    let header = match stream.message().await? {
        Some(pb::ModelChunk {
            part: Some(pb::model_chunk::Part::Header(h)),
        }) => h,
        _ => {
            return Err(ClientError::Protocol(
                "model stream without a header".into(),
            ));
        }
    };
    if header.bytes > 1 << 30 {
        return Err(ClientError::Protocol(format!(
            "model of {} bytes is larger than this node accepts",
            header.bytes
        )));
    }
    let mut bytes = Vec::with_capacity(header.bytes as usize);
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(pb::model_chunk::Part::Data(d)) => {
                if bytes.len() + d.len() > header.bytes as usize {
                    return Err(ClientError::Protocol(
                        "model stream longer than announced".into(),
                    ));
                }
                bytes.extend_from_slice(&d);
            }
            _ => {
                return Err(ClientError::Protocol(
                    "a second header in a model stream".into(),
                ));
            }
        }
    }
    if bytes.len() as u64 != header.bytes
        || amble_crypto::sha256(&bytes).as_slice() != header.sha256
    {
        return Err(ClientError::Protocol(
            "the model does not match its announced size and SHA-256".into(),
        ));
    }
    let model = IntentModel::from_bytes(&bytes).map_err(NodeError::from)?;
    Ok((header.version, model))
}

async fn upload(
    client: &mut FederationClient<Channel>,
    model: &str,
    p: &Pending,
) -> Result<pb::UpdateReceipt, tonic::Status> {
    let bytes = amble_learn::federation::f32_to_le(&p.delta);
    let header = pb::UpdateHeader {
        round: p.round,
        model: model.to_owned(),
        base_version: p.base_version,
        values: p.delta.len() as u64,
        // FedAvg weight; the coordinator ignores it under DP.
        weight: p.record.examples as f64,
        sha256: amble_crypto::sha256(&bytes).to_vec(),
        record: Some(p.record.clone()),
    };
    let mut parts = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(header)),
    }];
    parts.extend(bytes.chunks(CHUNK_VALUES * 4).map(|c| pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(c.to_vec())),
    }));
    Ok(client
        .submit_update(tokio_stream::iter(parts))
        .await?
        .into_inner())
}

/// Asks the coordinator to witness the node's current checkpoint, proving consistency with
/// the last one it cosigned, and keeps the cosigned note for auditors.
async fn cosign(
    shared: &Arc<Shared>,
    client: &mut FederationClient<Channel>,
) -> Result<(), ClientError> {
    let s = Arc::clone(shared);
    let (checkpoint, proof) = blocking(move || {
        s.with_node(|n| {
            let last = n
                .meta(COSIGNED_KEY)?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|note| checkpoint_size(&note));
            let checkpoint = n.checkpoint()?;
            let size = checkpoint_size(&checkpoint).unwrap_or(0);
            let proof = match last {
                Some(old) if old > 0 && old < size => {
                    n.audit_log().consistency_proof_json(old, size)?
                }
                _ => String::new(),
            };
            Ok((checkpoint, proof))
        })
    })
    .await?;
    let cosigned = client
        .cosign(pb::CosignRequest {
            checkpoint,
            consistency_proof_json: proof,
        })
        .await?
        .into_inner()
        .cosigned;
    let s = Arc::clone(shared);
    blocking(move || s.with_node(|n| n.set_meta(COSIGNED_KEY, cosigned.as_bytes()))).await
}

fn checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.trim().parse().ok()
}

impl crate::Node {
    /// The latest checkpoint of this node's log that the federation's coordinator cosigned,
    /// and the coordinator's witness key, if the node has joined a federation.
    pub fn witnessed_checkpoint(&self) -> Result<Option<(String, String)>, NodeError> {
        let note = self
            .meta(COSIGNED_KEY)?
            .and_then(|b| String::from_utf8(b).ok());
        let key = self
            .meta(WITNESS_KEY)?
            .and_then(|b| String::from_utf8(b).ok());
        Ok(note.zip(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(round: u64, base: u64) -> Pending {
        Pending {
            round,
            base_version: base,
            delta: vec![0.5, -1.25, f32::MIN_POSITIVE, 3.0e7],
            record: pb::TrainingRecord {
                subjects: 9,
                examples: 27,
                consent_state_hash: "ab".into(),
                epsilon_round: 1.5,
                epsilon_total: 3.0,
                delta: 1e-5,
            },
        }
    }

    #[test]
    fn a_kept_update_is_resubmitted_and_an_interrupted_round_is_declined_not_retrained() {
        let p = pending(3, 2);
        assert_eq!(
            plan_round(3, 2, Some(&p), Some((3, 2))),
            RoundPlan::Resubmit
        );
        // Training started (ε may be charged) but no update was kept: never train it again.
        assert_eq!(plan_round(3, 2, None, Some((3, 2))), RoundPlan::Decline);
        // A new round, or the same round on another base version, trains.
        assert_eq!(plan_round(4, 3, Some(&p), Some((3, 2))), RoundPlan::Train);
        assert_eq!(plan_round(3, 2, None, Some((2, 1))), RoundPlan::Train);
        assert_eq!(plan_round(1, 0, None, None), RoundPlan::Train);
    }

    #[test]
    fn the_pending_update_survives_a_restart_of_the_node_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(3, 2);
        {
            let node = crate::Node::init(dir.path(), None).unwrap();
            assert_eq!(load_pending(&node).unwrap(), None);
            save_pending(&node, &p).unwrap();
            node.set_meta(TRAINING_KEY, b"3:2").unwrap();
        }
        // The store waits for the dropped handle to let go of the directory's lock.
        let reopen = || crate::Node::open(dir.path(), None, None).unwrap();
        let node = reopen();
        assert_eq!(load_pending(&node).unwrap(), Some(p.clone()));
        assert_eq!(training_mark(&node).unwrap(), Some((3, 2)));
        clear_pending(&node).unwrap();
        drop(node);
        let node = reopen();
        assert_eq!(load_pending(&node).unwrap(), None);
    }
}
