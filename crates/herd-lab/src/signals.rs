//! Signals for the lab's long-lived processes (supervisor, node-init):
//! blocked and read from a signalfd, so that the main loop handles them one
//! at a time. Blocked signals still reach pid 1 of a pid namespace, where a
//! default disposition would make the kernel drop them.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks `signals` in this thread (children started by
    /// std::process::Command get an empty mask back) and opens a signalfd.
    pub fn block(signals: &[Signal]) -> anyhow::Result<Signals> {
        let mut set = SigSet::empty();
        for &s in signals {
            set.add(s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Signals { fd })
    }

    /// The next signal, waiting at most `timeout` (forever if None).
    pub fn next(&self, timeout: Option<Duration>) -> Option<Signal> {
        if let Some(s) = self.pending() {
            return Some(s);
        }
        let t = match timeout {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, t);
        self.pending()
    }

    fn pending(&self) -> Option<Signal> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }
}

/// HH:MM:SS.mmm (UTC) for log lines.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = now.as_secs() % 86400;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600, s / 60 % 60, s % 60, now.subsec_millis())
}

/// A log line on stderr (which the supervisor points at its log file).
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", $crate::signals::timestamp(), format_args!($($arg)*))
    };
}
pub(crate) use log;
