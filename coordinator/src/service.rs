//! The gRPC face of the coordinator: `Federation` for nodes, and `Audit` so an auditor can
//! fetch and verify the coordinator's own log exactly like a node's.
//!
//! Who calls is read from the verified client certificate, never from a request field: the
//! shared auth layer of `amble-net` checks each call against [`METHODS`] and the federation
//! name, logs a refusal, and hands the handler the admitted [`Actor`].

use crate::state::{Coordinator, TaskFor};
use crate::{Actor, CoordinatorError, TrainingRecord};
use amble_net::{Gatekeeper, MethodAccess, Role};

use Role::{Admin, Auditor, Node};
use amble_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

const fn access(path: &'static str, roles: &'static [Role]) -> MethodAccess {
    MethodAccess {
        path,
        local: roles,
        // The coordinator's own root is the federation CA: there is no second one.
        federation: &[],
    }
}

/// Which roles may call each method; anything else is refused for everyone. The shared auth
/// layer of `amble-net` applies it to every call before a handler runs.
pub const METHODS: &[MethodAccess] = &[
    access("/amble.v1.Federation/Join", &[Node]),
    access("/amble.v1.Federation/NextTask", &[Node]),
    access("/amble.v1.Federation/FetchModel", &[Node, Auditor, Admin]),
    access("/amble.v1.Federation/SubmitUpdate", &[Node]),
    access("/amble.v1.Federation/Decline", &[Node]),
    access("/amble.v1.Federation/Cosign", &[Node]),
    access("/amble.v1.Federation/Status", &[Node, Auditor, Admin]),
    access("/amble.v1.Audit/Checkpoint", &[Auditor, Admin, Node]),
    access("/amble.v1.Audit/Entries", &[Auditor, Admin]),
    access("/amble.v1.Audit/InclusionProof", &[Auditor, Admin, Node]),
    access("/amble.v1.Audit/ConsistencyProof", &[Auditor, Admin, Node]),
];

impl Gatekeeper for Coordinator {
    fn federation(&self) -> &str {
        Coordinator::federation(self)
    }

    fn log_refusal(&self, actor: &Actor, path: &str, reason: &str) -> Result<(), String> {
        self.log_denied(actor, path, reason)
            .map_err(|e| e.to_string())
    }

    fn log_unidentified(&self, certificate: &str, path: &str, why: &str) -> Result<(), String> {
        Coordinator::log_unidentified(self, certificate, path, why).map_err(|e| e.to_string())
    }
}

/// Largest model chunk sent, and largest long poll granted.
const CHUNK_BYTES: usize = 1 << 20;
const MAX_WAIT: Duration = Duration::from_secs(30);
const MAX_ENTRIES_PER_CALL: u64 = 1000;

