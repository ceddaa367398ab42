//! The node services. Each handler takes the [`Actor`] the auth layer put in the
//! request's extensions, checks its input, and runs one `Node` call on the blocking pool.

use super::Shared;
use crate::assist::{ClassifyOptions, Route, Threshold};
use crate::needs::DEFAULT_NEEDS_K;
use crate::{Actor, Collection, ConsentChange, NewRecord, Node, NodeError, ReadOutcome, TimeRange};
use amble_audit::NoteSigner;
use amble_crypto::ExternalRef;
use amble_policy::DenyReason;
use amble_proto::chunks::{self, Chunk};
use amble_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};

/// Most records one Append may carry (the message size bounds them too).
pub const MAX_RECORDS_PER_APPEND: usize = 10_000;
/// Most audit entries one Entries call returns.
pub const MAX_ENTRIES_PER_CALL: u64 = 1_000;

/// How a node error reaches a client: the code its type declares beside its definition
/// (`amble_net::ServiceError`), and for an internal failure a generic message while the cause
/// goes to the node's log.
pub fn status(e: impl amble_net::ServiceError) -> Status {
    amble_net::status("node", e)
}

fn actor<T>(req: &Request<T>) -> Result<Actor, Status> {
    req.extensions().get::<Actor>().cloned().ok_or_else(|| {
        Status::internal("request reached a service without an authenticated caller")
    })
}

/// A signed receipt as the answer: the signed file's exact bytes, which the subject keeps
/// unchanged.
fn receipt_response(
    receipt: amble_consent::SignedReceipt,
) -> Result<Response<pb::SetConsentResponse>, Status> {
    Ok(Response::new(pb::SetConsentResponse {
        receipt_json: String::from_utf8(receipt.into_bytes())
            .map_err(|_| Status::internal("the node signed a receipt that is not UTF-8"))?,
    }))
}

fn parse_ref(field: &str, s: &str) -> Result<ExternalRef, Status> {
    ExternalRef::parse(s).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn parse_time(field: &str, s: &str) -> Result<Option<OffsetDateTime>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    OffsetDateTime::parse(s, &Rfc3339).map(Some).map_err(|e| {
        Status::invalid_argument(format!(
            "{field}: {s:?} is not an RFC 3339 time like 2026-05-01T10:00:00Z ({e})"
        ))
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| {
        tracing::error!(error = %e, "cannot render a response as JSON");
        Status::internal("the node could not render its answer")
    })
}

/// A document sent as chunks (see `amble_proto::chunks`).
type ChunkStream<C> = Pin<Box<dyn tokio_stream::Stream<Item = Result<C, Status>> + Send>>;

/// Streams `doc` in chunks that each fit one message of this node's size limit.
fn chunked<C: Chunk>(doc: String, size: usize) -> Response<ChunkStream<C>> {
    let parts = chunks::split::<C>(doc, size);
    Response::new(Box::pin(tokio_stream::iter(parts.into_iter().map(Ok))))
}

impl Shared {
    /// Runs `f` on the node on the blocking pool (storage and fsync block).
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Node) -> Result<T, Status> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || shared.with_node(f))
            .await
            .map_err(|_| Status::internal("a worker of the node stopped; see the node's log"))?
    }

    /// Records one of a person's choices (consent, AI assistance, restriction, objection) for
    /// the caller, and answers its signed receipt.
    async fn record_choice<F>(
        self: &Arc<Self>,
        actor: Actor,
        reference: ExternalRef,
        record: F,
    ) -> Result<Response<pb::SetConsentResponse>, Status>
    where
        F: FnOnce(&Node, &Actor, &ExternalRef) -> crate::Result<amble_consent::SignedReceipt>
            + Send
            + 'static,
    {
        let receipt = self
            .run(move |n| record(n, &actor, &reference).map_err(status))
            .await?;
        receipt_response(receipt)
    }

    async fn run_mut<T, F>(self: &Arc<Self>, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut Node) -> Result<T, Status> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || shared.with_node_mut(f))
            .await
            .map_err(|_| Status::internal("a worker of the node stopped; see the node's log"))?
    }
}

