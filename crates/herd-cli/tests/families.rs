//! Families end to end: what a `herd run` command starts is migratable too, on a local
//! cluster of three nodes with one CPU each (real herdd daemons in namespaces of their
//! own).
//!
//! Method as in migrate.rs (the lab is common/lab.rs): each scenario runs a real program
//! tree in n1 twice, once directly and once under `herd run`, and asserts the same stdout
//! (sorted where jobs run side by side and their lines interleave) and the same exit
//! status. Two scenarios leave the moves to the balancer and assert that the work ran on
//! every node; the others start the job locked (`herd run --lock`: its children inherit
//! the lock) and move its members by hand with `herd migrate`, at points the programs wait
//! for. The processes run as nobody. `HERD_FAMILIES_ONLY=word,word` runs some scenarios.
//!
//! Prerequisites missing (root, herdd, iproute2, setpriv, a C compiler, cgroups):
//! `SKIP: <reason>` and return.

#[path = "common/collector.rs"]
mod collector;
#[path = "common/gobuild.rs"]
mod gobuild;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/nodes.rs"]
mod nodes;
#[path = "common/scenarios.rs"]
mod scenarios;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use lab::*;
use nodes::HERD;
use serde_json::Value;

const C_PROGRAMS: &[&str] = &["fam_wait", "fam_gen", "fam_tick", "fam_sigmask", "fam_spawn", "fam_forkaway", "fam_forkloop", "fam_threadfork"];
const SCRIPTS: &[&str] = &["fam_jobs.sh", "fam_spin.sh", "fam_xargs.sh", "fam_pipe.sh", "fam_tree.sh", "fam_native.sh", "fam_project.py", "fam_pty.py", "fam_pool.py", "fam_forkaway.sh", "fam_forkaway.py"];
/// Translation units of the generated C project (about 4 s of -O2 each: time to move
/// two compilers while they run).
const UNITS: &str = "4";
/// Rounds of a CPU-bound job: about 2.5 s of one CPU.
const ROUNDS: &str = "800000";
/// Rounds of a python pool task: about 2 s of one CPU.
const POOL_ROUNDS: &str = "20000000";
/// How long a job's processes may take to be seen (adopted) by herdd.
const ADOPTED: Duration = Duration::from_secs(10);

type Scenario = scenarios::Scenario<Lab>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("remote_parent_waits_for_children_on_two_other_nodes", remote_parent_waits_for_children_on_two_other_nodes),
    ("pipeline_stages_moved_apart_mid_stream", pipeline_stages_moved_apart_mid_stream),
    ("kill_9_of_the_top_leaves_its_children_running", kill_9_of_the_top_leaves_its_children_running),
    ("whole_job_moved_then_its_process_group_signalled", whole_job_moved_then_its_process_group_signalled),
    ("ctrl_c_on_its_terminal_ends_every_member_on_every_node", ctrl_c_on_its_terminal_ends_every_member_on_every_node),
    ("native_part_of_a_job_stays_out", native_part_of_a_job_stays_out),
    ("background_jobs_spread_over_the_nodes", background_jobs_spread_over_the_nodes),
    ("xargs_parallel_jobs_spread_over_the_nodes", xargs_parallel_jobs_spread_over_the_nodes),
    ("python_pool_spreads_over_the_nodes", python_pool_spreads_over_the_nodes),
    ("make_j4_compiles_on_several_nodes", make_j4_compiles_on_several_nodes),
    ("waits_with_a_mask_of_their_own_end_when_children_do", waits_with_a_mask_of_their_own_end_when_children_do),
    ("make_moved_away_while_its_jobs_run", make_moved_away_while_its_jobs_run),
    ("vfork_limit_and_orphan_from_away", vfork_limit_and_orphan_from_away),
    ("forks_away_make_their_children_there", forks_away_make_their_children_there),
    ("bash_and_python_fork_on_their_node", bash_and_python_fork_on_their_node),
    ("forking_in_a_loop_while_moved_around", forking_in_a_loop_while_moved_around),
    ("a_thread_forks_away", a_thread_forks_away),
];

#[test]
fn family_scenarios() {
    let spec = Spec { name: "fam", c_programs: C_PROGRAMS, py_programs: &[], scripts: SCRIPTS, quiet_n1: false, cpus_per_node: Some(1), shared: false };
    let Some(lab) = Lab::new(&spec) else { return };
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_FAMILIES_ONLY", &lab, Lab::wait_healthy, |_| {});
    let dir = lab.finish(failed.is_empty());
    scenarios::report("family scenarios", ran, &failed, &dir);
}

// ---------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------

