//! Fuzz-style property tests for what clients send in query strings: label and field selectors
//! and continue tokens. A seeded mutator (no nightly toolchain needed) bends valid inputs into
//! near-valid and invalid ones; every input class runs for a bounded number of cases and time.
//! The properties: parsing never panics, and whatever parses prints back to text that parses
//! to the same thing.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::paging::ContinueToken;
use super::selectors::{FieldSelector, LabelSelector};

/// Cases per input class, and the most time one class may take on a slow machine.
const CASES: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(5);

/// xorshift64*: deterministic, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to the parsers, plus a few that should mean nothing.
const ALPHABET: &[&str] = &[
    "=", "==", "!=", "!", ",", "(", ")", " ", "in", "notin", "<", ">", "-", ".", "/", "_", "a",
    "Z", "9", "\\", "\"", "'", "\t", "\n", "\u{0}", "é", "🦀", "=", "%", "+", "*",
];

/// One random edit of `input`, at a character boundary.
fn mutate(rng: &mut Rng, input: &str) -> String {
    let chars: Vec<char> = input.chars().collect();
    let at = rng.below(chars.len() + 1);
    let mut out: String;
    match rng.below(5) {
        0 => {
            out = chars[..at].iter().collect();
            out.push_str(ALPHABET[rng.below(ALPHABET.len())]);
            out.extend(&chars[at..]);
        }
        1 if !chars.is_empty() => {
            let end = (at + 1 + rng.below(4)).min(chars.len());
            out = chars[..at.min(end)].iter().chain(&chars[end..]).collect();
        }
        2 if !chars.is_empty() => {
            // Repeat a span: nesting and long inputs.
            let end = (at + 1 + rng.below(8)).min(chars.len());
            let span: String = chars[at.min(end)..end].iter().collect();
            out = chars[..end].iter().collect();
            for _ in 0..rng.below(50) + 1 {
                out.push_str(&span);
            }
            out.extend(&chars[end..]);
        }
        3 => {
            // Swap two characters.
            let mut chars = chars;
            if chars.len() > 1 {
                let other = rng.below(chars.len());
                let at = at.min(chars.len() - 1);
                chars.swap(at, other);
            }
            out = chars.into_iter().collect();
        }
        _ => {
            out = chars[..at].iter().collect();
            out.push(char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'));
            out.extend(&chars[at..]);
        }
    }
    out
}

/// Feeds `CASES` mutants of `seeds` (each mutant the parent of the next few) to `check`, which
/// must not panic; a panic fails the test with the input that caused it.
fn run_class(name: &str, seeds: &[&str], mut check: impl FnMut(&str)) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let started = Instant::now();
    let mut current = seeds[0].to_string();
    for case in 0..CASES {
        if case % 8 == 0 {
            current = seeds[rng.below(seeds.len())].to_string();
        }
        current = mutate(&mut rng, &current);
        if current.len() > 64 * 1024 {
            current = seeds[0].to_string();
        }
        let input = current.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        assert!(outcome.is_ok(), "{name}: case {case} panicked on {input:?}");
        if started.elapsed() > BUDGET {
            break;
        }
    }
}

const LABEL_SELECTORS: &[&str] = &[
    "app=web",
    "app==web,tier!=db",
    "env in (prod, staging),!canary",
    "example.com/owner notin (a,b,c)",
    "has-it",
    "x>3,y<10",
    "",
];

#[test]
fn mutated_label_selectors_never_panic_and_what_parses_prints_back_the_same() {
    let labels: BTreeMap<String, String> = [("app", "web"), ("env", "prod"), ("x", "5")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    run_class("label selector", LABEL_SELECTORS, |input| {
        if let Ok(selector) = LabelSelector::parse(input) {
            selector.matches(&labels);
            let printed = selector.to_string();
            let again = LabelSelector::parse(&printed)
                .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
            assert_eq!(again.to_string(), printed, "from {input:?}");
        }
    });
}

const FIELD_SELECTORS: &[&str] = &[
    "metadata.name=web",
    "metadata.namespace!=kube-system,spec.nodeName=node-1",
    "status.phase==Running",
    "spec.nodeName=",
    "metadata.name=a\\,b",
];

#[test]
fn mutated_field_selectors_never_panic() {
    let pod = serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running"},
    });
    run_class("field selector", FIELD_SELECTORS, |input| {
        if let Ok(selector) = FieldSelector::parse(input) {
            let _ = selector.validate_for("Pod");
            let _ = selector.matches_object("Pod", &pod);
            let _ = selector.fields().count();
        }
    });
}

#[test]
fn mutated_continue_tokens_never_panic_and_what_decodes_encodes_back_the_same() {
    let valid: Vec<String> = [(1, "/registry/pods/default/a"), (u64::MAX, "/x")]
        .into_iter()
        .map(|(revision, start)| {
            ContinueToken {
                revision,
                start_after: start.to_string(),
            }
            .encode()
        })
        .collect();
    let seeds: Vec<&str> = valid.iter().map(String::as_str).collect();
    run_class("continue token", &seeds, |input| {
        if let Ok(token) = ContinueToken::decode(input) {
            assert_eq!(
                ContinueToken::decode(&token.encode()).as_ref(),
                Ok(&token),
                "from {input:?}"
            );
        }
    });
}
