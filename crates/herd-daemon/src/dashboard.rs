//! The web dashboard's state (openMosixview today): one-time login links, browser
//! sessions, the load and memory history of every node, and the view pushed to every open
//! page (server-sent events, one JSON document a second while anyone watches).
//!
//! Looking is open to every local user, as the control socket is. Acting needs a session:
//! `herd dashboard` asks herdd on the control socket (which knows the caller's uid from
//! SO_PEERCRED) for a login link with a one-time token; opening it gives the browser a
//! session cookie (HttpOnly, SameSite=Strict) for that uid and, to the page, a CSRF token
//! that every state-changing request must carry in a header. The HTTP side is in
//! [`crate::http`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::control::{ClusterProcesses, NodeRow};
use crate::daemon::Shared;

/// How long a login link works (once).
pub const LOGIN_VALID: Duration = Duration::from_secs(300);
/// How long a browser session lasts.
pub const SESSION_VALID: Duration = Duration::from_secs(12 * 3600);
/// History: a sample every 5 s, ten minutes of them.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 120;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub uid: u32,
    /// Sent back by the page in `X-Herd-CSRF` with every action.
    pub csrf: String,
    expires: Instant,
}

/// One node's figures at one sample.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Seconds before the view was made.
    pub ago: f64,
    /// Load per CPU.
    pub load: f32,
    /// Memory in use, fraction.
    pub mem: f32,
    #[serde(skip)]
    at: Instant,
}

/// What every page gets each second.
#[derive(Serialize)]
struct View<'a> {
    /// The node serving the page.
    node: &'a str,
    nodes: &'a [NodeRow],
    processes: &'a ClusterProcesses,
    history: HashMap<&'a str, Vec<Point>>,
}

#[derive(Default)]
pub struct Dashboard {
    logins: Mutex<HashMap<String, (u32, Instant)>>,
    sessions: Mutex<HashMap<String, Session>>,
    history: Mutex<HashMap<String, VecDeque<Point>>>,
    view: OnceView,
}

/// The latest view, for every page that watches.
struct OnceView(watch::Sender<Arc<String>>);

impl Default for OnceView {
    fn default() -> Self {
        OnceView(watch::channel(Arc::new(String::new())).0)
    }
}

/// 128 random bits, as hex.
fn secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Dashboard {
    /// A one-time login token for `uid` (`herd dashboard`).
    pub fn login_token(&self, uid: u32) -> String {
        let token = secret();
        let mut logins = self.logins.lock().expect("logins");
        let now = Instant::now();
        logins.retain(|_, (_, until)| *until > now);
        logins.insert(token.clone(), (uid, now + LOGIN_VALID));
        token
    }

    /// Redeems a login token (once): a new session's id and the session.
    pub fn redeem(&self, token: &str) -> Option<(String, Session)> {
        let (uid, until) = self.logins.lock().expect("logins").remove(token)?;
        let now = Instant::now();
        if until <= now {
            return None;
        }
        let id = secret();
        let session = Session { uid, csrf: secret(), expires: now + SESSION_VALID };
        let mut sessions = self.sessions.lock().expect("sessions");
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The session with this id, if it is still valid.
    pub fn session(&self, id: &str) -> Option<Session> {
        self.sessions.lock().expect("sessions").get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session (the page's "log out").
    pub fn end(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// Pages follow this: the newest view, as JSON.
    pub fn watch(&self) -> watch::Receiver<Arc<String>> {
        self.view.0.subscribe()
    }

    fn sample(&self, nodes: &[NodeRow]) {
        let now = Instant::now();
        let mut history = self.history.lock().expect("history");
        for n in nodes.iter().filter(|n| n.state == "up" || n.state == "blocked") {
            let h = history.entry(n.name.clone()).or_default();
            if h.back().is_some_and(|p| now.duration_since(p.at) < SAMPLE_EVERY) {
                continue;
            }
            if h.len() == SAMPLES {
                h.pop_front();
            }
            let load = if n.cpus > 0 { n.load / n.cpus as f32 } else { 0.0 };
            let mem = 1.0 - n.mem_free as f32 / n.mem_total.max(1) as f32;
            h.push_back(Point { ago: 0.0, load, mem, at: now });
        }
    }

    fn render(&self, node: &str, nodes: &[NodeRow], processes: &ClusterProcesses) -> String {
        let history = self.history.lock().expect("history");
        let now = Instant::now();
        let history = history
            .iter()
            .map(|(name, h)| (name.as_str(), h.iter().map(|p| Point { ago: now.duration_since(p.at).as_secs_f64(), ..*p }).collect()))
            .collect();
        serde_json::to_string(&View { node, nodes, processes, history }).expect("views serialize")
    }
}

/// Samples the nodes' history always; while a page watches, makes the view each second
/// (asking every node for its processes once, whatever the number of pages).
pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = shared.rows();
        let d = &shared.dashboard;
        d.sample(&nodes);
        if d.view.0.receiver_count() == 0 {
            continue;
        }
        let processes = crate::server::cluster_processes(&shared).await;
        let view = d.render(&shared.config.name, &nodes, &processes);
        d.view.0.send_replace(Arc::new(view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_works_once_and_makes_a_session() {
        let d = Dashboard::default();
        let token = d.login_token(1000);
        assert_eq!(token.len(), 32);
        let (id, s) = d.redeem(&token).expect("a fresh token works");
        assert_eq!(s.uid, 1000);
        assert_ne!(s.csrf, id);
        assert!(d.redeem(&token).is_none(), "only once");
        assert!(d.redeem("0123").is_none());
        assert_eq!(d.session(&id), Some(s));
        assert!(d.session(&token).is_none(), "the token is not a session");
        d.end(&id);
        assert!(d.session(&id).is_none());
    }

    #[test]
    fn expired_logins_do_not_work() {
        let d = Dashboard::default();
        let token = d.login_token(7);
        d.logins.lock().unwrap().get_mut(&token).unwrap().1 = Instant::now() - Duration::from_secs(1);
        assert!(d.redeem(&token).is_none());
    }
}
