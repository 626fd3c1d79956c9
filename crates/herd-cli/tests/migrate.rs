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
#[path = "common/scenarios.rs"]
mod scenarios;
use collector::Collector;
use nodes::{build_c, c_compiler, cluster_dir, describe, herdd, nobody_can_run, prerequisites_or_skip, python_for_nobody, HERD, NOBODY, PROGRAMS};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use herd_lab::{LocalCluster, UpOptions};
use serde_json::Value;


/// The C programs of tests/programs (each `<name>.c`, with mig_common.h).
const C_PROGRAMS: &[&str] =
    &["mig_ids", "mig_filter", "mig_files", "mig_signals", "mig_exit", "mig_forkexec", "mig_bigmem", "mig_blockread", "mig_churn", "mig_remap"];
const PY_PROGRAMS: &[&str] = &["mig_progress.py", "mig_thread.py", "mig_bigexit.py"];

const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// How long a program may take to print a line the test waits for.
const EVENT: Duration = Duration::from_secs(30);
/// How long one `herd migrate` (or `herd ps`) may take.
const MIGRATE_LIMIT: Duration = Duration::from_secs(120);
/// How long a program may take to end once it has had all its input.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// After a move, how long `herd ps` and /proc may take to agree with it.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the pieces of a process that ended or left may linger on a node.
const GONE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

type Scenario = scenarios::Scenario<Lab>;

/// In order; the last one kills n2's herdd (and starts it again).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("pid_and_parent_unchanged", pid_and_parent_unchanged),
    ("python_progress_moves_home_n2_n3_home", python_progress_moves_home_n2_n3_home),
    ("filter_moved_in_the_middle_of_its_input", filter_moved_in_the_middle_of_its_input),
    ("home_files_are_read_and_created_at_home", home_files_are_read_and_created_at_home),
    ("remote_node_files_are_invisible", remote_node_files_are_invisible),
    ("signals_reach_it_and_sigkill_leaves_nothing", signals_reach_it_and_sigkill_leaves_nothing),
    ("exit_status_3_reproduced", exit_status_3_reproduced),
    ("sigsegv_reproduced", sigsegv_reproduced),
    ("fork_and_exec_bring_it_home", fork_and_exec_bring_it_home),
    ("read_blocked_on_stdin_gets_its_input", read_blocked_on_stdin_gets_its_input),
    ("run_with_node_starts_it_remote", run_with_node_starts_it_remote),
    ("refused_moves_leave_it_running", refused_moves_leave_it_running),
    ("churning_memory_moves_by_postcopy_then_on", churning_memory_moves_by_postcopy_then_on),
    ("idle_heap_moves_by_postcopy_then_on", idle_heap_moves_by_postcopy_then_on),
    ("stop_and_copy_on_request", stop_and_copy_on_request),
    ("layout_changes_while_memory_arrives", layout_changes_while_memory_arrives),
    ("ends_while_memory_arrives", ends_while_memory_arrives),
    ("target_daemon_killed_during_postcopy", target_daemon_killed_during_postcopy),
    ("source_node_killed_during_postcopy_onwards", source_node_killed_during_postcopy_onwards),
    ("target_daemon_killed_during_transfer", target_daemon_killed_during_transfer),
];

#[test]
fn migration_scenarios() {
    let Some(lab) = Lab::new() else { return };
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
    let mut d = lab.start("mig_ids (direct)", How::Direct, &prog);
    d.wait_for_prefix(lab, "before ");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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

    let mut d = lab.start("mig_files home (direct)", How::Direct, &prog);
    d.wait_for_line(lab, "ready");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);

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

