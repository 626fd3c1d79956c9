//! `herd top` (`mtop`): every migratable process of the cluster, live, and the keys to
//! move, lock and signal them. It asks this node's herdd, which asks the others; acting
//! on a process goes to its home node through this node's herdd, checked there against
//! the caller's uid.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use herd_daemon::control::{ClusterProcesses, NodeRow, ProcessRow, Request, Response};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::nodes::Target;
use crate::ps::{human, why_not};
use crate::tui::{self, Poller};

pub const AFTER_HELP: &str = "Every migratable process of every node that answers, refreshed each --delay: PID and \
HOME (the node it was started on, whose pid it keeps), WHERE it runs now, STATE, USER, %CPU, RSS, NMIGS (moves so far), \
F (L: locked, the balancer leaves it; !: it cannot move now, the line at the bottom says why) and CMD.\n\n\
Keys: Up/Down/PgUp/PgDn/Home/End select; m move the selected process (then a number or Enter: home, a node, or \
balance, the best node now); l lock or unlock it; k send it a signal; s sort by the next column (CPU, memory, \
pid, where, moves); / filter (text in the command, user, node or pid; Enter keeps it, Esc clears it); u only your \
processes, or everyone's; q quit.\n\
You may act on your own processes; root on all. A move is made by the process's home node and takes as long as \
`herd migrate` does; the bottom line says when it is done or why it failed.\n\
When stdout is not a terminal, herd top prints the table (as `herd ps --all`) every --delay, -n times.\n\
Installed as `mtop` (a symlink to herd), it is herd top.\n\n\
Examples:\n  herd top\n  herd top --user alice --sort mem\n  herd --node n1 top --on n2\n  herd top -n 1 | grep python";

#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// Only this user's processes (a name or a uid)
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// Only the processes running on this node now
    #[arg(long = "on", value_name = "NODE")]
    pub on: Option<String>,
    /// Only this job (the pid of the command `herd run` started)
    #[arg(short, long, value_name = "JOB")]
    pub job: Option<i32>,
    /// The order, highest first (pid, where: lowest first)
    #[arg(short, long, value_enum, default_value_t = Sort::Cpu)]
    pub sort: Sort,
    /// Seconds between refreshes
    #[arg(short, long, default_value_t = 1.0, value_parser = tui::seconds, value_name = "SECS")]
    pub delay: f64,
    /// Stop after this many refreshes (default: until q, or Ctrl-C)
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Cpu,
    Mem,
    Pid,
    Where,
    Moves,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Cpu => Sort::Mem,
            Sort::Mem => Sort::Pid,
            Sort::Pid => Sort::Where,
            Sort::Where => Sort::Moves,
            Sort::Moves => Sort::Cpu,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Cpu => "%CPU",
            Sort::Mem => "RSS",
            Sort::Pid => "PID",
            Sort::Where => "WHERE",
            Sort::Moves => "NMIGS",
        }
    }
}

/// Which processes are shown.
#[derive(Clone, Debug, Default)]
struct Filter {
    uid: Option<u32>,
    on: Option<String>,
    job: Option<i32>,
    /// Text found in the command, user, home, where, or pid.
    text: String,
}

impl Filter {
    fn keeps(&self, r: &ProcessRow, user: &str) -> bool {
        if self.uid.is_some_and(|u| u != r.uid) || self.on.as_ref().is_some_and(|n| *n != r.where_) || self.job.is_some_and(|j| j != r.job) {
            return false;
        }
        if self.text.is_empty() {
            return true;
        }
        let t = self.text.as_str();
        r.cmd.contains(t) || user.contains(t) || r.home.contains(t) || r.where_.contains(t) || r.pid.to_string() == t
    }
}

/// The rows shown, in order.
fn arrange<'a>(rows: &'a [ProcessRow], filter: &Filter, sort: Sort, users: &mut Users) -> Vec<&'a ProcessRow> {
    let mut shown: Vec<&ProcessRow> = rows.iter().filter(|r| filter.keeps(r, users.name(r.uid))).collect();
    let id = |r: &ProcessRow| (r.home.clone(), r.pid);
    match sort {
        Sort::Cpu => shown.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then_with(|| id(a).cmp(&id(b)))),
        Sort::Mem => shown.sort_by(|a, b| b.rss.cmp(&a.rss).then_with(|| id(a).cmp(&id(b)))),
        Sort::Pid => shown.sort_by_key(|r| id(r)),
        Sort::Where => shown.sort_by(|a, b| (&a.where_, &a.home, a.pid).cmp(&(&b.where_, &b.home, b.pid))),
        Sort::Moves => shown.sort_by(|a, b| b.nmigs.cmp(&a.nmigs).then_with(|| id(a).cmp(&id(b)))),
    }
    shown
}