/// `amble.v1.Archive`.
#[derive(Clone)]
pub struct ArchiveService(pub(crate) Arc<Shared>);

fn new_record(i: usize, r: pb::NewRecord) -> Result<(ExternalRef, NewRecord), Status> {
    let at = |f: &str| format!("records[{i}].{f}");
    let reference = parse_ref(&at("ref"), &r.r#ref)?;
    let collection: Collection = r
        .collection
        .parse()
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", at("collection"))))?;
    let time = parse_time(&at("time"), &r.time)?
        .ok_or_else(|| Status::invalid_argument(format!("{} is required", at("time"))))?;
    let data = match serde_json::from_str::<serde_json::Value>(&r.data_json) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => {
            return Err(Status::invalid_argument(format!(
                "{} must be a JSON object",
                at("data_json")
            )));
        }
        Err(e) => {
            return Err(Status::invalid_argument(format!(
                "{} is not JSON: {e}",
                at("data_json")
            )));
        }
    };
    Ok((
        reference,
        NewRecord {
            collection,
            time,
            data,
        },
    ))
}

fn denied(reason: DenyReason) -> Status {
    match reason {
        DenyReason::UnknownPurpose { .. } => {
            Status::invalid_argument(format!("{reason}; `amble policy check` lists the purposes"))
        }
        other => Status::permission_denied(format!(
            "denied by consent or policy ({}): {other}",
            other.code()
        )),
    }
}

#[tonic::async_trait]
impl pb::archive_server::Archive for ArchiveService {
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let actor = actor(&req)?;
        let records = req.into_inner().records;
        if records.is_empty() {
            return Err(Status::invalid_argument(
                "records is empty; send at least one",
            ));
        }
        if records.len() > MAX_RECORDS_PER_APPEND {
            return Err(Status::invalid_argument(format!(
                "{} records in one call; send at most {MAX_RECORDS_PER_APPEND}",
                records.len()
            )));
        }
        let items = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| new_record(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let appended = self
            .0
            .run(move |n| n.append_batch(&actor, &items).map_err(status))
            .await?;
        Ok(Response::new(pb::AppendResponse {
            appended: appended
                .into_iter()
                .map(|a| pb::Appended {
                    subject: a.subject.to_string(),
                    record_id: a.record_id,
                })
                .collect(),
        }))
    }

    type ReadStream = ChunkStream<pb::ReadChunk>;

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        if r.purpose.is_empty() {
            return Err(Status::invalid_argument(
                "purpose is required: every read names why it reads",
            ));
        }
        let range = TimeRange {
            from: parse_time("from", &r.from)?,
            to: parse_time("to", &r.to)?,
        };
        let outcome = self
            .0
            .run(move |n| {
                n.read(&actor, &reference, &r.purpose, range)
                    .map_err(status)
            })
            .await?;
        match outcome {
            ReadOutcome::Allowed(p) => Ok(chunked(to_json(&p.to_json())?, self.0.chunk_bytes)),
            ReadOutcome::Denied(reason) => Err(denied(reason)),
        }
    }

    async fn link(
        &self,
        req: Request<pb::LinkRequest>,
    ) -> Result<Response<pb::LinkResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let existing = parse_ref("existing_ref", &r.existing_ref)?;
        let new = parse_ref("new_ref", &r.new_ref)?;
        let subject = self
            .0
            .run(move |n| n.link(&actor, &existing, &new).map_err(status))
            .await?;
        Ok(Response::new(pb::LinkResponse {
            subject: subject.to_string(),
        }))
    }

    async fn unlink(
        &self,
        req: Request<pb::UnlinkRequest>,
    ) -> Result<Response<pb::UnlinkResponse>, Status> {
        let actor = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let subject = self
            .0
            .run(move |n| n.unlink(&actor, &reference).map_err(status))
            .await?;
        Ok(Response::new(pb::UnlinkResponse {
            subject: subject.to_string(),
        }))
    }
}

