//! `herd ps` (`mps`): the migratable processes whose home is this node, or (`--all`)
//! of every node.

use anyhow::Result;
use herd_daemon::control::{ClusterProcesses, ProcessRow, Request, Response};

use crate::nodes::Target;

fn processes(target: &Target) -> Result<Vec<ProcessRow>> {
    let Response::Processes(rows) = target.call(&Request::Processes)? else {
        anyhow::bail!("herdd answered the processes request with something else");
    };
    Ok(rows)
}

/// The processes of job `job` (`herd migrate -j`, `herd lock -j`); an error when it has
/// none here.
pub fn job_members(target: &Target, job: i32) -> Result<Vec<ProcessRow>> {
    let rows: Vec<ProcessRow> = processes(target)?.into_iter().filter(|r| r.job == job).collect();
    if rows.is_empty() {
        anyhow::bail!("no job {job} here (herd ps shows the JOB of each migratable process)");
    }
    Ok(rows)
}

/// The migratable processes of every node that answers (`herd ps --all`, `herd top`).
pub fn cluster_processes(target: &Target) -> Result<ClusterProcesses> {
    let Response::ClusterProcesses(all) = target.call(&Request::ClusterProcesses)? else {
        anyhow::bail!("herdd answered the cluster processes request with something else");
    };
    Ok(all)
}