/// A file that only n2's /tmp has is not there for a process moved to n2: ENOENT.
fn remote_node_files_are_invisible(lab: &Lab) {
    lab.node_sh_ok("n2", &format!("printf 'only on n2\\n' > {REMOTE_ONLY} && chmod 644 {REMOTE_ONLY}"));
    lab.node_sh_ok("n1", &format!("rm -f {REMOTE_ONLY}"));
    let there = lab.node_sh("n2", &format!("cat {REMOTE_ONLY}"));
    assert_eq!(String::from_utf8_lossy(&there.stdout), "only on n2\n", "n2's own file is not readable in n2");
    let prog = lab.program("mig_files").with_args(&[format!("stat:{REMOTE_ONLY}"), format!("cat:{REMOTE_ONLY}")]);

    let mut d = lab.start("mig_files remote-only (direct)", How::Direct, &prog);
    d.wait_for_line(lab, "ready");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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

/// exit(3) while on n2: herd run exits with 3.
fn exit_status_3_reproduced(lab: &Lab) {
    ends_while_remote(lab, "exit3", Some(3), None);
}

/// A write through NULL while on n2: herd run dies by SIGSEGV.
fn sigsegv_reproduced(lab: &Lab) {
    ends_while_remote(lab, "segv", None, Some(libc::SIGSEGV));
}

fn ends_while_remote(lab: &Lab, mode: &str, code: Option<i32>, signal: Option<i32>) {
    let prog = lab.program("mig_exit").with_args(&[mode]);
    let mut d = lab.start(&format!("mig_exit {mode} (direct)"), How::Direct, &prog);
    d.wait_for_line(lab, "ready");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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

/// fork + exec while on n2: it comes home for them; the child runs; both end well.
fn fork_and_exec_bring_it_home(lab: &Lab) {
    let prog = lab.program("mig_forkexec");
    let mut d = lab.start("mig_forkexec (direct)", How::Direct, &prog);
    d.wait_for_line(lab, "ready 1");
    d.send(lab, "go\n");
    d.wait_for_line(lab, "ready 2");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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
    // Going home is a move of its own.
    lab.expect_where(&p, pid, "n1", Some(2));
    lab.expect_gone_from(Some(&p), "n2", &prog);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
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
    let mut d = lab.start("mig_ids (direct)", How::Direct, &prog);
    d.wait_for_prefix(lab, "before ");
    d.send(lab, "go\n");
    let direct = d.finish(lab);

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
    let mut d = lab.start("mig_ids (direct)", How::Direct, &prog);
    d.wait_for_prefix(lab, "before ");
    d.send(lab, "go\n");
    let direct = d.finish(lab);

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
    // (Before n2 blocks below.) A process home refuses to send (a second thread): refused with the reason, and n2
    // hears nothing of it (no "refused" line for a move it never saw).
    let n2_log = lab.dir.join("n2").join("herdd.log");
    let before = fs::read_to_string(&n2_log).unwrap_or_default().len();
    let tprog = lab.python_program("mig_thread.py");
    let mut t = lab.start("mig_thread.py (herd run, two threads)", How::Herd, &tprog);
    let tpid = t.home_pid(lab);
    t.wait_for_line(lab, "ready");
    let out = lab.migrate(tpid, "n2");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1) || !err.contains("thread") {
        t.fail(lab, &format!("herd migrate of a two-thread process: expected a refusal naming threads, got {}: {err:?}", describe(&out.status)));
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
    lab.expect_where(&p, pid, "n1", Some(0));
    // n2 blocks, and the move is asked at once: n1 may not know yet, and then n2 itself
    // refuses the process after n1 froze it. Either way it runs on at n1, unharmed.
    let ctl = |op| {
        let mut c = herd_daemon::control::Client::connect(&lab.cluster.node_socket("n2")).expect("n2's control socket");
        c.call(&herd_daemon::control::Request::Ctl { op }).expect("herd ctl on n2");
    };
    ctl(herd_daemon::control::CtlOp::Block);
    let out = lab.migrate(pid, "n2");
    ctl(herd_daemon::control::CtlOp::NoBlock);
    // The next scenarios need n1 to know n2 takes processes again: a state of n2's
    // published after the noblock, and up.
    let t = Instant::now();
    let fresh = |r: &Value| r["state"] == "up" && r["info_age_secs"].as_f64().is_some_and(|age| age < t.elapsed().as_secs_f64());
    while !lab.nodes("n1").iter().any(|r| r["name"] == "n2" && fresh(r)) {
        assert!(t.elapsed() < SETTLE, "n1 has not heard n2's noblock {SETTLE:?} after it");
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
    let mut d = lab.start("mig_bigmem 2 GiB (direct)", How::Direct, &prog);
    d.wait_for_prefix(lab, "ready ");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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
    let mut d = lab.start("mig_remap (direct)", How::Direct, &prog);
    d.wait_for_line(lab, "ready");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("bad=0 "), "mig_remap's direct run:\n{}", direct.describe());

    let mut p = lab.start("mig_remap (herd run, post-copy to n2, layout changed at once)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", "--postcopy", &pid.to_string(), "n2"]));
    let start = Instant::now();
    loop {
        let row = lab.ps().into_iter().find(|r| r["pid"] == pid);
        if row.as_ref().is_some_and(|r| r["state"] == "post-copy" || r["where"] == "n2") {
            break;
        }
        if migrate.exited().is_some() || start.elapsed() > MIGRATE_LIMIT {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    p.send(lab, "go\n");
    let Some(status) = migrate.wait(MIGRATE_LIMIT) else {
        p.fail(lab, &format!("herd migrate --postcopy {pid} n2 still runs after {MIGRATE_LIMIT:?}"));
    };
    let (out, err) = migrate.output();
    if !status.success() || !out.contains("by post-copy") {
        p.fail(lab, &format!("herd migrate --postcopy {pid} n2: {} {out:?} {err:?}", describe(&status)));
    }
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    // What n2's pager did (layout = mremap/madvise/munmap events it followed; 0 when every
    // page had arrived before the process changed its layout).
    let log = fs::read_to_string(lab.dir.join("n2").join("herdd.log")).unwrap_or_default();
    let line = log.lines().rev().find(|l| l.contains("post-copy complete")).unwrap_or("(no post-copy line)");
    println!("n2: {}", line.trim());
}

/// Moved to n2 by post-copy, it exits (status 7) while most of its 512 MiB is still on its
/// way: a normal end, not a loss. `herd migrate` reports the move, `herd run` exits 7, and
/// nothing of it is left on n2.
fn ends_while_memory_arrives(lab: &Lab) {
    let prog = lab.python_program("mig_bigexit.py");
    let mut p = lab.start("mig_bigexit.py (herd run, post-copy to n2, exits during it)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", "--postcopy", &pid.to_string(), "n2"]));
    let start = Instant::now();
    loop {
        let row = lab.ps().into_iter().find(|r| r["pid"] == pid);
        if row.as_ref().is_some_and(|r| r["where"] == "n2") || migrate.exited().is_some() || start.elapsed() > MIGRATE_LIMIT {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    p.send(lab, "go\n");
    let Some(status) = migrate.wait(MIGRATE_LIMIT) else {
        p.fail(lab, &format!("herd migrate --postcopy {pid} n2 still runs after {MIGRATE_LIMIT:?}"));
    };
    let (out, err) = migrate.output();
    if !status.success() || !out.contains("by post-copy") {
        p.fail(lab, &format!("herd migrate of a process that ended during post-copy: {} {out:?} {err:?}", describe(&status)));
    }
    let ended = p.finish(lab);
    expect_status(&ended, Some(7), None);
    assert_eq!(ended.stdout, "ready\nbye\n", "{}", ended.describe());
    lab.expect_gone_from(None, "n2", &prog);
}

/// `--stop-and-copy` is honoured for a process that herdd would move by post-copy; asked to
/// come home by post-copy, herd refuses and says why.
fn stop_and_copy_on_request(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["64"]);
    let mut p = lab.start("mig_bigmem 64 MiB (herd run, stop-and-copy to n2)", How::Herd, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_prefix(lab, "ready ");
    let out = lab.expect_migrate_with(&p, pid, "n2", &["--stop-and-copy"]);
    if !out.contains("by stop-and-copy") {
        p.fail(lab, &format!("herd migrate --stop-and-copy: {out:?}"));
    }
    // A process comes home by stop-and-copy: asked for post-copy, herd says why not.
    let again = lab.migrate_with(pid, "home", &["--postcopy"]);
    let err = String::from_utf8_lossy(&again.stderr);
    if again.status.success() || !err.contains("post-copy") {
        p.fail(lab, &format!("herd migrate --postcopy from n2: expected a refusal naming post-copy, got {} {err:?}", describe(&again.status)));
    }
    lab.expect_where(&p, pid, "n2", Some(1));
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
    kill_during_postcopy(lab, p, &prog, pid, "n2", "n2");
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
    kill_during_postcopy(lab, p, &prog, pid, "n3", "n2");
}

/// Moves `pid` to `target` by post-copy in the background, kills `victim`'s herdd once
/// `herd ps` shows it running on `target` while its memory follows, and checks the
/// documented outcome: `herd migrate` fails saying the process was lost, `herd run` dies by
/// SIGKILL, nothing of it is left on `target` or `victim`. `victim`'s herdd is started again.
fn kill_during_postcopy(lab: &Lab, p: Proc, prog: &Program, pid: i32, target: &str, victim: &str) {
    let boot_before = lab.boot_of("n1", victim);
    let host_pid = lab.daemon_host_pid(victim);
    let mut guard = DaemonGuard { lab, node: victim, host_pid, started: start_time(host_pid), restarted: false };
    let mut migrate = Background::start(lab.herd_cmd(&["migrate", "--postcopy", &pid.to_string(), target]));
    let start = Instant::now();
    loop {
        let row = lab.ps().into_iter().find(|r| r["pid"] == pid);
        let state = row.as_ref().map(|r| (r["state"].as_str().unwrap_or_default().to_string(), r["where"].as_str().unwrap_or_default().to_string()));
        if state.as_ref().is_some_and(|(s, w)| s == "post-copy" && w == target) {
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
    lab.expect_gone_from(None, target, prog);
    lab.expect_gone_from(None, victim, prog);
    guard.restart();
    lab.wait_node_back(victim, boot_before);
}

/// n2's herdd is stopped, a move to n2 started, and n2's herdd killed while the move
/// waits on it: `herd migrate` fails with a message, the 1 GiB process runs on at n1
/// and ends as it would have; nothing of it is left on n2. n2 is started again.
fn target_daemon_killed_during_transfer(lab: &Lab) {
    let prog = lab.program("mig_bigmem").with_args(&["1024"]);
    let mut d = lab.start("mig_bigmem 1 GiB (direct)", How::Direct, &prog);
    d.wait_for_prefix(lab, "ready ");
    d.send(lab, "go\n");
    let direct = d.finish(lab);
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
// Checks on outputs
// ---------------------------------------------------------------------------

/// A program run to its end.
struct Finished {
    label: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    logs: String,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "{}: {}\n--- stdout\n{}--- stderr\n{}--- end",
            self.label,
            describe(&self.status),
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        )
    }
}

fn same(s: &str) -> String {
    s.to_string()
}

/// Same stdout (after `normalize`) and the same exit: code, or signal.
fn same_result(direct: &Finished, moved: &Finished, normalize: fn(&str) -> String) {
    let (a, b) = (normalize(&direct.stdout), normalize(&moved.stdout));
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(a.lines().count().min(b.lines().count()));
        panic!(
            "{}: stdout differs from the uninterrupted run's, first at line {} ({} lines uninterrupted, {} migrated)\n\
             === uninterrupted, around there\n{}=== migrated, around there\n{}=== migrated: {}; stderr\n{}=== end\n{}",
            moved.label,
            first + 1,
            a.lines().count(),
            b.lines().count(),
            excerpt(&a, first),
            excerpt(&b, first),
            describe(&moved.status),
            tail(&moved.stderr, 40),
            moved.logs
        );
    }
    let how = |s: &ExitStatus| (s.code(), s.signal());
    if how(&direct.status) != how(&moved.status) {
        panic!(
            "the migrated run ended differently: {} (uninterrupted: {})\n=== migrated\n{}\n{}",
            describe(&moved.status),
            describe(&direct.status),
            moved.describe(),
            moved.logs
        );
    }
}

/// Lines `line`-5 .. `line`+10 of `text`, numbered from 1.
fn excerpt(text: &str, line: usize) -> String {
    text.lines().enumerate().skip(line.saturating_sub(5)).take(15).map(|(i, l)| format!("{:>5}| {l}\n", i + 1)).collect()
}

/// The last `n` lines of `text`, with a note of how many came before.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = if skip > 0 { format!("({skip} earlier lines)\n") } else { String::new() };
    out.extend(lines[skip..].iter().copied());
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str("(no newline yet)\n");
    }
    out
}

