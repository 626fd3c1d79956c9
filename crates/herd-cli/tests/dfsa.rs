//! Direct file access (DFSA) end to end, on a local cluster of three nodes where every
//! node offers two directories: DIR/shared, one directory of this machine's file system
//! that every node sees (so it is verified shared), and /tmp/herd-lookalike, which each
//! node has under its own private /tmp (the same path, other file systems: never shared).
//!
//! As in migrate.rs: each program runs directly in n1 (uninterrupted, no herd) and under
//! `herd run`, moved at its triggers; same stdout, same status. Beyond that, the calls
//! forwarded home while away (`herd ps --json` forwarded_calls) show that the file calls
//! ran where the process was. `HERD_DFSA_ONLY=name` runs only the scenarios named.
//!
//! Prerequisites missing: `SKIP: <reason>` and return (see common/lab.rs).

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
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const C_PROGRAMS: &[&str] = &["dfsa_io"];

type Scenario = scenarios::Scenario<Lab>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("shared_directory_verified_lookalike_not", shared_directory_verified_lookalike_not),
    ("files_used_directly_while_away", files_used_directly_while_away),
    ("lookalike_path_stays_forwarded", lookalike_path_stays_forwarded),
    ("names_changed_directly_while_away", names_changed_directly_while_away),
    ("forwarded_files_read_ahead_and_written_behind", forwarded_files_read_ahead_and_written_behind),
    ("write_error_at_home_reaches_a_later_call", write_error_at_home_reaches_a_later_call),
    ("sha256sum_cp_xz_of_a_file_at_home_run_on_n2", sha256sum_cp_xz_of_a_file_at_home_run_on_n2),
    ("identical_files_mapped_where_it_runs", identical_files_mapped_where_it_runs),
    ("programs_exec_where_it_runs", programs_exec_where_it_runs),
    ("vfork_and_posix_spawn_where_it_runs", vfork_and_posix_spawn_where_it_runs),
];

#[test]
fn dfsa_scenarios() {
    let spec = Spec { name: "dfsa", c_programs: C_PROGRAMS, py_programs: &["dfsa_map.py", "dfsa_exec.py", "dfsa_spawn.py"], scripts: &[], quiet_n1: true, cpus_per_node: None, shared: true };
    let Some(lab) = Lab::new(&spec) else { return };
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_DFSA_ONLY", &lab, Lab::wait_healthy, |_| {});
    let dir = lab.finish(failed.is_empty());
    scenarios::report("DFSA scenarios", ran, &failed, &dir);
}

fn shared_dir(lab: &Lab) -> PathBuf {
    lab.dir.join("shared")
}

