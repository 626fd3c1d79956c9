//! An exec where the process runs, when the program is the same file there.
//!
//! A process away that calls `execve` would otherwise come home for it (its whole
//! memory moved home, to be thrown away by the exec a moment later). Instead:
//!
//! 1. The node asks home what the path names ([`crate::proto::ToHome::ExecIdentify`];
//!    home answers at once with [`identify`]): the program and the interpreters the
//!    kernel would load for it — a script's `#!` interpreter, an ELF program's PT_INTERP
//!    (ld.so) — each with its size and blake3 hash, opened as the process's owner; or
//!    that nothing is there (the exec fails with ENOENT as at home, without going
//!    there); or why only home can make it (set-user-ID or file capabilities, not
//!    executable by the owner, not an ELF program or a script, another root).
//! 2. The node checks it has the same files at the same paths
//!    ([`crate::direct::Direct::same_here`]), then makes the call itself
//!    ([`Execed::begin`]): the thread is seized, its wait at the notification ended,
//!    and the `execve` injected with the call's own arguments (the hub lets it through
//!    the listener). PTRACE_O_TRACEEXEC says whether it replaced the program.
//! 3. It did: the new program is held at its first instruction while home's deputy
//!    closes the descriptors marked close-on-exec ([`crate::proto::ToHome::Exec`]; the
//!    exec closed them in the process); then it runs ([`Execed::finish`]). It did not
//!    (an error here that home would not have had: a `noexec` mount, ETXTBSY): the call
//!    is made again, and goes home, as every exec of that process from then on.
//!
//! What the new program then loads goes as any other file access of a process away:
//! ld.so's opens and reads are forwarded, its private mappings of libraries are made
//! from the node's identical copies (`Direct::map_copy`).
//!
//! A relative path is asked about made absolute against the process's directory at home
//! (which the node follows), and the exec here is made of that absolute path, written in
//! the thread's stack below what it uses (the process's directory here is not home's) —
//! for a program only: a script's interpreter would see the changed path (its `$0`), so a
//! script by a relative path goes home. `execveat` goes home.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use herd_checkpoint::filehash::FileHashes;
use herd_kernel::abi::{self, Regs};
use herd_kernel::inject::Injector;
use herd_kernel::ptrace::Tracee;
use herd_kernel::seccomp::Notif;
use object::read::elf::{FileHeader, ProgramHeader};

use crate::fork::NotHere;
use crate::proto::{ExecFiles, FileIdentity};

/// The most files one exec may need: the program, then each interpreter in turn (a
/// script run by a script's interpreter…; the kernel stops at 5 levels of binfmt).
const MAX_FILES: usize = 5;

/// The start of a file read for its `#!` line or its ELF program headers.
const HEAD: usize = 64 << 10;

/// Home's side: what `path` (absolute) names for process `pid` — see the module's doc.
pub fn identify(pid: i32, path: &str, hashes: &mut FileHashes) -> ExecFiles {
    if !path.starts_with('/') {
        return ExecFiles::Home("a relative path".into());
    }
    if !herd_checkpoint::restore::same_file("/proc/self/root", &format!("/proc/{pid}/root")) {
        return ExecFiles::Home("its root directory is not herdd's".into());
    }
    let Some(creds) = crate::direct::owner_creds(pid) else {
        return ExecFiles::Home("its owner is not known".into());
    };
    let mut files = Vec::new();
    let mut next = path.to_string();
    loop {
        if files.len() == MAX_FILES {
            return ExecFiles::Home("too many interpreters".into());
        }
        let looked = herd_kernel::task::as_user(&creds, || look(&next, hashes));
        let (file, then) = match looked {
            Ok(Ok(found)) => found,
            // Nothing there: the exec fails so at home (the program's own path only; a
            // missing interpreter is ENOENT too, but home says it).
            Ok(Err(Looked::Missing(errno))) if files.is_empty() => return ExecFiles::Missing(errno),
            Ok(Err(Looked::Missing(errno))) => return ExecFiles::Home(format!("{next}: {}", std::io::Error::from_raw_os_error(errno))),
            Ok(Err(Looked::Home(why))) => return ExecFiles::Home(why),
            Err(e) => return ExecFiles::Home(e.to_string()),
        };
        files.push(file);
        match then {
            Some(interp) => next = interp,
            None => return ExecFiles::Files(files),
        }
    }
}

enum Looked {
    Missing(i32),
    Home(String),
}

