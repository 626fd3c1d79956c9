//! Survival of a process away: periodic checkpoints taken where it runs and kept at
//! home, and its resume from the last one when the node running it is lost — with
//! exactly-once effects: home's journal of its forwarded calls since that checkpoint
//! (`herd_migrate::journal`) answers the calls it makes again.
//!
//! A checkpoint is a capture on the node running the process, as for a move home,
//! whose image home writes to `checkpoint_dir` instead of restoring it; then the
//! node's frozen copy is told `Abort` and runs on. A resume is a move from that
//! file to the best node up (or, when none can take it, to a guest on home itself,
//! which comes home properly once its journal is replayed).

use std::io::{Read, Write};
use std::path::PathBuf;

use herd_migrate::journal::JournalState;

use super::*;
use crate::control::Checkpointed;

/// A process's checkpoints.
#[derive(Default)]
pub(super) struct Keep {
    /// How often, while away (None: only when asked).
    pub every: Option<Duration>,
    /// Its last checkpoint, if one is kept.
    pub last: Option<Kept>,
    /// When the next periodic one is due.
    pub due: Option<Instant>,
    /// Set by `lost`: resume it from its checkpoint (the lost node, why).
    pub recover: Option<(String, String)>,
    /// Resumed into a guest on home itself: it comes home once its journal is replayed.
    pub home_after_replay: bool,
    /// Its lock before `freeze` (restored by `continue`), while frozen.
    pub frozen: Option<bool>,
    /// A failed periodic checkpoint was reported (once until one succeeds).
    pub warned: bool,
    /// The id of the last checkpoint asked for (each is one more).
    pub last_id: u64,
}

/// One kept checkpoint: a whole image, or the last of a chain of a whole image and
/// increments of it (`herd_image::chain`), merged when it is needed.
pub(super) struct Kept {
    /// Its image (the last of `chain`).
    path: PathBuf,
    /// Its id, which an increment names as its parent.
    id: u64,
    /// Every image it takes, the whole one first, each with its size.
    chain: Vec<(u64, PathBuf, u64)>,
    unix: u64,
    /// Home's descriptors the process's own offsets follow (`Files::own`) as they were at
    /// the checkpoint: a resumed guest starts from those, not from where home's are now.
    own: Vec<(i32, u64, i32)>,
}

/// A chain of increments is started again by a whole image after this many...
const MAX_CHAIN: usize = 8;
/// ...or when its increments add up to more than this many times the whole one.
const MAX_CHAIN_GROWTH: u64 = 2;

/// The journal may hold this much before a checkpoint is taken early to empty it.
const JOURNAL_MAX: usize = 64 << 20;

