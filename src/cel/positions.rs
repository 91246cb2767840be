//! Where the nodes of a parsed expression sit in the source, for errors found after parsing
//! (the type check), which cel-go points at the node's token: an operator, the `.` of a
//! select, the `(` of a call.
//!
//! cel-parser 0.10 records the token of every node id while it parses but hands that record
//! out only attached to parse errors. So the text is parsed once more with a stray `)` after
//! it: the parser reports the extraneous token after building the very same tree (the ids are
//! handed out in the same order), and its error carries the record. Only done when there is
//! an error to place.

use std::collections::HashMap;

use super::errors::Located;
use super::optional::Rewrite;

/// The byte offsets (in the rewritten text) of the tokens of `ids`; ids it cannot place are
/// left out.
fn offsets(text: &str, ids: &[u64]) -> HashMap<u64, usize> {
    // On a line of its own: the text may end in a comment.
    let text = format!("{text}\n)");
    let ids = ids.to_vec();
    std::thread::Builder::new()
        .name(super::PARSE_THREAD.into())
        .stack_size(super::PARSE_STACK)
        .spawn(move || {
            let Err(failed) = cel_parser::Parser::new().parse(&text) else {
                return HashMap::new();
            };
            let Some(info) = failed.errors.first().and_then(|e| e.source_info.clone()) else {
                return HashMap::new();
            };
            ids.iter()
                .filter_map(|id| {
                    let (start, _) = info.offset_for(*id)?;
                    Some((*id, usize::try_from(start).ok()?))
                })
                .collect()
        })
        .ok()
        .and_then(|thread| thread.join().ok())
        .unwrap_or_default()
}

/// `(id, message)` errors placed in `source` (written as `rewrite` for the parser); an id
/// that cannot be placed gets line 0, which cel-go prints without a snippet.
pub fn locate(source: &str, rewrite: &Rewrite, found: Vec<(u64, String)>) -> Vec<Located> {
    let ids: Vec<u64> = found.iter().map(|(id, _)| *id).collect();
    let offsets = offsets(&rewrite.text, &ids);
    found
        .into_iter()
        .map(|(id, message)| {
            let at = offsets
                .get(&id)
                .and_then(|offset| rewrite.text.get(..*offset))
                .map(|before| before.chars().count())
                .and_then(|index| rewrite.origin.get(index).copied());
            match at {
                Some(index) => at_char(source, index, message),
                None => Located {
                    line: 0,
                    column: 0,
                    message,
                },
            }
        })
        .collect()
}

/// An error at character `index` of `source`, as a 1-based line and column.
pub fn at_char(source: &str, index: usize, message: String) -> Located {
    let mut located = Located {
        line: 1,
        column: 1,
        message,
    };
    for c in source.chars().take(index) {
        if c == '\n' {
            located.line += 1;
            located.column = 1;
        } else {
            located.column += 1;
        }
    }
    located
}