fn expect_status(f: &Finished, code: Option<i32>, signal: Option<i32>) {
    assert!(
        f.status.code() == code && f.status.signal() == signal,
        "expected {}, got:\n{}\n{}",
        match (code, signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("death by signal {s}"),
            _ => "?".into(),
        },
        f.describe(),
        f.logs
    );
}

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

// ---------------------------------------------------------------------------
// The lab: cluster, programs, herd commands
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum How<'a> {
    /// The program itself, in n1.
    Direct,
    /// `herd run -- program`, in n1.
    Herd,
    /// `herd run --node NODE -- program`, in n1.
    HerdOn(&'a str),
}

/// A command line to run, and how to find its processes in a node's /proc.
#[derive(Clone)]
struct Program {
    argv: Vec<OsString>,
    /// An argument that only this program's processes have: its path.
    marker: String,
    /// Its name in /proc/PID/comm (None for a script: python3's name is not its own).
    comm: Option<String>,
}

impl Program {
    fn with_args<S: AsRef<str>>(&self, args: &[S]) -> Program {
        let mut p = self.clone();
        p.argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
        p
    }
}

struct Lab {
    cluster: LocalCluster,
    dir: PathBuf,
    bin: PathBuf,
    python: PathBuf,
    setpriv: PathBuf,
}

