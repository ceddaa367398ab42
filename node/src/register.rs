//! The register of the requests people make under data-protection law (GDPR Art. 12(3), PIPL
//! Art. 50): every access, rectification, erasure, restriction, objection and review request,
//! by whom (the subject's pseudonym, never a name or reference), when it was received, how the
//! person's identity was vouched for, its legal deadline, when it was answered and how.
//!
//! A request is filed by the same call that carries it out, right after that call's audit entry;
//! the entry's seq is the request's number, so the register and the tamper-evident log name the
//! same request alike. Requests the node carries out at once are filed answered (`done`); a
//! request only a person can answer (a human review of an automated decision) stays open until
//! the privacy officer answers it ([`Node::answer_request`]), which is audited as well. Reading
//! the register is audited too: it says who asked what, even by pseudonym.
//!
//! The deadline is one calendar month from receipt (GDPR Art. 12(3); PIPL Art. 50 asks for a
//! timely answer and sets no number): a request received on 31 January is due on 28 or 29
//! February. A request still open after its deadline is *overdue*; one answered after it was
//! answered *late*.

use crate::{Actor, Node, NodeError, Result};
use amble_audit::Action;
use amble_crypto::SubjectId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A copy of everything held (GDPR Art. 15 and 20, PIPL Art. 45).
    Access,
    /// A correction (GDPR Art. 16, PIPL Art. 46).
    Rectification,
    /// Erasure (GDPR Art. 17, PIPL Art. 47).
    Erasure,
    /// Restriction of processing, or its lifting (GDPR Art. 18, PIPL Art. 44).
    Restriction,
    /// An objection to a legitimate-interest purpose, or its withdrawal (GDPR Art. 21).
    Objection,
    /// A human review of a decision made by automated means (GDPR Art. 22(3), PIPL Art. 24).
    Review,
}

impl RequestKind {
    /// The name in the register and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Access => "access",
            RequestKind::Rectification => "rectification",
            RequestKind::Erasure => "erasure",
            RequestKind::Restriction => "restriction",
            RequestKind::Objection => "objection",
            RequestKind::Review => "review",
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out as asked.
    Done,
    /// Refused (the organisation tells the person why, and that they may complain).
    Refused,
    /// Reviewed by a person, who kept the automated decision.
    Upheld,
    /// Reviewed by a person, who changed the automated decision.
    Changed,
}

impl Outcome {
    /// Every outcome, for messages.
    pub const ALL: [Outcome; 4] = [
        Outcome::Done,
        Outcome::Refused,
        Outcome::Upheld,
        Outcome::Changed,
    ];

    /// The name in the register and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Refused => "refused",
            Outcome::Upheld => "upheld",
            Outcome::Changed => "changed",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = NodeError;
    fn from_str(s: &str) -> Result<Self> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| NodeError::BadOutcome(s.chars().take(32).collect()))
    }
}

/// One request in the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The seq of the audit entry that recorded the request.
    pub id: u64,
    /// The subject's pseudonym (hex), never a reference or a name.
    pub subject: String,
    /// What was asked for.
    pub kind: RequestKind,
    /// When the node received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
    /// Who vouched for the person's identity: the channel's role and id (`subject-portal` with
    /// the link's issuer, an app's certificate, an operator at the console).
    pub verified_by: String,
    /// When the law wants it answered by.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// When it was answered; `None` while open.
    #[serde(with = "time::serde::rfc3339::option")]
    pub answered: Option<OffsetDateTime>,
    /// How it was answered; `None` while open.
    pub outcome: Option<Outcome>,
    /// Who answered it (role and id).
    pub answered_by: Option<String>,
}

impl Request {
    /// Still open after its deadline.
    pub fn overdue(&self, now: OffsetDateTime) -> bool {
        self.answered.is_none() && now > self.deadline
    }

    /// Answered, but after its deadline.
    pub fn late(&self) -> bool {
        self.answered.is_some_and(|a| a > self.deadline)
    }
}