/// `amble.v1.Subject`.
#[derive(Clone)]
pub struct SubjectService(
    pub(crate) Arc<Shared>,
    pub(crate) Option<super::PortalLinks>,
);

#[tonic::async_trait]
impl pb::subject_server::Subject for SubjectService {
    async fn get_consent(
        &self,
        req: Request<pb::SubjectRef>,
    ) -> Result<Response<pb::ConsentState>, Status> {
        let who = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let history = self
            .0
            .run(move |n| n.consent_history(&who, &reference).map_err(status))
            .await?;
        Ok(Response::new(pb::ConsentState {
            history_json: to_json(&history)?,
        }))
    }

    async fn set_consent(
        &self,
        req: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::SetConsentResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        if r.purpose.is_empty() {
            return Err(Status::invalid_argument("purpose is required"));
        }
        let change = if r.give {
            ConsentChange::Give {
                valid_until: parse_time("valid_until", &r.valid_until)?,
                explicit: r.explicit,
            }
        } else {
            ConsentChange::Withdraw
        };
        self.0
            .record_choice(actor, reference, move |n, a, p| {
                n.change_consent(a, p, &r.purpose, change)
            })
            .await
    }

    async fn set_assistance(
        &self,
        req: Request<pb::SetAssistanceRequest>,
    ) -> Result<Response<pb::SetConsentResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        let level: amble_consent::AssistanceLevel = r
            .level
            .parse()
            .map_err(|e| Status::invalid_argument(format!("level: {e}")))?;
        self.0
            .record_choice(actor, reference, move |n, a, p| {
                n.set_ai_assistance(a, p, level)
            })
            .await
    }

    async fn set_restriction(
        &self,
        req: Request<pb::SetRestrictionRequest>,
    ) -> Result<Response<pb::SetConsentResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        self.0
            .record_choice(actor, reference, move |n, a, p| {
                n.set_restriction(a, p, r.restrict)
            })
            .await
    }

    async fn set_objection(
        &self,
        req: Request<pb::SetObjectionRequest>,
    ) -> Result<Response<pb::SetConsentResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        if r.purpose.is_empty() {
            return Err(Status::invalid_argument("purpose is required"));
        }
        self.0
            .record_choice(actor, reference, move |n, a, p| {
                n.set_objection(a, p, &r.purpose, r.object)
            })
            .await
    }

    async fn rectify(
        &self,
        req: Request<pb::RectifyRequest>,
    ) -> Result<Response<pb::RectifyResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        let serde_json::Value::Object(fields) = serde_json::from_str(&r.fields_json)
            .map_err(|e| Status::invalid_argument(format!("fields_json: {e}")))?
        else {
            return Err(Status::invalid_argument(
                "fields_json must be a JSON object",
            ));
        };
        // As erasure: the correction re-seals the person's records under a new data key, and
        // the master key is rotated so that the old data key, wherever its wrapped bytes
        // survive, unwraps no more; under the node's write lock.
        let collection = self
            .0
            .run_mut(move |n| {
                let c = n
                    .rectify(&actor, &reference, r.record_id, &fields)
                    .map_err(status)?;
                n.rotate_key(&actor).map_err(status)?;
                Ok(c)
            })
            .await?;
        Ok(Response::new(pb::RectifyResponse {
            collection: collection.as_str().to_owned(),
        }))
    }

    async fn request_review(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::ReviewResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let reference = parse_ref("ref", &r.r#ref)?;
        let review = self
            .0
            .run(move |n| {
                n.request_review(&actor, &reference, r.decision)
                    .map_err(status)
            })
            .await?;
        Ok(Response::new(pb::ReviewResponse {
            request: review.request,
            decided_at: review
                .decided_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            explanation: review.explanation,
        }))
    }

    type ExportStream = ChunkStream<pb::ExportChunk>;

    async fn export(
        &self,
        req: Request<pb::SubjectRef>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let actor = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let export = self
            .0
            .run(move |n| n.export(&actor, &reference).map_err(status))
            .await?;
        Ok(chunked(to_json(&export)?, self.0.chunk_bytes))
    }

    /// Erases, then rotates the node master key so the erased data key's wrapped copies
    /// (in the engine's old segments and in backups) no longer open — see `docs/ARCHITECTURE.md`.
    async fn issue_portal_link(
        &self,
        req: Request<pb::SubjectRef>,
    ) -> Result<Response<pb::PortalLinkResponse>, Status> {
        let who = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let Some(links) = self.1.clone() else {
            return Err(Status::failed_precondition(
                "this node serves no self-service page; add a [portal] section to node.toml",
            ));
        };
        let ttl = links.link_ttl_secs();
        let token = tokio::task::spawn_blocking(move || links.issue_for(&who, &reference))
            .await
            .map_err(|_| Status::internal("a worker of the node stopped; see the node's log"))?
            .map_err(|e| match e {
                super::ServerError::Node(n) => status(n),
                other => Status::resource_exhausted(other.to_string()),
            })?;
        Ok(Response::new(pb::PortalLinkResponse {
            path: format!("/?t={token}"),
            token,
            expires_in_secs: ttl,
        }))
    }

    async fn erase(
        &self,
        req: Request<pb::SubjectRef>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        let actor = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let report = self
            .0
            .run_mut(move |n| {
                let report = n.erase(&actor, &reference).map_err(status)?;
                n.rotate_key(&actor).map_err(status)?;
                Ok(report)
            })
            .await?;
        Ok(Response::new(pb::EraseResponse {
            subject: report.subject,
            records_deleted: report.records_deleted as u64,
            references_removed: report.references_removed as u64,
        }))
    }

    async fn access_log(
        &self,
        req: Request<pb::SubjectRef>,
    ) -> Result<Response<pb::AccessLogResponse>, Status> {
        let who = actor(&req)?;
        let reference = parse_ref("ref", &req.into_inner().r#ref)?;
        let entries = self
            .0
            .run(move |n| n.access_log(&who, &reference).map_err(status))
            .await?;
        let entries_json = entries
            .iter()
            .map(|e| {
                e.to_canonical_json()
                    .map_err(|e| status(NodeError::Audit(e.into())))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::AccessLogResponse { entries_json }))
    }
}

/// `amble.v1.Audit`.
#[derive(Clone)]
pub struct AuditService(pub(crate) Arc<Shared>);

/// The tree size a C2SP checkpoint note states (its second line).
fn checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditService {
    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        let _ = actor(&req)?;
        self.0
            .run(|n| {
                let checkpoint = n.checkpoint().map_err(status)?;
                let size = checkpoint_size(&checkpoint)
                    .ok_or_else(|| Status::internal("the node signed a malformed checkpoint"))?;
                let log_key = NoteSigner::from_key(n.origin(), n.signing_key())
                    .map_err(|e| status(NodeError::Audit(e.into())))?
                    .verifier()
                    .to_string();
                let first_kept = n
                    .audit_log()
                    .first_kept()
                    .map_err(|e| status(NodeError::from(e)))?;
                let witnessed = n
                    .witnessed_checkpoint()
                    .map_err(status)?
                    .map(|(note, _)| note)
                    .unwrap_or_default();
                Ok(Response::new(pb::CheckpointResponse {
                    checkpoint,
                    size,
                    log_key,
                    first_kept,
                    witnessed,
                }))
            })
            .await
    }

    async fn entries(
        &self,
        req: Request<pb::EntriesRequest>,
    ) -> Result<Response<pb::EntriesResponse>, Status> {
        let _ = actor(&req)?;
        let r = req.into_inner();
        if r.end <= r.start {
            return Err(Status::invalid_argument(format!(
                "range [{}, {}) is empty; end must be greater than start",
                r.start, r.end
            )));
        }
        if r.end - r.start > MAX_ENTRIES_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ENTRIES_PER_CALL} entries per call; page through the range"
            )));
        }
        self.0
            .run(move |n| {
                let size = n.audit_log().size();
                if r.end > size {
                    return Err(Status::out_of_range(format!(
                        "the log has {size} entries; ask for a range ending at most at {size}"
                    )));
                }
                let entries = n
                    .audit_log()
                    .entries(r.start..r.end)
                    .map_err(|e| status(NodeError::from(e)))?
                    .iter()
                    .map(|e| e.to_canonical_json())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| status(NodeError::Audit(e.into())))?;
                Ok(Response::new(pb::EntriesResponse { entries }))
            })
            .await
    }

    async fn inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        let _ = actor(&req)?;
        let r = req.into_inner();
        self.0
            .run(move |n| {
                let size = if r.tree_size == 0 {
                    n.audit_log().size()
                } else {
                    r.tree_size
                };
                let proof_json = n
                    .audit_log()
                    .inclusion_proof_json(r.index, size)
                    .map_err(|e| status(NodeError::from(e)))?;
                Ok(Response::new(pb::ProofResponse { proof_json }))
            })
            .await
    }

    async fn consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        let _ = actor(&req)?;
        let r = req.into_inner();
        self.0
            .run(move |n| {
                let new = if r.new_size == 0 {
                    n.audit_log().size()
                } else {
                    r.new_size
                };
                let proof_json = n
                    .audit_log()
                    .consistency_proof_json(r.old_size, new)
                    .map_err(|e| status(NodeError::from(e)))?;
                Ok(Response::new(pb::ProofResponse { proof_json }))
            })
            .await
    }
}

