//! Live migration end to end, on a local cluster of three nodes (real herdd daemons,
//! each in namespaces of its own: see herd-lab's README).
//!
//! Method (the project standard, as in checkpoint_restart.rs): each scenario runs a real
//! program in n1 twice, once directly (uninterrupted, without herd) and once under
//! `herd run`, moved between nodes mid-run with `herd migrate`, and asserts the same
//! stdout and the same exit status (or death by the same signal). The programs
//! (`tests/programs/mig_*`) wait for a trigger, a line on stdin, at the points where the
//! test moves them, so that every move lands where it should whatever the timing. They
//! print their home pid (the pid in n1's pid namespace, which `herd migrate` takes) on
//! stderr; stdout carries only deterministic output.
//!
//! The processes under test run as nobody (uid/gid 65534, through setpriv): the daemon
//! does not move root's processes by default. `herd migrate` and `herd ps` are run from
//! the host, as root, with `--cluster DIR --node n1`.
//!
//! Beyond what the program prints, the test looks at the nodes from the host: a process
//! "runs on n2" when the host's /proc shows it (by an argument only it has, or its
//! name) in n2's pid namespace, and it must be gone from a node it left or after it died.
//!
//! One #[test] runs the scenarios in sequence on one cluster: bring-up costs a second,
//! and scenarios run in parallel would disturb each other's timing and `herd ps`. Each
//! scenario is a function of its own; a failing one is reported and the next one runs;
//! the test fails at the end with the list. `HERD_MIGRATE_ONLY=name,name` (substrings of
//! the scenario names) runs only those. On failure the cluster's directory (herdd logs,
//! the built programs) is kept and its path printed. Every wait is bounded and its
//! failure shows the program's output so far and the end of each node's herdd.log.
//!
//! Prerequisites missing (root, herdd, iproute2, setpriv, a C compiler, a python3 that
//! nobody may run, ptrace): `SKIP: <reason>` and return.

#[path = "common/collector.rs"]
mod collector;
#[path = "common/nodes.rs"]
mod nodes;
#[path = "common/gobuild.rs"]
mod gobuild;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/scenarios.rs"]
mod scenarios;
use lab::*;
use nodes::{describe, NOBODY};
use std::ffi::OsString;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;


/// The C programs of tests/programs (each `<name>.c`, with mig_common.h).
const C_PROGRAMS: &[&str] =
    &["mig_ids", "mig_filter", "mig_files", "mig_signals", "mig_exit", "mig_forkexec", "mig_bigmem", "mig_blockread", "mig_churn", "mig_remap", "mig_athome", "mig_forkheap", "thr_work", "thr_omp", "thr_sig", "refuse", "mig_sigcut"];
const PY_PROGRAMS: &[&str] = &["mig_progress.py", "mig_shmap.py", "mig_bigexit.py", "mig_threads.py", "mig_sockmsg.py", "mig_eventfds.py", "mig_fscalls.py", "mig_cdloop.py"];

type Scenario = scenarios::Scenario<Lab>;

/// In order; the last one kills n2's herdd (and starts it again).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("pid_and_parent_unchanged", pid_and_parent_unchanged),
    ("python_progress_moves_home_n2_n3_home", python_progress_moves_home_n2_n3_home),
    ("threads_move_home_n2_n3_home_while_one_reads", threads_move_home_n2_n3_home_while_one_reads),
    ("pthreads_move_while_computing", pthreads_move_while_computing),
    ("sort_parallel_moved_while_sorting", sort_parallel_moved_while_sorting),
    ("openmp_moved_while_computing", openmp_moved_while_computing),
    ("zstd_t2_moved_while_compressing", zstd_t2_moved_while_compressing),
    ("go_program_moved_while_computing", go_program_moved_while_computing),
    ("java_program_moved_while_computing", java_program_moved_while_computing),
    ("node_program_moved_while_computing", node_program_moved_while_computing),
    ("filter_moved_in_the_middle_of_its_input", filter_moved_in_the_middle_of_its_input),
    ("home_files_are_read_and_created_at_home", home_files_are_read_and_created_at_home),
    ("remote_node_files_are_invisible", remote_node_files_are_invisible),
    ("socket_messages_while_away", socket_messages_while_away),
    ("eventfd_timerfd_inotify_while_away", eventfd_timerfd_inotify_while_away),
    ("xattrs_fifo_and_sync_while_away", xattrs_fifo_and_sync_while_away),
    ("cd_after_a_child_while_away", cd_after_a_child_while_away),
    ("signals_reach_it_and_sigkill_leaves_nothing", signals_reach_it_and_sigkill_leaves_nothing),
    ("signals_from_home_reach_the_right_thread", signals_from_home_reach_the_right_thread),
    ("signals_here_cut_forwarded_writes_short", signals_here_cut_forwarded_writes_short),
    ("exit_status_3_reproduced", exit_status_3_reproduced),
    ("sigsegv_reproduced", sigsegv_reproduced),
    ("fork_on_its_node_exec_at_home", fork_on_its_node_exec_at_home),
    ("read_blocked_on_stdin_gets_its_input", read_blocked_on_stdin_gets_its_input),
    ("run_with_node_starts_it_remote", run_with_node_starts_it_remote),
    ("refused_moves_leave_it_running", refused_moves_leave_it_running),
    ("shared_memory_stays_home_and_its_touch_brings_it_back", shared_memory_stays_home_and_its_touch_brings_it_back),
    ("a_fault_at_each_step_of_a_move_leaves_it_running_once", a_fault_at_each_step_of_a_move_leaves_it_running_once),
    ("churning_memory_moves_by_postcopy_then_on", churning_memory_moves_by_postcopy_then_on),
    ("idle_heap_moves_by_postcopy_then_on", idle_heap_moves_by_postcopy_then_on),
    ("forks_while_memory_comes_home", forks_while_memory_comes_home),
    ("stop_and_copy_on_request", stop_and_copy_on_request),
    ("layout_changes_while_memory_arrives", layout_changes_while_memory_arrives),
    ("ends_while_memory_arrives", ends_while_memory_arrives),
    ("target_daemon_killed_during_postcopy", target_daemon_killed_during_postcopy),
    ("source_node_killed_during_postcopy_onwards", source_node_killed_during_postcopy_onwards),
    ("source_node_killed_during_postcopy_home", source_node_killed_during_postcopy_home),
    ("target_daemon_killed_during_transfer", target_daemon_killed_during_transfer),
];

#[test]
fn migration_scenarios() {
    let spec = Spec { name: "mig", c_programs: C_PROGRAMS, py_programs: PY_PROGRAMS, scripts: &[], quiet_n1: true, cpus_per_node: None, shared: false };
    let Some(lab) = Lab::new(&spec) else { return };
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_MIGRATE_ONLY", &lab, Lab::wait_healthy, |_| {});
    let dir = lab.finish(failed.is_empty());
    scenarios::report("migration scenarios", ran, &failed, &dir);
}


// ---------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------

