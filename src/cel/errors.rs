//! Parse errors worded as cel-go prints them, which is what Kubernetes puts in a refused CRD or
//! ValidatingAdmissionPolicy: `ERROR: <input>:line:column: message`, then the source line and a
//! caret under the column (`.` per character before it; full-width `．`/`＾` under wide
//! characters so the caret lines up in a terminal), errors in source order, one per line.

/// One error: its 1-based line and column (in characters) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// cel-go renders at most this many errors, then says how many it left out.
const MAX_ERRORS: usize = 100;
/// Longer source lines are not shown (cel-go's limit).
const MAX_SNIPPET: usize = 16384;

/// `errors` about `source` as cel-go's `Errors.ToDisplayString` prints them.
pub fn display(source: &str, mut errors: Vec<Located>) -> String {
    errors.sort_by_key(|e| (e.line, e.column));
    let mut out: Vec<String> = errors
        .iter()
        .take(MAX_ERRORS)
        .map(|e| display_one(source, e))
        .collect();
    if errors.len() > MAX_ERRORS {
        out.push(format!(
            "{} more errors were truncated",
            errors.len() - MAX_ERRORS
        ));
    }
    out.join("\n")
}

fn display_one(source: &str, error: &Located) -> String {
    let mut text = format!(
        "ERROR: <input>:{}:{}: {}",
        error.line, error.column, error.message
    );
    let snippet = error
        .line
        .checked_sub(1)
        .and_then(|n| source.split('\n').nth(n))
        .filter(|s| s.len() <= MAX_SNIPPET);
    if let Some(snippet) = snippet {
        let snippet = snippet.replace('\t', " ");
        let mut chars = snippet.chars();
        let mut marker = String::new();
        for c in chars.by_ref().take(error.column.saturating_sub(1)) {
            marker.push(if c.len_utf8() > 1 { '．' } else { '.' });
        }
        marker.push(match chars.next() {
            Some(c) if c.len_utf8() > 1 => '＾',
            _ => '^',
        });
        text.push_str(&format!("\n | {snippet}\n | {marker}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize, message: &str) -> Located {
        Located {
            line,
            column,
            message: message.into(),
        }
    }

    #[test]
    fn the_caret_sits_under_the_column() {
        assert_eq!(
            display(
                "TestAllTypes(){}",
                vec![at(1, 15, "Syntax error: mismatched input '{' expecting <EOF>")]
            ),
            "ERROR: <input>:1:15: Syntax error: mismatched input '{' expecting <EOF>\n | TestAllTypes(){}\n | ..............^"
        );
    }

    #[test]
    fn errors_are_sorted_and_show_their_own_line() {
        let shown = display(
            "1 + 2\n3 +",
            vec![
                at(2, 4, "second"),
                at(2, 1, "Syntax error: mismatched input '3' expecting <EOF>"),
            ],
        );
        assert_eq!(
            shown,
            "ERROR: <input>:2:1: Syntax error: mismatched input '3' expecting <EOF>\n | 3 +\n | ^\nERROR: <input>:2:4: second\n | 3 +\n | ...^"
        );
    }

    #[test]
    fn wide_characters_get_full_width_markers() {
        // cel-go's own case: `   && in.😁` with errors under the emoji and after it.
        let source = "   && in.😁";
        assert_eq!(
            display(source, vec![at(1, 10, "m")]),
            "ERROR: <input>:1:10: m\n |    && in.😁\n | .........＾"
        );
        assert_eq!(
            display(source, vec![at(1, 11, "m")]),
            "ERROR: <input>:1:11: m\n |    && in.😁\n | .........．^"
        );
    }

    #[test]
    fn errors_without_a_line_have_no_snippet() {
        assert_eq!(display("x", vec![at(0, 0, "m")]), "ERROR: <input>:0:0: m");
    }
}
