//! Assist: what a request is about and who should answer it (`Assist.Classify`).
//!
//! The node's intent model names the request's intent; the policy's automation line for that
//! intent, the model's confidence in it and the person's own AI-assistance choice (their
//! consent) decide the route. The text is used for this one answer only: it is never stored,
//! never written to the audit log and never put in a tracing line.
//!
//! # The routing rule
//!
//! `t` is the confidence threshold (default [`DEFAULT_THRESHOLD`]; a caller may raise it for
//! one request, never lower it). Confidence is the top intent's probability. The first row
//! that matches wins:
//!
//! | # | line of the top intent | AI-assistance level      | confidence | route         |
//! |---|------------------------|--------------------------|------------|---------------|
//! | 1 | red                    | any                      | ≥ t        | `Expert`      |
//! | 2 | red                    | any                      | < t        | `HumanAgent`  |
//! | 3 | green, yellow          | human only               | any        | `HumanAgent`  |
//! | 4 | green, yellow          | AI suggests, AI answers  | < t        | `HumanAgent`  |
//! | 5 | yellow                 | AI suggests, AI answers  | ≥ t        | `BotDraft`    |
//! | 6 | green                  | AI suggests              | ≥ t        | `BotDraft`    |
//! | 7 | green                  | AI answers               | ≥ t        | `SelfService` |
//!
//! So AI answers a person on its own only in row 7, where the policy, the person and the model
//! all agree. `BotDraft` means the AI drafts and a person confirms before anything is sent —
//! a route of its own rather than "bot, but see the reason", so an integration can branch on
//! it. Red rows ignore the level: a person answers either way, and a confident red intent goes
//! straight to the specialists for it (fraud, loss, bereavement …); an uncertain one goes to a
//! general agent who triages.
//!
//! **Without a subject** the level is *human only*, the consent default: an anonymous
//! request has made no choice, and silence is not consent to AI. The same holds for a reference
//! the node does not know. An operator who wants AI for anonymous visitors asks them and passes
//! a subject. Intents, line and reason are returned either way, so an agent's screen can still
//! show what the request is about.
//!
//! # Audit
//!
//! Every request naming a subject reads the subject's consent state, so it appends one
//! [`Action::Assist`] entry (written before the answer is returned) with the line, the level,
//! the route and the model's hash — not the text and not the intent, which would say what the
//! person asked about. A request without a subject reads nothing about anyone and is not
//! logged.
//!
//! # The model
//!
//! The intent model lives in the node's `models` tree, where local training and the federation
//! client both store it, so it is read at call time. Parsing a model (megabytes) per request
//! would be slow; a small cache keyed by the stored bytes themselves makes a repeat call cost
//! one read and one comparison, and a newly stored model is picked up by the next call.

use crate::{Actor, Node, NodeError};
use amble_audit::Action;
use amble_consent::AssistanceLevel;
use amble_crypto::ExternalRef;
use amble_learn::model::{IntentModel, IntentScore};
use amble_policy::Line;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// The confidence below which no AI acts on a request.
pub const DEFAULT_THRESHOLD: f32 = 0.6;
/// Intents returned when the caller does not say.
pub const DEFAULT_K: usize = 3;
/// Most intents one request may ask for.
pub const MAX_K: usize = 50;
/// Longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// What stops a request from being classified; each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssistError {
    /// The node has no intent model stored yet, so nothing can be classified.
    #[error("no intent model yet: train one (`amble train intent`) or join a federation")]
    NoIntentModel,
    /// The request's text is empty or only whitespace.
    #[error("text is empty; send what the person wrote or said")]
    EmptyText,
    /// The text is longer than [`MAX_TEXT_CHARS`]. Holds its length in characters.
    #[error("text has {0} characters; send at most {MAX_TEXT_CHARS}")]
    TextTooLong(usize),
    /// The number of intents asked for is outside `1..=MAX_K`. Holds the number asked for.
    #[error("k = {0}: ask for 1..={MAX_K} results (0 means {DEFAULT_K})")]
    BadK(usize),
    /// A confidence threshold that is not a finite number in (0, 1]. Holds the value given.
    #[error("confidence threshold {0} must be a number in (0, 1]")]
    BadThreshold(f32),
    /// Reading the model, the subject's consent or the policy failed, the model could not be
    /// used, or the audit entry could not be written.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl amble_net::ServiceError for AssistError {
    fn code(&self) -> tonic::Code {
        match self {
            AssistError::NoIntentModel => tonic::Code::FailedPrecondition,
            AssistError::EmptyText
            | AssistError::TextTooLong(_)
            | AssistError::BadK(_)
            | AssistError::BadThreshold(_) => tonic::Code::InvalidArgument,
            AssistError::Node(n) => n.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            AssistError::Node(n) => n.message(),
            _ => self.to_string(),
        }
    }
}

