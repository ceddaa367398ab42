//! BERT's uncased tokenizer: normalise, split into words and punctuation, then WordPiece.
//!
//! Written to give exactly the ids of the reference (Hugging Face `tokenizers`' `BertNormalizer`
//! with `clean_text`, `handle_chinese_chars`, accent stripping and lower-casing, its
//! `BertPreTokenizer` and `WordPiece` with `##` continuations); `tests/encoder.rs` checks every
//! Banking77 test sentence and a set of awkward strings against ids that implementation produced.
//! The one known difference: characters unassigned in the reference's older Unicode tables but
//! assigned since (recent emoji) become `[UNK]` here instead of being dropped.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::error::{LearnError, Result};

/// Words longer than this many characters become one `[UNK]` (the reference's limit).
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary and the special tokens a sentence is framed with.
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
}

impl WordPiece {
    /// Reads a `vocab.txt`: one token per line, its id the 0-based line number.
    pub fn from_vocab(text: &str) -> Result<Self> {
        let mut ids = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim_end_matches('\r');
            let id = u32::try_from(i)
                .map_err(|_| LearnError::ModelFormat("vocabulary has too many entries".into()))?;
            // The first occurrence wins, as in the reference.
            ids.entry(token.to_string()).or_insert(id);
        }
        let special = |t: &str| {
            ids.get(t)
                .copied()
                .ok_or_else(|| LearnError::ModelFormat(format!("vocabulary has no {t} token")))
        };
        Ok(WordPiece {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            ids,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if the vocabulary is empty (never, once constructed).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids of `text` framed as `[CLS] … [SEP]`, at most `max_len` in all (the words past
    /// the limit are dropped, as the reference's truncation does). `max_len` ≥ 2.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let budget = max_len.saturating_sub(2);
        let mut out = Vec::with_capacity(16);
        out.push(self.cls);
        let normalised = normalise(text);
        'words: for word in pre_tokenise(&normalised) {
            for id in self.word_pieces(word) {
                if out.len() > budget {
                    break 'words;
                }
                out.push(id);
            }
        }
        out.push(self.sep);
        out
    }

    /// Greedy longest-match-first WordPiece of one word; the whole word is `[UNK]` if any
    /// part of it cannot be matched.
    fn word_pieces(&self, word: &str) -> Vec<u32> {
        if word.chars().count() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                candidate.clear();
                if start > 0 {
                    candidate.push_str("##");
                }
                candidate.push_str(&word[start..end]);
                if let Some(&id) = self.ids.get(&candidate) {
                    found = Some(id);
                    break;
                }
                // Step back one character (not one byte).
                end = word[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => return vec![self.unk],
            }
        }
        pieces
    }
}

/// Clean (drop NUL, U+FFFD and control/format/private/unassigned characters; every kind of
/// whitespace becomes a space), put spaces around CJK ideographs, strip accents (NFD, drop
/// non-spacing marks), lower-case — in the reference's order.
fn normalise(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_cjk_ideograph(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    cleaned
        .nfd()
        .filter(|&c| c.general_category() != GeneralCategory::NonspacingMark)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Splits on whitespace (dropped) and punctuation (each mark its own word).
fn pre_tokenise(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
        } else if is_punctuation(c) {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            words.push(&text[i..i + c.len_utf8()]);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

fn is_whitespace(c: char) -> bool {
    c == '\t' || c == '\n' || c == '\r' || c.is_whitespace()
}

/// Control, format, private-use or unassigned (Unicode "Other" except surrogates, which a
/// `char` cannot hold), but not tab, newline or carriage return, which count as whitespace.
fn is_control(c: char) -> bool {
    if c == '\t' || c == '\n' || c == '\r' {
        return false;
    }
    c.general_category_group() == GeneralCategoryGroup::Other
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.general_category_group() == GeneralCategoryGroup::Punctuation
}

/// The CJK Unified Ideographs blocks and their extensions and compatibility forms (not kana or
/// hangul, which are written with spaces between words).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        WordPiece::from_vocab(
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\nhello\n,\n!\n我\ncafe\n",
        )
        .unwrap()
    }

    #[test]
    fn greedy_longest_match_with_continuations() {
        assert_eq!(vocab().encode("Unaffable", 64), vec![2, 4, 5, 6, 3]);
    }

    #[test]
    fn punctuation_is_split_and_accents_and_case_are_removed() {
        assert_eq!(
            vocab().encode("HELLO,   Café!", 64),
            vec![2, 7, 8, 11, 9, 3]
        );
    }

    #[test]
    fn unmatched_word_is_one_unknown_and_cjk_splits_per_character() {
        assert_eq!(vocab().encode("unx 我我", 64), vec![2, 1, 10, 10, 3]);
    }

    #[test]
    fn truncation_keeps_the_frame() {
        assert_eq!(vocab().encode("hello hello hello", 4), vec![2, 7, 7, 3]);
    }

    #[test]
    fn a_vocabulary_without_special_tokens_is_refused() {
        assert!(WordPiece::from_vocab("a\nb\n").is_err());
    }
}
