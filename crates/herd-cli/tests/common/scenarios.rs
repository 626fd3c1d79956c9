//! Running the scenarios of a multi-node test on one cluster: in order, each caught on
//! its own so that one failing does not hide the next; `<ONLY_VAR>=word,word` runs those
//! whose names contain a word.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

pub type Scenario<L> = fn(&L);

/// Runs `list` on `lab` (`before` ahead of each, `on_failure` prints what helps after a
/// failure); returns how many ran and the failures with their messages.
pub fn run<'a, L>(
    list: &[(&'a str, Scenario<L>)],
    only_var: &str,
    lab: &L,
    before: impl Fn(&L),
    on_failure: impl Fn(&L),
) -> (usize, Vec<(&'a str, String)>) {
    let only: Option<Vec<String>> =
        std::env::var(only_var).ok().map(|s| s.split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect());
    let mut failed = Vec::new();
    let mut ran = 0;
    for &(name, scenario) in list {
        if only.as_ref().is_some_and(|words| !words.iter().any(|w| name.contains(w.as_str()))) {
            continue;
        }
        ran += 1;
        println!("=== {name}");
        let start = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| {
            before(lab);
            scenario(lab);
        })) {
            Ok(()) => println!("=== {name}: ok ({:.1?})", start.elapsed()),
            Err(e) => {
                let msg = panic_text(&*e);
                println!("=== {name}: FAILED after {:.1?}: {msg}", start.elapsed());
                on_failure(lab);
                failed.push((name, msg));
            }
        }
    }
    (ran, failed)
}

pub fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Panics with the first line of each failure (each was printed in full as it failed).
pub fn report(what: &str, ran: usize, failed: &[(&str, String)], kept: &std::path::Path) {
    if failed.is_empty() {
        return;
    }
    let list: Vec<String> = failed.iter().map(|(n, m)| format!("  {n}: {}", m.lines().next().unwrap_or_default())).collect();
    panic!("{} of {ran} {what} failed (the cluster's logs and programs are kept in {}):\n{}", failed.len(), kept.display(), list.join("\n"));
}
