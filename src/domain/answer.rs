//! A free-text answer as typed by a user, checked for the things no step accepts.

/// Longest answer accepted at any step, in characters.
pub const MAX_ANSWER_CHARS: usize = 1000;

/// Text that is non-empty, within the length limit and free of control characters.
/// Leading and trailing whitespace is trimmed; everything else is kept exactly as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("empty answer")]
    Empty,
    #[error("answer of {length} characters is over the limit of {limit}")]
    TooLong { length: usize, limit: usize },
    #[error("answer contains control characters")]
    ControlCharacters,
}

impl Answer {
    pub fn parse(raw: &str) -> Result<Self, AnswerError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AnswerError::Empty);
        }
        let length = trimmed.chars().count();
        if length > MAX_ANSWER_CHARS {
            return Err(AnswerError::TooLong { length, limit: MAX_ANSWER_CHARS });
        }
        // Newlines and tabs come from multi-line text inputs; every other control character is refused.
        if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(AnswerError::ControlCharacters);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the whole answer is this keyword, ignoring case (`cancel`, `back`, `skip`).
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.0.eq_ignore_ascii_case(keyword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_keeps_text_intact() {
        let a = Answer::parse("  Claims intake — שלום 🚀 ; DROP TABLE pilots; --  ").unwrap();
        assert_eq!(a.as_str(), "Claims intake — שלום 🚀 ; DROP TABLE pilots; --");
    }

    #[test]
    fn refuses_empty_long_and_control() {
        assert_eq!(Answer::parse("   \t "), Err(AnswerError::Empty));
        let long = "x".repeat(1001);
        assert_eq!(Answer::parse(&long), Err(AnswerError::TooLong { length: 1001, limit: 1000 }));
        assert!(Answer::parse(&"é".repeat(1000)).is_ok());
        assert_eq!(Answer::parse("a\u{7}b"), Err(AnswerError::ControlCharacters));
        assert!(Answer::parse("line one\nline two").is_ok());
    }

    #[test]
    fn keywords_ignore_case_but_not_extra_words() {
        let a = Answer::parse("Cancel").unwrap();
        assert!(a.is_keyword("cancel"));
        assert!(!Answer::parse("cancel it").unwrap().is_keyword("cancel"));
    }
}
