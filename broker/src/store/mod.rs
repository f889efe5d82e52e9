//! The durable store: one redb database under the data directory for everything the
//! broker must not lose across a restart or a crash: persistent sessions (owner,
//! subscriptions, expiry, incoming QoS 2 flows), the QoS 1/2 messages queued for them,
//! their delayed wills, and the retained messages ([`crate::retained`]).
//!
//! Tables: `sessions` (client id -> [`SessionRecord`]), `messages` (message number ->
//! [`StoredMessage`], one copy however many sessions it is queued for), `queue`
//! ((client id, message number) -> nothing: what each session has yet to acknowledge),
//! `wills` (client id -> [`StoredMessage`]), `incoming` ((client id, packet id) ->
//! nothing: the client's QoS 2 messages routed and awaiting its PUBREL), `sent`
//! ((client id, message number) -> packet id: the packet id a queued QoS 2 message was
//! sent with, so that it is sent again with it), `releasing` ((client id, packet id) ->
//! nothing: outgoing QoS 2 flows the client received (PUBREC) and whose PUBCOMP has not
//! come) and `retained`.
//!
//! Writes go through one thread that takes every write waiting and commits them in one
//! transaction (group commit: one fsync for many messages, from many connections).
//! With `sync = "always"` a write is reported done once its transaction is on disk (or,
//! for messages, once every session they are for has acknowledged them, see `settle`);
//! the writer holds messages and acknowledgements back for a moment (see `writer`), so
//! that a message acknowledged by all its sessions meanwhile is never written. With
//! `"periodic"`, publishers do not wait, and the writer commits to disk every
//! `sync_interval_ms` (a write someone waits for, such as a session's, is committed at
//! once with redb's `Durability::None` and reaches the disk at the next sync); the
//! messages wait unwritten until then where their sessions' acknowledgements find them
//! without the writer (see `unwritten`). A redb transaction is atomic, so a crash at
//! any point leaves the last durable commit.
//!
//! A file that cannot be opened, or a value that cannot be read, stops the broker with
//! an error naming the file ([`StoreError`]): nothing is dropped without a word.
//! [`repair`] is the documented way out.

mod inbox;
mod records;
mod settle;
mod unwritten;

pub(crate) use records::{decode_publish, encode_publish, expire};
pub use records::{SessionRecord, StoredMessage, SubscriptionRecord, Unreadable};

use crate::by_number::ByNumber;
use inbox::{Inbox, Put};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use settle::{Done, Settling};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use unwritten::Awaiting;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const QUEUE: TableDefinition<(&str, u64), ()> = TableDefinition::new("queue");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
const INCOMING: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming");
const SENT: TableDefinition<(&str, u64), u16> = TableDefinition::new("sent");
const RELEASING: TableDefinition<(&str, u16), ()> = TableDefinition::new("releasing");

/// Name of the database file in the data directory.
pub const FILE_NAME: &str = "sealpost.redb";

/// When a write counts as done (`[storage] sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// On disk (fsync) before it is acknowledged.
    Always,
    /// Committed in memory; on disk within this interval.
    Periodic(Duration),
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened: damaged, truncated, not a redb file, or
    /// in use by another broker.
    #[error("store {path}: cannot be opened ({reason}); see `sealpost-broker --repair` in broker/README.md")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// A value in the database could not be read.
    #[error(
        "store {path}: {what} is unreadable; see `sealpost-broker --repair` in broker/README.md"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which value.
        what: String,
    },
    /// redb failed while running.
    #[error("store: {0}")]
    Db(String),
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// One change to the store.
#[derive(Debug)]
pub enum Op {
    /// Writes a session's record.
    Session(String, SessionRecord),
    /// Ends a session: its record, will and queued messages go.
    EndSession(String),
    /// Sets (or clears) a session's delayed will.
    Will(String, Option<StoredMessage>),
    /// Queues message `number` for each of `clients`.
    Enqueue {
        /// The message's number (see `marker`).
        number: u64,
        /// The message.
        message: StoredMessage,
        /// The sessions it is for (shared: a publisher's messages on one topic go to the
        /// same sessions, see `SavedSessions::takers`).
        clients: Arc<[String]>,
    },
    /// A session acknowledged these messages, by number (or no longer needs them).
    /// One operation for all of a connection's acknowledgements in a batch: a
    /// subscriber acknowledges every message it is sent.
    Ack(String, Vec<u64>),
    /// Message `number` (QoS 2) was sent to the session with packet id `pkid`: after a
    /// restart it is sent again with it (MQTT: the original packet id, with DUP).
    Sent {
        /// Client id.
        client_id: String,
        /// The message's number.
        number: u64,
        /// The packet id the client saw.
        pkid: u16,
    },
    /// The client received QoS 2 message `number` (its PUBREC, packet id `pkid`): the
    /// message is no longer needed, and the flow waits for the client's PUBCOMP
    /// (after a restart, the broker sends the PUBREL again instead of the message).
    Released {
        /// Client id.
        client_id: String,
        /// The message's number.
        number: u64,
        /// The flow's packet id.
        pkid: u16,
    },
    /// The client's PUBCOMP for an outgoing QoS 2 flow with packet id `pkid`.
    Completed(String, u16),
    /// The client's QoS 2 message with packet id `pkid` was routed (`open`), or its
    /// PUBREL came (not `open`).
    Incoming {
        /// Client id.
        client_id: String,
        /// The client's packet id.
        pkid: u16,
        /// The flow awaits PUBREL.
        open: bool,
    },
    /// Stores (`Some`) or deletes the retained message of a topic.
    Retained(String, Option<Vec<u8>>),
}

