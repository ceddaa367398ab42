//! The one access path: every operation on personal data goes through [`Node`], which asks the
//! policy (for reads), writes the audit entry *before* the data it describes, then acts.
//!
//! [`crate::Archive`] below it does the storage and cryptography; it cannot be reached from
//! outside this crate except through `Node`, so no caller can read a record without naming a
//! purpose, passing the subject's consent and the policy, and being logged.

use crate::archive::{
    Appended, Archive, EraseReport, MergeReport, NewRecord, RotateReport, TimeRange,
};
use crate::register::RequestKind;
use crate::{Collection, NodeError, Result};
pub use amble_audit::Actor;
use amble_audit::{Action, AuditLog, Clock, Decision as Logged, Entry, EntryDraft, Origin};
use amble_consent::{
    AssistanceLevel, ConsentHistory, Controller, Method, ReceiptIssuer, Recorded, SignedReceipt,
    Terms,
};
use amble_crypto::{ExternalRef, SigningKey, SubjectId};
use amble_policy::{Decision, DenyReason, Policy, Projection, Role, decide};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// The built-in policy a new data directory starts with (`deploy/policy.example.toml`).
pub const EXAMPLE_POLICY: &str = include_str!("../../deploy/policy.example.toml");
const POLICY_FILE: &str = "policy.toml";
const EXPORT_DOMAIN: &[u8] = b"amble/export/v1\n";

/// A record field's name as schemas write them: 1 to 64 of `a-z`, `0-9`, `_`, starting with a
/// letter.
fn is_field_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// How a consent change by `actor` was made, for the consent history: a certified caller by
/// its role (the app, the web portal, an agent, or another system through the API); a local
/// actor is the operator at the command line, or the node's own job.
fn consent_method(actor: &Actor) -> Method {
    match (&actor.origin, actor.role) {
        (_, Role::App) => Method::App,
        (_, Role::SubjectPortal) => Method::Web,
        (_, Role::Agent) => Method::Agent,
        (Origin::Local, Role::Admin) => Method::Cli,
        _ => Method::Api,
    }
}

/// Reads and checks the policy file, with the SHA-256 of its text.
fn load_policy(path: &Path) -> Result<(Policy, [u8; 32])> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let policy = Policy::from_toml_str(&text, &path.display().to_string())?;
    Ok((policy, amble_crypto::sha256(text.as_bytes())))
}

/// The result of a read: the projection a purpose may see, or why not.
#[derive(Debug)]
pub enum ReadOutcome {
    /// The policy and the subject's consent allow it: only the fields the purpose may see,
    /// transformed as the policy says.
    Allowed(Projection),
    /// Refused, and logged as refused; the reason names the rule that refused it.
    Denied(DenyReason),
}

/// A change to one consent.
#[derive(Debug, Clone, Copy)]
pub enum ConsentChange {
    /// The subject gives consent to the purpose.
    Give {
        /// When the consent lapses by itself; `None`: until withdrawn.
        valid_until: Option<OffsetDateTime>,
        /// Explicit consent (a separate, specific act: GDPR Art. 9(2)(a) for special
        /// categories such as health), not just an affirmative one.
        explicit: bool,
    },
    /// The subject withdraws consent; it holds from the very next read.
    Withdraw,
}

/// A request for a person to review an automated decision ([`Node::request_review`]).
#[derive(Debug, Clone, Serialize)]
pub struct ReviewRequested {
    /// The seq of the request's own audit entry.
    pub request: u64,
    /// When the decision was made.
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// What was logged when the decision was made: the route and why (line, AI-assistance
    /// level, model).
    pub explanation: String,
}

/// What a retention sweep removed, per collection (counts, never contents).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// Records removed, by collection name.
    pub removed: BTreeMap<String, u64>,
}

/// A subject's export signed by the node: the document and an Ed25519 signature over its
/// canonical JSON (domain `amble/export/v1`).
#[derive(Debug, Clone, Serialize)]
pub struct SignedExport {
    /// The export: every record, consent history and access-log entry about the subject.
    pub document: serde_json::Value,
    /// The node's signature over `document`.
    pub signature: ExportSignature,
}

