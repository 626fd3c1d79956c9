//! Families: every process that a migratable process starts is migratable too, in the
//! same job (MOSIX's `mosrun` made a process *and all its children* migratable).
//!
//! A process forks at home: a remote process that forks comes home for it (the call is
//! home-only), so every new process of a job is born on its home node, as a child of a
//! process — or of the deputy of a process — that herdd knows. herdd looks for them
//! every [`SCAN`] (longer with many processes: [`scan_every`]) in
//! `/proc/PID/task/*/children` of each migratable process and adopts
//! each new one into its parent's job ([`migrate::adopt_child`]), with its parent's lock.
//! Not adopted: a process of another owner or with changed ids (a set-id program), one
//! that runs natively (`herd run --native`) and what descends from it (it is never
//! walked). A process that lives less than a scan is not seen, and is not worth moving.
//!
//! Once adopted, a process is on its own: the balancer and `herd migrate` move it
//! like any other, and its parent may move with children left at home — they stay
//! the deputy's children, which waits for them, signals them and is signalled by them
//! exactly as the parent would be.

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Shared;
use crate::migrate;

/// How often herdd looks for the new processes of its jobs.
pub const SCAN: Duration = Duration::from_millis(100);

/// The pause between looks with `n` migratable processes: [`SCAN`] up to 100 of them,
/// then 1 ms more for each, up to 1 s (a look reads two /proc files per process: with a
/// thousand processes, ten looks a second cost a fifth of a CPU).
pub fn scan_every(n: usize) -> Duration {
    SCAN.max(Duration::from_millis(n as u64)).min(Duration::from_secs(1))
}

/// Runs until herdd stops.
pub async fn run(shared: Arc<Shared>) {
    let mut known = 0;
    loop {
        tokio::time::sleep(scan_every(known)).await;
        let s = shared.clone();
        // /proc reads: off the runtime's threads.
        known = tokio::task::spawn_blocking(move || {
            scan(&s);
            migrate::counts(&s).0
        })
        .await
        .unwrap_or(known);
    }
}

/// One look: adopts every new descendant of the migratable processes (children of
/// children found in the same look included). Returns how many were adopted.
pub fn scan(shared: &Arc<Shared>) -> usize {
    let mut queue = migrate::adopted(shared);
    let mut n = 0;
    while let Some(parent) = queue.pop() {
        for child in herd_checkpoint::children(parent) {
            if migrate::adopt_child(shared, child, parent) {
                n += 1;
                queue.push(child);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use herd_checkpoint::children;

    #[test]
    fn looks_less_often_with_many_processes() {
        use super::{scan_every, SCAN};
        use std::time::Duration;
        assert_eq!(scan_every(0), SCAN);
        assert_eq!(scan_every(100), SCAN);
        assert_eq!(scan_every(400), Duration::from_millis(400));
        assert_eq!(scan_every(5000), Duration::from_secs(1));
    }

    #[test]
    fn children_of_this_process() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let me = std::process::id() as i32;
        assert!(children(me).contains(&(child.id() as i32)), "{:?}", children(me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children(me).contains(&(child.id() as i32)));
        assert!(children(i32::MAX).is_empty());
    }
}
