//! A scripted MQTT 3.1.1 broker for tests that need a broker to misbehave in one precise
//! way (acknowledge late, store late): the test decides what each packet gets in reply.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet read or written.
const MAX: usize = 1 << 20;

/// One client connection of a scripted broker.
pub struct FakeConnection {
    stream: TcpStream,
    input: BytesMut,
}

impl FakeConnection {
    /// Serves the client connected on `stream`.
    pub fn new(stream: TcpStream) -> FakeConnection {
        FakeConnection {
            stream,
            input: BytesMut::new(),
        }
    }

    /// The next packet from the client; `None` when it closed the connection or sent
    /// something that does not parse.
    pub async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.input, MAX) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(_) => return None,
            }
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends `packets` to the client; false if the connection is gone.
    pub async fn write(&mut self, packets: impl IntoIterator<Item = Packet>) -> bool {
        let mut output = BytesMut::new();
        for packet in packets {
            packet.write(&mut output, MAX).expect("encode packet");
        }
        self.stream.write_all(&output).await.is_ok()
    }
}
