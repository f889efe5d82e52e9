//! The KDC's audit log: one line per key fetch (who, which epoch, when, outcome), and
//! never a password, token or key. A test binary of its own because it installs the
//! process-wide log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sealpost_subscriber::kdc::KdcClient;
use sealpost_subscriber::KdcError;
use sealpost_tests::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_audit_log_has_one_line_per_fetch_and_no_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("sealpost::kdc::audit=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    tokio::time::timeout(Duration::from_secs(120), async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        let auditor = p.add_reader("auditor").await.unwrap();
        let client = KdcClient::new(auditor.clone(), &pki.ca_pem()).unwrap();
        let token = client.login().await.unwrap();
        let key = client.fetch_key(&token, 1).await.unwrap();
        assert_eq!(
            client.fetch_key(&token, 99).await.unwrap_err(),
            KdcError::UnknownEpoch(99)
        );
        p.rotate().await.unwrap();
        let late = p.add_reader("latecomer").await.unwrap();
        let late_client = KdcClient::new(late, &pki.ca_pem()).unwrap();
        let late_token = late_client.login().await.unwrap();
        assert_eq!(
            late_client.fetch_key(&late_token, 1).await.unwrap_err(),
            KdcError::NotGranted(1)
        );
        late_client.fetch_key(&late_token, 2).await.unwrap();

        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let fetches: Vec<&str> = log.lines().filter(|l| l.contains("key fetch")).collect();
        assert_eq!(fetches.len(), 4, "{log}");
        let expect = [
            ("auditor", 1, "granted"),
            ("auditor", 99, "unknown_epoch"),
            ("latecomer", 1, "not_granted"),
            ("latecomer", 2, "granted"),
        ];
        for (line, (reader, epoch, outcome)) in fetches.iter().zip(expect) {
            assert!(line.contains(&format!("reader={reader}")), "{line}");
            assert!(line.contains("publisher=sensor-1"), "{line}");
            assert!(line.contains(&format!("epoch={epoch}")), "{line}");
            assert!(
                line.contains(&format!("outcome=\"{outcome}\""))
                    || line.contains(&format!("outcome={outcome}")),
                "{line}"
            );
            assert!(line.contains(" at="), "{line}");
        }
        let key_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.key.as_bytes());
        assert!(!log.contains(&auditor.password));
        assert!(!log.contains(&key_b64));
    })
    .await
    .expect("scenario finished within its time limit");
}
