//! The policy file: parsing, whole-file validation with line and column, and the lookups the
//! node makes.

use crate::duration::parse_iso8601;
use crate::model::{Collection, Language, LegalBasis, Line, Role};
use crate::transform::{Buckets, Tables, Transform};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// Why a policy file was refused. A refused file is refused as a whole: nothing of it is used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}; check the path and its permissions")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy; the first problem, with where it is.
    #[error("{source_name}:{line}:{column}: {message}{}", more_note(*.more))]
    Invalid {
        /// The file's name, as given.
        source_name: String,
        /// 1-based line of the first problem.
        line: usize,
        /// 1-based column (in characters) of the first problem.
        column: usize,
        /// What is wrong there, and what to write instead.
        message: String,
        /// How many further problems were found after the first.
        more: usize,
    },
}

fn more_note(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more problem; fix this one and check again)".to_owned(),
        n => format!(" (and {n} more problems; fix this one and check again)"),
    }
}

impl PolicyError {
    /// `(line, column)` of the first problem, for invalid files.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            PolicyError::Invalid { line, column, .. } => Some((*line, *column)),
            PolicyError::Read { .. } => None,
        }
    }
}

/// A field a purpose may read, with the transform applied before the purpose sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// The field's name in the record.
    pub name: String,
    /// What is done to it first (`age_band`, `mask`, …); `None` passes it as it is.
    pub transform: Option<Transform>,
}

impl std::fmt::Display for FieldRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transform {
            Some(t) => write!(f, "{} ({t})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One declared purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// The purpose's id (`train.intent`), named by every read.
    pub id: String,
    /// Plain language, in the policy's [`Policy::language`]; shown to end users.
    pub description: String,
    /// The description in each language it is written in, the policy's own included.
    pub descriptions: BTreeMap<Language, String>,
    /// The language `description` is written in (the policy's).
    pub language: Language,
    /// The ground it relies on; with `consent`, reads need the person's consent in force.
    pub legal_basis: LegalBasis,
    /// The roles that may read under it.
    pub roles: Vec<Role>,
    /// Who receives data under this purpose (for the record of processing).
    pub recipients: Vec<String>,
    /// Per collection, the fields this purpose may read.
    pub reads: BTreeMap<Collection, Vec<FieldRule>>,
    /// Whether this is the service's primary purpose (shown in receipts).
    pub primary: bool,
}

/// A purpose's description in the language asked for, or the one it falls back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Described<'a> {
    /// The text shown.
    pub text: &'a str,
    /// The language it is written in.
    pub language: Language,
}

impl Purpose {
    /// The description for a reader of `language`: in that language if the policy has it, else
    /// in its [fallbacks](Language::fallbacks), else as written in the policy's own language.
    pub fn description_in(&self, language: Language) -> Described<'_> {
        std::iter::once(&language)
            .chain(language.fallbacks())
            .find_map(|l| {
                self.descriptions
                    .get(l)
                    .map(|text| Described { text, language: *l })
            })
            .unwrap_or(Described {
                text: &self.description,
                language: self.language,
            })
    }

    /// How receipts describe this purpose.
    pub fn info(&self) -> amble_consent::PurposeInfo {
        amble_consent::PurposeInfo {
            id: self.id.clone(),
            description: self.description.clone(),
            pii_categories: self.reads.keys().map(|c| c.to_string()).collect(),
            sensitive_categories: self
                .reads
                .keys()
                .filter(|c| c.is_special())
                .map(|c| c.to_string())
                .collect(),
            recipients: self.recipients.clone(),
            primary: self.primary,
        }
    }
}

/// A retention period as written and as a length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// As written (`P2Y`).
    pub text: String,
    /// As a length (years count 365 days, months 30).
    pub duration: time::Duration,
}

/// Which automation line each intent is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    /// The line of an intent the table does not list.
    pub default: Line,
    /// Intent label → its line.
    pub intents: BTreeMap<String, Line>,
}

