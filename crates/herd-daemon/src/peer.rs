//! Node-to-node streams: Noise XXpsk3 over TCP on the gossip port. A stream starts
//! with a [`PeerRequest`]: `Hello` (a greeting, answered), or `Adopt` (a process
//! migrates here: the stream then carries it, see [`crate::migrate`]).

use std::sync::Arc;
use std::time::Duration;

use herd_wire::stream::{NodeKeypair, SecureStream};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::daemon::Shared;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Hello,
    Adopt(herd_migrate::proto::Adopt),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Hello { name: String, version: String },
    Error(String),
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
                let reply = match postcard::from_bytes::<PeerRequest>(&msg) {
                    Ok(PeerRequest::Adopt(adopt)) => {
                        crate::migrate::guest(stream, adopt, shared).await;
                        return;
                    }
                    Ok(PeerRequest::Hello) => PeerResponse::Hello { name: shared.config.name.clone(), version: crate::VERSION.into() },
                    Err(e) => PeerResponse::Error(format!("unknown request: {e}")),
                };
                let bytes = postcard::to_allocvec(&reply).expect("serializes");
                if stream.send(&bytes).await.is_err() {
                    return;
                }
            }
        });
    }
}