impl From<amble_learn::LearnError> for AssistError {
    fn from(e: amble_learn::LearnError) -> Self {
        AssistError::Node(NodeError::Learn(e))
    }
}

/// A confidence threshold in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct Threshold(f32);

impl Threshold {
    /// A threshold of `v`, or [`AssistError::BadThreshold`] unless `v` is finite and in (0, 1].
    pub fn new(v: f32) -> Result<Self, AssistError> {
        if v.is_finite() && v > 0.0 && v <= 1.0 {
            Ok(Threshold(v))
        } else {
            Err(AssistError::BadThreshold(v))
        }
    }

    /// The threshold as a probability in (0, 1].
    pub fn value(self) -> f32 {
        self.0
    }

    /// This threshold, raised to `demand` if that is stricter (a caller cannot lower it).
    pub fn raised_to(self, demand: Option<f32>) -> Result<Self, AssistError> {
        match demand {
            None => Ok(self),
            Some(d) => Ok(Threshold(Threshold::new(d)?.0.max(self.0))),
        }
    }

    /// Whether `confidence` clears the threshold (NaN never does).
    pub fn cleared_by(self, confidence: f32) -> bool {
        confidence >= self.0
    }
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold(DEFAULT_THRESHOLD)
    }
}

/// Who should answer a request. See the module doc for when each applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// AI answers the person directly.
    SelfService,
    /// AI drafts an answer; a person confirms it before anything is sent.
    BotDraft,
    /// A person answers.
    HumanAgent,
    /// A specialist person answers.
    Expert,
}

impl Route {
    /// Every route, from most to least automated.
    pub const ALL: [Route; 4] = [
        Route::SelfService,
        Route::BotDraft,
        Route::HumanAgent,
        Route::Expert,
    ];

    /// The snake_case name used in audit entries and the API (`self_service`, `bot_draft`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::SelfService => "self_service",
            Route::BotDraft => "bot_draft",
            Route::HumanAgent => "human_agent",
            Route::Expert => "expert",
        }
    }

    /// Whether an AI may say anything to the person without a person checking it first.
    pub fn ai_answers_alone(self) -> bool {
        self == Route::SelfService
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the AI-assistance level of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelSource {
    /// The subject's consent history (their choice, or the default if they never chose).
    Subject,
    /// No subject was named.
    NoSubject,
    /// The reference names no subject this node knows.
    UnknownSubject,
}

/// A request's AI-assistance level and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Asker {
    /// The AI-assistance level that applies to the request.
    pub level: AssistanceLevel,
    /// Whether the level is the subject's own, or the default for no or an unknown subject.
    pub source: LevelSource,
}

impl Asker {
    /// The level for a request without a subject: human only.
    pub const ANONYMOUS: Asker = Asker {
        level: AssistanceLevel::HumanOnly,
        source: LevelSource::NoSubject,
    };

    /// The level a known subject's consent history gives.
    pub fn subject(level: AssistanceLevel) -> Self {
        Asker {
            level,
            source: LevelSource::Subject,
        }
    }
}

