//! HTTP on localhost: Prometheus `/metrics`, `/api/nodes`, `/api/status`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daemon::Shared;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/nodes", get(nodes))
        .route("/api/status", get(status))
        .route("/api/processes", get(processes))
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
    reg.register("guests_received", "Processes of other nodes that arrived here", c.guests_received.clone());
    reg.register("balancer_moves", "Moves the balancer started (load, memory ushering, I/O home)", c.balancer_moves.clone());
    reg.register("processes_lost", "Processes of this node lost with the node they ran on", c.processes_lost.clone());
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