/// What `viewer` says it shares with `node` (`herd nodes --json`).
fn shared_with(lab: &Lab, viewer: &str, node: &str) -> Vec<String> {
    lab.nodes(viewer)
        .iter()
        .find(|r| r["name"] == node)
        .and_then(|r| r["shared_with_this_node"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Every node offers both directories; each pair of nodes verifies DIR/shared (the
/// marker each wrote is read back by the other) and never the look-alike.
fn shared_directory_verified_lookalike_not(lab: &Lab) {
    let shared = shared_dir(lab).to_string_lossy().into_owned();
    let start = Instant::now();
    for (viewer, node) in [("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n2")] {
        loop {
            let got = shared_with(lab, viewer, node);
            if got == [shared.clone()] {
                break;
            }
            assert!(!got.iter().any(|p| p == LOOKALIKE), "{viewer} takes {LOOKALIKE} as shared with {node}: {got:?}");
            assert!(start.elapsed() < Duration::from_secs(20), "{viewer} does not verify {shared} as shared with {node} within 20 s: {got:?}");
            thread::sleep(Duration::from_millis(200));
        }
    }
    let rows = lab.nodes("n1");
    for r in &rows {
        let offered: Vec<&str> = r["shared"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert_eq!(offered, [shared.as_str(), LOOKALIKE], "what {} publishes: {r}", r["name"]);
    }
}

/// The forwarded calls of `pid` since it arrived where it runs, once a figure newer than
/// `after` is in (figures come every second).
fn forwarded_calls(lab: &Lab, pid: i32) -> u64 {
    thread::sleep(Duration::from_millis(2500));
    let rows = lab.ps();
    let row = rows.iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid))).unwrap_or_else(|| panic!("pid {pid} not in herd ps: {rows:?}"));
    row["forwarded_calls"].as_u64().unwrap_or_else(|| panic!("no forwarded_calls in {row}"))
}

/// Fails `p` if more than `limit` of its calls went home since it arrived (`what`: while
/// it did what).
fn few_forwarded(lab: &Lab, p: &Proc, pid: i32, limit: u64, what: &str) {
    let forwarded = forwarded_calls(lab, pid);
    println!("{pid} on n2: {forwarded} calls forwarded home");
    if forwarded > limit {
        p.fail(lab, &format!("{forwarded} calls went home {what} (at most {limit} expected)"));
    }
}

/// The steps of `dfsa_io io DIR` around moves to n2, n3 and home, against a direct run;
/// the calls forwarded home while on n2.
fn io_moved_about(lab: &Lab, dir: &std::path::Path, limit: u64) {
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("input"), &input).unwrap();
    let args = vec!["io".to_string(), dir.to_string_lossy().into_owned()];
    let prog = lab.program("dfsa_io").with_args(&args);
    let gates = [Gate::Line("ready"), Gate::Line("io done"), Gate::Line("again")];
    let direct = lab.run_direct("dfsa_io (direct)", &prog, &gates);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("out written: 4194304 bytes"), "{}", direct.describe());
    let _ = std::fs::remove_file(dir.join("out"));

    let (mut p, pid) = lab.on_n2_until("dfsa_io (herd run, moved to n2, n3 and home)", &prog, "io done");
    // Still on n2 (its mappings, of a shared file or of a file n2 has the same, do not
    // bring it home); its file calls did not go home one by one: 3 MB read by 32 KiB
    // reads (92), 4 MiB written and read back (256), and more. What went home: its lines
    // on stdout, the reads of its trigger, and (forwarded files) a few windows and
    // gathered writes.
    lab.expect_where(&p, pid, "n2", Some(1));
    few_forwarded(lab, &p, pid, limit, "while it used its files on n2");
    // On to n3 (a descriptor opened at home continues there at its offset), then home.
    lab.expect_migrate(&p, pid, "n3");
    lab.expect_where(&p, pid, "n3", Some(2));
    p.send(lab, "go\n");
    p.wait_for_line(lab, "again");
    lab.expect_migrate(&p, pid, "home");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    assert_eq!(std::fs::metadata(dir.join("out")).map(|m| m.len()).ok(), Some(4 << 20), "{}/out as written on n2", dir.display());
}

/// Files of a directory the nodes do not share, used on n2: read ahead in windows and
/// written behind, with the same results as at home and few calls forwarded; mapped from
/// n2's copies (the same files: this machine's directory), the file just written too
/// (its gathered writes reach home before home says what the file is).
fn forwarded_files_read_ahead_and_written_behind(lab: &Lab) {
    let dir = lab.dir.join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    io_moved_about(lab, &dir, 60);
}

/// A file system at home that fills up (a 1 MiB tmpfs in n1) while the process writes
/// to it from n2: its writes are gathered, and the failure at home is the answer to a
/// later write, its fsync or its close (as on an NFS client), never lost; at home the
/// write itself fails.
fn write_error_at_home_reaches_a_later_call(lab: &Lab) {
    let small = "/tmp/herd-small";
    lab.node_sh_ok("n1", &format!("mkdir -p {small} && mount -t tmpfs -o size=1m,mode=1777 tmpfs {small}"));
    let file = format!("{small}/f");
    let prog = lab.program("dfsa_io").with_args(&["fill", &file, "6"]);
    let direct = lab.run_direct("dfsa_io fill (direct)", &prog, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains("write failed after 1048576 bytes: No space left on device"), "{}", direct.describe());
    lab.node_sh_ok("n1", &format!("rm -f {file}"));
    let moved = moved_at_ready(lab, "dfsa_io fill (herd run, on n2)", &prog, "n2");
    expect_status(&moved, Some(0), None);
    let errors: Vec<&str> = moved.stdout.lines().filter(|l| l.contains("failed")).collect();
    println!("dfsa_io fill on n2: {errors:?}");
    assert!(
        !errors.is_empty() && errors.iter().all(|l| l.ends_with("No space left on device")),
        "the failure at home did not reach the program:\n{}",
        moved.describe()
    );
    let first = errors[0];
    let later_write = first.strip_prefix("write failed after ").and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
    assert!(
        later_write.is_some_and(|n| (1 << 20..=6 << 20).contains(&n)) || first.starts_with("fsync failed") || first.starts_with("close failed"),
        "the failure reached it at an unexpected call: {first:?}\n{}",
        moved.describe()
    );
    assert!(moved.stdout.ends_with("filled\n"), "{}", moved.describe());
    lab.node_sh_ok("n1", &format!("umount {small}"));
}

