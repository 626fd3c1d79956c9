//! The control socket: typed requests from the `herd` CLI, checked against the
//! caller's credentials (SO_PEERCRED).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use crate::control::{ClusterProcesses, ControlError, CtlDone, CtlOp, DaemonStatus, ErrorKind, Request, Response, Unanswered, MAX_MESSAGE};
use crate::daemon::{Command, Shared};

pub async fn serve_control(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!("control connection without credentials: {e}");
            return;
        }
    };
    loop {
        let body = match herd_wire::read_frame_async(&mut stream, MAX_MESSAGE).await {
            Ok(b) => b,
            Err(herd_wire::FrameError::Closed) => return,
            Err(e) => {
                tracing::debug!("control connection (uid {uid}): {e}");
                return;
            }
        };
        let response = match serde_json::from_slice::<Request>(&body) {
            Ok(req) => handle(req, uid, &shared).await,
            Err(e) => error(ErrorKind::BadRequest, format!("not a request this herdd understands: {e}")),
        };
        let reply = serde_json::to_vec(&response).expect("responses serialize");
        if herd_wire::write_frame_async(&mut stream, &reply, MAX_MESSAGE).await.is_err() {
            return;
        }
    }
}

fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error(ControlError { kind, message })
}

/// Root and the user herdd runs as may change the node; everyone may look.
pub fn allowed(request: &Request, uid: u32, daemon_euid: u32) -> bool {
    !request.is_privileged() || uid == 0 || uid == daemon_euid
}

/// Answers `request` from user `uid` (of this node, or of the node that passed it on).
pub async fn handle(request: Request, uid: u32, shared: &Arc<Shared>) -> Response {
    if !allowed(&request, uid, shared.euid) {
        tracing::info!("refused {request:?} from uid {uid}");
        return error(
            ErrorKind::PermissionDenied,
            format!("permission denied: only root may change this node (request {request:?} from uid {uid})"),
        );
    }
    let command = match request {
        Request::Status => return Response::Status(Box::new(status(shared))),
        Request::Nodes => return Response::Nodes(shared.rows()),
        Request::Ctl { op } => return ctl(shared, op).await,
        Request::Lock { pid, lock } => {
            return match crate::migrate::set_lock(shared, pid, lock, uid) {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e),
            }
        }
        Request::Shutdown => Command::Shutdown,
        Request::Processes => return Response::Processes(crate::migrate::rows(shared)),
        Request::ClusterProcesses => return Response::ClusterProcesses(cluster_processes(shared).await),
        Request::Signal { pid, signal } => {
            return match crate::migrate::signal(shared, pid, signal, uid) {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e),
            }
        }
        Request::OnNode { node, ask } => return on_node(shared, &node, *ask, uid).await,
        Request::Failpoint { name, actions } => {
            return match herd_migrate::failpoint::set(&name, &actions) {
                Ok(()) => {
                    tracing::warn!("failpoint {name} set to {actions:?}");
                    Response::Done
                }
                Err(e) => error(ErrorKind::BadRequest, e),
            }
        }
        Request::DashboardLogin => {
            let Some(mut addr) = shared.http else {
                return error(ErrorKind::BadRequest, "herdd serves no HTTP here (`http = \"off\"` in its configuration)".into());
            };
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let token = shared.dashboard.login_token(uid);
            tracing::info!(uid, "dashboard login link made");
            let url = format!("http://{addr}/login?token={token}");
            return Response::DashboardLogin { url, valid_secs: crate::dashboard::LOGIN_VALID.as_secs() };
        }
        Request::Adopt { pid, lock, checkpoint_every } => {
            let every = match checkpoint_every {
                Some(s) if !(1.0..=1e9).contains(&s) => {
                    return error(ErrorKind::BadRequest, format!("a checkpoint interval of {s} s is out of range (1 s or more)"))
                }
                s => s.map(std::time::Duration::from_secs_f64),
            };
            return match crate::migrate::adopt(shared, pid, lock, every, uid) {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e),
            }
        }
        Request::Native { pid } => {
            return match crate::migrate::make_native(shared, pid, uid).await {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e),
            }
        }
        Request::Act { pid, verb } => {
            return match crate::migrate::act(shared, pid, verb, uid).await {
                Ok(Some(c)) => Response::Checkpointed(c),
                Ok(None) => Response::Done,
                Err(e) => Response::Error(e),
            }
        }
        Request::Migrate { pid, target, mode } => {
            let target = crate::migrate::Target::parse(&target, &shared.config.name);
            return match crate::migrate::migrate(shared, pid, target, mode, uid).await {
                Ok(m) => Response::Migrated(m),
                Err(e) => Response::Error(e),
            }
        }
    };
    match shared.commands.send(command).await {
        Ok(()) => Response::Done,
        Err(_) => error(ErrorKind::Internal, "herdd is shutting down".into()),
    }
}

