//! Waiting for a child of a test with a time limit.

use std::process::{Child, Output};
use std::time::Duration;

/// Waits for `child` (its pipes read to the end) within `limit`; past it, sends the child
/// `signal` and panics.
pub fn finish(child: Child, limit: Duration, signal: i32) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for a child"),
        Err(_) => {
            // SAFETY: kill takes plain integers; the child is not reaped yet (its waiter
            // is still blocked), so the pid is still ours.
            unsafe { libc::kill(pid as i32, signal) };
            panic!("pid {pid} did not end within {limit:?}; sent it signal {signal}");
        }
    }
}