/// `amble.v1.Admin`.
#[derive(Clone)]
pub struct AdminService(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn reload_policy(
        &self,
        req: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let actor = actor(&req)?;
        let policy_version = self
            .0
            .run(move |n| n.reload_policy(&actor).map_err(status))
            .await?;
        Ok(Response::new(pb::ReloadPolicyResponse { policy_version }))
    }

    async fn rotate_key(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let actor = actor(&req)?;
        let report = self
            .0
            .run_mut(move |n| n.rotate_key(&actor).map_err(status))
            .await?;
        Ok(Response::new(pb::RotateKeyResponse {
            new_version: report.new_version,
            keys_rewrapped: report.keys_rewrapped as u64,
        }))
    }

    async fn health(
        &self,
        req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let _ = actor(&req)?;
        self.0
            .run(|n| {
                Ok(Response::new(pb::HealthResponse {
                    status: "serving".into(),
                    audit_size: n.audit_log().size(),
                    policy_version: n.policy().version(),
                }))
            })
            .await
    }
}

/// `amble.v1.Register`.
#[derive(Clone)]
pub struct RegisterService(pub(crate) Arc<Shared>);

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn pb_request(r: &crate::register::Request, now: time::OffsetDateTime) -> pb::RegisteredRequest {
    pb::RegisteredRequest {
        id: r.id,
        subject: r.subject.clone(),
        kind: r.kind.as_str().into(),
        received: rfc3339(r.received),
        verified_by: r.verified_by.clone(),
        deadline: rfc3339(r.deadline),
        answered: r.answered.map(rfc3339).unwrap_or_default(),
        outcome: r.outcome.map(|o| o.as_str().to_owned()).unwrap_or_default(),
        answered_by: r.answered_by.clone().unwrap_or_default(),
        overdue: r.overdue(now),
        late: r.late(),
    }
}