/// A validated policy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) source: String,
    pub(crate) version: u64,
    pub(crate) purposes: Vec<Arc<Purpose>>,
    pub(crate) tables: Arc<Tables>,
    pub(crate) retention: BTreeMap<Collection, Retention>,
    pub(crate) automation: Automation,
    pub(crate) language: Language,
    pub(crate) controller: Option<amble_consent::Controller>,
    /// Where the controller is established (`CN`, `DE`…), for receipts.
    pub(crate) jurisdiction: Option<String>,
    /// The organisation's privacy notice (a URL), for receipts.
    pub(crate) privacy_notice: Option<String>,
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<i64>,
    #[serde(default)]
    purpose: Vec<Spanned<RawPurpose>>,
    #[serde(default)]
    regions: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    buckets: BTreeMap<Spanned<String>, Spanned<RawBuckets>>,
    #[serde(default)]
    retention: BTreeMap<Spanned<String>, Spanned<String>>,
    automation: Option<RawAutomation>,
    /// The language the purposes' `description`s are written in (default `en`).
    language: Option<Spanned<String>>,
    /// Who is responsible for the processing, as receipts, exports and the page name them.
    controller: Option<Spanned<RawController>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    name: Spanned<String>,
    contact: Spanned<String>,
    address: Spanned<String>,
    email: Spanned<String>,
    phone: Spanned<String>,
    url: Option<Spanned<String>>,
    /// Where the controller is established: an ISO 3166 code (`CN`) or `EU`.
    jurisdiction: Option<Spanned<String>>,
    /// The privacy notice's URL.
    privacy_notice: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: Spanned<String>,
    description: Spanned<String>,
    legal_basis: Option<Spanned<String>>,
    roles: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    recipients: Vec<Spanned<String>>,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    read: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    /// Translations of `description`, by language tag.
    #[serde(default)]
    descriptions: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuckets {
    bounds: Vec<Spanned<f64>>,
    labels: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutomation {
    default: Spanned<String>,
    #[serde(default)]
    green: Vec<Spanned<String>>,
    #[serde(default)]
    yellow: Vec<Spanned<String>>,
    #[serde(default)]
    red: Vec<Spanned<String>>,
}

// ---- validation ----------------------------------------------------------------------------

struct Checker<'t> {
    text: &'t str,
    problems: Vec<(usize, String)>,
}

impl Checker<'_> {
    fn at(&mut self, offset: usize, message: impl Into<String>) {
        self.problems.push((offset, message.into()));
    }

    fn at_span(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.at(span.start, message);
    }

    /// The offset of byte `i` of the string value at `span`, when the file writes it as a plain
    /// string without escapes; otherwise the start of the value.
    fn inside(&self, span: &Range<usize>, s: &str, i: usize) -> usize {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let quoted = (raw.starts_with('"') || raw.starts_with('\''))
            && raw.len() == s.len() + 2
            && raw.get(1..raw.len() - 1) == Some(s);
        if quoted {
            span.start + 1 + i
        } else {
            span.start
        }
    }

    fn parse_enum<T: std::str::FromStr<Err: std::fmt::Display>>(
        &mut self,
        v: &Spanned<String>,
    ) -> Option<T> {
        match v.get_ref().parse::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.at_span(v.span(), e.to_string());
                None
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, col)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
        })
}

