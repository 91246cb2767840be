//! Expressions that end where an operand must follow (`x +`, `a &&`, `x ? y :`): cel-parser
//! 0.10 panics on them instead of reporting, so they are found before it runs, by their last
//! token, and reported as cel-go does, at the end of the input.

use super::errors::Located;
use super::positions::at_char;

/// What cel-go's parser expects where an expression must start.
const EXPECTING_EXPRESSION: &str = "{'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', \
     NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}";

/// Operators that need an operand after them.
const OPERATORS: [&str; 17] = [
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "?", ":", "in", "!",
];

/// cel-go's error for `source` when it ends in an operator that needs an operand.
pub fn trailing_operator(source: &str) -> Option<Located> {
    let last = last_token(source)?;
    OPERATORS
        .contains(&last.as_str())
        .then(|| end_of_input(source))
}

/// cel-go's error for input that ends too early, at the end of `source`.
pub fn end_of_input(source: &str) -> Located {
    at_char(
        source,
        source.chars().count(),
        format!("Syntax error: mismatched input '<EOF>' expecting {EXPECTING_EXPRESSION}"),
    )
}

/// The last token of `source`, outside strings and comments; None when it ends inside a
/// string (the lexer reports that itself) or has no token.
fn last_token(source: &str) -> Option<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut last: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            i = after_string(&chars, i, false)?;
            last = Some("literal".into());
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A raw or bytes prefix belongs to the string right after it.
            let prefix = word.len() <= 2 && word.chars().all(|c| "rRbB".contains(c));
            if prefix && matches!(chars.get(i), Some('"' | '\'')) {
                i = after_string(&chars, i, word.contains(['r', 'R']))?;
                last = Some("literal".into());
                continue;
            }
            last = Some(word);
        } else if c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != '`' {
                i += 1;
            }
            i += 1;
            last = Some("identifier".into());
        } else {
            let pair: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let two = ["==", "!=", "<=", ">=", "&&", "||"].contains(&pair.as_str());
            let width = if two { 2 } else { 1 };
            last = Some(chars[i..i + width].iter().collect());
            i += width;
        }
    }
    last
}

/// The index after the string literal opening at `start` (triple quotes too; in a raw one a
/// backslash escapes nothing); None when it does not close.
fn after_string(chars: &[char], start: usize, raw: bool) -> Option<usize> {
    let quote = chars[start];
    let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < chars.len() {
        match chars[i] {
            '\\' if !raw => i += 2,
            c if c == quote => {
                if !triple {
                    return Some(i + 1);
                }
                if chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                    return Some(i + 3);
                }
                i += 1;
            }
            '\n' if !triple => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_token_skips_strings_and_comments() {
        assert_eq!(last_token("x +").as_deref(), Some("+"));
        assert_eq!(last_token("a &&  \n").as_deref(), Some("&&"));
        assert_eq!(last_token("x ? y :").as_deref(), Some(":"));
        assert_eq!(last_token("x + // trailing +").as_deref(), Some("+"));
        assert_eq!(last_token("'a +'").as_deref(), Some("literal"));
        assert_eq!(last_token("'''a\n+''' +").as_deref(), Some("+"));
        assert_eq!(last_token("r'\\' +").as_deref(), Some("+"));
        assert_eq!(last_token("b\"x\" in").as_deref(), Some("in"));
        assert_eq!(last_token("'open +"), None);
        assert_eq!(last_token("x.`a-b`").as_deref(), Some("identifier"));
    }

    #[test]
    fn trailing_operators_are_reported_at_the_end_of_the_input() {
        let at = |s: &str| trailing_operator(s).map(|l| (l.line, l.column));
        assert_eq!(at("x +"), Some((1, 4)));
        assert_eq!(at("a && "), Some((1, 6)));
        assert_eq!(at("x ? y :"), Some((1, 8)));
        assert_eq!(at("x ==\n"), Some((2, 1)));
        assert_eq!(at("x + 1"), None);
        assert_eq!(at("x.all(e, e > 0)"), None);
    }
}
