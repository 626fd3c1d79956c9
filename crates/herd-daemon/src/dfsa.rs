//! Direct file access (openMosix's DFSA): which directories this node shares with
//! each other node, verified, never assumed from a name.
//!
//! A node *offers* directories: those configured (`[dfsa] paths`) and, unless
//! `auto = false`, the mount points of network and cluster file systems it has
//! mounted (nfs, ceph, lustre, …). In each it writes a marker,
//! `DIR/.herd-dfsa/NODE`, holding a random id chosen at every start, and
//! publishes `(DIR, id)` by gossip ([`herd_cluster::SharedMount`]). A node that
//! offers the same DIR reads the other's marker there: the same id means both
//! see the same file system at DIR, and DIR is *shared* between them. The check
//! is repeated every [`RECHECK`]; a path that only looks shared (another file
//! system mounted at the same place) never passes it.
//!
//! The markers are trusted only in a directory owned by herdd's user that no one
//! else may write to, and only from a file owned by that same user: a user of a
//! node cannot forge another node's marker.
//!
//! What is done with a shared directory is in herd-migrate's `direct` module: a
//! migrated process's files there are opened where it runs.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_cluster::{NodeState, SharedMount};
use herd_kernel::host::parse_mountinfo;

use crate::daemon::Shared;

/// The directory of markers in each shared directory.
pub const MARKER_DIR: &str = ".herd-dfsa";
/// How often the directories shared with each node are checked again.
pub const RECHECK: Duration = Duration::from_secs(10);
/// A check that takes longer (a hung network file system) counts as not shared.
const CHECK_LIMIT: Duration = Duration::from_secs(5);

/// File system types that are network or cluster file systems: offered by
/// themselves (still verified with each node).
pub const NETWORK_FS: &[&str] = &[
    "nfs", "nfs4", "ceph", "fuse.ceph-fuse", "lustre", "glusterfs", "fuse.glusterfs", "9p", "virtiofs", "cifs", "smb3", "gpfs",
    "beegfs", "ocfs2", "gfs2", "orangefs", "pvfs2", "fuse.juicefs", "fuse.sshfs",
];

/// One directory this node offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    pub path: String,
    pub marker: u128,
}

/// What herdd knows of shared directories.
#[derive(Default)]
pub struct Dfsa {
    offered: Vec<Offered>,
    /// Node name → what was verified with it (each side decides for itself what it
    /// does directly, from its own check).
    verified: Mutex<HashMap<String, Verified>>,
}

struct Verified {
    /// The directories shared with the node.
    paths: Vec<String>,
    /// What the node published when it was checked.
    theirs: Vec<SharedMount>,
    at: Instant,
}

/// Why a directory is not offered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("{path}: not an absolute path of at most {max} bytes", max = herd_cluster::info::MAX_SHARED_PATH)]
    BadPath { path: String },
    #[error("{path}: {why}")]
    Unusable { path: String, why: String },
}

