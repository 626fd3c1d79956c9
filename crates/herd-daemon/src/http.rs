//! HTTP on localhost: Prometheus `/metrics`, `/api/nodes`, `/api/status`,
//! `/api/processes`, and the web dashboard (`/`, see [`crate::dashboard`]).
//!
//! Every request must name the server by an IP address or `localhost` in its Host header
//! (a page of another site that points a name of its own at 127.0.0.1 cannot read or act:
//! DNS rebinding). Looking is open; acting (`POST /api/act`) needs a session cookie from
//! a `herd dashboard` login link, the session's CSRF token in `X-Herd-CSRF`, a JSON body,
//! and, when the browser sends one, an Origin that is this server.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::control::{CtlOp, Request as ControlRequest};
use crate::daemon::Shared;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/nodes", get(nodes))
        .route("/api/status", get(status))
        .route("/api/processes", get(processes))
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/login", get(login))
        .route("/api/whoami", get(whoami))
        .route("/api/events", get(events))
        .route("/api/act", post(act))
        .layer(axum::middleware::from_fn(local_names_only))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("HTTP server stopped: {e}");
    }
}

async fn nodes(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.rows())
}

async fn processes(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(crate::migrate::rows(&shared))
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(crate::server::status(&shared))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Renders the metrics from the current snapshot; node gauges are built per scrape
/// because nodes come and go.
pub fn render(shared: &Shared) -> String {
    let mut reg = Registry::with_prefix("herd");
    let rows = shared.rows();
    let up = Family::<NodeLabels, Gauge>::default();
    let load = Family::<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let cpus = Family::<NodeLabels, Gauge>::default();
    let speed = Family::<NodeLabels, Gauge>::default();
    let mem_free = Family::<NodeLabels, Gauge>::default();
    let mem_total = Family::<NodeLabels, Gauge>::default();
    let by_state = Family::<StateLabels, Gauge>::default();
    for r in &rows {
        let l = NodeLabels { node: r.name.clone(), address: r.address.clone() };
        up.get_or_create(&l).set(i64::from(r.state == "up" || r.state == "blocked"));
        load.get_or_create(&l).set(f64::from(r.load));
        cpus.get_or_create(&l).set(i64::from(r.cpus));
        speed.get_or_create(&l).set(i64::from(r.speed));
        mem_free.get_or_create(&l).set(r.mem_free as i64);
        mem_total.get_or_create(&l).set(r.mem_total as i64);
        by_state.get_or_create(&StateLabels { state: r.state.clone() }).inc();
    }
    reg.register("node_up", "Whether the node is up (1) as this node sees it", up);
    reg.register("node_load", "Runnable processes on the node, smoothed", load);
    reg.register("node_cpus", "CPUs the node may use", cpus);
    reg.register("node_speed", "Relative CPU speed (10000 = reference)", speed);
    reg.register("node_memory_free_bytes", "Available memory", mem_free);
    reg.register("node_memory_total_bytes", "Total memory", mem_total);
    reg.register("cluster_nodes", "Nodes known, by state", by_state);
    let c = &shared.counters;
    reg.register("gossip_sent_bytes", "Sealed gossip bytes sent", c.gossip_sent_bytes.clone());
    reg.register("gossip_sent_packets", "Gossip datagrams sent", c.gossip_sent.clone());
    reg.register("gossip_received_packets", "Gossip datagrams received", c.gossip_received.clone());
    reg.register("gossip_forged_packets", "Gossip datagrams that failed authentication", c.gossip_forged.clone());
    reg.register("gossip_malformed_packets", "Authenticated gossip that did not decode", c.gossip_malformed.clone());
    reg.register("beacons_sent", "Discovery beacons sent", c.beacons_sent.clone());
    reg.register("beacons_heard", "Valid discovery beacons heard", c.beacons_heard.clone());
    reg.register("beacons_rejected", "Beacons that failed authentication or were stale", c.beacons_rejected.clone());
    reg.register("streams_accepted", "Node streams whose handshake succeeded", c.streams_accepted.clone());
    reg.register("streams_failed", "Node streams refused or broken", c.streams_failed.clone());
    reg.register("migrations", "Completed moves of this node's processes", c.migrations.clone());
    reg.register("migrations_failed", "Moves that were refused or failed (the process ran on where it was)", c.migrations_failed.clone());
    reg.register("migrated_bytes", "Image bytes moved for this node's processes", c.migrated_bytes.clone());
    reg.register("forwarded_calls", "System calls of remote processes served by their deputies here", c.forwarded_calls.clone());
    reg.register("forwarded_calls_native", "Of the forwarded calls, those herdd made itself on the deputy's open file (no ptrace)", c.forwarded_calls_native.clone());
    reg.register("guests_received", "Processes of other nodes that arrived here", c.guests_received.clone());
    reg.register("balancer_moves", "Moves the balancer started (load, memory ushering, I/O home)", c.balancer_moves.clone());
    reg.register("processes_lost", "Processes of this node lost with the node they ran on", c.processes_lost.clone());
    reg.register("processes_resumed", "Processes of this node resumed from a checkpoint after the node they ran on was lost", c.processes_resumed.clone());
    reg.register("checkpoints", "Checkpoints taken of this node's processes away", c.checkpoints.clone());
    reg.register("checkpoints_failed", "Checkpoints that failed (the process ran on)", c.checkpoints_failed.clone());
    reg.register("replay_divergences", "Resumed processes whose replay differed from their first run", c.replay_divergences.clone());
    reg.register("migration_freeze_seconds", "How long each move stopped the process", c.freeze_seconds.clone());
    reg.register("migration_bytes", "Bytes each move sent (post-copy: with the pages that followed)", c.move_bytes.clone());
    reg.register(
        "forwarded_call_seconds",
        "Guests on this node: each forwarded call, from the call to home's answer in the process",
        c.call_seconds.clone(),
    );
    let (all, away) = crate::migrate::counts(shared);
    let migratable = Gauge::<i64>::default();
    migratable.set(all as i64);
    let remote = Gauge::<i64>::default();
    remote.set(away as i64);
    reg.register("processes_migratable", "Migratable processes whose home is this node", migratable);
    reg.register("processes_remote", "Of those, how many run on other nodes now", remote);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], render(&shared))
}