impl Lab {
    /// Builds the programs into DIR/bin and brings a three-node cluster up in DIR; None
    /// (after a SKIP line) when something it needs is missing.
    fn new() -> Option<Lab> {
        let setpriv = prerequisites_or_skip()?;
        let (dir, bin) = cluster_dir("mig");
        let skip = |reason: String| {
            println!("SKIP: {reason}");
            let _ = fs::remove_dir_all(&dir);
        };
        let cc = match c_compiler() {
            Some(cc) => cc,
            None => {
                skip("no C compiler (gcc or cc) for the test programs".into());
                return None;
            }
        };
        for name in C_PROGRAMS {
            build_c(cc, &bin, name);
        }
        for name in PY_PROGRAMS {
            let to = bin.join(name);
            fs::copy(Path::new(PROGRAMS).join(name), &to).unwrap_or_else(|e| panic!("copying {name}: {e}"));
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut needed: Vec<PathBuf> = C_PROGRAMS.iter().map(|n| bin.join(n)).collect();
        needed.push(PathBuf::from(HERD));
        if let Err(reason) = nobody_can_run(&setpriv, &needed, &bin.join(PY_PROGRAMS[0])) {
            skip(reason);
            return None;
        }
        let Some(python) = python_for_nobody(&setpriv) else {
            skip("no python3 that uid 65534 may run (tried the one on PATH, /usr/bin/python3, /usr/local/bin/python3)".into());
            return None;
        };

        let mut opts = UpOptions::new(3);
        opts.dir = Some(dir.clone());
        opts.herd_exe = Some(HERD.into());
        opts.daemon = Some(herdd());
        opts.timeout = Duration::from_secs(60);
        let cluster = match LocalCluster::up(&opts) {
            Ok(c) => c,
            Err(e) if e.to_string().contains("user namespaces are disabled") => {
                skip(e.to_string());
                return None;
            }
            Err(e) => panic!("herd cluster up failed: {e}"),
        };
        let lab = Lab { cluster, dir, bin, python, setpriv };
        // No core files from what dies by a signal here (SIGSEGV is reproduced by herd run and
        // by node_exec's waiter, whose cwd is a directory of the host).
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).expect("getrlimit");
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, hard).expect("setrlimit RLIMIT_CORE");
        // Every node must know every other before anything moves.
        for viewer in NODES {
            lab.wait_all_up(viewer, Duration::from_secs(60));
        }
        // These scenarios move processes by hand: n1, the home of every process here,
        // takes no part in automatic balancing (balance.rs tests that).
        let mut c = herd_daemon::control::Client::connect(&lab.cluster.node_socket("n1")).expect("n1's control socket");
        c.call(&herd_daemon::control::Request::Ctl { op: herd_daemon::control::CtlOp::Quiet }).expect("herd ctl quiet on n1");
        Some(lab)
    }

    /// Takes the cluster down; removes its directory when `clean`. Returns the directory.
    fn finish(self, clean: bool) -> PathBuf {
        let Lab { cluster, dir, .. } = self;
        if let Err(e) = cluster.down() {
            eprintln!("taking the cluster at {} down: {e}", dir.display());
        }
        if clean {
            let _ = fs::remove_dir_all(&dir);
        }
        dir
    }

    fn program(&self, name: &str) -> Program {
        let path = self.bin.join(name);
        Program {
            argv: vec![path.clone().into_os_string()],
            marker: path.to_string_lossy().into_owned(),
            comm: Some(name.chars().take(15).collect()),
        }
    }

    fn python_program(&self, name: &str) -> Program {
        let path = self.bin.join(name);
        Program {
            argv: vec![self.python.clone().into_os_string(), "-I".into(), "-S".into(), path.clone().into_os_string()],
            marker: path.to_string_lossy().into_owned(),
            comm: None,
        }
    }

    /// A clean environment for what runs inside a node, `herd` there talking to its herdd.
    fn node_env(&self, cmd: &mut Command, node: &str) {
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/")
            .env("LC_ALL", "C")
            .env("HERD_SOCKET", self.cluster.node_socket(node));
        for (k, v) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("RUST_")) {
                cmd.env(k, v);
            }
        }
    }

    /// Starts `prog` in n1 as nobody, directly or under `herd run`; stdin, stdout and
    /// stderr are pipes of the test.
    fn start(&self, label: &str, how: How, prog: &Program) -> Proc {
        let mut argv: Vec<OsString> = vec![
            self.setpriv.clone().into_os_string(),
            format!("--reuid={NOBODY}").into(),
            format!("--regid={NOBODY}").into(),
            "--clear-groups".into(),
            "--".into(),
        ];
        match how {
            How::Direct => {}
            How::Herd => argv.extend([HERD.into(), "run".into(), "--".into()]),
            How::HerdOn(node) => argv.extend([HERD.into(), "run".into(), "--node".into(), node.into(), "--".into()]),
        }
        argv.extend(prog.argv.iter().cloned());
        let mut cmd = self.cluster.node_exec("n1", &argv).unwrap_or_else(|e| panic!("{label}: node_exec in n1: {e}"));
        self.node_env(&mut cmd, "n1");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: starting {argv:?} in n1: {e}"));
        let stdin = child.stdin.take();
        let out = Collector::start(child.stdout.take().unwrap());
        let err = Collector::start(child.stderr.take().unwrap());
        println!("started {label}: {argv:?}");
        Proc {
            label: label.to_string(),
            cluster_dir: self.dir.clone(),
            child,
            stdin,
            out,
            err,
            status: None,
            pid: None,
            prog: prog.clone(),
        }
    }

    /// The end of every node's herdd.log.
    fn logs(&self) -> String {
        let mut s = String::new();
        for node in NODES {
            let path = self.dir.join(node).join("herdd.log");
            let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            s.push_str(&format!("--- end of {}\n{tail}\n", path.display()));
        }
        s
    }

    fn herd_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(HERD);
        cmd.arg("--cluster").arg(&self.dir).args(["--node", "n1"]).args(args);
        cmd
    }

    fn migrate(&self, pid: i32, target: &str) -> Output {
        self.migrate_with(pid, target, &[])
    }

    /// `herd migrate [FLAGS] PID TARGET`.
    fn migrate_with(&self, pid: i32, target: &str, flags: &[&str]) -> Output {
        let pid = pid.to_string();
        let args: Vec<&str> = ["migrate"].into_iter().chain(flags.iter().copied()).chain([pid.as_str(), target]).collect();
        run_bounded(self.herd_cmd(&args), &format!("herd migrate {flags:?} {pid} {target}"), MIGRATE_LIMIT)
    }

    /// `herd migrate PID TARGET` must succeed.
    fn expect_migrate(&self, p: &Proc, pid: i32, target: &str) {
        self.expect_migrate_with(p, pid, target, &[]);
    }

    /// `herd migrate [FLAGS] PID TARGET` must succeed; returns what it printed.
    fn expect_migrate_with(&self, p: &Proc, pid: i32, target: &str, flags: &[&str]) -> String {
        let start = Instant::now();
        let out = self.migrate_with(pid, target, flags);
        if !out.status.success() {
            p.fail(
                self,
                &format!(
                    "herd migrate {pid} {target} failed ({}): stdout {:?}, stderr {:?}",
                    describe(&out.status),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("{}: herd migrate {flags:?} {pid} {target}: {:.1?} {said}", p.label, start.elapsed());
        said
    }

    fn ps(&self) -> Vec<Value> {
        let out = run_bounded(self.herd_cmd(&["ps", "--json"]), "herd ps --json", MIGRATE_LIMIT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "herd --node n1 ps --json: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("herd ps --json is not a JSON array ({e}): {text}"))
    }

    /// Polls `herd ps` until the row of `pid` says it is on `node` (state "home" on n1,
    /// "remote" elsewhere) and, when given, has moved `nmigs` times.
    fn expect_where(&self, p: &Proc, pid: i32, node: &str, nmigs: Option<u64>) -> Value {
        let state = if node == "n1" { "home" } else { "remote" };
        let start = Instant::now();
        loop {
            let rows = self.ps();
            let row = rows.iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid))).cloned();
            if let Some(r) = &row {
                if r["where"] == node && r["state"] == state && nmigs.is_none_or(|n| r["nmigs"].as_u64() == Some(n)) {
                    return r.clone();
                }
            }
            if start.elapsed() > SETTLE {
                let want = match nmigs {
                    Some(n) => format!("where={node} state={state} nmigs={n}"),
                    None => format!("where={node} state={state}"),
                };
                let got = match row {
                    Some(r) => format!("its row is {r}"),
                    None => format!("it is not listed; herd ps lists {}", Value::Array(rows)),
                };
                p.fail(self, &format!("herd ps does not show pid {pid} with {want} within {SETTLE:?}: {got}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -s SIG PID` as root inside n1 (PID in n1's pid namespace).
    fn kill_in_n1(&self, pid: i32, sig: &str) {
        let out = self.node_sh("n1", &format!("kill -s {sig} {pid}"));
        assert!(out.status.success(), "kill -s {sig} {pid} in n1: {} {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    }

    /// `sh -c SCRIPT` as root inside `node`.
    fn node_sh(&self, node: &str, script: &str) -> Output {
        let mut cmd = self.cluster.node_exec(node, &["sh", "-c", script]).unwrap_or_else(|e| panic!("node_exec in {node}: {e}"));
        self.node_env(&mut cmd, node);
        run_bounded(cmd, &format!("sh -c {script:?} in {node}"), EVENT)
    }

    fn node_sh_ok(&self, node: &str, script: &str) {
        let out = self.node_sh(node, script);
        assert!(out.status.success(), "sh -c {script:?} in {node}: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until `pid` (in n1) is blocked in read(2), so that it is moved in there.
    fn wait_blocked_in_read(&self, p: &Proc, pid: i32) {
        let start = Instant::now();
        loop {
            let out = self.node_sh("n1", &format!("cat /proc/{pid}/syscall"));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.split_whitespace().next() == Some("0") {
                return;
            }
            if start.elapsed() > EVENT {
                p.fail(self, &format!("pid {pid} is not blocked in read(2) in n1 within {EVENT:?}: /proc/{pid}/syscall says {text:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn nodes(&self, viewer: &str) -> Vec<Value> {
        let mut cmd = Command::new(HERD);
        cmd.arg("--cluster").arg(&self.dir).args(["--node", viewer, "nodes", "--json"]);
        let out = run_bounded(cmd, &format!("herd --node {viewer} nodes --json"), EVENT);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn wait_all_up(&self, viewer: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let rows = self.nodes(viewer);
            if rows.len() == NODES.len() && NODES.iter().all(|n| rows.iter().any(|r| r["name"] == *n && r["state"] == "up")) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{viewer} does not list n1, n2 and n3 up within {limit:?}: {}\n{}",
                Value::Array(rows),
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Before each scenario: n1 sees every node up.
    fn wait_healthy(&self) {
        self.wait_all_up("n1", Duration::from_secs(60));
    }

    fn boot_of(&self, viewer: &str, node: &str) -> u64 {
        let rows = self.nodes(viewer);
        rows.iter()
            .find(|r| r["name"] == node)
            .and_then(|r| r["boot"].as_u64())
            .unwrap_or_else(|| panic!("{viewer} lists no boot for {node}: {}", Value::Array(rows.clone())))
    }

    /// Waits until `node` was started again and n1 and n3 list it up with a new boot.
    fn wait_node_back(&self, node: &str, boot_before: u64) {
        let start = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            let back = ["n1", "n3"]
                .iter()
                .all(|v| self.nodes(v).iter().any(|r| r["name"] == node && r["state"] == "up" && r["boot"].as_u64() > Some(boot_before)));
            if back {
                return;
            }
            assert!(start.elapsed() < limit, "{node} is not back up (new boot) within {limit:?}\n{}", self.logs());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn daemon_host_pid(&self, node: &str) -> i32 {
        let nodes = self.cluster.status().expect("cluster status");
        nodes.iter().find(|n| n.name == node).and_then(|n| n.pid).unwrap_or_else(|| panic!("{node}'s herdd does not run"))
    }

    fn procs_on(&self, node: &str, prog: &Program) -> Vec<(i32, String)> {
        procs_in(&self.dir, node, prog)
    }

    /// Exactly one process of `prog` runs in `node`, as nobody.
    fn expect_runs_on(&self, p: &Proc, node: &str, prog: &Program) {
        let start = Instant::now();
        loop {
            let found = self.procs_on(node, prog);
            let nobody = format!("uid {NOBODY} {NOBODY} {NOBODY} {NOBODY} ");
            if found.len() == 1 && found[0].1.contains(&nobody) {
                return;
            }
            if start.elapsed() > SETTLE {
                p.fail(
                    self,
                    &format!(
                        "expected one process of {} in {node}'s pid namespace, running as uid {NOBODY}; found {found:#?}",
                        prog.marker
                    ),
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// No process of `prog` (zombies included) is left in `node` within GONE.
    fn expect_gone_from(&self, p: Option<&Proc>, node: &str, prog: &Program) {
        let start = Instant::now();
        loop {
            let found = self.procs_on(node, prog);
            if found.is_empty() {
                return;
            }
            if start.elapsed() > GONE {
                kill_leftovers(&self.dir, prog);
                let msg = format!(
                    "processes of {} are still in {node} {GONE:?} after it left or ended (now killed, so that the next \
                     scenarios start clean): {found:#?}",
                    prog.marker
                );
                match p {
                    Some(p) => p.fail(self, &msg),
                    None => panic!("{msg}\n{}", self.logs()),
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The processes of `prog` in `node`'s pid namespace (node-init's), seen from the host's
/// /proc: host pid, and a description (state, uids, cmdline). Empty when the cluster's
/// state cannot be read.
fn procs_in(dir: &Path, node: &str, prog: &Program) -> Vec<(i32, String)> {
    let Some(init) = herd_lab::status(dir).ok().and_then(|st| st.nodes.into_iter().find(|n| n.name == node)).map(|n| n.init_pid) else {
        return Vec::new();
    };
    let Ok(ns) = fs::read_link(format!("/proc/{init}/ns/pid")) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if fs::read_link(entry.path().join("ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let by_arg = args.contains(&prog.marker);
        let by_comm = prog.comm.as_deref().is_some_and(|c| comm.trim_end() == c);
        if by_arg || by_comm {
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let field =
                |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("?").split_whitespace().collect::<Vec<_>>().join(" ");
            found.push((pid, format!("host pid {pid}: {} uid {} cmdline {:?}", field("State:"), field("Uid:"), args.join(" ").trim_end())));
        }
    }
    found
}

/// Start time of a host pid (field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILL to every process of `prog` on every node (by host pid): what a failed
/// scenario left must not disturb the next ones.
fn kill_leftovers(dir: &Path, prog: &Program) {
    for node in NODES {
        for (pid, _) in procs_in(dir, node, prog) {
            let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
        }
    }
}

/// A stopped or killed herdd is started again, whatever happens in the scenario.
struct DaemonGuard<'a> {
    lab: &'a Lab,
    node: &'a str,
    host_pid: i32,
    /// Its start time: a reused pid is never signalled.
    started: Option<u64>,
    restarted: bool,
}

impl DaemonGuard<'_> {
    /// Kills what is left of the daemon and starts a new one; Err says why not.
    fn try_restart(&mut self) -> Result<(), String> {
        if self.restarted {
            return Ok(());
        }
        // SIGKILL works on a stopped process too.
        if self.started.is_some() && start_time(self.host_pid) == self.started {
            let _ = herd_kernel::task::kill(self.host_pid, libc::SIGKILL);
        }
        let start = Instant::now();
        loop {
            // Ok(false) while node-init has not yet reaped the old one.
            match self.lab.cluster.start_node(self.node) {
                Ok(true) => {
                    self.restarted = true;
                    return Ok(());
                }
                Ok(false) if start.elapsed() < Duration::from_secs(15) => thread::sleep(Duration::from_millis(50)),
                Ok(false) => return Err(format!("{}'s old herdd is still there after 15 s", self.node)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("starting {}'s herdd again: {e}\n{}", self.node, self.lab.logs());
        }
    }
}

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.try_restart() {
            eprintln!("starting {}'s herdd again: {e}", self.node);
        }
    }
}

// ---------------------------------------------------------------------------
// Processes under test
// ---------------------------------------------------------------------------

/// A program started in n1 (directly or under herd run), with the test's pipes. Its
/// process is killed on drop if it has not ended.
struct Proc {
    label: String,
    cluster_dir: PathBuf,
    /// node_exec's waiter: ends exactly like the program (or herd run).
    child: Child,
    stdin: Option<ChildStdin>,
    out: Collector,
    err: Collector,
    status: Option<ExitStatus>,
    /// Its home pid, once read from its stderr.
    pid: Option<i32>,
    prog: Program,
}

impl Proc {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.snapshot()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.snapshot()).into_owned()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Panics with `what`, the program's output so far and the daemons' logs.
    fn fail(&self, lab: &Lab, what: &str) -> ! {
        let status = match self.status {
            Some(s) => describe(&s),
            None => "still running".into(),
        };
        panic!(
            "{}: {what}\n--- it is {status}; stdout so far\n{}--- stderr so far\n{}--- end\n{}",
            self.label,
            tail(&self.stdout(), 30),
            tail(&self.stderr(), 30),
            lab.logs()
        );
    }

    /// Waits until `cond(stdout, stderr)` holds; fails if the program ends first.
    fn wait_for(&mut self, lab: &Lab, what: &str, cond: impl Fn(&str, &str) -> bool) {
        let start = Instant::now();
        loop {
            if cond(&self.stdout(), &self.stderr()) {
                return;
            }
            if self.exited().is_some() {
                // Whatever it wrote last may still be in the pipes.
                self.out.finish(EVENT);
                self.err.finish(EVENT);
                if cond(&self.stdout(), &self.stderr()) {
                    return;
                }
                self.fail(lab, &format!("it ended before {what}"));
            }
            if start.elapsed() > EVENT {
                self.fail(lab, &format!("not {what} within {EVENT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    fn wait_for_line(&mut self, lab: &Lab, line: &str) {
        let whole = format!("{line}\n");
        self.wait_for(lab, &format!("it printed the line {line:?}"), |out, _| out.split_inclusive('\n').any(|l| l == whole));
    }

    fn wait_for_prefix(&mut self, lab: &Lab, prefix: &str) {
        self.wait_for(lab, &format!("it printed a line starting {prefix:?}"), |out, _| {
            out.split_inclusive('\n').any(|l| l.ends_with('\n') && l.starts_with(prefix))
        });
    }

    fn wait_for_lines(&mut self, lab: &Lab, n: usize) {
        self.wait_for(lab, &format!("it printed {n} lines"), |out, _| out.matches('\n').count() >= n);
    }

    /// Its home pid: the "mig-pid: N" line of its stderr.
    fn home_pid(&mut self, lab: &Lab) -> i32 {
        let parse = |err: &str| err.lines().find_map(|l| l.strip_prefix("mig-pid: ")?.trim().parse::<i32>().ok());
        self.wait_for(lab, "it printed its pid (\"mig-pid: N\" on stderr)", |_, err| parse(err).is_some());
        let pid = parse(&self.stderr()).unwrap();
        self.pid = Some(pid);
        pid
    }

    fn send(&mut self, lab: &Lab, text: &str) {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("its stdin is closed")),
        };
        if let Err(e) = result {
            let _ = self.exited();
            self.fail(lab, &format!("writing {text:?} to its stdin: {e}"));
        }
    }

    /// Closes stdin, waits for the end, and collects everything it wrote.
    fn finish(mut self, lab: &Lab) -> Finished {
        self.stdin = None;
        let start = Instant::now();
        while self.exited().is_none() {
            if start.elapsed() > RUN_LIMIT {
                self.fail(lab, &format!("it did not end within {RUN_LIMIT:?} of its last input"));
            }
            thread::sleep(POLL);
        }
        if !self.out.finish(EVENT) || !self.err.finish(EVENT) {
            self.fail(lab, &format!("its stdout or stderr is still open {EVENT:?} after it ended (some process holds it)"));
        }
        let status = self.status.unwrap();
        println!("{}: {}", self.label, describe(&status));
        Finished { label: self.label.clone(), status, stdout: self.stdout(), stderr: self.stderr(), logs: lab.logs() }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // The program runs as nobody, so the waiter's death signal (cleared by setpriv's
        // change of credentials) does not reach it: kill its home pid in n1.
        if let Some(pid) = self.pid {
            if let Ok(mut cmd) = herd_lab::node_exec(&self.cluster_dir, "n1", &["kill", "-s", "KILL", &pid.to_string()]) {
                let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // And whatever of it runs elsewhere, should killing the home pid not reach it.
        kill_leftovers(&self.cluster_dir, &self.prog);
    }
}

/// A herd command running in the background (the move that the test interrupts).
struct Background {
    child: Child,
    out: Collector,
    err: Collector,
    status: Option<ExitStatus>,
}

impl Background {
    fn start(mut cmd: Command) -> Background {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting herd");
        let out = Collector::start(child.stdout.take().unwrap());
        let err = Collector::start(child.stderr.take().unwrap());
        Background { child, out, err, status: None }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while self.exited().is_none() && start.elapsed() < limit {
            thread::sleep(POLL);
        }
        self.status
    }

    fn output(&mut self) -> (String, String) {
        if self.status.is_some() {
            self.out.finish(EVENT);
            self.err.finish(EVENT);
        }
        (String::from_utf8_lossy(&self.out.snapshot()).into_owned(), String::from_utf8_lossy(&self.err.snapshot()).into_owned())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` (stdin /dev/null) to its end within `limit`, or kills it and panics.
fn run_bounded(cmd: Command, what: &str, limit: Duration) -> Output {
    let mut bg = Background::start(cmd);
    let Some(status) = bg.wait(limit) else {
        let (out, err) = bg.output();
        panic!("{what} did not end within {limit:?} (stdout so far {out:?}, stderr {err:?})");
    };
    let (out, err) = bg.output();
    Output { status, stdout: out.into_bytes(), stderr: err.into_bytes() }
}
