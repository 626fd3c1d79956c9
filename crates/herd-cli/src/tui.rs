//! What `herd top` and `herd mon` share: a poller that asks herdd off the drawing thread,
//! the terminal (raw mode, alternate screen, restored however the program ends), keys.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Asks herdd in a thread of its own, every `every` and whenever its [`Poller::waker`] is
/// called, so that a slow or silent node never freezes the screen.
pub struct Poller<T> {
    answers: Receiver<Result<T, String>>,
    wake: Sender<()>,
}

impl<T: Send + 'static> Poller<T> {
    pub fn start(every: Duration, mut fetch: impl FnMut() -> Result<T, String> + Send + 'static) -> Self {
        let (tx, answers) = mpsc::channel();
        let (wake, woken) = mpsc::channel::<()>();
        std::thread::spawn(move || loop {
            if tx.send(fetch()).is_err() {
                return;
            }
            match woken.recv_timeout(every) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {
                    // Several wake-ups while fetching make one more fetch.
                    while woken.try_recv().is_ok() {}
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        });
        Self { answers, wake }
    }

    /// Something that makes the poller ask again at once (after an action, say), from
    /// any thread.
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        let wake = self.wake.clone();
        move || {
            let _ = wake.send(());
        }
    }

    /// The newest answer since the last call, if any.
    pub fn latest(&self) -> Option<Result<T, String>> {
        self.answers.try_iter().last()
    }

    /// Waits up to `limit` for the next answer (the plain, not-a-terminal mode).
    pub fn next(&self, limit: Duration) -> Option<Result<T, String>> {
        self.answers.recv_timeout(limit).ok()
    }
}

/// The terminal in full-screen mode for as long as this lives (ratatui's panic hook
/// restores it on a panic too).
pub struct Screen {
    pub terminal: ratatui::DefaultTerminal,
}

impl Screen {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self { terminal: ratatui::try_init()? })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The next key pressed within `wait`, if any (a resize counts as nothing: the next
/// draw fits the new size).
pub fn key(wait: Duration) -> anyhow::Result<Option<KeyEvent>> {
    if !event::poll(wait)? {
        return Ok(None);
    }
    Ok(match event::read()? {
        Event::Key(k) if k.kind != KeyEventKind::Release => Some(k),
        _ => None,
    })
}

/// q, Esc or Ctrl-C.
pub fn is_quit(k: &KeyEvent) -> bool {
    matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

/// `--delay`: seconds between refreshes, 0.1 to 3600.
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err(format!("{v} s is out of range (0.1 to 3600)"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(seconds("1"), Ok(1.0));
        assert_eq!(seconds("0.5"), Ok(0.5));
        assert!(seconds("0").is_err());
        assert!(seconds("-1").is_err());
        assert!(seconds("abc").is_err());
        assert!(seconds("7200").is_err());
    }

    #[test]
    fn poller_answers_at_once_when_asked() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = n.clone();
        let p = Poller::start(Duration::from_secs(3600), move || Ok::<u32, String>(count.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        assert_eq!(p.next(Duration::from_secs(5)), Some(Ok(0)));
        assert_eq!(p.next(Duration::from_millis(50)), None, "no second fetch before asked");
        p.waker()();
        assert_eq!(p.next(Duration::from_secs(5)), Some(Ok(1)));
    }
}