impl Dfsa {
    /// Offers `paths` and, with `auto`, the network file systems mounted here:
    /// writes a fresh marker in each. What cannot be offered is logged and left out.
    pub fn prepare(node: &str, paths: &[PathBuf], auto: bool) -> Dfsa {
        let mut candidates: Vec<String> = paths.iter().map(|p| p.to_string_lossy().trim_end_matches('/').to_string()).collect();
        if auto {
            if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
                for m in parse_mountinfo(&text) {
                    let point = m.point.to_string_lossy().into_owned();
                    if NETWORK_FS.contains(&m.fstype.as_str()) && !candidates.contains(&point) {
                        candidates.push(point);
                    }
                }
            }
        }
        let mut offered = Vec::new();
        for path in candidates {
            if offered.len() == herd_cluster::info::MAX_SHARED {
                tracing::warn!("dfsa: more than {} shared directories; {path} and the rest are not offered", herd_cluster::info::MAX_SHARED);
                break;
            }
            match offer(node, &path) {
                Ok(o) => {
                    tracing::info!("dfsa: offering {path} for direct file access");
                    offered.push(o);
                }
                Err(e) => tracing::warn!("dfsa: not offering a directory: {e}"),
            }
        }
        Dfsa { offered, verified: Mutex::default() }
    }

    /// What this node publishes.
    pub fn published(&self) -> Vec<SharedMount> {
        self.offered.iter().map(|o| SharedMount { path: o.path.clone(), marker: o.marker }).collect()
    }

    /// The directories verified shared with node `name` (empty if none or not checked yet).
    pub fn shared_with(&self, name: &str) -> Vec<String> {
        self.verified.lock().expect("dfsa lock").get(name).map(|v| v.paths.clone()).unwrap_or_default()
    }

    /// Checks node `peer`'s published directories against what this node offers.
    pub fn check(&self, peer: &str, theirs: &[SharedMount]) -> Vec<String> {
        theirs
            .iter()
            .filter(|m| self.offered.iter().any(|o| o.path == m.path))
            .filter(|m| marker_matches(Path::new(&m.path), peer, m.marker))
            .map(|m| m.path.clone())
            .collect()
    }

    /// Whether `peer` is to be checked now: never checked, it publishes something
    /// else than when it was, or [`RECHECK`] has passed.
    fn due(&self, peer: &str, theirs: &[SharedMount]) -> bool {
        let v = self.verified.lock().expect("dfsa lock");
        v.get(peer).is_none_or(|c| c.theirs != theirs || c.at.elapsed() >= RECHECK)
    }

    fn set(&self, peer: &str, theirs: Vec<SharedMount>, paths: Vec<String>) {
        let mut v = self.verified.lock().expect("dfsa lock");
        let old = v.get(peer).map(|c| &c.paths);
        if old != Some(&paths) && !(old.is_none() && paths.is_empty()) {
            if paths.is_empty() {
                tracing::info!("dfsa: no directory is shared with {peer} any more");
            } else {
                tracing::info!("dfsa: shared with {peer}: {}", paths.join(", "));
            }
        }
        v.insert(peer.to_string(), Verified { paths, theirs, at: Instant::now() });
    }
}

/// Checks which directories each node that is up shares with this one: when its
/// published list changes, and every [`RECHECK`].
pub async fn verify_loop(shared: Arc<Shared>) {
    if shared.dfsa.offered.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut snapshot = shared.snapshot.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = snapshot.changed() => if r.is_err() { return },
        }
        let peers: Vec<(String, Vec<SharedMount>)> = {
            let s = snapshot.borrow_and_update();
            s.nodes
                .iter()
                .filter(|v| !v.is_self && v.state == NodeState::Up)
                .filter_map(|v| v.info.as_ref().map(|i| (i.name.clone(), i.shared.clone())))
                .collect()
        };
        for (peer, theirs) in peers {
            if !shared.dfsa.due(&peer, &theirs) {
                continue;
            }
            let (s, name, published) = (shared.clone(), peer.clone(), theirs.clone());
            let check = tokio::task::spawn_blocking(move || s.dfsa.check(&name, &published));
            let paths = match tokio::time::timeout(CHECK_LIMIT, check).await {
                Ok(Ok(p)) => p,
                _ => {
                    tracing::warn!("dfsa: checking the directories shared with {peer} took over {CHECK_LIMIT:?}; none counts as shared");
                    Vec::new()
                }
            };
            shared.dfsa.set(&peer, theirs, paths);
        }
    }
}

/// A node's name as a file name: none that could leave the marker directory.
fn marker_name(node: &str) -> Option<&str> {
    let ok = !node.is_empty() && node != "." && node != ".." && !node.contains('/') && !node.contains('\0');
    ok.then_some(node)
}

/// Makes `path` offered: a marker directory only herdd's user may write to, and a
/// fresh marker of this node in it.
fn offer(node: &str, path: &str) -> Result<Offered, OfferError> {
    let unusable = |why: String| OfferError::Unusable { path: path.to_string(), why };
    if !path.starts_with('/') || path.len() > herd_cluster::info::MAX_SHARED_PATH || path.chars().any(|c| c.is_control()) {
        return Err(OfferError::BadPath { path: path.to_string() });
    }
    let name = marker_name(node).ok_or_else(|| unusable(format!("node name {node:?} cannot name a marker file")))?;
    let dir = Path::new(path);
    let meta = std::fs::metadata(dir).map_err(|e| unusable(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unusable("not a directory".into()));
    }
    let markers = dir.join(MARKER_DIR);
    match std::fs::DirBuilder::new().mode(0o755).create(&markers) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unusable(format!("cannot create {}: {e}", markers.display()))),
    }
    trusted_dir(&markers).map_err(unusable)?;
    let marker: u128 = rand::random();
    let tmp = markers.join(format!(".{name}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{marker:032x}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, markers.join(name)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(unusable(format!("cannot write its marker: {e}")));
    }
    Ok(Offered { path: path.to_string(), marker })
}