/// A parent forks two children; the children go to n2 and n3, the parent to n2; the
/// parent wakes them and waits: exact statuses (exit 7, SIGTERM), its SIGCHLD handler ran.
fn remote_parent_waits_for_children_on_two_other_nodes(lab: &Lab) {
    let prog = lab.program("fam_wait");
    let direct = lab.run_direct("fam_wait (direct)", &prog, &[Gate::Line("ready 1")]);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout, "ready 1\na: exited 7\nb: killed by signal 15\nsigchld handled: yes\n", "{}", direct.describe());

    let mut p = lab.start("fam_wait (herd run --lock, parent and children apart)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    let kids = children_of(lab, &mut p);
    let rows = wait_job(lab, &mut p, pid, |rows| kids.iter().all(|k| row_of(rows, *k).is_some()));
    for k in &kids {
        let r = row_of(&rows, *k).unwrap();
        assert_eq!((r["ppid"].as_i64(), r["job"].as_i64(), r["lock"].as_bool()), (Some(pid.into()), Some(pid.into()), Some(true)), "child {k}: {r}");
    }
    lab.expect_migrate(&p, kids[0], "n2");
    lab.expect_migrate(&p, kids[1], "n3");
    // A parent with children moves: they stay at home with its deputy.
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, kids[0], "n2", Some(1));
    lab.expect_where(&p, kids[1], "n3", Some(1));
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
    lab.expect_gone_from(None, "n3", &prog);
}

/// `gen | sort | uniq -c`: once gen has written half its lines, gen goes to n2, sort
/// to n3 and uniq to n2; the pipes stay at home. The same counts as a direct run.
fn pipeline_stages_moved_apart_mid_stream(lab: &Lab) {
    let gen = lab.program("fam_gen");
    let prog = lab.script("fam_pipe.sh").with_args(&[gen.marker.as_str(), "200000"]);
    let mut d = lab.start("fam_pipe (direct)", How::Direct, &prog);
    d.wait_for(lab, "fam_gen wrote half", |_, err| err.contains("fam-gen: half\n"));
    d.send(lab, "go\n");
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.lines().count() > 1000, "{}", direct.describe());

    let mut p = lab.start("fam_pipe (herd run --lock, stages apart)", How::HerdLocked, &prog);
    p.wait_for(lab, "fam_gen wrote half", |_, err| err.contains("fam-gen: half\n"));
    let job = job_of(lab, &mut p, &prog.marker);
    let stage = |rows: &[Value], cmd: &str| rows.iter().find(|r| r["cmd"].as_str().is_some_and(|c| c.starts_with(cmd))).and_then(|r| r["pid"].as_i64());
    let gen_cmd = format!("{} ", gen.marker);
    let rows = wait_job(lab, &mut p, job, |rows| stage(rows, &gen_cmd).is_some() && stage(rows, "sort").is_some() && stage(rows, "uniq").is_some());
    let pids = [stage(&rows, &gen_cmd), stage(&rows, "sort"), stage(&rows, "uniq")].map(|p| p.unwrap() as i32);
    for (pid, node) in pids.iter().zip(["n2", "n3", "n2"]) {
        lab.expect_migrate(&p, *pid, node);
    }
    lab.expect_runs_on(&p, "n2", &gen);
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &gen);
}

/// A shell with three jobs; two go to n2 and n3; `kill -9` of the shell leaves all three
/// running (re-parented, as at home), and each ends normally when its input does.
fn kill_9_of_the_top_leaves_its_children_running(lab: &Lab) {
    let tick = lab.program("fam_tick");
    let prog = lab.script("fam_tree.sh").with_args(&[tick.marker.as_str()]);
    let mut d = lab.start("fam_tree (direct, shell killed)", How::Direct, &prog);
    d.wait_for_lines(lab, 4);
    kill_direct_shell(lab, &d, &prog, libc::SIGKILL);
    let direct = d.finish(lab);
    expect_status(&direct, None, Some(libc::SIGKILL));

    let (p, job, rows) = start_tree(lab, "fam_tree (herd run --lock, shell killed)", &prog);
    let (a, b) = (tick_pid(&rows, "a"), tick_pid(&rows, "b"));
    lab.expect_migrate(&p, a, "n2");
    lab.expect_migrate(&p, b, "n3");
    lab.kill_in_n1(job, "KILL");
    // Its children run on, where they were, with another parent.
    thread::sleep(Duration::from_millis(500));
    let rows = lab.ps();
    for (pid, node) in [(a, "n2"), (b, "n3")] {
        let r = row_of(&rows, pid).unwrap_or_else(|| p.fail(lab, &format!("pid {pid} is no longer listed after the shell's death: {rows:?}")));
        assert_eq!(r["where"], node, "{r}");
        assert_ne!(r["ppid"].as_i64(), Some(job.into()), "not re-parented: {r}");
    }
    lab.expect_runs_on(&p, "n2", &tick.with_args(&["a"]));
    finish_tree(lab, p, &direct, &tick);
}

