//! Human-readable views of a policy: the check table, the GDPR Art. 30 record, and the
//! skeleton of an impact assessment (GDPR Art. 35, PIPL Art. 55–56).

use crate::model::{Collection, Line};
use crate::policy::{FieldRule, Policy, collections_read};
use std::fmt::Write;

/// What differential privacy a node's training has guaranteed so far for one model, as its
/// privacy ledger states it (the node fills it in; the policy alone does not know).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingGuarantee {
    /// The purpose the model is trained under (`train.intent`).
    pub purpose: String,
    /// The model's name in the ledger (`intent`, `intent federated`, `needs`).
    pub model: String,
    /// Private runs charged so far.
    pub runs: usize,
    /// ε spent by those runs together, per person.
    pub epsilon: f64,
    /// The δ it is stated at.
    pub delta: f64,
    /// The most the ledger lets any one model spend.
    pub budget_epsilon: f64,
    /// The most the ledger lets one person spend over every model.
    pub subject_budget_epsilon: f64,
}

/// One purpose as a Markdown table row: id, description, legal basis with its article, roles,
/// `data` (what it reads, as the table wants it), recipients.
fn purpose_row(p: &crate::policy::Purpose, data: &str) -> String {
    let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    format!(
        "| `{}` | {} | {} ({}) | {} | {} | {} |",
        p.id,
        cell(&p.description),
        p.legal_basis,
        p.legal_basis.article(),
        p.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if data.is_empty() { "none" } else { data }.replace('|', "\\|"),
        if p.recipients.is_empty() {
            "none beyond the controller".to_owned()
        } else {
            cell(&p.recipients.join(", "))
        },
    )
}

