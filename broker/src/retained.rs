//! Durable retained messages.
//!
//! The router keeps retained messages in memory; this store keeps a copy on disk (redb)
//! so that they (key messages above all) survive a restart, and replays them into the
//! router at start. They live in the `retained` table of the broker's store
//! ([`crate::store`]: the data directory's database, or the file of the older
//! `[retained] path` setting), whose writer batches them into transactions; a retained
//! PUBLISH is forwarded to the router only once it is committed.
//!
//! MQTT 5 properties are kept with the message, and so is the time it was stored: a
//! message expiry interval goes on counting while the broker is down, and a message
//! that expired meanwhile is deleted at start instead of being replayed.

use crate::store::{self, decode_publish, encode_publish, unix_now, Op, Store};
use bytes::Bytes;
use redb::{ReadableTable, TableDefinition};
use rumqttd::protocol::PublishProperties;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

pub use crate::store::StoreError;

/// The table of retained messages, by topic.
pub(crate) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// First byte of a stored value: then the QoS, when the message was stored (seconds
/// since the Unix epoch, u64 big-endian) and the message as an MQTT 5 PUBLISH in
/// rumqttd's encoding, which carries the properties without a codec of our own. Values
/// of the first format, the QoS (0-2) followed by the payload, are still read.
const STORED_PUBLISH: u8 = 0xff;

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
    /// MQTT 5 properties as published; when read back, the message expiry interval is
    /// what is left of it.
    pub properties: Option<PublishProperties>,
}

impl RetainedMessage {
    /// The stored form (see [`STORED_PUBLISH`]).
    fn encode(&self, now: u64) -> Result<Vec<u8>, StoreError> {
        let packet = encode_publish(
            self.topic.as_bytes(),
            &self.payload,
            self.properties.clone(),
        )
        .map_err(StoreError::Db)?;
        let mut v = Vec::with_capacity(10 + packet.len());
        v.push(STORED_PUBLISH);
        v.push(self.qos);
        v.extend_from_slice(&now.to_be_bytes());
        v.extend_from_slice(&packet);
        Ok(v)
    }

    /// Reads a stored value; `Ok(None)` for a message whose expiry interval ran out
    /// (by `now`) since it was stored, `Err(())` for one that cannot be read.
    fn decode(topic: &str, value: &[u8], now: u64) -> Result<Option<RetainedMessage>, ()> {
        let (&first, rest) = value.split_first().ok_or(())?;
        if first != STORED_PUBLISH {
            return Ok(Some(RetainedMessage {
                topic: topic.to_owned(),
                qos: first.min(2),
                payload: Bytes::copy_from_slice(rest),
                properties: None,
            }));
        }
        let (&qos, rest) = rest.split_first().ok_or(())?;
        let (stored_at, packet) = rest.split_first_chunk::<8>().ok_or(())?;
        let elapsed = now.saturating_sub(u64::from_be_bytes(*stored_at));
        let (publish, mut properties) = decode_publish(packet).ok_or(())?;
        if !store::expire(&mut properties, elapsed) {
            return Ok(None);
        }
        Ok(Some(RetainedMessage {
            topic: topic.to_owned(),
            qos: qos.min(2),
            payload: publish.payload,
            properties,
        }))
    }
}

/// Handle to the retained messages on disk; cheap operations, durable writes.
pub struct RetainedStore {
    /// `None`: in-memory mode, the router's own copy is all there is.
    store: Option<Arc<Store>>,
}

impl RetainedStore {
    /// A store that persists nothing (no data directory, no `retained.path`).
    pub fn in_memory() -> RetainedStore {
        RetainedStore { store: None }
    }

    /// Opens (or creates) a database of its own at `path` (the `[retained] path`
    /// setting) and returns the messages it holds; see [`RetainedStore::within`].
    pub fn open(path: &Path) -> Result<(RetainedStore, Vec<RetainedMessage>), StoreError> {
        Self::open_at(path, unix_now())
    }

    fn open_at(path: &Path, now: u64) -> Result<(RetainedStore, Vec<RetainedMessage>), StoreError> {
        let (store, _) = Store::open(path, store::Sync::Always)?;
        Self::within_at(Arc::new(store), now)
    }

    /// Keeps retained messages in `store` and returns those it holds, after deleting
    /// those that expired while the broker was down. A value it cannot read is an
    /// error: the broker does not start rather than lose a retained key message
    /// without a word.
    pub fn within(store: Arc<Store>) -> Result<(RetainedStore, Vec<RetainedMessage>), StoreError> {
        Self::within_at(store, unix_now())
    }

