//! The cluster's network, made with iproute2's `ip` inside namespaces we
//! created (never in the caller's).
//!
//! ```text
//!  supervisor netns (the hub)            node nK netns
//!  ┌──────────────────────────┐          ┌──────────────────────┐
//!  │ herd0 (bridge, no IP,    │          │ lo                   │
//!  │  multicast snooping off) │  veth    │ eth0 10.47.0.K/24    │
//!  │   └── nK ────────────────┼──────────┼── (no default route) │
//!  └──────────────────────────┘          └──────────────────────┘
//! ```
//! Multicast snooping is off so that herdd's multicast beacons flood to
//! every port without anyone having to send IGMP joins first.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::state::BRIDGE;

/// Where `ip` is: $PATH first, then the sbin directories a user's PATH
/// often lacks.
pub fn ip_command() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let bin = ip_command().context("herd cluster needs the `ip` command (Debian package iproute2)")?;
    let mut cmd = Command::new(&bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    herd_kernel::ns::clean_start(&mut cmd);
    let out = cmd.output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("ip {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// In the supervisor's network namespace: lo and the bridge.
pub fn make_hub() -> anyhow::Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "add", "name", BRIDGE, "type", "bridge", "mcast_snooping", "0"])?;
    ip(&["link", "set", BRIDGE, "up"])
}

/// A veth pair from the bridge (port named after the node) to `eth0` in
/// the network namespace of process `pid`.
pub fn plug_node(node: &str, pid: i32) -> anyhow::Result<()> {
    let pid = pid.to_string();
    ip(&["link", "add", "name", node, "type", "veth", "peer", "name", "eth0", "netns", &pid])?;
    ip(&["link", "set", node, "master", BRIDGE])?;
    ip(&["link", "set", node, "up"])
}

/// Inside a node: lo, and eth0 with its address. No default route.
pub fn configure_node(address: &str) -> anyhow::Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["address", "add", address, "dev", "eth0"])?;
    ip(&["link", "set", "eth0", "up"])
}