/// `herd migrate -j JOB n3` moves every process of the job; `herd ps --tree` draws it;
/// SIGTERM to its process group in n1 ends every member, wherever it runs.
fn whole_job_moved_then_its_process_group_signalled(lab: &Lab) {
    let tick = lab.program("fam_tick");
    // In a session and process group of its own (the test's is not to be signalled), as a
    // shell with job control starts each job.
    let mut prog = lab.script("fam_tree.sh").with_args(&[tick.marker.as_str()]);
    prog.argv.insert(0, "setsid".into());
    let mut d = lab.start("fam_tree (direct, group signalled)", How::Direct, &prog);
    d.wait_for_lines(lab, 4);
    // The shell leads its group.
    let shell = direct_shell(lab, &d, &prog);
    let pgrp = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(shell))).expect("getpgid");
    assert_eq!(pgrp.as_raw(), shell, "the shell does not lead its process group");
    nix::sys::signal::killpg(pgrp, nix::sys::signal::Signal::SIGTERM).expect("killpg");
    let direct = d.finish(lab);

    let (p, job, _) = start_tree(lab, "fam_tree (herd run --lock, job moved, group signalled)", &prog);
    let out = run_herd(lab, &["migrate", "-j", &job.to_string(), "n3"]);
    assert!(out.0, "herd migrate -j {job} n3: {}", out.1);
    assert_eq!(out.1.lines().filter(|l| l.starts_with("moved ")).count(), 4, "herd migrate -j {job} n3 said:\n{}", out.1);
    let rows = job_rows(&lab.ps(), job);
    assert!(rows.iter().all(|r| r["where"] == "n3"), "not all on n3: {rows:?}");
    let (ok, tree) = run_herd(lab, &["ps", "--tree"]);
    assert!(ok, "herd ps --tree: {tree}");
    for name in ["a", "b", "c"] {
        let line = format!("\\_ {} {name}", tick.marker);
        assert!(tree.lines().any(|l| l.ends_with(&line)), "herd ps --tree has no line ending {line:?}:\n{tree}");
    }
    lab.node_sh_ok("n1", &format!("kill -s TERM -- -{job}"));
    finish_tree(lab, p, &direct, &tick);
}

/// Ctrl-C typed on the job's terminal (a pty: fam_pty.py) while its parent and two
/// children run on n2 and n3: every member ends by SIGINT wherever it runs, herd run
/// with it; the same as a direct run on such a terminal.
fn ctrl_c_on_its_terminal_ends_every_member_on_every_node(lab: &Lab) {
    let prog = lab.program("fam_wait");
    let on_pty = |argv: &[OsString]| {
        let mut p = prog.clone();
        p.argv = vec![lab.python.clone().into_os_string(), lab.bin.join("fam_pty.py").into_os_string()];
        p.argv.extend(argv.iter().cloned());
        p
    };
    let mut d = lab.start("fam_wait (direct, on a pty, Ctrl-C)", How::Direct, &on_pty(&prog.argv));
    d.wait_for_line(lab, "ready 1");
    d.send(lab, "intr\n");
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout, "ready 1\n[ended by signal 2]\n", "{}", direct.describe());
    for node in NODES {
        lab.expect_gone_from(None, node, &prog);
    }

    let mut argv: Vec<OsString> = vec![HERD.into(), "run".into(), "--lock".into(), "--".into()];
    argv.extend(prog.argv.iter().cloned());
    let mut p = lab.start("fam_wait (herd run --lock on a pty, members apart, Ctrl-C)", How::Direct, &on_pty(&argv));
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    let kids = children_of(lab, &mut p);
    wait_job(lab, &mut p, pid, |rows| kids.iter().all(|k| row_of(rows, *k).is_some()));
    lab.expect_migrate(&p, kids[0], "n2");
    lab.expect_migrate(&p, kids[1], "n3");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, kids[0], "n2", Some(1));
    lab.expect_where(&p, kids[1], "n3", Some(1));
    p.send(lab, "intr\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    for node in NODES {
        lab.expect_gone_from(None, node, &prog);
    }
}

/// Starts fam_tree.sh (`prog`) locked under herd run; returns it once its three jobs have
/// started and herdd has adopted them, with its job and the job's rows. A child adopted
/// between its fork and its exec shows the shell's command line until herdd's next look
/// (once a second) at it: wait for the three jobs' own.
fn start_tree(lab: &Lab, label: &str, prog: &Program) -> (Proc, i32, Vec<Value>) {
    let mut p = lab.start(label, How::HerdLocked, prog);
    p.wait_for_lines(lab, 4);
    let job = job_of(lab, &mut p, &prog.marker);
    let rows = wait_job(lab, &mut p, job, |rows| rows.len() >= 4 && ["a", "b", "c"].iter().all(|name| rows.iter().any(|r| is_tick(r, name))));
    (p, job, rows)
}