/// One file of an exec (as its owner): its identity, and the interpreter it needs.
fn look(path: &str, hashes: &mut FileHashes) -> Result<(FileIdentity, Option<String>), Looked> {
    let mut file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC).open(path) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Err(Looked::Missing(e.raw_os_error().unwrap_or(libc::ENOENT))),
        Err(e) => return Err(Looked::Home(format!("{path}: {e}"))),
    };
    let m = file.metadata().map_err(|e| Looked::Home(format!("{path}: {e}")))?;
    // The largest program an exec away takes from the node's copy: as for mappings.
    if !m.is_file() || m.size() > crate::direct::MAX_COPY {
        return Err(Looked::Home(format!("{path} is not a regular file of at most {} MiB", crate::direct::MAX_COPY >> 20)));
    }
    if privileged(&file) {
        return Err(Looked::Home(format!("{path} is set-user-ID, set-group-ID or has file capabilities")));
    }
    // Executable by the owner (AT_EACCESS: this thread's file-system ids, the owner's).
    let c = std::ffi::CString::new(path).map_err(|_| Looked::Home("a path with a NUL".into()))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the rest are integers.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } != 0 {
        return Err(Looked::Home(format!("{path}: {}", std::io::Error::last_os_error())));
    }
    let mut head = Vec::with_capacity(HEAD);
    (&mut file).take(HEAD as u64).read_to_end(&mut head).map_err(|e| Looked::Home(format!("{path}: {e}")))?;
    let then = interpreter(&head).map_err(|why| Looked::Home(format!("{path}: {why}")))?;
    let (hash, size) = hashes.hash(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd()))).map_err(|e| Looked::Home(format!("{path}: {e}")))?;
    Ok((FileIdentity { path: path.to_string(), size, hash }, then))
}

/// Whether `file` starts with `#!`.
pub fn is_script(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 2];
    file.read_exact_at(&mut head, 0).is_ok() && &head == b"#!"
}

/// Whether running `file` would give the process privileges: set-user-ID or
/// set-group-ID (with a group that may execute it), or file capabilities.
pub fn privileged(file: &std::fs::File) -> bool {
    let mode = file.metadata().map(|m| m.permissions().mode()).unwrap_or(libc::S_ISUID);
    if mode & libc::S_ISUID != 0 || (mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0) {
        return true;
    }
    let name = c"security.capability";
    // SAFETY: a size query (no buffer) of an attribute of an open descriptor.
    let r = unsafe { libc::fgetxattr(file.as_raw_fd(), name.as_ptr(), std::ptr::null_mut(), 0) };
    r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENODATA)
}