/// Whether a Host header names this server the way only a local client would: an IP
/// address or `localhost`, with or without a port.
pub fn host_is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

async fn local_names_only(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host_is_local(host) {
        return (StatusCode::MISDIRECTED_REQUEST, "herdd answers only to its IP address or localhost\n").into_response();
    }
    next.run(request).await
}

/// Pages: no framing by other sites, scripts only from here.
const PAGE_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
];

async fn index() -> impl IntoResponse {
    (PAGE_HEADERS, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("dashboard/index.html"))
}

async fn script() -> impl IntoResponse {
    (PAGE_HEADERS, [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("dashboard/dashboard.js"))
}

const COOKIE: &str = "herd_session";

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

#[derive(Deserialize)]
struct LoginQuery {
    token: String,
}

/// A `herd dashboard` link: redeems its one-time token for a session cookie.
async fn login(State(shared): State<Arc<Shared>>, Query(q): Query<LoginQuery>) -> Response {
    match shared.dashboard.redeem(&q.token) {
        Some((id, s)) => {
            tracing::info!(uid = s.uid, "dashboard login");
            let max_age = crate::dashboard::SESSION_VALID.as_secs();
            let set = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
            ([(header::SET_COOKIE, set)], Redirect::to("/")).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link has been used or has expired: run `herd dashboard` again for a new one.\n",
        )
            .into_response(),
    }
}

/// Who the browser acts as, and the CSRF token its actions carry; `user: null` when it
/// only looks.
async fn whoami(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let session = cookie(&headers).and_then(|id| shared.dashboard.session(&id));
    Json(match session {
        Some(s) => {
            let user = nix::unistd::User::from_uid(s.uid.into()).ok().flatten().map_or_else(|| s.uid.to_string(), |u| u.name);
            serde_json::json!({ "user": user, "uid": s.uid, "csrf": s.csrf })
        }
        None => serde_json::json!({ "user": null }),
    })
}

/// The view, pushed once a second while the page is open.
async fn events(State(shared): State<Arc<Shared>>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let views = shared.dashboard.watch();
    let stream = futures_util::stream::unfold(views, |mut views| async move {
        // The next view made (a view kept from before anyone watched may be old).
        views.changed().await.ok()?;
        let view = views.borrow_and_update().clone();
        Some((Ok(Event::default().data(view.as_str())), views))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What the page asks for.
#[derive(Debug, Deserialize)]
#[serde(tag = "act", rename_all = "snake_case")]
enum Act {
    Move { home: String, pid: i32, target: String },
    Lock { home: String, pid: i32, lock: bool },
    /// This node's flags (root).
    Ctl { op: CtlOp },
    Logout,
}

fn answer(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "ok": status.is_success(), "message": message }))).into_response()
}