/// A route and the one line that says why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routed {
    /// Who should answer.
    pub route: Route,
    /// One line for the agent's screen that says why; it names the intent but never the text.
    pub reason: String,
}

/// The routing rule: the table in the module doc, and nothing else decides a route.
pub fn route(line: Line, asker: Asker, intent: &str, confidence: f32, t: Threshold) -> Routed {
    let confident = t.cleared_by(confidence);
    let conf = format!("confidence {confidence:.2}");
    let t = t.value();
    let (route, reason) = match (line, asker.level, confident) {
        (Line::Red, _, true) => (
            Route::Expert,
            format!(
                "red line: intent {intent} is people-only; {conf} ≥ {t:.2}, so a specialist answers"
            ),
        ),
        (Line::Red, _, false) => (
            Route::HumanAgent,
            format!(
                "red line: intent {intent} is people-only; {conf} below {t:.2}, so an agent triages"
            ),
        ),
        (_, AssistanceLevel::HumanOnly, _) => (
            Route::HumanAgent,
            match asker.source {
                LevelSource::Subject => "subject chose human only (or has not chosen AI)".into(),
                LevelSource::NoSubject => {
                    "no subject given: human only until the person chooses AI".into()
                }
                LevelSource::UnknownSubject => {
                    "subject unknown to this node: human only until the person chooses AI".into()
                }
            },
        ),
        (_, _, false) => (Route::HumanAgent, format!("{conf} below {t:.2}")),
        (Line::Yellow, _, true) => (
            Route::BotDraft,
            format!("yellow line: AI drafts for intent {intent}, a person confirms"),
        ),
        (Line::Green, AssistanceLevel::AiSuggests, true) => (
            Route::BotDraft,
            "subject chose AI suggests: AI drafts, a person confirms".into(),
        ),
        (Line::Green, AssistanceLevel::AiAnswers, true) => (
            Route::SelfService,
            format!("green line, subject lets AI answer, {conf} ≥ {t:.2}"),
        ),
    };
    Routed { route, reason }
}

/// How to classify one request.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyOptions {
    /// Intents to return (1..=[`MAX_K`]).
    pub k: usize,
    /// The threshold that applies (already raised by any caller demand).
    pub threshold: Threshold,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            k: DEFAULT_K,
            threshold: Threshold::default(),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Classification {
    /// The `k` most likely intents, most likely first.
    pub intents: Vec<IntentScore>,
    /// SHA-256 (hex) of the model that answered.
    pub model_sha256: String,
    /// Automation line of the top intent.
    pub line: Line,
    /// The AI-assistance level that applied, and where it came from.
    pub asker: Asker,
    /// Who should answer, by the routing rule.
    pub route: Route,
    /// One line that says why this route (see [`Routed::reason`]).
    pub reason: String,
    /// The confidence threshold that applied.
    pub threshold: Threshold,
    /// Version of the policy whose automation lines were used.
    pub policy_version: u64,
}

/// A parsed model and the exact bytes it was parsed from.
struct CachedModel {
    bytes: crate::store::Bytes,
    model: Arc<IntentModel>,
    sha256: String,
}

/// Keyed by content, not by node: equal bytes are the same model whichever node stored them,
/// so one process with several nodes stays correct (it only re-parses more often).
static INTENT_CACHE: Mutex<Option<Arc<CachedModel>>> = Mutex::new(None);

fn cached(bytes: &crate::store::Bytes) -> Option<Arc<CachedModel>> {
    let slot = INTENT_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    slot.as_ref().filter(|c| c.bytes == *bytes).map(Arc::clone)
}

fn remember(c: Arc<CachedModel>) {
    *INTENT_CACHE.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
}

