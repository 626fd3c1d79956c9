//! `herd mon` (`mosmon`): a bar per node, of load, memory in use, speed or migratable
//! processes running there, with a history, as openMosix's mosmon showed them.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use herd_daemon::control::NodeRow;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Sparkline};
use ratatui::Frame;

use crate::nodes::Target;
use crate::ps::human;
use crate::tui::{self, Poller};

pub const AFTER_HELP: &str = "One bar per node of the cluster, as this node's herdd sees it, refreshed each --delay:\n  \
load      runnable processes per CPU, smoothed (100 = every CPU busy)\n  \
memory    memory in use, percent of the node's\n  \
speed     relative CPU speed (10000 = the reference CPU)\n  \
procs     migratable processes running on the node now (of every home)\n\
A node that is down shows `down` and no bar.\n\n\
Keys (mosmon's): l load, m memory, s speed, p processes; h the history of the view (a line per node, the \
newest on the right) or the bars again; q quit.\n\
When stdout is not a terminal, herd mon prints one line per refresh, with every figure of every node, -n times.\n\
Installed as `mosmon` (a symlink to herd), it is herd mon.\n\n\
Examples:\n  herd mon\n  herd mon --view memory\n  herd --node n2 mon\n  herd mon -n 3 --delay 2";

#[derive(clap::Args, Debug, Clone)]
pub struct MonArgs {
    /// What the bars show at first
    #[arg(long, value_enum, default_value_t = Figure::Load)]
    pub view: Figure,
    /// Seconds between refreshes
    #[arg(short, long, default_value_t = 1.0, value_parser = tui::seconds, value_name = "SECS")]
    pub delay: f64,
    /// Stop after this many refreshes (default: until q, or Ctrl-C)
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    Load,
    Memory,
    Speed,
    Procs,
}

impl Figure {
    fn title(self) -> &'static str {
        match self {
            Figure::Load => "load (runnable per CPU, %)",
            Figure::Memory => "memory in use (%)",
            Figure::Speed => "speed (10000 = reference CPU)",
            Figure::Procs => "migratable processes running there",
        }
    }
}

/// One node's figures at one refresh.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    up: bool,
    /// Load per CPU, percent.
    load: u64,
    /// Memory in use, percent.
    memory: u64,
    speed: u64,
    procs: u64,
    /// What the bar writes over itself.
    load_text: String,
    memory_text: String,
}

impl Sample {
    fn of(n: &NodeRow, procs: u64) -> Sample {
        let up = n.state == "up" || n.state == "blocked";
        let used = n.mem_total.saturating_sub(n.mem_free);
        Sample {
            up,
            load: if n.cpus > 0 { (f64::from(n.load) * 100.0 / f64::from(n.cpus)).round() as u64 } else { 0 },
            memory: (used as f64 * 100.0 / n.mem_total.max(1) as f64).round() as u64,
            speed: u64::from(n.speed),
            procs,
            load_text: format!("{:.2}/{}", n.load, n.cpus),
            memory_text: format!("{}/{}", human(used), human(n.mem_total)),
        }
    }

    fn value(&self, f: Figure) -> u64 {
        if !self.up {
            return 0;
        }
        match f {
            Figure::Load => self.load,
            Figure::Memory => self.memory,
            Figure::Speed => self.speed,
            Figure::Procs => self.procs,
        }
    }

    fn text(&self, f: Figure) -> String {
        if !self.up {
            return "down".into();
        }
        match f {
            Figure::Load => self.load_text.clone(),
            Figure::Memory => self.memory_text.clone(),
            Figure::Speed => self.speed.to_string(),
            Figure::Procs => self.procs.to_string(),
        }
    }
}

/// The samples of each node, by name, newest last.
#[derive(Default)]
struct History {
    nodes: BTreeMap<String, VecDeque<Sample>>,
}

/// Samples kept per node: ten minutes at one a second.
const KEEP: usize = 600;

impl History {
    fn add(&mut self, samples: Vec<(String, Sample)>) {
        for (name, s) in samples {
            let h = self.nodes.entry(name).or_default();
            if h.len() == KEEP {
                h.pop_front();
            }
            h.push_back(s);
        }
    }
}

fn fetch(target: &Target) -> Result<Vec<(String, Sample)>, String> {
    let nodes = crate::nodes::rows(target).map_err(|e| format!("{e:#}"))?;
    // Processes running on each node, whatever their home; a node that does not answer
    // is missing from the count, not from the bars.
    let procs = crate::ps::cluster_processes(target).map(|c| c.rows).unwrap_or_default();
    let mut samples: Vec<(String, Sample)> = nodes
        .iter()
        .map(|n| {
            let here = procs.iter().filter(|p| p.where_ == n.name).count() as u64;
            (n.name.clone(), Sample::of(n, here))
        })
        .collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(samples)
}

/// One line with every figure of every node (the plain mode).
fn line(samples: &[(String, Sample)]) -> String {
    let parts: Vec<String> = samples
        .iter()
        .map(|(name, s)| {
            if s.up {
                format!("{name} load {} ({}%) mem {}% speed {} procs {}", s.load_text, s.load, s.memory, s.speed, s.procs)
            } else {
                format!("{name} down")
            }
        })
        .collect();
    parts.join(" | ")
}

