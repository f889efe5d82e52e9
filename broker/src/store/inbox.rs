//! The batches on their way to the writer thread, and when the writer is woken for
//! them.
//!
//! Why not a channel: a channel wakes its receiver for every batch, a futex call in the
//! connection's task and a context switch of the writer, which then only puts the batch
//! with the others it holds back (see `writer`): with a publisher and its subscribers'
//! acknowledgements, a wake-up every few messages. Here the writer says what it waits
//! for: anything (it holds nothing), or only a batch someone waits for alone (it sleeps
//! until the hold of the batches it has, or the next sync, runs out, and takes what came
//! meanwhile then). Every other batch is added without a wake-up.

use super::Batch;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Batches waiting for the writer.
pub(super) struct Inbox {
    state: Mutex<State>,
    wake: Condvar,
    /// The writer is woken at this many batches waiting, whatever they are, so that
    /// its memory stays bounded.
    full: usize,
}

#[derive(Default)]
struct State {
    batches: Vec<Batch>,
    /// A batch that may not wait (see `Batch::may_wait`) is among `batches`.
    urgent: bool,
    /// The writer sleeps without a deadline: any batch wakes it.
    idle: bool,
    /// No more batches will come.
    closed: bool,
}

/// What [`Inbox::take`] returns.
pub(super) struct Taken {
    /// The batches that came, oldest first.
    pub(super) batches: Vec<Batch>,
    /// No more will come.
    pub(super) closed: bool,
}

impl Inbox {
    /// An empty inbox that wakes the writer at `full` batches.
    pub(super) fn new(full: usize) -> Inbox {
        Inbox {
            state: Mutex::default(),
            wake: Condvar::new(),
            full,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a batch; false once closed.
    pub(super) fn put(&self, batch: Batch) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.urgent |= !batch.may_wait;
        state.batches.push(batch);
        let wake = state.idle || state.urgent || state.batches.len() >= self.full;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// No more batches: the writer takes what is left and stops.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The writer waits until a batch comes that may not wait (or any batch, without
    /// a `deadline`), the inbox is full, it is closed, or the deadline passes, and
    /// takes what came.
    pub(super) fn take(&self, deadline: Option<Instant>) -> Taken {
        let mut state = self.lock();
        loop {
            let due = deadline.is_some_and(|at| Instant::now() >= at);
            let ready = state.urgent
                || state.closed
                || state.batches.len() >= self.full
                || (deadline.is_none() && !state.batches.is_empty());
            if ready || due {
                state.idle = false;
                state.urgent = false;
                return Taken {
                    batches: std::mem::take(&mut state.batches),
                    closed: state.closed,
                };
            }
            state.idle = deadline.is_none();
            state = match deadline {
                None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}