/// A session as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSession {
    /// Client id.
    pub client_id: String,
    /// Its record.
    pub record: SessionRecord,
    /// Its delayed will, if one waits.
    pub will: Option<StoredMessage>,
    /// Numbers of the messages queued for it, oldest first.
    pub queue: Vec<u64>,
    /// The client's packet ids of QoS 2 messages routed and awaiting its PUBREL.
    pub awaiting_release: Vec<u16>,
    /// Packet ids that queued QoS 2 messages were sent with, by message number.
    pub sent: Vec<(u64, u16)>,
    /// Packet ids of outgoing QoS 2 flows awaiting the client's PUBCOMP.
    pub releasing: Vec<u16>,
}

/// Everything the store held at start, after expired sessions and messages went.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Live sessions.
    pub sessions: Vec<LoadedSession>,
    /// Queued messages by number.
    pub messages: BTreeMap<u64, StoredMessage>,
    /// Wills of sessions that ended while the broker was down: due now.
    pub due_wills: Vec<StoredMessage>,
    /// The first message number not used by any stored message.
    pub next_message: u64,
}

struct Batch {
    ops: Vec<Op>,
    done: Option<Arc<Done>>,
    /// Nobody waits for this batch's commit alone: the writer may hold it back (see
    /// [`writer`]) so that the acknowledgements of its messages join it.
    may_wait: bool,
    /// When it was sent (its hold counts from then).
    at: Instant,
}

/// Handle to the store. Without a data directory it stores nothing.
pub struct Store {
    inbox: Arc<Inbox>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropped at [`Store::close`], so that the file can be opened again.
    database: Mutex<Option<Arc<Database>>>,
    path: Option<PathBuf>,
    /// Messages written and not yet committed (see `settle`).
    settling: Arc<Settling>,
    /// `sync = "periodic"`: [`Store::submit`] does not wait (see there).
    periodic: bool,
    /// Messages the writer has written (those acknowledged by every session first are
    /// not, see `settle`).
    written: Arc<AtomicU64>,
}

/// With `sync = "periodic"`, batches the writer may lag behind before
/// [`Store::submit`] waits for it, which bounds its memory and what a crash loses
/// beyond the last sync.
const PERIODIC_BACKLOG: usize = 4096;

/// With `sync = "periodic"`, messages kept unwritten (see `unwritten`) before
/// [`Store::submit`] waits for the writer to take them: four times what wakes it.
const PERIODIC_UNWRITTEN: usize = 4 * inbox::UNWRITTEN_FULL;

impl Store {
    /// A store that keeps nothing (no data directory).
    pub fn in_memory() -> Store {
        Store {
            // Never used: nothing is sent to a writer.
            inbox: Arc::new(Inbox::new(0, false)),
            thread: Mutex::new(None),
            database: Mutex::new(None),
            path: None,
            settling: Arc::default(),
            periodic: false,
            written: Arc::default(),
        }
    }

    /// Opens (or creates) the database at `path` and reads what it holds, deleting
    /// sessions that expired while the broker was down (with their messages) and
    /// messages whose expiry interval ran out.
    pub fn open(path: &Path, sync: Sync) -> Result<(Store, Loaded), StoreError> {
        Self::open_at(path, sync, unix_now())
    }