/// How much of a checkpoint's image home holds in memory while the process is stopped
/// (the rest is written to the file as it comes, at the disk's pace).
const HELD: usize = 1 << 30;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn clock(unix: u64) -> String {
    let s = unix % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

impl Keep {
    /// Forgets its checkpoint (the process came home or ended): the image goes.
    pub fn drop_image(&mut self) {
        if let Some(k) = self.last.take() {
            for (_, p, _) in &k.chain {
                let _ = std::fs::remove_file(p);
            }
        }
        self.due = None;
        self.home_after_replay = false;
    }
}

/// The image of a move, written aside as it is sent: the first checkpoint of a
/// process with checkpoints (the deputy's thread writes it; a failure only means no
/// checkpoint is kept).
pub(super) struct Tee {
    out: Option<std::io::BufWriter<std::fs::File>>,
    pub failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Tee {
    pub fn write(&mut self, chunk: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if out.write_all(chunk).is_err() {
                self.out = None;
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if let Some(mut out) = self.out.take() {
            if out.flush().is_err() {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Actor {
    pub(super) fn image_paths(&self) -> (PathBuf, PathBuf) {
        let dir = &self.shared.config.checkpoint_dir;
        (dir.join(format!("{}-{}.img", self.pid, self.start)), dir.join(format!("{}-{}.img.part", self.pid, self.start)))
    }

    /// The image of checkpoint `id` (a periodic one, or asked for), and where it is
    /// written first.
    fn id_paths(&self, id: u64) -> (PathBuf, PathBuf) {
        let dir = &self.shared.config.checkpoint_dir;
        (dir.join(format!("{}-{}.{id}.img", self.pid, self.start)), dir.join(format!("{}-{}.{id}.img.part", self.pid, self.start)))
    }

    /// The file a new image is written to (`checkpoint_dir` made if need be), only for herdd.
    fn open_part(&self, part: &std::path::Path) -> std::io::Result<std::fs::File> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.shared.config.checkpoint_dir)?;
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(part)
    }

    /// The image at `path` (`bytes` long) is now the process's checkpoint `id`, with
    /// home's offsets of its own descriptors as they are now: an increment of the last
    /// one (`increment`), or a whole image that replaces its chain.
    fn keep_image(&mut self, path: PathBuf, bytes: u64, id: u64, increment: bool) {
        let pid = self.pid;
        let own = tokio::task::block_in_place(|| direct::files_of(pid, &[]).own);
        let unix = unix_now();
        let mut chain = match self.keep.last.take() {
            Some(k) if increment => k.chain,
            Some(k) => {
                for (_, p, _) in k.chain.iter().filter(|(_, p, _)| *p != path) {
                    let _ = std::fs::remove_file(p);
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        chain.push((id, path.clone(), bytes));
        self.keep.last = Some(Kept { path, id, chain, unix, own });
        self.keep.warned = false;
        self.set_row(|r| {
            r.checkpoint_unix = unix;
            r.checkpoint_bytes = bytes;
        });
        self.shared.counters.checkpoints.inc();
    }

    /// Forgets its checkpoint and journal (it came home, or is lost for good).
    pub(super) fn forget_checkpoint(&mut self) {
        self.keep.drop_image();
        self.journal.stop();
        self.set_row(|r| {
            r.checkpoint_unix = 0;
            r.checkpoint_bytes = 0;
        });
    }

    /// A file for the image of the move about to start (None if it cannot be made: the
    /// first checkpoint is then taken at the next tick).
    pub(super) fn image_tee(&self) -> Option<Tee> {
        match self.open_part(&self.image_paths().1) {
            Ok(f) => Some(Tee { out: Some(std::io::BufWriter::with_capacity(1 << 20, f)), failed: Default::default() }),
            Err(e) => {
                tracing::warn!(pid = self.pid, "cannot keep the image of its move as a checkpoint ({}: {e})", self.image_paths().1.display());
                None
            }
        }
    }

    /// The move succeeded: its image (written by the [`Tee`], closed with the deputy's
    /// send function) is the process's checkpoint, whose id is returned.
    pub(super) fn keep_teed(&mut self, failed: Arc<std::sync::atomic::AtomicBool>) -> Option<u64> {
        let (path, part) = self.image_paths();
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_file(&part);
            return None;
        }
        if let Err(e) = std::fs::rename(&part, &path) {
            tracing::warn!(pid = self.pid, "cannot keep the image of its move ({e})");
            return None;
        }
        self.journal.restart();
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.keep.last_id += 1;
        let id = self.keep.last_id;
        self.keep_image(path, bytes, id, false);
        self.keep.due = self.keep.every.map(|e| Instant::now() + e);
        Some(id)
    }

    /// The directories a move to `node` may use directly: none for a process with
    /// checkpoints, so that every effect it has passes through home's journal.
    pub(super) fn direct_dirs(&self, node: &str) -> Vec<String> {
        if self.keep.every.is_some() || self.keep.last.is_some() {
            Vec::new()
        } else {
            self.shared.dfsa.shared_with(node)
        }
    }

    /// Whether it is still replaying its journal after a resume.
    pub(super) fn replaying(&self) -> bool {
        self.keep.last.is_some() && self.journal.state().to_replay > 0
    }

    /// Checkpoints the process where it runs now; the image goes to `checkpoint_dir`
    /// at home, and the journal starts again from it. The process runs on whatever
    /// happens (a failure keeps the previous checkpoint and its journal).
    pub(super) async fn checkpoint(&mut self) -> Result<Checkpointed, ControlError> {
        if self.postcopy.is_some() {
            return Err(err(ErrorKind::Busy, "its memory is still moving (post-copy); try again in a moment"));
        }
        let Some(node) = self.remote.as_ref().map(|r| r.node.clone()) else {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "process {} runs at home: a checkpoint is kept for a process away, to resume it if its node is \
                     lost; for an image to restart by hand use `herd checkpoint {}`",
                    self.pid, self.pid
                ),
            ));
        };
        if self.replaying() {
            return Err(err(ErrorKind::Busy, "it is replaying its journal after a resume; try again in a moment"));
        }
        self.keep.last_id += 1;
        let id = self.keep.last_id;
        let (path, part) = self.id_paths(id);
        // An increment of the last one, unless its chain is long enough.
        let base = self.keep.last.as_ref().and_then(|k| {
            let whole = k.chain.first().map_or(0, |c| c.2);
            let grown: u64 = k.chain.iter().skip(1).map(|c| c.2).sum();
            (k.chain.len() < MAX_CHAIN && grown <= MAX_CHAIN_GROWTH * whole).then_some(k.id)
        });
        // The file is made before anything stops.
        let file = tokio::task::block_in_place(|| self.open_part(&part))
            .map_err(|e| err(ErrorKind::Failed, format!("cannot write its checkpoint {}: {e}", part.display())))?;
        self.quiesce().await?;
        let gen = self.remote.as_ref().map_or(0, |r| r.gen);
        self.to_remote(ToRemote::Checkpoint { id, base }).await;
        let t0 = Instant::now();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        // The image is held in memory (up to HELD) while the process is stopped, and
        // written to the file once it runs on: a slow disk does not stop the process.
        let mut held: Vec<proto::Chunk> = Vec::new();
        let mut held_bytes = 0usize;
        let mut bytes = 0u64;
        let mut failed: Option<String> = None;
        // How long the node stopped it, and whether from a snapshot (then less than the
        // capture takes).
        let mut stopped: Option<(u64, bool)> = None;
        let captured: Result<(), ControlError> = loop {
            match self.next().await {
                Some(Input::Remote { gen: g, msg }) if g == gen => match msg {
                    ToHome::Image(chunk) => {
                        bytes += chunk.len() as u64;
                        if failed.is_some() {
                            continue;
                        }
                        if held_bytes + chunk.len() <= HELD {
                            held_bytes += chunk.len();
                            held.push(chunk);
                            continue;
                        }
                        let written = tokio::task::block_in_place(|| {
                            for c in held.drain(..) {
                                out.write_all(&c)?;
                            }
                            out.write_all(&chunk)
                        });
                        held_bytes = 0;
                        if let Err(e) = written {
                            failed = Some(format!("writing {}: {e}", part.display()));
                        }
                    }
                    ToHome::Stopped { micros, snapshot } => stopped = Some((micros, snapshot)),
                    ToHome::ImageEnd => break Ok(()),
                    ToHome::CaptureFailed { reason } => break Err(err(ErrorKind::Refused, format!("it cannot be checkpointed now: {reason}"))),
                    ToHome::Exited(how) => {
                        let _ = std::fs::remove_file(&part);
                        self.on_remote(ToHome::Exited(how)).await;
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended during its checkpoint", self.pid)));
                    }
                    _ => {}
                },
                Some(Input::RemoteClosed { gen: g, why }) if g == gen => {
                    let _ = std::fs::remove_file(&part);
                    self.lost(why);
                    return Err(self.lost_error());
                }
                Some(Input::Deputy(ev)) => {
                    if !self.on_deputy(ev).await {
                        let _ = std::fs::remove_file(&part);
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended", self.pid)));
                    }
                }
                Some(_) => {}
                None => return Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        };
        let captured = match (captured, failed) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(why)) => Err(err(ErrorKind::Failed, why)),
            (Ok(()), None) => Ok(()),
        };
        // What it does from now on is journaled apart: it becomes the whole journal if
        // the image is kept, and is added to the last one's if not.
        if captured.is_ok() {
            self.journal.mark();
        }
        // The capture is over: the node's frozen copy runs on (after a failed capture
        // it already does, and this is ignored).
        self.to_remote(ToRemote::Abort).await;
        self.resume();
        let frozen_ms = stopped.map_or_else(|| t0.elapsed().as_secs_f64() * 1e3, |(us, _)| us as f64 / 1e3);
        let how = if stopped.is_some_and(|(_, snapshot)| snapshot) { ", from a snapshot" } else { "" };
        // Not synced: the image must outlive the node running the process, not home
        // (whose loss ends the process anyway); the page cache is enough.
        let kept = match captured {
            Err(e) => Err(e),
            Ok(()) => {
                let (from, to) = (part.clone(), path.clone());
                let written = tokio::task::spawn_blocking(move || -> std::io::Result<Option<herd_image::Increment>> {
                    for c in held {
                        out.write_all(&c)?;
                    }
                    out.flush()?;
                    drop(out);
                    // Whole, or an increment (of which checkpoint): its process section says.
                    let mut reader = herd_image::ImageReader::new(std::io::BufReader::new(std::fs::File::open(&from)?)).map_err(std::io::Error::other)?;
                    let increment = match reader.next_section().map_err(std::io::Error::other)? {
                        Some(herd_image::Section::Process(p)) => p.increment,
                        _ => return Err(std::io::Error::other("the image has no process section")),
                    };
                    std::fs::rename(&from, &to)?;
                    Ok(increment)
                })
                .await;
                match written {
                    Ok(Ok(None)) => Ok(false),
                    Ok(Ok(Some(inc))) if Some(inc.parent) == base && inc.id == id => Ok(true),
                    Ok(Ok(Some(inc))) => {
                        let _ = std::fs::remove_file(&path);
                        Err(err(ErrorKind::Failed, format!("the node sent an increment {} of checkpoint {}, not of {base:?}", inc.id, inc.parent)))
                    }
                    Ok(Err(e)) => Err(err(ErrorKind::Failed, format!("writing {}: {e}", part.display()))),
                    Err(e) => Err(err(ErrorKind::Internal, e.to_string())),
                }
            }
        };
        match kept {
            Ok(increment) => {
                self.journal.commit();
                self.keep_image(path.clone(), bytes, id, increment);
                tracing::info!(pid = self.pid, "checkpointed on {node}: {} bytes to {} (stopped {frozen_ms:.1} ms{how})", bytes, path.display());
                Ok(Checkpointed { pid: self.pid, path: path.display().to_string(), bytes, frozen_ms, node })
            }
            Err(e) => {
                self.journal.rollback();
                let _ = std::fs::remove_file(&part);
                self.shared.counters.checkpoints_failed.inc();
                Err(e)
            }
        }
    }

    /// The periodic work of a process away: its checkpoint when due (or when its
    /// journal grew large), divergences of a replay reported, and a process resumed on
    /// home itself brought home once replayed.
    pub(super) async fn survive_tick(&mut self) {
        for why in self.journal.take_divergences() {
            tracing::warn!(pid = self.pid, "the resumed process differs from its first run: {why}; it runs on, and its effects from here are new");
            self.shared.counters.replay_divergences.inc();
            self.set_row(|r| r.survival = format!("resumed {} time(s); replay diverged: {why}", r.resumed));
        }
        if self.keep.home_after_replay && !self.replaying() && self.postcopy.is_none() {
            self.keep.home_after_replay = false;
            if let Err(e) = self.migrate(&Target::Home, None).await {
                tracing::warn!(pid = self.pid, "replayed on home's own guest, but could not come home: {e}");
            }
            return;
        }
        let JournalState { bytes, .. } = self.journal.state();
        // Checkpoints keep failing and the journal keeps growing: it is given up.
        if bytes > 4 * JOURNAL_MAX {
            tracing::warn!(pid = self.pid, "its journal grew past {} MiB without a checkpoint: dropped; a loss of its node now loses it", (4 * JOURNAL_MAX) >> 20);
            self.journal.break_off("its journal grew too large while no checkpoint could be taken");
        }
        let due = self.keep.due.is_some_and(|d| Instant::now() >= d) || (self.keep.last.is_some() && bytes > JOURNAL_MAX);
        if !due || self.remote.is_none() || self.postcopy.is_some() || self.replaying() || self.keep.frozen.is_some() {
            return;
        }
        let every = self.keep.every.unwrap_or(Duration::from_secs(600));
        self.keep.due = Some(Instant::now() + every);
        if let Err(e) = self.checkpoint().await {
            if e.kind == ErrorKind::NoSuchProcess || e.kind == ErrorKind::Lost {
                return;
            }
            if !self.keep.warned {
                tracing::warn!(pid = self.pid, "its periodic checkpoint failed: {e}; it runs on, and is tried again in {every:?}");
                self.keep.warned = true;
            }
            self.set_row(|r| r.survival = format!("last checkpoint failed: {}", e.message));
        } else {
            self.set_row(|r| {
                if r.survival.starts_with("last checkpoint failed") {
                    r.survival.clear();
                }
            });
        }
    }

    /// The node running the process (`lost_node`) is gone: it runs again from its last
    /// checkpoint, on the best node that can take it (home's own guest when none can),
    /// and replays its journal. Ends it only when nothing can take it.
    pub(super) async fn recover(&mut self, lost_node: String, why: String) {
        let Some((path, unix, own)) = self.keep.last.as_ref().map(|k| (k.path.clone(), k.unix, k.own.clone())) else { return };
        let t0 = Instant::now();
        // A chain of increments is made one image first.
        let path = match self.merge_chain() {
            Ok(p) => p.unwrap_or(path),
            Err(e) => return self.give_up(format!("its checkpoint cannot be read: {e}")),
        };
        tracing::warn!(pid = self.pid, "node {lost_node} was lost ({why}); resuming the process from its checkpoint of {}", clock(unix));
        self.set_row(|r| r.state = "resuming".into());
        // The deputy finishes or abandons the call it served.
        if self.deputy.is_none() || self.quiesce().await.is_err() {
            return self.give_up("its deputy could not be held".into());
        }
        self.journal.begin_replay();
        let mut tried = Vec::new();
        for (name, addr) in self.resume_targets(&lost_node) {
            match self.resume_on(&name, addr, &path, &own).await {
                Ok(()) => {
                    let secs = t0.elapsed().as_secs_f64();
                    let calls = self.journal.state().to_replay;
                    self.keep.home_after_replay = name == self.shared.config.name;
                    // Frozen when its node was lost: frozen where it runs now.
                    if self.keep.frozen.is_some() {
                        self.to_remote(ToRemote::Freeze(true)).await;
                    }
                    self.shared.counters.processes_resumed.inc();
                    tracing::warn!(
                        pid = self.pid,
                        "resumed on {name} from its checkpoint of {} in {secs:.2} s; {calls} journaled effects to replay",
                        clock(unix)
                    );
                    self.set_row(|r| {
                        r.resumed += 1;
                        r.where_ = name.clone();
                        r.state = "remote".into();
                        r.survival = format!("resumed on {name} from its checkpoint of {} ({lost_node} lost: {why})", clock(unix));
                    });
                    return;
                }
                Err(e) => {
                    tracing::warn!(pid = self.pid, "cannot resume it on {name}: {e}");
                    tried.push(format!("{name}: {}", e.message));
                }
            }
        }
        self.give_up(format!("no node could take it ({})", tried.join("; ")));
    }

    /// Merges the kept chain of increments into one whole image, which replaces it;
    /// its path (None when the checkpoint is one whole image already).
    fn merge_chain(&mut self) -> Result<Option<PathBuf>, String> {
        let Some(k) = self.keep.last.as_mut() else { return Ok(None) };
        if k.chain.len() < 2 {
            return Ok(None);
        }
        let dir = &self.shared.config.checkpoint_dir;
        let merged = dir.join(format!("{}-{}.{}.merged.img", self.pid, self.start, k.id));
        let part = merged.with_extension("img.part");
        let t0 = Instant::now();
        let files = k.chain.iter().map(|(id, p, _)| std::fs::File::open(p).map(|f| (*id, f)).map_err(|e| format!("{}: {e}", p.display()))).collect::<Result<Vec<_>, String>>()?;
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let bytes = tokio::task::block_in_place(|| -> Result<u64, String> {
            let out = std::io::BufWriter::with_capacity(1 << 20, file);
            let (out, bytes) = herd_image::chain::merge(files, out).map_err(|e| e.to_string())?;
            out.into_inner().map_err(|e| e.to_string())?;
            std::fs::rename(&part, &merged).map_err(|e| e.to_string())?;
            Ok(bytes)
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&part);
        })?;
        tracing::info!(pid = self.pid, "merged its checkpoint of {} images into {} ({bytes} page bytes) in {:.0} ms", k.chain.len(), merged.display(), t0.elapsed().as_secs_f64() * 1e3);
        for (_, p, _) in &k.chain {
            let _ = std::fs::remove_file(p);
        }
        let size = std::fs::metadata(&merged).map_or(0, |m| m.len());
        k.chain = vec![(k.id, merged.clone(), size)];
        k.path = merged.clone();
        Ok(Some(merged))
    }

    fn give_up(&mut self, why: String) {
        tracing::error!(pid = self.pid, "process {} could not be resumed: {why}; ending it at home", self.pid);
        self.shared.counters.processes_lost.inc();
        self.set_row(|r| r.survival = format!("lost: {why}"));
        if let Some(d) = &self.deputy {
            d.send(Cmd::Kill);
        }
    }

    /// Where a resume may go, best first: the usable nodes up by load, not the lost
    /// one, and then home itself.
    fn resume_targets(&self, lost: &str) -> Vec<(String, SocketAddr)> {
        let snap = self.shared.snapshot.borrow().clone();
        let own = snap.nodes.iter().find(|n| n.is_self).and_then(|n| n.info.clone());
        let mut nodes: Vec<(f64, String, SocketAddr)> = snap
            .nodes
            .iter()
            .filter(|v| !v.is_self && usable(own.as_ref(), v).is_ok())
            .filter_map(|v| v.info.as_ref().map(|i| (i.load as f64 / f64::from(i.cpus.max(1)), i.name.clone(), v.id.addr)))
            .filter(|(_, name, _)| name != lost)
            .collect();
        nodes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<(String, SocketAddr)> = nodes.into_iter().map(|(_, n, a)| (n, a)).collect();
        if let Some(me) = snap.nodes.iter().find(|n| n.is_self) {
            out.push((self.shared.config.name.clone(), me.id.addr));
        }
        out
    }

    /// Restores the checkpoint at `path` on node `name` as a move would, and makes it
    /// the process's node.
    async fn resume_on(&mut self, name: &str, addr: SocketAddr, path: &std::path::Path, own: &[(i32, u64, i32)]) -> Result<(), ControlError> {
        let new = self.connect(name, addr, MoveMode::StopAndCopy, false, None).await?;
        let mut file = std::fs::File::open(path).map_err(|e| err(ErrorKind::Failed, format!("cannot read {}: {e}", path.display())))?;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            let n = tokio::task::block_in_place(|| file.read(&mut chunk)).map_err(|e| err(ErrorKind::Failed, format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            if new.tx.send(ToRemote::Image(chunk.into())).await.is_err() {
                return Err(err(ErrorKind::Failed, format!("the connection to {name} broke")));
            }
        }
        // Its own offsets as they were at the checkpoint; no directory used directly.
        let pid = self.pid;
        let mut files = tokio::task::block_in_place(|| direct::files_of(pid, &[]));
        files.own = own.to_vec();
        let _ = new.tx.send(ToRemote::Files(files)).await;
        let _ = new.tx.send(ToRemote::ImageEnd).await;
        let gen = new.gen;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let started = loop {
            let input = match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(i) => i,
                Err(_) => break Err(err(ErrorKind::Failed, format!("{name} did not start it within 60 s"))),
            };
            match input {
                Some(Input::Remote { gen: g, msg: ToHome::Running { .. } }) if g == gen => break Ok(()),
                Some(Input::Remote { gen: g, msg: ToHome::Refused(r) }) if g == gen => break Err(refused(name, &r)),
                Some(Input::RemoteClosed { gen: g, why }) if g == gen => break Err(err(ErrorKind::Failed, format!("the connection to {name} broke: {why}"))),
                Some(Input::Remote { gen: g, msg }) if g == gen => self.early.push(msg),
                Some(Input::Deputy(ev)) => {
                    if !self.on_deputy(ev).await {
                        break Err(err(ErrorKind::NoSuchProcess, format!("process {} ended", self.pid)));
                    }
                }
                Some(_) => {}
                None => break Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        };
        if let Err(e) = started {
            let _ = new.tx.send(ToRemote::Cancel { reason: e.to_string() }).await;
            self.early.clear();
            return Err(e);
        }
        self.remote = Some(new);
        self.arrived();
        self.resume();
        for msg in std::mem::take(&mut self.early) {
            self.on_remote(msg).await;
        }
        Ok(())
    }

    /// `herd migrate PID checkpoint|freeze|continue|chkstop|chkexit`. Away, a
    /// checkpoint is the one a resume starts from; at home (and for `chkexit`, which
    /// brings it home first) it is a whole image with its open files, which `herd
    /// restart` runs again, owned by the process's owner.
    pub(super) async fn act(&mut self, verb: Verb) -> Result<Option<Checkpointed>, ControlError> {
        let pid = self.pid;
        let kill = |sig: nix::sys::signal::Signal| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| err(ErrorKind::NoSuchProcess, format!("process {pid}: {e}")))
        };
        match verb {
            Verb::Checkpoint | Verb::Chkstop if self.remote.is_some() => {
                let c = self.checkpoint().await?;
                if verb == Verb::Chkstop {
                    Box::pin(self.act(Verb::Freeze)).await?;
                }
                Ok(Some(c))
            }
            Verb::Checkpoint | Verb::Chkstop | Verb::Chkexit => {
                if self.remote.is_some() {
                    self.migrate(&Target::Home, None).await?;
                }
                let end = verb == Verb::Chkexit;
                let (uid, dir) = (self.uid, self.shared.config.checkpoint_dir.clone());
                let path = dir.join(format!("{pid}-{}.ckpt", self.start));
                let c = tokio::task::spawn_blocking(move || whole_checkpoint(pid, uid, &path, end))
                    .await
                    .map_err(|e| err(ErrorKind::Internal, e.to_string()))??;
                if verb == Verb::Chkstop {
                    Box::pin(self.act(Verb::Freeze)).await?;
                }
                Ok(Some(Checkpointed { node: self.shared.config.name.clone(), ..c }))
            }
            Verb::Freeze => {
                // Away, the node running it stops it (not its deputy: no job control).
                if self.remote.is_some() {
                    self.to_remote(ToRemote::Freeze(true)).await;
                } else {
                    kill(nix::sys::signal::Signal::SIGSTOP)?;
                }
                if self.keep.frozen.is_none() {
                    let lock = std::mem::replace(&mut self.row.lock().expect("row lock").lock, true);
                    self.keep.frozen = Some(lock);
                }
                let since = clock(unix_now());
                self.set_row(|r| r.survival = format!("frozen since {since}"));
                tracing::info!(pid, "frozen");
                Ok(None)
            }
            Verb::Continue => {
                if self.remote.is_some() {
                    self.to_remote(ToRemote::Freeze(false)).await;
                } else {
                    kill(nix::sys::signal::Signal::SIGCONT)?;
                }
                if let Some(lock) = self.keep.frozen.take() {
                    self.set_row(|r| {
                        r.lock = lock;
                        r.survival.clear();
                    });
                }
                tracing::info!(pid, "continues");
                Ok(None)
            }
        }
    }
}

/// A whole checkpoint of process `pid` at home (open files included: `herd restart`
/// runs it again), written to `path` for its owner `uid`; then it runs on, or ends.
fn whole_checkpoint(pid: i32, uid: u32, path: &std::path::Path, end: bool) -> Result<Checkpointed, ControlError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| err(ErrorKind::Failed, format!("{what}: {e}"));
    let mut hashes = herd_checkpoint::filehash::FileHashes::ephemeral();
    let mut frozen = herd_checkpoint::Frozen::freeze(pid, &mut hashes).map_err(|e| match e {
        herd_checkpoint::CheckpointError::CantMove { .. } => err(ErrorKind::Refused, e.to_string()),
        e => fail("the checkpoint failed", &e),
    })?;
    let dir = path.parent().expect("a directory");
    let part = path.with_extension("ckpt.part");
    let written = (|| -> std::io::Result<(std::fs::File, herd_checkpoint::CaptureStats)> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&part)?;
        let (out, stats) = frozen.write(std::io::BufWriter::with_capacity(1 << 20, file)).map_err(std::io::Error::other)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::os::unix::fs::fchown(&file, Some(uid), None)?;
        std::fs::rename(&part, path)?;
        Ok((file, stats))
    })();
    let (file, stats) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(fail(&format!("writing {}", part.display()), &e)); // `frozen` is dropped: it runs on
        }
    };
    let bytes = file.metadata().map_or(0, |m| m.len());
    if end {
        frozen.kill();
    } else {
        frozen.release().map_err(|e| fail("releasing it after the checkpoint", &e))?;
    }
    tracing::info!(pid, "checkpointed at home to {} ({bytes} bytes){}", path.display(), if end { ", then ended" } else { "" });
    Ok(Checkpointed { pid, path: path.display().to_string(), bytes, frozen_ms: stats.frozen_for.as_secs_f64() * 1e3, node: String::new() })
}