fn status(e: CoordinatorError) -> Status {
    amble_net::status("coordinator", e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
        .map_err(status)
}

/// The caller the auth layer admitted for `req`.
fn caller<T>(req: &Request<T>) -> Result<Actor, Status> {
    req.extensions().get::<Actor>().cloned().ok_or_else(|| {
        Status::internal("request reached a service without an authenticated caller")
    })
}

/// `Federation` and `Audit` over one coordinator.
#[derive(Clone)]
pub struct FederationService(pub Arc<Coordinator>);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ModelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = caller(&req)?;
        let log_key = req.into_inner().log_key;
        let c = Arc::clone(&self.0);
        let who = caller.clone();
        let member = blocking(move || c.join(&who, &log_key)).await?;
        let plan_json =
            serde_json::to_string(self.0.plan()).map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node = %member.id, "node joined");
        Ok(Response::new(pb::JoinResponse {
            federation: self.0.federation().to_owned(),
            node_id: member.id,
            witness_key: self.0.witness_key().to_string(),
            plan_json,
        }))
    }

    async fn next_task(
        &self,
        req: Request<pb::NextTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&req)?;
        let wait = Duration::from_millis(u64::from(req.into_inner().wait_ms)).min(MAX_WAIT);
        let mut changed = self.0.subscribe();
        let plan = self.0.plan();
        let mut task = self.0.task_for(&caller.id).map_err(status)?;
        if matches!(task, TaskFor::Wait(_)) && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, changed.changed()).await;
            task = self.0.task_for(&caller.id).map_err(status)?;
        }
        let training_json =
            serde_json::to_string(&plan.local).map_err(|e| Status::internal(e.to_string()))?;
        let base = pb::Task {
            model: plan.model.clone(),
            clip_bound: plan.clip_bound,
            rounds_total: plan.rounds,
            ..Default::default()
        };
        Ok(Response::new(match task {
            TaskFor::Train {
                round,
                version,
                deadline_ms,
            } => pb::Task {
                kind: pb::task::Kind::Train as i32,
                round,
                model_version: version,
                training_json,
                deadline_unix_ms: deadline_ms,
                ..base
            },
            TaskFor::Wait(message) => pb::Task {
                kind: pb::task::Kind::Wait as i32,
                message,
                ..base
            },
            TaskFor::Done => pb::Task {
                kind: pb::task::Kind::Done as i32,
                message: format!("all {} rounds are published", plan.rounds),
                ..base
            },
        }))
    }

    type FetchModelStream = ChunkStream;

    async fn fetch_model(
        &self,
        req: Request<pb::FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        if r.model != self.0.plan().model {
            return Err(Status::not_found(format!(
                "model {:?} is not trained by this federation",
                r.model
            )));
        }
        let c = Arc::clone(&self.0);
        let version = (!r.latest).then_some(r.version);
        let (version, bytes) = blocking(move || c.model_bytes(&caller, version)).await?;
        let header = pb::ModelHeader {
            model: r.model,
            version,
            bytes: bytes.len() as u64,
            parameters: self.0.parameters() as u64,
            clip_bound: self.0.plan().clip_bound,
            sha256: amble_crypto::sha256(&bytes).to_vec(),
        };
        let mut parts = vec![Ok(pb::ModelChunk {
            part: Some(pb::model_chunk::Part::Header(header)),
        })];
        parts.extend(bytes.chunks(CHUNK_BYTES).map(|c| {
            Ok(pb::ModelChunk {
                part: Some(pb::model_chunk::Part::Data(c.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(parts))))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UpdateReceipt>, Status> {
        let caller = caller(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.next().await {
            Some(Ok(pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "an update starts with its header (round, base version, shape, sha256)",
                ));
            }
        };
        let record = header.record.clone().unwrap_or_default();
        let record = TrainingRecord {
            subjects: record.subjects,
            examples: record.examples,
            consent_state_hash: record.consent_state_hash.chars().take(128).collect(),
            epsilon_round: record.epsilon_round,
            epsilon_total: record.epsilon_total,
            delta: record.delta,
        };
        let c = Arc::clone(&self.0);
        let who = caller.clone();
        let mut upload = blocking(move || {
            c.begin_upload(
                &who,
                header.round,
                &header.model,
                header.base_version,
                header.values,
                header.weight,
                header.sha256,
                record,
            )
        })
        .await?;
        while let Some(msg) = stream.next().await {
            let bytes = match msg {
                Ok(pb::UpdateChunk {
                    part: Some(pb::update_chunk::Part::Data(b)),
                }) => b,
                Ok(_) => {
                    let c = Arc::clone(&self.0);
                    let who = caller.clone();
                    return Err(status(
                        blocking(move || {
                            Ok(c.abort(&upload, &who, "a second header in one update"))
                        })
                        .await?,
                    ));
                }
                Err(e) => {
                    let c = Arc::clone(&self.0);
                    let who = caller.clone();
                    let why = format!("upload stream broke: {e}");
                    let _ = blocking(move || Ok(c.abort(&upload, &who, &why))).await;
                    return Err(e);
                }
            };
            let c = Arc::clone(&self.0);
            let who = caller.clone();
            upload = blocking(move || {
                c.feed(&mut upload, &who, &bytes)?;
                Ok(upload)
            })
            .await?;
        }
        let c = Arc::clone(&self.0);
        let (receipt, count) = blocking(move || c.finish(upload, &caller)).await?;
        Ok(Response::new(pb::UpdateReceipt {
            round: receipt.round,
            norm: receipt.norm,
            accepted_in_round: count as u64,
        }))
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let c = Arc::clone(&self.0);
        blocking(move || c.decline(&caller, r.round, &r.reason)).await?;
        Ok(Response::new(pb::DeclineResponse {}))
    }

    async fn cosign(
        &self,
        req: Request<pb::CosignRequest>,
    ) -> Result<Response<pb::CosignResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let c = Arc::clone(&self.0);
        let (cosigned, previous_size) =
            blocking(move || c.cosign(&caller, &r.checkpoint, &r.consistency_proof_json)).await?;
        Ok(Response::new(pb::CosignResponse {
            cosigned,
            previous_size,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        caller(&req)?;
        let c = Arc::clone(&self.0);
        let s = blocking(move || c.status()).await?;
        let status_json = serde_json::to_string(&s).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::StatusResponse { status_json }))
    }
}

#[tonic::async_trait]
impl pb::audit_server::Audit for FederationService {
    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        caller(&req)?;
        let c = Arc::clone(&self.0);
        blocking(move || {
            let checkpoint = c.checkpoint()?;
            Ok(pb::CheckpointResponse {
                checkpoint,
                size: c.audit_log().size(),
                log_key: c.witness_key().to_string(),
                first_kept: c.audit_log().first_kept()?,
                witnessed: String::new(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn entries(
        &self,
        req: Request<pb::EntriesRequest>,
    ) -> Result<Response<pb::EntriesResponse>, Status> {
        caller(&req)?;
        let r = req.into_inner();
        if r.end <= r.start || r.end - r.start > MAX_ENTRIES_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "ask for a non-empty range of at most {MAX_ENTRIES_PER_CALL} entries"
            )));
        }
        let c = Arc::clone(&self.0);
        blocking(move || {
            let size = c.audit_log().size();
            if r.end > size {
                return Err(CoordinatorError::Refused(format!(
                    "the log has {size} entries; ask for a range ending at most at {size}"
                )));
            }
            let entries = c
                .audit_log()
                .entries(r.start..r.end)?
                .iter()
                .map(|e| e.to_canonical_json())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CoordinatorError::Corrupt(e.to_string()))?;
            Ok(pb::EntriesResponse { entries })
        })
        .await
        .map(Response::new)
    }

    async fn inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        caller(&req)?;
        let r = req.into_inner();
        let c = Arc::clone(&self.0);
        blocking(move || {
            let size = if r.tree_size == 0 {
                c.audit_log().size()
            } else {
                r.tree_size
            };
            Ok(pb::ProofResponse {
                proof_json: c.audit_log().inclusion_proof_json(r.index, size)?,
            })
        })
        .await
        .map(Response::new)
    }

    async fn consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        caller(&req)?;
        let r = req.into_inner();
        let c = Arc::clone(&self.0);
        blocking(move || {
            Ok(pb::ProofResponse {
                proof_json: c
                    .audit_log()
                    .consistency_proof_json(r.old_size, r.new_size)?,
            })
        })
        .await
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_the_coordinator_serves_has_a_role_list_and_no_other() {
        let served: Vec<String> = ["Federation", "Audit"]
            .into_iter()
            .flat_map(amble_proto::method_paths)
            .collect();
        for path in &served {
            assert!(
                amble_net::access_of(METHODS, path).is_some(),
                "{path} is served but not in METHODS: every call to it would be refused"
            );
        }
        assert_eq!(
            served.len(),
            METHODS.len(),
            "METHODS lists a method no service declares"
        );
    }
}