/// How an export is signed, so the subject (or anyone they hand it to) can check it.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSignature {
    /// The JOSE name of the algorithm: `EdDSA` (Ed25519).
    pub alg: &'static str,
    /// The node's Ed25519 public key, standard base64.
    pub public_key: String,
    /// The signature over `amble/export/v1\n` and the document's canonical JSON, standard
    /// base64.
    pub value: String,
}

/// A node: its archive, its policy, its audit log and its signing key.
pub struct Node {
    pub(crate) archive: Archive,
    pub(crate) audit: AuditLog,
    policy: RwLock<Arc<Policy>>,
    /// SHA-256 of the policy file's text in force: a reload with changed grants must carry a
    /// higher `version`.
    policy_digest: std::sync::Mutex<[u8; 32]>,
    policy_path: PathBuf,
    signer: SigningKey,
    origin: String,
    /// Held by consent changes and by a training run from reading consent until its audit
    /// entries are written: a withdrawal lands either wholly before a run (the person is
    /// left out) or wholly after it (the run's entries precede the withdrawal in the log).
    pub(crate) consent_gate: std::sync::Mutex<()>,
    /// Sentence embeddings of training texts, kept between federated rounds so each text is
    /// encoded once. Memory only; holds only the texts the latest round read, and is emptied
    /// (voiding any round in flight) when anyone's consent is withdrawn or anyone is erased.
    pub(crate) embeddings: amble_learn::model::EmbeddingCache,
    /// What "now" is for consent, policy decisions and time stamps (tests move a
    /// [`amble_audit::ManualClock`]).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("archive", &self.archive)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Node {
    /// Creates a data directory with a key file, an empty archive and log, and the example
    /// policy as `DATA_DIR/policy.toml`.
    pub fn init(data_dir: &Path, key_file: Option<&Path>) -> Result<Self> {
        let archive = Archive::init(data_dir, key_file)?;
        let path = data_dir.join(POLICY_FILE);
        if !path.exists() {
            std::fs::write(&path, EXAMPLE_POLICY).map_err(|source| NodeError::Io {
                path: path.clone(),
                source,
            })?;
        }
        // Keep the database open: reopening it at once can race the engine's file lock.
        Self::with_archive(archive, path)
    }

    /// Opens a data directory with its key file and a policy (default `DATA_DIR/policy.toml`).
    pub fn open(data_dir: &Path, key_file: Option<&Path>, policy: Option<&Path>) -> Result<Self> {
        let archive = Archive::open(data_dir, key_file)?;
        let policy_path = policy.map_or_else(|| data_dir.join(POLICY_FILE), Path::to_owned);
        Self::with_archive(archive, policy_path)
    }

    fn with_archive(archive: Archive, policy_path: PathBuf) -> Result<Self> {
        let (policy, digest) = load_policy(&policy_path)?;
        let audit = archive.store().audit_log()?;
        let signer = archive.keyring().signing_key()?;
        let origin = format!(
            "amble.node/{}",
            &hex::encode(amble_crypto::sha256(signer.verifying_key().as_bytes()))[..16]
        );
        Ok(Node {
            archive,
            audit,
            policy: RwLock::new(Arc::new(policy)),
            policy_digest: std::sync::Mutex::new(digest),
            policy_path,
            signer,
            origin,
            consent_gate: std::sync::Mutex::new(()),
            embeddings: amble_learn::model::EmbeddingCache::new(),
            clock: amble_audit::clock::system(),
        })
    }

    /// Who receipts and exports name as responsible: the policy's `[controller]`, or, without
    /// one, a placeholder that says so (`amble policy check` warns about it).
    pub fn controller(&self) -> Controller {
        self.policy()
            .controller()
            .cloned()
            .unwrap_or_else(|| Controller {
                pii_controller:
                    "the organisation operating this amble node (not named in its policy)".into(),
                contact: "its data protection officer".into(),
                address: "see the organisation's privacy notice".into(),
                email: "privacy@invalid".into(),
                phone: "n/a".into(),
                pii_controller_url: None,
            })
    }