    pub(crate) fn open_at(
        path: &Path,
        sync: Sync,
        now: u64,
    ) -> Result<(Store, Loaded), StoreError> {
        let database = open_database(path)?;
        let (loaded, refs) = load(&database, path, now, false)?;
        let database = Arc::new(database);
        let periodic = matches!(sync, Sync::Periodic(_));
        let inbox = Arc::new(Inbox::new(hold_max_batches(sync), periodic));
        let writer_inbox = inbox.clone();
        let writer_db = database.clone();
        let settling = Arc::new(Settling::default());
        let writer_settling = settling.clone();
        let written = Arc::new(AtomicU64::new(0));
        let writer_written = written.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer(
                    &writer_db,
                    &writer_settling,
                    &writer_written,
                    &writer_inbox,
                    refs,
                    sync,
                )
            })
            .map_err(db)?;
        Ok((
            Store {
                inbox,
                thread: Mutex::new(Some(thread)),
                database: Mutex::new(Some(database)),
                path: Some(path.to_owned()),
                settling,
                periodic,
                written,
            },
            loaded,
        ))
    }

    /// Whether writes are kept (a data directory is configured).
    pub fn is_durable(&self) -> bool {
        self.path.is_some()
    }

    /// Whether a write of messages may be waited for until their sessions acknowledge
    /// them (`sync = "always"`, see `settle`).
    pub fn settles_by_acknowledgements(&self) -> bool {
        self.is_durable() && !self.periodic
    }

    /// How many messages the writer has written to the file so far (those every
    /// session acknowledged before they were due to be written are not).
    pub fn messages_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The database file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The database, for the retained store's table.
    pub(crate) fn database(&self) -> Option<Arc<Database>> {
        self.database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `ops` and waits until they count as done: committed (see [`Sync`]), or,
    /// for a batch of queued messages only ([`Op::Enqueue`]), acknowledged by every
    /// session each is for (see `settle`).
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.send_settling(ops, false)?.wait().await
    }

    /// Sends `ops` to the writer at once; the returned [`Pending`] says when they count
    /// as done: as [`Store::write`] with `sync = "always"`; at once with `"periodic"`
    /// (as Mosquitto acknowledges before its next autosave: a crash loses what the
    /// last `sync_interval_ms` wrote either way, whether committed in memory or still
    /// on its way to the writer), unless the writer lags `PERIODIC_BACKLOG` (4,096)
    /// batches or `PERIODIC_UNWRITTEN` (65,536) messages behind. What is sent after
    /// this call is applied after `ops`, so a message may be routed as soon as this
    /// returns: the acknowledgements its sessions send come after it.
    ///
    /// `ops` is left empty; with `"periodic"` it keeps its memory, for the caller's next
    /// batch (its messages move to the unwritten ones, see `unwritten`).
    pub fn submit(&self, ops: &mut Vec<Op>) -> Result<Pending, StoreError> {
        if self.periodic
            && self.inbox.backlog() < PERIODIC_BACKLOG
            && self.inbox.unwritten() < PERIODIC_UNWRITTEN
        {
            self.send_batch(ops, None, true)?;
            return Ok(Pending(None));
        }
        let ops = std::mem::take(ops);
        // A batch of messages only (with `"always"`) may also be settled by the
        // acknowledgements of its sessions, which the writer waits for a moment.
        let may_wait = !self.periodic && ops.iter().all(|op| matches!(op, Op::Enqueue { .. }));
        self.send_settling(ops, may_wait)
    }

    /// Sends `ops` to the writer, done when committed or settled (see `settle`).
    fn send_settling(&self, mut ops: Vec<Op>, may_wait: bool) -> Result<Pending, StoreError> {
        if !self.is_durable() {
            return Ok(Pending(None));
        }
        let mut messages = Vec::new();
        let mut others = false;
        for op in &ops {
            match op {
                Op::Enqueue {
                    number, clients, ..
                } if !clients.is_empty() => messages.push((*number, clients.to_vec())),
                _ => others = true,
            }
        }
        let (tx, rx) = oneshot::channel();
        let done = Done::new(
            tx,
            messages.len() + usize::from(others || messages.is_empty()),
        );
        self.settling.register(messages, &done);
        self.send_batch(&mut ops, Some(done), may_wait)?;
        Ok(Pending(Some(rx)))
    }

    /// The messages queued for `client_id`, oldest first, read once every write sent
    /// before this call is applied (so that what its last connection saw acknowledged is
    /// gone). Messages whose expiry interval ran out are left out. Empty without a data
    /// directory.
    pub(crate) async fn queued_for(
        &self,
        client_id: &str,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        let Some(database) = self.database() else {
            return Ok(Vec::new());
        };
        self.write(Vec::new()).await?;
        let client_id = client_id.to_owned();
        tokio::task::spawn_blocking(move || read_queue(&database, &client_id, unix_now()))
            .await
            .map_err(db)?
    }

    /// Applies `ops` without waiting (for changes whose loss in a crash only costs a
    /// duplicate, such as an acknowledgement).
    pub fn send(&self, mut ops: Vec<Op>) {
        if !self.is_durable() {
            return;
        }
        self.settling.acknowledged(
            ops.iter()
                .filter_map(|op| match op {
                    Op::Ack(client_id, numbers) => Some((client_id.as_str(), numbers)),
                    _ => None,
                })
                .flat_map(|(client_id, numbers)| numbers.iter().map(move |&n| (client_id, n))),
        );
        let _ = self.send_batch(&mut ops, None, true);
    }

    /// Nothing without a data directory. `ops` is left empty, its memory the caller's.
    fn send_batch(
        &self,
        ops: &mut Vec<Op>,
        done: Option<Arc<Done>>,
        may_wait: bool,
    ) -> Result<(), StoreError> {
        if self.path.is_none() {
            ops.clear();
            return Ok(());
        }
        match self.inbox.put(ops, done, may_wait) {
            Put::Closed => Err(StoreError::Closed),
            Put::Added | Put::Kept => Ok(()),
        }
    }

    /// Finishes pending writes, makes them durable and stops the writer.
    pub fn close(&self) {
        self.inbox.close();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// A write sent to the store ([`Store::submit`]), not yet known to be done.
#[must_use = "a write counts as done only once its Pending is awaited"]
pub struct Pending(Option<oneshot::Receiver<settle::Outcome>>);

impl Pending {
    /// Waits until the write counts as done (at once without a data directory).
    pub async fn wait(mut self) -> Result<(), StoreError> {
        self.done().await
    }

    /// As [`Pending::wait`], without taking it: cancel-safe, so that a connection may
    /// wait for its writes in a `select!` and do something else meanwhile (once done,
    /// it stays done).
    pub async fn done(&mut self) -> Result<(), StoreError> {
        let Some(rx) = &mut self.0 else {
            return Ok(());
        };
        let outcome = rx.await;
        self.0 = None;
        match outcome {
            Ok(r) => r.map_err(StoreError::Db),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Whether it is known to be done already (`sync = "periodic"`, or no data
    /// directory).
    pub fn is_done(&self) -> bool {
        self.0.is_none()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens the file, turning every failure (a panic inside redb included) into an error
/// that names it.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let open = std::panic::catch_unwind(|| Database::create(path));
    let reason = match open {
        Ok(Ok(database)) => return Ok(database),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "redb failed reading it".to_owned(),
    };
    Err(StoreError::Open {
        path: path.to_owned(),
        reason,
    })
}

/// Reads the store. With `repair`, unreadable values are deleted (and logged) instead
/// of stopping the start. Returns what was read and each message's reference count.
fn load(
    database: &Database,
    path: &Path,
    now: u64,
    repair: bool,
) -> Result<(Loaded, HashMap<u64, u32>), StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let mut loaded = Loaded {
        next_message: 1,
        ..Default::default()
    };
    let mut refs: HashMap<u64, u32> = HashMap::new();
    let txn = database.begin_write().map_err(db)?;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
        let mut messages = txn.open_table(MESSAGES).map_err(db)?;
        let mut queue = txn.open_table(QUEUE).map_err(db)?;
        let mut wills = txn.open_table(WILLS).map_err(db)?;
        let mut incoming = txn.open_table(INCOMING).map_err(db)?;
        let mut sent = txn.open_table(SENT).map_err(db)?;
        let mut releasing = txn.open_table(RELEASING).map_err(db)?;

        // Messages first: what is queued must exist.
        let mut drop_messages = Vec::new();
        for entry in messages.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let number = k.value();
            loaded.next_message = loaded.next_message.max(number + 1);
            match StoredMessage::decode(v.value(), now) {
                Ok(Some(m)) => {
                    loaded.messages.insert(number, m);
                }
                Ok(None) => drop_messages.push(number),
                Err(Unreadable) if repair => {
                    tracing::warn!(number, "store repair: unreadable message deleted");
                    drop_messages.push(number);
                }
                Err(Unreadable) => return Err(corrupt(format!("message {number}"))),
            }
        }
        for number in &drop_messages {
            messages.remove(number).map_err(db)?;
        }

        let mut ended = Vec::new();
        for entry in sessions.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let client_id = k.value().to_owned();
            let record = match SessionRecord::decode(v.value()) {
                Ok(r) => r,
                Err(Unreadable) if repair => {
                    tracing::warn!(client_id, "store repair: unreadable session deleted");
                    ended.push(client_id);
                    continue;
                }
                Err(Unreadable) => return Err(corrupt(format!("session {client_id:?}"))),
            };
            let will = match wills.get(client_id.as_str()).map_err(db)? {
                None => None,
                // A will has no expiry of its own to count here: 0 keeps the interval.
                Some(v) => match StoredMessage::decode(v.value(), 0) {
                    Ok(w) => w,
                    Err(Unreadable) if repair => None,
                    Err(Unreadable) => {
                        return Err(corrupt(format!("will of session {client_id:?}")))
                    }
                },
            };
            // Numbers go on after those the records name too.
            loaded.next_message = loaded.next_message.max(record.offline_since);
            if record.expires_at(now).is_some_and(|at| at <= now) {
                // Ended while the broker was down; a will still waiting is due now.
                loaded.due_wills.extend(will);
                ended.push(client_id);
                continue;
            }
            loaded.sessions.push(LoadedSession {
                client_id,
                record,
                will,
                queue: Vec::new(),
                awaiting_release: Vec::new(),
                sent: Vec::new(),
                releasing: Vec::new(),
            });
        }
        for client_id in &ended {
            sessions.remove(client_id.as_str()).map_err(db)?;
            wills.remove(client_id.as_str()).map_err(db)?;
        }

        let index: HashMap<&str, usize> = loaded
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.client_id.as_str(), i))
            .collect();
        let mut stale = Vec::new();
        let mut queued: Vec<(usize, u64)> = Vec::new();
        for entry in queue.iter().map_err(db)? {
            let (k, _) = entry.map_err(db)?;
            let (client_id, number) = k.value();
            match (index.get(client_id), loaded.messages.contains_key(&number)) {
                (Some(&i), true) => {
                    queued.push((i, number));
                    *refs.entry(number).or_default() += 1;
                }
                _ => stale.push((client_id.to_owned(), number)),
            }
        }
        let flows = |table: &redb::Table<(&str, u16), ()>| -> Result<_, StoreError> {
            let (mut open, mut stale) = (Vec::new(), Vec::new());
            for entry in table.iter().map_err(db)? {
                let (k, _) = entry.map_err(db)?;
                let (client_id, pkid) = k.value();
                match index.get(client_id) {
                    Some(&i) => open.push((i, pkid)),
                    None => stale.push((client_id.to_owned(), pkid)),
                }
            }
            Ok((open, stale))
        };
        let (open_in, stale_in) = flows(&incoming)?;
        let (open_out, stale_out) = flows(&releasing)?;
        // A packet id counts only for a message still queued for the session.
        let mut sent_ids = Vec::new();
        let mut stale_sent = Vec::new();
        for entry in sent.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let (client_id, number) = k.value();
            match index.get(client_id) {
                Some(&i) if refs.contains_key(&number) => sent_ids.push((i, number, v.value())),
                _ => stale_sent.push((client_id.to_owned(), number)),
            }
        }
        drop(index);
        for (i, pkid) in open_in {
            loaded.sessions[i].awaiting_release.push(pkid);
        }
        for (i, pkid) in open_out {
            loaded.sessions[i].releasing.push(pkid);
        }
        for (i, number, pkid) in sent_ids {
            loaded.sessions[i].sent.push((number, pkid));
        }
        for (client_id, pkid) in stale_in {
            incoming.remove((client_id.as_str(), pkid)).map_err(db)?;
        }
        for (client_id, pkid) in stale_out {
            releasing.remove((client_id.as_str(), pkid)).map_err(db)?;
        }
        for (client_id, number) in stale_sent {
            sent.remove((client_id.as_str(), number)).map_err(db)?;
        }
        for (i, number) in queued {
            loaded.sessions[i].queue.push(number);
        }
        for (client_id, number) in stale {
            queue.remove((client_id.as_str(), number)).map_err(db)?;
        }
        // Messages no session waits for any more.
        let unreferenced: Vec<u64> = loaded
            .messages
            .keys()
            .filter(|n| !refs.contains_key(n))
            .copied()
            .collect();
        for number in unreferenced {
            loaded.messages.remove(&number);
            messages.remove(number).map_err(db)?;
        }
        for s in &mut loaded.sessions {
            s.queue.sort_unstable();
        }
    }
    txn.commit().map_err(db)?;
    Ok((loaded, refs))
}

