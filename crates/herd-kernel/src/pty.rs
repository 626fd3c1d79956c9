//! Pseudo-terminals whose master a checkpointed tree holds: read through a
//! copy of the master ([`inspect`]) and made again as a new pair with the
//! same settings ([`make_master`], [`open_peer`]: async-signal-safe, for the
//! restorer). The slave gets whatever number the new pair has: its name
//! (`ttyname`) may change.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The settings of a pair, and what waits in it.
#[derive(Clone, Debug)]
pub struct PtyState {
    /// Its number (the slave is /dev/pts/N).
    pub number: u32,
    /// The slave is still locked (no unlockpt yet).
    pub locked: bool,
    /// Packet mode (TIOCPKT) is on.
    pub packet: bool,
    pub termios: libc::termios2,
    pub winsize: libc::winsize,
    /// Bytes the slave side wrote that the master has not read.
    pub to_master: usize,
    /// Bytes the master wrote that the slave has not read.
    pub to_slave: usize,
    /// The slave's device and inode (to find its descriptors) and device number (a
    /// process's controlling terminal, /proc/PID/stat `tty_nr`).
    pub slave: (u64, u64, u64),
}

fn ioctl_ptr<T>(fd: i32, req: libc::c_ulong, v: *mut T) -> io::Result<libc::c_int> {
    // SAFETY: each request used here reads or writes one T at `v`, which the caller owns.
    let r = unsafe { libc::ioctl(fd, req as _, v) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Reads the pair of `master` (a copy of a process's master descriptor).
pub fn inspect(master: BorrowedFd<'_>) -> io::Result<PtyState> {
    let fd = master.as_raw_fd();
    let mut number: libc::c_uint = 0;
    ioctl_ptr(fd, libc::TIOCGPTN, &mut number)?;
    let mut locked: libc::c_int = 0;
    ioctl_ptr(fd, libc::TIOCGPTLCK, &mut locked)?;
    let mut packet: libc::c_int = 0;
    ioctl_ptr(fd, libc::TIOCGPKT, &mut packet)?;
    let mut to_master: libc::c_int = 0;
    ioctl_ptr(fd, libc::FIONREAD, &mut to_master)?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let peer = unsafe { libc::ioctl(fd, libc::TIOCGPTPEER as _, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if peer < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us, owned from here.
    let peer = unsafe { OwnedFd::from_raw_fd(peer) };
    let p = peer.as_raw_fd();
    let mut to_slave: libc::c_int = 0;
    ioctl_ptr(p, libc::FIONREAD, &mut to_slave)?;
    // SAFETY: zeroed termios2 and winsize are valid values, filled in below.
    let (mut termios, mut winsize): (libc::termios2, libc::winsize) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    ioctl_ptr(p, libc::TCGETS2, &mut termios)?;
    ioctl_ptr(p, libc::TIOCGWINSZ, &mut winsize)?;
    // SAFETY: fstat fills a zeroed stat on our stack.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we own.
    if unsafe { libc::fstat(p, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PtyState {
        number,
        locked: locked != 0,
        packet: packet != 0,
        termios,
        winsize,
        to_master: to_master.max(0) as usize,
        to_slave: to_slave.max(0) as usize,
        slave: (st.st_dev, st.st_ino, st.st_rdev),
    })
}

/// A pair to make again, prepared before the restorer forks.
#[derive(Clone, Copy)]
pub struct PtyPlan {
    /// The master's status flags (O_NONBLOCK).
    pub flags: i32,
    pub termios: libc::termios2,
    pub winsize: libc::winsize,
    pub locked: bool,
    pub packet: bool,
}

/// Opens a new master (/dev/ptmx of the caller's mount namespace) and gives
/// its pair the settings of `p`. Returns it, or -1 with errno set.
///
/// # Safety
/// Async-signal-safe calls only, no allocation.
pub unsafe fn make_master(p: &PtyPlan) -> i32 {
    // SAFETY: open, ioctl and close on our own descriptor with values on this stack.
    unsafe {
        let t = libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | (p.flags & libc::O_NONBLOCK));
        if t < 0 {
            return -1;
        }
        let unlock: libc::c_int = 0;
        let packet: libc::c_int = 1;
        let ok = (p.locked || libc::ioctl(t, libc::TIOCSPTLCK as _, &unlock) == 0)
            // On a master these set its slave's settings.
            && libc::ioctl(t, libc::TCSETS2 as _, &p.termios) == 0
            && libc::ioctl(t, libc::TIOCSWINSZ as _, &p.winsize) == 0
            && (!p.packet || libc::ioctl(t, libc::TIOCPKT as _, &packet) == 0);
        if !ok {
            let e = *libc::__errno_location();
            libc::close(t);
            *libc::__errno_location() = e;
            return -1;
        }
        t
    }
}

/// Opens the slave of `master` with the status flags `flags` (the access
/// mode and O_NONBLOCK), without making it a controlling terminal.
///
/// # Safety
/// Async-signal-safe calls only.
pub unsafe fn open_peer(master: i32, flags: i32) -> i32 {
    // SAFETY: TIOCGPTPEER takes open flags by value.
    unsafe { libc::ioctl(master, libc::TIOCGPTPEER as _, (flags & (libc::O_ACCMODE | libc::O_NONBLOCK)) | libc::O_NOCTTY) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// A pair read and made again has the same settings; the new pair carries bytes both ways.
    #[test]
    fn a_pair_made_again_has_its_settings() {
        // SAFETY: plain calls on descriptors we own.
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        if master < 0 {
            eprintln!("SKIP a_pair_made_again_has_its_settings: no /dev/ptmx here ({})", io::Error::last_os_error());
            return;
        }
        // SAFETY: just opened.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: unlockpt on our master.
        assert_eq!(unsafe { libc::unlockpt(master.as_raw_fd()) }, 0);
        let mut s = inspect(master.as_fd()).unwrap();
        s.termios.c_lflag &= !libc::ECHO;
        s.winsize = libc::winsize { ws_row: 33, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0 };
        assert!(!s.locked && !s.packet && s.to_master == 0 && s.to_slave == 0);
        let plan = PtyPlan { flags: 0, termios: s.termios, winsize: s.winsize, locked: false, packet: false };
        // SAFETY: called in a plain thread.
        let m2 = unsafe { make_master(&plan) };
        assert!(m2 >= 0, "{}", io::Error::last_os_error());
        // SAFETY: returned to us.
        let m2 = unsafe { OwnedFd::from_raw_fd(m2) };
        let again = inspect(m2.as_fd()).unwrap();
        assert_eq!(again.termios.c_lflag, s.termios.c_lflag);
        assert_eq!((again.winsize.ws_row, again.winsize.ws_col), (33, 101));
        // SAFETY: as above.
        let slave = unsafe { open_peer(m2.as_raw_fd(), libc::O_RDWR) };
        assert!(slave >= 0, "{}", io::Error::last_os_error());
        // SAFETY: returned to us.
        let mut slave = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(slave) });
        let mut m = std::fs::File::from(m2);
        m.write_all(b"in\n").unwrap();
        let mut b = [0u8; 3];
        slave.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"in\n");
        slave.write_all(b"out").unwrap();
        m.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"out");
    }
}
