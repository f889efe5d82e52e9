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
//!
//! With `sync = "periodic"` the inbox also keeps the messages not yet written
//! ([`Unwritten`]): a batch leaves its messages there, and its acknowledgements of
//! them, and only what is left goes on to the writer. One lock for both keeps their
//! order: the writer takes the messages kept after the batches that came before them.

use super::settle::Done;
use super::unwritten::Unwritten;
use super::{Batch, Op};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Messages kept unwritten at which the writer is woken to take them, so that their
/// memory stays bounded while a session is offline or slow (a session that keeps up
/// acknowledges within its window, far fewer).
pub(super) const UNWRITTEN_FULL: usize = 16_384;

/// Batches waiting for the writer.
pub(super) struct Inbox {
    state: Mutex<State>,
    wake: Condvar,
    /// The writer is woken at this many batches waiting, whatever they are, so that
    /// its memory stays bounded.
    full: usize,
    /// How many messages `State::unwritten` holds, read without the lock.
    unwritten: AtomicUsize,
    /// Batches added and not yet committed (see `Store::submit`). Counted in under the
    /// lock as a batch is added, so that the writer, which counts it out once it is
    /// committed, never counts out one not yet counted in; a batch whose operations all
    /// stay with the unwritten messages is never counted (two changes of a counter every
    /// connection shares, for nothing).
    backlog: AtomicUsize,
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
    /// `sync = "periodic"`: the messages not yet written.
    unwritten: Option<Unwritten>,
}

impl State {
    fn unwritten_full(&self) -> bool {
        self.unwritten
            .as_ref()
            .is_some_and(|u| u.len() >= UNWRITTEN_FULL)
    }
}

/// What [`Inbox::take`] returns.
pub(super) struct Taken {
    /// The batches that came, oldest first.
    pub(super) batches: Vec<Batch>,
    /// The messages that were kept unwritten, to be applied after `batches` (see
    /// [`Unwritten::into_ops`]). Taken when the writer commits at once: a batch that
    /// may not wait, the deadline (the sync), too many of them, or the end.
    pub(super) unwritten: Unwritten,
    /// No more will come.
    pub(super) closed: bool,
}

/// What became of a batch [`Inbox::put`] was given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Put {
    /// It waits for the writer.
    Added,
    /// Everything in it stays with the messages kept unwritten: nothing for the
    /// writer.
    Kept,
    /// The inbox is closed.
    Closed,
}

impl Inbox {
    /// An empty inbox that wakes the writer at `full` batches; with `keep_unwritten`
    /// (`sync = "periodic"`) it keeps the messages until the writer takes them.
    pub(super) fn new(full: usize, keep_unwritten: bool) -> Inbox {
        Inbox {
            state: Mutex::new(State {
                unwritten: keep_unwritten.then(Unwritten::default),
                ..State::default()
            }),
            wake: Condvar::new(),
            full,
            unwritten: AtomicUsize::new(0),
            backlog: AtomicUsize::new(0),
        }
    }

    /// How many batches were added (or counted in) and not yet counted out.
    pub(super) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Counts `n` batches in (see [`Inbox::backlog`]): one [`Inbox::put`] added, or the
    /// writer's own batch of the unwritten messages it took.
    pub(super) fn count_batches_in(&self, n: usize) {
        self.backlog.fetch_add(n, Ordering::Relaxed);
    }

    /// The writer committed `n` batches.
    pub(super) fn count_batches_out(&self, n: usize) {
        self.backlog.fetch_sub(n, Ordering::Relaxed);
    }

    /// How many messages are kept unwritten.
    pub(super) fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the operations `ops` as a batch (see [`Batch`]), or keeps what they hold
    /// with the messages unwritten. `ops` is left empty, its memory the caller's.
    pub(super) fn put(&self, ops: &mut Vec<Op>, done: Option<Arc<Done>>, may_wait: bool) -> Put {
        let mut state = self.lock();
        if state.closed {
            return Put::Closed;
        }
        let ops = match &mut state.unwritten {
            Some(unwritten) => {
                let rest = unwritten.absorb(ops);
                self.unwritten.store(unwritten.len(), Ordering::Relaxed);
                rest
            }
            None => std::mem::take(ops),
        };
        let put = if ops.is_empty() && done.is_none() && state.unwritten.is_some() {
            Put::Kept
        } else {
            state.urgent |= !may_wait;
            self.count_batches_in(1);
            state.batches.push(Batch {
                ops,
                done,
                may_wait,
                at: Instant::now(),
            });
            Put::Added
        };
        let wake = state.idle
            || state.urgent
            || state.batches.len() >= self.full
            || state.unwritten_full();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        put
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
            let at_once = state.urgent || state.closed || due || state.unwritten_full();
            let ready = at_once
                || state.batches.len() >= self.full
                || (deadline.is_none() && !state.batches.is_empty());
            if ready {
                state.idle = false;
                state.urgent = false;
                // Taken whole (turned into operations by the writer, not under the lock).
                let unwritten = match &mut state.unwritten {
                    Some(u) if at_once => {
                        self.unwritten.store(0, Ordering::Relaxed);
                        std::mem::take(u)
                    }
                    _ => Unwritten::default(),
                };
                return Taken {
                    batches: std::mem::take(&mut state.batches),
                    unwritten,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredMessage;

    #[test]
    fn only_batches_left_for_the_writer_count_in_its_backlog() {
        let inbox = Inbox::new(100, true);
        // A message kept unwritten: nothing for the writer, nothing counted.
        let mut ops = vec![Op::Enqueue {
            number: 1,
            message: StoredMessage {
                topic: "t".into(),
                qos: 1,
                retain: false,
                origin: 1,
                payload: "p".into(),
                properties: None,
            },
            clients: vec!["a".to_owned()].into(),
        }];
        assert_eq!(inbox.put(&mut ops, None, true), Put::Kept);
        assert_eq!(inbox.backlog(), 0);
        // The acknowledgement of a message not kept here goes on to the writer.
        let mut ops = vec![Op::Ack("a".into(), vec![7])];
        assert_eq!(inbox.put(&mut ops, None, true), Put::Added);
        assert_eq!(inbox.backlog(), 1);
        let taken = inbox.take(None);
        assert_eq!(taken.batches.len(), 1);
        inbox.count_batches_out(taken.batches.len());
        assert_eq!(inbox.backlog(), 0);
    }
}