/// What `--repair` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Repaired {
    /// The file opened and every value was readable: nothing changed.
    Nothing,
    /// The file opened; unreadable values were deleted (each logged).
    ValuesDeleted,
    /// The file could not be opened at all: it was moved to this path and the broker
    /// starts with an empty store.
    MovedAside(PathBuf),
}

/// The recovery path for a store the broker refuses to start with: deletes the values
/// that cannot be read, or, when the file cannot be opened at all, moves it aside
/// (kept for inspection, never deleted) so that the broker starts afresh.
pub fn repair(path: &Path) -> Result<Repaired, StoreError> {
    match open_database(path) {
        Ok(database) => match load(&database, path, unix_now(), false) {
            Ok(_) => Ok(Repaired::Nothing),
            Err(StoreError::Corrupt { .. }) => {
                load(&database, path, unix_now(), true)?;
                Ok(Repaired::ValuesDeleted)
            }
            Err(e) => Err(e),
        },
        Err(StoreError::Open { reason, .. }) if reason.contains("already open") => {
            Err(StoreError::Open {
                path: path.to_owned(),
                reason,
            })
        }
        Err(_) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{}", unix_now()));
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: format!("cannot move it aside: {e}"),
            })?;
            Ok(Repaired::MovedAside(aside))
        }
    }
}

