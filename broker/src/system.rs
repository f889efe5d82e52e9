//! The broker's own link to the router, through which it publishes what no client
//! connection carries: last wills, and the retained messages restored at start.
//!
//! It sits beside the router (below sessions and connections), so that sessions can
//! publish a will without reaching back up to the state the connections share.

use crate::marker::{self, Mark};
use crate::retained::{RetainedMessage, RetainedStore};
use crate::retained_index::RetainedIndex;
use crate::router::RouterSlot;
use crate::session::Will;
use crate::store::StoredMessage;
use rumqttd::protocol::{LastWill, LastWillProperties, Publish, PublishProperties};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Client id of the broker's own router link; no client id can map to it (see
/// `router::router_client_id`).
pub(crate) const SYSTEM_CLIENT_ID: &str = "%sealpost-system";

/// The broker's own router link, and the retained store its retained wills go to.
pub struct SystemLink {
    slot: Mutex<RouterSlot>,
    retained: Arc<RetainedStore>,
    index: Arc<RetainedIndex>,
}

impl SystemLink {
    /// Wraps the broker's own router slot; `index` follows the retained messages it
    /// routes (see `retained_index`).
    pub(crate) fn new(
        slot: RouterSlot,
        retained: Arc<RetainedStore>,
        index: Arc<RetainedIndex>,
    ) -> SystemLink {
        SystemLink {
            slot: Mutex::new(slot),
            retained,
            index,
        }
    }

    /// Publishes a message on the broker's own link. Sent at QoS 0 to the router (which
    /// then needs no acknowledgement from us) with the intended QoS in the marker that
    /// the edge applies on delivery (see `marker`).
    async fn publish(
        &self,
        topic: bytes::Bytes,
        payload: bytes::Bytes,
        mark: Mark,
        props: Option<PublishProperties>,
    ) {
        let publish = Publish::new(topic, payload, mark.retain);
        let mut packets = VecDeque::new();
        // Under the lock, so that the index sees retained messages in the router's order.
        let mut slot = self.slot.lock().await;
        marker::route(publish, props, mark, Some(&self.index), &mut packets);
        if !slot.send_batch(&mut packets).await {
            warn!("broker link to the router is gone; message dropped");
        }
    }

    /// Publishes a client's last will (already checked against the ACL at CONNECT).
    pub async fn publish_will(&self, will: Will) {
        self.publish_message(will_message(&will)).await
    }

    /// Publishes a message of the broker's own (a will), storing it first as the
    /// topic's retained message if it is one.
    pub(crate) async fn publish_message(&self, m: StoredMessage) {
        if m.retain {
            let Ok(topic) = std::str::from_utf8(&m.topic) else {
                return;
            };
            let stored = self
                .retained
                .put(&RetainedMessage {
                    topic: topic.to_owned(),
                    qos: m.qos,
                    payload: m.payload.clone(),
                    properties: m.properties.as_deref().cloned(),
                })
                .await;
            if let Err(e) = stored {
                warn!(error = %e, "retained will not persisted");
            }
        }
        let mark = Mark::new(m.qos, m.retain, 0);
        self.publish(m.topic, m.payload, mark, m.properties.map(|p| *p))
            .await;
    }

    /// Publishes the retained messages read from the store at start.
    pub(crate) async fn replay(&self, messages: Vec<RetainedMessage>) {
        let count = messages.len();
        for m in messages {
            let topic = bytes::Bytes::copy_from_slice(m.topic.as_bytes());
            self.publish(topic, m.payload, Mark::new(m.qos, true, 0), m.properties)
                .await;
        }
        if count > 0 {
            info!(count, "retained messages restored");
        }
    }
}

/// A will as the message it becomes (its MQTT 5 will properties, but the delay, become
/// publish properties).
pub(crate) fn will_message(will: &Will) -> StoredMessage {
    let (will, props) = &**will;
    StoredMessage {
        topic: will.topic.clone(),
        qos: will.qos as u8,
        retain: will.retain,
        origin: 0,
        payload: will.message.clone(),
        properties: props.as_ref().map(|p| {
            Box::new(PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
                content_type: p.content_type.clone(),
                ..Default::default()
            })
        }),
    }
}

/// A will read back from the store (see [`will_message`]).
pub(crate) fn message_will(m: StoredMessage) -> Will {
    let will = LastWill {
        topic: m.topic,
        message: m.payload,
        qos: rumqttd::protocol::qos(m.qos).unwrap_or(rumqttd::protocol::QoS::AtMostOnce),
        retain: m.retain,
    };
    let props = m.properties.map(|p| LastWillProperties {
        delay_interval: None,
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
    });
    Box::new((will, props))
}
