//! A channel to a thread that waits in poll(2): each message also adds to an eventfd
//! the thread polls beside its other descriptors (a seccomp listener, a userfaultfd),
//! so that it wakes for messages too (one read empties it: a forwarded call's answer
//! costs its thread one system call less than with a pipe).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{Receiver, Sender};

/// The sending half, kept by the stream task.
pub struct WakeSender<T> {
    tx: Sender<T>,
    wake: OwnedFd,
}

impl<T> WakeSender<T> {
    /// Queues `msg` and wakes the thread; false once the thread is gone.
    pub fn send(&self, msg: T) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
        true
    }
}

/// The receiving half, on the polling thread.
pub struct WakeReceiver<T> {
    pub rx: Receiver<T>,
    wake: OwnedFd,
}

impl<T> WakeReceiver<T> {
    /// Empties the eventfd (after poll said it is readable); the messages stay in `rx`.
    pub fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(self.wake.as_raw_fd(), &mut b);
    }
}

impl<T> AsFd for WakeReceiver<T> {
    /// The eventfd to poll.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

pub fn channel<T>() -> std::io::Result<(WakeSender<T>, WakeReceiver<T>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    // SAFETY: eventfd(2) with flags only; its result is checked before it is owned.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let r = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let w = r.try_clone()?;
    Ok((WakeSender { tx, wake: w }, WakeReceiver { rx, wake: r }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wake_the_poller_and_arrive_in_order() {
        let (tx, rx) = channel::<u32>().unwrap();
        assert!(tx.send(1) && tx.send(2));
        let mut fds = [nix::poll::PollFd::new(rx.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(), 1);
        rx.drain();
        let mut fds = [nix::poll::PollFd::new(rx.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(), 0);
        assert_eq!(rx.rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        drop(rx);
        assert!(!tx.send(3));
    }
}
