//! Survival end to end: periodic checkpoints of a process away, its automatic resume
//! when the node running it dies, exactly-once effects, and MOSIX's freeze / continue /
//! chkstop / chkexit — on a local cluster of three nodes (real herdd daemons in
//! namespaces of their own).
//!
//! Method as in migrate.rs (the lab is common/lab.rs): a real python3 job
//! (tests/programs/surv_job.py) runs in n1 once directly and once under `herd run
//! --checkpoint-every`, is moved by hand, and its node is killed under it (the whole
//! node: `herd cluster kill`, SIGKILL to its namespace's init) or has its herdd stopped
//! (SIGSTOP: only membership notices). The two runs must print the same lines, none
//! twice or missing, read each input line once, and end the same way (also after n2's
//! herdd is killed under it three times: a short chaos run; `herd-bench survive` has a
//! longer one). The scenarios run in order on one cluster and the last two kill n2, then n3 (the last resume goes to a
//! guest on n1 itself, which comes home once replayed). `HERD_SURVIVE_ONLY=word,word`
//! runs some of them (those that kill nodes still need the nodes the earlier ones left).
//!
//! Prerequisites missing (root, herdd, iproute2, setpriv, python3 for nobody):
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

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use lab::*;
use serde_json::Value;

type Scenario = scenarios::Scenario<Lab>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("freeze_continue_checkpoint_chkstop_chkexit", freeze_continue_checkpoint_chkstop_chkexit),
    ("full_checkpoint_disk_warns_and_the_job_runs_on", full_checkpoint_disk_warns_and_the_job_runs_on),
    ("herdd_stopped_membership_resumes_within_5s_input_read_once", herdd_stopped_membership_resumes_within_5s_input_read_once),
    ("herdd_killed_three_times_nothing_lost_or_twice", herdd_killed_three_times_nothing_lost_or_twice),
    ("clock_reading_job_diverges_is_reported_and_finishes", clock_reading_job_diverges_is_reported_and_finishes),
    ("memory_rewritten_while_checkpointed_resumes_intact", memory_rewritten_while_checkpointed_resumes_intact),
    ("node_killed_job_resumes_on_home_replays_and_comes_home", node_killed_job_resumes_on_home_replays_and_comes_home),
];

const EVERY_SECOND: &[&str] = &["--checkpoint-every", "1s"];

#[test]
fn survival_scenarios() {
    let spec = Spec {
        name: "surv",
        c_programs: &["mig_churn"],
        py_programs: &["surv_job.py"],
        scripts: &[],
        quiet_n1: true,
        cpus_per_node: None,
        shared: false,
    };
    let Some(lab) = Lab::new(&spec) else { return };
    let work = lab.dir.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o777)).unwrap();
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_SURVIVE_ONLY", &lab, |_| {}, |_| {});
    let dir = lab.finish(failed.is_empty());
    scenarios::report("survival scenarios", ran, &failed, &dir);
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn row(lab: &Lab, pid: i32) -> Option<Value> {
    lab.ps().into_iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid)))
}

