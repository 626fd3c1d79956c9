//! Node-to-node streams: Noise XXpsk3 over TCP on the gossip port. Every request
//! is the protocol version (`herd_migrate::proto::PROTOCOL_VERSION`) followed by
//! a [`PeerRequest`]: `Hello` (a greeting, answered), `Adopt` (a process
//! migrates here: the stream then carries it, see [`crate::migrate`]), or `Control`
//! (a control request another node passes on for one of its users, answered). A request
//! of another version, or one not understood, is answered with
//! `Refused(Refusal)`, whose encoding (tags 0, 0 for a version) every version
//! reads, and the stream is closed.

use std::sync::Arc;
use std::time::Duration;

use herd_wire::stream::{NodeKeypair, SecureStream};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::control::{ControlError, ErrorKind, Request, Response};
use crate::daemon::Shared;
use herd_migrate::proto::{self, Refusal};

/// How long a node waits for another's answer to a `Control` request that is not a
/// move (a move answers when it is complete).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Tags (variant indexes) are fixed: new requests go at the end.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Tag 0.
    Hello,
    /// Tag 1.
    Adopt(herd_migrate::proto::Adopt),
    /// Tag 2. A control request ([`crate::control::Request`] as JSON, the control
    /// socket's own encoding) made on the asking node by user `uid`: only requests that
    /// act on one process ([`Request::is_relayable`]) are served, checked against `uid`
    /// exactly as if that user had asked here. Answered with `Control`.
    Control { uid: u32, request: Vec<u8> },
}

