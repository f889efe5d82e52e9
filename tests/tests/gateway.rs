//! The REST publishing gateway (issue 17, item 4) end to end: a real gateway over a real
//! publisher and broker, a real HTTP client (hyper), a real subscriber. Every answer's
//! status, and every error code, must be the ones `publisher-sdk/gateway.openapi.json`
//! documents for that path and method, and the file must describe exactly the routes the
//! gateway serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sealpost_publisher::gateway::tokens::TokenStore;
use sealpost_publisher::gateway::{Gateway, GatewayError};
use sealpost_tests::*;
use serde_json::Value;
use tokio::net::TcpStream;

/// A request and its expected refusal: method, path, route template, token, content type,
/// body, status, error code.
type Case<'a> = (
    Method,
    String,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

fn openapi() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../publisher-sdk/gateway.openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The documented error codes.
fn error_codes(api: &Value) -> BTreeSet<String> {
    api["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

struct Client {
    addr: SocketAddr,
    api: Value,
    /// Every (path template, method, status, error code) seen, for the coverage check.
    seen: Vec<(String, String, u16, Option<String>)>,
}

impl Client {
    /// One request; checks the answer against the OpenAPI file, returns status and JSON.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        template: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = content_type {
            req = req.header(header::CONTENT_TYPE, c);
        }
        let response = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
        let m = method.as_str().to_ascii_lowercase();
        let code = json["error"].as_str().map(str::to_owned);
        if let Some(c) = &code {
            assert!(
                error_codes(&self.api).contains(c),
                "undocumented error code {c}"
            );
            assert!(json["message"].is_string(), "{json}");
        }
        if self.api["paths"]
            .get(template)
            .is_some_and(|p| p.get(&m).is_some())
        {
            let documented = &self.api["paths"][template][&m]["responses"][status.as_str()];
            assert!(
                !documented.is_null(),
                "{m} {template} answered {status}, which the OpenAPI file does not document"
            );
        } else {
            assert!(
                matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
                "an undocumented route answered {status} {json}"
            );
        }
        self.seen
            .push((template.to_owned(), m, status.as_u16(), code));
        (status, json)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_seals_what_backends_post_and_answers_as_documented() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let pki = Pki::new("gateway CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("backend-1", &["push/#"]);
        let alice = pki.subscriber("alice");
        let config = pki.publisher_config(&broker, &pub_cert, "pub");
        let state_dir = config.state_dir.clone();
        let publisher = Arc::new(publisher(config).await);
        let mut sub = subscriber(pki.subscriber_config(&broker, &alice), "push/#").await;

        // Tokens, as `sealpost-gateway token add` issues them.
        let mut store = TokenStore::open(&state_dir).unwrap();
        let backend = store
            .issue("backend", &["push/alice/#".into()], false)
            .unwrap();
        let operator = store.issue("ops", &[], true).unwrap();
        let gateway = Gateway::start(
            "127.0.0.1:0".parse().unwrap(),
            publisher.clone(),
            state_dir.clone(),
        )
        .await
        .unwrap();
        let mut c = Client {
            addr: gateway.local_addr(),
            api: openapi(),
            seen: Vec::new(),
        };
        const TOPIC: &str = "/v1/topics/{topic}";
        const READERS: &str = "/v1/readers";
        const READER: &str = "/v1/readers/{id}";

        // An operator grants alice over the API; her subscriber gets the key.
        let (s, j) = c
            .call(
                Method::POST,
                READERS,
                READERS,
                Some(&operator),
                Some("application/x-pem-file"),
                alice.certificate_pem.clone().into_bytes(),
            )
            .await;
        assert_eq!((s, j["reader"].as_str()), (StatusCode::OK, Some("alice")));
        let (s, j) = c
            .call(
                Method::GET,
                READERS,
                READERS,
                Some(&operator),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(
            (s, j["readers"].clone()),
            (StatusCode::OK, serde_json::json!(["alice"]))
        );

        // A raw POST and a JSON one reach alice as plaintext, sealed by backend-1.
        let (s, j) = c
            .call(
                Method::POST,
                "/v1/topics/push/alice/inbox?qos=1",
                TOPIC,
                Some(&backend),
                Some("text/plain"),
                b"hello alice".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{j}");
        assert_eq!(j["topic"], "push/alice/inbox");
        let m = expect_message(&mut sub).await;
        assert_eq!(
            (m.topic.as_str(), m.publisher.as_str(), &m.payload[..]),
            ("push/alice/inbox", "backend-1", &b"hello alice"[..])
        );
        let body = serde_json::json!({ "payload_base64": "AAEC/w==", "qos": 0 }).to_string();
        let (s, _) = c
            .call(
                Method::POST,
                "/v1/topics/push%2Falice%2Fbin",
                TOPIC,
                Some(&backend),
                Some("application/json"),
                body.into_bytes(),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let m = expect_message(&mut sub).await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("push/alice/bin", &[0u8, 1, 2, 255][..])
        );

        // Refusals, each with its documented status and code.
        let refusals: Vec<Case> = vec![
            (
                Method::POST,
                "/v1/topics/push/alice/x".into(),
                TOPIC,
                None,
                None,
                b"x".to_vec(),
                401,
                "unauthorized",
            ),
            (
                Method::POST,
                "/v1/topics/push/alice/x".into(),
                TOPIC,
                Some("forged-token"),
                None,
                b"x".to_vec(),
                401,
                "unauthorized",
            ),
            (
                Method::POST,
                "/v1/topics/push/bob/x".into(),
                TOPIC,
                Some(&backend),
                None,
                b"x".to_vec(),
                403,
                "topic_not_in_scope",
            ),
            (
                Method::POST,
                "/v1/topics/push/alice/%23".into(),
                TOPIC,
                Some(&backend),
                None,
                b"x".to_vec(),
                400,
                "bad_topic",
            ),
            (
                Method::POST,
                "/v1/topics/push/alice/x?qos=2".into(),
                TOPIC,
                Some(&backend),
                None,
                b"x".to_vec(),
                400,
                "bad_request",
            ),
            (
                Method::POST,
                "/v1/topics/push/alice/x".into(),
                TOPIC,
                Some(&backend),
                Some("application/json"),
                b"{\"payload\":1}".to_vec(),
                400,
                "bad_request",
            ),
            (
                Method::POST,
                "/v1/topics/push/alice/x".into(),
                TOPIC,
                Some(&backend),
                None,
                vec![0u8; 300 * 1024],
                413,
                "too_large",
            ),
            (
                Method::GET,
                "/v1/topics/push/alice/x".into(),
                TOPIC,
                Some(&backend),
                None,
                Vec::new(),
                405,
                "method_not_allowed",
            ),
            (
                Method::GET,
                READERS.into(),
                READERS,
                Some(&backend),
                None,
                Vec::new(),
                403,
                "not_operator",
            ),
            (
                Method::POST,
                READERS.into(),
                READERS,
                Some(&operator),
                None,
                b"not a certificate".to_vec(),
                400,
                "bad_certificate",
            ),
            (
                Method::DELETE,
                "/v1/readers/nobody".into(),
                READER,
                Some(&operator),
                None,
                Vec::new(),
                404,
                "unknown_reader",
            ),
            (
                Method::DELETE,
                "/v1/readers/alice".into(),
                READER,
                Some(&backend),
                None,
                Vec::new(),
                403,
                "not_operator",
            ),
            (
                Method::GET,
                "/v2/elsewhere".into(),
                "/v2/elsewhere",
                Some(&backend),
                None,
                Vec::new(),
                404,
                "not_found",
            ),
        ];
        for (method, path, template, token, ct, body, status, code) in refusals {
            let (s, j) = c
                .call(method.clone(), &path, template, token, ct, body)
                .await;
            assert_eq!(
                (s.as_u16(), j["error"].as_str()),
                (status, Some(code)),
                "{method} {path}: {j}"
            );
            assert!(
                !j["message"].as_str().unwrap().contains(&backend),
                "no token in messages"
            );
        }

        // The publisher's own certificate bounds what any token can do.
        let wide = store.issue("wide", &["#".into()], false).unwrap();
        let (s, j) = c
            .call(
                Method::POST,
                "/v1/topics/other/x",
                TOPIC,
                Some(&wide),
                None,
                b"x".to_vec(),
            )
            .await;
        assert_eq!(
            (s.as_u16(), j["error"].as_str()),
            (403, Some("topic_not_permitted"))
        );

        // A revoked token stops working at once (the running gateway re-reads the file).
        store.revoke("wide").unwrap();
        let (s, _) = c
            .call(
                Method::POST,
                "/v1/topics/push/x",
                TOPIC,
                Some(&wide),
                None,
                b"x".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        // Revoking alice over the API rotates the key: she cannot open what follows.
        let epoch_before = publisher.epoch().await;
        let (s, j) = c
            .call(
                Method::DELETE,
                "/v1/readers/alice",
                READER,
                Some(&operator),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{j}");
        assert!(j["epoch"].as_u64().unwrap() > epoch_before);
        let (s, _) = c
            .call(
                Method::POST,
                "/v1/topics/push/alice/after",
                TOPIC,
                Some(&backend),
                None,
                b"secret".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let r = expect_rejection(&mut sub).await;
        assert_eq!(r.reason.kind(), "unknown_key");

        // Every documented route and method was exercised.
        let api = openapi();
        for (template, item) in api["paths"].as_object().unwrap() {
            for method in item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
            {
                assert!(
                    c.seen
                        .iter()
                        .any(|(t, m, s, _)| t == template && m == method && *s == 200),
                    "{method} {template} never answered 200 in this test"
                );
            }
        }
        gateway.shutdown();

        // Plain HTTP elsewhere than loopback is refused at start.
        let err = Gateway::start("0.0.0.0:0".parse().unwrap(), publisher.clone(), state_dir)
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::NotLoopback(_)), "{err}");
    })
    .await
    .expect("finished in time");
}
