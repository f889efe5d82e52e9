//! CORS on the KDC (issue 17, item 3): a web page of a configured origin may log in and
//! fetch keys; preflights of other origins get no CORS answer; `*` is never sent, nor
//! `Access-Control-Allow-Credentials`. A real HTTPS KDC run by the publisher, a real
//! HTTP client (hyper over rustls, trusting the sealpost CA).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use sealpost_certs::pemfile;
use sealpost_publisher::kdc::KdcError;
use sealpost_publisher::PublisherError;
use sealpost_tests::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PAGE: &str = "https://console.example:8443";

/// One HTTPS request to the KDC at `addr`; the status and headers of the answer.
async fn request(
    pki: &Pki,
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = pemfile::decode(&pki.ca_pem(), pemfile::CERTIFICATE).unwrap();
    roots.add(CertificateDer::from(ca)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender
        .send_request(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn preflight_headers(origin: &str) -> Vec<(&str, &str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ]
}

/// Never `*`, never credentials, whatever the answer.
fn assert_no_wildcard(headers: &HeaderMap) {
    assert_ne!(
        headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    assert!(headers
        .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_answers_cors_for_configured_origins_only() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pki = Pki::new("cors CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let mut config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        config.kdc.as_mut().unwrap().allowed_origins =
            vec![PAGE.to_owned(), "http://127.0.0.1:5173".to_owned()];
        let p = publisher(config).await;
        let addr = p.kdc_local_addr().await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        let prefix = alice
            .kdc
            .trim_start_matches("https://")
            .split_once('/')
            .map_or(String::new(), |(_, path)| format!("/{path}"));
        let login = format!("{prefix}/login");

        // A configured origin's preflight: 204, its own origin echoed, the methods and
        // headers a page needs.
        let (status, h, _) = request(
            &pki,
            addr,
            Method::OPTIONS,
            &login,
            &preflight_headers(PAGE),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], PAGE);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(h[header::VARY], "Origin");
        assert_no_wildcard(&h);

        // Any other origin (also a look-alike, and "null"): the ordinary 405, no CORS.
        for other in [
            "https://evil.example",
            "https://console.example",
            "https://console.example:8443.evil",
            "null",
        ] {
            let (status, h, body) = request(
                &pki,
                addr,
                Method::OPTIONS,
                &login,
                &preflight_headers(other),
                "",
            )
            .await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{other}");
            assert!(
                h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{other}"
            );
            assert!(body.contains("method_not_allowed"), "{body}");
            assert_no_wildcard(&h);
        }

        // The real requests of an allowed page carry its origin; a login and a key fetch
        // work as from any client.
        let credentials = format!(r#"{{"reader":"alice","password":"{}"}}"#, alice.password);
        let (status, h, body) = request(
            &pki,
            addr,
            Method::POST,
            &login,
            &[("origin", PAGE), ("content-type", "application/json")],
            &credentials,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], PAGE);
        assert_no_wildcard(&h);
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
        let (status, h, _) = request(
            &pki,
            addr,
            Method::GET,
            &format!("{prefix}/epochs/999"),
            &[
                ("origin", "http://127.0.0.1:5173"),
                ("authorization", &bearer),
            ],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "an epoch never issued");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://127.0.0.1:5173"
        );

        // Another origin's request is answered (non-browser clients send no Origin), but
        // without CORS headers, so a browser does not let that page read it.
        let (status, h, _) = request(
            &pki,
            addr,
            Method::POST,
            &login,
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            &credentials,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h[header::VARY], "Origin");
        p.disconnect().await.unwrap();
    })
    .await
    .expect("finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_without_origins_sends_no_cors_headers_and_refuses_wildcards() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pki = Pki::new("cors CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        let p = publisher(config.clone()).await;
        let addr = p.kdc_local_addr().await.unwrap();
        let (status, h, _) = request(
            &pki,
            addr,
            Method::OPTIONS,
            "/login",
            &preflight_headers(PAGE),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(h.get(header::VARY).is_none());
        p.disconnect().await.unwrap();

        // "*" (or any origin that is not scheme://host[:port]) stops the KDC at start.
        for bad in ["*", "null", "https://console.example/"] {
            let mut wildcard = config.clone();
            wildcard.kdc.as_mut().unwrap().allowed_origins = vec![bad.to_owned()];
            match sealpost_publisher::Publisher::connect(wildcard).await {
                Err(PublisherError::Kdc(KdcError::InvalidOrigin(o))) => assert_eq!(o, bad),
                Err(other) => panic!("{bad}: wrong error {other}"),
                Ok(_) => panic!("{bad}: the KDC started"),
            }
        }
    })
    .await
    .expect("finished in time");
}