/// One calendar month after `t` (the same day of the month, or the month's last day when it
/// has fewer days), at the same time of day.
pub fn one_month_after(t: OffsetDateTime) -> OffsetDateTime {
    let d = t.date();
    let (year, month) = match d.month() {
        time::Month::December => (d.year() + 1, time::Month::January),
        m => (d.year(), m.next()),
    };
    let day = d.day().min(month.length(year));
    time::Date::from_calendar_date(year, month, day)
        .map_or(t + time::Duration::days(31), |date| t.replace_date(date))
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Filter {
    /// Every request.
    #[default]
    All,
    /// Only those not answered yet.
    Open,
    /// Only those open after their deadline.
    Overdue,
}

fn who(actor: &Actor) -> String {
    format!("{}:{}", actor.role, actor.id)
}

impl Node {
    /// Files a request carried by the audit entry `seq`: answered at once (`done`) unless
    /// `open`. Called by the operation itself, after its entry.
    pub(crate) fn file_request(
        &self,
        actor: &Actor,
        seq: u64,
        subject: &SubjectId,
        kind: RequestKind,
        open: bool,
    ) -> Result<()> {
        let received = self.now();
        let request = Request {
            id: seq,
            subject: subject.to_hex(),
            kind,
            received,
            verified_by: who(actor),
            deadline: one_month_after(received),
            answered: (!open).then_some(received),
            outcome: (!open).then_some(Outcome::Done),
            answered_by: (!open).then(|| who(actor)),
        };
        self.put_request(&request)
    }

    fn put_request(&self, r: &Request) -> Result<()> {
        let bytes = serde_json::to_vec(r).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        self.archive.store().put_request(r.id, &bytes)?;
        self.archive.flush()
    }

    fn stored_requests(&self) -> Result<Vec<Request>> {
        self.archive
            .store()
            .requests()?
            .iter()
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| NodeError::Corrupt(format!("request register: {e}")))
            })
            .collect()
    }

    /// The register, oldest first, filtered; audited as a read of the register (how many
    /// requests were shown), which the privacy officer and the operator may make.
    pub fn requests(&self, actor: &Actor, filter: Filter) -> Result<Vec<Request>> {
        let now = self.now();
        let all = self.stored_requests()?;
        let shown: Vec<Request> = all
            .into_iter()
            .filter(|r| match filter {
                Filter::All => true,
                Filter::Open => r.answered.is_none(),
                Filter::Overdue => r.overdue(now),
            })
            .collect();
        self.audit.append_durable(
            actor
                .draft(Action::RegisterRead)
                .count("requests", shown.len() as u64),
        )?;
        Ok(shown)
    }

    /// Answers the open request `id`, logged first (with its subject and the outcome).
    pub fn answer_request(&self, actor: &Actor, id: u64, outcome: Outcome) -> Result<Request> {
        let mut r = self
            .stored_requests()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(NodeError::NoSuchRequest(id))?;
        if r.answered.is_some() {
            return Err(NodeError::AlreadyAnswered(id));
        }
        if r.kind != RequestKind::Review && matches!(outcome, Outcome::Upheld | Outcome::Changed) {
            return Err(NodeError::BadOutcome(format!(
                "{} (only a review is upheld or changed)",
                outcome.as_str()
            )));
        }
        let subject = SubjectId::from_hex(&r.subject)
            .ok_or_else(|| NodeError::Corrupt("request register: subject".into()))?;
        self.audit.append_durable(
            actor
                .draft(Action::RequestAnswer)
                .subject(subject)
                .reason(format!("request {id}: {}", outcome.as_str())),
        )?;
        r.answered = Some(self.now());
        r.outcome = Some(outcome);
        r.answered_by = Some(who(actor));
        self.put_request(&r)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_deadline_is_one_calendar_month_later_clamped_to_the_month_s_end() {
        for (received, due) in [
            (
                datetime!(2026-01-31 10:00 UTC),
                datetime!(2026-02-28 10:00 UTC),
            ),
            (
                datetime!(2028-01-31 10:00 UTC),
                datetime!(2028-02-29 10:00 UTC),
            ),
            (
                datetime!(2026-03-15 23:59 UTC),
                datetime!(2026-04-15 23:59 UTC),
            ),
            (
                datetime!(2026-12-05 08:00 UTC),
                datetime!(2027-01-05 08:00 UTC),
            ),
        ] {
            assert_eq!(one_month_after(received), due, "{received}");
        }
    }
}