#[tonic::async_trait]
impl pb::register_server::Register for RegisterService {
    async fn list_requests(
        &self,
        req: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        use crate::register::Filter;
        let actor = actor(&req)?;
        let filter = match req.get_ref().filter.as_str() {
            "" | "all" => Filter::All,
            "open" => Filter::Open,
            "overdue" => Filter::Overdue,
            other => {
                return Err(Status::invalid_argument(format!(
                    "filter {other:?} is not one of all, open, overdue"
                )));
            }
        };
        self.0
            .run(move |n| {
                let now = n.now();
                let list = n.requests(&actor, filter).map_err(status)?;
                Ok(Response::new(pb::ListRequestsResponse {
                    requests: list.iter().map(|r| pb_request(r, now)).collect(),
                }))
            })
            .await
    }

    async fn answer_request(
        &self,
        req: Request<pb::AnswerRequestRequest>,
    ) -> Result<Response<pb::RegisteredRequest>, Status> {
        let actor = actor(&req)?;
        let (id, outcome) = (req.get_ref().id, req.get_ref().outcome.clone());
        self.0
            .run(move |n| {
                let outcome = outcome.parse().map_err(status)?;
                let r = n.answer_request(&actor, id, outcome).map_err(status)?;
                Ok(Response::new(pb_request(&r, n.now())))
            })
            .await
    }
}