/// Runs `prog` under `herd run`, moves it to `node` when it says "ready", lets it go on
/// there, and waits for its end.
fn moved_at_ready(lab: &Lab, label: &str, prog: &Program, node: &str) -> Finished {
    let mut p = lab.start(label, How::Herd, prog);
    let pid = p.home_pid(lab);
    p.wait_for_line(lab, "ready");
    lab.expect_migrate(&p, pid, node);
    lab.expect_where(&p, pid, node, Some(1));
    p.send(lab, "go\n");
    p.finish(lab)
}

/// A command as a Program (its own path as the marker).
fn command(argv: &[&str]) -> Program {
    Program { argv: argv.iter().map(Into::into).collect(), marker: argv.join(" "), comm: None }
}

/// `sha256sum`, `cp` and `xz -T2` (two threads) of a 96 MB file at home (not in a shared directory), run
/// with `herd run --node n2` (moved right after they start: most of their reading and
/// writing happens on n2, through read-ahead and write-behind), against direct runs:
/// the same digest, the same copy, the same compressed file.
fn sha256sum_cp_xz_of_a_file_at_home_run_on_n2(lab: &Lab) {
    let dir = lab.dir.join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let input = dir.join("big.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut x = 0x9E37_79B9u64;
        for i in 0..1_500_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            writeln!(f, "line {i:08} of a file at home, {:016x} {:08x}", x, (x >> 20) as u32 ^ i as u32).unwrap();
        }
    }
    std::fs::set_permissions(&input, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let size = std::fs::metadata(&input).unwrap().len();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (big, copy, direct_copy) = (path("big.txt"), path("copy.txt"), path("copy-direct.txt"));
    let run = |label: &str, how: How, argv: &[&str]| {
        let remote = matches!(how, How::HerdOn(_));
        let f = lab.start(label, how, &command(argv)).finish(lab);
        expect_status(&f, Some(0), None);
        if remote && !f.stderr.is_empty() {
            panic!("{label}: herd run said something (did it not move?):\n{}", f.describe());
        }
        f
    };
    // sha256sum
    let d = run("sha256sum (direct)", How::Direct, &["sha256sum", &big]);
    let m = run("sha256sum (herd run --node n2)", How::HerdOn("n2"), &["sha256sum", &big]);
    assert_eq!(d.stdout, m.stdout, "sha256sum of {size} bytes");
    // cp
    run("cp (direct)", How::Direct, &["cp", &big, &direct_copy]);
    run("cp (herd run --node n2)", How::HerdOn("n2"), &["cp", &big, &copy]);
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&input).unwrap(), "the copy made on n2 differs from the file");
    assert_eq!(std::fs::metadata(&direct_copy).unwrap().len(), size);
    // xz with two threads (blocks of 3 MiB compressed side by side: the output is the
    // same whatever the timing): reads the file, writes FILE.xz itself.
    run("xz -T2 (direct)", How::Direct, &["xz", "-1", "-T2", "-k", "-f", &copy]);
    let direct_xz = std::fs::read(path("copy.txt.xz")).unwrap();
    std::fs::remove_file(path("copy.txt.xz")).unwrap();
    run("xz -T2 (herd run --node n2)", How::HerdOn("n2"), &["xz", "-1", "-T2", "-k", "-f", &copy]);
    let moved_xz = std::fs::read(path("copy.txt.xz")).unwrap();
    assert!(moved_xz == direct_xz, "xz on n2 wrote {} bytes, directly {} (or other bytes)", moved_xz.len(), direct_xz.len());
    for f in ["big.txt", "copy.txt", "copy-direct.txt", "copy.txt.xz"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

/// Files in the shared directory, used on n2: a descriptor opened at home continues at
/// its offset there, on n3 and after coming back; a whole file read by 32 KiB reads, 4 MiB
/// written, synced, read back, pread, mapped (which no longer brings it home). Hardly
/// any call goes home for it. Then a process on n3 reads the file written on n2.
fn files_used_directly_while_away(lab: &Lab) {
    let dir = shared_dir(lab);
    io_moved_about(lab, &dir, 60);

    // Written on n2, read on n3.
    let out = dir.join("out").to_string_lossy().into_owned();
    let check = lab.program("dfsa_io").with_args(&["check", &out]);
    let direct = lab.run_direct("dfsa_io check (direct)", &check, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    let moved = moved_at_ready(lab, "dfsa_io check (herd run, on n3)", &check, "n3");
    same_result(&direct, &moved, same);
}

/// mkdir, rename, rmdir and unlink in the shared directory, on n2: made there (600 of
/// them, and hardly a call goes home), with the same answers (EEXIST, ENOTEMPTY, EISDIR,
/// ENOTDIR, ENOENT) and the same modes (the umask the program set while away) as a
/// direct run.
fn names_changed_directly_while_away(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let dir = shared_dir(lab).join("names");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let prog = lab.program("dfsa_io").with_args(&["names", &dir.to_string_lossy()]);
    let direct = lab.run_direct("dfsa_io names (direct)", &prog, &[Gate::Line("ready"), Gate::Line("names done")]);
    expect_status(&direct, Some(0), None);
    for line in ["mkdir, rename, rmdir: 200 of 200", "kept: ok, mode 750", "rmdir kept (not empty): ENOTEMPTY", "unlink victim again: ENOENT"] {
        assert!(direct.stdout.contains(line), "{line:?} in {}", direct.describe());
    }
    let (mut p, pid) = lab.on_n2_until("dfsa_io names (herd run, on n2)", &prog, "names done");
    // What went home: its lines on stdout, the reads of its triggers, its umask.
    few_forwarded(lab, &p, pid, 60, "for 600 changes of names in the shared directory");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "everything it made, it removed");
}

/// A file under the look-alike directory (each node its own /tmp) read on n2: the home
/// file's content, as for any file that is not shared (forwarded).
fn lookalike_path_stays_forwarded(lab: &Lab) {
    let file = format!("{LOOKALIKE}/f");
    lab.node_sh_ok("n1", &format!("printf 'n1 home content\\n' > {file} && chmod 644 {file}"));
    lab.node_sh_ok("n2", &format!("printf 'n2 content, not home\\n' > {file} && chmod 644 {file}"));
    let check = lab.program("dfsa_io").with_args(&["check", &file]);
    let direct = lab.run_direct("dfsa_io check look-alike (direct)", &check, &[Gate::Line("ready")]);
    expect_status(&direct, Some(0), None);
    assert!(direct.stdout.contains(&format!("{file}: 16 bytes")), "{}", direct.describe());
    let moved = moved_at_ready(lab, "dfsa_io check look-alike (herd run, on n2)", &check, "n2");
    same_result(&direct, &moved, same);
}

/// Private mappings of files home has open, on n2: a data file in a directory the nodes
/// do not share but that holds the same file on n2, and the C extension modules python
/// loads there (ld.so opens them at home and maps them): n2's identical copies are
/// mapped, and the process stays on n2 (it went home for each mapping before). A file at
/// the same path whose contents differ on n2 (the look-alike directory, same size) is
/// mapped at home: the process goes home for it and sees home's contents. Same output
/// as a direct run.
fn identical_files_mapped_where_it_runs(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.dir.join("maps");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.join("data");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let other = format!("{LOOKALIKE}/mapped");
    lab.node_sh_ok("n1", &format!("printf 'home contents\\n' > {other} && chmod 644 {other}"));
    lab.node_sh_ok("n2", &format!("printf 'node contents\\n' > {other} && chmod 644 {other}"));
    let prog = lab.python_program("dfsa_map.py").with_args(&[file.to_str().unwrap(), &other]);
    let direct = lab.run_direct("dfsa_map.py (direct)", &prog, &[Gate::Line("ready"), Gate::Line("mapped"), Gate::Line("done")]);
    expect_status(&direct, Some(0), None);
    for line in ["private write: b'XXXXX'", "C scanner: True", "decimal 0.1428571428571428571428571428571428571429", "lzma 40000", "other: home contents"] {
        assert!(direct.stdout.contains(line), "{line:?} in {}", direct.describe());
    }

    let (mut p, pid) = lab.on_n2_until("dfsa_map.py (herd run, on n2)", &prog, "mapped");
    // Still on n2, never home: the file and the modules were mapped from n2's copies.
    lab.expect_where(&p, pid, "n2", Some(1));
    p.send(lab, "go\n");
    p.wait_for_line(lab, "done");
    // Home for the look-alike, whose contents on n2 are not home's.
    lab.expect_where(&p, pid, "n1", Some(2));
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A process on n2 execs sh (found by a PATH search whose first directory has no sh), sh
/// execs a copy of bash by a relative path with a script, the script forks
/// /usr/bin/printf and a script of the look-alike directory, then execs a #!/bin/sh
/// script: the same output as a direct run; the process is still on n2, never moved
/// again (each exec was made there: n2 has the same programs), `herd ps` shows its
/// command line now, the descriptor marked close-on-exec is closed in the new program and
/// the inherited one open; the look-alike script, whose contents on n2 are not home's, ran
/// at home. The program exec'd away then moves home and on to n3 before it ends.
fn programs_exec_where_it_runs(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.dir.join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let other = lookalike_script(lab);
    let prog = lab.python_program("dfsa_exec.py").with_args(&[dir.to_str().unwrap(), &other]);
    let direct = lab.run_direct("dfsa_exec.py (direct)", &prog, &[Gate::Line("ready"), Gate::Line("done")]);
    expect_status(&direct, Some(0), None);
    for line in [
        "sh: the close-on-exec descriptor is closed",
        "sh: the inherited descriptor is open",
        "job.sh: 2 arguments: one two",
        "printf: a child of the script",
        "other: at home",
        "job.sh: run by /",
        "/exec/bash-copy as ./job.sh",
        "/exec/tail.sh",
        "python, before its exec\nsh, after the exec",
    ] {
        assert!(direct.stdout.contains(line), "{line:?} in {}", direct.describe());
    }
    let (mut p, pid) = lab.on_n2_until("dfsa_exec.py (herd run, on n2)", &prog, "done");
    let row = lab.expect_where(&p, pid, "n2", Some(1));
    // `herd ps` shows what it runs now.
    assert!(row["cmd"].as_str().is_some_and(|c| c.starts_with("/bin/sh /") && c.ends_with("/exec/tail.sh")), "{row}");
    // The program exec'd away moves home and out again like any other.
    lab.expect_migrate(&p, pid, "n1");
    lab.expect_migrate(&p, pid, "n3");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A process on n2 makes children by posix_spawn (clone3 with CLONE_VM|CLONE_VFORK) and
/// vfork (python's subprocess): the same output as a direct run — the parent waits for
/// each as at home, and a spawn of nothing fails with ENOENT, which the child writes in
/// the memory it shares — and the process is still on n2, never moved again (the
/// children were made there, and exec'd there but for the look-alike script's).
fn vfork_and_posix_spawn_where_it_runs(lab: &Lab) {
    let other = lookalike_script(lab);
    let prog = lab.python_program("dfsa_spawn.py").with_args(&[&other]);
    let direct = lab.run_direct("dfsa_spawn.py (direct)", &prog, &[Gate::Line("ready"), Gate::Line("done")]);
    expect_status(&direct, Some(0), None);
    for line in [
        "spawned: posix_spawn\nposix_spawn status 0",
        "spawned: posix_spawnp\nposix_spawnp status 0",
        "posix_spawnp of nothing: FileNotFoundError",
        "subprocess said 'subprocess: vfork\\n' 0",
        "subprocess of the look-alike said 'other: at home\\n' 0",
        "sh status 7",
    ] {
        assert!(direct.stdout.contains(line), "{line:?} in {}", direct.describe());
    }
    let (mut p, pid) = lab.on_n2_until("dfsa_spawn.py (herd run, on n2)", &prog, "done");
    lab.expect_where(&p, pid, "n2", Some(1));
    // And it moves on after its vforks.
    lab.expect_migrate(&p, pid, "n3");
    p.send(lab, "go\n");
    let moved = p.finish(lab);
    same_result(&direct, &moved, same);
}

/// A script at the same path in the look-alike directory of n1 and n2, whose contents
/// differ (each says where it is): run on n2 by a process of n1, it must run at home.
fn lookalike_script(lab: &Lab) -> String {
    let other = format!("{LOOKALIKE}/other.sh");
    lab.node_sh_ok("n1", &format!("printf '#!/bin/sh\\necho other: at home\\n' > {other} && chmod 755 {other}"));
    lab.node_sh_ok("n2", &format!("printf '#!/bin/sh\\necho other: on n2!\\n' > {other} && chmod 755 {other}"));
    other
}
