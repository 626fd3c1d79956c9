//! The membership state machine, many instances on a virtual clock.

use std::time::Duration;

use herd_cluster::sim::Sim;
use herd_cluster::{MembershipConfig, NodeState};

fn started(n: usize) -> Sim {
    started_with(n, 7)
}

fn started_with(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, MembershipConfig::default(), seed);
    sim.start_all();
    sim
}

#[test]
fn three_nodes_converge_detect_a_death_and_take_the_node_back() {
    let mut sim = started(3);
    let t = sim.run_until_true(Duration::from_secs(10), Duration::from_millis(100), Sim::converged);
    assert!(t.is_some(), "3 nodes did not converge in 10 s");
    sim.run_until(sim.now() + Duration::from_secs(3));
    assert!(sim.converged(), "converged, then fell apart");

    sim.kill(2);
    let killed_at = sim.now();
    let seen = sim.run_until_true(killed_at + Duration::from_secs(10), Duration::from_millis(50), |s| s.all_see_down(2));
    let detect = seen.expect("death not detected in 10 s") - killed_at;
    assert!(detect < Duration::from_secs(5), "detection took {detect:?}");
    assert_eq!(sim.state_of(0, 2), Some(NodeState::Down));

    // Restarted, it announces itself to one node (as its beacon would) and is up again.
    sim.start(2, Some(1));
    let back = sim.run_until_true(sim.now() + Duration::from_secs(10), Duration::from_millis(100), Sim::converged);
    assert!(back.is_some(), "restarted node not back");
    assert_eq!(sim.state_of(0, 2), Some(NodeState::Up));
}

#[test]
fn a_hundred_nodes_converge_and_detect_within_five_seconds() {
    for seed in 1..=4 {
        hundred(seed);
    }
}

fn hundred(seed: u64) {
    let mut sim = started_with(100, seed);
    let t = sim.run_until_true(Duration::from_secs(60), Duration::from_millis(250), Sim::converged);
    assert!(t.is_some(), "100 nodes did not converge in 60 s");
    sim.kill(42);
    let at = sim.now();
    let seen = sim.run_until_true(at + Duration::from_secs(20), Duration::from_millis(100), |s| s.all_see_down(42));
    let detect = seen.expect("death not detected") - at;
    assert!(detect < Duration::from_secs(5), "seed {seed}: detection took {detect:?}");
}