/// The up peers this node knows by name, with their stream addresses.
fn peers(shared: &Shared) -> Vec<(String, std::net::SocketAddr)> {
    let snap = shared.snapshot.borrow();
    snap.nodes
        .iter()
        .filter(|v| !v.is_self && v.state != herd_cluster::NodeState::Down)
        .filter_map(|v| v.info.as_ref().map(|i| (i.name.clone(), v.id.addr)))
        .collect()
}

/// This node's processes and every up peer's, asked at once; a peer that does not
/// answer within [`crate::peer::ANSWER_WITHIN`] is listed as unanswered.
pub(crate) async fn cluster_processes(shared: &Arc<Shared>) -> ClusterProcesses {
    let mut asks = tokio::task::JoinSet::new();
    for (name, addr) in peers(shared) {
        let shared = shared.clone();
        asks.spawn(async move {
            let r = crate::peer::processes(&shared, &name, addr).await;
            (name, r)
        });
    }
    let mut out = ClusterProcesses { rows: crate::migrate::rows(shared), unanswered: Vec::new() };
    while let Some(done) = asks.join_next().await {
        let Ok((node, answer)) = done else { continue };
        match answer {
            Ok(Response::Processes(rows)) => out.rows.extend(rows),
            Ok(Response::Error(e)) => out.unanswered.push(Unanswered { node, why: e.message }),
            Ok(other) => out.unanswered.push(Unanswered { node, why: format!("unexpected answer {other:?}") }),
            Err(why) => out.unanswered.push(Unanswered { node, why }),
        }
    }
    out.rows.sort_by(|a, b| (&a.home, a.pid).cmp(&(&b.home, b.pid)));
    out.unanswered.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// A request for node `node`: answered here when it is this node, else passed on to it
/// for `uid` (only requests that act on one process; the node checks them itself).
async fn on_node(shared: &Arc<Shared>, node: &str, request: Request, uid: u32) -> Response {
    if !request.is_relayable() {
        return error(ErrorKind::BadRequest, format!("{request:?} cannot be passed to another node"));
    }
    if node == shared.config.name {
        return Box::pin(handle(request, uid, shared)).await;
    }
    let Some((name, addr)) = peers(shared).into_iter().find(|(name, _)| name == node) else {
        return error(ErrorKind::NoSuchProcess, format!("no node {node} is up in this cluster (see `herd nodes`)"));
    };
    // A move answers when it is complete, as on the control socket.
    let within = if matches!(request, Request::Migrate { .. }) { Duration::from_secs(600) } else { crate::peer::ANSWER_WITHIN };
    match crate::peer::control(shared, &name, addr, uid, &request, within).await {
        Ok(r) => r,
        Err(why) => error(ErrorKind::Failed, why),
    }
}

/// `herd ctl`: the gossip loop changes the node's flags (it owns them: two ctls never
/// undo each other) and publishes them; then expel and bring send processes home — with
/// the node already blocked (expel) or lstay (bring), so nothing slips past.
pub(crate) async fn ctl(shared: &Arc<Shared>, op: CtlOp) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shared.commands.send(Command::Ctl { op, reply }).await.is_err() {
        return error(ErrorKind::Internal, "herdd is shutting down".into());
    }
    let Ok(status) = answer.await else {
        return error(ErrorKind::Internal, "herdd is shutting down".into());
    };
    tracing::info!("herd ctl {op:?}");
    let moving = match op {
        CtlOp::Expel => crate::migrate::expel(shared).await,
        CtlOp::Bring => crate::migrate::bring(shared),
        _ => 0,
    };
    Response::Ctl(CtlDone { status, moving })
}

