//! Rewrites JDBC-style `?` placeholders to DataFusion's positional `$1`, `$2`, ….

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, TokenizerError};

/// Why placeholders could not be numbered.
#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    /// The SQL text does not tokenize.
    #[error("SQL error: {0}")]
    Tokenize(#[from] TokenizerError),
    /// `?` and `$n` placeholders in one statement.
    #[error("SQL error: use either ? or $1-style placeholders, not both")]
    Mixed,
    /// A `?` token the tokenizer reported was not found at its position: a bug of ours.
    #[error("could not locate every ? placeholder in the SQL text")]
    NotLocated,
}

impl PlaceholderError {
    /// True when the SQL text is at fault rather than this module.
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, Self::NotLocated)
    }
}

/// Returns the SQL with every `?` placeholder replaced by `$n`, numbered left to right.
///
/// Only real placeholder tokens are replaced: a `?` inside a string literal, a quoted
/// identifier or a comment is left alone. SQL without `?` is returned unchanged.
pub fn number_question_marks(sql: &str) -> Result<String, PlaceholderError> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location()?;
    let mut positions = Vec::new();
    let mut has_dollar = false;
    for token in &tokens {
        if let Token::Placeholder(p) = &token.token {
            if p == "?" {
                positions.push((token.span.start.line, token.span.start.column));
            } else if p.starts_with('$') {
                has_dollar = true;
            }
        }
    }
    if positions.is_empty() {
        return Ok(sql.to_string());
    }
    if has_dollar {
        return Err(PlaceholderError::Mixed);
    }
    // Spans count lines and characters from 1; walk the text once to turn them into byte offsets.
    let mut out = String::with_capacity(sql.len() + positions.len() * 2);
    let mut next = positions.iter().peekable();
    let (mut line, mut column) = (1u64, 1u64);
    let mut number = 0usize;
    for ch in sql.chars() {
        if next.peek() == Some(&&(line, column)) && ch == '?' {
            next.next();
            number += 1;
            out.push('$');
            out.push_str(&number.to_string());
        } else {
            out.push(ch);
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    if next.peek().is_some() {
        debug_assert!(false, "a ? placeholder token was not found in the text");
        return Err(PlaceholderError::NotLocated);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_in_order() {
        assert_eq!(
            number_question_marks("SELECT * FROM t WHERE a = ? AND b > ?").unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b > $2"
        );
    }

    #[test]
    fn more_than_nine_placeholders_keep_their_order() {
        let sql = format!("SELECT {}", ["?"; 12].join(", "));
        let expected = format!(
            "SELECT {}",
            (1..=12)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(number_question_marks(&sql).unwrap(), expected);
    }

    #[test]
    fn question_marks_in_literals_and_comments_are_kept() {
        let sql = "SELECT '?', \"a?\" -- why?\nFROM t WHERE x = ?";
        assert_eq!(
            number_question_marks(sql).unwrap(),
            "SELECT '?', \"a?\" -- why?\nFROM t WHERE x = $1"
        );
    }

    #[test]
    fn dollar_placeholders_pass_through() {
        let sql = "SELECT $1, $2";
        assert_eq!(number_question_marks(sql).unwrap(), sql);
    }

    #[test]
    fn multibyte_text_before_a_placeholder_is_handled() {
        assert_eq!(
            number_question_marks("SELECT 'é✓' AS x, ?").unwrap(),
            "SELECT 'é✓' AS x, $1"
        );
    }
}
