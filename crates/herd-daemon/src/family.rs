//! Families: every process that a migratable process starts is migratable too, in the
//! same job (MOSIX's `mosrun` made a process *and all its children* migratable).
//!
//! A process at home forks at home; a remote process forks where it runs, and its child's
//! deputy is made at home by the fork itself, which registers the child
//! (`migrate::Actor::forked`). So every new process of a job has its pid on its home node,
//! as a child of a process — or of the deputy of a process — that herdd knows. herdd
//! looks for the ones born at home
//! every [`SCAN`] in `/proc/PID/task/*/children` of each migratable process while it has
//! up to [`MANY`] of them; with more, at each look of [`crate::sampler`] (every second),
//! by their parent pid, which that look has read of every process anyway. Each new one
//! is adopted into its parent's job ([`migrate::adopt_child`]), with its parent's lock.
//! Not adopted: a process of another owner or with changed ids (a set-id program), one
//! that runs natively (`herd run --native`) and what descends from it (it is never
//! walked). A process that lives less than a scan is not seen, and is not worth moving.
//!
//! Once adopted, a process is on its own: the balancer and `herd migrate` move it
//! like any other, and its parent may move with children left at home — they stay
//! the deputy's children, which waits for them, signals them and is signalled by them
//! exactly as the parent would be.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Shared;
use crate::migrate;
use crate::sampler::Look;

/// How often herdd looks for the new processes of its jobs, while it has few.
pub const SCAN: Duration = Duration::from_millis(100);

/// With more migratable processes than this, new ones are found at each look at the node
/// (every second) by their parent pid: ten looks a second at each one's `children` files
/// would cost a fifth of a CPU with a thousand.
pub const MANY: usize = 100;

/// Runs until herdd stops.
pub async fn run(shared: Arc<Shared>) {
    let mut looks = shared.looks.subscribe();
    let mut known = 0;
    loop {
        let s = shared.clone();
        if known <= MANY {
            tokio::time::sleep(SCAN).await;
            // /proc reads: off the runtime's threads.
            known = tokio::task::spawn_blocking(move || {
                scan(&s);
                migrate::counts(&s).0
            })
            .await
            .unwrap_or(known);
        } else {
            if looks.changed().await.is_err() {
                return; // herdd is stopping
            }
            let look = looks.borrow_and_update().clone();
            known = tokio::task::spawn_blocking(move || {
                scan_by_parent(&s, &look);
                migrate::counts(&s).0
            })
            .await
            .unwrap_or(known);
        }
    }
}

/// Adopts every new descendant of the migratable processes that `look` saw (children of
/// children included). Returns how many were adopted.
pub fn scan_by_parent(shared: &Arc<Shared>, look: &Look) -> usize {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, seen) in &look.procs {
        kids.entry(seen.ppid).or_default().push(pid);
    }
    adopt_from(shared, |parent| kids.get(&parent).cloned().unwrap_or_default())
}

/// One look: adopts every new descendant of the migratable processes (children of
/// children found in the same look included). Returns how many were adopted.
pub fn scan(shared: &Arc<Shared>) -> usize {
    adopt_from(shared, herd_checkpoint::children)
}

/// Adopts the new children (as `children` lists them) of every migratable process, and
/// theirs.
fn adopt_from(shared: &Arc<Shared>, children: impl Fn(i32) -> Vec<i32>) -> usize {
    let mut queue = migrate::adopted(shared);
    let mut n = 0;
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
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
    fn children_of_this_process() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let (me, id) = (std::process::id() as i32, child.id() as i32);
        // A `children` file may miss an entry while the list changes (the kernel's own
        // caveat; other tests' children come and go meanwhile): looked at again a while.
        let listed = |want: bool| {
            (0..200).any(|_| {
                let seen = children(me).contains(&id) == want;
                if !seen {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                seen
            })
        };
        assert!(listed(true), "{id} is not listed: {:?}", children(me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(listed(false), "{id} is still listed once reaped");
        assert!(children(i32::MAX).is_empty());
    }
}
