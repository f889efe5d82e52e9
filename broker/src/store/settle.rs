//! When a write of messages counts as done: once it is committed (see [`super::Sync`]),
//! or earlier, once every session each of its messages was queued for has acknowledged
//! it (or let it go, see [`super::Op::Ack`]).
//!
//! Why: a publisher's PUBACK waits for its message to be durable for the persistent
//! sessions it is for. Waiting for an fsync (3-7 ms on the disks measured) with a
//! client that keeps 100 messages in flight caps it at 100 messages per fsync, however
//! many the disk could take. But a message that every one of its sessions has received
//! and acknowledged needs no storing: nobody would get it from the store after a
//! crash. Subscribers that keep up acknowledge within a round trip, long before the
//! fsync, so their publishers go at the speed of the network, and the writer finds
//! the message and its acknowledgements in one transaction and writes neither (see
//! `commit`). A slow or offline session leaves the write waiting for its commit, as
//! before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The outcome a writer of a batch waits for.
pub(super) type Outcome = Result<(), String>;

/// One batch's completion, which the writer thread (at commit) or the last
/// acknowledgement of its messages (at [`Settling::acknowledged`]) gives, whichever
/// comes first.
pub(super) struct Done {
    tx: Mutex<Option<oneshot::Sender<Outcome>>>,
    /// Messages of the batch not yet acknowledged by all their sessions, plus one when
    /// the batch holds anything else (which only its commit settles).
    open: AtomicUsize,
}

impl Done {
    pub(super) fn new(tx: oneshot::Sender<Outcome>, open: usize) -> Arc<Done> {
        Arc::new(Done {
            tx: Mutex::new(Some(tx)),
            open: AtomicUsize::new(open),
        })
    }

    /// Gives the batch's outcome (the first call only).
    pub(super) fn finish(&self, outcome: Outcome) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(outcome);
        }
    }

    /// One more of the batch's messages is acknowledged by every session.
    fn settle_one(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(Ok(()));
        }
    }
}

/// A message written and not yet committed, with the sessions that have not yet
/// acknowledged it.
struct Waiting {
    clients: Vec<String>,
    done: Arc<Done>,
}

/// The messages written but not yet committed, by number.
#[derive(Default)]
pub(super) struct Settling {
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// How many `waiting` holds, read without its lock: with `sync = "periodic"` it is
    /// almost always none, and every subscriber's acknowledgements would otherwise take
    /// the lock only to find that out. (A message is registered before it is routed, so
    /// an acknowledgement of it, which comes after its delivery, sees it counted.)
    count: AtomicUsize,
}

impl Settling {
    /// Registers a batch's messages (number and sessions) before the batch goes to the
    /// writer, so that no acknowledgement can come before.
    pub(super) fn register(&self, messages: Vec<(u64, Vec<String>)>, done: &Arc<Done>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for (number, clients) in messages {
            waiting.insert(
                number,
                Waiting {
                    clients,
                    done: done.clone(),
                },
            );
        }
        self.count.store(waiting.len(), Ordering::Relaxed);
    }

    /// `client_id` acknowledged message `number` (or no longer needs it).
    pub(super) fn acknowledged<'a>(&self, acks: impl Iterator<Item = (&'a str, u64)>) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for (client_id, number) in acks {
            let Some(w) = waiting.get_mut(&number) else {
                continue;
            };
            if let Some(i) = w.clients.iter().position(|c| c == client_id) {
                w.clients.swap_remove(i);
            }
            if w.clients.is_empty() {
                if let Some(w) = waiting.remove(&number) {
                    w.done.settle_one();
                }
            }
        }
        self.count.store(waiting.len(), Ordering::Relaxed);
    }

    /// The messages are committed: their batches are done by the writer, not by
    /// acknowledgements any more.
    pub(super) fn committed(&self, numbers: impl Iterator<Item = u64>) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for number in numbers {
            waiting.remove(&number);
        }
        self.count.store(waiting.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(open: usize) -> (Arc<Done>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (Done::new(tx, open), rx)
    }

    #[test]
    fn a_batch_is_done_when_every_session_acknowledged_every_message() {
        let s = Settling::default();
        let (done, mut rx) = batch(2);
        s.register(
            vec![(1, vec!["a".into(), "b".into()]), (2, vec!["a".into()])],
            &done,
        );
        s.acknowledged([("a", 1), ("a", 2), ("c", 1)].into_iter());
        assert!(rx.try_recv().is_err(), "b has not acknowledged 1");
        // Repeated, or for another message: nothing.
        s.acknowledged([("a", 1), ("b", 7)].into_iter());
        assert!(rx.try_recv().is_err());
        s.acknowledged([("b", 1)].into_iter());
        assert_eq!(rx.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn a_batch_with_other_changes_waits_for_its_commit() {
        let s = Settling::default();
        // One message, plus something only a commit settles.
        let (done, mut rx) = batch(2);
        s.register(vec![(5, vec!["a".into()])], &done);
        s.acknowledged([("a", 5)].into_iter());
        assert!(rx.try_recv().is_err());
        done.finish(Ok(()));
        assert_eq!(rx.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn after_the_commit_acknowledgements_change_nothing() {
        let s = Settling::default();
        let (done, mut rx) = batch(1);
        s.register(vec![(9, vec!["a".into()])], &done);
        s.committed([9].into_iter());
        done.finish(Err("disk full".into()));
        s.acknowledged([("a", 9)].into_iter());
        // The commit's outcome, given once.
        assert_eq!(rx.try_recv(), Ok(Err("disk full".into())));
    }
}
