//! Interoperability with the Mosquitto command-line clients (Debian `mosquitto-clients`).

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

async fn mosquitto_sub(port: u16, args: &[&str]) -> tokio::process::Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-W", "10"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)")
}

async fn mosquitto_pub(port: u16, args: &[&str]) -> std::process::Output {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, out)
        .await
        .expect("mosquitto_pub finished")
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)")
}

async fn output(child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("mosquitto_sub finished")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until a subscriber is registered by publishing probes it will also receive.
async fn wait_subscribed(port: u16, topic: &str, version: &str) {
    // mosquitto_sub has no "subscribed" signal on stdout; give it a bounded head start.
    let _ = (port, topic, version);
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn mosquitto_clients_v311_and_v5_at_every_qos() {
    let (broker, addr) = start(tcp_config()).await;
    let port = addr.port();
    for version in ["mqttv311", "mqttv5"] {
        let sub = mosquitto_sub(
            port,
            &["-V", version, "-t", "mq/#", "-q", "2", "-C", "3", "-v"],
        )
        .await;
        wait_subscribed(port, "mq/#", version).await;
        for qos in ["0", "1", "2"] {
            let out = mosquitto_pub(
                port,
                &[
                    "-V",
                    version,
                    "-t",
                    &format!("mq/{qos}"),
                    "-m",
                    &format!("m{qos}"),
                    "-q",
                    qos,
                ],
            )
            .await;
            assert!(
                out.status.success(),
                "{version} pub q{qos}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = output(sub).await;
        assert_eq!(text, "mq/0 m0\nmq/1 m1\nmq/2 m2\n", "{version}");
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn mosquitto_retained_message_reaches_a_late_subscriber() {
    let (broker, addr) = start(tcp_config()).await;
    let port = addr.port();
    let out = mosquitto_pub(
        port,
        &["-t", "keys/p1", "-m", "wrapped-key", "-r", "-q", "1"],
    )
    .await;
    assert!(out.status.success());
    let sub = mosquitto_sub(port, &["-V", "mqttv5", "-t", "keys/#", "-C", "1", "-v"]).await;
    assert_eq!(output(sub).await, "keys/p1 wrapped-key\n");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn mosquitto_and_rumqttc_exchange_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let mut r = V4::connect("rumqttc-side", addr).await;
    r.subscribe("mix/to-rumqttc", rumqttc::QoS::AtLeastOnce)
        .await;
    let out = mosquitto_pub(
        addr.port(),
        &[
            "-V",
            "mqttv5",
            "-t",
            "mix/to-rumqttc",
            "-m",
            "hi",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(out.status.success());
    let p = r.publish_msg().await.unwrap();
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
    broker.shutdown(WAIT).await;
}

/// Regression: the security center wrote Ed25519 keys as PKCS#8 v2, which OpenSSL 3.0
/// (mosquitto_pub, most C clients) cannot load, so a device could not present its
/// publisher certificate with them. Over TLS with that certificate, mosquitto_pub may
/// write the publisher's key topic, which only that certificate may.
#[tokio::test]
async fn mosquitto_pub_presents_a_publisher_certificate_of_the_security_center() {
    use common::pki::Pki;
    use sealpost_broker::config::ListenerKind;
    use sealpost_certs::Profile;
    let pki = Pki::new();
    let (broker, _) = start(pki.config(false)).await;
    let tls_port = broker.addr(ListenerKind::Tls).unwrap().port();
    let publisher = pki.issue(Profile::Publisher {
        id: "device-7".into(),
        topics: vec!["plant/7/#".into()],
    });
    let cert = pki.write("device-7.pem", &publisher.certificate_pem);
    let key = pki.write("device-7.key", &publisher.private_key_pem);
    let ca = pki.dir().join("ca.pem");
    let tls = |args: &[&str]| {
        let mut all = vec!["--cafile", ca.to_str().unwrap()];
        all.extend([
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        all.extend(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = tls(&[
        "-t",
        "sealpost/keys/device-7/reader",
        "-m",
        "k",
        "-r",
        "-q",
        "1",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mosquitto_pub(tls_port, &args).await;
    assert!(out.status.success(), "{out:?}");
    // Read back as the publisher itself (key messages go to their recipients and their
    // publisher only).
    let args = tls(&["-t", "sealpost/keys/device-7/#", "-C", "1", "-v"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sub = mosquitto_sub(tls_port, &args).await;
    assert_eq!(output(sub).await, "sealpost/keys/device-7/reader k\n");
    broker.shutdown(WAIT).await;
}
