//! The broker's own link to the router, through which it publishes what no client
//! connection carries: last wills, and the retained messages restored at start.
//!
//! It sits beside the router (below sessions and connections), so that sessions can
//! publish a will without reaching back up to the state the connections share.

use crate::marker::{self, Mark};
use crate::retained::{RetainedMessage, RetainedStore};
use crate::router::RouterSlot;
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
}

impl SystemLink {
    /// Wraps the broker's own router slot.
    pub(crate) fn new(slot: RouterSlot, retained: Arc<RetainedStore>) -> SystemLink {
        SystemLink {
            slot: Mutex::new(slot),
            retained,
        }
    }

    /// Publishes a message on the broker's own link. Sent at QoS 0 to the router (which
    /// then needs no acknowledgement from us) with the intended QoS in the marker that
    /// the edge applies on delivery (see `marker`).
    async fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: u8,
        retain: bool,
        props: Option<PublishProperties>,
    ) {
        let publish = Publish::new(
            bytes::Bytes::copy_from_slice(topic.as_bytes()),
            payload,
            retain,
        );
        let mut packets = VecDeque::new();
        marker::route(publish, props, Mark::new(qos, retain, 0), &mut packets);
        let mut slot = self.slot.lock().await;
        if !slot.send_batch(&mut packets).await {
            warn!(topic, "broker link to the router is gone; message dropped");
        }
    }

    /// Publishes a client's last will (already checked against the ACL at CONNECT).
    pub async fn publish_will(&self, will: (LastWill, Option<LastWillProperties>)) {
        let (will, props) = will;
        let Ok(topic) = std::str::from_utf8(&will.topic) else {
            return;
        };
        let qos = will.qos as u8;
        let props = props.map(|p| PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            content_type: p.content_type,
            ..Default::default()
        });
        if will.retain {
            let stored = self
                .retained
                .put(&RetainedMessage {
                    topic: topic.to_owned(),
                    qos,
                    payload: will.message.clone(),
                    properties: props.clone(),
                })
                .await;
            if let Err(e) = stored {
                warn!(error = %e, "retained will not persisted");
            }
        }
        self.publish(topic, will.message, qos, will.retain, props)
            .await;
    }

    /// Publishes the retained messages read from the store at start.
    pub(crate) async fn replay(&self, messages: Vec<RetainedMessage>) {
        let count = messages.len();
        for m in messages {
            self.publish(&m.topic, m.payload, m.qos, true, m.properties)
                .await;
        }
        if count > 0 {
            info!(count, "retained messages restored");
        }
    }
}