    fn within_at(
        store: Arc<Store>,
        now: u64,
    ) -> Result<(RetainedStore, Vec<RetainedMessage>), StoreError> {
        let Some(database) = store.database() else {
            return Ok((RetainedStore { store: None }, Vec::new()));
        };
        let mut messages = Vec::new();
        let txn = database.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(TABLE).map_err(db)?;
            let mut expired = Vec::new();
            for entry in table.iter().map_err(db)? {
                let (k, v) = entry.map_err(db)?;
                match RetainedMessage::decode(k.value(), v.value(), now) {
                    Ok(Some(m)) => messages.push(m),
                    Ok(None) => expired.push(k.value().to_owned()),
                    Err(()) => {
                        return Err(StoreError::Corrupt {
                            path: store.path().unwrap_or(Path::new("")).to_owned(),
                            what: format!("the retained message of topic {:?}", k.value()),
                        })
                    }
                }
            }
            for topic in expired {
                table.remove(topic.as_str()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok((RetainedStore { store: Some(store) }, messages))
    }

    /// Stores (or, with an empty payload, deletes) the retained message of its topic and
    /// waits until it is committed.
    pub async fn put(&self, message: &RetainedMessage) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let value = match message.payload.is_empty() {
            true => None,
            false => Some(message.encode(unix_now())?),
        };
        store
            .write(vec![Op::Retained(message.topic.clone(), value)])
            .await
    }

    /// Finishes pending writes and closes the database.
    pub fn close(&self) {
        if let Some(store) = &self.store {
            store.close();
        }
    }
}

/// Which identity created each retained topic, and how many each holds, to bound the
/// retained topics one identity can make the broker keep (`limits.max_retained_per_client`).
/// Only topics retained by clients since the start are known; the map holds one entry
/// per such topic, so it is bounded by the limit times the identities.
#[derive(Debug, Default)]
pub struct RetainedOwners {
    inner: Mutex<Owners>,
}

#[derive(Debug, Default)]
struct Owners {
    by_topic: HashMap<String, String>,
    per_owner: HashMap<String, usize>,
}

impl Owners {
    fn release(&mut self, topic: &str) {
        if let Some(owner) = self.by_topic.remove(topic) {
            if let Some(n) = self.per_owner.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    self.per_owner.remove(&owner);
                }
            }
        }
    }
}

impl RetainedOwners {
    /// Records that `owner` sets (or, with `clear`, deletes) the retained message of
    /// `topic`. Returns false, recording nothing, when that would be a new topic for
    /// `owner` beyond `max` (0: no limit); replacing its own or deleting is always
    /// allowed.
    pub fn set(&self, topic: &str, owner: &str, clear: bool, max: usize) -> bool {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        let mut o = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if clear {
            o.release(topic);
            return true;
        }
        if o.by_topic.get(topic).is_some_and(|t| t == owner) {
            return true;
        }
        if max > 0 && o.per_owner.get(owner).copied().unwrap_or(0) >= max {
            return false;
        }
        o.release(topic);
        o.by_topic.insert(topic.to_owned(), owner.to_owned());
        *o.per_owner.entry(owner.to_owned()).or_default() += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, qos: u8, payload: &'static [u8]) -> RetainedMessage {
        RetainedMessage {
            topic: topic.into(),
            qos,
            payload: Bytes::from_static(payload),
            properties: None,
        }
    }

    /// Writes `value` under `topic` as another program (or an older broker) would.
    fn write_raw(path: &Path, topic: &str, value: &[u8]) {
        let database = redb::Database::create(path).unwrap();
        let txn = database.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(topic, value).unwrap();
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn messages_survive_reopen_and_empty_payload_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retained.redb");
        {
            let (store, initial) = RetainedStore::open(&path).unwrap();
            assert!(initial.is_empty());
            store.put(&message("a/b", 1, b"one")).await.unwrap();
            store.put(&message("a/c", 0, b"two")).await.unwrap();
            store.put(&message("a/c", 0, b"")).await.unwrap();
            store.close();
        }
        let (_store, initial) = RetainedStore::open(&path).unwrap();
        assert_eq!(initial, vec![message("a/b", 1, b"one")]);
    }

    #[tokio::test]
    async fn properties_survive_and_expiry_counts_the_time_the_broker_was_down() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retained.redb");
        let with = |topic, expiry| RetainedMessage {
            properties: Some(PublishProperties {
                message_expiry_interval: expiry,
                content_type: Some("application/cose".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            }),
            ..message(topic, 2, b"payload")
        };
        {
            let (store, _) = RetainedStore::open(&path).unwrap();
            store.put(&with("long", Some(100))).await.unwrap();
            store.put(&with("short", Some(10))).await.unwrap();
            store.put(&with("forever", None)).await.unwrap();
            store.close();
        }
        // 40 s later (a second more if the clock ticked since the writes).
        let (store, mut back) = RetainedStore::open_at(&path, unix_now() + 40).unwrap();
        store.close();
        back.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(
            back.len(),
            2,
            "the 10 s message expired while the broker was down"
        );
        assert_eq!(back[0], with("forever", None));
        let left = back[1].properties.as_ref().unwrap().message_expiry_interval;
        assert!(matches!(left, Some(59 | 60)), "expiry left: {left:?}");
        assert_eq!(back[1], with("long", left));
        // The expired message was deleted, not only skipped.
        let (_store, again) = RetainedStore::open(&path).unwrap();
        assert!(again.iter().all(|m| m.topic != "short"));
    }

    #[test]
    fn values_of_the_first_format_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retained.redb");
        write_raw(&path, "old/topic", b"\x01payload");
        let (_store, back) = RetainedStore::open(&path).unwrap();
        assert_eq!(back, vec![message("old/topic", 1, b"payload")]);
    }

    #[test]
    fn an_unreadable_value_stops_the_open_with_an_error() {
        for value in [
            &b""[..],
            &[STORED_PUBLISH, 1, 0, 0][..],
            &[STORED_PUBLISH, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x30][..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("retained.redb");
            write_raw(&path, "bad", value);
            assert!(matches!(
                RetainedStore::open(&path),
                Err(StoreError::Corrupt { what, .. }) if what.contains("\"bad\"")
            ));
        }
    }
}