/// Polls `herd ps` until the row of `pid` satisfies `cond`; returns it.
fn wait_row(lab: &Lab, p: &Proc, pid: i32, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = row(lab, pid);
        if let Some(r) = r.as_ref().filter(|r| cond(r)) {
            return r.clone();
        }
        if start.elapsed() > limit {
            p.fail(lab, &format!("herd ps does not show {what} for pid {pid} within {limit:?}; its row: {r:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `herd migrate PID VERB` as the test (root); must succeed; returns what it printed.
fn verb(lab: &Lab, p: &Proc, pid: i32, verb: &str) -> String {
    let out = lab.migrate(pid, verb);
    if !out.status.success() {
        p.fail(lab, &format!("herd migrate {pid} {verb}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("herd migrate {pid} {verb}: {said}");
    said
}

fn lines(p: &Proc) -> usize {
    p.stdout().matches('\n').count()
}

/// Waits for a checkpoint taken after `after` (Unix seconds), then for `more` lines
/// beyond what it had printed then: the journal has something to replay.
fn checkpointed_then(lab: &Lab, p: &mut Proc, pid: i32, after: u64, more: usize) -> Value {
    let r = wait_row(lab, p, pid, "a checkpoint", EVENT, |r| r["checkpoint_unix"].as_u64() > Some(after));
    let n = lines(p);
    p.wait_for_lines(lab, n + more);
    r
}

fn images(lab: &Lab, pid: i32, ext: &str) -> Vec<PathBuf> {
    let dir = lab.dir.join("n1").join("checkpoints");
    let prefix = format!("{pid}-");
    fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect()
}

fn state_on(lab: &Lab, node: &str, prog: &Program) -> Vec<char> {
    lab.procs_on(node, prog)
        .iter()
        .filter_map(|(pid, _)| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
        .collect()
}

// ---------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------

/// MOSIX's verbs on a process away: `checkpoint` writes the image home; `freeze` stops it
/// where it runs (state T there, no new lines, locked against the balancer); `continue`
/// lets it go on; `chkstop` = both; `chkexit` brings it home, writes a whole image its
/// owner may restart, and ends it (SIGKILL, as the parent sees it).
fn freeze_continue_checkpoint_chkstop_chkexit(lab: &Lab) {
    let prog = lab.python_program("surv_job.py").with_args(&["lines", "1000000"]);
    let mut p = lab.start("surv_job lines (verbs)", How::HerdWith(&["--checkpoint-every", "1h"]), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_lines(lab, 5);
    lab.expect_migrate(&p, pid, "n2");
    let r = wait_row(lab, &p, pid, "a checkpoint every hour", EVENT, |r| r["checkpoint_every"].as_f64() == Some(3600.0));
    assert_eq!(r["lock"], false, "{r}");

    // The image of its move is its first checkpoint, and n2 has tracked its writes since
    // it arrived: the first checkpoint there is already an increment of that image (only
    // what the job wrote since: its 4 MiB stay in the move's), and so is the next.
    let len = |p: &std::path::PathBuf| fs::metadata(p).unwrap().len();
    for n in [2, 3] {
        p.wait_for_lines(lab, lines(&p) + 3);
        let said = verb(lab, &p, pid, "checkpoint");
        assert!(said.starts_with(&format!("checkpointed process {pid} on n2 to ")), "{said}");
        let mut imgs = images(lab, pid, ".img");
        imgs.sort_by_key(len);
        assert_eq!(imgs.len(), n, "the move's image and {} increments of {pid} in n1/checkpoints: {imgs:?}", n - 1);
        assert!(len(&imgs[n - 1]) > 4 << 20, "the move's image holds its 4 MiB: {imgs:?}");
        for small in &imgs[..n - 1] {
            assert!(len(small) < 2 << 20, "an increment holds less than 2 MiB, not the job's 4 MiB again: {} bytes, {imgs:?}", len(small));
        }
    }

    let said = verb(lab, &p, pid, "freeze");
    assert!(said.contains("frozen"), "{said}");
    let r = wait_row(lab, &p, pid, "frozen and locked", SETTLE, |r| r["lock"] == true && r["survival"].as_str().is_some_and(|s| s.starts_with("frozen since")));
    assert_eq!(r["where"], "n2", "{r}");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(state_on(lab, "n2", &prog), vec!['T'], "frozen: stopped on n2");
    let n = lines(&p);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(lines(&p), n, "a frozen process prints nothing");

    verb(lab, &p, pid, "continue");
    p.wait_for_lines(lab, n + 5);
    let r = wait_row(lab, &p, pid, "unlocked again", SETTLE, |r| r["lock"] == false && r["survival"].as_str().is_none_or(str::is_empty));
    assert_eq!(r["where"], "n2", "{r}");

    let said = verb(lab, &p, pid, "chkstop");
    assert!(said.ends_with("then frozen"), "{said}");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(state_on(lab, "n2", &prog), vec!['T'], "chkstop: stopped on n2");
    verb(lab, &p, pid, "continue");
    let n = lines(&p);
    p.wait_for_lines(lab, n + 5);

    let said = verb(lab, &p, pid, "chkexit");
    assert!(said.contains(" on n1 to ") && said.ends_with("then ended"), "chkexit comes home first: {said}");
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGKILL));
    let ckpt = images(lab, pid, ".ckpt");
    assert_eq!(ckpt.len(), 1, "a whole image: {ckpt:?}");
    assert_eq!(fs::metadata(&ckpt[0]).unwrap().uid(), 65534, "owned by the process's owner");
    assert!(images(lab, pid, ".img").is_empty(), "the image to resume from went when it came home");
    lab.expect_gone_from(None, "n2", &prog);
}

/// The checkpoint directory is full (a 256 KiB tmpfs over it in n1): each checkpoint fails
/// with a warning that `herd ps` shows, and the job runs on to the same output.
fn full_checkpoint_disk_warns_and_the_job_runs_on(lab: &Lab) {
    let prog = lab.python_program("surv_job.py").with_args(&["lines", "200"]);
    let direct = lab.run_direct("surv_job lines 200 (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let dir = lab.dir.join("n1").join("checkpoints");
    fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_string_lossy().into_owned();
    lab.node_sh_ok("n1", &format!("mount -t tmpfs -o size=256k herd-full '{dir}'"));
    let mut p = lab.start("surv_job lines 200 (checkpoint disk full)", How::HerdWith(EVERY_SECOND), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_lines(lab, 5);
    lab.expect_migrate(&p, pid, "n2");
    let r = wait_row(lab, &p, pid, "a failed checkpoint", EVENT, |r| r["survival"].as_str().is_some_and(|s| s.contains("checkpoint failed")));
    println!("herd ps says: {}", r["survival"]);
    assert!(r["survival"].as_str().unwrap().contains("No space left"), "{r}");
    let moved = p.finish(lab);
    lab.node_sh_ok("n1", &format!("umount '{dir}'"));
    same_result(&direct, &moved, same);
}

/// n2's herdd is stopped (SIGSTOP: its TCP streams stay open, only membership sees it
/// go): the job, which reads its input from the test's pipe, is resumed from its last
/// checkpoint within 5 s on another node; every input line is read once and every output
/// line printed once. When n2's herdd continues, its old copy ends.
fn herdd_stopped_membership_resumes_within_5s_input_read_once(lab: &Lab) {
    let prog = lab.python_program("surv_job.py").with_args(&["echo"]);
    let input: String = (1..=250).map(|i| format!("in-{i}\n")).collect();
    let mut d = lab.start("surv_job echo (direct)", How::Direct, &prog);
    d.send(lab, &input);
    let direct = d.finish(lab);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.ends_with("count 250\ndone\n"), "{}", direct.describe());

    let mut p = lab.start("surv_job echo (n2's herdd stopped)", How::HerdWith(EVERY_SECOND), &prog);
    let pid = p.home_pid(lab);
    p.send(lab, &input);
    p.wait_for_lines(lab, 10);
    lab.expect_migrate(&p, pid, "n2");
    checkpointed_then(lab, &mut p, pid, 0, 5);
    let herdd = lab.daemon_host_pid("n2");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(herdd), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    let r = wait_row(lab, &p, pid, "a resume", Duration::from_secs(20), |r| r["resumed"].as_u64() >= Some(1));
    let took = t0.elapsed();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(herdd), nix::sys::signal::Signal::SIGCONT).unwrap();
    println!("resumed {took:.1?} after n2's herdd stopped: {}", r["survival"]);
    assert!(took < Duration::from_secs(5), "the resume took {took:?} after n2's herdd stopped (goal: within 5 s)");
    assert!(r["survival"].as_str().unwrap().contains("membership marks node n2 down"), "{r}");
    assert_ne!(r["where"], "n2", "{r}");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    // n2 rejoins; its copy of the job, fenced off since, ends.
    lab.wait_all_up("n1", Duration::from_secs(30));
    let start = Instant::now();
    while !lab.procs_on("n2", &prog).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "n2's copy of the job did not end after its herdd continued:\n{}", lab.logs());
        thread::sleep(Duration::from_millis(100));
    }
}

/// A short chaos run: three times, the job moves to n2 (from wherever it is), is
/// checkpointed there, and n2's herdd is killed (its guest dies with it) a few lines later;
/// each time it is resumed elsewhere and n2's herdd is started again. Its output equals a
/// direct run's: no line twice or missing, after three resumes.
fn herdd_killed_three_times_nothing_lost_or_twice(lab: &Lab) {
    let prog = lab.python_program("surv_job.py").with_args(&["lines", "1000"]);
    let direct = lab.run_direct("surv_job lines 1000 (direct)", &prog, &[]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("surv_job lines 1000 (n2's herdd killed three times)", How::HerdWith(EVERY_SECOND), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_lines(lab, 10);
    for round in 1..=3u64 {
        // Busy while a checkpoint or the replay of the last resume is under way.
        let start = Instant::now();
        loop {
            let out = lab.migrate(pid, "n2");
            if out.status.success() {
                break;
            }
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            if start.elapsed() > EVENT || !(why.contains("in progress") || why.contains("replaying") || why.contains("try again")) {
                p.fail(lab, &format!("round {round}: herd migrate {pid} n2: {why}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
        let since = row(lab, pid).and_then(|r| r["checkpoint_unix"].as_u64()).unwrap_or(0);
        checkpointed_then(lab, &mut p, pid, since, 5);
        let host_pid = lab.daemon_host_pid("n2");
        // Killed (SIGKILL) and started again.
        DaemonGuard { lab, node: "n2", host_pid, started: start_time(host_pid), restarted: false }.restart();
        let r = wait_row(lab, &p, pid, "one more resume", EVENT, |r| r["resumed"].as_u64() >= Some(round));
        println!("round {round}: {}", r["survival"]);
        lab.wait_all_up("n1", Duration::from_secs(30));
    }
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A job that prints the time it reads: after its node (n2, all of it) is killed it is
/// resumed, and its replay differs from the journal at the first line printed after the
/// checkpoint: the divergence is reported (herd ps, log), the job runs on to its end.
fn clock_reading_job_diverges_is_reported_and_finishes(lab: &Lab) {
    let prog = lab.python_program("surv_job.py").with_args(&["clock", "300"]);
    let mut p = lab.start("surv_job clock (n2 killed)", How::HerdWith(&["--checkpoint-every", "2s"]), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_lines(lab, 10);
    lab.expect_migrate(&p, pid, "n2");
    checkpointed_then(lab, &mut p, pid, 0, 5);
    let boot = lab.kill_node("n2");
    let r = wait_row(lab, &p, pid, "a resume whose replay diverged", EVENT, |r| {
        r["resumed"].as_u64() >= Some(1) && r["survival"].as_str().is_some_and(|s| s.contains("replay diverged"))
    });
    println!("herd ps says: {}", r["survival"]);
    assert!(r["survival"].as_str().unwrap().contains("write"), "the diverging call is named: {r}");
    let f = p.finish(lab);
    expect_status(&f, Some(0), None);
    assert!(f.stdout.ends_with("299 ") || f.stdout.contains("\n299 "), "it ran to its end: {}", tail(&f.stdout, 3));
    assert!(f.stdout.ends_with("done\n"), "{}", f.describe());
    // Made again (herd-lab's revive): the next scenarios have every node.
    lab.revive("n2", boot);
}

/// The job of the issue: python3 with checkpoints every second, moved to n3, and n3
/// killed whole (n2 killed before: no other node can take it): it is resumed on a guest on
/// n1 itself, replays its journal there (nothing written twice: stdout and its file equal
/// a direct run's), and comes home once replayed. Both nodes are made again afterwards.
fn node_killed_job_resumes_on_home_replays_and_comes_home(lab: &Lab) {
    let work = lab.dir.join("work");
    let (fd, fh) = (work.join("direct.txt"), work.join("herd.txt"));
    let direct_prog = lab.python_program("surv_job.py").with_args(&["lines", "300", fd.to_str().unwrap()]);
    let direct = lab.run_direct("surv_job lines 300 FILE (direct)", &direct_prog, &[]);
    expect_status(&direct, Some(0), None);

    let prog = lab.python_program("surv_job.py").with_args(&["lines", "300", fh.to_str().unwrap()]);
    let boot2 = lab.kill_node("n2");
    let mut p = lab.start("surv_job lines 300 FILE (n3 killed)", How::HerdWith(EVERY_SECOND), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_lines(lab, 10);
    lab.expect_migrate(&p, pid, "n3");
    // A few checkpoints on: the last ones are increments (of a whole one taken on n3),
    // which the resume merges.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    checkpointed_then(lab, &mut p, pid, now + 2, 5);
    let boot = lab.kill_node("n3");
    let r = wait_row(lab, &p, pid, "a resume", EVENT, |r| r["resumed"].as_u64() >= Some(1));
    println!("herd ps says: {}", r["survival"]);
    assert!(r["survival"].as_str().unwrap().starts_with("resumed on n1 from its checkpoint of "), "{r}");
    let log = fs::read_to_string(lab.dir.join("n1").join("herdd.log")).unwrap_or_default();
    let merged = log.lines().find(|l| l.contains("merged its checkpoint of") && l.contains(&format!("pid={pid}")));
    assert!(merged.is_some(), "the resume merged a chain of increments (n1's log says nothing of it)");
    println!("n1: {}", merged.unwrap_or_default());
    // Replayed, it comes home by itself.
    wait_row(lab, &p, pid, "it back home", EVENT, |r| r["where"] == "n1" && r["state"] == "home");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    let (a, b) = (fs::read_to_string(&fd).unwrap(), fs::read_to_string(&fh).unwrap());
    assert_eq!(a.lines().count(), 300);
    assert!(a == b, "the file written through the resume differs from the direct run's:\n{}", tail(&b, 5));
    lab.revive("n3", boot);
    lab.revive("n2", boot2);
}

/// 128 MiB rewritten as fast as it can (every page each pass, each pass checking the last:
/// mig_churn) while it is checkpointed every second on n3, each checkpoint from a copy-on-write snapshot of its memory that is sent
/// while it goes on rewriting; n3's herdd killed during its passes: it resumes from its last checkpoint, finds every page as the
/// checkpoint left it (its own checks), and ends with the direct run's digest.
fn memory_rewritten_while_checkpointed_resumes_intact(lab: &Lab) {
    let prog = lab.program("mig_churn").with_args(&["128", "2", "2000"]);
    let direct = lab.run_direct("mig_churn 128 MiB (direct)", &prog, &[Gate::Line("gate 0"), Gate::Line("gate 1")]);
    expect_status(&direct, Some(0), None);
    let mut p = lab.start("mig_churn 128 MiB (checkpointed on n3, whose herdd is killed)", How::HerdWith(EVERY_SECOND), &prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "gate 0");
    lab.expect_migrate(&p, pid, "n3");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    p.send(lab, "go\n");
    // Two checkpoints taken while it rewrites (the second an increment of the first).
    let r = wait_row(lab, &p, pid, "two checkpoints", EVENT, |r| r["checkpoint_unix"].as_u64() > Some(now + 1));
    println!("checkpointed while rewriting: {}", r["survival"]);
    if p.stdout().contains("phase 0 done") {
        println!("(its first phase ended before n3's herdd was killed: it resumes from a checkpoint of a later point)");
    }
    let host_pid = lab.daemon_host_pid("n3");
    // Each snapshot was a child of n3's herdd: ended and reaped, none left a zombie.
    let zombies = zombie_children(host_pid);
    assert!(zombies.is_empty(), "n3's herdd (pid {host_pid}) has zombie children {zombies:?}: snapshots not reaped");
    DaemonGuard { lab, node: "n3", host_pid, started: start_time(host_pid), restarted: false }.restart();
    let r = wait_row(lab, &p, pid, "a resume", EVENT, |r| r["resumed"].as_u64() >= Some(1));
    println!("resumed: {}", r["survival"]);
    // Its checkpoints there were read from snapshots while it ran.
    let log = fs::read_to_string(lab.dir.join("n1").join("herdd.log")).unwrap_or_default();
    let snapshots: Vec<&str> = log.lines().filter(|l| l.contains("checkpointed on n3") && l.contains("from a snapshot") && l.contains(&format!("pid={pid}"))).collect();
    assert!(!snapshots.is_empty(), "no checkpoint of it on n3 was made from a snapshot (n1's log)");
    println!("n1: {}", snapshots[snapshots.len() - 1]);
    lab.wait_all_up("n1", Duration::from_secs(30));
    p.wait_for_line(lab, "gate 1");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// The children of process `pid` (every thread's) that are zombies.
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let kids = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for kid in kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()) {
            let stat = fs::read_to_string(format!("/proc/{kid}/stat")).unwrap_or_default();
            // "pid (comm) S ...": the state follows the last ')'.
            if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) {
                out.push(kid);
            }
        }
    }
    out
}