/// `amble.v1.Assist`.
#[derive(Clone)]
pub struct AssistService(pub(crate) Arc<Shared>);

/// `k` as sent (0 means the default).
fn k_or_default(k: u32) -> usize {
    if k == 0 {
        crate::assist::DEFAULT_K
    } else {
        usize::try_from(k).unwrap_or(usize::MAX)
    }
}

fn pb_route(r: Route) -> pb::Route {
    match r {
        Route::SelfService => pb::Route::SelfService,
        Route::BotDraft => pb::Route::BotDraft,
        Route::HumanAgent => pb::Route::HumanAgent,
        Route::Expert => pb::Route::Expert,
    }
}

#[tonic::async_trait]
impl pb::assist_server::Assist for AssistService {
    async fn classify(
        &self,
        req: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let subject = if r.subject_ref.is_empty() {
            None
        } else {
            Some(parse_ref("subject_ref", &r.subject_ref)?)
        };
        let demand = (r.min_confidence != 0.0).then_some(r.min_confidence);
        let opts = ClassifyOptions {
            k: k_or_default(r.k),
            threshold: Threshold::default().raised_to(demand).map_err(status)?,
        };
        let c = self
            .0
            .run(move |n| {
                n.classify(&actor, &r.text, subject.as_ref(), opts)
                    .map_err(status)
            })
            .await?;
        Ok(Response::new(pb::ClassifyResponse {
            intents: c
                .intents
                .into_iter()
                .map(|s| pb::IntentScore {
                    label: s.label,
                    probability: s.probability,
                })
                .collect(),
            model_sha256: c.model_sha256,
            line: c.line.as_str().to_owned(),
            assistance_level: c.asker.level.as_str().to_owned(),
            route: pb_route(c.route).into(),
            reason: c.reason,
            threshold: c.threshold.value(),
            policy_version: c.policy_version,
        }))
    }

    async fn predict_needs(
        &self,
        req: Request<pb::PredictNeedsRequest>,
    ) -> Result<Response<pb::PredictNeedsResponse>, Status> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let subject = parse_ref("subject_ref", &r.subject_ref)?;
        let k = if r.k == 0 {
            DEFAULT_NEEDS_K
        } else {
            usize::try_from(r.k).unwrap_or(usize::MAX)
        };
        let answer = self
            .0
            .run(move |n| n.predict_needs(&actor, &subject, k).map_err(status))
            .await?;
        Ok(Response::new(pb::PredictNeedsResponse {
            needs: answer
                .needs
                .into_iter()
                .map(|n| pb::PredictedNeed {
                    need: n.need,
                    probability: n.probability,
                    drivers: n
                        .drivers
                        .into_iter()
                        .map(|d| pb::NeedDriver {
                            feature: d.feature,
                            contribution: d.contribution,
                        })
                        .collect(),
                })
                .collect(),
            model_sha256: answer.model_sha256,
        }))
    }
}