/// What [`Store::queued_for`] reads, in one read transaction.
fn read_queue(
    database: &Database,
    client_id: &str,
    now: u64,
) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
    let txn = database.begin_read().map_err(db)?;
    let queue = txn.open_table(QUEUE).map_err(db)?;
    let messages = txn.open_table(MESSAGES).map_err(db)?;
    let mut out = Vec::new();
    for entry in queue
        .range((client_id, 0)..=(client_id, u64::MAX))
        .map_err(db)?
    {
        let (k, _) = entry.map_err(db)?;
        let number = k.value().1;
        let Some(v) = messages.get(number).map_err(db)? else {
            continue;
        };
        match StoredMessage::decode(v.value(), now) {
            Ok(Some(m)) => out.push((number, m)),
            // Expired while queued: not delivered (the router's rule too).
            Ok(None) => {}
            Err(Unreadable) => return Err(db(format!("message {number} is unreadable"))),
        }
    }
    Ok(out)
}

/// How long the writer holds back, with `sync = "always"`, a batch that may wait (see
/// [`Batch::may_wait`]): about one subscriber round trip, so that subscribers that keep
/// up acknowledge the messages first and the writer writes neither the messages nor
/// their acknowledgements (see `settle`). A publisher whose messages go to an offline
/// session waits this long more for its PUBACK.
const ALWAYS_HOLD: Duration = Duration::from_millis(2);