pub fn run(target: Target, args: &MonArgs) -> Result<i32> {
    let poller = Poller::start(Duration::from_secs_f64(args.delay), move || fetch(&target));
    let mut done = 0;
    if !std::io::stdout().is_terminal() {
        loop {
            match poller.next(Duration::from_secs(30)) {
                Some(Ok(samples)) => println!("{}", line(&samples)),
                Some(Err(e)) => eprintln!("herd mon: {e}"),
                None => eprintln!("herd mon: herdd has not answered for 30 s"),
            }
            done += 1;
            if args.iterations.is_some_and(|n| done >= n) {
                return Ok(0);
            }
        }
    }
    let mut screen = tui::Screen::open()?;
    let mut history = History::default();
    let mut figure = args.view;
    let mut lines = false;
    let mut error: Option<String> = None;
    loop {
        if let Some(answer) = poller.latest() {
            match answer {
                Ok(samples) => {
                    history.add(samples);
                    error = None;
                }
                Err(e) => error = Some(e),
            }
            done += 1;
        }
        screen.terminal.draw(|f| draw(f, &history, figure, lines, error.as_deref()))?;
        if args.iterations.is_some_and(|n| done >= n) {
            return Ok(0);
        }
        let Some(k) = tui::key(Duration::from_millis(100))? else { continue };
        if tui::is_quit(&k) {
            return Ok(0);
        }
        match k.code {
            KeyCode::Char('l') => figure = Figure::Load,
            KeyCode::Char('m') => figure = Figure::Memory,
            KeyCode::Char('s') => figure = Figure::Speed,
            KeyCode::Char('p') => figure = Figure::Procs,
            KeyCode::Char('h') => lines = !lines,
            _ => {}
        }
    }
}

fn draw(f: &mut Frame, history: &History, figure: Figure, lines: bool, error: Option<&str>) {
    let [head, body, foot] = Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    let up = history.nodes.values().filter(|h| h.back().is_some_and(|s| s.up)).count();
    let mut title = format!("herd mon  {} of {} nodes up  {}", up, history.nodes.len(), figure.title());
    if let Some(e) = error {
        title += &format!("  herdd: {e}");
    }
    f.render_widget(Paragraph::new(Line::from(title).bold()), head);
    // Bars and lines share a scale: 100 % for load and memory (more when loaded beyond
    // the CPUs), the largest value otherwise.
    let newest = |h: &VecDeque<Sample>| h.back().map_or(0, |s| s.value(figure));
    let most = history.nodes.values().flat_map(|h| h.iter().map(|s| s.value(figure))).max().unwrap_or(0);
    let scale = match figure {
        Figure::Load | Figure::Memory => most.max(100),
        _ => most.max(1),
    };
    if lines {
        let n = history.nodes.len().max(1) as u16;
        let rows = Layout::vertical(vec![Constraint::Ratio(1, u32::from(n)); n as usize]).split(body);
        for ((name, h), area) in history.nodes.iter().zip(rows.iter()) {
            let data: Vec<u64> = h.iter().map(|s| s.value(figure)).collect();
            // The newest samples that fit, right-aligned.
            let width = area.width.saturating_sub(2) as usize;
            let data = &data[data.len().saturating_sub(width)..];
            let label = format!(" {name}: {} ", h.back().map(|s| s.text(figure)).unwrap_or_default());
            f.render_widget(Sparkline::default().block(Block::bordered().title(label)).data(data).max(scale), *area);
        }
    } else {
        let count = history.nodes.len().max(1) as u16;
        let width = (body.width.saturating_sub(2) / count).saturating_sub(1).clamp(3, 12);
        let bars: Vec<Bar> = history
            .nodes
            .iter()
            .map(|(name, h)| {
                let s = h.back();
                Bar::new(newest(h)).label(Line::from(name.clone())).text_value(s.map(|s| s.text(figure)).unwrap_or_default())
            })
            .collect();
        let chart = BarChart::default()
            .block(Block::bordered())
            .data(BarGroup::default().bars(&bars))
            .bar_width(width)
            .bar_gap(1)
            .max(scale)
            .value_style(Style::new().reversed());
        f.render_widget(chart, body);
    }
    let keys = "l load  m memory  s speed  p processes  h history/bars  q quit";
    f.render_widget(Paragraph::new(keys).style(Style::new().reversed()), foot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str, load: f32, cpus: u32) -> NodeRow {
        NodeRow {
            name: name.into(),
            address: "10.0.0.1:4700".into(),
            state: state.into(),
            cpus,
            speed: 12000,
            load,
            mem_free: 3 << 30,
            mem_total: 4 << 30,
            is_self: false,
            boot: 0,
            info_age_secs: None,
            kernel: None,
            version: None,
            status: Default::default(),
            shared: Vec::new(),
            shared_with_this_node: Vec::new(),
        }
    }

    #[test]
    fn figures_of_a_node() {
        let s = Sample::of(&node("n1", "up", 1.5, 2), 3);
        assert_eq!((s.load, s.memory, s.speed, s.procs), (75, 25, 12000, 3));
        assert_eq!(s.text(Figure::Load), "1.50/2");
        assert_eq!(s.text(Figure::Memory), "1.0G/4.0G");
        let down = Sample::of(&node("n2", "down", 1.0, 1), 0);
        assert_eq!((down.value(Figure::Load), down.text(Figure::Speed)), (0, "down".into()));
        let blocked = Sample::of(&node("n3", "blocked", 1.0, 1), 0);
        assert_eq!(blocked.value(Figure::Load), 100, "blocked is up");
        assert_eq!(line(&[("n1".into(), s), ("n2".into(), down)]), "n1 load 1.50/2 (75%) mem 25% speed 12000 procs 3 | n2 down");
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        for i in 0..KEEP + 5 {
            h.add(vec![("n1".into(), Sample::of(&node("n1", "up", i as f32, 1), 0))]);
        }
        let n1 = &h.nodes["n1"];
        assert_eq!(n1.len(), KEEP);
        assert_eq!(n1.front().unwrap().load, 500, "the oldest went first");
    }
}