/// The end of a fam_tree run: the direct run's lines (in any order) and status, and no
/// fam_tick left on any node.
fn finish_tree(lab: &Lab, p: Proc, direct: &Finished, tick: &Program) {
    let moved = p.finish(lab);
    same_result(direct, &moved, sorted);
    for node in NODES {
        lab.expect_gone_from(None, node, tick);
    }
}

/// `herd run --native` inside a job: that part is never adopted; its sibling is.
fn native_part_of_a_job_stays_out(lab: &Lab) {
    let tick = lab.program("fam_tick");
    let prog = lab.script("fam_native.sh").with_args(&[HERD, tick.marker.as_str()]);
    let mut d = lab.start("fam_native (direct)", How::Direct, &prog);
    d.wait_for_lines(lab, 2);
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);

    let mut p = lab.start("fam_native (herd run)", How::HerdLocked, &prog);
    p.wait_for_lines(lab, 2);
    let job = job_of(lab, &mut p, &prog.marker);
    let has = |rows: &[Value], end: &str| rows.iter().any(|r| r["cmd"].as_str().is_some_and(|c| c.ends_with(end)));
    wait_job(lab, &mut p, job, |rows| has(rows, " migratable"));
    // Many scans later, nothing of the native part.
    thread::sleep(Duration::from_secs(1));
    let rows = lab.ps();
    assert!(!has(&rows, " native"), "the native part was adopted: {rows:?}");
    assert!(!rows.iter().any(|r| r["cmd"].as_str().is_some_and(|c| c.contains(" run --native "))), "herd run --native was adopted: {rows:?}");
    let moved = p.finish(lab);
    same_result(&direct, &moved, sorted);
}

