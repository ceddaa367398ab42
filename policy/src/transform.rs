//! Field transforms: how a value is generalised or masked before a purpose sees it.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A transform applied to one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Birth year → ten-year age band (`30-39`) relative to the year of the decision.
    AgeBand,
    /// City → region through the policy's `[regions]` table; unknown cities become `other`.
    Region,
    /// Free text with e-mail addresses, phone numbers and every digit masked.
    Mask,
    /// Number → label of the policy's named bucket set (`bucket:NAME`).
    Bucket(String),
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::AgeBand => f.write_str("age_band"),
            Transform::Region => f.write_str("region"),
            Transform::Mask => f.write_str("mask"),
            Transform::Bucket(b) => write!(f, "bucket:{b}"),
        }
    }
}

/// The label given to values a transform cannot interpret (not a year, not a number).
pub const UNKNOWN: &str = "unknown";
/// The region of a city the `[regions]` table does not list.
pub const OTHER_REGION: &str = "other";

/// A declared set of bucket boundaries and their labels (one more label than boundaries).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: Vec<f64>,
    labels: Vec<String>,
}

impl Buckets {
    /// `bounds` must be finite and strictly increasing; `labels`, when given, must number one
    /// more than `bounds`. Without labels they read `under 10`, `10 to under 100`, `100 and over`.
    pub(crate) fn new(bounds: Vec<f64>, labels: Option<Vec<String>>) -> Self {
        let labels = labels.unwrap_or_else(|| default_labels(&bounds));
        Buckets { bounds, labels }
    }

    /// The upper bounds between buckets, increasing.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// The label of each bucket (one more than there are bounds).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The label of `x`: bucket `i` holds `bounds[i-1] <= x < bounds[i]`.
    pub fn label(&self, x: f64) -> &str {
        let i = self.bounds.partition_point(|b| *b <= x);
        self.labels.get(i).map_or(UNKNOWN, String::as_str)
    }
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn default_labels(bounds: &[f64]) -> Vec<String> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    if let Some(first) = bounds.first() {
        out.push(format!("under {}", num(*first)));
    }
    for w in bounds.windows(2) {
        out.push(format!("{} to under {}", num(w[0]), num(w[1])));
    }
    if let Some(last) = bounds.last() {
        out.push(format!("{} and over", num(*last)));
    }
    out
}

/// The tables transforms look things up in.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tables {
    /// Lower-cased, trimmed city → region.
    pub regions: BTreeMap<String, String>,
    pub buckets: BTreeMap<String, Buckets>,
}

impl Tables {
    /// Applies `t` to `v`. Arrays are transformed element by element; objects under a transform
    /// become `null`, since a transform cannot vouch for what they hold.
    pub(crate) fn apply(&self, t: &Transform, v: &Value, year: i32) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply(t, x, year)).collect()),
            Value::Object(_) => Value::Null,
            Value::Null => Value::Null,
            _ => match t {
                Transform::AgeBand => Value::String(age_band(v, year)),
                Transform::Region => Value::String(self.region(v)),
                Transform::Mask => match v {
                    Value::String(s) => Value::String(mask(s)),
                    Value::Number(n) => Value::String(mask(&n.to_string())),
                    other => other.clone(),
                },
                Transform::Bucket(name) => {
                    let label = match (self.buckets.get(name), as_number(v)) {
                        (Some(b), Some(x)) => b.label(x),
                        _ => UNKNOWN,
                    };
                    Value::String(label.to_owned())
                }
            },
        }
    }

    fn region(&self, v: &Value) -> String {
        v.as_str()
            .and_then(|c| self.regions.get(&c.trim().to_lowercase()))
            .map_or_else(|| OTHER_REGION.to_owned(), Clone::clone)
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// The ten-year age band of someone born in `birth_year` (a number or a string of digits), as
/// of `year`: `30-39`. Ages outside 0..=130 and values that are not a year give `unknown`.
pub fn age_band(birth_year: &Value, year: i32) -> String {
    let y = match birth_year {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match y.and_then(|y| i64::from(year).checked_sub(y)) {
        Some(age) if (0..=130).contains(&age) => {
            let lo = age / 10 * 10;
            format!("{lo}-{}", lo + 9)
        }
        _ => UNKNOWN.to_owned(),
    }
}

const EMAIL: &str = "[email]";
const PHONE: &str = "[phone]";
/// Digit runs with at least this many digits (allowing `+ - . ( )` and spaces between them)
/// are taken for phone numbers.
const PHONE_MIN_DIGITS: usize = 7;

/// Masks free text: e-mail addresses become `[email]`, phone numbers `[phone]`, and every other
/// digit `#`, so card numbers, amounts and codes cannot leak while the sentence keeps its
/// shape for intent classification.
pub fn mask(text: &str) -> String {
    let no_email = mask_emails(text);
    mask_numbers(&no_email)
}

fn is_email_core(core: &str) -> bool {
    core.char_indices()
        .any(|(i, c)| c == '@' && i > 0 && i + 1 < core.len())
}

fn mask_emails(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let ws = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        if !token.contains('@') {
            out.push_str(token);
            continue;
        }
        // Keep punctuation that wraps an address, e.g. `(ann@example.org),`.
        let wrap = |c: char| "()<>[]{},;:\"'`".contains(c);
        let core = token.trim_start_matches(wrap);
        let lead = &token[..token.len() - core.len()];
        let core = core.trim_end_matches(wrap);
        let trail = &token[lead.len() + core.len()..];
        if is_email_core(core) {
            out.push_str(lead);
            out.push_str(EMAIL);
            out.push_str(trail);
        } else {
            out.push_str(token);
        }
    }
    out
}

fn mask_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_numeric() || (c == '+' && chars.get(i + 1).is_some_and(|n| n.is_numeric())) {
            // Extend over a phone-shaped run and count its digits.
            let mut j = i;
            let mut last_digit = i;
            let mut digits = 0;
            let mut gap = 0;
            while j < chars.len() {
                let d = chars[j];
                if d.is_numeric() {
                    digits += 1;
                    gap = 0;
                    last_digit = j;
                } else if (d == '+' && j == i) || (" -.()".contains(d) && gap < 2) {
                    gap += usize::from(j != i);
                } else {
                    break;
                }
                j += 1;
            }
            if digits >= PHONE_MIN_DIGITS {
                out.push_str(PHONE);
                i = last_digit + 1;
                continue;
            }
        }
        out.push(if c.is_numeric() { '#' } else { c });
        i += 1;
    }
    out
}
