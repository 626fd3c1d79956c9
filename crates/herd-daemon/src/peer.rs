//! Node-to-node streams: Noise XXpsk3 over TCP on the gossip port. Every request
//! is the protocol version (`herd_migrate::proto::PROTOCOL_VERSION`) followed by
//! a [`PeerRequest`]: `Hello` (a greeting, answered), or `Adopt` (a process
//! migrates here: the stream then carries it, see [`crate::migrate`]). A request
//! of another version, or one not understood, is answered with
//! `Refused(Refusal)`, whose encoding (tags 0, 0 for a version) every version
//! reads, and the stream is closed.

use std::sync::Arc;
use std::time::Duration;

use herd_wire::stream::{NodeKeypair, SecureStream};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::daemon::Shared;
use herd_migrate::proto::{self, Refusal};

/// Tags (variant indexes) are fixed: new requests go at the end.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Tag 0.
    Hello,
    /// Tag 1.
    Adopt(herd_migrate::proto::Adopt),
}

/// Tag 0 (`Refused`) is fixed forever, as `ToHome::Refused`.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Tag 0.
    Refused(Refusal),
    /// Tag 1.
    Hello { name: String, version: String },
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
