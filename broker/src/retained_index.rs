//! The edge's view of the router's retained messages, for the subscriptions the router
//! will not send them to.
//!
//! rumqttd 0.20 sends a filter's retained messages only when the filter is new to the
//! connection's router session. MQTT answers a repeated SUBSCRIBE with them again
//! (3.1.1 §3.8.4; 5 §3.3.1.3, retain handling 0) while the flow of publications goes
//! on. Renewing the filter in the router (UNSUBSCRIBE, then SUBSCRIBE) would start its
//! delivery again from the end of the filter's log, skipping what the client had not
//! yet been sent (a resumed session's backlog above all), and in a resumed session it
//! does nothing at all: the router forgets a connection in its subscription map when
//! the connection ends and does not put the next one of the session back, so the
//! UNSUBSCRIBE finds nothing to remove. So the edge keeps, for each retained topic, the
//! message as it handed it to the router (marked payload, see `marker`; the `Bytes`
//! are the ones the router keeps, so an entry costs only its bookkeeping) and sends a
//! repeated subscription's matches itself (`connection::outbound`).
//!
//! It follows the packets the edge routes ([`crate::marker::route`]): a retained
//! PUBLISH replaces its topic's message, an empty one deletes it, as in the router.

use bytes::Bytes;
use rumqttd::protocol::{Publish, PublishProperties};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The retained messages routed so far, by topic.
#[derive(Debug, Default)]
pub(crate) struct RetainedIndex {
    by_topic: Mutex<HashMap<Bytes, Kept>>,
}

#[derive(Debug)]
struct Kept {
    publish: Publish,
    properties: Option<PublishProperties>,
    /// When it was routed: its MQTT 5 message expiry interval counts from here.
    at: Instant,
}

impl RetainedIndex {
    /// A retained message on its way to the router (marked payload, as routed).
    pub(crate) fn keep(&self, publish: &Publish, properties: &Option<PublishProperties>) {
        let kept = Kept {
            // Without the QoS and packet id it came with (a client's): the edge sends it
            // as the router would, which knows nothing of this copy.
            publish: Publish::new(publish.topic.clone(), publish.payload.clone(), true),
            properties: properties.clone(),
            at: Instant::now(),
        };
        self.lock().insert(publish.topic.clone(), kept);
    }

    /// An empty retained PUBLISH on its way to the router: the topic has none any more.
    pub(crate) fn forget(&self, topic: &[u8]) {
        self.lock().remove(topic);
    }

    /// The retained messages whose topic matches `filter`, as the router sends them at
    /// subscribe: RETAIN set, and with MQTT 5 message expiry what is left of the
    /// interval (a message whose interval ran out is left out, and forgotten).
    pub(crate) fn matching(&self, filter: &str) -> Vec<(Publish, Option<PublishProperties>)> {
        let now = Instant::now();
        let mut by_topic = self.lock();
        let mut out = Vec::new();
        by_topic.retain(|topic, kept| {
            let mut properties = kept.properties.clone();
            if let Some(interval) = properties
                .as_mut()
                .and_then(|p| p.message_expiry_interval.as_mut())
            {
                let elapsed = now.duration_since(kept.at).as_secs();
                if elapsed >= u64::from(*interval) {
                    return false;
                }
                *interval -= elapsed as u32;
            }
            let matches = std::str::from_utf8(topic)
                .is_ok_and(|topic| crate::topic::filter_matches(filter, topic));
            if matches {
                let mut publish = kept.publish.clone();
                publish.retain = true;
                out.push((publish, properties));
            }
            true
        });
        out
    }

    /// How many topics have a retained message.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Kept>> {
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        self.by_topic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &'static str, payload: &'static str) -> Publish {
        Publish::new(
            Bytes::from_static(topic.as_bytes()),
            Bytes::from_static(payload.as_bytes()),
            true,
        )
    }

    fn payloads(found: Vec<(Publish, Option<PublishProperties>)>) -> Vec<Bytes> {
        let mut p: Vec<Bytes> = found.into_iter().map(|(p, _)| p.payload).collect();
        p.sort();
        p
    }

    #[test]
    fn a_filter_finds_the_latest_message_of_each_matching_topic() {
        let index = RetainedIndex::default();
        index.keep(&publish("a/1", "old"), &None);
        index.keep(&publish("a/1", "new"), &None);
        index.keep(&publish("a/2", "two"), &None);
        index.keep(&publish("b/1", "other"), &None);
        index.keep(&publish("$sys/a", "dollar"), &None);
        assert_eq!(payloads(index.matching("a/+")), ["new", "two"]);
        assert_eq!(payloads(index.matching("a/1")), ["new"]);
        // MQTT: `$` topics are not matched by a wildcard at the first level.
        assert_eq!(payloads(index.matching("#")), ["new", "other", "two"]);
        assert!(index.matching("a/1").iter().all(|(p, _)| p.retain));
        index.forget(b"a/1");
        assert_eq!(payloads(index.matching("a/+")), ["two"]);
    }

    #[test]
    fn what_is_left_of_the_expiry_is_given_and_an_expired_message_forgotten() {
        let index = RetainedIndex::default();
        let expiring = |secs| {
            Some(PublishProperties {
                message_expiry_interval: Some(secs),
                ..Default::default()
            })
        };
        index.keep(&publish("e/long", "long"), &expiring(3600));
        index.keep(&publish("e/gone", "gone"), &expiring(0));
        let found = index.matching("e/#");
        assert_eq!(found.len(), 1);
        let left = found[0].1.as_ref().and_then(|p| p.message_expiry_interval);
        assert!(left.is_some_and(|s| s <= 3600 && s > 3590), "{left:?}");
        assert_eq!(index.len(), 1);
    }
}