/// Tag 0 (`Refused`) is fixed forever, as `ToHome::Refused`.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Tag 0.
    Refused(Refusal),
    /// Tag 1.
    Hello { name: String, version: String },
    /// Tag 2. The [`crate::control::Response`] to a `Control` request, as JSON.
    Control(Vec<u8>),
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, keypair: Arc<NodeKeypair>) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("stream accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small messages go at once (a guest's Accepted then Running, calls, pages asked
        // for): Nagle's wait for the peer's delayed ACK would hold the second for 40 ms.
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let keypair = keypair.clone();
        tokio::spawn(async move {
            let mut stream = match SecureStream::accept(tcp, &shared.key, &keypair).await {
                Ok(s) => s,
                Err(e) => {
                    shared.counters.streams_failed.inc();
                    tracing::warn!("stream from {from} refused: {e}");
                    return;
                }
            };
            shared.counters.streams_accepted.inc();
            loop {
                let msg = match stream.recv().await {
                    Ok(m) => m,
                    Err(herd_wire::StreamError::Closed) => return,
                    Err(e) => {
                        shared.counters.streams_failed.inc();
                        tracing::warn!("stream from {from}: {e}");
                        return;
                    }
                };
                let reply = match proto::decode_request::<PeerRequest>(&msg) {
                    Ok(PeerRequest::Adopt(adopt)) => {
                        crate::migrate::guest(stream, adopt, shared).await;
                        return;
                    }
                    Ok(PeerRequest::Hello) => PeerResponse::Hello { name: shared.config.name.clone(), version: crate::VERSION.into() },
                    Ok(PeerRequest::Control { uid, request }) => {
                        let response = match serde_json::from_slice::<Request>(&request) {
                            Ok(r) if r.is_relayable() => {
                                tracing::debug!("from {from}: {r:?} for uid {uid}");
                                crate::server::handle(r, uid, &shared).await
                            }
                            Ok(r) => Response::Error(ControlError {
                                kind: ErrorKind::PermissionDenied,
                                message: format!("{r:?} is not taken from another node"),
                            }),
                            Err(e) => Response::Error(ControlError {
                                kind: ErrorKind::BadRequest,
                                message: format!("not a request this herdd understands: {e}"),
                            }),
                        };
                        PeerResponse::Control(serde_json::to_vec(&response).expect("responses serialize"))
                    }
                    Err(refusal) => {
                        shared.counters.streams_failed.inc();
                        tracing::warn!("stream from {from} refused: {refusal}");
                        let _ = stream.send(&proto::encode(&PeerResponse::Refused(refusal))).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                };
                if stream.send(&proto::encode(&reply)).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Passes `request` to node `name` at `addr` for user `uid` and returns its answer
/// (a refusal there comes back as `Response::Error`). A node that cannot be reached,
/// does not answer within `within`, or answers garbage is an error saying so.
pub async fn control(shared: &Shared, name: &str, addr: std::net::SocketAddr, uid: u32, request: &Request, within: Duration) -> Result<Response, String> {
    let ask = async {
        let mut stream = open(shared, addr).await?;
        let r = ask(&mut stream, uid, request).await;
        let _ = stream.shutdown().await;
        r
    };
    match tokio::time::timeout(within, ask).await {
        Ok(r) => r.map_err(|why| format!("node {name} at {addr}: {why}")),
        Err(_) => Err(no_answer(name, addr, within)),
    }
}

fn no_answer(name: &str, addr: std::net::SocketAddr, within: Duration) -> String {
    format!("node {name} at {addr}: no answer within {:.0} s", within.as_secs_f64())
}

type Kept = Arc<tokio::sync::Mutex<Option<SecureStream<tokio::net::TcpStream>>>>;

/// A stream kept open to each other node for its process list: `herd top`, the
/// dashboard and `herd ps --all` ask every node for it every second, and a Noise
/// handshake each time cost both nodes more than the answer.
#[derive(Default)]
pub struct Views(std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, Kept>>);

/// Node `name`'s migratable processes ([`Request::Processes`], as root), asked on the
/// stream kept open to it; a new stream if there is none or it has broken (the other
/// node restarted). Errors as [`control`]'s.
pub async fn processes(shared: &Shared, name: &str, addr: std::net::SocketAddr) -> Result<Response, String> {
    let kept = shared.views.0.lock().expect("views lock").entry(addr).or_default().clone();
    // One question at a time on it.
    let mut held = kept.lock().await;
    let within = ANSWER_WITHIN;
    if let Some(mut stream) = held.take() {
        match tokio::time::timeout(within, ask(&mut stream, 0, &Request::Processes)).await {
            Ok(Ok(r)) => {
                *held = Some(stream);
                return Ok(r);
            }
            // Broken part way (not cancel safe): dropped.
            Err(_) => return Err(no_answer(name, addr, within)),
            Ok(Err(why)) => tracing::debug!("the stream kept to {name} at {addr}: {why}; a new one"),
        }
    }
    let fresh = async {
        let mut stream = open(shared, addr).await?;
        let r = ask(&mut stream, 0, &Request::Processes).await?;
        Ok::<_, String>((stream, r))
    };
    match tokio::time::timeout(within, fresh).await {
        Ok(Ok((stream, r))) => {
            *held = Some(stream);
            Ok(r)
        }
        Ok(Err(why)) => Err(format!("node {name} at {addr}: {why}")),
        Err(_) => Err(no_answer(name, addr, within)),
    }
}

/// A stream opened ahead to another node, or one being opened.
enum Spare {
    Opening,
    Ready(Box<SecureStream<tokio::net::TcpStream>>),
}

/// A stream opened ahead to each node this node's processes fork on, for the next child
/// forked there (`Adopt::fork_of`): its TCP connection and Noise handshake (about 0.6 ms,
/// the largest share of a fork away) are made while nothing waits for them.
#[derive(Default)]
pub struct Spares(std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, Spare>>);

impl Spares {
    /// The stream opened ahead to `addr`, if one is ready; the next one is opened
    /// meanwhile (at most one at a time). One kept too long may have been closed by the
    /// other end (it restarted): its first use fails, and the caller opens another.
    pub fn take(shared: &Arc<Shared>, addr: std::net::SocketAddr) -> Option<SecureStream<tokio::net::TcpStream>> {
        let mut spares = shared.spares.0.lock().expect("spares lock");
        let (ready, refill) = match spares.remove(&addr) {
            Some(Spare::Ready(s)) => (Some(*s), true),
            Some(Spare::Opening) => (None, false),
            None => (None, true),
        };
        spares.insert(addr, Spare::Opening);
        drop(spares);
        if refill {
            let shared = shared.clone();
            tokio::spawn(async move {
                let opened = tokio::time::timeout(Duration::from_secs(3), open(&shared, addr)).await;
                let mut spares = shared.spares.0.lock().expect("spares lock");
                match opened {
                    Ok(Ok(s)) => {
                        spares.insert(addr, Spare::Ready(Box::new(s)));
                    }
                    _ => {
                        spares.remove(&addr);
                    }
                }
            });
        }
        ready
    }
}

/// A new stream to the node at `addr`.
pub async fn open(shared: &Shared, addr: std::net::SocketAddr) -> Result<SecureStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    SecureStream::connect(tcp, &shared.key, &shared.keypair).await.map_err(|e| e.to_string())
}

/// One `Control` request on `stream`, and its answer.
async fn ask(stream: &mut SecureStream<tokio::net::TcpStream>, uid: u32, request: &Request) -> Result<Response, String> {
    let body = serde_json::to_vec(request).expect("requests serialize");
    stream.send(&proto::encode_request(&PeerRequest::Control { uid, request: body })).await.map_err(|e| e.to_string())?;
    let reply = stream.recv().await.map_err(|e| e.to_string())?;
    match proto::decode::<PeerResponse>(&reply) {
        Ok(PeerResponse::Control(json)) => serde_json::from_slice::<Response>(&json).map_err(|e| format!("garbled answer: {e}")),
        Ok(PeerResponse::Refused(r)) => Err(format!("refused: {r}")),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(format!("garbled answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_fixed() {
        assert_eq!(proto::encode(&PeerRequest::Hello)[0], 0);
        assert_eq!(proto::encode(&PeerRequest::Control { uid: 7, request: b"{}".to_vec() })[..2], [2, 7]);
        assert_eq!(proto::encode(&PeerResponse::Control(Vec::new()))[0], 2);
        assert_eq!(proto::encode(&PeerResponse::Hello { name: String::new(), version: String::new() })[0], 1);
    }
}