    /// The node, reading time from `clock` (consent expiry, policy decisions, time stamps,
    /// and the time of every audit entry).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.archive.set_clock(Arc::clone(&clock));
        self.audit = self.audit.with_clock(Arc::clone(&clock));
        self.clock = clock;
        self
    }

    /// The node's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// Now, by the node's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the policy file again; an invalid file is rejected whole and the old policy stays.
    ///
    /// A policy whose text changed must declare a higher `version` than the one in force, so
    /// that every decision can be traced to one version; the same text reloads as a no-op.
    pub fn reload_policy(&self, actor: &Actor) -> Result<u64> {
        let (new, digest) = load_policy(&self.policy_path)?;
        let version = new.version();
        let mut in_force = match self.policy_digest.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *in_force == digest {
            return Ok(version);
        }
        let current = self.policy().version();
        if version <= current {
            return Err(NodeError::PolicyNotNewer { version, current });
        }
        *in_force = digest;
        self.audit.append_durable(
            actor
                .draft(Action::PolicyReload)
                .count("policy_version", version),
        )?;
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        Ok(version)
    }

    /// The node's audit log (read-only uses: size, proofs, checkpoints, export).
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The key that signs the node's checkpoints, consent receipts, exports and backups.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signer
    }

    /// The checkpoint origin line of this node's audit log.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The pseudonym `r` maps to under this node's pepper (whether or not it is stored).
    pub fn pseudonym(&self, r: &ExternalRef) -> SubjectId {
        self.archive.pseudonym(r)
    }

    /// The subject `r` is linked to; an error if the node knows no such reference.
    pub fn subject_of(&self, r: &ExternalRef) -> Result<SubjectId> {
        self.archive.subject_of(r)
    }

    /// Every subject's pseudonym (never an external reference).
    pub fn subjects(&self) -> Result<Vec<SubjectId>> {
        self.archive.subjects()
    }

    /// How many subjects the archive holds.
    pub fn subject_count(&self) -> usize {
        self.archive.subject_count()
    }

    /// How many records subject `s` has, in collection `c` or in all (a count, no contents).
    pub fn count(&self, s: &SubjectId, c: Option<Collection>) -> usize {
        self.archive.count(s, c)
    }

    /// When subject `s` was erased, if it was (the tombstone that keeps a backup from
    /// bringing them back).
    pub fn erased_at(&self, s: &SubjectId) -> Result<Option<OffsetDateTime>> {
        self.archive.erased_at(s)
    }

    /// The master-key versions the keyring holds, oldest first.
    pub fn key_versions(&self) -> Vec<u32> {
        self.archive.keyring().versions()
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        self.archive.data_dir()
    }

    /// The subject a reference belongs to now, or the one it will create.
    fn subject_for_append(&self, ref_p: SubjectId) -> Result<SubjectId> {
        Ok(self.archive.subject_of_pseudonym(&ref_p)?.unwrap_or(ref_p))
    }

    /// Appends one record, durable on return; logged first.
    pub fn append(&self, actor: &Actor, r: &ExternalRef, rec: &NewRecord) -> Result<Appended> {
        let mut out = self.append_batch(actor, std::slice::from_ref(&(r.clone(), rec.clone())))?;
        out.pop()
            .ok_or_else(|| NodeError::Corrupt("append returned nothing".into()))
    }

    /// Appends records with one audit entry per subject in the batch, written before the data.
    pub fn append_batch(
        &self,
        actor: &Actor,
        items: &[(ExternalRef, NewRecord)],
    ) -> Result<Vec<Appended>> {
        // Checked whole before anything is written.
        let now = self.now();
        for (_, rec) in items {
            crate::archive::check_record_time(rec.time, now)?;
            crate::archive::check_record_numbers(&rec.data)?;
        }
        let mut per_subject: BTreeMap<SubjectId, (u64, std::collections::BTreeSet<Collection>)> =
            BTreeMap::new();
        // One lookup per distinct reference, not per record.
        let mut subject_of_ref: std::collections::HashMap<SubjectId, SubjectId> =
            std::collections::HashMap::new();
        for (r, rec) in items {
            let ref_p = self.archive.pseudonym(r);
            let subject = match subject_of_ref.get(&ref_p) {
                Some(s) => *s,
                None => {
                    let s = self.subject_for_append(ref_p)?;
                    subject_of_ref.insert(ref_p, s);
                    s
                }
            };
            let e = per_subject.entry(subject).or_default();
            e.0 += 1;
            e.1.insert(rec.collection);
        }
        let drafts: Vec<EntryDraft> = per_subject
            .into_iter()
            .map(|(s, (n, cols))| {
                let mut d = actor.draft(Action::Append).subject(s).count("records", n);
                d.collections = cols.iter().map(|c| c.as_str().to_owned()).collect();
                d
            })
            .collect();
        // Entries are written before the records; the archive's single flush then makes both
        // durable (an engine recovers a prefix of its writes, so no record outlives its entry).
        self.audit.append_many_unflushed(drafts)?;
        self.archive.append_batch(items)
    }

    /// Reads a subject's archive for `purpose`: the policy decides, the decision is logged
    /// (allowed or denied) before any data is decrypted, and only granted fields come back.
    pub fn read(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        purpose: &str,
        range: TimeRange,
    ) -> Result<ReadOutcome> {
        let subject = match self.archive.resolve(r)? {
            Some(s) => s,
            None => {
                self.audit.append_durable(
                    actor
                        .draft(Action::Read)
                        .purpose(purpose)
                        .decision(Logged::Deny)
                        .reason("unknown reference"),
                )?;
                return Err(NodeError::UnknownRef);
            }
        };
        self.read_subject(actor, &subject, purpose, range)
    }

    pub(crate) fn read_subject(
        &self,
        actor: &Actor,
        subject: &SubjectId,
        purpose: &str,
        range: TimeRange,
    ) -> Result<ReadOutcome> {
        let history = self.archive.load_consent(subject)?;
        let policy = self.policy();
        let now = self.now();
        let mut draft = actor.draft(Action::Read).subject(*subject).purpose(purpose);
        draft.policy_version = Some(policy.version());
        match decide(&policy, &actor.id, actor.role, purpose, &history, now) {
            Decision::Deny(reason) => {
                self.audit.append_durable(
                    draft
                        .decision(Logged::Deny)
                        .reason(format!("{}: {reason}", reason.code())),
                )?;
                Ok(ReadOutcome::Denied(reason))
            }
            Decision::Allow(grant) => {
                for (c, fields) in grant.granted_fields() {
                    draft.collections.push(c.as_str().to_owned());
                    draft
                        .fields
                        .extend(fields.into_iter().map(|f| format!("{c}.{f}")));
                }
                self.audit.append_durable(draft.decision(Logged::Allow))?;
                let dek = self.archive.data_key(subject)?;
                let mut records = Vec::new();
                for c in grant.collections() {
                    records.extend(self.archive.read_records_with(&dek, subject, c, range)?);
                }
                Ok(ReadOutcome::Allowed(grant.projection(
                    *subject,
                    records.iter().map(|r| (r.collection, r.time, &r.data)),
                )))
            }
        }
    }

    /// The subject's consent history (for showing it to the subject or an operator); logged.
    pub fn consent_history(&self, actor: &Actor, r: &ExternalRef) -> Result<ConsentHistory> {
        let subject = self.archive.subject_of(r)?;
        self.audit.append_durable(
            actor
                .draft(Action::Read)
                .subject(subject)
                .reason("consent history"),
        )?;
        self.archive.load_consent(&subject)
    }

    pub(crate) fn consent_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.consent_gate.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn issuer(&self) -> ReceiptIssuer<'_> {
        let policy = self.policy();
        ReceiptIssuer::new(
            &self.signer,
            self.controller(),
            policy.jurisdiction().unwrap_or("EU"),
            policy.privacy_notice().unwrap_or("https://invalid/privacy"),
            "amble",
        )
        .with_language(policy.language().as_str())
    }

    /// Who records a change in a consent history, how and when, under `policy`.
    fn recorded(&self, actor: &Actor, policy: &Policy) -> Recorded {
        Recorded {
            at: self.now(),
            method: consent_method(actor),
            actor: actor.id.clone(),
            policy_version: policy.version(),
        }
    }

    /// Gives or withdraws consent for `purpose`; returns the signed receipt. Takes effect for
    /// the very next read.
    pub fn change_consent(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        purpose: &str,
        change: ConsentChange,
    ) -> Result<SignedReceipt> {
        let _gate = self.consent_gate();
        let policy = self.policy();
        let info = policy
            .purpose_info(purpose)
            .ok_or_else(|| NodeError::UnknownPurpose(purpose.to_owned()))?;
        let subject = self.archive.ensure_subject(r)?;
        let mut history = self.archive.load_consent(&subject)?;
        let rec = self.recorded(actor, &policy);
        let issuer = self.issuer();
        let (receipt, what) = match change {
            ConsentChange::Give {
                valid_until,
                explicit,
            } => (
                history.give(
                    &issuer,
                    &subject,
                    &info,
                    Terms {
                        valid_until,
                        explicit,
                    },
                    rec,
                )?,
                "given",
            ),
            ConsentChange::Withdraw => (
                {
                    // Under the consent gate: a round that read this person before now cannot
                    // store their embeddings afterwards (its ticket is void).
                    self.embeddings.clear();
                    history.withdraw(&issuer, &subject, &info, rec)?
                },
                "withdrawn",
            ),
        };
        let mut d = actor
            .draft(Action::ConsentChange)
            .subject(subject)
            .purpose(purpose)
            .reason(what);
        d.policy_version = Some(policy.version());
        self.audit.append(d)?;
        self.archive.save_consent(&subject, &history)?;
        self.archive.flush()?;
        Ok(receipt)
    }

    /// Restricts processing of the subject's archive (GDPR Art. 18), or lifts the restriction;
    /// returns the signed receipt. While restricted, every read for a purpose that does not
    /// fulfil a legal obligation is refused by the policy decision, training included.
    pub fn set_restriction(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        active: bool,
    ) -> Result<SignedReceipt> {
        self.record_right(actor, r, None, active)
    }

    /// Records the subject's objection to a legitimate-interest `purpose` (GDPR Art. 21), or
    /// withdraws it; returns the signed receipt. Refused for purposes on any other basis.
    pub fn set_objection(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        purpose: &str,
        active: bool,
    ) -> Result<SignedReceipt> {
        self.record_right(actor, r, Some(purpose), active)
    }

    fn record_right(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        purpose: Option<&str>,
        active: bool,
    ) -> Result<SignedReceipt> {
        let _gate = self.consent_gate();
        let policy = self.policy();
        let info = match purpose {
            None => None,
            Some(id) => {
                let p = policy
                    .purpose(id)
                    .ok_or_else(|| NodeError::UnknownPurpose(id.to_owned()))?;
                if p.legal_basis != amble_policy::LegalBasis::LegitimateInterest {
                    return Err(NodeError::NotObjectable {
                        purpose: id.to_owned(),
                        basis: p.legal_basis.to_string(),
                        hint: if p.legal_basis == amble_policy::LegalBasis::Consent {
                            "; withdraw the consent instead"
                        } else {
                            ""
                        },
                    });
                }
                Some(
                    policy
                        .purpose_info(id)
                        .ok_or_else(|| NodeError::UnknownPurpose(id.to_owned()))?,
                )
            }
        };
        let subject = self.archive.ensure_subject(r)?;
        let mut history = self.archive.load_consent(&subject)?;
        let rec = self.recorded(actor, &policy);
        let issuer = self.issuer();
        let receipt = match &info {
            None => history.set_restriction(&issuer, &subject, active, rec)?,
            Some(info) => history.set_objection(&issuer, &subject, info, active, rec)?,
        };
        if active {
            // Under the consent gate, as for a withdrawal: a round that read this person before
            // now cannot store their embeddings afterwards.
            self.embeddings.clear();
        }
        let right = if info.is_some() {
            "objection"
        } else {
            "restriction"
        };
        let mut d = actor
            .draft(Action::ConsentChange)
            .subject(subject)
            .reason(format!("{right}={}", if active { "on" } else { "off" }));
        d.purpose = purpose.map(str::to_owned);
        d.policy_version = Some(policy.version());
        let seq = self.audit.append(d)?;
        self.archive.save_consent(&subject, &history)?;
        let kind = if info.is_some() {
            RequestKind::Objection
        } else {
            RequestKind::Restriction
        };
        self.file_request(actor, seq, &subject, kind, false)?;
        Ok(receipt)
    }

    /// Sets the subject's AI-assistance level; returns the signed receipt.
    pub fn set_ai_assistance(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        level: AssistanceLevel,
    ) -> Result<SignedReceipt> {
        let subject = self.archive.ensure_subject(r)?;
        let mut history = self.archive.load_consent(&subject)?;
        let policy = self.policy();
        let rec = self.recorded(actor, &policy);
        let receipt = history.set_ai_assistance(&self.issuer(), &subject, level, rec)?;
        self.audit.append(
            actor
                .draft(Action::ConsentChange)
                .subject(subject)
                .reason(format!("ai_assistance={}", level.as_str())),
        )?;
        self.archive.save_consent(&subject, &history)?;
        self.archive.flush()?;
        Ok(receipt)
    }

    /// Everything about one subject — records, consent history (ISO/IEC TS 27560 shape) and
    /// every audit entry that touched them — signed by the node (GDPR Art. 15/20).
    pub fn export(&self, actor: &Actor, r: &ExternalRef) -> Result<SignedExport> {
        let subject = self.archive.subject_of(r)?;
        let seq = self
            .audit
            .append_durable(actor.draft(Action::Export).subject(subject))?;
        self.file_request(actor, seq, &subject, RequestKind::Access, false)?;
        let records = self.archive.export_subject(&subject)?;
        let history = self.archive.load_consent(&subject)?;
        let access_log: Vec<Entry> = self.audit.entries_for_subject(&subject)?;
        let document = serde_json::json!({
            "schema": crate::archive::EXPORT_SCHEMA,
            "archive": records,
            "consent": amble_consent::to_ts27560_at(&history, &subject, &self.controller(), self.now()),
            "access_log": access_log,
        });
        let bytes = amble_consent::canonical_json(&document);
        let mut msg = EXPORT_DOMAIN.to_vec();
        msg.extend_from_slice(&bytes);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SignedExport {
            document,
            signature: ExportSignature {
                alg: "EdDSA",
                public_key: self.signer.verifying_key().to_base64(),
                value: b64.encode(self.signer.sign(&msg)),
            },
        })
    }

    /// How many training texts' embeddings the node holds in memory (a count, for tests and
    /// monitoring; see [`Node::embeddings`]).
    pub fn cached_embeddings(&self) -> usize {
        self.embeddings.len()
    }

    /// Erases a subject (crypto-shredding; see `docs/ARCHITECTURE.md` on rotating afterwards).
    pub fn erase(&self, actor: &Actor, r: &ExternalRef) -> Result<EraseReport> {
        let subject = self.archive.subject_of(r)?;
        let n = self.archive.count(&subject, None) as u64;
        let seq = self.audit.append_durable(
            actor
                .draft(Action::Erase)
                .subject(subject)
                .count("records", n),
        )?;
        // Filed before the records go: the register keeps the pseudonym only, as the proof
        // that the request was honoured.
        self.file_request(actor, seq, &subject, RequestKind::Erasure, false)?;
        let erased = self.archive.erase_subject(&subject);
        // After the records are gone (whether or not all of them went): a round that read the
        // person before now cannot store their embeddings, and no later round can read them.
        self.embeddings.clear();
        erased
    }

    /// Records that the subject asks a person to review an automated decision about them (GDPR
    /// Art. 22(3), PIPL Art. 24): `decision` is the seq of the routing's audit entry, which
    /// must be an `assist` entry about this subject. Returns the explanation logged when the
    /// decision was made (route, automation line, AI-assistance level, model), and the seq of
    /// the request's own entry, which the organisation's review queue follows.
    pub fn request_review(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        decision: u64,
    ) -> Result<ReviewRequested> {
        let subject = self.archive.subject_of(r)?;
        let entry = match self.audit.entry(decision) {
            Ok(e) => e,
            Err(amble_audit::AuditError::NoSuchEntry(_)) => {
                return Err(NodeError::NotADecision(decision));
            }
            Err(e) => return Err(e.into()),
        };
        if entry.action != Action::Assist || entry.subject != Some(subject) {
            return Err(NodeError::NotADecision(decision));
        }
        let seq = self.audit.append_durable(
            actor
                .draft(Action::ReviewRequest)
                .subject(subject)
                .reason(format!("decision {decision}")),
        )?;
        self.file_request(actor, seq, &subject, RequestKind::Review, true)?;
        Ok(ReviewRequested {
            request: seq,
            decided_at: entry.time,
            explanation: entry.reason.unwrap_or_default(),
        })
    }

    /// Corrects fields of one of the subject's records at their request (GDPR Art. 16, PIPL
    /// Art. 46), logged first with the names of the corrected fields (never their values). Each
    /// field in `fields` replaces the one of that name; reads and exports show only the
    /// corrected record from then on.
    pub fn rectify(
        &self,
        actor: &Actor,
        r: &ExternalRef,
        record_id: u64,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Collection> {
        if fields.is_empty() {
            return Err(NodeError::NothingToRectify);
        }
        // The names go to the audit log in clear: only schema-like names, never free text
        // that could carry a personal datum.
        if let Some(bad) = fields.keys().find(|k| !is_field_name(k)) {
            return Err(NodeError::BadFieldName(bad.chars().take(64).collect()));
        }
        let subject = self.archive.subject_of(r)?;
        let mut d = actor
            .draft(Action::Rectify)
            .subject(subject)
            .reason(format!("record {record_id}"));
        d.fields = fields.keys().cloned().collect();
        let seq = self.audit.append_durable(d)?;
        let collection = self.archive.rectify(&subject, record_id, fields)?;
        self.file_request(actor, seq, &subject, RequestKind::Rectification, false)?;
        // A round that read the old value must not keep its embedding.
        self.embeddings.clear();
        Ok(collection)
    }

    /// Rotates the node master key, logged first: a new KEK version, every data key rewrapped
    /// under it, the old versions retired; records are never re-encrypted. Erasure calls it
    /// so that no old key version can unwrap an erased subject's key from a stale copy.
    pub fn rotate_key(&mut self, actor: &Actor) -> Result<RotateReport> {
        self.audit.append_durable(actor.draft(Action::RotateKey))?;
        self.archive.rotate_key()
    }

    /// Links the reference `new` to the subject `existing` belongs to (one person known by
    /// several ids: phone, email, CRM number), logged first.
    pub fn link(
        &self,
        actor: &Actor,
        existing: &ExternalRef,
        new: &ExternalRef,
    ) -> Result<SubjectId> {
        let subject = self.archive.subject_of(existing)?;
        self.audit
            .append_durable(actor.draft(Action::Link).subject(subject))?;
        self.archive.link(existing, new)
    }

    /// Removes reference `r` from its subject, logged first; the last reference cannot be
    /// removed (erase the subject instead).
    pub fn unlink(&self, actor: &Actor, r: &ExternalRef) -> Result<SubjectId> {
        let subject = self.archive.subject_of(r)?;
        self.audit
            .append_durable(actor.draft(Action::Unlink).subject(subject))?;
        self.archive.unlink(r)
    }

    /// Merges the subject of `absorb` into the subject of `keep`, logged first: records are
    /// re-sealed under the kept subject's key, references follow, the absorbed key is
    /// destroyed.
    pub fn merge(
        &self,
        actor: &Actor,
        keep: &ExternalRef,
        absorb: &ExternalRef,
    ) -> Result<MergeReport> {
        let kept = self.archive.subject_of(keep)?;
        let gone = self.archive.subject_of(absorb)?;
        self.audit.append_durable(
            actor
                .draft(Action::Merge)
                .subject(kept)
                .reason(format!("absorbed subject {gone}")),
        )?;
        self.archive.merge(keep, absorb)
    }

    /// Deletes every record older than its collection's retention at `now`; logs the counts.
    pub fn sweep_retention(&self, actor: &Actor, now: OffsetDateTime) -> Result<SweepReport> {
        let policy = self.policy();
        let expired = self.archive.expired_records(|c| policy.retention(c), now)?;
        let mut report = SweepReport::default();
        for k in &expired {
            *report
                .removed
                .entry(k.collection.as_str().to_owned())
                .or_default() += 1;
        }
        let mut d = actor.draft(Action::RetentionSweep);
        d.counts = report.removed.clone();
        d.policy_version = Some(policy.version());
        self.audit.append_durable(d)?;
        self.archive.remove_records(&expired)?;
        Ok(report)
    }

    /// Applies the log's retention: drops the bodies of entries older than `before` (their
    /// hashes stay, so the tree, proofs and exports remain verifiable). Logged itself.
    pub fn prune_audit_before(&self, actor: &Actor, before: OffsetDateTime) -> Result<u64> {
        let first_young = self
            .audit
            .entries(self.audit.first_kept()?..)?
            .into_iter()
            .find(|e| e.time >= before)
            .map_or_else(|| self.audit.size(), |e| e.seq);
        let removed = self.audit.prune_before(first_young)?;
        self.audit.append_durable(
            actor
                .draft(Action::Other("audit_prune".into()))
                .count("entries_pruned", removed)
                .count("first_kept", first_young),
        )?;
        Ok(removed)
    }

    /// Logs a call the caller's role may not make (refused before it touched anything).
    pub fn log_denied_call(&self, actor: &Actor, reason: &str) -> Result<u64> {
        Ok(self.audit.append_durable(
            actor
                .draft(Action::DeniedCall)
                .decision(Logged::Deny)
                .reason(reason.to_owned()),
        )?)
    }

    /// Logs a call refused because the caller's certificate names no usable identity;
    /// `certificate` is its fingerprint (`cert:HEX16`), and the role is `unidentified`.
    pub fn log_unidentified_call(&self, certificate: &str, reason: &str) -> Result<u64> {
        let mut rid = [0u8; 8];
        let _ = amble_crypto::random_bytes(&mut rid);
        Ok(self.audit.append_durable(
            EntryDraft::new(
                certificate,
                "unidentified",
                Action::DeniedCall,
                hex::encode(rid),
            )
            .decision(Logged::Deny)
            .reason(reason.to_owned()),
        )?)
    }

    /// Logs that `actor` issued a one-time self-service link for the subject of `r` (which
    /// must be known).
    pub fn record_portal_link(&self, actor: &Actor, r: &ExternalRef) -> Result<u64> {
        let subject = self.archive.subject_of(r)?;
        Ok(self
            .audit
            .append_durable(actor.draft(Action::PortalLink).subject(subject))?)
    }

    /// Every audit entry about the subject of `r` ("who looked at my data"); the lookup is
    /// itself logged, so it appears at the end of what it returns.
    pub fn access_log(&self, actor: &Actor, r: &ExternalRef) -> Result<Vec<Entry>> {
        let subject = self.archive.subject_of(r)?;
        self.audit.append_durable(
            actor
                .draft(Action::Read)
                .subject(subject)
                .reason("access log"),
        )?;
        Ok(self.audit.entries_for_subject(&subject)?)
    }

    /// A signed checkpoint of this node's audit log (C2SP signed note).
    pub fn checkpoint(&self) -> Result<String> {
        Ok(self.audit.checkpoint(&self.signer, &self.origin)?)
    }

    /// Makes everything written so far durable (archive and audit log share one database).
    pub fn flush(&self) -> Result<()> {
        self.archive.flush()
    }
}