/// User names by uid, looked up once.
#[derive(Default)]
struct Users(HashMap<u32, String>);

impl Users {
    fn name(&mut self, uid: u32) -> &str {
        self.0.entry(uid).or_insert_with(|| match nix::unistd::User::from_uid(uid.into()) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        })
    }
}

/// `--user`: a name, or a uid.
fn parse_user(user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user)? {
        Some(u) => Ok(u.uid.as_raw()),
        None => anyhow::bail!("no user {user:?} on this node"),
    }
}

/// What one refresh brings.
struct View {
    nodes: Vec<NodeRow>,
    procs: ClusterProcesses,
}

fn fetch(target: &Target) -> Result<View, String> {
    let nodes = crate::nodes::rows(target).map_err(|e| format!("{e:#}"))?;
    let procs = crate::ps::cluster_processes(target).map_err(|e| format!("{e:#}"))?;
    Ok(View { nodes, procs })
}

pub fn run(target: Target, args: &TopArgs) -> Result<i32> {
    let filter = Filter { uid: args.user.as_deref().map(parse_user).transpose()?, on: args.on.clone(), job: args.job, text: String::new() };
    let every = Duration::from_secs_f64(args.delay);
    let poll_target = target.clone();
    let poller = Poller::start(every, move || fetch(&poll_target));
    if !std::io::stdout().is_terminal() {
        return plain(&poller, &filter, args);
    }
    Top::with(target, poller, filter, args.sort).run(args.iterations)
}

/// Not a terminal: the table every refresh, as `herd ps --all` prints it.
fn plain(poller: &Poller<View>, filter: &Filter, args: &TopArgs) -> Result<i32> {
    let mut users = Users::default();
    let mut done = 0;
    loop {
        match poller.next(Duration::from_secs(30)) {
            Some(Ok(v)) => {
                let shown: Vec<ProcessRow> = arrange(&v.procs.rows, filter, args.sort, &mut users).into_iter().cloned().collect();
                println!("{}", summary(&v, shown.len()));
                print!("{}", crate::ps::table(&shown, true));
                println!();
            }
            Some(Err(e)) => eprintln!("herd top: {e}"),
            None => eprintln!("herd top: herdd has not answered for 30 s"),
        }
        done += 1;
        if args.iterations.is_some_and(|n| done >= n) {
            return Ok(0);
        }
    }
}

/// The line over the table: the nodes, and how many processes are where.
fn summary(v: &View, shown: usize) -> String {
    let mut by_name: Vec<&NodeRow> = v.nodes.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let nodes: Vec<String> = by_name
        .iter()
        .map(|n| if n.state == "up" { format!("{} {:.2}", n.name, n.load) } else { format!("{} {}", n.name, n.state) })
        .collect();
    let away = v.procs.rows.iter().filter(|r| r.where_ != r.home).count();
    let mut s = format!("nodes: {} | {} processes, {away} away", nodes.join("  "), v.procs.rows.len());
    if shown != v.procs.rows.len() {
        s += &format!(", {shown} shown");
    }
    for u in &v.procs.unanswered {
        s += &format!(" | {} did not answer", u.node);
    }
    s
}

/// A prompt over the table.
enum Mode {
    Normal,
    /// Choosing where to move process (home, pid).
    Move { who: (String, i32), options: Vec<String>, list: ListState },
    Signal { who: (String, i32), list: ListState },
    /// Typing the filter text.
    Filter,
}