/// Batches held back at most, whatever the time (then the older half is committed): this
/// bounds the writer's memory (and, with `"periodic"`, keeps [`Store::submit`] clear of
/// [`PERIODIC_BACKLOG`]). With `"always"` the hold is short and the bound seldom
/// reached. With `"periodic"` the hold lasts until the next sync, but the batches
/// held are few and small: the messages and the acknowledgements of them wait
/// unwritten outside (see `unwritten`), and what comes here is the rest (such as the
/// acknowledgements of messages written already).
fn hold_max_batches(sync: Sync) -> usize {
    match sync {
        Sync::Always => 1024,
        Sync::Periodic(_) => 128,
    }
}

/// The writer thread: commits the batches sent to it, many in one transaction.
///
/// A batch someone waits for alone (a session's change, a QoS 2 flow, a read of a
/// session's queue) is committed at once, with every batch before it. The others (the
/// messages of a publisher, acknowledgements) are held back a little: `ALWAYS_HOLD`
/// with `"always"`; with `"periodic"` until the next sync, which then commits them
/// straight to disk (Mosquitto's autosave writes what is queued at that moment too).
/// Meanwhile the acknowledgements of online sessions join the messages they are for,
/// and a message every session has acknowledged is never written. With `"periodic"`
/// the messages wait unwritten in the inbox (see `unwritten`), and every commit at
/// once takes them, after the batches that came before them.
fn writer(
    database: &Database,
    settling: &Settling,
    written: &AtomicU64,
    inbox: &Inbox,
    mut refs: HashMap<u64, u32>,
    sync: Sync,
) {
    // Batches held back, oldest first.
    let mut held: VecDeque<Batch> = VecDeque::new();
    // `"periodic"`: committed in memory since the last sync, not yet on disk.
    let mut dirty = false;
    let mut last_sync = Instant::now();
    let mut open = true;
    while open || !held.is_empty() {
        let wake = match sync {
            Sync::Always => held.front().map(|b| b.at + ALWAYS_HOLD),
            Sync::Periodic(every) => Some(last_sync + every),
        };
        let mut urgent = false;
        if open {
            let taken = inbox.take(wake);
            open = !taken.closed;
            urgent = taken.batches.iter().any(|b| !b.may_wait);
            held.extend(taken.batches);
            let unwritten = taken.unwritten.into_ops();
            if !unwritten.is_empty() {
                // After the batches that came before them (see `inbox`), and committed
                // with them now (counted as the others).
                urgent = true;
                inbox.count_batches_in(1);
                held.push_back(Batch {
                    ops: unwritten,
                    done: None,
                    may_wait: true,
                    at: Instant::now(),
                });
            }
        }
        let now = Instant::now();
        let sync_due = matches!(sync, Sync::Periodic(every) if now >= last_sync + every);
        // Everything, or (with "always") the batches held for their time, oldest first
        // (younger ones may still see their acknowledgements come).
        let take = if urgent || sync_due || !open {
            held.len()
        } else if held.len() >= hold_max_batches(sync) {
            // The older half: the younger one may still bring their acknowledgements.
            held.len() / 2
        } else if sync == Sync::Always {
            held.iter()
                .take_while(|b| b.at + ALWAYS_HOLD <= now)
                .count()
        } else {
            0
        };
        if take == 0 && !sync_due {
            continue;
        }
        // With "periodic", only the sync (or the end) writes to disk; a batch someone
        // waits for is committed in memory.
        let durability = match sync {
            Sync::Always => Durability::Immediate,
            Sync::Periodic(_) if sync_due || !open => Durability::Immediate,
            Sync::Periodic(_) => Durability::None,
        };
        let mut batches: Vec<Batch> = held.drain(..take).collect();
        let result = commit(
            database,
            &mut batches,
            held.iter_mut(),
            &mut refs,
            durability,
        );
        let result = match result {
            Ok(committed) => {
                if let Some(messages) = committed {
                    written.fetch_add(messages, Ordering::Relaxed);
                    dirty = matches!(durability, Durability::None);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed");
                Err(e.to_string())
            }
        };
        if sync_due {
            if dirty {
                dirty = !flush(database);
            }
            last_sync = now;
        }
        settling.committed(
            batches
                .iter()
                .flat_map(|b| &b.ops)
                .filter_map(|op| match op {
                    Op::Enqueue { number, .. } => Some(*number),
                    _ => None,
                }),
        );
        inbox.count_batches_out(batches.len());
        for b in batches {
            if let Some(done) = b.done {
                done.finish(result.clone());
            }
        }
    }
    if dirty {
        flush(database);
    }
}

/// An empty `Immediate` commit, which makes the `Durability::None` ones before it
/// durable. True on success.
fn flush(database: &Database) -> bool {
    let result = match database.begin_write() {
        Ok(txn) => txn.commit().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "store sync failed");
    }
    result.is_ok()
}