fn valid_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Policy {
    /// Parses and validates a policy. `source_name` names the text in error messages (usually
    /// the file path). The policy is refused as a whole on the first problem, reported with its
    /// line and column.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
        let invalid = |offset: usize, message: String, more: usize| {
            let (line, column) = line_col(text, offset);
            PolicyError::Invalid {
                source_name: source_name.to_owned(),
                line,
                column,
                message,
                more,
            }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            invalid(offset, e.message().trim().to_owned(), 0)
        })?;
        let mut ck = Checker {
            text,
            problems: Vec::new(),
        };
        let policy = build(raw, source_name, &mut ck);
        if ck.problems.is_empty() {
            if let Some(p) = policy {
                return Ok(p);
            }
        }
        ck.problems.sort_by_key(|(o, _)| *o);
        let more = ck.problems.len().saturating_sub(1);
        let (offset, message) = ck
            .problems
            .into_iter()
            .next()
            .unwrap_or((0, "the policy is not valid".to_owned()));
        Err(invalid(offset, message, more))
    }

    /// Reads and validates the policy file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Where the policy was read from.
    /// Where the policy was read from (a file name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Its `version`: every decision names the version that made it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the controller is established (`[controller] jurisdiction`), if the policy says.
    pub fn jurisdiction(&self) -> Option<&str> {
        self.jurisdiction.as_deref()
    }

    /// The privacy notice's URL (`[controller] privacy_notice`), if the policy says.
    pub fn privacy_notice(&self) -> Option<&str> {
        self.privacy_notice.as_deref()
    }

    /// Who is responsible for the processing (`[controller]`), if the policy says.
    pub fn controller(&self) -> Option<&amble_consent::Controller> {
        self.controller.as_ref()
    }

    /// The language the purposes' descriptions are written in (`language`, default `en`).
    pub fn language(&self) -> Language {
        self.language
    }

    /// For each purpose, the languages of the self-service page it has no description in: a
    /// reader of one of them sees a [fallback](Purpose::description_in).
    pub fn untranslated(&self) -> Vec<(&str, Language)> {
        self.purposes
            .iter()
            .flat_map(|p| {
                Language::ALL
                    .iter()
                    .filter(|l| !p.descriptions.contains_key(l))
                    .map(|l| (p.id.as_str(), *l))
            })
            .collect()
    }

    /// The purposes, in file order.
    pub fn purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.purposes.iter().map(|p| &**p)
    }

    /// The purpose declared as `id`, if any.
    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.id == id).map(|p| &**p)
    }

    pub(crate) fn purpose_arc(&self, id: &str) -> Option<&Arc<Purpose>> {
        self.purposes.iter().find(|p| p.id == id)
    }

    /// How consent receipts describe purpose `id`.
    pub fn purpose_info(&self, id: &str) -> Option<amble_consent::PurposeInfo> {
        self.purpose(id).map(Purpose::info)
    }

    /// How long records of `collection` are kept, if the policy limits it. Years count 365
    /// days and months 30, so nothing is kept longer than written.
    pub fn retention(&self, collection: Collection) -> Option<time::Duration> {
        self.retention.get(&collection).map(|r| r.duration)
    }

    /// The retention period as written in the file (`P2Y`).
    pub fn retention_text(&self, collection: Collection) -> Option<&str> {
        self.retention.get(&collection).map(|r| r.text.as_str())
    }

    /// The automation line of an intent label; unlisted intents get the default line.
    pub fn line(&self, intent: &str) -> Line {
        self.automation
            .intents
            .get(intent)
            .copied()
            .unwrap_or(self.automation.default)
    }

    /// The automation table: which line each intent is on.
    pub fn automation(&self) -> &Automation {
        &self.automation
    }

    /// City → region table (keys lower-cased).
    pub fn regions(&self) -> &BTreeMap<String, String> {
        &self.tables.regions
    }

    /// The bucket set declared as `name` (for the `bucket:NAME` transform), if any.
    pub fn buckets(&self, name: &str) -> Option<&Buckets> {
        self.tables.buckets.get(name)
    }
}