const SIGNALS: [(&str, i32); 8] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("KILL", libc::SIGKILL),
    ("STOP", libc::SIGSTOP),
    ("CONT", libc::SIGCONT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

struct Top {
    target: Target,
    poller: Poller<View>,
    filter: Filter,
    sort: Sort,
    view: Option<View>,
    error: Option<String>,
    /// The selected process, by (home, pid): it stays selected as rows move.
    selected: Option<(String, i32)>,
    table: TableState,
    mode: Mode,
    users: Users,
    /// The last thing an action said, and since when.
    message: Option<(String, Instant)>,
    said: (mpsc::Sender<String>, mpsc::Receiver<String>),
}

impl Top {
    fn with(target: Target, poller: Poller<View>, filter: Filter, sort: Sort) -> Top {
        Top {
            target,
            poller,
            filter,
            sort,
            view: None,
            error: None,
            selected: None,
            table: TableState::default(),
            mode: Mode::Normal,
            users: Users::default(),
            message: None,
            said: mpsc::channel(),
        }
    }

    fn run(&mut self, iterations: Option<u64>) -> Result<i32> {
        let mut screen = tui::Screen::open()?;
        let mut refreshes = 0;
        loop {
            if let Some(answer) = self.poller.latest() {
                match answer {
                    Ok(v) => {
                        self.view = Some(v);
                        self.error = None;
                    }
                    Err(e) => self.error = Some(e),
                }
                refreshes += 1;
            }
            for m in self.said.1.try_iter() {
                self.message = Some((m, Instant::now()));
            }
            screen.terminal.draw(|f| self.draw(f))?;
            if iterations.is_some_and(|n| refreshes >= n) {
                return Ok(0);
            }
            if let Some(k) = tui::key(Duration::from_millis(100))? {
                if !self.on_key(k) {
                    return Ok(0);
                }
            }
        }
    }

    /// The rows shown now, and the index of the selected one.
    fn shown(&mut self) -> (Vec<ProcessRow>, Option<usize>) {
        let Some(v) = &self.view else { return (Vec::new(), None) };
        let rows: Vec<ProcessRow> = arrange(&v.procs.rows, &self.filter, self.sort, &mut self.users).into_iter().cloned().collect();
        let at = self.selected.as_ref().and_then(|(h, p)| rows.iter().position(|r| r.home == *h && r.pid == *p));
        let at = at.or(if rows.is_empty() { None } else { Some(0) });
        (rows, at)
    }

    fn say(&mut self, text: String) {
        self.message = Some((text, Instant::now()));
    }

    /// Handles a key; false to quit.
    fn on_key(&mut self, k: KeyEvent) -> bool {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => return self.normal_key(k),
            Mode::Filter => match k.code {
                KeyCode::Enter => {}
                KeyCode::Esc => self.filter.text.clear(),
                KeyCode::Backspace => {
                    self.filter.text.pop();
                    self.mode = Mode::Filter;
                }
                KeyCode::Char(c) => {
                    self.filter.text.push(c);
                    self.mode = Mode::Filter;
                }
                _ => self.mode = Mode::Filter,
            },
            Mode::Move { who, options, mut list } => {
                if let Some(i) = pick(&k, &mut list, options.len()) {
                    self.act(who, Act::Move(options[i].clone()));
                } else if k.code != KeyCode::Esc && k.code != KeyCode::Char('q') {
                    self.mode = Mode::Move { who, options, list };
                }
            }
            Mode::Signal { who, mut list } => {
                if let Some(i) = pick(&k, &mut list, SIGNALS.len()) {
                    self.act(who, Act::Signal(SIGNALS[i]));
                } else if k.code != KeyCode::Esc && k.code != KeyCode::Char('q') {
                    self.mode = Mode::Signal { who, list };
                }
            }
        }
        true
    }

    fn normal_key(&mut self, k: KeyEvent) -> bool {
        if tui::is_quit(&k) {
            return false;
        }
        let (rows, at) = self.shown();
        let current = at.map(|i| (rows[i].home.clone(), rows[i].pid, rows[i].lock));
        let step = |by: isize| -> Option<(String, i32)> {
            let i = at?.saturating_add_signed(by).min(rows.len().saturating_sub(1));
            rows.get(i).map(|r| (r.home.clone(), r.pid))
        };
        match k.code {
            KeyCode::Down => self.selected = step(1),
            KeyCode::Up => self.selected = step(-1),
            KeyCode::PageDown => self.selected = step(20),
            KeyCode::PageUp => self.selected = step(-20),
            KeyCode::Home => self.selected = rows.first().map(|r| (r.home.clone(), r.pid)),
            KeyCode::End => self.selected = rows.last().map(|r| (r.home.clone(), r.pid)),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char('u') => {
                let me = nix::unistd::getuid().as_raw();
                self.filter.uid = if self.filter.uid.is_some() { None } else { Some(me) };
            }
            KeyCode::Char('m') | KeyCode::Char('l') | KeyCode::Char('k') => {
                let Some((home, pid, locked)) = current else {
                    self.say("no process selected".into());
                    return true;
                };
                match k.code {
                    KeyCode::Char('m') => {
                        let mut options = vec!["home".to_string()];
                        if let Some(v) = &self.view {
                            let mut names: Vec<String> = v.nodes.iter().filter(|n| n.state == "up" && n.name != home).map(|n| n.name.clone()).collect();
                            names.sort();
                            options.extend(names);
                        }
                        options.push("balance".into());
                        let list = ListState::default().with_selected(Some(0));
                        self.mode = Mode::Move { who: (home, pid), options, list };
                    }
                    KeyCode::Char('l') => self.act((home, pid), Act::Lock(!locked)),
                    _ => self.mode = Mode::Signal { who: (home, pid), list: ListState::default().with_selected(Some(0)) },
                }
            }
            _ => {}
        }
        true
    }

    /// Sends an action to the process's home, in a thread: a move takes as long as it takes.
    fn act(&mut self, (home, pid): (String, i32), act: Act) {
        let ask = match &act {
            Act::Move(to) => Request::Migrate { pid, target: to.clone(), mode: None },
            Act::Lock(lock) => Request::Lock { pid, lock: *lock },
            Act::Signal((_, sig)) => Request::Signal { pid, signal: *sig },
        };
        let doing = match &act {
            Act::Move(to) => format!("moving {pid} (home {home}) to {to}..."),
            Act::Lock(true) => format!("locking {pid}..."),
            Act::Lock(false) => format!("unlocking {pid}..."),
            Act::Signal((name, _)) => format!("sending SIG{name} to {pid}..."),
        };
        self.say(doing);
        let tell = self.said.0.clone();
        let target = self.target.clone();
        let request = Request::OnNode { node: home.clone(), ask: Box::new(ask) };
        let wake = self.poller.waker();
        std::thread::spawn(move || {
            let text = match (target.call(&request), act) {
                (Ok(Response::Migrated(m)), _) => {
                    format!("moved {pid} to {} ({}): stopped {:.1} ms, {} sent", m.node, m.mode, m.frozen_ms, human(m.bytes))
                }
                (Ok(_), Act::Move(to)) => format!("moved {pid} to {to}"),
                (Ok(_), Act::Lock(true)) => format!("locked {pid}: the balancer leaves it"),
                (Ok(_), Act::Lock(false)) => format!("unlocked {pid}"),
                (Ok(_), Act::Signal((name, _))) => format!("sent SIG{name} to {pid}"),
                (Err(e), Act::Move(to)) => format!("cannot move {pid} to {to}: {e:#}"),
                (Err(e), Act::Lock(true)) => format!("cannot lock {pid}: {e:#}"),
                (Err(e), Act::Lock(false)) => format!("cannot unlock {pid}: {e:#}"),
                (Err(e), Act::Signal((name, _))) => format!("cannot send SIG{name} to {pid}: {e:#}"),
            };
            let _ = tell.send(text);
            wake();
        });
    }

    fn draw(&mut self, f: &mut Frame) {
        let [head, body, detail, foot] = Layout::vertical([Constraint::Length(2), Constraint::Min(3), Constraint::Length(2), Constraint::Length(1)]).areas(f.area());
        let (rows, at) = self.shown();
        self.selected = at.map(|i| (rows[i].home.clone(), rows[i].pid));
        self.table.select(at);
        let mut top_line = vec![Span::from("herd top").bold(), Span::from("  ")];
        match &self.view {
            Some(v) => top_line.push(Span::from(summary(v, rows.len()))),
            None => top_line.push(Span::from("asking herdd...")),
        }
        let mut second = format!("sort: {} (s)", self.sort.name());
        if let Some(uid) = self.filter.uid {
            second += &format!("  user: {} (u)", self.users.name(uid));
        }
        if let Some(on) = &self.filter.on {
            second += &format!("  on: {on}");
        }
        if let Some(job) = self.filter.job {
            second += &format!("  job: {job}");
        }
        if !self.filter.text.is_empty() || matches!(self.mode, Mode::Filter) {
            second += &format!("  filter: {}{}", self.filter.text, if matches!(self.mode, Mode::Filter) { "_" } else { "" });
        }
        if let Some(e) = &self.error {
            second += &format!("  herdd: {e}");
        }
        f.render_widget(Paragraph::new(vec![Line::from(top_line), Line::from(second)]), head);

        let header = Row::new(["PID", "HOME", "WHERE", "STATE", "USER", "%CPU", "RSS", "NMIGS", "F", "CMD"]).style(Style::new().reversed());
        let lines: Vec<Row> = rows
            .iter()
            .map(|r| {
                let flags = format!("{}{}", if r.lock { "L" } else { "" }, if r.cantmove.is_empty() { "" } else { "!" });
                Row::new(vec![
                    Cell::from(r.pid.to_string()),
                    Cell::from(r.home.clone()),
                    Cell::from(r.where_.clone()),
                    Cell::from(r.state.clone()),
                    Cell::from(self.users.name(r.uid).to_string()),
                    Cell::from(format!("{:.1}", r.cpu)),
                    Cell::from(human(r.rss)),
                    Cell::from(r.nmigs.to_string()),
                    Cell::from(flags),
                    Cell::from(r.cmd.clone()),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(2),
            Constraint::Fill(1),
        ];
        let table = Table::new(lines, widths).header(header).row_highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD));
        f.render_stateful_widget(table, body, &mut self.table);

        let about = match at.map(|i| &rows[i]) {
            Some(r) => {
                let why = why_not(r);
                let mut s = format!("{} (home {}): {} on {}, moves so far: {}", r.pid, r.home, r.state, r.where_, r.nmigs);
                if let Some(m) = &r.moving {
                    s += &format!("; moving ({}): {}, {} sent", m.mode, m.phase, human(m.sent_bytes));
                }
                if !why.is_empty() {
                    s += &format!("; why not: {}", why.join("; "));
                }
                s
            }
            None => "no migratable processes (start one with `herd run CMD`)".into(),
        };
        f.render_widget(Paragraph::new(about).wrap(ratatui::widgets::Wrap { trim: true }), detail);

        let foot_text = match &self.message {
            Some((m, since)) if since.elapsed() < Duration::from_secs(10) => m.clone(),
            _ => "m move  l lock  k signal  s sort  / filter  u mine  q quit".into(),
        };
        f.render_widget(Paragraph::new(foot_text).style(Style::new().reversed()), foot);

        match &mut self.mode {
            Mode::Move { who, options, list } => {
                let title = format!(" move {} to (number or Enter, Esc: no) ", who.1);
                popup(f, &title, options.iter().map(String::as_str), list);
            }
            Mode::Signal { who, list } => {
                let title = format!(" signal to {} (number or Enter, Esc: no) ", who.1);
                popup(f, &title, SIGNALS.iter().map(|(n, _)| *n), list);
            }
            _ => {}
        }
    }
}

enum Act {
    Move(String),
    Lock(bool),
    Signal((&'static str, i32)),
}

/// Up/Down move in a list of `n`; Enter picks the highlighted entry, a digit the
/// numbered one.
fn pick(k: &KeyEvent, list: &mut ListState, n: usize) -> Option<usize> {
    match k.code {
        KeyCode::Down => list.select(Some((list.selected().unwrap_or(0) + 1).min(n - 1))),
        KeyCode::Up => list.select(Some(list.selected().unwrap_or(0).saturating_sub(1))),
        KeyCode::Enter => return list.selected(),
        KeyCode::Char(c @ '1'..='9') => {
            let i = c as usize - '1' as usize;
            if i < n {
                return Some(i);
            }
        }
        _ => {}
    }
    None
}

/// A numbered list in a box over the middle of the screen.
fn popup<'a>(f: &mut Frame, title: &str, entries: impl Iterator<Item = &'a str>, list: &mut ListState) {
    let items: Vec<ListItem> = entries.enumerate().map(|(i, e)| ListItem::new(format!("{} {e}", i + 1))).collect();
    let area = f.area();
    let h = (items.len() as u16 + 2).min(area.height);
    let w = (title.len() as u16 + 4).max(24).min(area.width);
    let r = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    f.render_widget(Clear, r);
    let l = List::new(items).block(Block::bordered().title(title.to_string())).highlight_style(Style::new().reversed());
    f.render_stateful_widget(l, r, list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(home: &str, pid: i32, where_: &str, cpu: f64) -> ProcessRow {
        ProcessRow {
            pid,
            home: home.into(),
            ppid: 1,
            job: pid,
            uid: 0,
            where_: where_.into(),
            state: if where_ == home { "home" } else { "remote" }.into(),
            cpu,
            rss: pid as u64 * 1000,
            demand: 0.0,
            io_rate: 0.0,
            direct_io_rate: 0.0,
            forwarded_calls: 0,
            rss_growth: 0.0,
            nmigs: (pid % 3) as u32,
            cantmove: Vec::new(),
            lock: false,
            cmd: format!("job{pid}"),
            moving: None,
            ..Default::default()
        }
    }

    #[test]
    fn filters_and_orders() {
        let rows = [row("n1", 10, "n2", 50.0), row("n2", 10, "n2", 90.0), row("n1", 11, "n1", 90.0), row("n3", 5, "n3", 1.0)];
        let mut users = Users::default();
        let pids = |f: &Filter, s: Sort, users: &mut Users| -> Vec<(String, i32)> {
            arrange(&rows, f, s, users).iter().map(|r| (r.home.clone(), r.pid)).collect()
        };
        let all = Filter::default();
        let id = |h: &str, p: i32| (h.to_string(), p);
        // Ties (same CPU) by home, then pid.
        assert_eq!(pids(&all, Sort::Cpu, &mut users), [id("n1", 11), id("n2", 10), id("n1", 10), id("n3", 5)]);
        assert_eq!(pids(&all, Sort::Pid, &mut users), [id("n1", 10), id("n1", 11), id("n2", 10), id("n3", 5)]);
        assert_eq!(pids(&all, Sort::Where, &mut users), [id("n1", 11), id("n1", 10), id("n2", 10), id("n3", 5)]);
        let on_n2 = Filter { on: Some("n2".into()), ..Filter::default() };
        assert_eq!(pids(&on_n2, Sort::Pid, &mut users), [id("n1", 10), id("n2", 10)]);
        let text = Filter { text: "job1".into(), ..Filter::default() };
        assert_eq!(pids(&text, Sort::Pid, &mut users).len(), 3);
        let by_pid = Filter { text: "5".into(), ..Filter::default() };
        assert_eq!(pids(&by_pid, Sort::Pid, &mut users), [id("n3", 5)]);
        let nobody = Filter { uid: Some(65534), ..Filter::default() };
        assert!(pids(&nobody, Sort::Pid, &mut users).is_empty());
        let mut s = Sort::Cpu;
        for _ in 0..5 {
            s = s.next();
        }
        assert_eq!(s, Sort::Cpu, "s comes round");
    }

    #[test]
    fn picking_from_a_list() {
        let key = |c| KeyEvent::from(c);
        let mut l = ListState::default().with_selected(Some(0));
        assert_eq!(pick(&key(KeyCode::Down), &mut l, 3), None);
        assert_eq!(pick(&key(KeyCode::Down), &mut l, 3), None);
        assert_eq!(pick(&key(KeyCode::Down), &mut l, 3), None);
        assert_eq!(pick(&key(KeyCode::Enter), &mut l, 3), Some(2), "stops at the last");
        assert_eq!(pick(&key(KeyCode::Char('1')), &mut l, 3), Some(0));
        assert_eq!(pick(&key(KeyCode::Char('4')), &mut l, 3), None, "no fourth");
        assert_eq!(pick(&key(KeyCode::Char('x')), &mut l, 3), None);
    }

    #[test]
    fn users_by_name_or_uid() {
        assert_eq!(parse_user("0").unwrap(), 0);
        assert_eq!(parse_user("root").unwrap(), 0);
        assert!(parse_user("no-such-user-herd").is_err());
        assert_eq!(Users::default().name(0), "root");
    }
}