/// Why a state-changing request is refused before anything is done: a foreign Origin, not
/// JSON (what a cross-site form sends), no session, or not the session's CSRF token.
pub fn refuse_act(headers: &HeaderMap, session: Option<&crate::dashboard::Session>) -> Option<&'static str> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(origin) = get(header::ORIGIN) {
        if origin.strip_prefix("http://") != get(header::HOST) {
            return Some("a request from another site");
        }
    }
    if !get(header::CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json")) {
        return Some("not a JSON request");
    }
    let Some(session) = session else {
        return Some("not logged in: open the link that `herd dashboard` prints");
    };
    if headers.get("x-herd-csrf").and_then(|v| v.to_str().ok()) != Some(session.csrf.as_str()) {
        return Some("no valid CSRF token");
    }
    None
}

async fn act(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let id = cookie(&headers);
    let session = id.as_deref().and_then(|id| shared.dashboard.session(id));
    if let Some(why) = refuse_act(&headers, session.as_ref()) {
        return answer(StatusCode::FORBIDDEN, format!("refused: {why}"));
    }
    let session = session.expect("checked");
    let act: Act = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return answer(StatusCode::BAD_REQUEST, format!("not an action: {e}")),
    };
    tracing::info!(uid = session.uid, "dashboard: {act:?}");
    let request = match act {
        Act::Logout => {
            shared.dashboard.end(id.as_deref().unwrap_or_default());
            return answer(StatusCode::OK, "logged out".into());
        }
        Act::Move { home, pid, target } => ControlRequest::OnNode { node: home, ask: Box::new(ControlRequest::Migrate { pid, target, mode: None }) },
        Act::Lock { home, pid, lock } => ControlRequest::OnNode { node: home, ask: Box::new(ControlRequest::Lock { pid, lock }) },
        Act::Ctl { op } => ControlRequest::Ctl { op },
    };
    let what = match &request {
        ControlRequest::OnNode { ask, .. } => match **ask {
            ControlRequest::Migrate { pid, ref target, .. } => format!("moved {pid} to {target}"),
            ControlRequest::Lock { pid, lock: true } => format!("locked {pid}"),
            ControlRequest::Lock { pid, .. } => format!("unlocked {pid}"),
            _ => "done".into(),
        },
        _ => "done".into(),
    };
    match crate::server::handle(request, session.uid, &shared).await {
        crate::control::Response::Migrated(m) => {
            answer(StatusCode::OK, format!("moved {} to {} ({}): stopped {:.1} ms", m.pid, m.node, m.mode, m.frozen_ms))
        }
        crate::control::Response::Ctl(done) => answer(StatusCode::OK, format!("{} is now {:?}", shared.config.name, done.status)),
        crate::control::Response::Error(e) => {
            let status = if e.kind == crate::control::ErrorKind::PermissionDenied { StatusCode::FORBIDDEN } else { StatusCode::CONFLICT };
            answer(status, e.message)
        }
        _ => answer(StatusCode::OK, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_local_names() {
        for ok in ["127.0.0.1:4780", "127.0.0.1", "localhost:4780", "LOCALHOST", "[::1]:4780", "10.47.0.1:4780"] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in ["", "evil.example:4780", "evil.example", "127.0.0.1.evil.example", "[::1", "localhost.evil:80"] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }

    #[test]
    fn acts_need_a_session_its_token_json_and_this_origin() {
        let session = crate::dashboard::Dashboard::default();
        let token = session.login_token(1000);
        let (id, s) = session.redeem(&token).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4780"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap());
        assert_eq!(cookie(&h), Some(id.clone()));
        assert_eq!(refuse_act(&h, Some(&s)), Some("no valid CSRF token"));
        h.insert("x-herd-csrf", HeaderValue::from_str(&s.csrf).unwrap());
        assert_eq!(refuse_act(&h, Some(&s)), None);
        assert!(refuse_act(&h, None).unwrap().starts_with("not logged in"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:4780"));
        assert_eq!(refuse_act(&h, Some(&s)), None, "its own page");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(refuse_act(&h, Some(&s)), Some("a request from another site"));
        h.remove(header::ORIGIN);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        assert_eq!(refuse_act(&h, Some(&s)), Some("not a JSON request"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-herd-csrf", HeaderValue::from_static("guess"));
        assert_eq!(refuse_act(&h, Some(&s)), Some("no valid CSRF token"));
    }
}