fn fields_text(rules: &[FieldRule]) -> String {
    if rules.is_empty() {
        return "(none)".to_owned();
    }
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Policy {
    /// Purposes × collections × fields (with transforms) as an aligned text table, for
    /// `amble policy check FILE`.
    pub fn summary_table(&self) -> String {
        let header = ["PURPOSE", "BASIS", "ROLES", "COLLECTION", "FIELDS"].map(str::to_owned);
        let mut rows: Vec<[String; 5]> = Vec::new();
        for p in self.purposes() {
            let roles = p
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let mut first = true;
            let mut push = |coll: String, fields: String| {
                let lead = if first {
                    [p.id.clone(), p.legal_basis.to_string(), roles.clone()]
                } else {
                    [String::new(), String::new(), String::new()]
                };
                first = false;
                let [a, b, c] = lead;
                rows.push([a, b, c, coll, fields]);
            };
            if p.reads.is_empty() {
                push("(none)".to_owned(), String::new());
            }
            for (c, rules) in &p.reads {
                let coll = if c.is_special() {
                    format!("{c} [explicit consent]")
                } else {
                    c.to_string()
                };
                push(coll, fields_text(rules));
            }
        }
        let mut widths = header.clone().map(|h| h.chars().count());
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "policy {} version {}: {} purposes\n\n",
            self.source,
            self.version,
            self.purposes.len()
        );
        for r in std::iter::once(&header).chain(rows.iter()) {
            let mut line = String::new();
            for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        let retention: Vec<String> = Collection::ALL
            .iter()
            .filter_map(|c| self.retention_text(*c).map(|t| format!("{c} {t}")))
            .collect();
        let _ = writeln!(
            out,
            "retention: {}",
            if retention.is_empty() {
                "none declared".to_owned()
            } else {
                retention.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "automation: default {}; {} intents listed ({} green, {} yellow, {} red)",
            self.automation.default,
            self.automation.intents.len(),
            self.count_line(Line::Green),
            self.count_line(Line::Yellow),
            self.count_line(Line::Red),
        );
        out
    }

    fn count_line(&self, line: Line) -> usize {
        self.automation
            .intents
            .values()
            .filter(|l| **l == line)
            .count()
    }

    /// The record of processing activities (GDPR Art. 30) as Markdown, for
    /// `amble policy ropa FILE`, with the controller from `[controller]` (or a line asking
    /// for it).
    pub fn ropa_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Record of processing activities (GDPR Art. 30)\n");
        let _ = writeln!(
            o,
            "Generated from policy `{}`, version {}.\n",
            self.source, self.version
        );
        match &self.controller {
            Some(c) => {
                let _ = writeln!(
                    o,
                    "**Controller (Art. 30(1)(a)):** {}, {}. Contact: {}, {}, {}.\n",
                    c.pii_controller, c.address, c.contact, c.email, c.phone
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "**Controller (Art. 30(1)(a)):** not in the policy; add a `[controller]` table \
                     (name, contact, address, email, phone).\n"
                );
            }
        }
        let _ = writeln!(o, "## Processing activities\n");
        let _ = writeln!(
            o,
            "| Purpose | Description | Legal basis | Used by (roles) | Categories of data | Recipients |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for p in self.purposes() {
            let cats = p
                .reads
                .keys()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(o, "{}", purpose_row(p, &cats));
        }
        let _ = writeln!(o, "\n## Data read per purpose\n");
        for p in self.purposes() {
            let _ = writeln!(o, "### `{}`\n", p.id);
            if p.reads.is_empty() {
                let _ = writeln!(o, "- reads no personal data\n");
                continue;
            }
            for (c, rules) in &p.reads {
                let note = if c.is_special() {
                    " — special category; only with the person's explicit consent for this purpose"
                } else {
                    ""
                };
                let _ = writeln!(o, "- {c}: {}{note}", fields_text(rules));
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(o, "## Special categories of data (Art. 9)\n");
        let special: Vec<&str> = self
            .purposes()
            .filter(|p| p.reads.keys().any(|c| c.is_special()))
            .map(|p| p.id.as_str())
            .collect();
        if special.is_empty() {
            let _ = writeln!(o, "No purpose reads special categories of data.\n");
        } else {
            let _ = writeln!(
                o,
                "`health` is read by: {}. Under every legal basis it is read only when the person \
                 has given explicit consent for that purpose (Art. 9(2)(a)); without it the \
                 collection is left out of the read.\n",
                special
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(o, "## Retention (time limits for erasure)\n");
        let _ = writeln!(o, "| Collection | Kept for | Read by a purpose |");
        let _ = writeln!(o, "|---|---|---|");
        let read = collections_read(self);
        for c in Collection::ALL {
            let _ = writeln!(
                o,
                "| {c} | {} | {} |",
                self.retention_text(*c)
                    .map(|t| format!(
                        "{t} ({} days)",
                        self.retention(*c).map_or(0, |d| d.whole_days())
                    ))
                    .unwrap_or_else(|| "no limit declared".to_owned()),
                if read.contains(c) { "yes" } else { "no" },
            );
        }
        let _ = writeln!(
            o,
            "\nA year counts 365 days and a month 30 days. Records past their period are removed by \
             the node's sweeper and are never handed to a purpose.\n"
        );
        let _ = writeln!(o, "## Automated processing of requests\n");
        let _ = writeln!(
            o,
            "Each request is classified into an intent. Green: AI may answer. Yellow: AI drafts, a \
             person confirms. Red: people only. Intents not listed are **{}**. The person's own \
             AI-assistance choice always applies on top.\n",
            self.automation.default
        );
        for line in [Line::Green, Line::Yellow, Line::Red] {
            let intents: Vec<&str> = self
                .automation
                .intents
                .iter()
                .filter(|(_, l)| **l == line)
                .map(|(i, _)| i.as_str())
                .collect();
            if !intents.is_empty() {
                let _ = writeln!(o, "- {line}: {}", intents.join(", "));
            }
        }
        let _ = writeln!(o, "\n## Security measures (Art. 32)\n");
        let _ = writeln!(
            o,
            "- Each person's records are encrypted at rest (AES-256-GCM) under their own data key, \
             wrapped by the node's master key; erasure destroys the key.\n\
             - People are stored under pseudonyms (HMAC-SHA256); no external identifier is written to disk.\n\
             - Every read names a purpose, is checked against consent and this policy, and is \
             recorded in an append-only, witnessed audit log.\n\
             - Model training uses differential privacy with the person as the unit of privacy; raw \
             data does not leave the node."
        );
        o
    }

    /// The skeleton of a data protection impact assessment (GDPR Art. 35) and a personal
    /// information protection impact assessment (PIPL Art. 55–56), as Markdown, for
    /// `amble policy dpia FILE`: what the policy says is filled in; what only the organisation
    /// can judge (necessity, risks, consultation) is left as questions to answer.
    /// `training` states the differential privacy of each trained model, from the node's
    /// ledger (empty: no private run yet); `None` when no ledger was given.
    pub fn dpia_markdown(&self, training: Option<&[TrainingGuarantee]>) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# Impact assessment (GDPR Art. 35; PIPL Art. 55–56) — skeleton\n\n\
             Generated from policy `{}`, version {}. Sections marked **To assess** are for the \
             organisation and its data protection officer; the rest is what the policy and the \
             node enforce.\n",
            self.source, self.version
        );
        let _ = writeln!(
            o,
            "## 1. Systematic description of the processing (Art. 35(7)(a))\n"
        );
        let _ = writeln!(
            o,
            "| Purpose | Description | Legal basis | Roles | Data read | Recipients |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for p in self.purposes() {
            let data = p
                .reads
                .iter()
                .map(|(c, rules)| format!("{c}: {}", fields_text(rules)))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(o, "{}", purpose_row(p, &data));
        }
        let _ = writeln!(
            o,
            "\n## 2. Necessity and proportionality (Art. 35(7)(b); PIPL Art. 56(1))\n"
        );
        let _ = writeln!(
            o,
            "- Data minimisation: each purpose reads only the fields listed above, generalised by \
             their transforms (age bands, regions, buckets, masked text) before any reader sees \
             them.\n\
             - Retention: {}.\n\
             - Special categories: `health` is read only with the person's explicit consent for \
             that purpose, whatever its legal basis.\n\
             - **To assess**: why each purpose needs each field, and why a less intrusive means \
             would not do; the balancing test of each `legitimate_interest` purpose ({}).\n",
            {
                let r: Vec<String> = Collection::ALL
                    .iter()
                    .filter_map(|c| self.retention_text(*c).map(|t| format!("{c} {t}")))
                    .collect();
                if r.is_empty() {
                    "none declared".to_owned()
                } else {
                    r.join(", ")
                }
            },
            {
                let li: Vec<String> = self
                    .purposes()
                    .filter(|p| p.legal_basis == crate::LegalBasis::LegitimateInterest)
                    .map(|p| format!("`{}`", p.id))
                    .collect();
                if li.is_empty() {
                    "none".to_owned()
                } else {
                    li.join(", ")
                }
            }
        );
        let _ = writeln!(o, "## 3. Training with differential privacy\n");
        let rule = "Every private run is charged to a per-model and a per-person ε budget before \
                    any noise is drawn, and refused beyond them.";
        match training {
            None => {
                let _ = writeln!(
                    o,
                    "No ledger was given: run `amble policy dpia FILE --data-dir NODE_DIR` on a \
                     node to state what its training has spent. {rule}\n"
                );
            }
            Some([]) => {
                let _ = writeln!(o, "The node has run no private training yet. {rule}\n");
            }
            Some(training) => {
                let _ = writeln!(
                    o,
                    "| Purpose | Model | Private runs | ε spent (per person) | δ | Model budget ε | Person budget ε |"
                );
                let _ = writeln!(o, "|---|---|---|---|---|---|---|");
                for t in training {
                    let _ = writeln!(
                        o,
                        "| `{}` | {} | {} | {:.3} | {:e} | {} | {} |",
                        t.purpose,
                        t.model,
                        t.runs,
                        t.epsilon,
                        t.delta,
                        t.budget_epsilon,
                        t.subject_budget_epsilon
                    );
                }
                let _ = writeln!(
                    o,
                    "\nε bounds how much any one person's whole archive can change a trained model \
                 (person-level differential privacy, RDP accountant); models leave the node only \
                 as these private updates. {rule}\n"
                );
            }
        }
        let _ = writeln!(
            o,
            "## 4. Risks to the rights and freedoms of people (Art. 35(7)(c); PIPL Art. 56(2))\n"
        );
        let _ = writeln!(
            o,
            "**To assess**, for each purpose: likelihood and severity of illegitimate access, \
             unwanted change and disappearance of data; of decisions made about people by \
             automated means ({} intents are on the green line, where AI may answer alone); of \
             re-identification from what leaves the node.\n",
            self.count_line(Line::Green)
        );
        let _ = writeln!(
            o,
            "## 5. Measures in place (Art. 35(7)(d), Art. 32; PIPL Art. 56(3))\n"
        );
        let _ = writeln!(
            o,
            "- Each person's records are encrypted at rest under their own data key; erasure \
             destroys it and rotates the master key.\n\
             - People are stored under pseudonyms; no external identifier is written to disk.\n\
             - Every read names a purpose and passes consent, restriction, objection and this \
             policy; every access is written first to a tamper-evident, witnessed audit log.\n\
             - Services speak mutual TLS 1.3 only; each method admits listed roles only.\n\
             - People exercise their rights themselves (self-service page, the organisation's \
             app): consent, AI-assistance level, restriction, objection, rectification, export, \
             erasure, their access log (`docs/RIGHTS.md`).\n\
             - Requests are routed by automation line; the person's AI-assistance choice applies \
             on top, and `human only` is the default.\n"
        );
        let _ = writeln!(o, "## 6. Consultation and sign-off\n");
        let _ = writeln!(
            o,
            "**To assess**: the views of the data protection officer and, where appropriate, of \
             the people concerned (Art. 35(2), 35(9)); whether prior consultation of the \
             authority is needed (Art. 36); the date, the assessor, and when it is reviewed (PIPL \
             Art. 56: keep for at least three years).\n"
        );
        o
    }
}