pub fn status(shared: &Shared) -> DaemonStatus {
    let snap = shared.snapshot.borrow();
    let peers = snap.nodes.iter().filter(|n| !n.is_self);
    DaemonStatus {
        name: shared.config.name.clone(),
        version: crate::VERSION.into(),
        pid: std::process::id(),
        address: snap.id.addr.to_string(),
        key_fingerprint: shared.fingerprint.clone(),
        uptime_secs: shared.started.elapsed().as_secs(),
        peers_up: peers.clone().filter(|n| n.state != herd_cluster::NodeState::Down).count(),
        peers_known: peers.count(),
        status: snap.status,
        discovery: shared.config.discovery,
        config: shared.config.source.as_ref().map(|p| p.display().to_string()),
        http: shared.http.map(|a| a.to_string()),
        counters: {
            let c = &shared.counters;
            crate::control::Traffic {
                gossip_sent_bytes: c.gossip_sent_bytes.get(),
                gossip_sent_packets: c.gossip_sent.get(),
                gossip_received_packets: c.gossip_received.get(),
                gossip_forged: c.gossip_forged.get(),
                gossip_malformed: c.gossip_malformed.get(),
                beacons_sent: c.beacons_sent.get(),
                beacons_heard: c.beacons_heard.get(),
                beacons_rejected: c.beacons_rejected.get(),
                streams_accepted: c.streams_accepted.get(),
                streams_failed: c.streams_failed.get(),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_daemon_user_change_the_node() {
        assert!(allowed(&Request::Nodes, 1000, 0));
        assert!(allowed(&Request::Status, 1000, 0));
        assert!(!allowed(&Request::Shutdown, 1000, 0));
        assert!(!allowed(&Request::Ctl { op: CtlOp::Block }, 1000, 0));
        assert!(allowed(&Request::Shutdown, 0, 0));
        assert!(allowed(&Request::Ctl { op: CtlOp::Quiet }, 1000, 1000));
        // Per-process requests are checked per process, for everyone.
        assert!(allowed(&Request::Signal { pid: 1, signal: 15 }, 1000, 0));
        assert!(allowed(&Request::ClusterProcesses, 1000, 0));
    }

    #[test]
    fn only_per_process_requests_pass_between_nodes() {
        let migrate = Request::Migrate { pid: 4, target: "n2".into(), mode: None };
        for r in [migrate.clone(), Request::Lock { pid: 4, lock: true }, Request::Signal { pid: 4, signal: 9 }, Request::Processes] {
            assert!(r.is_relayable(), "{r:?}");
        }
        for r in [
            Request::Shutdown,
            Request::Ctl { op: CtlOp::Expel },
            Request::Adopt { pid: 4, lock: false, checkpoint_every: None },
            Request::Native { pid: 4 },
            Request::ClusterProcesses,
            Request::OnNode { node: "n3".into(), ask: Box::new(migrate.clone()) },
        ] {
            assert!(!r.is_relayable(), "{r:?}");
        }
        // The control socket's JSON, which also crosses node streams.
        let on = Request::OnNode { node: "n3".into(), ask: Box::new(migrate) };
        let json = serde_json::to_string(&on).unwrap();
        assert_eq!(json, r#"{"request":"on_node","node":"n3","ask":{"request":"migrate","pid":4,"target":"n2"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), on);
    }
}
