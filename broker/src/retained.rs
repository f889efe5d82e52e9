//! Durable retained messages.
//!
//! The router keeps retained messages in memory; this store keeps a copy on disk (redb)
//! so that they (key messages above all) survive a restart, and replays them into the
//! router at start. Writes go through one thread that batches them into transactions;
//! a retained PUBLISH is forwarded to the router only once it is committed.

use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("retained store: {0}")]
    Db(String),
    /// The store has been closed.
    #[error("retained store is closed")]
    Closed,
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// A retained message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    /// Topic name.
    pub topic: String,
    /// QoS it was published with.
    pub qos: u8,
    /// Opaque payload (never decoded).
    pub payload: Bytes,
}

struct Write {
    topic: String,
    value: Option<Vec<u8>>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the store; cheap operations, durable writes.
pub struct RetainedStore {
    tx: Mutex<Option<mpsc::Sender<Write>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RetainedStore {
    /// A store that persists nothing (no `retained.path` configured).
    pub fn in_memory() -> RetainedStore {
        RetainedStore {
            tx: Mutex::new(None),
            thread: Mutex::new(None),
        }
    }

    /// Opens (or creates) the database and returns the messages it holds.
    pub fn open(path: &Path) -> Result<(RetainedStore, Vec<RetainedMessage>), StoreError> {
        let database = Database::create(path).map_err(db)?;
        let mut messages = Vec::new();
        {
            let txn = database.begin_write().map_err(db)?;
            txn.open_table(TABLE).map_err(db)?;
            txn.commit().map_err(db)?;
            let read = database.begin_read().map_err(db)?;
            let table = read.open_table(TABLE).map_err(db)?;
            for entry in table.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                let value = v.value();
                let Some((&qos, payload)) = value.split_first() else {
                    continue;
                };
                messages.push(RetainedMessage {
                    topic: k.value().to_owned(),
                    qos: qos.min(2),
                    payload: Bytes::copy_from_slice(payload),
                });
            }
        }
        let (tx, rx) = mpsc::channel::<Write>();
        let thread = std::thread::Builder::new()
            .name("retained-store".into())
            .spawn(move || writer(database, rx))
            .map_err(db)?;
        Ok((
            RetainedStore {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            },
            messages,
        ))
    }

    /// Stores (or, with an empty payload, deletes) the retained message of `topic` and
    /// waits until it is committed.
    pub async fn put(&self, topic: &str, qos: u8, payload: &[u8]) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let value = (!payload.is_empty()).then(|| {
            let mut v = Vec::with_capacity(payload.len() + 1);
            v.push(qos);
            v.extend_from_slice(payload);
            v
        });
        {
            let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(tx) = guard.as_ref() else {
                // In-memory mode: the router's own copy is all there is.
                return Ok(());
            };
            tx.send(Write {
                topic: topic.to_owned(),
                value,
                done,
            })
            .map_err(|_| StoreError::Closed)?;
        }
        wait.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Finishes pending writes and closes the database.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for RetainedStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer(database: Database, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        let result = commit(&database, &batch);
        for w in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Db(e.to_string())),
            };
            let _ = w.done.send(r);
        }
    }
}

fn commit(database: &Database, batch: &[Write]) -> Result<(), StoreError> {
    let txn = database.begin_write().map_err(db)?;
    {
        let mut table = txn.open_table(TABLE).map_err(db)?;
        for w in batch {
            match &w.value {
                Some(v) => {
                    table.insert(w.topic.as_str(), v.as_slice()).map_err(db)?;
                }
                None => {
                    table.remove(w.topic.as_str()).map_err(db)?;
                }
            }
        }
    }
    txn.commit().map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_survive_reopen_and_empty_payload_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retained.redb");
        {
            let (store, initial) = RetainedStore::open(&path).unwrap();
            assert!(initial.is_empty());
            store.put("a/b", 1, b"one").await.unwrap();
            store.put("a/c", 0, b"two").await.unwrap();
            store.put("a/c", 0, b"").await.unwrap();
            store.close();
        }
        let (_store, initial) = RetainedStore::open(&path).unwrap();
        assert_eq!(
            initial,
            vec![RetainedMessage {
                topic: "a/b".into(),
                qos: 1,
                payload: Bytes::from_static(b"one")
            }]
        );
    }
}
