//! `herd ps` (`mps`): the migratable processes whose home is this node.

use anyhow::Result;
use herd_daemon::control::{ProcessRow, Request, Response};

use crate::nodes::Target;

pub fn run(target: &Target, json: bool) -> Result<i32> {
    let Response::Processes(rows) = target.call(&Request::Processes)? else {
        anyhow::bail!("herdd answered the processes request with something else");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    print!("{}", table(&rows));
    if rows.is_empty() {
        // On stderr, so that stdout is always just the table.
        eprintln!("no migratable processes (start one with `herd run CMD`)");
    }
    Ok(0)
}

/// The table: a header, one line per process, and under a process that cannot move
/// now an indented line saying why.
fn table(rows: &[ProcessRow]) -> String {
    let where_w = rows.iter().map(|r| r.where_.len()).max().unwrap_or(0).max("WHERE".len());
    let state_w = rows.iter().map(|r| r.state.len()).max().unwrap_or(0).max("STATE".len());
    let line = |pid: &str, wh: &str, state: &str, cpu: &str, rss: &str, nmigs: &str, cmd: &str| {
        format!("{pid:>7} {wh:<where_w$} {state:<state_w$} {cpu:>5} {rss:>6} {nmigs:>5} {cmd}\n")
    };
    let mut out = line("PID", "WHERE", "STATE", "%CPU", "RSS", "NMIGS", "CMD");
    for r in rows {
        let cpu = format!("{:.1}", r.cpu);
        out += &line(&r.pid.to_string(), &r.where_, &r.state, &cpu, &human(r.rss), &r.nmigs.to_string(), &r.cmd);
        if !r.cantmove.is_empty() {
            out += &format!("    cannot move: {}\n", r.cantmove.join("; "));
        }
    }
    out
}

/// Bytes for people: `512B`, `4.0K`, `812K`, `12.3M`... one decimal below 100.
fn human(bytes: u64) -> String {
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
            uid: 1000,
            where_: where_.into(),
            state: if where_ == "n1" { "home" } else { "remote" }.into(),
            cpu: 99.04,
            rss: 12_897_485,
            nmigs: 2,
            cantmove: cantmove.iter().map(|s| s.to_string()).collect(),
            lock: false,
            cmd: "python3 crunch.py --big".into(),
        }
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
        let rows = [row(4242, "n1", &[]), row(77, "node-long-name", &["it has a GPU mapped", "locked at home"])];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert_eq!(lines[0], "    PID WHERE          STATE   %CPU    RSS NMIGS CMD");
        assert_eq!(lines[1], "   4242 n1             home    99.0  12.3M     2 python3 crunch.py --big");
        assert_eq!(lines[2], "     77 node-long-name remote  99.0  12.3M     2 python3 crunch.py --big");
        assert_eq!(lines[3], "    cannot move: it has a GPU mapped; locked at home");
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(table(&[]), "    PID WHERE STATE  %CPU    RSS NMIGS CMD\n");
    }

    #[test]
    fn json_keys() {
        let v = serde_json::to_value([row(1, "n1", &["x"])]).unwrap();
        for key in ["pid", "where", "state", "cpu", "rss", "nmigs", "cantmove", "lock", "cmd"] {
            assert!(v[0].get(key).is_some(), "no {key} in {v}");
        }
    }
}
