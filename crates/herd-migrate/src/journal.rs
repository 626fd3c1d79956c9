//! The journal of a process's effects at home since its last checkpoint, for
//! exactly-once replay after it is resumed from that checkpoint.
//!
//! Every effect a process away has on the world passes through home: forwarded
//! calls (run by its deputy) and the messages home's herdd applies itself
//! (gathered writes, offsets). While the process has a checkpoint, home records
//! each call with a digest of the call (number, arguments, input buffers) and the
//! reply it got (result and returned bytes), per thread, and each other effect
//! by its digest. When the node running it dies, the process is resumed from the
//! checkpoint; as it runs again it makes the same calls, and each one that matches
//! the next entry of its thread is answered from the journal without running
//! again — output is not written twice, input is not read twice — until it has
//! passed the point of failure. A call that does not match is a divergence (a
//! program that read the clock, say): the rest of the journal is dropped, the
//! call runs, and the divergence is reported.
//!
//! Pure bookkeeping: no system calls; unit-tested below.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::syscalls::{Call, Reply};

/// What to do with a call that arrives.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it (nothing to replay, or the journal is not recording).
    Run,
    /// Answer with this reply, as the first time: it ran already.
    Replay(Reply),
    /// It differs from what the process did the first time: run it; the
    /// journal's rest is dropped.
    Diverged(String),
}

type Digest = [u8; 32];

struct Entry {
    digest: Digest,
    nr: i64,
    reply: Reply,
}

#[derive(Default)]
struct Inner {
    recording: bool,
    /// Calls handed to the deputy and not answered yet: seq → (thread, digest, nr).
    pending: HashMap<u64, (i32, Digest, i64)>,
    /// Per thread: every answered call since the checkpoint, and how far a replay is.
    calls: HashMap<i32, (Vec<Entry>, usize)>,
    /// Other effects (gathered writes, offsets), in order, and how far a replay is.
    effects: (Vec<Digest>, usize),
    bytes: usize,
    /// Why replaying would not be exact (a thread made away, say); None: it would be.
    broken: Option<String>,
    /// Divergences seen since the last resume.
    diverged: Vec<String>,
    /// What was recorded before a checkpoint whose image is still being written
    /// ([`Journal::mark`]): dropped when it is kept, put back in front if not.
    before: Option<Box<Inner>>,
}

/// One process's journal (shared by the stream's reader, the deputy's answers and
/// the actor).
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

/// What the journal holds now (for `herd ps`, the log and the metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    pub recording: bool,
    pub calls: usize,
    pub effects: usize,
    pub bytes: usize,
    /// Entries a replay has still to meet.
    pub to_replay: usize,
    pub broken: Option<String>,
}

fn digest_of<T: serde::Serialize>(v: &T) -> Digest {
    *blake3::hash(&crate::proto::encode(v)).as_bytes()
}

fn reply_bytes(r: &Reply) -> usize {
    16 + r.outs.iter().map(|(_, d)| d.len() + 16).sum::<usize>()
}