impl Node {
    /// The intent model stored now and its SHA-256, parsed once per distinct model.
    fn current_intent_model(&self) -> Result<Option<Arc<CachedModel>>, AssistError> {
        let Some(bytes) = self.archive.store().model(crate::train::INTENT_MODEL_KEY)? else {
            return Ok(None);
        };
        if let Some(c) = cached(&bytes) {
            return Ok(Some(c));
        }
        let model = Arc::new(IntentModel::from_bytes(&bytes)?);
        let c = Arc::new(CachedModel {
            sha256: hex::encode(amble_crypto::sha256(&bytes)),
            bytes,
            model,
        });
        remember(Arc::clone(&c));
        Ok(Some(c))
    }

    /// Classifies `text` and routes it (see the module doc for the rule). With a subject, the
    /// subject's AI-assistance level applies and one audit entry is written before returning.
    pub fn classify(
        &self,
        actor: &Actor,
        text: &str,
        subject: Option<&ExternalRef>,
        opts: ClassifyOptions,
    ) -> Result<Classification, AssistError> {
        if !(1..=MAX_K).contains(&opts.k) {
            return Err(AssistError::BadK(opts.k));
        }
        if text.trim().is_empty() {
            return Err(AssistError::EmptyText);
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(AssistError::TextTooLong(chars));
        }
        let model = self
            .current_intent_model()?
            .ok_or(AssistError::NoIntentModel)?;
        let intents = model.model.predict(text, opts.k)?;
        let (top, confidence) = intents
            .first()
            .map_or(("", 0.0), |s| (s.label.as_str(), s.probability));
        let policy = self.policy();
        let line = policy.line(top);

        let (asker, known) = match subject {
            None => (Asker::ANONYMOUS, None),
            Some(r) => match self.archive.resolve(r)? {
                None => (
                    Asker {
                        level: AssistanceLevel::HumanOnly,
                        source: LevelSource::UnknownSubject,
                    },
                    None,
                ),
                Some(s) => {
                    let history = self.archive.load_consent(&s)?;
                    let level = history.ai_assistance(self.now());
                    (Asker::subject(level), Some(s))
                }
            },
        };
        let routed = route(line, asker, top, confidence, opts.threshold);
        if subject.is_some() {
            let unknown = if known.is_none() {
                "unknown reference; "
            } else {
                ""
            };
            let mut d = actor.draft(Action::Assist).reason(format!(
                "{unknown}route={} line={line} ai_assistance={} model={}",
                routed.route,
                asker.level.as_str(),
                &model.sha256[..16]
            ));
            if let Some(s) = known {
                d = d.subject(s);
            }
            d.policy_version = Some(policy.version());
            self.audit.append_durable(d).map_err(NodeError::from)?;
        }
        tracing::debug!(
            caller = %actor.id,
            route = %routed.route,
            line = %line,
            "request classified"
        );
        Ok(Classification {
            intents,
            model_sha256: model.sha256.clone(),
            line,
            asker,
            route: routed.route,
            reason: routed.reason,
            threshold: opts.threshold,
            policy_version: policy.version(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: [Line; 3] = [Line::Green, Line::Yellow, Line::Red];
    const SOURCES: [LevelSource; 3] = [
        LevelSource::Subject,
        LevelSource::NoSubject,
        LevelSource::UnknownSubject,
    ];

    /// The table in the module doc, written out row by row.
    fn expected(line: Line, level: AssistanceLevel, confident: bool) -> Route {
        use AssistanceLevel::*;
        match (line, level, confident) {
            (Line::Red, _, true) => Route::Expert,
            (Line::Red, _, false) => Route::HumanAgent,
            (_, HumanOnly, _) => Route::HumanAgent,
            (_, _, false) => Route::HumanAgent,
            (Line::Yellow, _, true) => Route::BotDraft,
            (Line::Green, AiSuggests, true) => Route::BotDraft,
            (Line::Green, AiAnswers, true) => Route::SelfService,
        }
    }

    #[test]
    fn every_line_level_and_confidence_band_routes_as_the_table_says() {
        let t = Threshold::default();
        // Below, exactly at, and above the threshold; the extremes; NaN counts as low.
        let bands: [(f32, bool); 6] = [
            (0.0, false),
            (0.41, false),
            (DEFAULT_THRESHOLD - 1e-4, false),
            (DEFAULT_THRESHOLD, true),
            (0.93, true),
            (1.0, true),
        ];
        let mut seen = std::collections::HashSet::new();
        for line in LINES {
            for level in AssistanceLevel::ALL {
                for (c, confident) in bands {
                    let r = route(line, Asker::subject(level), "x", c, t);
                    assert_eq!(
                        r.route,
                        expected(line, level, confident),
                        "{line} {level:?} {c}: {}",
                        r.reason
                    );
                    assert!(!r.reason.is_empty());
                    seen.insert(r.route);
                }
                let r = route(line, Asker::subject(level), "x", f32::NAN, t);
                assert_eq!(r.route, expected(line, level, false));
            }
        }
        assert_eq!(seen.len(), Route::ALL.len(), "every route is reachable");
    }

    #[test]
    fn ai_answers_alone_only_when_policy_person_and_model_agree() {
        let t = Threshold::default();
        for line in LINES {
            for level in AssistanceLevel::ALL {
                for c in [0.1, 0.59, 0.6, 0.99] {
                    let r = route(line, Asker::subject(level), "x", c, t).route;
                    assert_eq!(
                        r.ai_answers_alone(),
                        line == Line::Green && level == AssistanceLevel::AiAnswers && c >= 0.6,
                        "{line} {level:?} {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn without_a_known_subject_a_person_answers_unless_the_line_is_red() {
        for source in SOURCES {
            let asker = Asker {
                level: AssistanceLevel::HumanOnly,
                source,
            };
            for line in [Line::Green, Line::Yellow] {
                let r = route(line, asker, "card_arrival", 0.99, Threshold::default());
                assert_eq!(r.route, Route::HumanAgent);
                assert!(r.reason.contains("human only"), "{}", r.reason);
            }
            let red = route(Line::Red, asker, "lost_card", 0.99, Threshold::default());
            assert_eq!(red.route, Route::Expert);
        }
        assert_eq!(Asker::ANONYMOUS.level, AssistanceLevel::HumanOnly);
    }

    #[test]
    fn reasons_name_the_rule_that_decided() {
        let t = Threshold::default();
        let red = route(
            Line::Red,
            Asker::subject(AssistanceLevel::AiAnswers),
            "lost_or_stolen_card",
            0.9,
            t,
        );
        assert!(
            red.reason
                .starts_with("red line: intent lost_or_stolen_card is people-only")
        );
        let low = route(
            Line::Green,
            Asker::subject(AssistanceLevel::AiAnswers),
            "x",
            0.41,
            t,
        );
        assert_eq!(low.reason, "confidence 0.41 below 0.60");
        let human = route(
            Line::Green,
            Asker::subject(AssistanceLevel::HumanOnly),
            "x",
            0.9,
            t,
        );
        assert!(human.reason.starts_with("subject chose human only"));
        let draft = route(
            Line::Yellow,
            Asker::subject(AssistanceLevel::AiAnswers),
            "x",
            0.9,
            t,
        );
        assert!(draft.reason.contains("a person confirms"));
    }

    #[test]
    fn a_caller_can_raise_the_threshold_but_not_lower_it() {
        let t = Threshold::default();
        assert_eq!(t.raised_to(None).unwrap(), t);
        assert_eq!(t.raised_to(Some(0.1)).unwrap(), t);
        assert_eq!(t.raised_to(Some(0.9)).unwrap().value(), 0.9);
        for bad in [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
            assert!(t.raised_to(Some(bad)).is_err(), "{bad}");
        }
        // A raised threshold moves a confident-enough request to a person.
        let r = route(
            Line::Green,
            Asker::subject(AssistanceLevel::AiAnswers),
            "x",
            0.8,
            t.raised_to(Some(0.9)).unwrap(),
        );
        assert_eq!(r.route, Route::HumanAgent);
    }
}