/// What the batches of one transaction cancel out: a message acknowledged by a session
/// in the transaction that queues it is not queued for that session, nor written at all
/// if that was every session (with subscribers that keep up, most messages never touch
/// the disk, see `settle`). Found in one pass over the operations, by message number;
/// the acknowledgements that met their message are taken out of their operations.
struct Cancelling {
    /// Per message queued here: its sessions, and which of them acknowledged it here.
    queued: HashMap<u64, Awaiting, ByNumber>,
}

impl Cancelling {
    fn find<'a>(ops: impl Iterator<Item = &'a mut Op>) -> Self {
        let mut here = Cancelling {
            queued: HashMap::default(),
        };
        for op in ops {
            match op {
                Op::Enqueue {
                    number, clients, ..
                } => {
                    here.queued.insert(*number, Awaiting::new(clients.clone()));
                }
                Op::Ack(client_id, numbers) => here.meet(client_id, numbers),
                _ => {}
            }
        }
        here
    }

    /// Takes the acknowledgements of messages queued here out of the `younger` batches
    /// still held, so that they cancel out with them: the sessions of a message
    /// acknowledge it after it came, so without this a message taken when its hold ran
    /// out would always be written, and its acknowledgements would delete it in the
    /// next transaction.
    ///
    /// Applying an acknowledgement `(c, n)` here, before the younger batches, changes no
    /// outcome: they hold no `Enqueue` of `n` (message numbers are unique and `n` is
    /// queued here), and every other operation on `(c, n)` (`Sent`, `Released`,
    /// `EndSession`) leaves the same state in either order, since an acknowledgement
    /// only removes what was queued or sent for `(c, n)`.
    fn join<'a>(&mut self, younger: impl Iterator<Item = &'a mut Batch>) {
        if self.queued.is_empty() {
            return;
        }
        for op in younger.flat_map(|b| &mut b.ops) {
            if let Op::Ack(client_id, numbers) = op {
                self.meet(client_id, numbers);
            }
        }
    }

    /// Marks the messages queued here that `client_id` acknowledged, and takes those
    /// numbers out of `numbers`.
    fn meet(&mut self, client_id: &str, numbers: &mut Vec<u64>) {
        numbers.retain(|number| {
            !self
                .queued
                .get_mut(number)
                .is_some_and(|awaiting| awaiting.acknowledge(client_id))
        });
    }

    /// The sessions message `number` (queued here) is still to be queued for.
    fn keeps(&self, number: u64) -> impl Iterator<Item = &String> + '_ {
        self.queued
            .get(&number)
            .into_iter()
            .flat_map(Awaiting::remaining)
    }
}

