//! Group commit: one thread flushes sled for every waiting writer at once. Many concurrent
//! `flush_async` calls can deadlock sled 0.34, and one fsync per request would cap logins
//! and revocations at the disk's sync rate; a single flusher avoids both.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

/// How long the flusher sleeps between checks that the store is still open.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What the flusher has done: every write made before ticket `done` was taken is on disk,
/// unless the flush that covered it `failed`.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    done: u64,
    failed: bool,
}

#[derive(Default)]
struct Requests {
    /// Tickets handed out so far.
    taken: u64,
    /// Set when the `Flusher` is dropped: the thread flushes what is pending and ends.
    closed: bool,
}

struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
}

/// Hands out flush tickets and lets callers wait until their ticket is on disk. Dropping
/// it stops the thread and waits for it, so the database (and its file lock) is released.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's flusher thread panicked");
        }
    }
}

impl Flusher {
    /// Starts the flusher thread for `db`; it stops once the `Flusher` is dropped.
    pub(super) fn start(db: sled::Db) -> std::io::Result<Flusher> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
        });
        let weak = Arc::downgrade(&shared);
        let thread = std::thread::Builder::new()
            .name("authd-flusher".into())
            .spawn(move || run(&weak, &db))?;
        Ok(Flusher {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until everything written before this call is durable. `false` when the flush
    /// that covered it failed.
    pub(super) async fn flush(&self) -> bool {
        let ticket = {
            let mut requests = self
                .shared
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            requests.taken += 1;
            requests.taken
        };
        self.shared.wake.notify_one();
        let mut flushed = self.shared.flushed.subscribe();
        match flushed.wait_for(|f| f.done >= ticket).await {
            Ok(state) => !state.failed,
            Err(_) => false,
        }
    }
}

fn run(shared: &Weak<Shared>, db: &sled::Db) {
    let mut done = 0;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (target, closed) = {
            let requests = shared
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (requests, _) = shared
                .wake
                .wait_timeout_while(requests, IDLE_CHECK, |r| r.taken == done && !r.closed)
                .unwrap_or_else(PoisonError::into_inner);
            (requests.taken, requests.closed)
        };
        if target == done {
            if closed {
                return;
            }
            continue;
        }
        // Every ticket up to `target` was taken after its write: this flush covers it.
        let failed = match db.flush() {
            Ok(_) => false,
            Err(err) => {
                tracing::error!(error = %err, "cannot flush the store");
                true
            }
        };
        done = target;
        shared.flushed.send_replace(Flushed { done, failed });
    }
}
