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
const ID_CARD: &str = "[id]";
const BANK_CARD: &str = "[card]";
const ADDRESS: &str = "[address]";
/// Digit runs with at least this many digits (allowing `+ - . ( )` and spaces between them)
/// are taken for phone numbers (unless they are an ID or a card number).
const PHONE_MIN_DIGITS: usize = 7;

/// A street address in Chinese, simplified or traditional script: optional administrative
/// divisions (省, 市, 区/區, 县/縣, 镇/鎮, 乡/鄉, 街道, 村…), a street (路, 街, 道, 巷, 弄,
/// 胡同, 大道, 里), an optional section (段), its number (号/號, 弄), and optional building,
/// unit, floor and room (栋/棟, 幢, 座, 楼/樓, 单元/單元, 层/層, 室). Only an address with a
/// street number is masked: a city or district alone names many people.
static CHINESE_ADDRESS: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(
    || {
        let division = r"(?:\p{Han}{2,6}?(?:特别行政区|特別行政區|自治区|自治區|省|市|区|區|县|縣|旗|镇|鎮|乡|鄉|街道|村))";
        let street = r"\p{Han}{1,8}?(?:大道|胡同|路|街|道|巷|弄|里)";
        let number = r"[\s]*[0-9０-９一二三四五六七八九十百零〇]+[\s]*(?:号|號|弄)";
        let unit = r"(?:[\s]*[0-9０-９A-Za-z一二三四五六七八九十]+[\s]*(?:号楼|號樓|栋|棟|幢|座|楼|樓|单元|單元|层|層|室|号|號))*";
        // Taiwan's addresses number the sections of long streets (忠孝東路四段).
        let section = r"(?:[\s]*[0-9０-９一二三四五六七八九十]+段)?";
        regex::Regex::new(&format!("{division}*{street}{section}{number}{unit}")).ok()
    },
);

/// Masks free text so that what identifies a person cannot leak while the sentence keeps its
/// shape for intent classification:
/// - e-mail addresses become `[email]`;
/// - mainland resident ID numbers (18 characters whose ISO 7064 MOD 11-2 check character
///   fits) become `[id]`;
/// - bank card numbers (13 to 19 digits that pass the Luhn check) become `[card]`;
/// - other runs of 7 or more digits (phone numbers, mainland mobiles with or without `+86`)
///   become `[phone]`;
/// - Chinese street addresses with a number become `[address]`;
/// - every other digit becomes `#` (amounts, codes, short numbers).
pub fn mask(text: &str) -> String {
    let no_email = mask_emails(text);
    let no_address = mask_addresses(&no_email);
    mask_numbers(&no_address)
}

fn mask_addresses(text: &str) -> String {
    match CHINESE_ADDRESS.as_ref() {
        Some(re) => re.replace_all(text, ADDRESS).into_owned(),
        // The pattern is a constant that compiles; were it not to, digits are still masked.
        None => text.to_owned(),
    }
}

/// The value of a decimal digit, ASCII or full-width (`０`–`９`).
fn digit_value(c: char) -> Option<u32> {
    c.to_digit(10)
        .or_else(|| ('０'..='９').contains(&c).then(|| c as u32 - '０' as u32))
}

/// An 18-character mainland resident ID (GB 11643): 17 digits and a check character from the
/// ISO 7064 MOD 11-2 checksum (`X` for 10).
fn is_resident_id(digits: &[u32], check: Option<char>) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let (body, last) = match (digits.len(), check) {
        (17, Some(c @ ('X' | 'x'))) => (digits, c.to_ascii_uppercase()),
        (18, None) => match char::from_digit(digits[17], 10) {
            Some(c) => (&digits[..17], c),
            None => return false,
        },
        _ => return false,
    };
    let sum: u32 = body.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    char::from(CHECK[(sum % 11) as usize]) == last
}

/// A card number: 13 to 19 digits whose Luhn checksum is 0.
fn is_card_number(digits: &[u32]) -> bool {
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
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
            // Extend over a phone-shaped run and collect its digits.
            let mut j = i;
            let mut last_digit = i;
            let mut digits: Vec<u32> = Vec::new();
            let mut other_numerals = false;
            let mut gap = 0;
            while j < chars.len() {
                let d = chars[j];
                if d.is_numeric() {
                    match digit_value(d) {
                        Some(v) => digits.push(v),
                        None => other_numerals = true,
                    }
                    gap = 0;
                    last_digit = j;
                } else if (d == '+' && j == i) || (" -.()".contains(d) && gap < 2) {
                    gap += usize::from(j != i);
                } else {
                    break;
                }
                j += 1;
            }
            let count = digits.len() + usize::from(other_numerals);
            let check = chars
                .get(last_digit + 1)
                .copied()
                .filter(|c| matches!(c, 'X' | 'x'));
            // A number written with a country code, or a mainland mobile (1[3-9] and 9 more
            // digits), is a phone number whatever its checksum happens to be.
            let mobile = digits.len() == 11 && digits[0] == 1 && digits[1] >= 3;
            let label = if other_numerals || c == '+' || mobile {
                None
            } else if is_resident_id(&digits, check) {
                Some(ID_CARD)
            } else if is_card_number(&digits) {
                Some(BANK_CARD)
            } else {
                None
            };
            if let Some(label) = label {
                out.push_str(label);
                i = last_digit + 1 + usize::from(label == ID_CARD && check.is_some());
                continue;
            }
            if count >= PHONE_MIN_DIGITS {
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