/// Six CPU-bound jobs started with `&` by a shell under plain `herd run`: the balancer
/// spreads them; every node ran some; the same results.
fn background_jobs_spread_over_the_nodes(lab: &Lab) {
    let prog = lab.script("fam_jobs.sh").with_args(&["6", ROUNDS]);
    let direct = lab.run_direct("fam_jobs (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let p = lab.start("fam_jobs (herd run)", How::Herd, &prog);
    spread_and_same(lab, p, &prog, &direct);
}

/// `xargs -P 4` of four CPU-bound jobs under plain `herd run`: as above.
fn xargs_parallel_jobs_spread_over_the_nodes(lab: &Lab) {
    let prog = lab.script("fam_xargs.sh").with_args(&["4", ROUNDS]);
    let direct = lab.run_direct("fam_xargs (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let p = lab.start("fam_xargs (herd run)", How::Herd, &prog);
    spread_and_same(lab, p, &prog, &direct);
}

/// python3 `multiprocessing.Pool(4)` of eight CPU-bound tasks under plain `herd run`: its
/// workers share the pool's semaphores (deleted /dev/shm files) with the parent, which
/// stay at home; the balancer sends workers out while they compute, and each comes back
/// by itself to hand in its result. Work seen on n2 and n3; the same results.
fn python_pool_spreads_over_the_nodes(lab: &Lab) {
    let prog = lab.python_program("fam_pool.py").with_args(&["8", POOL_ROUNDS]);
    let direct = lab.run_direct("fam_pool (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let p = lab.start("fam_pool (herd run)", How::Herd, &prog);
    let (moved, seen) = watch_job(lab, p, &prog.marker, |_| true);
    same_result(&direct, &moved, sorted);
    assert!(seen.contains("n2") && seen.contains("n3"), "the pool's workers ran only on {seen:?} besides n1\n{}", moved.logs);
    // No worker saw a semaphore call fail (a futex call on memory kept at home made away
    // would fail with EFAULT, which glibc reports and aborts on).
    assert_eq!(moved.stderr, direct.stderr, "the pool's stderr differs from the direct run's:\n{}", moved.describe());
    println!("{}: ran on n1 and {seen:?}", moved.label);
}

/// `make -j4` of a generated C project, locked (the test moves, not the balancer: the
/// balancer's spreading is the two scenarios above, and compilers this short would need
/// placement at birth): two compilers are moved to n2 and n3 as they run; every object
/// file and the program are byte for byte those of a direct build.
fn make_j4_compiles_on_several_nodes(lab: &Lab) {
    let gen = lab.bin.join("fam_project.py");
    let project = |name: &str| {
        let dir = lab.bin.join(name);
        let out = Command::new("python3").arg(&gen).arg(&dir).arg(UNITS).output().expect("python3 fam_project.py");
        assert!(out.status.success(), "fam_project.py: {}", String::from_utf8_lossy(&out.stderr));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        dir
    };
    let (direct_dir, herd_dir) = (project("proj-direct"), project("proj-herd"));
    let make = |dir: &Path| Program {
        argv: ["make", "-s", "-j4", "--no-print-directory", "-C"].iter().map(OsString::from).chain([dir.as_os_str().to_owned()]).collect(),
        marker: dir.to_string_lossy().into_owned(),
        comm: None,
    };
    let direct = lab.run_direct("make -j4 (direct)", &make(&direct_dir), &[]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("make -j4 (herd run --lock, compilers moved)", How::HerdLocked, &make(&herd_dir));
    let job = job_of(lab, &mut p, &herd_dir.to_string_lossy());
    // The compilers of the big units (main.c's compiles in a moment: it may be gone
    // before it is moved), by their source file (cc1's arguments hold "tu" elsewhere
    // too: "-mtune=generic").
    let unit = |c: &str| c.split_whitespace().any(|w| w.starts_with("tu") && w.ends_with(".c"));
    let cc1 = |rows: &[Value]| -> Vec<i32> {
        rows.iter()
            .filter(|r| r["cmd"].as_str().is_some_and(|c| c.contains("/cc1 ") && unit(c)))
            .filter_map(|r| r["pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    };
    let rows = wait_job(lab, &mut p, job, |rows| cc1(rows).len() >= 2);
    let compilers = cc1(&rows);
    lab.expect_migrate(&p, compilers[0], "n2");
    lab.expect_migrate(&p, compilers[1], "n3");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    let mut files: Vec<String> = (0..UNITS.parse::<usize>().unwrap()).map(|t| format!("tu{t}.o")).collect();
    files.extend(["main.o".to_string(), "prog".to_string()]);
    for f in &files {
        let (a, b) = (fs::read(direct_dir.join(f)), fs::read(herd_dir.join(f)));
        assert!(a.is_ok() && a.as_ref().ok() == b.as_ref().ok(), "{f} differs from the direct build's (or is missing)\n{}", moved.logs);
    }
}

/// A parent whose waits let SIGCHLD in for their duration only (pselect6, ppoll,
/// epoll_pwait: as GNU make waits for its jobs) is moved to n2, away from its children:
/// each wait ends when a child does (its signal in before the wait, and during it), the
/// handler runs, and SIGCHLD is blocked again afterwards, as in a direct run.
/// Last, a signal that comes during a forwarded wait (poll) while the thread blocks it
/// is pending afterwards, not lost.
fn waits_with_a_mask_of_their_own_end_when_children_do(lab: &Lab) {
    let prog = lab.program("fam_sigmask");
    let direct = lab.run_direct("fam_sigmask (direct)", &prog, &[Gate::Line("ready 1")]);
    expect_status(&direct, Some(0), None);
    let mut expected = String::from("ready 1\n");
    for (i, call) in ["pselect", "ppoll", "epoll_pwait"].iter().enumerate() {
        expected += &format!("{call}: -1 EINTR, handler ran {}, SIGCHLD blocked after: yes\nchild: exited {}\n", i + 1, i + 3);
    }
    expected += "poll: 0, SIGCHLD pending after: yes\nunblocked: 0 -, handler ran 4, SIGCHLD blocked after: no\nchild: exited 6\n";
    assert_eq!(direct.stdout, expected, "{}", direct.describe());

    let mut p = lab.start("fam_sigmask (herd run --lock, moved away from its children)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    lab.expect_migrate(&p, pid, "n2");
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// Started from away (moved to n2 first): a vfork + exec (made on n2, where the process
/// stays: the parent resumes once the child has exec'd, and gets its status), a fork
/// refused by the `ulimit -u` limit (EAGAIN, nothing left behind: refused on n2, where
/// the process stays), and a child that outlives its parent (forked on n2). The same
/// output as a direct run.
fn vfork_limit_and_orphan_from_away(lab: &Lab) {
    let prog = lab.program("fam_spawn");
    let gates = [Gate::Line("ready 1"), Gate::Line("ready 2"), Gate::Line("ready 3")];
    let direct = lab.run_direct("fam_spawn (direct)", &prog, &gates);
    expect_status(&direct, Some(0), None);
    assert_eq!(
        direct.stdout,
        "ready 1\nvforked\nvfork child: exited 3, wrote 42 before its exec\nready 2\nfork at the limit: EAGAIN\nready 3\nparent: ends first\norphan: parent gone\n",
        "{}",
        direct.describe()
    );
    let mut p = lab.start("fam_spawn (herd run --lock, each step from n2)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    for ready in ["ready 1", "ready 2", "ready 3"] {
        p.wait_for_line(lab, ready);
        if ready == "ready 1" {
            lab.expect_migrate(&p, pid, "n2");
        } else {
            // The vfork + exec was made on n2 (a vfork is made where the process runs, and
            // so is the exec of a program the node has the same), and the fork the limit
            // refused failed there: it never came home; the orphan is forked there too.
            lab.expect_where(&p, pid, "n2", Some(1));
        }
        p.send(lab, "go\n");
    }
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// `make -j4` of eight three-second jobs, moved to n2 while its first four run: it waits
/// for them away from them (in pselect, which lets SIGCHLD in), wakes as they end and
/// starts the next ones (posix_spawn, made on n2): every job ran, as in a direct run.
fn make_moved_away_while_its_jobs_run(lab: &Lab) {
    let dir = lab.bin.join("mk-jobs");
    fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = (1..=8).map(|i| format!("job{i}")).collect();
    let mut makefile = format!(".PHONY: all {0}\nall: {0}\n", targets.join(" "));
    for t in &targets {
        makefile += &format!("{t}:\n\t@sleep 3; echo $@ done\n");
    }
    fs::write(dir.join("Makefile"), makefile).unwrap();
    let make = Program {
        argv: ["make", "-s", "-j4", "-f"].iter().map(OsString::from).chain([dir.join("Makefile").into_os_string()]).collect(),
        marker: dir.join("Makefile").to_string_lossy().into_owned(),
        comm: None,
    };
    let direct = lab.run_direct("make -j4 of sleeps (direct)", &make, &[]);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout.lines().count(), 8, "{}", direct.describe());
    let mut p = lab.start("make -j4 of sleeps (herd run --lock, make moved while its jobs run)", How::HerdLocked, &make);
    let job = job_of(lab, &mut p, &make.marker);
    // Its first four jobs have started (each a shell running sleep).
    wait_job(lab, &mut p, job, |rows| rows.iter().filter(|r| r["ppid"].as_i64() == Some(job.into())).count() >= 4);
    lab.expect_migrate(&p, job, "n2");
    // Its next jobs are born on n2 (never moved), and make stays there.
    let born_away = |rows: &[Value]| rows.iter().any(|r| r["ppid"].as_i64() == Some(job.into()) && r["where"] == "n2" && r["nmigs"].as_u64() == Some(0));
    let start = Instant::now();
    while !born_away(&job_rows(&lab.ps(), job)) {
        if start.elapsed() > Duration::from_secs(15) {
            p.fail(lab, &format!("no job of make {job} was born on n2 within 15 s: herd ps lists {:?}", job_rows(&lab.ps(), job)));
        }
        thread::sleep(Duration::from_millis(100));
    }
    lab.expect_where(&p, job, "n2", Some(1));
    let moved = p.finish(lab);
    same_result(&direct, &moved, sorted);
}

/// A process moved to n2 forks three children there (and one of them a grandchild): the
/// children are born on n2 (never moved: nmigs 0), with their deputies at home as its
/// children; then one moves on to n3 and one home; pids, parent, exact wait statuses and
/// SIGCHLD as in a direct run.
fn forks_away_make_their_children_there(lab: &Lab) {
    let prog = lab.program("fam_forkaway");
    let gates = [Gate::Line("ready 1"), Gate::Line("ready 2")];
    let direct = lab.run_direct("fam_forkaway (direct)", &prog, &gates);
    expect_status(&direct, Some(0), None);
    assert_eq!(
        direct.stdout,
        "ready 1\nchild 0: pid matches, parent matches, its child exited 5\nchild 1: pid matches, parent matches\nchild 2: pid matches, parent matches\nready 2\nchild 0: exited 10\nchild 1: exited 11\nchild 2: killed by signal 15\nsigchld handled: yes\n",
        "{}",
        direct.describe()
    );
    let mut p = lab.start("fam_forkaway (herd run --lock, forks on n2)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    lab.expect_migrate(&p, pid, "n2");
    p.send(lab, "go\n");
    p.wait_for_line(lab, "ready 2");
    let kids = children_of(lab, &mut p);
    // The parent did not come home to fork: it is still on n2, moved once.
    lab.expect_where(&p, pid, "n2", Some(1));
    for k in &kids {
        let r = lab.expect_where(&p, *k, "n2", Some(0));
        assert_eq!((r["ppid"].as_i64(), r["job"].as_i64(), r["lock"].as_bool()), (Some(pid.into()), Some(pid.into()), Some(true)), "child {k}: {r}");
    }
    // Children born away move like any other: one on to n3, one home (each waiting in a
    // read of its pipe, at home).
    lab.expect_migrate(&p, kids[1], "n3");
    lab.expect_migrate(&p, kids[2], "home");
    lab.expect_where(&p, kids[1], "n3", Some(1));
    lab.expect_where(&p, kids[2], "n1", Some(1));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    lab.expect_gone_from(None, "n2", &prog);
}

/// bash (subshells started with `&`, computing without exec) and python3 (`os.fork`)
/// moved to n2 fork there: the children run on n2 from birth (nmigs 0), their exit
/// statuses reach the parent; the same (sorted) output as a direct run.
fn bash_and_python_fork_on_their_node(lab: &Lab) {
    for prog in [lab.script("fam_forkaway.sh"), lab.python_program("fam_forkaway.py")] {
        let gates = [Gate::Line("ready 1"), Gate::Line("ready 2")];
        let direct = lab.run_direct(&format!("{} (direct)", prog.marker), &prog, &gates);
        expect_status(&direct, Some(0), None);
        let mut p = lab.start(&format!("{} (herd run --lock, forks on n2)", prog.marker), How::HerdLocked, &prog);
        let pid = p.home_pid(lab);
        p.wait_for_line(lab, "ready 1");
        lab.expect_migrate(&p, pid, "n2");
        p.send(lab, "go\n");
        p.wait_for_line(lab, "ready 2");
        let kids = children_of(lab, &mut p);
        for k in &kids {
            let r = lab.expect_where(&p, *k, "n2", Some(0));
            assert_eq!(r["ppid"].as_i64(), Some(pid.into()), "child {k}: {r}");
        }
        lab.expect_where(&p, pid, "n2", Some(1));
        let moved = p.finish(lab);
        same_result(&direct, &moved, sorted);
    }
}

/// A process that forks 600 children one after the other (each exits with a status of
/// its own, the parent checks it) is moved between n2, n3 and home every 150 ms while it
/// forks:
/// moves meet forks on their way (given up by the capture and made again after it, or
/// answered "not now" at home); every child ran once, every status and pid is right.
fn forking_in_a_loop_while_moved_around(lab: &Lab) {
    let prog = lab.program("fam_forkloop").with_args(&["600"]);
    let direct = lab.run_direct("fam_forkloop (direct)", &prog, &[Gate::Line("ready 1")]);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout, "ready 1\nforks: 600, statuses right: 600, pids right: 600\n", "{}", direct.describe());
    let mut p = lab.start("fam_forkloop (herd run --lock, moved while it forks)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    lab.expect_migrate(&p, pid, "n2");
    p.send(lab, "go\n");
    let mut moved_while_forking = 0;
    for to in ["n3", "n2", "home", "n3", "home", "n2", "n3", "n2", "home"] {
        thread::sleep(Duration::from_millis(150));
        if p.stdout().contains("forks:") {
            break;
        }
        // A move may find the process between two forks or in one; either way it moves
        // (or, if it ended meanwhile, says so).
        let (ok, said) = run_herd(lab, &["migrate", &pid.to_string(), to]);
        if ok {
            moved_while_forking += 1;
        } else {
            assert!(
                ["ended", "does not exist", "no migratable", "already"].iter().any(|w| said.contains(w)),
                "herd migrate {pid} {to}: {said}"
            );
        }
    }
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    println!("{}: moved {moved_while_forking} times while it forked", moved.label);
    for node in ["n2", "n3"] {
        lab.expect_gone_from(None, node, &prog);
    }
}

/// A thread other than the main one forks on n2 while the main thread makes calls: the
/// child (its deputy a fork of that thread's deputy) reports its parent and exits 9; the
/// same output as a direct run, and the child was made on n2 (the process never came home).
fn a_thread_forks_away(lab: &Lab) {
    let prog = lab.program("fam_threadfork");
    let direct = lab.run_direct("fam_threadfork (direct)", &prog, &[Gate::Line("ready 1")]);
    expect_status(&direct, Some(0), None);
    assert_eq!(direct.stdout, "ready 1\nthread's child: parent matches, exited 9\nmain thread: 200 calls\n", "{}", direct.describe());
    let mut p = lab.start("fam_threadfork (herd run --lock, a thread forks on n2)", How::HerdLocked, &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready 1");
    lab.expect_migrate(&p, pid, "n2");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    // The child was born on n2: the parent did not come home to fork.
    let home_log = fs::read_to_string(lab.dir.join("n1/herdd.log")).unwrap_or_default();
    assert!(home_log.contains(&format!("ppid={pid} node=\"n2\"")), "no child of {pid} forked on n2 in n1's log:\n{}", moved.logs);
    let came_home = home_log.lines().any(|l| l.contains("moved to n1 (stopped") && l.ends_with(&format!(" pid={pid}")));
    assert!(!came_home, "the process came home:\n{}", moved.logs);
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Watches `herd ps` until `p` ends: some process of its job must have run on n2 and
/// some on n3; then the same (sorted) output and status as `direct`.
fn spread_and_same(lab: &Lab, p: Proc, prog: &Program, direct: &Finished) {
    let (moved, seen) = watch_job(lab, p, &prog.marker, |_| true);
    same_result(direct, &moved, sorted);
    assert!(seen.contains("n2") && seen.contains("n3"), "the job's processes ran only on {seen:?} besides n1\n{}", moved.logs);
    println!("{}: ran on n1 and {seen:?}", moved.label);
}

/// Follows `herd ps` until `p` (whose top process has `marker` in its command) ends;
/// returns how it ended and the nodes other than home where a process of its job whose
/// command satisfies `counts` was seen running.
fn watch_job(lab: &Lab, mut p: Proc, marker: &str, counts: impl Fn(&str) -> bool) -> (Finished, BTreeSet<String>) {
    let mut job = None;
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while p.exited().is_none() {
        let rows = lab.ps();
        if job.is_none() {
            job = top_row(&rows, marker).and_then(|r| r["pid"].as_i64());
        }
        if let Some(job) = job {
            for r in rows.iter().filter(|r| r["job"].as_i64() == Some(job) && r["state"] == "remote" && counts(r["cmd"].as_str().unwrap_or(""))) {
                seen.insert(r["where"].as_str().unwrap_or("?").to_string());
            }
        }
        if start.elapsed() > RUN_LIMIT {
            p.fail(lab, &format!("it did not end within {RUN_LIMIT:?}"));
        }
        thread::sleep(Duration::from_millis(250));
    }
    let moved = p.finish(lab);
    assert!(job.is_some(), "{}: herd ps never listed the job\n{}", moved.label, moved.logs);
    (moved, seen)
}

fn same(s: &str) -> String {
    s.to_string()
}

/// The lines sorted: jobs that run side by side print in any order.
fn sorted(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn row_of(rows: &[Value], pid: i32) -> Option<&Value> {
    rows.iter().find(|r| r["pid"].as_i64() == Some(pid.into()))
}

fn job_rows(rows: &[Value], job: i32) -> Vec<Value> {
    rows.iter().filter(|r| r["job"].as_i64() == Some(job.into())).cloned().collect()
}

/// The row of the process `herd run` started for the program with `marker`: the first
/// of its job.
fn top_row<'a>(rows: &'a [Value], marker: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["pid"] == r["job"] && r["cmd"].as_str().is_some_and(|c| c.contains(marker)))
}

/// The job (home pid of the top process) of the program with `marker`, once listed.
fn job_of(lab: &Lab, p: &mut Proc, marker: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = top_row(&lab.ps(), marker).and_then(|r| r["pid"].as_i64()) {
            p.pid = Some(pid as i32);
            return pid as i32;
        }
        if start.elapsed() > ADOPTED {
            p.fail(lab, &format!("herd ps lists no job of {marker} within {ADOPTED:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `herd ps` until the rows of job `job` satisfy `ready`; returns them.
fn wait_job(lab: &Lab, p: &mut Proc, job: i32, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let rows = job_rows(&lab.ps(), job);
        if ready(&rows) {
            return rows;
        }
        if start.elapsed() > ADOPTED {
            p.fail(lab, &format!("the processes of job {job} are not all adopted within {ADOPTED:?}: herd ps lists {rows:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The pids fam_wait printed for its children.
fn children_of(lab: &Lab, p: &mut Proc) -> Vec<i32> {
    let parse = |err: &str| -> Option<Vec<i32>> {
        let line = err.lines().find_map(|l| l.strip_prefix("fam-children: "))?;
        line.split_whitespace().map(|w| w.parse().ok()).collect()
    };
    p.wait_for(lab, "it printed its children (\"fam-children: A B\" on stderr)", |_, err| parse(err).is_some());
    parse(&p.stderr()).unwrap()
}

/// Whether `herd ps`'s row is that of fam_tick NAME (the shell's row names fam_tick too,
/// as its argument, and a job adopted before its exec shows the shell's until herdd's next
/// look at it).
fn is_tick(row: &Value, name: &str) -> bool {
    let words: Vec<&str> = row["cmd"].as_str().unwrap_or("").split_whitespace().collect();
    matches!(words[..], [program, arg] if program.ends_with("/fam_tick") && arg == name)
}

/// The home pid of fam_tick NAME in the rows.
fn tick_pid(rows: &[Value], name: &str) -> i32 {
    rows.iter()
        .find(|r| is_tick(r, name))
        .and_then(|r| r["pid"].as_i64())
        .unwrap_or_else(|| panic!("no fam_tick {name} in {rows:?}")) as i32
}

/// The host pid of the shell running `prog` directly in n1 (the only process with its
/// marker that bash runs, once its jobs have started).
fn direct_shell(lab: &Lab, p: &Proc, prog: &Program) -> i32 {
    let shells: Vec<i32> =
        lab.procs_on("n1", prog).into_iter().filter(|(_, what)| what.contains("cmdline \"/bin/bash ")).map(|(pid, _)| pid).collect();
    match shells[..] {
        [pid] => pid,
        _ => p.fail(lab, &format!("not one shell of {} in n1: {shells:?}", prog.marker)),
    }
}

/// `kill -s SIG` to the shell running `prog` directly in n1.
fn kill_direct_shell(lab: &Lab, p: &Proc, prog: &Program, sig: i32) {
    let pid = direct_shell(lab, p, prog);
    herd_kernel::task::kill(pid, sig).unwrap_or_else(|e| p.fail(lab, &format!("kill {sig} of host pid {pid}: {e}")));
}

/// `herd --node n1 ARGS`: whether it succeeded, and its stdout and stderr.
fn run_herd(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = run_bounded(lab.herd_cmd(args), &format!("herd {args:?}"), MIGRATE_LIMIT);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
