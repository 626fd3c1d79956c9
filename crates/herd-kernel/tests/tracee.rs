//! The mechanism on real processes: seize, inject, read and write memory,
//! release. Needs ptrace permission; prints SKIP otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_kernel::abi;
use herd_kernel::inject::Injector;
use herd_kernel::mem::{self, Pagemap, PAGE, PM_PRESENT};
use herd_kernel::ptrace::{Stop, Tracee};
use herd_kernel::{host, task};

fn can_ptrace(test: &str) -> bool {
    if task::euid() == 0 {
        return true;
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_else(|_| "0".into());
    if scope.trim() == "0" {
        return true;
    }
    eprintln!("SKIP {test}: not root and yama ptrace_scope is {}", scope.trim());
    false
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gadget_in(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("child has a vDSO");
    let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
    let (_, own) = host::own_vdso().expect("we have a vDSO");
    start + host::syscall_offset(&own).expect("syscall in vDSO")
}

#[test]
fn injected_calls_run_in_the_tracee_and_it_continues_unharmed() {
    if !can_ptrace("injected_calls_run_in_the_tracee_and_it_continues_unharmed") {
        return;
    }
    // `sleep` is stopped inside clock_nanosleep: the release must resume the
    // sleep (kernel restart logic), not cut it short or crash it.
    let started = Instant::now();
    let mut child = Child(Command::new("sleep").arg("0.6").spawn().unwrap());
    let pid = child.0.id() as i32;
    std::thread::sleep(Duration::from_millis(150));
    let mut t = Tracee::seize(pid, 0).unwrap();
    assert!(matches!(t.stop(), Stop::Event { .. }), "stopped by the interrupt: {:?}", t.stop());
    let regs = t.regs().unwrap();
    let mask = t.sigmask().unwrap();
    let mut inj = Injector::new(&mut t, gadget_in(pid), regs);
    assert_eq!(inj.call_ok("getpid", abi::SYS_GETPID, &[]).unwrap(), pid as i64);
    assert_eq!(inj.call_ok("gettid", abi::SYS_GETTID, &[]).unwrap(), pid as i64);
    // A failing call returns the errno.
    assert_eq!(inj.call(abi::SYS_CLOSE, &[99999]).unwrap(), -(libc::EBADF as i64));
    // Memory: map a page in it, write and read it back, unmap.
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let page = inj.call_ok("mmap", abi::SYS_MMAP, &[0, PAGE, prot, flags, u64::MAX, 0]).unwrap() as u64;
    mem::write(pid, page, b"herd was here").unwrap();
    let mut back = [0u8; 13];
    mem::read_ranges(pid, &[(page, 13)], &mut back).unwrap();
    assert_eq!(&back, b"herd was here");
    inj.call_ok("munmap", abi::SYS_MUNMAP, &[page, PAGE]).unwrap();
    t.resume_until_event().unwrap();
    t.set_regs(&regs).unwrap();
    t.set_sigmask(mask).unwrap();
    t.detach().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "sleep must finish normally after release: {status:?}");
    assert!(started.elapsed() >= Duration::from_millis(600), "the sleep was cut short: {:?}", started.elapsed());
}

/// epoll_wait cut by a signal returns EINTR (no restart code): at its exit the signal
/// that cut it is found, and the tracee is let on to its delivery-stop; after a call
/// that nothing cut there is none, and the tracee goes on unharmed.
#[test]
fn the_signal_that_cut_an_eintr_call_is_found() {
    if !can_ptrace("the_signal_that_cut_an_eintr_call_is_found") {
        return;
    }
    use herd_kernel::inject::Outcome;
    let mut child = Child(Command::new("sleep").arg("5").spawn().unwrap());
    let pid = child.0.id() as i32;
    std::thread::sleep(Duration::from_millis(100));
    let mut t = Tracee::seize(pid, 0).unwrap();
    let regs = t.regs().unwrap();
    let mut inj = Injector::new(&mut t, gadget_in(pid), regs);
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let shell = inj.call_ok("mmap", abi::SYS_MMAP, &[0, PAGE, rwx, flags, u64::MAX, 0]).unwrap() as u64;
    mem::write(pid, shell, &[0x0f, 0x05, 0xcc]).unwrap();
    inj.set_gadget(shell);
    inj.set_stack(shell + PAGE - 64);
    let ep = inj.call_ok("epoll_create1", libc::SYS_epoll_create1 as u64, &[0]).unwrap() as u64;
    // Nothing cut a call that returned.
    assert_eq!(inj.call_interruptible(abi::SYS_GETPID, &[]).unwrap(), Outcome::Done(pid as i64));
    assert_eq!(inj.signal_after_eintr().unwrap(), None);
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        task::kill(pid, libc::SIGUSR1).unwrap();
    });
    // epoll_wait(ep, events in the scratch page, 1, 5 s)
    let r = inj.call_interruptible(libc::SYS_epoll_wait as u64, &[ep, shell + 64, 1, 5000]).unwrap();
    kicker.join().unwrap();
    assert_eq!(r, Outcome::Done(-(libc::EINTR as i64)));
    assert_eq!(inj.signal_after_eintr().unwrap(), Some(libc::SIGUSR1));
    // The signal is suppressed by the next call, which runs normally.
    assert_eq!(inj.call_interruptible(abi::SYS_GETPID, &[]).unwrap(), Outcome::Done(pid as i64));
    inj.call_ok("close", abi::SYS_CLOSE, &[ep]).unwrap();
    inj.call_ok("munmap", abi::SYS_MUNMAP, &[shell, PAGE]).unwrap();
    t.resume_until_event().unwrap();
    t.set_regs(&regs).unwrap();
    t.detach().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(child.0.try_wait().unwrap().is_none(), "the process did not go on");
}

#[test]
fn pagemap_sees_touched_pages_only() {
    if !can_ptrace("pagemap_sees_touched_pages_only") {
        return;
    }
    let mut v = vec![0u8; 64 * PAGE as usize];
    let base = (v.as_ptr() as u64 + PAGE - 1) & !(PAGE - 1);
    let first = (base - v.as_ptr() as u64) as usize;
    v[first] = 1; // touch only the first whole page
    let pm = Pagemap::open(std::process::id() as i32).unwrap();
    let e = pm.entries(base, base + 8 * PAGE).unwrap();
    assert_ne!(e[0] & PM_PRESENT, 0, "touched page present");
    assert!(e[2..].iter().all(|x| x & PM_PRESENT == 0), "untouched calloc pages absent: {e:x?}");
    std::hint::black_box(&v);
}

#[test]
fn a_process_that_dies_while_held_is_reported_as_died() {
    if !can_ptrace("a_process_that_dies_while_held_is_reported_as_died") {
        return;
    }
    let child = Child(Command::new("sleep").arg("30").stdout(Stdio::null()).spawn().unwrap());
    let pid = child.0.id() as i32;
    let mut t = Tracee::seize(pid, 0).unwrap();
    let regs = t.regs().unwrap();
    let gadget = gadget_in(pid); // before the kill: a dead process has no maps
    kill_by_pid(pid);
    let mut inj = Injector::new(&mut t, gadget, regs);
    match inj.call(abi::SYS_GETPID, &[]) {
        Err(herd_kernel::KernelError::Died { pid: p }) => assert_eq!(p, pid),
        other => panic!("expected Died, got {other:?}"),
    }
    drop(child);
}

fn kill_by_pid(pid: i32) {
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
}