/// What the kernel loads to run a file that starts with `head`: a script's interpreter
/// (`#!`, absolute), an ELF program's PT_INTERP, or nothing more (a static program).
/// Err: neither (ENOEXEC or a binfmt_misc handler at home), or a form not followed here.
pub fn interpreter(head: &[u8]) -> Result<Option<String>, String> {
    if let Some(rest) = head.strip_prefix(b"#!") {
        // The kernel reads the first line, up to 256 bytes in all.
        let line = &rest[..rest.len().min(254)];
        let line = match line.iter().position(|&b| b == b'\n') {
            Some(end) => &line[..end],
            None => return Err("its #! line is too long".into()),
        };
        let text = std::str::from_utf8(line).map_err(|_| "its #! line is not UTF-8".to_string())?;
        let interp = text.split([' ', '\t']).find(|w| !w.is_empty()).ok_or("its #! line names no interpreter")?;
        if !interp.starts_with('/') {
            return Err("its #! interpreter is a relative path".into());
        }
        return Ok(Some(interp.to_string()));
    }
    type Header = object::elf::FileHeader64<object::Endianness>;
    let elf = Header::parse(head).map_err(|_| "not an ELF program or a #! script".to_string())?;
    let endian = elf.endian().map_err(|e| e.to_string())?;
    if elf.e_machine(endian) != object::elf::EM_X86_64 {
        return Err("not an x86-64 program".into());
    }
    let headers = elf.program_headers(endian, head).map_err(|_| "its program headers are not at its start".to_string())?;
    for ph in headers {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let bytes = ph.data(endian, head).map_err(|_| "its interpreter's name is not at its start".to_string())?;
            let name = bytes.split(|&b| b == 0).next().unwrap_or_default();
            let name = std::str::from_utf8(name).map_err(|_| "its interpreter's name is not UTF-8".to_string())?;
            if !name.starts_with('/') {
                return Err("its interpreter is a relative path".into());
            }
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

/// The node's side: a program replaced here, held at its first instruction until home
/// has closed the deputy's close-on-exec descriptors.
pub struct Execed {
    tracee: Tracee,
}

impl Execed {
    /// Makes exec call `n` (its thread waits in it; its process's calls are read by a
    /// hub that lets the injected call through) through the `syscall` at `gadget`; of
    /// `path` instead of the call's own when given (written in the thread's stack, below
    /// what it uses: a relative path made absolute).
    pub fn begin(n: &Notif, gadget: u64, path: Option<&str>) -> Result<Execed, NotHere> {
        let tid = n.pid as i32;
        let nr = i64::from(n.nr);
        let (mut t, regs) = crate::fork::seize_in_call(tid, nr, abi::PTRACE_O_TRACEEXEC)?;
        let mut args = [n.args[0], n.args[1], n.args[2]];
        if let Some(path) = path {
            // Below the stack pointer and its red zone (128 bytes): nothing of the thread
            // is there while it is in the call.
            let bytes = [path.as_bytes(), &[0]].concat();
            let at = (regs.rsp.wrapping_sub(512).wrapping_sub(bytes.len() as u64)) & !15;
            if let Err(e) = herd_kernel::mem::write(tid, at, &bytes) {
                crate::fork::restart(t, regs);
                return Err(NotHere::Cannot(format!("writing the path in its stack: {e}")));
            }
            args[0] = at;
        }
        match Injector::new(&mut t, gadget, regs).call_exec(nr as u64, &args) {
            Ok((_, true)) => Ok(Execed { tracee: t }),
            Ok((ret, false)) if ret == -abi::ERESTARTNOINTR || ret == -abi::ERESTARTSYS => {
                crate::fork::restart(t, regs);
                Err(NotHere::Again)
            }
            Ok((ret, false)) => {
                crate::fork::restart(t, regs);
                Err(NotHere::Cannot(format!("it failed here: {}", std::io::Error::from_raw_os_error((-ret) as i32))))
            }
            Err(herd_kernel::KernelError::Died { .. }) => Err(NotHere::Again),
            Err(e) => {
                // Before the program was replaced (else the tracee is at a stop of the
                // new one, and its registers are not these): made again, at home.
                if t.regs().is_ok_and(|r: Regs| r.rip == gadget + 2) {
                    crate::fork::restart(t, regs);
                } else {
                    let _ = t.detach();
                }
                Err(NotHere::Cannot(format!("the exec here: {e}")))
            }
        }
    }

    /// The thread (its id here).
    pub fn thread(&self) -> i32 {
        self.tracee.pid()
    }

    /// Whether it ended while held (killed): its end is taken.
    pub fn ended(&self) -> bool {
        self.tracee.ended()
    }

    /// The new program runs.
    pub fn finish(self) {
        let _ = self.tracee.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_of_scripts_and_programs() {
        assert_eq!(interpreter(b"#!/bin/sh\necho hi\n").unwrap(), Some("/bin/sh".into()));
        assert_eq!(interpreter(b"#! /usr/bin/env python3 -u\n").unwrap(), Some("/usr/bin/env".into()));
        assert!(interpreter(b"#!sh\n").is_err());
        assert!(interpreter(b"#!\n").is_err());
        assert!(interpreter(&[b"#!/bin/".as_slice(), &[b'x'; 300]].concat()).is_err());
        assert!(interpreter(b"plain text").is_err());
        assert!(interpreter(b"").is_err());
        // Real programs of this machine: a dynamic one names ld.so, read from its start.
        let sh = std::fs::read("/bin/sh").unwrap();
        let interp = interpreter(&sh[..HEAD.min(sh.len())]).unwrap().expect("a dynamic program");
        assert!(interp.starts_with('/') && interp.contains("ld-linux"), "{interp}");
        // ld.so itself is static: nothing more.
        let ld = std::fs::read(&interp).unwrap();
        assert_eq!(interpreter(&ld[..HEAD.min(ld.len())]).unwrap(), None);
        // A truncated ELF header is not taken.
        assert!(interpreter(&sh[..20]).is_err());
    }

    #[test]
    fn home_names_the_program_and_its_interpreters() {
        let me = std::process::id() as i32;
        let mut hashes = FileHashes::ephemeral();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("job.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        match identify(me, script.to_str().unwrap(), &mut hashes) {
            ExecFiles::Files(f) => {
                assert_eq!(f.len(), 3, "{f:?}");
                assert_eq!(f[0].path, script.to_str().unwrap());
                assert_eq!(f[0].size, 17);
                assert_eq!(f[0].hash, *blake3::hash(b"#!/bin/sh\nexit 3\n").as_bytes());
                assert_eq!(f[1].path, "/bin/sh");
                assert!(f[2].path.contains("ld-linux"), "{f:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(identify(me, "/no/such/program", &mut hashes), ExecFiles::Missing(libc::ENOENT));
        assert_eq!(identify(me, &format!("{}/x", script.display()), &mut hashes), ExecFiles::Missing(libc::ENOTDIR));
        // Not executable, not a program, relative, a directory: home's to make (or fail).
        let plain = dir.path().join("data");
        std::fs::write(&plain, "data\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(identify(me, plain.to_str().unwrap(), &mut hashes), ExecFiles::Home(w) if w.contains("not an ELF")));
        // (No execute bit at all: root may not run it either.)
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(identify(me, script.to_str().unwrap(), &mut hashes), ExecFiles::Home(w) if w.contains("denied")));
        assert!(matches!(identify(me, "bin/sh", &mut hashes), ExecFiles::Home(_)));
        assert!(matches!(identify(me, "/tmp", &mut hashes), ExecFiles::Home(_)));
        let suid = dir.path().join("suid");
        std::fs::copy("/bin/true", &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert!(matches!(identify(me, suid.to_str().unwrap(), &mut hashes), ExecFiles::Home(w) if w.contains("set-user-ID")));
    }
}