impl Inner {
    /// After a divergence: what the process has not met again is dropped (it will not
    /// make those calls), and recording goes on from where each thread is.
    fn truncate(&mut self) {
        let mut dropped = 0;
        for (log, at) in self.calls.values_mut() {
            dropped += log.len() - *at;
            for e in log.drain(*at..) {
                self.bytes = self.bytes.saturating_sub(reply_bytes(&e.reply) + 64);
            }
        }
        let (log, at) = &mut self.effects;
        dropped += log.len() - *at;
        log.truncate(*at);
        tracing::debug!(dropped, "journal: entries dropped after a divergence");
    }

}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("journal lock")
    }

    /// A checkpoint was taken: the journal starts again, empty, recording.
    pub fn restart(&self) {
        *self.lock() = Inner { recording: true, ..Default::default() };
    }

    /// No checkpoint any more (the process came home, or ended): nothing is recorded.
    pub fn stop(&self) {
        *self.lock() = Inner::default();
    }

    /// The process was resumed from the checkpoint: what was recorded is replayed
    /// from its start, and recording goes on after it.
    pub fn begin_replay(&self) {
        self.rollback();
        let mut j = self.lock();
        j.pending.clear();
        for (_, at) in j.calls.values_mut() {
            *at = 0;
        }
        j.effects.1 = 0;
        j.diverged.clear();
    }

    /// A checkpoint was captured and the process runs on while its image is written:
    /// from here on the journal records apart ([`Journal::commit`] once the image is
    /// kept, [`Journal::rollback`] if it is not).
    pub fn mark(&self) {
        let mut j = self.lock();
        let before = std::mem::take(&mut *j);
        *j = Inner { recording: true, before: Some(Box::new(before)), ..Default::default() };
    }

    /// The image of the marked checkpoint is kept: what came before it is dropped.
    pub fn commit(&self) {
        self.lock().before = None;
    }

    /// The image of the marked checkpoint could not be kept: the last one stands, and
    /// its journal goes on with what was recorded since the mark.
    pub fn rollback(&self) {
        let mut j = self.lock();
        let Some(before) = j.before.take() else { return };
        let mut merged = *before;
        for (tid, (log, _)) in std::mem::take(&mut j.calls) {
            let (old, at) = merged.calls.entry(tid).or_default();
            old.extend(log);
            *at = old.len();
        }
        merged.effects.0.extend(std::mem::take(&mut j.effects.0));
        merged.effects.1 = merged.effects.0.len();
        merged.bytes += j.bytes;
        merged.pending.extend(j.pending.drain());
        merged.diverged.append(&mut j.diverged);
        // Not recording before (no checkpoint, or given up): nothing since counts either.
        if !merged.recording || merged.broken.is_some() || j.broken.is_some() {
            let broken = merged.broken.take().or(j.broken.take());
            merged = Inner { broken, ..Default::default() };
        }
        *j = merged;
    }

    /// The journal cannot be replayed exactly (a thread was made, it grew too large):
    /// it is dropped and recording stops, with why, until the next checkpoint.
    pub fn break_off(&self, why: &str) {
        let mut j = self.lock();
        if j.recording {
            *j = Inner { broken: Some(why.to_string()), ..Default::default() };
        }
    }

    /// A forwarded call `seq` of thread `tid` arrives from the node running the process.
    pub fn call(&self, seq: u64, tid: i32, call: &Call) -> Verdict {
        let mut j = self.lock();
        if !j.recording {
            return Verdict::Run;
        }
        let digest = digest_of(call);
        let verdict = match j.calls.get_mut(&tid) {
            Some((log, at)) if *at < log.len() => {
                let e = &log[*at];
                if e.digest == digest {
                    *at += 1;
                    return Verdict::Replay(e.reply.clone());
                }
                let name = |nr: i64| crate::syscalls::name(nr).map_or_else(|| format!("system call {nr}"), str::to_string);
                let what = if e.nr == call.nr {
                    format!("{} with other arguments or data than the first time", name(call.nr))
                } else {
                    format!("{} where it made {} the first time", name(call.nr), name(e.nr))
                };
                let why = format!("thread {tid}'s call {} since the checkpoint was {what}", *at + 1);
                j.truncate();
                j.diverged.push(why.clone());
                Verdict::Diverged(why)
            }
            _ => Verdict::Run,
        };
        j.pending.insert(seq, (tid, digest, call.nr));
        verdict
    }

    /// The deputy answered call `seq`.
    pub fn reply(&self, seq: u64, reply: &Reply) {
        let mut j = self.lock();
        let Some((tid, digest, nr)) = j.pending.remove(&seq) else { return };
        j.bytes += reply_bytes(reply) + 64;
        let (log, at) = j.calls.entry(tid).or_default();
        log.push(Entry { digest, nr, reply: reply.clone() });
        *at = log.len();
    }

    /// An effect home applies itself (a gathered write, offsets) arrives: true when it
    /// was applied already (a replay meets it again) and must be skipped now.
    pub fn effect<T: serde::Serialize>(&self, what: &T) -> bool {
        let mut j = self.lock();
        if !j.recording {
            return false;
        }
        let digest = digest_of(what);
        let (log, at) = &mut j.effects;
        if *at < log.len() {
            if log[*at] == digest {
                *at += 1;
                return true;
            }
            let why = format!("an effect (gathered write or offsets) differs from before (effect {} since the checkpoint)", *at + 1);
            j.truncate();
            j.diverged.push(why);
        }
        j.bytes += 32;
        let (log, at) = &mut j.effects;
        log.push(digest);
        *at = log.len();
        false
    }

    /// Divergences seen since the last call (each reported once).
    pub fn take_divergences(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().diverged)
    }

    pub fn state(&self) -> JournalState {
        let j = self.lock();
        JournalState {
            recording: j.recording,
            calls: j.calls.values().map(|(l, _)| l.len()).sum(),
            effects: j.effects.0.len(),
            bytes: j.bytes,
            to_replay: j.calls.values().map(|(l, at)| l.len() - at).sum::<usize>() + j.effects.0.len() - j.effects.1,
            broken: j.broken.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::{Buf, OutKind};

    fn write(fd: u64, text: &str) -> Call {
        let data = text.as_bytes().to_vec();
        let buf = Buf { arg: 1, addr: 0x1000, len: data.len() as u64, data, out: OutKind::In };
        Call { nr: libc::SYS_write, args: [fd, 0x1000, text.len() as u64, 0, 0, 0], bufs: vec![buf] }
    }

    fn read(fd: u64) -> Call {
        Call { nr: libc::SYS_read, args: [fd, 0x2000, 64, 0, 0, 0], bufs: vec![] }
    }

    fn answered(ret: i64, out: &[u8]) -> Reply {
        Reply { ret, outs: if out.is_empty() { vec![] } else { vec![(0x2000, out.to_vec())] } }
    }

    /// Runs `calls` of thread 1 as the first run would: each is run and answered.
    fn first_run(j: &Journal, calls: &[(Call, Reply)]) {
        for (i, (c, r)) in calls.iter().enumerate() {
            assert_eq!(j.call(i as u64, 1, c), Verdict::Run);
            j.reply(i as u64, r);
        }
    }

    #[test]
    fn nothing_is_recorded_without_a_checkpoint() {
        let j = Journal::default();
        first_run(&j, &[(write(1, "a"), answered(1, b""))]);
        assert_eq!(j.state().calls, 0);
        j.begin_replay();
        assert_eq!(j.call(9, 1, &write(1, "a")), Verdict::Run);
    }

    #[test]
    fn a_replay_answers_the_same_calls_from_the_journal_then_runs_on() {
        let j = Journal::default();
        j.restart();
        let calls = [(read(0), answered(5, b"line\n")), (write(1, "line\n"), answered(5, b""))];
        first_run(&j, &calls);
        assert_eq!(j.state().calls, 2);
        j.begin_replay();
        assert_eq!(j.state().to_replay, 2);
        // Sequence numbers of the new run are its own.
        assert_eq!(j.call(100, 1, &read(0)), Verdict::Replay(answered(5, b"line\n")));
        assert_eq!(j.call(101, 1, &write(1, "line\n")), Verdict::Replay(answered(5, b"")));
        assert_eq!(j.state().to_replay, 0);
        // Past the point of failure: calls run and are recorded again.
        assert_eq!(j.call(102, 1, &write(1, "next\n")), Verdict::Run);
        j.reply(102, &answered(5, b""));
        assert_eq!(j.state().calls, 3);
        assert!(j.take_divergences().is_empty());
        // A second failure replays all three.
        j.begin_replay();
        assert_eq!(j.state().to_replay, 3);
    }

    #[test]
    fn a_different_call_is_a_divergence_and_drops_the_rest() {
        let j = Journal::default();
        j.restart();
        first_run(&j, &[(write(1, "t=1\n"), answered(4, b"")), (write(1, "done\n"), answered(5, b""))]);
        j.begin_replay();
        let v = j.call(7, 1, &write(1, "t=2\n"));
        assert!(matches!(v, Verdict::Diverged(ref why) if why == "thread 1's call 1 since the checkpoint was write with other arguments or data than the first time"), "{v:?}");
        assert_eq!(j.take_divergences().len(), 1);
        assert!(j.take_divergences().is_empty(), "reported once");
        // The diverging call runs and is recorded; what followed it is gone.
        j.reply(7, &answered(4, b""));
        assert_eq!(j.state().calls, 1);
        assert_eq!(j.state().to_replay, 0);
        assert_eq!(j.call(8, 1, &write(1, "done\n")), Verdict::Run);
    }

    #[test]
    fn threads_replay_each_in_its_own_order() {
        let j = Journal::default();
        j.restart();
        assert_eq!(j.call(1, 10, &write(1, "a")), Verdict::Run);
        assert_eq!(j.call(2, 11, &write(2, "b")), Verdict::Run);
        j.reply(2, &answered(1, b""));
        j.reply(1, &answered(1, b""));
        j.begin_replay();
        // The other order across threads is no divergence.
        assert_eq!(j.call(5, 11, &write(2, "b")), Verdict::Replay(answered(1, b"")));
        assert_eq!(j.call(6, 10, &write(1, "a")), Verdict::Replay(answered(1, b"")));
    }

    #[test]
    fn effects_are_skipped_once_each_in_order() {
        let j = Journal::default();
        j.restart();
        let w = (3i32, 0u64, b"abc".to_vec());
        let o = vec![(3i32, 3u64)];
        assert!(!j.effect(&w));
        assert!(!j.effect(&o));
        j.begin_replay();
        assert!(j.effect(&w));
        assert!(j.effect(&o));
        assert!(!j.effect(&o), "past the journal: applied");
        assert_eq!(j.state().effects, 3);
    }

    #[test]
    fn unanswered_calls_are_not_journaled() {
        let j = Journal::default();
        j.restart();
        // Abandoned by a capture: never answered, made again later.
        assert_eq!(j.call(1, 1, &read(0)), Verdict::Run);
        j.begin_replay();
        assert_eq!(j.state().calls, 0);
        j.reply(1, &answered(3, b"abc"));
        assert_eq!(j.state().calls, 0, "the answer of a call from before the resume is not recorded");
    }

    /// A journal with write "a" before a checkpoint's mark and write "b" after it.
    fn marked() -> Journal {
        let j = Journal::default();
        j.restart();
        first_run(&j, &[(write(1, "a"), answered(1, b""))]);
        j.mark();
        assert_eq!(j.call(7, 1, &write(1, "b")), Verdict::Run);
        j.reply(7, &answered(1, b""));
        j
    }

    #[test]
    fn a_checkpoint_not_kept_leaves_the_last_ones_journal_whole() {
        let j = marked();
        assert!(!j.effect(&vec![(3i32, 9u64)]));
        j.rollback();
        assert_eq!((j.state().calls, j.state().effects), (2, 1));
        j.begin_replay();
        assert_eq!(j.call(20, 1, &write(1, "a")), Verdict::Replay(answered(1, b"")));
        assert_eq!(j.call(21, 1, &write(1, "b")), Verdict::Replay(answered(1, b"")));
        assert!(j.effect(&vec![(3i32, 9u64)]));
    }

    #[test]
    fn a_checkpoint_kept_starts_the_journal_at_its_mark() {
        let j = marked();
        j.commit();
        j.rollback(); // nothing to roll back once committed
        assert_eq!(j.state().calls, 1);
        j.begin_replay();
        assert_eq!(j.call(20, 1, &write(1, "b")), Verdict::Replay(answered(1, b"")));
    }

    #[test]
    fn a_mark_without_a_checkpoint_before_records_nothing_on_rollback() {
        let j = Journal::default();
        j.mark();
        assert_eq!(j.call(1, 1, &write(1, "x")), Verdict::Run);
        j.reply(1, &answered(1, b""));
        j.rollback();
        assert_eq!(j.state(), JournalState::default());
    }

    #[test]
    fn a_stop_forgets_everything() {
        let j = Journal::default();
        j.restart();
        first_run(&j, &[(write(1, "a"), answered(1, b""))]);
        j.break_off("a thread was made away");
        assert_eq!(j.state().broken.as_deref(), Some("a thread was made away"));
        assert_eq!(j.state().calls, 0, "what it held is dropped");
        assert_eq!(j.call(5, 1, &write(1, "a")), Verdict::Run);
        assert_eq!(j.state().calls, 0, "nothing is recorded until the next checkpoint");
        j.restart();
        assert_eq!(j.state().broken, None);
        j.stop();
        assert_eq!(j.state(), JournalState::default());
    }
}
