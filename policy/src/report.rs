//! Human-readable views of a policy: the check table and the GDPR Art. 30 record.

use crate::model::{Collection, Line};
use crate::policy::{FieldRule, Policy, collections_read};
use std::fmt::Write;

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
    /// `amble policy ropa FILE`. Controller details are the organisation's to add.
    pub fn ropa_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Record of processing activities (GDPR Art. 30)\n");
        let _ = writeln!(
            o,
            "Generated from policy `{}`, version {}. Controller name and contact details, and the \
             data protection officer, are to be added by the organisation.\n",
            self.source, self.version
        );
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
            let _ = writeln!(
                o,
                "| `{}` | {} | {} ({}) | {} | {} | {} |",
                p.id,
                p.description.replace('|', "\\|").replace('\n', " "),
                p.legal_basis,
                p.legal_basis.article(),
                p.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if cats.is_empty() {
                    "none".to_owned()
                } else {
                    cats
                },
                if p.recipients.is_empty() {
                    "none beyond the controller".to_owned()
                } else {
                    p.recipients.join(", ").replace('|', "\\|")
                },
            );
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
}