/// Applies `batches` in one transaction, with the acknowledgements of their messages
/// that wait in the `younger` batches still held (see [`Cancelling::join`]). Returns
/// how many messages it wrote, or None if the batches cancelled out and nothing was
/// committed.
fn commit<'a>(
    database: &Database,
    batches: &mut [Batch],
    younger: impl Iterator<Item = &'a mut Batch>,
    refs: &mut HashMap<u64, u32>,
    durability: Durability,
) -> Result<Option<u64>, StoreError> {
    let mut here = Cancelling::find(batches.iter_mut().flat_map(|b| &mut b.ops));
    here.join(younger);
    let all_cancelled = batches.iter().flat_map(|b| &b.ops).all(|op| match op {
        Op::Enqueue { number, .. } => here.keeps(*number).next().is_none(),
        Op::Ack(_, numbers) => numbers.is_empty(),
        _ => false,
    });
    if all_cancelled {
        return Ok(None);
    }
    let mut txn = database.begin_write().map_err(db)?;
    txn.set_durability(durability);
    // Reference counts change only if the transaction commits.
    let mut changed: HashMap<u64, u32> = HashMap::new();
    let now = unix_now();
    let mut written = 0;
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
        let mut messages = txn.open_table(MESSAGES).map_err(db)?;
        let mut queue = txn.open_table(QUEUE).map_err(db)?;
        let mut wills = txn.open_table(WILLS).map_err(db)?;
        let mut retained = txn.open_table(crate::retained::TABLE).map_err(db)?;
        let mut incoming = txn.open_table(INCOMING).map_err(db)?;
        let mut sent = txn.open_table(SENT).map_err(db)?;
        let mut releasing = txn.open_table(RELEASING).map_err(db)?;
        let release = |number: u64,
                       messages: &mut redb::Table<u64, &[u8]>,
                       changed: &mut HashMap<u64, u32>|
         -> Result<(), StoreError> {
            let count = changed
                .entry(number)
                .or_insert_with(|| refs.get(&number).copied().unwrap_or(0));
            *count = count.saturating_sub(1);
            if *count == 0 {
                messages.remove(number).map_err(db)?;
            }
            Ok(())
        };
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                Op::Session(client_id, record) => {
                    sessions
                        .insert(client_id.as_str(), record.encode().as_slice())
                        .map_err(db)?;
                }
                Op::EndSession(client_id) => {
                    sessions.remove(client_id.as_str()).map_err(db)?;
                    wills.remove(client_id.as_str()).map_err(db)?;
                    for flows in [&mut incoming, &mut releasing] {
                        flows
                            .extract_from_if(
                                (client_id.as_str(), 0)..=(client_id.as_str(), u16::MAX),
                                |_, _| true,
                            )
                            .map_err(db)?
                            .for_each(drop);
                    }
                    sent.extract_from_if(
                        (client_id.as_str(), 0)..=(client_id.as_str(), u64::MAX),
                        |_, _| true,
                    )
                    .map_err(db)?
                    .for_each(drop);
                    let numbers: Vec<u64> = queue
                        .extract_from_if(
                            (client_id.as_str(), 0)..=(client_id.as_str(), u64::MAX),
                            |_, _| true,
                        )
                        .map_err(db)?
                        .filter_map(|e| e.ok().map(|(k, _)| k.value().1))
                        .collect();
                    for number in numbers {
                        release(number, &mut messages, &mut changed)?;
                    }
                }
                Op::Will(client_id, will) => match will {
                    Some(w) => {
                        let v = w.encode(now).map_err(StoreError::Db)?;
                        wills.insert(client_id.as_str(), v.as_slice()).map_err(db)?;
                    }
                    None => {
                        wills.remove(client_id.as_str()).map_err(db)?;
                    }
                },
                Op::Enqueue {
                    number, message, ..
                } => {
                    if here.keeps(*number).next().is_none() {
                        continue;
                    }
                    let v = message.encode(now).map_err(StoreError::Db)?;
                    messages.insert(*number, v.as_slice()).map_err(db)?;
                    written += 1;
                    let mut added = 0;
                    for c in here.keeps(*number) {
                        if queue
                            .insert((c.as_str(), *number), ())
                            .map_err(db)?
                            .is_none()
                        {
                            added += 1;
                        }
                    }
                    let count = changed
                        .entry(*number)
                        .or_insert_with(|| refs.get(number).copied().unwrap_or(0));
                    *count += added;
                }
                Op::Ack(client_id, numbers) => {
                    for &number in numbers {
                        sent.remove((client_id.as_str(), number)).map_err(db)?;
                        if queue
                            .remove((client_id.as_str(), number))
                            .map_err(db)?
                            .is_some()
                        {
                            release(number, &mut messages, &mut changed)?;
                        }
                    }
                }
                Op::Sent {
                    client_id,
                    number,
                    pkid,
                } => {
                    // Only for a message still queued: an acknowledgement may have come
                    // first (it goes to the store without waiting).
                    if queue
                        .get((client_id.as_str(), *number))
                        .map_err(db)?
                        .is_some()
                    {
                        sent.insert((client_id.as_str(), *number), *pkid)
                            .map_err(db)?;
                    }
                }
                Op::Released {
                    client_id,
                    number,
                    pkid,
                } => {
                    releasing
                        .insert((client_id.as_str(), *pkid), ())
                        .map_err(db)?;
                    sent.remove((client_id.as_str(), *number)).map_err(db)?;
                    if queue
                        .remove((client_id.as_str(), *number))
                        .map_err(db)?
                        .is_some()
                    {
                        release(*number, &mut messages, &mut changed)?;
                    }
                }
                Op::Completed(client_id, pkid) => {
                    releasing.remove((client_id.as_str(), *pkid)).map_err(db)?;
                }
                Op::Incoming {
                    client_id,
                    pkid,
                    open,
                } => {
                    if *open {
                        incoming
                            .insert((client_id.as_str(), *pkid), ())
                            .map_err(db)?;
                    } else {
                        incoming.remove((client_id.as_str(), *pkid)).map_err(db)?;
                    }
                }
                Op::Retained(topic, value) => match value {
                    Some(v) => {
                        retained.insert(topic.as_str(), v.as_slice()).map_err(db)?;
                    }
                    None => {
                        retained.remove(topic.as_str()).map_err(db)?;
                    }
                },
            }
        }
    }
    txn.commit().map_err(db)?;
    for (number, count) in changed {
        if count == 0 {
            refs.remove(&number);
        } else {
            refs.insert(number, count);
        }
    }
    Ok(Some(written))
}

#[cfg(test)]
mod tests;
