//! Reading a child's pipe to its end on a thread, so that a test can look at what
//! has arrived so far while the writer runs. Shared by the test files.

use std::io::{ErrorKind, Read};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn start(mut pipe: impl Read + Send + 'static) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Collector { buf, thread: Some(thread) }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.buf.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until the pipe has no writer left; false if it still has.
    pub fn finish(&mut self, limit: Duration) -> bool {
        let Some(t) = self.thread.take() else { return true };
        let start = Instant::now();
        while !t.is_finished() {
            if start.elapsed() > limit {
                self.thread = Some(t);
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = t.join();
        true
    }

    /// Everything written, once every writer has closed the pipe (at most `limit`
    /// after the writer ended); panics naming `what` if some process still holds it.
    #[allow(dead_code)] // not every test file uses it
    pub fn collect(&mut self, what: &str, limit: Duration) -> Vec<u8> {
        assert!(
            self.finish(limit),
            "{what}: the pipe is still open {limit:?} after its writer ended (some process still holds it)"
        );
        self.snapshot()
    }
}
