//! Waiting for a child of a test with a time limit.

use std::process::{Child, Output};
use std::time::Duration;

use herd_kernel::pidfd::PidFd;

/// Waits for `child` (its pipes read to the end) within `limit`; past it, sends the child
/// `signal` and panics.
pub fn finish(child: Child, limit: Duration, signal: i32) -> Output {
    let pid = child.id();
    // Opened before the waiter thread exists, while the child cannot have been reaped
    // (a zombie still holds its pid): the pidfd names this process and no other, even if
    // the waiter reaps it and the pid is reused before the signal below is sent.
    let pidfd = PidFd::open(pid as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for a child"),
        Err(_) => {
            match &pidfd {
                // An error here (ESRCH) means it has ended and been reaped meanwhile.
                Ok(p) => {
                    let _ = p.send_signal(signal);
                }
                // No pidfd (a kernel before 5.3, or seccomp forbids pidfd_open): signal
                // the pid as before. The waiter could have reaped the child just now and
                // the pid been reused, a small race we cannot close without a pidfd.
                Err(_) => {
                    // SAFETY: kill takes plain integers.
                    unsafe { libc::kill(pid as i32, signal) };
                }
            }
            panic!("pid {pid} did not end within {limit:?}; sent it signal {signal}");
        }
    }
}
