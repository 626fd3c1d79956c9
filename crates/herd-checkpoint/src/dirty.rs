//! Incremental checkpoints: which pages of a process changed since its last one.
//!
//! The private anonymous memory of the process (heap, stack, anonymous mappings,
//! where nearly all of a program's data is) is registered with a userfaultfd of the
//! process in asynchronous write-protect mode (`herd_kernel::uffd::WpTracker`) and
//! write-protected when a checkpoint is captured ([`Frozen::arm`]). A write un-protects
//! its page and marks it written, in the kernel, without a fault handler. The next
//! capture ([`Frozen::make_increment`]) asks PAGEMAP_SCAN which pages are written:
//! those go in the image; the others of a tracked region that hold anything are left
//! to the parent image (the increment's `inherit` ranges); then everything is
//! protected again.
//!
//! A process that arrives by a move whose image home keeps as its checkpoint is tracked
//! from its restore on, before it runs ([`Dirty::arm_restored`]); once home names that
//! image ([`Dirty::image_kept`]), its first checkpoint on the node is an increment of it.
//!
//! Why the rules are safe: a page is inherited only when it is in a region still
//! registered (mremap drops the registration of what it moves, and new regions are
//! registered only at a capture, fully stored then), write-protected since the last
//! capture and holding something (present or swapped); a page emptied meanwhile
//! (MADV_DONTNEED) reads as written or as nothing, and so is stored or left a zero
//! page. The tracker belongs to one capture chain: `since` names the checkpoint that
//! last protected the memory, and an increment is made only of that one.

use std::os::fd::OwnedFd;

use herd_image::{Increment, VmaKind};
use herd_kernel::mem::{Pagemap, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN};
use herd_kernel::uffd::WpTracker;

use crate::capture::Frozen;
use crate::Result;

/// The write tracking of one process (see the module documentation).
pub struct Dirty {
    tracker: WpTracker,
    pid: i32,
    since: Option<u64>,
    /// Regions are registered and protected (since a capture, or since the restore).
    armed: bool,
}

/// Whether region `v` is memory the tracker follows: private, anonymous, writable.
fn trackable(v: &herd_image::Vma) -> bool {
    !v.shared && v.prot & herd_image::PROT_WRITE != 0 && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack)
}

impl Dirty {
    /// Takes the userfaultfd made in process `pid` for it (by a guest's restore).
    pub fn new(fd: OwnedFd, pid: i32) -> Result<Dirty> {
        Ok(Dirty { tracker: WpTracker::new(fd, pid)?, pid, since: None, armed: false })
    }

    /// Right after a restore, before the process runs: its writes are tracked from here
    /// (the regions of `vmas`, the image's, that the tracker follows), for an increment of
    /// the image it was restored from, once home names it ([`Dirty::image_kept`]).
    pub fn arm_restored(&mut self, vmas: &[herd_image::Vma]) {
        for v in vmas.iter().filter(|v| trackable(v)) {
            if let Err(e) = self.tracker.track(v.start, v.len()) {
                tracing::debug!(pid = self.pid, "region {:#x}-{:#x} is not write-tracked (errno {e}): stored whole", v.start, v.end);
            }
        }
        self.armed = true;
    }

    /// Home kept the image the process was restored from as checkpoint `id`: what was
    /// written since the restore is what was written since `id`.
    pub fn image_kept(&mut self, id: u64) {
        if self.armed && self.since.is_none() {
            self.since = Some(id);
        }
    }

    /// The checkpoint whose capture last protected the memory: the only one the next
    /// capture can be an increment of. None while nothing is tracked.
    pub fn since(&self) -> Option<u64> {
        self.since
    }

    /// Stops tracking: every region unregistered, its pages as they are. Before a
    /// capture that is not an increment (the tracker's marks on pages never touched
    /// read as swapped-out pages, which a whole capture would read as zeroes).
    pub fn disarm(&mut self) {
        self.since = None;
        if !std::mem::take(&mut self.armed) {
            return;
        }
        let Ok(pm) = Pagemap::open(self.pid) else { return };
        let Ok(maps) = procfs::process::Process::new(self.pid).and_then(|p| p.maps()) else { return };
        for m in maps {
            let (start, end) = m.address;
            if pm.categories(start, end, PAGE_IS_WPALLOWED).is_ok_and(|c| !c.is_empty()) {
                if let Err(e) = self.tracker.untrack(start, end - start) {
                    tracing::debug!(pid = self.pid, "unregistering {start:#x}-{end:#x} from write tracking: errno {e}");
                }
            }
        }
    }
}

impl Frozen {
    /// Makes this capture an increment of checkpoint `dirty.since()`, as checkpoint
    /// `id`: of the tracked regions, only the pages written since go in the image.
    /// Call before writing it; `false` (a whole image) when nothing is tracked.
    pub fn make_increment(&mut self, dirty: &Dirty, id: u64) -> Result<bool> {
        let Some(parent) = dirty.since else { return Ok(false) };
        let pm = Pagemap::open(dirty.pid)?;
        let mut inherit: Vec<(u64, u64)> = Vec::new();
        let of = PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_GUARD;
        let (vmas, plans) = self.parts_mut();
        for (v, plan) in vmas.iter_mut().zip(plans.iter_mut()) {
            if !trackable(v) {
                continue;
            }
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for (a, b, c) in pm.categories(v.start, v.end, of)? {
                let held = c & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0 && c & PAGE_IS_GUARD == 0;
                let run = if held && c & PAGE_IS_WPALLOWED != 0 && c & PAGE_IS_WRITTEN == 0 {
                    &mut inherit
                } else if held && c & PAGE_IS_PFNZERO == 0 {
                    &mut runs
                } else {
                    continue;
                };
                match run.last_mut() {
                    Some((s, l)) if *s + *l == a => *l += b - a,
                    _ => run.push((a, b - a)),
                }
            }
            v.stored_bytes = runs.iter().map(|r| r.1).sum();
            plan.runs = runs;
        }
        self.image_mut().increment = Some(Increment { id, parent, inherit });
        Ok(true)
    }

    /// From this capture on, the process's writes are tracked, for an increment of
    /// checkpoint `id` next: regions tracked already are write-protected again (their
    /// written pages), new ones registered. A region the kernel will not track is
    /// left out (stored whole each time).
    pub fn arm(&self, dirty: &mut Dirty, id: u64) -> Result<()> {
        let pm = Pagemap::open(dirty.pid)?;
        for v in self.image().vmas.iter().filter(|v| trackable(v)) {
            let tracked: u64 = pm.categories(v.start, v.end, PAGE_IS_WPALLOWED)?.iter().map(|r| r.1 - r.0).sum();
            if tracked == v.len() {
                pm.protect_written(v.start, v.end)?;
            } else if let Err(e) = dirty.tracker.track(v.start, v.len()) {
                tracing::debug!(pid = dirty.pid, "region {:#x}-{:#x} is not write-tracked (errno {e}): stored whole", v.start, v.end);
            }
        }
        dirty.since = Some(id);
        dirty.armed = true;
        Ok(())
    }
}