fn build(raw: RawPolicy, source: &str, ck: &mut Checker<'_>) -> Option<Policy> {
    let version = *raw.version.get_ref();
    if version < 1 {
        ck.at_span(
            raw.version.span(),
            format!("policy version is {version}; use a whole number of 1 or more, and raise it whenever the policy changes"),
        );
    }

    let language = match &raw.language {
        Some(l) => ck.parse_enum::<Language>(l).unwrap_or(Language::En),
        None => Language::En,
    };
    let controller = raw.controller.as_ref().map(|c| controller(ck, c.get_ref()));
    let optional = |v: Option<&Spanned<String>>| v.map(|s| s.get_ref().trim().to_owned());
    let raw_controller = raw.controller.as_ref().map(|c| c.get_ref());
    let jurisdiction = optional(raw_controller.and_then(|c| c.jurisdiction.as_ref()));
    let privacy_notice = optional(raw_controller.and_then(|c| c.privacy_notice.as_ref()));

    // Regions.
    let mut regions = BTreeMap::new();
    for (city, region) in &raw.regions {
        let key = city.get_ref().trim().to_lowercase();
        if key.is_empty() || region.get_ref().trim().is_empty() {
            ck.at_span(
                city.span(),
                "a region mapping needs a city and a region name",
            );
            continue;
        }
        if regions
            .insert(key, region.get_ref().trim().to_owned())
            .is_some()
        {
            ck.at_span(
                city.span(),
                format!(
                    "city `{}` is mapped twice (cities are compared ignoring case); keep one",
                    city.get_ref()
                ),
            );
        }
    }

    // Bucket sets.
    let mut buckets = BTreeMap::new();
    for (name, set) in &raw.buckets {
        if !valid_name(name.get_ref()) {
            ck.at_span(
                name.span(),
                format!(
                    "bucket set name `{}` is not valid; use a-z, 0-9, `_`, `.` or `-`",
                    name.get_ref()
                ),
            );
        }
        let set_ref = set.get_ref();
        let bounds: Vec<f64> = set_ref.bounds.iter().map(|b| *b.get_ref()).collect();
        if bounds.is_empty() {
            ck.at_span(
                set.span(),
                format!(
                    "bucket set `{}` has no bounds; list at least one boundary",
                    name.get_ref()
                ),
            );
        }
        for (i, b) in set_ref.bounds.iter().enumerate() {
            if !b.get_ref().is_finite() {
                ck.at_span(b.span(), "bucket bounds must be finite numbers");
            } else if i > 0 && *b.get_ref() <= bounds[i - 1] {
                ck.at_span(
                    b.span(),
                    "bucket bounds must be strictly increasing; sort them and drop repeats",
                );
            }
        }
        let labels = set_ref.labels.as_ref().map(|ls| {
            if ls.get_ref().len() != bounds.len() + 1 {
                ck.at_span(
                    ls.span(),
                    format!(
                        "bucket set `{}` has {} bounds, so it needs {} labels, not {}",
                        name.get_ref(),
                        bounds.len(),
                        bounds.len() + 1,
                        ls.get_ref().len()
                    ),
                );
            }
            ls.get_ref()
                .iter()
                .map(|l| l.get_ref().clone())
                .collect::<Vec<_>>()
        });
        buckets.insert(name.get_ref().clone(), Buckets::new(bounds, labels));
    }

    // Purposes.
    let mut purposes = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for sp in &raw.purpose {
        let p = sp.get_ref();
        let id = p.id.get_ref();
        if !valid_name(id) {
            ck.at_span(
                p.id.span(),
                format!("purpose id `{id}` is not valid; use 1 to 64 characters from a-z, 0-9, `.`, `_` and `-`"),
            );
        }
        if let Some(first) = seen.get(id) {
            let (line, _) = line_col(ck.text, *first);
            ck.at_span(
                p.id.span(),
                format!("purpose `{id}` is declared twice (first on line {line}); keep one declaration per purpose"),
            );
        } else {
            seen.insert(id.clone(), p.id.span().start);
        }
        if p.description.get_ref().trim().is_empty() {
            ck.at_span(
                p.description.span(),
                format!("purpose `{id}` has an empty description; end users see it, so say in plain words what the data is used for"),
            );
        }
        let legal_basis = match &p.legal_basis {
            Some(lb) => ck.parse_enum::<LegalBasis>(lb),
            None => {
                ck.at_span(
                    sp.span(),
                    format!(
                        "purpose `{id}` has no legal_basis; add one of: {}",
                        LegalBasis::ALL
                            .iter()
                            .map(|b| b.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        };
        let mut roles = Vec::new();
        for r in p.roles.get_ref() {
            if let Some(role) = ck.parse_enum::<Role>(r) {
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
        }
        if p.roles.get_ref().is_empty() {
            ck.at_span(
                p.roles.span(),
                format!("purpose `{id}` allows no role; list who may use it"),
            );
        }
        let mut reads = BTreeMap::new();
        for (coll, fields) in &p.read {
            let Some(collection) = ck.parse_enum::<Collection>(coll) else {
                continue;
            };
            if fields.is_empty() {
                ck.at_span(
                    coll.span(),
                    format!("purpose `{id}` lists no fields of {collection}; name the fields it needs or remove the line"),
                );
            }
            let mut rules: Vec<FieldRule> = Vec::new();
            for f in fields {
                if let Some(rule) = field_rule(ck, f, &buckets) {
                    if rules.iter().any(|r| r.name == rule.name) {
                        ck.at_span(
                            f.span(),
                            format!(
                                "field `{}` of {collection} is listed twice for purpose `{id}`; keep one",
                                rule.name
                            ),
                        );
                    } else {
                        rules.push(rule);
                    }
                }
            }
            reads.insert(collection, rules);
        }
        let description = p.description.get_ref().trim().to_owned();
        let mut descriptions = BTreeMap::from([(language, description.clone())]);
        for (tag, text) in &p.descriptions {
            let Some(l) = ck.parse_enum::<Language>(tag) else {
                continue;
            };
            if l == language {
                ck.at_span(
                    tag.span(),
                    format!("purpose `{id}` translates its description into {l}, the policy's own language; write it in `description` only"),
                );
            } else if text.get_ref().trim().is_empty() {
                ck.at_span(
                    text.span(),
                    format!(
                        "purpose `{id}` has an empty {l} description; write it or remove the line"
                    ),
                );
            } else {
                descriptions.insert(l, text.get_ref().trim().to_owned());
            }
        }
        if let Some(legal_basis) = legal_basis {
            purposes.push(Arc::new(Purpose {
                id: id.clone(),
                description,
                descriptions,
                language,
                legal_basis,
                roles,
                recipients: p
                    .recipients
                    .iter()
                    .map(|r| r.get_ref().trim().to_owned())
                    .collect(),
                reads,
                primary: p.primary,
            }));
        }
    }

    // Retention.
    let mut retention = BTreeMap::new();
    for (coll, period) in &raw.retention {
        let Some(collection) = ck.parse_enum::<Collection>(coll) else {
            continue;
        };
        match parse_iso8601(period.get_ref()) {
            Ok(duration) => {
                retention.insert(
                    collection,
                    Retention {
                        text: period.get_ref().clone(),
                        duration,
                    },
                );
            }
            Err(msg) => ck.at_span(period.span(), format!("retention for {collection}: {msg}")),
        }
    }

    // Automation lines. Without an [automation] table every intent is human-only.
    let automation = match &raw.automation {
        None => Automation {
            default: Line::Red,
            intents: BTreeMap::new(),
        },
        Some(a) => {
            let default = ck.parse_enum::<Line>(&a.default).unwrap_or(Line::Red);
            let mut intents: BTreeMap<String, Line> = BTreeMap::new();
            for (line, list) in [
                (Line::Green, &a.green),
                (Line::Yellow, &a.yellow),
                (Line::Red, &a.red),
            ] {
                for intent in list {
                    let name = intent.get_ref();
                    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        ck.at_span(
                            intent.span(),
                            format!("intent label `{name}` is not valid; use the classifier's label, without spaces"),
                        );
                    } else if let Some(prev) = intents.insert(name.clone(), line) {
                        ck.at_span(
                            intent.span(),
                            format!("intent `{name}` is on two automation lines ({prev} and {line}); keep it on one"),
                        );
                    }
                }
            }
            Automation { default, intents }
        }
    };

    let version = u64::try_from(version).ok().filter(|v| *v >= 1)?;
    Some(Policy {
        source: source.to_owned(),
        version,
        purposes,
        tables: Arc::new(Tables { regions, buckets }),
        retention,
        automation,
        language,
        controller,
        jurisdiction,
        privacy_notice,
    })
}

/// The `[controller]` table, each value trimmed and none empty.
fn controller(ck: &mut Checker<'_>, c: &RawController) -> amble_consent::Controller {
    let mut field = |what: &str, v: &Spanned<String>| {
        let text = v.get_ref().trim().to_owned();
        if text.is_empty() {
            ck.at_span(
                v.span(),
                format!("controller {what} is empty; receipts and exports give it to people, so fill it in"),
            );
        }
        text
    };
    let controller = amble_consent::Controller {
        pii_controller: field("name", &c.name),
        contact: field("contact", &c.contact),
        address: field("address", &c.address),
        email: field("email", &c.email),
        phone: field("phone", &c.phone),
        pii_controller_url: c.url.as_ref().map(|u| field("url", u)),
    };
    let email = &controller.email;
    if !email.is_empty() && (!email.contains('@') || email.contains(char::is_whitespace)) {
        ck.at_span(
            c.email.span(),
            format!("controller email {email:?} is not an e-mail address"),
        );
    }
    controller
}

fn field_rule(
    ck: &mut Checker<'_>,
    f: &Spanned<String>,
    buckets: &BTreeMap<String, Buckets>,
) -> Option<FieldRule> {
    let spec = f.get_ref();
    let span = f.span();
    let (name_part, transform_part) = match spec.split_once('|') {
        Some((n, t)) => (n, Some((t, n.len() + 1))),
        None => (spec.as_str(), None),
    };
    let name = name_part.trim();
    if !valid_field(name) {
        let off = ck.inside(&span, spec, 0);
        ck.at(
            off,
            format!("field `{name}` is not a valid field name; use letters, digits, `_` or `-`, optionally followed by `|transform`"),
        );
        return None;
    }
    let transform = match transform_part {
        None => None,
        Some((t, start)) => {
            let lead = t.len() - t.trim_start().len();
            let t_trim = t.trim();
            let off = ck.inside(&span, spec, start + lead);
            let parsed = match t_trim.split_once(':') {
                None => match t_trim {
                    "age_band" => Some(Transform::AgeBand),
                    "region" => Some(Transform::Region),
                    "mask" => Some(Transform::Mask),
                    "bucket" => {
                        ck.at(off, format!("transform `bucket` on field `{name}` needs a bucket set: write `{name}|bucket:NAME` with NAME from [buckets]"));
                        return None;
                    }
                    _ => None,
                },
                Some(("bucket", set)) => {
                    let set = set.trim();
                    if !buckets.contains_key(set) {
                        ck.at(off, format!("bucket set `{set}` used by field `{name}` is not declared; add [buckets.{set}] with its bounds"));
                        return None;
                    }
                    Some(Transform::Bucket(set.to_owned()))
                }
                Some(_) => None,
            };
            match parsed {
                Some(t) => Some(t),
                None => {
                    ck.at(off, format!("unknown transform `{t_trim}` on field `{name}`; expected one of: age_band, region, mask, bucket:NAME"));
                    return None;
                }
            }
        }
    };
    Some(FieldRule {
        name: name.to_owned(),
        transform,
    })
}

/// Every collection some purpose of `policy` reads, for the record of processing.
pub(crate) fn collections_read(policy: &Policy) -> BTreeSet<Collection> {
    policy
        .purposes
        .iter()
        .flat_map(|p| p.reads.keys().copied())
        .collect()
}
