//! Messages to the other node of a migration stream, written by whoever sends them.
//!
//! An [`Outbox`] is the sending side of one stream; tasks and threads send through it.
//! A message goes to the socket from the sender's own thread ([`DirectSender`]) when
//! nothing sent before it still waits; otherwise it queues behind, and the stream's
//! writer task writes the queue in order. Messages keep the order they were sent in,
//! and a forwarded call or its answer is written by the thread that makes it (the
//! guest's, the deputy's) without first waking a task to write it (one context switch
//! less each way on a node with one CPU).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herd_migrate::proto::{self, Carries};
use herd_wire::stream::{Direct, DirectSender};
use herd_wire::StreamError;
use tokio::sync::mpsc::{self, error::SendError, error::SendTimeoutError, error::TrySendError};

/// Messages queued for the writer task at most (senders wait beyond).
const QUEUE: usize = 16;

/// The sending side of a migration stream (see the module's description). Clones share
/// the stream; the writer task ends, and closes the sending direction, once every
/// clone is dropped.
pub struct Outbox<T> {
    chan: mpsc::Sender<T>,
    /// Messages sent through `chan` and not yet written.
    queued: Arc<AtomicUsize>,
    direct: DirectSender,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox { chan: self.chan.clone(), queued: self.queued.clone(), direct: self.direct.clone() }
    }
}

/// Writes one message, under the sending direction's lock.
fn write<T: Carries>(d: &mut Direct, m: &T) -> Result<(), StreamError> {
    let (head, body) = proto::encode_parts(m);
    d.send_parts(&[&head, body])
}

impl<T: Carries + Send + 'static> Outbox<T> {
    /// An outbox writing to `direct`, and its writer task.
    pub fn start(direct: DirectSender) -> (Self, tokio::task::JoinHandle<()>) {
        let (chan, mut rx) = mpsc::channel::<T>(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (queued, direct) = (queued.clone(), direct.clone());
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    let sent = tokio::task::block_in_place(|| {
                        let mut d = direct.lock();
                        let r = write(&mut d, &m);
                        queued.fetch_sub(1, Ordering::SeqCst);
                        r
                    });
                    if sent.is_err() {
                        break;
                    }
                }
                direct.shutdown();
            })
        };
        (Outbox { chan, queued, direct }, writer)
    }

    /// Sends from a task: queued for the writer task.
    pub async fn send(&self, m: T) -> Result<(), SendError<T>> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.chan.send(m).await.inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// As [`Outbox::send`], waiting at most `limit` for room in the queue.
    pub async fn send_timeout(&self, m: T, limit: std::time::Duration) -> Result<(), SendTimeoutError<T>> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.chan.send_timeout(m, limit).await.inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// As [`Outbox::send`], without waiting for room in the queue.
    pub fn try_send(&self, m: T) -> Result<(), TrySendError<T>> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.chan.try_send(m).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Sends from a thread (never a task's): written from this thread at once when
    /// nothing waits before it, else queued behind what does.
    pub fn blocking_send(&self, m: T) -> Result<(), SendError<T>> {
        if self.chan.is_closed() {
            return Err(SendError(m));
        }
        {
            let mut d = self.direct.lock();
            // Checked under the lock the writer task writes under: a message it has
            // taken but not written yet still counts.
            if self.queued.load(Ordering::SeqCst) == 0 {
                return write(&mut d, &m).map_err(|_| SendError(m));
            }
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.chan.blocking_send(m).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }
}
