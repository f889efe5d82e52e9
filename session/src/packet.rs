//! What the sessions ask their shell to publish.

use bytes::Bytes;

/// MQTT quality of service of a [`Packet`] (the shell maps it to its client's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QoS {
    /// At most once (QoS 0).
    AtMostOnce,
    /// At least once (QoS 1).
    AtLeastOnce,
    /// Exactly once (QoS 2).
    ExactlyOnce,
}

/// One MQTT PUBLISH for the shell to send, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Topic name.
    pub topic: String,
    /// Payload (an envelope, a key message, or empty to clear a retained key message).
    pub payload: Bytes,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
}

impl Packet {
    /// A retained QoS 1 packet: how key messages (and their clearing) travel.
    pub(crate) fn retained(topic: String, payload: Bytes) -> Packet {
        Packet {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }
}