/// A marker directory is trusted when it is a real directory owned by herdd's user
/// and writable by no one else.
fn trusted_dir(markers: &Path) -> Result<(), String> {
    let m = std::fs::symlink_metadata(markers).map_err(|e| e.to_string())?;
    if !m.is_dir() {
        return Err(format!("{} is not a directory", markers.display()));
    }
    if m.uid() != herd_kernel::task::euid() {
        return Err(format!("{} belongs to uid {}, not to herdd's user", markers.display(), m.uid()));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err(format!("{} may be written by others (mode {:o})", markers.display(), m.permissions().mode() & 0o7777));
    }
    Ok(())
}

/// Whether `DIR/.herd-dfsa/PEER` here holds `marker`: then this node sees the file
/// system `peer` wrote it on.
pub fn marker_matches(dir: &Path, peer: &str, marker: u128) -> bool {
    let Some(name) = marker_name(peer) else { return false };
    let markers = dir.join(MARKER_DIR);
    if trusted_dir(&markers).is_err() {
        return false;
    }
    let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(markers.join(name)) else {
        return false;
    };
    let owned = f.metadata().is_ok_and(|m| m.is_file() && m.uid() == herd_kernel::task::euid());
    let mut text = String::new();
    if !owned || f.take(64).read_to_string(&mut text).is_err() {
        return false;
    }
    u128::from_str_radix(text.trim(), 16).is_ok_and(|m| m == marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_read_back_and_nothing_else_passes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = d.path().to_str().unwrap();
        let o = offer("n1", path).unwrap();
        assert!(marker_matches(d.path(), "n1", o.marker));
        assert!(!marker_matches(d.path(), "n1", o.marker ^ 1), "another id");
        assert!(!marker_matches(d.path(), "n2", o.marker), "another node's name");
        assert!(!marker_matches(d.path(), "../n1", o.marker));
        // A fresh start writes a fresh id: the old one no longer passes.
        let again = offer("n1", path).unwrap();
        assert_ne!(again.marker, o.marker);
        assert!(!marker_matches(d.path(), "n1", o.marker));
        // A marker directory others may write to is not trusted.
        let markers = d.path().join(MARKER_DIR);
        std::fs::set_permissions(&markers, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!marker_matches(d.path(), "n1", again.marker));
        assert!(offer("n1", path).is_err());
        std::fs::set_permissions(&markers, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A marker that is a symlink to a file with the right id is not read.
        let elsewhere = d.path().join("copy");
        std::fs::write(&elsewhere, format!("{:032x}\n", again.marker)).unwrap();
        std::fs::remove_file(markers.join("n1")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, markers.join("n1")).unwrap();
        assert!(!marker_matches(d.path(), "n1", again.marker));
    }

    #[test]
    fn what_is_not_offered_says_why() {
        assert!(matches!(offer("n1", "relative/dir"), Err(OfferError::BadPath { .. })));
        let e = offer("n1", "/nonexistent/herd-dfsa-test").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/herd-dfsa-test"), "{e}");
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(offer("n1", f.path().to_str().unwrap()).unwrap_err().to_string().contains("not a directory"));
        let d = tempfile::tempdir().unwrap();
        assert!(offer("a/b", d.path().to_str().unwrap()).is_err());
    }

    #[test]
    fn check_keeps_only_offered_paths_with_matching_markers() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [&a, &b] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let pa = a.path().to_str().unwrap().to_string();
        // "n2" offers both; this node ("n1") offers only a.
        let theirs = Dfsa::prepare("n2", &[a.path().into(), b.path().into()], false).published();
        let ours = Dfsa::prepare("n1", &[a.path().into()], false);
        assert_eq!(ours.check("n2", &theirs), vec![pa.clone()]);
        // A published id that is not the one on disk: not shared.
        let mut forged = theirs.clone();
        forged[0].marker ^= 0xff;
        assert!(ours.check("n2", &forged).is_empty());
    }
}