pub fn run(target: &Target, json: bool, tree: bool, all: bool) -> Result<i32> {
    let rows = if all {
        let everyone = cluster_processes(target)?;
        for u in &everyone.unanswered {
            // On stderr, so that stdout is always just the table.
            eprintln!("herd ps: node {} did not answer, its processes are missing: {}", u.node, u.why);
        }
        everyone.rows
    } else {
        processes(target)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let empty = rows.is_empty();
    print!("{}", if tree { table(&forest(rows), all) } else { table(&rows, all) });
    if empty {
        eprintln!("no migratable processes (start one with `herd run CMD`)");
    }
    Ok(0)
}

/// The rows in tree order: each job's processes under their parents (`herd ps --tree`),
/// the command indented by depth as `ps --forest` does. A process whose parent is not
/// migratable starts a tree of its own.
fn forest(rows: Vec<ProcessRow>) -> Vec<ProcessRow> {
    // Pids are a home's: (home, pid) names a process in the cluster.
    let pids: std::collections::HashSet<(String, i32)> = rows.iter().map(|r| (r.home.clone(), r.pid)).collect();
    let mut kids: std::collections::BTreeMap<(String, i32), Vec<ProcessRow>> = Default::default();
    let mut roots = Vec::new();
    for r in rows {
        let parent = (r.home.clone(), r.ppid);
        if r.ppid != r.pid && pids.contains(&parent) {
            kids.entry(parent).or_default().push(r);
        } else {
            roots.push(r);
        }
    }
    roots.sort_by(|a, b| (&a.home, a.job, a.pid).cmp(&(&b.home, b.job, b.pid)));
    let mut out = Vec::new();
    // Depth first, children by pid; a cycle (pids reused meanwhile) cannot recur: each
    // row is taken out of `kids` once.
    let mut stack: Vec<(ProcessRow, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((mut r, depth)) = stack.pop() {
        let mut children = kids.remove(&(r.home.clone(), r.pid)).unwrap_or_default();
        children.sort_by_key(|c| std::cmp::Reverse(c.pid));
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        if depth > 0 {
            r.cmd = format!("{}\\_ {}", "    ".repeat(depth - 1), r.cmd);
        }
        out.push(r);
    }
    // What a cycle left behind still shows.
    out.extend(kids.into_values().flatten());
    out
}

/// The table: a header, one line per process, and under a process that cannot move
/// now, or that the balancer leaves alone, an indented `why not:` line with every reason.
/// With `home`, a HOME column after PID (the rows of several nodes).
pub fn table(rows: &[ProcessRow], home: bool) -> String {
    let where_w = rows.iter().map(|r| r.where_.len()).max().unwrap_or(0).max("WHERE".len());
    let home_w = rows.iter().map(|r| r.home.len()).max().unwrap_or(0).max("HOME".len());
    let state_w = rows.iter().map(|r| r.state.len()).max().unwrap_or(0).max("STATE".len());
    let line = |ids: [&str; 4], wh: &str, state: &str, cpu: &str, demand: &str, io: [&str; 2], rss: &str, nmigs: &str, cmd: &str| {
        let [pid, home_name, ppid, job] = ids;
        let [io, direct] = io;
        let home_col = if home { format!("{home_name:<home_w$} ") } else { String::new() };
        format!("{pid:>7} {home_col}{ppid:>7} {job:>7} {wh:<where_w$} {state:<state_w$} {cpu:>5} {demand:>6} {io:>5} {direct:>5} {rss:>6} {nmigs:>5} {cmd}\n")
    };
    let mut out = line(["PID", "HOME", "PPID", "JOB"], "WHERE", "STATE", "%CPU", "DEMAND", ["IO/s", "DIR/s"], "RSS", "NMIGS", "CMD");
    for r in rows {
        let cpu = format!("{:.1}", r.cpu);
        let demand = format!("{:.0}%", r.demand);
        let ids = [r.pid.to_string(), r.ppid.to_string(), r.job.to_string()];
        let ids = [ids[0].as_str(), r.home.as_str(), ids[1].as_str(), ids[2].as_str()];
        let io = [rate(r.io_rate), rate(r.direct_io_rate)];
        out += &line(ids, &r.where_, &r.state, &cpu, &demand, [&io[0], &io[1]], &human(r.rss), &r.nmigs.to_string(), &r.cmd);
        if let Some(m) = &r.moving {
            let of = if m.total_bytes > 0 { format!(" of {}", human(m.total_bytes)) } else { String::new() };
            out += &format!("    moving ({}): {}, {}{of} sent\n", m.mode, m.phase, human(m.sent_bytes));
        }
        let why = why_not(r);
        if !why.is_empty() {
            out += &format!("    why not: {}\n", why.join("; "));
        }
        if let Some(c) = checkpoint_line(r, std::time::SystemTime::now()) {
            out += &format!("    checkpoint: {c}\n");
        }
        if !r.survival.is_empty() {
            out += &format!("    {}\n", r.survival);
        }
    }
    out
}

/// Its checkpoints, as `herd ps` says them: `every 2s; last 1s ago, 2.7M` (None: none).
pub fn checkpoint_line(r: &ProcessRow, now: std::time::SystemTime) -> Option<String> {
    let every = r.checkpoint_every.map(|s| format!("every {}", humantime::format_duration(std::time::Duration::from_secs(s.round() as u64))));
    let last = (r.checkpoint_unix > 0).then(|| {
        let ago = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_sub(r.checkpoint_unix);
        format!("last {ago}s ago, {}", human(r.checkpoint_bytes))
    });
    match (every, last) {
        (None, None) => None,
        (Some(e), None) => Some(format!("{e} while away; none yet")),
        (None, Some(l)) => Some(l),
        (Some(e), Some(l)) => Some(format!("{e}; {l}")),
    }
}

/// Why the process does not move: locked, and every reason it cannot.
pub fn why_not(r: &ProcessRow) -> Vec<String> {
    let mut why = Vec::new();
    if r.lock {
        why.push(format!("locked, the balancer leaves it (herd unlock {})", r.pid));
    }
    why.extend(r.cantmove.iter().cloned());
    why
}

/// Calls a second, in 5 characters: `0`, `0.4`, `12`, `830`, `1.2k`, `45k`, `3.1M`.
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.05 {
        return "0".into();
    }
    let (v, unit) = match per_sec {
        x if x < 1e3 => (x, ""),
        x if x < 1e6 => (x / 1e3, "k"),
        x => (x / 1e6, "M"),
    };
    if v < 9.95 && !(unit.is_empty() && v >= 1.0) {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// Bytes for people: `512B`, `4.0K`, `812K`, `12.3M`... one decimal below 100.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 99.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: i32, where_: &str, cantmove: &[&str]) -> ProcessRow {
        ProcessRow {
            pid,
            home: "n1".into(),
            ppid: 1,
            job: pid,
            uid: 1000,
            where_: where_.into(),
            state: if where_ == "n1" { "home" } else { "remote" }.into(),
            cpu: 99.04,
            rss: 12_897_485,
            demand: 97.6,
            io_rate: 1234.0,
            rss_growth: 0.0,
            direct_io_rate: 0.0,
            forwarded_calls: 0,
            nmigs: 2,
            cantmove: cantmove.iter().map(|s| s.to_string()).collect(),
            lock: false,
            cmd: "python3 crunch.py --big".into(),
            moving: None,
            ..Default::default()
        }
    }

    #[test]
    fn checkpoints_and_what_happened_show_under_the_process() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let mut r = row(7, "n2", &[]);
        assert_eq!(checkpoint_line(&r, now), None);
        r.checkpoint_every = Some(120.0);
        assert_eq!(checkpoint_line(&r, now).as_deref(), Some("every 2m while away; none yet"));
        r.checkpoint_unix = 990;
        r.checkpoint_bytes = 3 << 20;
        assert_eq!(checkpoint_line(&r, now).as_deref(), Some("every 2m; last 10s ago, 3.0M"));
        r.survival = "resumed on n3 from its checkpoint of 10:00:00 UTC (n2 lost: connection closed)".into();
        let t = table(&[r], false);
        assert!(t.contains("\n    checkpoint: every 2m; last ") && t.ends_with("\n    resumed on n3 from its checkpoint of 10:00:00 UTC (n2 lost: connection closed)\n"), "{t}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(4096), "4.0K");
        assert_eq!(human(812 * 1024), "812K");
        assert_eq!(human(12_897_485), "12.3M");
        assert_eq!(human(3 << 30), "3.0G");
        assert_eq!(human(5 << 40), "5.0T");
    }

    #[test]
    fn table_layout() {
        let mut locked = row(5, "n1", &[]);
        locked.lock = true;
        let rows = [row(4242, "n1", &[]), row(77, "node-long-name", &["it has a GPU mapped", "it is traced"]), locked];
        let t = table(&rows, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert_eq!(lines[0], "    PID    PPID     JOB WHERE          STATE   %CPU DEMAND  IO/s DIR/s    RSS NMIGS CMD");
        assert_eq!(lines[1], "   4242       1    4242 n1             home    99.0    98%  1.2k     0  12.3M     2 python3 crunch.py --big");
        assert_eq!(lines[2], "     77       1      77 node-long-name remote  99.0    98%  1.2k     0  12.3M     2 python3 crunch.py --big");
        assert_eq!(lines[3], "    why not: it has a GPU mapped; it is traced");
        assert_eq!(lines[5], "    why not: locked, the balancer leaves it (herd unlock 5)");
    }

    #[test]
    fn rates() {
        let cases = [(0.0, "0"), (0.01, "0"), (0.42, "0.4"), (1.0, "1"), (12.4, "12"), (830.0, "830"), (1234.0, "1.2k"), (45_000.0, "45k"), (3.14e6, "3.1M"), (f64::NAN, "0")];
        for (v, text) in cases {
            assert_eq!(rate(v), text, "{v}");
        }
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(table(&[], false), "    PID    PPID     JOB WHERE STATE  %CPU DEMAND  IO/s DIR/s    RSS NMIGS CMD\n");
    }

    #[test]
    fn cluster_table_has_a_home_column() {
        let mut away = row(77, "n1", &[]);
        away.home = "node-three".into();
        let t = table(&[row(4242, "n1", &[]), away], true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "    PID HOME          PPID     JOB WHERE STATE  %CPU DEMAND  IO/s DIR/s    RSS NMIGS CMD");
        assert_eq!(lines[2], "     77 node-three       1      77 n1    home   99.0    98%  1.2k     0  12.3M     2 python3 crunch.py --big");
    }

    #[test]
    fn tree_order_and_indent() {
        let kid = |pid: i32, ppid: i32, cmd: &str| {
            let mut r = row(pid, "n1", &[]);
            r.ppid = ppid;
            r.job = 10;
            r.cmd = cmd.into();
            r
        };
        let mut other = row(5, "n2", &[]);
        other.cmd = "other".into();
        // Parents after children, siblings out of order, a parent that is not listed.
        let rows = vec![kid(14, 12, "cc1"), kid(13, 10, "sh b"), kid(12, 11, "gcc"), kid(11, 10, "sh a"), kid(10, 3, "make"), other];
        let cmds: Vec<(i32, String)> = forest(rows).into_iter().map(|r| (r.pid, r.cmd)).collect();
        let want = [(5, "other"), (10, "make"), (11, "\\_ sh a"), (12, "    \\_ gcc"), (14, "        \\_ cc1"), (13, "\\_ sh b")];
        assert_eq!(cmds, want.map(|(p, c)| (p, c.to_string())));
        // The same pids at another home are other processes.
        let mut elsewhere = kid(11, 10, "not a child of make");
        elsewhere.home = "n2".into();
        let rows = vec![kid(10, 3, "make"), elsewhere];
        let cmds: Vec<String> = forest(rows).into_iter().map(|r| r.cmd).collect();
        assert_eq!(cmds, ["make", "not a child of make"]);
        // A cycle (pids reused) loses no row.
        assert_eq!(forest(vec![kid(20, 21, "a"), kid(21, 20, "b")]).len(), 2);
    }

    #[test]
    fn json_keys() {
        let v = serde_json::to_value([row(1, "n1", &["x"])]).unwrap();
        for key in ["pid", "ppid", "job", "where", "state", "cpu", "rss", "demand", "io_rate", "nmigs", "cantmove", "lock", "cmd"] {
            assert!(v[0].get(key).is_some(), "no {key} in {v}");
        }
    }
}
