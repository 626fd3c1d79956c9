//! Writes seed corpora of real encodings into `corpus/<target>/`: the datagrams a
//! three-node cluster sends to node 1 (each alone, and in sequences), its nodes'
//! published states, and beacons.
//!
//! Run with `cargo run --example seeds` from `crates/herd-cluster/fuzz`.

use std::path::Path;
use std::time::Duration;

use herd_cluster::beacon::Beacon;
use herd_cluster::info::StateUpdate;
use herd_cluster_fuzz::{encode_steps, exchange, info, node_id, NOW_UNIX_MS};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), data).expect("corpus file");
}

fn main() {
    let captured = exchange();
    // The simulator's node 0 is node 1, the one the targets fuzz.
    let to_1: Vec<_> = captured.iter().filter(|c| c.to == 0).collect();
    let mut seq = Vec::new();
    let mut last = Duration::ZERO;
    for (k, c) in to_1.iter().enumerate() {
        write("gossip_packet", &format!("single-{k:03}"), &c.data);
        seq.push((c.at.saturating_sub(last), c.data.clone()));
        last = c.at;
    }
    for n in [4, 16, 48, seq.len()] {
        let n = n.min(seq.len());
        write(
            "gossip_packet",
            &format!("sequence-{n:03}"),
            &encode_steps(&seq[..n]),
        );
    }
    // Later in the run too: suspicion, indirect probes, the death of node 3.
    let half = seq.len() / 2;
    write(
        "gossip_packet",
        "sequence-late",
        &encode_steps(&seq[half..]),
    );

    for i in 1..=3u8 {
        let update = StateUpdate {
            origin: node_id(i),
            seq: u64::from(i) * 7,
            info: info(i),
        };
        write("node_state", &format!("state-{i}"), &update.encode());
        let beacon = Beacon {
            id: node_id(i),
            name: format!("n{i}"),
            sent_unix_ms: NOW_UNIX_MS - 1000 * u64::from(i),
        };
        write("beacon", &format!("beacon-{i}"), &beacon.encode());
    }
    println!(
        "{} datagrams captured, {} to node 1",
        captured.len(),
        to_1.len()
    );
}