/// getpid, gettid, getppid and the ids, before and after a move to n2: the same line.
fn pid_and_parent_unchanged(lab: &Lab) {
    let prog = lab.program("mig_ids");
    let direct = lab.run_direct("mig_ids (direct)", &prog, &[Gate::Prefix("before ")]);
    check_ids(lab, &direct, None);

    let mut p = lab.start("mig_ids (herd run, moved to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "before ");
    let before = p.stdout().lines().next().unwrap_or_default().to_string();
    let ppid = id_field(&before, "ppid").unwrap_or_else(|| p.fail(lab, &format!("no ppid in the line {before:?}")));
    // Its parent is herd run, in n1.
    let parent = lab.node_sh("n1", &format!("tr '\\0' ' ' < /proc/{ppid}/cmdline"));
    let parent_cmd = String::from_utf8_lossy(&parent.stdout).into_owned();
    if !parent.status.success() || !parent_cmd.contains(" run ") {
        p.fail(lab, &format!("the parent it reports (pid {ppid} in n1) is not `herd run`: cmdline {parent_cmd:?}"));
    }
    lab.expect_migrate(&p, pid, "n2");
    let row = lab.expect_where(&p, pid, "n2", Some(1));
    check_ps_row(lab, &p, &row, "mig_ids");
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    check_ids(lab, &moved, Some(pid));
    same_result(&direct, &moved, normalize_ids);
}

/// Every key of a `herd ps --json` row, with its type.
fn check_ps_row(lab: &Lab, p: &Proc, row: &Value, name: &str) {
    let wrong: Vec<&str> = [
        ("pid", row["pid"].is_i64()),
        ("where", row["where"].is_string()),
        ("state", row["state"].is_string()),
        ("cpu", row["cpu"].as_f64().is_some_and(|c| c >= 0.0)),
        ("rss", row["rss"].is_u64()),
        ("nmigs", row["nmigs"].is_u64()),
        ("cantmove", row["cantmove"].as_array().is_some_and(|a| a.iter().all(Value::is_string))),
        ("lock", row["lock"].is_boolean()),
        ("cmd", row["cmd"].as_str().is_some_and(|c| c.contains(name))),
    ]
    .into_iter()
    .filter_map(|(k, ok)| (!ok).then_some(k))
    .collect();
    if !wrong.is_empty() {
        p.fail(
            lab,
            &format!(
                "herd ps --json: {wrong:?} missing or not as expected (pid int, where/state strings, cpu >= 0, rss uint, \
                 nmigs uint, cantmove [string], lock bool, cmd containing {name:?}) in {row}"
            ),
        );
    }
}

/// python3 computing in four phases; moved n1 → n2 → n3 → home while it computes.
fn python_progress_moves_home_n2_n3_home(lab: &Lab) {
    let prog = lab.python_program("mig_progress.py");
    let mut d = lab.start("mig_progress.py (direct)", How::Direct, &prog);
    for gate in 0..4 {
        d.wait_for_line(lab, &format!("gate {gate}"));
        d.send(lab, "go\n");
    }
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);

    let mut p = lab.start("mig_progress.py (herd run, moved n2, n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    let moves = [("n2", "n2", 1), ("n3", "n3", 2), ("home", "n1", 3)];
    let mut last = "n1";
    for (gate, (target, node, nmigs)) in moves.into_iter().enumerate() {
        p.wait_for_line(lab, &format!("gate {gate}"));
        // Let it compute the next phase, and move it while it does.
        p.send(lab, "go\n");
        lab.expect_migrate(&p, pid, target);
        lab.expect_where(&p, pid, node, Some(nmigs));
        if node != "n1" {
            lab.expect_runs_on(&p, node, &prog);
        }
        if last != "n1" {
            lab.expect_gone_from(Some(&p), last, &prog);
        }
        last = node;
    }
    p.wait_for_line(lab, "gate 3");
    lab.expect_where(&p, pid, "n1", Some(3));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// Five python threads (three computing, one blocked reading stdin, the main one
/// printing) moved n2, n3, home, each time while the reader waits in read(0): after
/// each move the others compute and print while the reader's read is pending at home.
fn threads_move_home_n2_n3_home_while_one_reads(lab: &Lab) {
    let prog = lab.python_program("mig_threads.py");
    let gates = [Gate::Line("gate 0"), Gate::Line("gate 1"), Gate::Line("gate 2"), Gate::Line("gate 3")];
    let direct = lab.run_direct("mig_threads.py (direct)", &prog, &gates);
    expect_status(&direct, Some(0), None);

    let mut p = lab.start("mig_threads.py (herd run, five threads, moved n2, n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    let moves = [("n2", "n2", 1), ("n3", "n3", 2), ("home", "n1", 3)];
    for (gate, (target, node, nmigs)) in moves.into_iter().enumerate() {
        p.wait_for_line(lab, &format!("gate {gate}"));
        lab.expect_migrate(&p, pid, target);
        lab.expect_where(&p, pid, node, Some(nmigs));
        if node != "n1" {
            lab.expect_runs_on(&p, node, &prog);
        }
        p.send(lab, "go\n");
    }
    p.wait_for_line(lab, "gate 3");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// The C pthreads program of the checkpoint tests (six threads: barriers, condition
/// variables, TLS, per-thread masks) moved n2 and n3 while it computes; it makes two
/// threads and joins them on n3; moved to n2 again, pthread_kill of two workers
/// happens there (one handles SIGUSR1, the other blocks it: pending, it goes on with
/// it), then to n3, where it ends: its deputy at home, a deputy per thread, ends with
/// its exit status.
fn pthreads_move_while_computing(lab: &Lab) {
    let prog = lab.program("thr_work").with_args(&["90"]);
    let direct = lab.run_direct("thr_work (direct)", &prog, &[]);
    expect_status(&direct, Some(3), None);
    let mut p = lab.start("thr_work (herd run, six threads, moved n2, n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    lab.moves_at_lines(&mut p, pid, &[("round 5:", "n2", "n2", 1), ("round 25:", "n3", "n3", 2)]);
    // At round 45 it makes two threads and joins them: on n3, where it stays (their
    // twins are made at home, and end with them).
    p.wait_for_prefix(lab, "short-lived threads:");
    lab.expect_where(&p, pid, "n3", Some(2));
    // Their twins at home ended with them: the deputy has six threads again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.threads_in_n1(pid) != 6 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    if lab.threads_in_n1(pid) != 6 {
        p.fail(lab, &format!("the deputy at home has {} threads, not the process's six", lab.threads_in_n1(pid)));
    }
    p.wait_for_prefix(lab, "round 50:");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(3));
    p.wait_for_prefix(lab, "pthread_kill:");
    p.wait_for_prefix(lab, "round 75:");
    lab.expect_migrate(&p, pid, "n3");
    lab.expect_where(&p, pid, "n3", Some(4));
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// `sort --parallel=2` of 3 million lines moved to n2 as soon as herd knows it: the
/// threads it makes to sort are made and joined there (their twins at home); its
/// output is the direct run's.
fn sort_parallel_moved_while_sorting(lab: &Lab) {
    let input = lab.bin.join("sort-input.txt");
    let mut text = String::with_capacity(48 << 20);
    let mut x: u64 = 88172645463325252;
    for _ in 0..3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:x} {}\n", x % 1_000_000_007, x % 97));
    }
    fs::write(&input, text).unwrap();
    let marker = input.to_string_lossy().into_owned();
    let prog = Program {
        argv: ["/usr/bin/sort", "--parallel=2", "-S", "256M", "-k2,2n", "-k1,1", &marker].iter().map(OsString::from).collect(),
        marker: marker.clone(),
        comm: Some("sort".into()),
    };
    let direct = lab.run_direct("sort --parallel=2 (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("sort --parallel=2 (herd run, moved to n2 while it sorts)", How::Herd, &prog);
    let pid = lab.pid_listed(&mut p, &marker);
    lab.expect_migrate(&p, pid, "n2");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// `zstd -12 -T2` (a pool of two workers) compressing 56 MB moved n2, n3, home while it
/// runs: its file, written at home, has the direct run's bytes. (With 36 MB a fast
/// machine finished it before the third move.)
fn zstd_t2_moved_while_compressing(lab: &Lab) {
    if nodes::find_in_path("zstd").is_none() {
        println!("SKIP: zstd_t2_moved_while_compressing: no zstd");
        return;
    }
    let input = lab.bin.join("zstd-input.txt");
    let mut text = String::with_capacity(57 << 20);
    let mut x: u64 = 88172645463325252;
    while text.len() < 56 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:x} {} {}\n", x % 1_000_000_007, x % 97, "herd ".repeat((x % 7) as usize)));
    }
    fs::write(&input, text).unwrap();
    let input = input.to_string_lossy().into_owned();
    // In n1's own /tmp: its files are home's.
    let (direct_out, moved_out) = ("/tmp/herd-zstd-direct.zst", "/tmp/herd-zstd-moved.zst");
    let prog = |out: &str| Program {
        argv: ["zstd", "-12", "-T2", "-q", "-f", &input, "-o", out].iter().map(OsString::from).collect(),
        marker: out.to_string(),
        comm: Some("zstd".into()),
    };
    let direct = lab.run_direct("zstd -T2 (direct)", &prog(direct_out), &[]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("zstd -T2 (herd run, moved n2, n3, home while it compresses)", How::Herd, &prog(moved_out));
    let pid = lab.pid_listed(&mut p, moved_out);
    // Its workers are made once it has read the first job's input.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.threads_in_n1(pid) < 3 {
        if Instant::now() > deadline {
            p.fail(lab, "it does not run three threads");
        }
        thread::sleep(Duration::from_millis(20));
    }
    for (target, node, nmigs) in [("n2", "n2", 1), ("n3", "n3", 2), ("home", "n1", 3)] {
        lab.expect_migrate(&p, pid, target);
        lab.expect_where(&p, pid, node, Some(nmigs));
        thread::sleep(Duration::from_millis(100));
    }
    let moved = p.finish(lab);
    expect_status(&moved, Some(0), None);
    let same = lab.node_sh("n1", &format!("cmp {direct_out} {moved_out} && rm -f {direct_out} {moved_out}"));
    if !same.status.success() {
        panic!("the moved zstd's file differs from the direct run's: {}{}", String::from_utf8_lossy(&same.stdout), String::from_utf8_lossy(&same.stderr));
    }
}

/// An OpenMP kernel (gcc -fopenmp: libgomp's pool of four threads meeting at barriers,
/// waiting on futexes between parallel regions; threadprivate state) moved n2, n3, home
/// while it computes.
fn openmp_moved_while_computing(lab: &Lab) {
    let prog = lab.program("thr_omp").with_args(&["80"]);
    let direct = lab.run_direct("thr_omp (direct)", &prog, &[]);
    expect_status(&direct, Some(4), None);
    let mut p = lab.start("thr_omp (herd run, four threads, moved n2, n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    lab.moves_at_lines(&mut p, pid, &[("round 5:", "n2", "n2", 1), ("round 25:", "n3", "n3", 2), ("round 50:", "home", "n1", 3)]);
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A Go program (golang-go: the runtime's threads, its netpoller's epoll wait and pipe,
/// SIGURG preemption by tgkill, the garbage collector's workers) with four goroutines
/// hashing each round, moved n2, n3, home while it computes.
fn go_program_moved_while_computing(lab: &Lab) {
    runtime_moved_while_computing(lab, "go_program_moved_while_computing", "thr_go (the Go runtime's threads)", lab.go_program("thr_go"), 7);
}

/// A JVM (about fifteen threads: the program's three at a CyclicBarrier, the JIT
/// compilers, the garbage collector, ...) moved n2, n3, home while it computes.
fn java_program_moved_while_computing(lab: &Lab) {
    runtime_moved_while_computing(lab, "java_program_moved_while_computing", "ThrJava (a JVM's threads)", lab.java_program("ThrJava"), 6);
}

/// A node program (libuv's event loop in epoll_pwait, its eventfd and thread pool, two
/// worker_threads) moved n2, n3, home while it computes.
fn node_program_moved_while_computing(lab: &Lab) {
    runtime_moved_while_computing(lab, "node_program_moved_while_computing", "thr_node.js (node's threads)", lab.node_program("thr_node.js"), 8);
}

/// A program of a language runtime (`prog`, or why it cannot run here: SKIP) that prints
/// "round N: ..." 80 times and ends with `status`, moved n2 at round 5, n3 at round 25 and
/// home at round 50; each time it stays where it was sent (checked 15 rounds later: such
/// runtimes wait in epoll_pwait between rounds, which once brought them home at once).
fn runtime_moved_while_computing(lab: &Lab, scenario: &str, what: &str, prog: Result<Program, String>, status: i32) {
    let prog = match prog {
        Ok(prog) => prog.with_args(&["80"]),
        Err(why) => {
            println!("SKIP: {scenario}: {why}");
            return;
        }
    };
    let direct = lab.run_direct(&format!("{what} (direct)"), &prog, &[]);
    expect_status(&direct, Some(status), None);
    let mut p = lab.start(&format!("{what} (herd run, moved n2, n3, home)"), How::Herd, &prog);
    let pid = p.home_pid(lab);
    for (at, target, node, nmigs, later) in [("round 5:", "n2", "n2", 1, Some("round 20:")), ("round 25:", "n3", "n3", 2, Some("round 45:")), ("round 50:", "home", "n1", 3, None)] {
        lab.moves_at_lines(&mut p, pid, &[(at, target, node, nmigs)]);
        if let Some(later) = later {
            p.wait_for_prefix(lab, later);
            lab.expect_where(&p, pid, node, Some(nmigs));
        }
    }
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A filter fed through a pipe: half the input, a move to n2, the rest, end of file.
fn filter_moved_in_the_middle_of_its_input(lab: &Lab) {
    let prog = lab.program("mig_filter");
    let lines: Vec<String> = (0..400).map(|i| format!("line {i} {}", "herd ".repeat(i % 11))).collect();
    let (first, rest) = lines.split_at(200);
    let text = |part: &[String]| part.iter().map(|l| format!("{l}\n")).collect::<String>();

    let mut d = lab.start("mig_filter (direct)", How::Direct, &prog);
    d.send(lab, &text(&lines));
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout.lines().count(), 401, "mig_filter's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_filter (herd run, moved to n2 mid-stream)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.send(lab, &text(first));
    p.wait_for_lines(lab, first.len());
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, &text(rest));
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

const HOME_ONLY: &str = "/tmp/herd-mig-home-only.txt";
const CREATED: &str = "/tmp/herd-mig-created.txt";
const CREATED_TEXT: &str = "written-by-mig_files";
const REMOTE_ONLY: &str = "/tmp/herd-mig-remote-only.txt";

/// Moved to n2, it reads a file that only n1's /tmp has and creates one: in n1's /tmp.
/// sendmsg and recvmsg while away (three buffers and an address, a descriptor passed
/// with SCM_RIGHTS and read through, a control buffer too small, recvmsg_into), sendmmsg
/// and recvmmsg (three datagrams each way): made at home, where the sockets are, with a
/// direct run's results; the process never goes home for them (it did before: they were
/// calls only home could make).
fn socket_messages_while_away(lab: &Lab) {
    stays_away_for(lab, "mig_sockmsg.py", &[
        "sent 20",
        "got b'three buffers in one' from the client: True flags 0 control []",
        "got b'fd' with 1 descriptor(s), a new one: True",
        "it reads: passed along",
        "got b'again' control cut: True control []",
        "into 10 [b'0123', b'456', b'789\\x00\\x00\\x00\\x00\\x00']",
        "sendmmsg 3 [5, 6, 3]",
        "recvmmsg 3 [(5, b'first'), (6, b'second'), (3, b'3rd')] the fourth untouched: 0xdead",
    ]);
}

/// An eventfd, a timerfd (set, read back, waited for with select) and inotify watching a
/// directory at home, made and used while away: at home, with a direct run's results;
/// the process never goes home for them (they were calls only home could make).
fn eventfd_timerfd_inotify_while_away(lab: &Lab) {
    stays_away_for(lab, "mig_eventfds.py", &[
        "eventfd read 12",
        "eventfd empty: EAGAIN",
        "timer set 0 it was disarmed: True",
        "timer armed, under 50 ms to go: True",
        "timer fired: True expirations 1",
        "inotify: its watch True mask 0x100 the file made: True",
        "rm_watch 0",
    ]);
}

/// Extended attributes (set, read, listed and removed by path, descriptor and without
/// following a symlink), mkfifo, sync and syncfs while away: at home, with a direct run's
/// results; the process never goes home for them (they were calls only home could make).
fn xattrs_fifo_and_sync_while_away(lab: &Lab) {
    stays_away_for(lab, "mig_fscalls.py", &[
        "getxattr b'first value' b'2'",
        "listxattr ['user.herd', 'user.second'] ['user.herd', 'user.second']",
        "through the link b'first value' of the link itself []",
        "removed: ENODATA",
        "mkfifo: a FIFO True mode 0o600",
        "syncfs 0",
    ]);
}

/// A shell away that runs a child and changes directory right after, 300 times (its
/// SIGCHLD crosses the forwarded chdir; dash's handler has no SA_RESTART): no `cd` fails,
/// as none would at home — a call that never waits is not cut by a signal — and the
/// shell, its children and its exec stay on n2.
fn cd_after_a_child_while_away(lab: &Lab) {
    stays_away_for(lab, "mig_cdloop.py", &["cd after a child, 300 times: 0 failed"]);
}

/// Python program `name DIR` (DIR a fresh directory anyone may write): run directly, its
/// output has `lines`; under `herd run`, moved to n2 at "ready", it says the same and is
/// still on n2, never moved again, when it says "done".
fn stays_away_for(lab: &Lab, name: &str, lines: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.dir.join(name.trim_end_matches(".py"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let prog = lab.python_program(name).with_args(&[dir.to_str().unwrap()]);
    let direct = lab.run_direct(&format!("{name} (direct)"), &prog, &[Gate::Line("ready"), Gate::Line("done")]);
    expect_status(&direct, Some(0), None);
    for line in lines {
        assert!(direct.stdout.contains(line), "{line:?} in {}", direct.describe());
    }
    let (mut p, pid) = lab.on_n2_until(&format!("{name} (herd run, moved to n2)"), &prog, "done");
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

fn home_files_are_read_and_created_at_home(lab: &Lab) {
    lab.node_sh_ok("n1", &format!("printf 'home-only content 42\\n' > {HOME_ONLY} && chmod 644 {HOME_ONLY} && rm -f {CREATED}"));
    lab.node_sh_ok("n2", &format!("rm -f {HOME_ONLY} {CREATED}"));
    let ops = [
        format!("cat:{HOME_ONLY}"),
        format!("stat:{HOME_ONLY}"),
        format!("create:{CREATED}:{CREATED_TEXT}"),
        format!("cat:{CREATED}"),
        format!("stat:{CREATED}"),
    ];
    let prog = lab.program("mig_files").with_args(&ops);

    let direct = lab.run_direct("mig_files home (direct)", &prog, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    for want in ["home-only content 42\\n", &format!("create {CREATED}: ok"), "uid 65534"] {
        assert!(direct.stdout.contains(want), "the direct run of mig_files does not say {want:?}:\n{}", direct.describe());
    }
    lab.node_sh_ok("n1", &format!("rm -f {CREATED}"));

    let mut p = lab.start("mig_files home (herd run, moved to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    let native_before = native_calls(lab, "n1");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    // The reads of the (cached) home file and the write of the new one were made by
    // herdd itself on the deputy's descriptors (herd_migrate::native), not by ptrace.
    let native = native_calls(lab, "n1") - native_before;
    assert!(native >= 2, "n1's herdd made {native} of the process's file calls itself, expected its reads and writes\n{}", lab.logs());

    let home = lab.node_sh("n1", &format!("cat {CREATED} && stat -c 'owner %u' {CREATED}"));
    let home_text = String::from_utf8_lossy(&home.stdout);
    assert!(
        home.status.success() && home_text == format!("{CREATED_TEXT}\nowner {NOBODY}\n"),
        "the file the migrated process created is not in n1's /tmp as written (by uid {NOBODY}): {} {home_text:?} {}\n{}",
        describe(&home.status),
        String::from_utf8_lossy(&home.stderr),
        lab.logs()
    );
    let remote = lab.node_sh("n2", &format!("ls -l {CREATED}"));
    assert!(
        !remote.status.success(),
        "the file the migrated process created appeared in n2's /tmp:\n{}\n{}",
        String::from_utf8_lossy(&remote.stdout),
        lab.logs()
    );
    lab.node_sh_ok("n1", &format!("rm -f {CREATED} {HOME_ONLY}"));
}

/// How many forwarded calls `node`'s herdd made itself (herd_forwarded_calls_native_total).
fn native_calls(lab: &Lab, node: &str) -> u64 {
    let out = lab.node_sh(node, "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:4780/metrics', timeout=10).read().decode())\"");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("herd_forwarded_calls_native_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no herd_forwarded_calls_native_total in {node}'s /metrics: {} {}", describe(&out.status), String::from_utf8_lossy(&out.stderr)))
}

/// A file that only n2's /tmp has is not there for a process moved to n2: ENOENT.
fn remote_node_files_are_invisible(lab: &Lab) {
    lab.node_sh_ok("n2", &format!("printf 'only on n2\\n' > {REMOTE_ONLY} && chmod 644 {REMOTE_ONLY}"));
    lab.node_sh_ok("n1", &format!("rm -f {REMOTE_ONLY}"));
    let there = lab.node_sh("n2", &format!("cat {REMOTE_ONLY}"));
    assert_eq!(String::from_utf8_lossy(&there.stdout), "only on n2\n", "n2's own file is not readable in n2");
    let prog = lab.program("mig_files").with_args(&[format!("stat:{REMOTE_ONLY}"), format!("cat:{REMOTE_ONLY}")]);

    let direct = lab.run_direct("mig_files remote-only (direct)", &prog, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);

    let mut p = lab.start("mig_files remote-only (herd run, moved to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    for want in [format!("stat {REMOTE_ONLY}: ENOENT"), format!("cat {REMOTE_ONLY}: ENOENT")] {
        assert!(
            moved.stdout.lines().any(|l| l == want),
            "the migrated process did not get ENOENT for a file only n2 has ({want:?}):\n{}\n{}",
            moved.describe(),
            lab.logs()
        );
    }
    same_result(&direct, &moved, same);
    lab.node_sh_ok("n2", &format!("rm -f {REMOTE_ONLY}"));
}

/// SIGUSR1 to the home pid reaches the handler of the process on n2 (twice); SIGKILL to
/// the home pid kills it: herd run dies by SIGKILL and nothing of it is left on n2 or n1.
fn signals_reach_it_and_sigkill_leaves_nothing(lab: &Lab) {
    let prog = lab.program("mig_signals");
    let mut d = lab.start("mig_signals (direct)", How::Direct, &prog);
    let dpid = d.home_pid(lab);
    d.wait_for_line(lab, "ready");
    for n in 1..=2 {
        lab.kill_in_n1(dpid, "USR1");
        d.wait_for_line(lab, &format!("got SIGUSR1 {n}"));
    }
    lab.kill_in_n1(dpid, "KILL");
    let direct = d.finish(lab);
    expect_status(&direct, None, Some(libc::SIGKILL));

    let mut p = lab.start("mig_signals (herd run, moved to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    // Also what makes the check for leftovers below meaningful: it is found while it runs.
    lab.expect_runs_on(&p, "n2", &prog);
    for n in 1..=2 {
        lab.kill_in_n1(pid, "USR1");
        p.wait_for_line(lab, &format!("got SIGUSR1 {n}"));
    }
    lab.kill_in_n1(pid, "KILL");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
    lab.expect_gone_from(None, "n1", &prog);
}

/// Signals from home to a process with threads, while it runs on n2: a SIGUSR1 sent to
/// the process is handled by the one thread that does not block it (twice), a SIGUSR2
/// sent with tgkill to one thread (by its id, the same at home as there) by that thread,
/// though every worker takes it — as in a direct run.
fn signals_from_home_reach_the_right_thread(lab: &Lab) {
    let prog = lab.program("thr_sig");
    let signal_it = |p: &mut Proc, pid: i32| {
        p.wait_for_line(lab, "waiting");
        for n in 1..=2 {
            lab.kill_in_n1(pid, "USR1");
            p.wait_for_prefix(lab, &format!("SIGUSR1 {n} handled by"));
        }
        let out = p.stdout();
        let tid = out.lines().find_map(|l| l.strip_prefix("worker 2: tid=")).and_then(|t| t.parse::<i32>().ok());
        let tid = tid.unwrap_or_else(|| p.fail(lab, "it did not say worker 2's thread id"));
        // tgkill(pid, tid, SIGUSR2) from n1 (x86-64's call number 234).
        lab.node_sh_ok("n1", &format!("python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).syscall(234, {pid}, {tid}, {}) != 0)'", libc::SIGUSR2));
        p.wait_for_prefix(lab, "SIGUSR2 handled by");
    };
    let mut d = lab.start("thr_sig (direct)", How::Direct, &prog);
    let dpid = d.home_pid(lab);
    d.wait_for_line(lab, "ready");
    d.send(lab, "go\n");
    signal_it(&mut d, dpid);
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    for line in ["SIGUSR1 1 handled by worker 1", "SIGUSR1 2 handled by worker 1", "SIGUSR2 handled by worker 2"] {
        assert!(direct.stdout.lines().any(|l| l == line), "{line:?} in {}", direct.describe());
    }

    let mut p = lab.start("thr_sig (herd run, on n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    signal_it(&mut p, pid);
    lab.expect_where(&p, pid, "n2", Some(1));
    let moved = p.finish(lab);
    same_result(&direct, &moved, normalize_ids);
}

/// exit(3) while on n2: herd run exits with 3.
/// A timer on n2 (every 500 µs) interrupts a moved process while its writes run at
/// home, and its handler makes a forwarded call of its own: a signal ends the wait of
/// writes home has made (or is making), and the kernel then makes them again after the
/// handler (SA_RESTART), or fails them with EINTR, which the program answers by writing
/// again. Each of the 1,000 lines is written once, in order, as in a direct run.
fn signals_here_cut_forwarded_writes_short(lab: &Lab) {
    for mode in ["restart", "eintr"] {
        let prog = lab.program("mig_sigcut").with_args(&[mode, "1000"]);
        let direct = lab.run_direct(&format!("mig_sigcut {mode} (direct)"), &prog, &[Gate::Line("ready 1")]);
        expect_status(&direct, Some(0), None);
        let mut p = lab.start(&format!("mig_sigcut {mode} (herd run, moved to n2, a timer there)"), How::Herd, &prog);
        let pid = p.home_pid(lab);
        p.wait_for_line(lab, "ready 1");
        lab.expect_migrate(&p, pid, "n2");
        p.send(lab, "go\n");
        let moved = p.finish(lab);
        same_result(&direct, &moved, same);
        // The timer did fire while it wrote (each write waits for home for a while).
        let signals = moved.stderr.split("signals: ").nth(1).and_then(|t| t.split(',').next()).and_then(|n| n.parse::<u32>().ok());
        assert!(signals.is_some_and(|n| n >= 50), "mig_sigcut {mode}: too few signals came to test anything: {signals:?}\n{}", moved.describe());
    }
}

fn exit_status_3_reproduced(lab: &Lab) {
    ends_while_remote(lab, "exit3", Some(3), None);
}

/// A write through NULL while on n2: herd run dies by SIGSEGV.
fn sigsegv_reproduced(lab: &Lab) {
    ends_while_remote(lab, "segv", None, Some(libc::SIGSEGV));
}

fn ends_while_remote(lab: &Lab, mode: &str, code: Option<i32>, signal: Option<i32>) {
    let prog = lab.program("mig_exit").with_args(&[mode]);
    let direct = lab.run_direct(&format!("mig_exit {mode} (direct)"), &prog, &[Gate::Line("ready")]);
    expect_status(&direct, code, signal);

    let mut p = lab.start(&format!("mig_exit {mode} (herd run, moved to n2)"), How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
}

/// fork + exec while on n2: the child is made on n2 and comes home to exec; the parent
/// stays on n2; both end well.
fn fork_on_its_node_exec_at_home(lab: &Lab) {
    let prog = lab.program("mig_forkexec");
    let direct = lab.run_direct("mig_forkexec (direct)", &prog, &[Gate::Line("ready 1"), Gate::Line("ready 2")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("child-ran\nparent: child exited 0\n"), "mig_forkexec's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_forkexec (herd run, moved to n2, forks)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    p.wait_for_line(lab, "ready 2");
    // The fork was made on n2 (the parent did not move); the child came home to exec.
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
}

/// Blocked in read(0) when moved to n2; the input arrives 0.5 s later and is read there.
fn read_blocked_on_stdin_gets_its_input(lab: &Lab) {
    let prog = lab.program("mig_blockread");
    let input = "hello migrated world\n";
    let mut d = lab.start("mig_blockread (direct)", How::Direct, &prog);
    d.wait_for_line(lab, "waiting");
    d.send(lab, input);
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout, "waiting\nHELLO MIGRATED WORLD\n", "mig_blockread's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_blockread (herd run, moved to n2 while blocked)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "waiting");
    lab.wait_blocked_in_read(&p, pid);
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    thread::sleep(Duration::from_millis(500));
    if p.exited().is_some() || p.stdout() != "waiting\n" {
        p.fail(lab, "with no input yet it should still be blocked in read(0), having printed only \"waiting\"");
    }
    p.send(lab, input);
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// `herd run --node n2`: the process runs on n2 from its start.
fn run_with_node_starts_it_remote(lab: &Lab) {
    let prog = lab.program("mig_ids");
    let direct = lab.run_direct("mig_ids (direct)", &prog, &[Gate::Prefix("before ")]);

    let mut p = lab.start("mig_ids (herd run --node n2)", How::HerdOn("n2"), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "before ");
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.expect_runs_on(&p, "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    check_ids(lab, &moved, Some(pid));
    same_result(&direct, &moved, normalize_ids);
}

/// `herd migrate` of a pid that is no migratable process, and to a node that does not
/// exist: exit 1 with a message; the process runs on at home, undisturbed.
/// A fault injected at each step of a move (herdd's failpoints, `herd_migrate::failpoint`):
/// away from home, home from a node, and on from node to node. Each move fails; the
/// process runs on where it was, once (one copy of it on its node, none elsewhere), with
/// its move count unchanged. At the end its memory is what it wrote and it ends as a
/// direct run does.
fn a_fault_at_each_step_of_a_move_leaves_it_running_once(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["16"]);
    let mut p = lab.start("mig_bigmem 16 MiB (herd run --lock, a fault at each step of its moves)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    if let Err(why) = lab.failpoint("n1", "out-commit", "off") {
        assert!(why.contains("without failpoints"), "herdd refused to clear a failpoint: {why}");
        println!("SKIP: a fault at each step of a move: {why} (`cargo test --workspace` builds it with them)");
        p.send(lab, "go\n");
        expect_status(&p.finish(lab), Some(0), None);
        return;
    }
    // (node whose herdd fails, failpoint, actions, the move's target); the image points
    // fail a few messages in.
    let away = [
        ("n1", "out-connected", "return", "n2"),
        ("n1", "out-image", "2*off->return", "n2"),
        ("n1", "out-commit", "return", "n2"),
        ("n2", "arrive-restore", "return", "n2"),
        ("n2", "arrive-restored", "return", "n2"),
    ];
    let back = [("n2", "away-capture", "return", "home"), ("n2", "away-image", "2*off->return", "home"), ("n1", "home-restore", "return", "home")];
    let on = [("n2", "away-capture", "return", "n3"), ("n2", "away-image", "2*off->return", "n3"), ("n3", "arrive-restore", "return", "n3"), ("n3", "arrive-restored", "return", "n3")];
    let faulted = |steps: &[(&str, &str, &str, &str)], at: &str, nmigs: u64| {
        for &(node, point, actions, target) in steps {
            lab.failpoint(node, point, actions).unwrap_or_else(|e| p.fail(lab, &format!("failpoint {point} of {node}: {e}")));
            // Stop-and-copy, whatever herdd would choose (post-copy once n2 has reported the
            // process's 16 MiB: then its image is too short for the `2*off` of away-image).
            let out = lab.migrate_with(pid, target, &["--stop-and-copy"]);
            lab.failpoint(node, point, "off").unwrap_or_else(|e| p.fail(lab, &format!("failpoint {point} of {node}: {e}")));
            if out.status.success() {
                p.fail(lab, &format!("with failpoint {point} of {node}, the move to {target} succeeded: {}", String::from_utf8_lossy(&out.stdout)));
            }
            println!("{point} of {node}, move to {target}: {}", String::from_utf8_lossy(&out.stderr).trim());
            lab.expect_where(&p, pid, at, Some(nmigs));
            // One where it runs, none on the other nodes (home's deputy, its memory
            // released, has no command line to be known by). A target that was still
            // restoring when home gave up ends its half-made copy (never run: held by
            // the restore, still root's, traced) when it notices, a moment later.
            for n in NODES.into_iter().filter(|&n| n == at || n != "n1") {
                let want = usize::from(n == at);
                let t = Instant::now();
                loop {
                    let found: Vec<_> = lab.procs_on(n, &prog).into_iter().filter(|(_, d)| d.contains(&format!("cmdline \"{}", prog.marker))).collect();
                    if found.len() == want {
                        break;
                    }
                    let half_made = n != at && found.iter().all(|(_, d)| d.contains("(tracing stop)") || d.contains(" uid 0 0 0 0 "));
                    if !half_made || t.elapsed() > Duration::from_secs(10) {
                        p.fail(lab, &format!("after failpoint {point} of {node}: {} processes of it on {n}, not {want}: {found:?}", found.len()));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    };
    faulted(&away, "n1", 0);
    lab.expect_migrate(&p, pid, "n2");
    faulted(&back, "n2", 1);
    faulted(&on, "n2", 1);
    lab.expect_migrate(&p, pid, "n3");
    lab.expect_migrate(&p, pid, "home");
    lab.expect_where(&p, pid, "n1", Some(3));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    expect_status(&moved, Some(0), None);
    assert!(moved.stdout.contains(" bad=0 "), "{}", moved.describe());
}

fn refused_moves_leave_it_running(lab: &Lab) {
    let out = lab.migrate(3_999_999, "n2");
    assert!(
        out.status.code() == Some(1) && !out.stderr.is_empty(),
        "herd migrate of a pid that does not exist: expected exit 1 with a message, got {} (stdout {:?}, stderr {:?})",
        describe(&out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prog = lab.program("mig_ids");
    let direct = lab.run_direct("mig_ids (direct)", &prog, &[Gate::Prefix("before ")]);

    let mut p = lab.start("mig_ids (herd run, moved to a node that does not exist)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "before ");
    let out = lab.migrate(pid, "n9");
    if out.status.code() != Some(1) || out.stderr.is_empty() {
        p.fail(
            lab,
            &format!(
                "herd migrate {pid} n9 (no such node): expected exit 1 with a message, got {} (stdout {:?}, stderr {:?})",
                describe(&out.status),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    // (Before n2 blocks below.) A process home refuses to send (a private mapping of a deleted file): refused
    // with the reason, and n2 hears nothing of it (no "refused" line for a move it never saw).
    let n2_log = lab.dir.join("n2").join("herdd.log");
    let before = fs::read_to_string(&n2_log).unwrap_or_default().len();
    let tprog = lab.python_program("mig_shmap.py");
    let mut t = lab.start("mig_shmap.py (herd run, a private mapping of a deleted file)", How::Herd, &tprog);
    let tpid = t.home_pid(lab);
    t.wait_for_line(lab, "ready");
    let out = lab.migrate(tpid, "n2");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1) || !err.contains("maps a deleted or anonymous file") {
        t.fail(lab, &format!("herd migrate of a process with a private mapping of a deleted file: expected a refusal naming it, got {}: {err:?}", describe(&out.status)));
    }
    let after = fs::read_to_string(&n2_log).unwrap_or_default();
    let new = &after[before.min(after.len())..];
    if new.contains("refused") || new.contains("arrives") {
        t.fail(lab, &format!("n2 logged a move that home refused before sending anything:\n{new}"));
    }
    lab.expect_where(&t, tpid, "n1", Some(0));
    t.send(lab, "go\n");
    let ended = t.finish(lab);
    expect_status(&ended, Some(0), None);
    // A process using io_uring (its rings mapped, a thread waiting in io_uring_enter, one
    // of the kernel's workers in it) and one sharing its memory with a child (clone with
    // CLONE_VM): refused, naming each part, and each runs on at home. (Shared memory
    // mapped before a fork is kept at home instead: see
    // shared_memory_stays_home_and_its_touch_brings_it_back.)
    let io_uring = fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or(true, |v| v.trim() == "0");
    if !io_uring {
        println!("SKIP: refused_moves_leave_it_running, io_uring part: io_uring is disabled (kernel.io_uring_disabled)");
    }
    let cases: [(&str, &[&str]); 2] = [
        ("io_uring-wait", &["uses io_uring", "waits in io_uring_enter", "io_uring workers"]),
        ("clone-vm", &["shares its memory with process"]),
    ];
    for (mode, reasons) in cases.into_iter().filter(|(mode, _)| io_uring || *mode != "io_uring-wait") {
        let uprog = lab.program("refuse").with_args(&[mode]);
        let mut u = lab.start(&format!("refuse {mode} (herd run)"), How::Herd, &uprog);
        let upid = u.home_pid(lab);
        u.wait_for_line(lab, "ready");
        let out = lab.migrate(upid, "n2");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(1) || !reasons.iter().all(|w| err.contains(w)) {
            u.fail(lab, &format!("herd migrate of refuse {mode}: expected a refusal saying {reasons:?}, got {}: {err:?}", describe(&out.status)));
        }
        lab.expect_where(&u, upid, "n1", Some(0));
        u.wait_for_line(lab, "tick 3");
        lab.kill_in_n1(upid, "KILL");
        let ended = u.finish(lab);
        expect_status(&ended, None, Some(libc::SIGKILL));
    }
    lab.expect_where(&p, pid, "n1", Some(0));
    // n2 blocks, and the move is asked at once: n1 may not know yet, and then n2 itself
    // refuses the process after n1 froze it. Either way it runs on at n1, unharmed.
    let ctl = |op| {
        let mut c = herd_daemon::control::Client::connect(&lab.cluster.node_socket("n2")).expect("n2's control socket");
        c.call(&herd_daemon::control::Request::Ctl { op }).expect("herd ctl on n2");
    };
    ctl(herd_daemon::control::CtlOp::Block);
    let out = lab.migrate(pid, "n2");
    // (Taken before: the noblock's state may reach n1 before the command's answer does.)
    let t = Instant::now();
    ctl(herd_daemon::control::CtlOp::NoBlock);
    // The next scenarios need n1 to know n2 takes processes again: a state of n2's
    // received after the noblock, up, and not blocked (gossip may still bring a state
    // made before the noblock after it: fresh by its age, blocked by its flags).
    let fresh = |r: &Value| {
        r["state"] == "up" && r["status"]["blocked"] == false && r["info_age_secs"].as_f64().is_some_and(|age| age < t.elapsed().as_secs_f64())
    };
    loop {
        let view = lab.nodes("n1");
        if view.iter().any(|r| r["name"] == "n2" && fresh(r)) {
            break;
        }
        // (herdd publishes an operator's change at once, whatever the gap between
        // publications: a block undone within it would otherwise be heard of only at the
        // next periodic publication, 5 s later.)
        assert!(t.elapsed() < SETTLE, "n1 has not heard n2's noblock {SETTLE:?} after it: n1 sees {view:?}\n{}", lab.logs());
        thread::sleep(POLL);
    }
    if out.status.code() != Some(1) || !String::from_utf8_lossy(&out.stderr).contains("blocked") {
        p.fail(lab, &format!("herd migrate {pid} n2 (n2 blocked): expected a refusal naming the block, got {}: {:?}", describe(&out.status), String::from_utf8_lossy(&out.stderr)));
    }
    lab.expect_where(&p, pid, "n1", Some(0));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    check_ids(lab, &moved, Some(pid));
    same_result(&direct, &moved, normalize_ids);

}

/// A process that shares memory with a child at home (a semaphore in a deleted /dev/shm
/// file, shared anonymous memory mapped before the fork, a page of a shared writable
/// file): it moves to n2 (that memory stays at home, mapped in its deputy) and computes
/// there; its first touch of that memory brings it home by itself, where the child, which
/// waited on the semaphore all along, sees what it wrote. The same output as a direct run.
fn shared_memory_stays_home_and_its_touch_brings_it_back(lab: &Lab) {
    let prog = lab.program("mig_athome").with_args(&["/tmp"]);
    let direct = lab.run_direct("mig_athome (direct)", &prog, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("child answered 2, exited 7"), "the direct run of mig_athome went wrong:\n{}", direct.describe());
    let n2_log = lab.dir.join("n2").join("herdd.log");
    let before = fs::read_to_string(&n2_log).unwrap_or_default().len();
    let mut p = lab.start("mig_athome (herd run, moved to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    let after = fs::read_to_string(&n2_log).unwrap_or_default();
    let new = &after[before.min(after.len())..];
    assert!(
        new.contains("goes home for touching memory kept at home"),
        "n2 did not send it home for a touch of its memory kept at home:\n{new}\n{}",
        moved.logs
    );
}

/// 1 GiB rewritten as fast as it can (three words a page, every page a pass, each pass
/// checking the last): moved home → n2 by post-copy while it rewrites (it runs on n2 at
/// once and its memory follows), then n2 → n3 and n3 → home, each during a phase of
/// passes. It checks every page itself; its digest of all its memory equals an unmoved run's.
fn churning_memory_moves_by_postcopy_then_on(lab: &Lab) {
    let prog = lab.program("mig_churn").with_args(&["1024", "3", "3"]);
    let mut d = lab.start("mig_churn 1 GiB (direct)", How::Direct, &prog);
    for gate in 0..3 {
        d.wait_for_line(lab, &format!("gate {gate}"));
        d.send(lab, "go\n");
    }
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains(" bad=0 "), "mig_churn's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_churn 1 GiB (herd run, post-copy to n2, then n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    let moves = [("n2", "n2", 1, "--postcopy"), ("n3", "n3", 2, "--postcopy"), ("home", "n1", 3, "--stop-and-copy")];
    for (gate, (target, node, nmigs, flag)) in moves.into_iter().enumerate() {
        p.wait_for_line(lab, &format!("gate {gate}"));
        p.send(lab, "go\n");
        let out = lab.expect_migrate_with(&p, pid, target, &[flag]);
        if !out.contains(&format!("by {}", flag.trim_start_matches("--").replace("postcopy", "post-copy"))) {
            p.fail(lab, &format!("herd migrate {flag} did not move it that way: {out:?}"));
        }
        lab.expect_where(&p, pid, node, Some(nmigs));
        if node != "n1" {
            lab.expect_runs_on(&p, node, &prog);
        }
    }
    lab.expect_gone_from(Some(&p), "n2", &prog);
    lab.expect_gone_from(Some(&p), "n3", &prog);
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// 2 GiB written once and then left alone: herdd's own choice for a process this large
/// is post-copy; moved home → n2 → n3 → home while idle, then it checks every page.
fn idle_heap_moves_by_postcopy_then_on(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["2048"]);
    let direct = lab.run_direct("mig_bigmem 2 GiB (direct)", &prog, &[Gate::Prefix("ready ")]);
    expect_status(&direct, Some(0), None);

    let mut p = lab.start("mig_bigmem 2 GiB (herd run, moved n2, n3, home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    for (target, node, nmigs) in [("n2", "n2", 1), ("n3", "n3", 2), ("home", "n1", 3)] {
        let out = lab.expect_migrate_with(&p, pid, target, &[]);
        if target != "home" && !out.contains("by post-copy") {
            p.fail(lab, &format!("a 2 GiB process was not moved to {target} by post-copy by default: {out:?}"));
        }
        lab.expect_where(&p, pid, node, Some(nmigs));
    }
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    assert!(moved.stdout.contains(" bad=0 "), "after its moves:\n{}", moved.describe());
    same_result(&direct, &moved, same);
}

/// Moved to n2 by post-copy, and as soon as it runs there — while most of its 192 MiB is
/// still on its way — it mremaps one region elsewhere, empties half of another
/// (MADV_DONTNEED) and unmaps a quarter of the third: the pager follows (userfaultfd
/// REMAP/REMOVE/UNMAP events). Every page it checks holds what it should (zeroes where
/// emptied); same output as a direct run.
fn layout_changes_while_memory_arrives(lab: &Lab) {
    let prog = lab.program("mig_remap");
    let direct = lab.run_direct("mig_remap (direct)", &prog, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("bad=0 "), "mig_remap's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_remap (herd run, post-copy to n2, layout changed at once)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    go_during_postcopy_to_n2(lab, &mut p, pid, &format!("herd migrate --postcopy {pid} n2"));
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    // What n2's pager did (layout = mremap/madvise/munmap events it followed; 0 when every
    // page had arrived before the process changed its layout).
    let log = fs::read_to_string(lab.dir.join("n2").join("herdd.log")).unwrap_or_default();
    let line = log.lines().rev().find(|l| l.contains("post-copy complete")).unwrap_or("(no post-copy line)");
    println!("n2: {}", line.trim());
}

/// Starts `herd migrate --postcopy PID n2`; as soon as the process runs on n2 (state
/// post-copy: most of its memory still on its way) sends it "go"; then the move must end
/// well, by post-copy (else `p` fails, saying `what`).
fn go_during_postcopy_to_n2(lab: &Lab, p: &mut Proc, pid: i32, what: &str) {
    go_during_postcopy(lab, p, pid, ("n2", "n2"), what);
}

/// [`go_during_postcopy_to_n2`] to `target`, where the process runs on `node`.
fn go_during_postcopy(lab: &Lab, p: &mut Proc, pid: i32, (target, node): (&str, &str), what: &str) {
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", "--postcopy", &pid.to_string(), target]));
    let start = Instant::now();
    loop {
        // `where` is the node from the moment it runs there (state "post-copy").
        let row = lab.ps().into_iter().find(|r| r["pid"] == pid);
        if row.as_ref().is_some_and(|r| r["where"] == node) || migrate.exited().is_some() || start.elapsed() > MIGRATE_LIMIT {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    p.send(lab, "go\n");
    let Some(status) = migrate.wait(MIGRATE_LIMIT) else {
        p.fail(lab, &format!("herd migrate --postcopy {pid} {target} still runs after {MIGRATE_LIMIT:?}"));
    };
    let (out, err) = migrate.output();
    if !status.success() || !out.contains("by post-copy") {
        p.fail(lab, &format!("{what}: {} {out:?} {err:?}", describe(&status)));
    }
}

/// On n2, brought home by post-copy, and as soon as it runs at home — most of its 512 MiB
/// still on its way — it forks a child, which forks a grandchild at once, and later another
/// child: the pager at home fills their memory too (userfaultfd fork events). Every page
/// each of them checks holds what it should; same output as a direct run.
fn forks_while_memory_comes_home(lab: &Lab) {
    let prog = lab.program("mig_forkheap").with_args(&["512"]);
    let direct = lab.run_direct("mig_forkheap 512 MiB (direct)", &prog, &[Gate::Prefix("ready ")]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("mig_forkheap 512 MiB (herd run, to n2, home by post-copy, forks during it)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    lab.expect_migrate_with(&p, pid, "n2", &[]);
    lab.expect_where(&p, pid, "n2", Some(1));
    go_during_postcopy(lab, &mut p, pid, ("home", "n1"), "herd migrate --postcopy home of a process that forks during it");
    let moved = p.finish(lab);
    assert!(moved.stdout.contains(" bad=0 ") && moved.stdout.contains("ended 0, child B ended 0"), "after coming home:\n{}", moved.describe());
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
}

/// Moved to n2 by post-copy, it exits (status 7) while most of its 512 MiB is still on its
/// way: a normal end, not a loss. `herd migrate` reports the move, `herd run` exits 7, and
/// nothing of it is left on n2.
fn ends_while_memory_arrives(lab: &Lab) {
    let prog = lab.python_program("mig_bigexit.py");
    let mut p = lab.start("mig_bigexit.py (herd run, post-copy to n2, exits during it)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    go_during_postcopy_to_n2(lab, &mut p, pid, "herd migrate of a process that ended during post-copy");
    let ended = p.finish(lab);
    expect_status(&ended, Some(7), None);
    assert_eq!(ended.stdout, "ready\nbye\n", "{}", ended.describe());
    lab.expect_gone_from(None, "n2", &prog);
}

/// `--stop-and-copy` is honoured for a process that herdd would move by post-copy, away
/// and home.
fn stop_and_copy_on_request(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["64"]);
    let mut p = lab.start("mig_bigmem 64 MiB (herd run, stop-and-copy to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    let out = lab.expect_migrate_with(&p, pid, "n2", &["--stop-and-copy"]);
    if !out.contains("by stop-and-copy") {
        p.fail(lab, &format!("herd migrate --stop-and-copy: {out:?}"));
    }
    let out = lab.expect_migrate_with(&p, pid, "home", &["--stop-and-copy"]);
    if !out.contains("by stop-and-copy") {
        p.fail(lab, &format!("herd migrate --stop-and-copy {pid} home: {out:?}"));
    }
    lab.expect_where(&p, pid, "n1", Some(2));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    expect_status(&moved, Some(0), None);
    assert!(moved.stdout.contains(" bad=0 "), "{}", moved.describe());
}

/// n2's herdd is killed while a post-copy to n2 runs (the process already runs there, part
/// of its memory still at home). The documented outcome: the process is lost — it ran on
/// n2, so its copy at home is outdated and must not run — so `herd run` dies by SIGKILL
/// (as when a node running a process dies), `herd migrate` fails saying so, and nothing of
/// it is left on n2.
fn target_daemon_killed_during_postcopy(lab: &Lab) {
    let prog = lab.program("mig_churn").with_args(&["1024", "1", "400"]);
    let mut p = lab.start("mig_churn 1 GiB (herd run; n2's herdd killed during post-copy)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "gate 0");
    p.send(lab, "go\n");
    kill_during_postcopy(lab, p, &prog, pid, ("n2", "n2"), "n2");
}

/// On n2, moved on to n3 by post-copy (its pages come from its frozen copy on n2, through
/// home), and n2's herdd is killed meanwhile: the process is lost (it runs on n3 without
/// all of its memory), with the same outcome as above, and nothing of it is left on n2 or n3.
fn source_node_killed_during_postcopy_onwards(lab: &Lab) {
    let prog = lab.program("mig_churn").with_args(&["1024", "2", "400"]);
    let mut p = lab.start("mig_churn 1 GiB (herd run; n2's herdd killed during post-copy to n3)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "gate 0");
    lab.expect_migrate_with(&p, pid, "n2", &["--stop-and-copy"]);
    p.send(lab, "go\n");
    kill_during_postcopy(lab, p, &prog, pid, ("n3", "n3"), "n2");
}

/// On n2, brought home by post-copy (its pages come from its frozen copy on n2), and n2's
/// herdd is killed meanwhile: the process runs at home without all of its memory, so it is
/// lost — the same outcome as above — and nothing of it is left on n2 or at home.
fn source_node_killed_during_postcopy_home(lab: &Lab) {
    let prog = lab.program("mig_churn").with_args(&["1024", "2", "400"]);
    let mut p = lab.start("mig_churn 1 GiB (herd run; n2's herdd killed during post-copy home)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "gate 0");
    lab.expect_migrate_with(&p, pid, "n2", &["--stop-and-copy"]);
    p.send(lab, "go\n");
    kill_during_postcopy(lab, p, &prog, pid, ("home", "n1"), "n2");
}

/// Moves `pid` to `target` by post-copy in the background, kills `victim`'s herdd once
/// `herd ps` shows it running on `node` (the target's) while its memory follows, and checks
/// the documented outcome: `herd migrate` fails saying the process was lost, `herd run` dies
/// by SIGKILL, nothing of it is left on `node` or `victim`. `victim`'s herdd is started again.
fn kill_during_postcopy(lab: &Lab, p: Proc, prog: &Program, pid: i32, (target, node): (&str, &str), victim: &str) {
    let boot_before = lab.boot_of("n1", victim);
    let host_pid = lab.daemon_host_pid(victim);
    let mut guard = DaemonGuard { lab, node: victim, host_pid, started: start_time(host_pid), restarted: false };
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", "--postcopy", &pid.to_string(), target]));
    let start = Instant::now();
    loop {
        let row = lab.ps().into_iter().find(|r| r["pid"] == pid);
        let state = row.as_ref().map(|r| (r["state"].as_str().unwrap_or_default().to_string(), r["where"].as_str().unwrap_or_default().to_string()));
        if state.as_ref().is_some_and(|(s, w)| s == "post-copy" && w == node) {
            break;
        }
        if migrate.exited().is_some() || start.elapsed() > MIGRATE_LIMIT {
            let (out, err) = migrate.output();
            p.fail(lab, &format!("never saw it in post-copy on {target} (state {state:?}); herd migrate: {out:?} {err:?}"));
        }
        thread::sleep(POLL);
    }
    herd_kernel::task::kill(host_pid, libc::SIGKILL).unwrap_or_else(|e| panic!("SIGKILL to {victim}'s herdd: {e}"));
    let Some(status) = migrate.wait(MIGRATE_LIMIT) else {
        p.fail(lab, &format!("herd migrate still runs {MIGRATE_LIMIT:?} after {victim}'s herdd was killed during post-copy"));
    };
    let (out, err) = migrate.output();
    if status.success() || !err.contains("lost") {
        p.fail(lab, &format!("herd migrate when {victim} died during post-copy: expected a failure saying it was lost, got {} {out:?} {err:?}", describe(&status)));
    }
    println!("herd migrate to {target} when {victim} died during post-copy: {} with {:?}", describe(&status), err.trim());
    let ended = p.finish(lab);
    expect_status(&ended, None, Some(libc::SIGKILL));
    lab.expect_gone_from(None, node, prog);
    lab.expect_gone_from(None, victim, prog);
    guard.restart();
    lab.wait_node_back(victim, boot_before);
}

/// n2's herdd is stopped, a move to n2 started, and n2's herdd killed while the move
/// waits on it: `herd migrate` fails with a message, the 1 GiB process runs on at n1
/// and ends as it would have; nothing of it is left on n2. n2 is started again.
fn target_daemon_killed_during_transfer(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["1024"]);
    let direct = lab.run_direct("mig_bigmem 1 GiB (direct)", &prog, &[Gate::Prefix("ready ")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains(" bad=0 "), "mig_bigmem's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_bigmem 1 GiB (herd run; n2's herdd killed during the move)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    let boot_before = lab.boot_of("n1", "n2");
    let n2 = lab.daemon_host_pid("n2");
    let mut guard = DaemonGuard { lab, node: "n2", host_pid: n2, started: start_time(n2), restarted: false };
    herd_kernel::task::kill(n2, libc::SIGSTOP).expect("SIGSTOP to n2's herdd");
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", &pid.to_string(), "n2"]));
    thread::sleep(Duration::from_millis(500));
    if let Some(status) = migrate.exited() {
        let (out, err) = migrate.output();
        p.fail(
            lab,
            &format!(
                "herd migrate {pid} n2 ended ({}) before n2's herdd was killed; with that daemon stopped the move \
                 cannot have completed (stdout {out:?}, stderr {err:?})",
                describe(&status)
            ),
        );
    }
    herd_kernel::task::kill(n2, libc::SIGKILL).expect("SIGKILL to n2's herdd");
    let Some(status) = migrate.wait(MIGRATE_LIMIT) else {
        p.fail(lab, &format!("herd migrate {pid} n2 still runs {MIGRATE_LIMIT:?} after the target's herdd was killed"));
    };
    let (out, err) = migrate.output();
    if status.success() || err.trim().is_empty() {
        p.fail(
            lab,
            &format!(
                "herd migrate {pid} n2 to a daemon killed mid-move: expected failure with a message, got {} \
                 (stdout {out:?}, stderr {err:?})",
                describe(&status)
            ),
        );
    }
    println!("herd migrate to the killed n2: {} with {:?}", describe(&status), err.trim());
    lab.expect_where(&p, pid, "n1", Some(0));
    lab.expect_gone_from(Some(&p), "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    guard.restart();
    lab.wait_node_back("n2", boot_before);
}

// ---------------------------------------------------------------------------
// Checks on mig_ids
// ---------------------------------------------------------------------------

/// `key=N` of a mig_ids line.
fn id_field(line: &str, key: &str) -> Option<i64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// mig_ids printed "before …" and "after …" with the same ids, its own pid (the home
/// pid when given) as pid and tid, and nobody's ids.
fn check_ids(lab: &Lab, f: &Finished, home_pid: Option<i32>) {
    expect_status(f, Some(0), None);
    let lines: Vec<&str> = f.stdout.lines().collect();
    let ok = lines.len() == 2 && lines[0].strip_prefix("before ").is_some_and(|ids| lines[1].strip_prefix("after ") == Some(ids));
    assert!(ok, "mig_ids should print the same ids before and after:\n{}\n{}", f.describe(), lab.logs());
    let pid = id_field(lines[0], "pid");
    assert!(pid.is_some() && pid == id_field(lines[0], "tid"), "pid and tid differ:\n{}", f.describe());
    if let Some(home) = home_pid {
        assert_eq!(pid, Some(i64::from(home)), "getpid() is not the home pid:\n{}", f.describe());
        let ppid = id_field(lines[0], "ppid").unwrap_or(0);
        assert!(ppid > 0 && ppid != i64::from(home), "getppid() is {ppid}:\n{}", f.describe());
    }
    for key in ["uid", "euid", "gid", "egid"] {
        assert_eq!(id_field(lines[0], key), Some(i64::from(NOBODY)), "{key}:\n{}", f.describe());
    }
}

/// mig_ids output with the pids replaced: they differ from run to run.
fn normalize_ids(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .map(|w| match w.split_once('=') {
                    Some((k @ ("pid" | "tid" | "ppid"), _)) => format!("{k}=N"),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

