//! The C API's calls for bursts, rotation and new revocation lists, made from Rust
//! exactly as a C program makes them (the same `extern "C"` functions, raw pointers and
//! callback), without a broker: what one handle queues is handed to the other.

use std::ffi::{c_int, c_void, CStr, CString};
use std::mem::MaybeUninit;
use std::ptr;

use sealpost::*;
use sealpost_certs::Issued;
use sealpost_tests::Pki;

/// The time of every call (the library reads no clock): now, as the test PKI's
/// certificates and lists are valid now.
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("after 1970").as_millis() as u64
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// What `*_new` takes for `issued`: the CA, a current revocation list revoking nobody,
/// the certificate and its private key.
fn identity(pki: &Pki, issued: &Issued) -> [CString; 4] {
    [
        c(&pki.ca_pem()),
        c(&pki.crl(&[], 1)),
        c(&issued.certificate_pem),
        c(&issued.private_key_pem),
    ]
}

/// The save callback: keeps the last state in the `Vec<u8>` that `ctx` points to.
unsafe extern "C" fn save_in_memory(ctx: *mut c_void, state: *const u8, len: usize) -> c_int {
    // SAFETY: `ctx` is the `Vec<u8>` the test passed, alive for the publisher's life;
    // `state` holds `len` bytes during the call, by the callback's contract.
    unsafe {
        let saved = &mut *ctx.cast::<Vec<u8>>();
        *saved = std::slice::from_raw_parts(state, len).to_vec();
    }
    0
}

/// An output, copied out of the handle.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Publish {
        topic: String,
        data: Vec<u8>,
        retain: bool,
    },
    Persist,
    Message {
        payload: Vec<u8>,
        seq: u64,
    },
    Rejected(sealpost_result),
}

/// Copies a `sealpost_output` the library wrote.
fn copy(o: &sealpost_output) -> Out {
    // SAFETY: the library's pointers are valid until the next call on the handle, and
    // NULL or NUL-terminated / `data_len` bytes, as the header says.
    unsafe {
        let topic = || CStr::from_ptr(o.topic).to_string_lossy().into_owned();
        let data = || {
            if o.data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(o.data, o.data_len).to_vec()
            }
        };
        match o.kind {
            sealpost_output_kind::SEALPOST_OUTPUT_PUBLISH => Out::Publish {
                topic: topic(),
                data: data(),
                retain: o.retain,
            },
            sealpost_output_kind::SEALPOST_OUTPUT_PERSIST => Out::Persist,
            sealpost_output_kind::SEALPOST_OUTPUT_MESSAGE => Out::Message {
                payload: data(),
                seq: o.seq,
            },
            sealpost_output_kind::SEALPOST_OUTPUT_REJECTED => Out::Rejected(o.reason),
        }
    }
}

/// A publisher handle with its saved state.
struct Publisher {
    handle: *mut sealpost_publisher,
    /// Boxed: the save callback's context pointer must not move with the handle.
    #[allow(clippy::box_collection)]
    _saved: Box<Vec<u8>>,
}

impl Publisher {
    fn new(pki: &Pki, issued: &Issued) -> Publisher {
        let mut saved = Box::new(Vec::new());
        let mut handle = ptr::null_mut();
        let [ca, crl, cert, key] = identity(pki, issued);
        // SAFETY: NUL-terminated strings, no state, a callback whose context outlives
        // the handle (freed in Drop before the Box).
        let r = unsafe {
            sealpost_publisher_new(
                ca.as_ptr(),
                crl.as_ptr(),
                cert.as_ptr(),
                key.as_ptr(),
                ptr::null(),
                0,
                Some(save_in_memory),
                (&mut *saved as *mut Vec<u8>).cast(),
                now_ms(),
                &mut handle,
            )
        };
        assert_eq!(r, sealpost_result::SEALPOST_OK);
        Publisher {
            handle,
            _saved: saved,
        }
    }

    fn outputs(&mut self) -> Vec<Out> {
        drain(|out| {
            // SAFETY: a live handle and a writable output.
            unsafe { sealpost_publisher_next_output(self.handle, out) }
        })
    }

    fn grant(&mut self, issued: &Issued) {
        let pem = c(&issued.certificate_pem);
        // SAFETY: a live handle and a NUL-terminated string.
        let r = unsafe { sealpost_publisher_grant(self.handle, pem.as_ptr(), now_ms()) };
        assert_eq!(r, sealpost_result::SEALPOST_OK);
    }

    fn publish_many(&mut self, messages: &[(&str, &[u8])]) -> sealpost_result {
        let topics: Vec<CString> = messages.iter().map(|(t, _)| c(t)).collect();
        let messages: Vec<sealpost_message> = messages
            .iter()
            .zip(&topics)
            .map(|((_, payload), topic)| sealpost_message {
                topic: topic.as_ptr(),
                payload: payload.as_ptr(),
                payload_len: payload.len(),
            })
            .collect();
        // SAFETY: a live handle; `messages` and what it points to live across the call.
        unsafe {
            sealpost_publisher_publish_many(
                self.handle,
                messages.as_ptr(),
                messages.len(),
                now_ms(),
            )
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // SAFETY: the live handle, freed once.
        unsafe { sealpost_publisher_free(self.handle) }
    }
}

/// A subscriber handle.
struct Subscriber(*mut sealpost_subscriber);

impl Subscriber {
    fn new(pki: &Pki, issued: &Issued) -> Subscriber {
        let mut handle = ptr::null_mut();
        let [ca, crl, cert, key] = identity(pki, issued);
        // SAFETY: NUL-terminated strings, no state.
        let r = unsafe {
            sealpost_subscriber_new(
                ca.as_ptr(),
                crl.as_ptr(),
                cert.as_ptr(),
                key.as_ptr(),
                ptr::null(),
                0,
                &mut handle,
            )
        };
        assert_eq!(r, sealpost_result::SEALPOST_OK);
        Subscriber(handle)
    }

    /// Hands it every PUBLISH in `packets`; returns what it queued, PERSIST left out.
    fn incoming(&mut self, packets: &[Out]) -> Vec<Out> {
        for packet in packets {
            let Out::Publish { topic, data, .. } = packet else {
                continue;
            };
            let topic = c(topic);
            // SAFETY: a live handle, a NUL-terminated topic, `data.len()` bytes.
            let r = unsafe {
                sealpost_subscriber_incoming(
                    self.0,
                    topic.as_ptr(),
                    data.as_ptr(),
                    data.len(),
                    now_ms(),
                )
            };
            assert_eq!(r, sealpost_result::SEALPOST_OK);
        }
        drain(|out| {
            // SAFETY: a live handle and a writable output.
            unsafe { sealpost_subscriber_next_output(self.0, out) }
        })
        .into_iter()
        .filter(|o| *o != Out::Persist)
        .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // SAFETY: the live handle, freed once.
        unsafe { sealpost_subscriber_free(self.0) }
    }
}

/// Every output waiting, through `next` (a `*_next_output` call).
fn drain(mut next: impl FnMut(*mut sealpost_output) -> sealpost_result) -> Vec<Out> {
    let mut outputs = Vec::new();
    loop {
        let mut out = MaybeUninit::<sealpost_output>::uninit();
        match next(out.as_mut_ptr()) {
            // SAFETY: SEALPOST_OK means the library wrote the output.
            sealpost_result::SEALPOST_OK => outputs.push(copy(unsafe { out.assume_init_ref() })),
            sealpost_result::SEALPOST_NO_OUTPUT => return outputs,
            other => panic!("next_output: {other:?}"),
        }
    }
}

fn payloads(outputs: &[Out]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .map(|o| match o {
            Out::Message { payload, .. } => payload.clone(),
            other => panic!("expected a MESSAGE, got {other:?}"),
        })
        .collect()
}

fn data_packets(outputs: &[Out]) -> Vec<Out> {
    outputs
        .iter()
        .filter(|o| matches!(o, Out::Publish { topic, .. } if !topic.starts_with("sealpost/keys/")))
        .cloned()
        .collect()
}

#[test]
fn publish_many_seals_a_burst_whose_messages_open_one_by_one() {
    let pki = Pki::new("c-api-burst");
    let issued = pki.publisher("plant-api", &["plant/#"]);
    let reader = pki.subscriber("reader-api");
    let mut publisher = Publisher::new(&pki, &issued);
    publisher.grant(&reader);
    let keys = publisher.outputs();
    let mut subscriber = Subscriber::new(&pki, &reader);
    assert_eq!(subscriber.incoming(&keys), []);

    let burst: [(&str, &[u8]); 3] = [
        ("plant/a", b"one"),
        ("plant/b", b"two"),
        ("plant/c", b"three"),
    ];
    assert_eq!(publisher.publish_many(&burst), sealpost_result::SEALPOST_OK);
    let sent = data_packets(&publisher.outputs());
    let topics: Vec<&str> = sent
        .iter()
        .map(|o| match o {
            Out::Publish { topic, .. } => topic.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(topics, ["plant/a", "plant/b", "plant/c"]);
    // A subscriber that sees only some of the burst (a topic filter) opens each one.
    let opened = subscriber.incoming(&[sent[2].clone(), sent[0].clone()]);
    assert_eq!(payloads(&opened), [b"three".to_vec(), b"one".to_vec()]);

    // All or none: one topic outside the certificate, and nothing is queued.
    let mixed: [(&str, &[u8]); 2] = [("plant/d", b"four"), ("office/x", b"no")];
    assert_eq!(
        publisher.publish_many(&mixed),
        sealpost_result::SEALPOST_TOPIC_NOT_PERMITTED
    );
    assert_eq!(data_packets(&publisher.outputs()), []);
    // An empty burst is nothing to do.
    assert_eq!(publisher.publish_many(&[]), sealpost_result::SEALPOST_OK);
    // SAFETY: NULL messages with a count are refused before any use.
    let r = unsafe { sealpost_publisher_publish_many(publisher.handle, ptr::null(), 2, now_ms()) };
    assert_eq!(r, sealpost_result::SEALPOST_NULL_ARGUMENT);
}

#[test]
fn rotate_hands_the_grantees_a_new_key() {
    let pki = Pki::new("c-api-rotate");
    let issued = pki.publisher("plant-rot", &["plant/#"]);
    let reader = pki.subscriber("reader-rot");
    let mut publisher = Publisher::new(&pki, &issued);
    publisher.grant(&reader);
    let first_keys = publisher.outputs();
    // SAFETY: a live handle.
    let r = unsafe { sealpost_publisher_rotate(publisher.handle, now_ms()) };
    assert_eq!(r, sealpost_result::SEALPOST_OK);
    let new_keys = publisher.outputs();
    assert!(
        new_keys
            .iter()
            .any(|o| matches!(o, Out::Publish { topic, retain: true, data }
            if topic.ends_with("/reader-rot") && !data.is_empty())),
        "a new key message for the grantee: {new_keys:?}"
    );
    assert_eq!(
        publisher.publish_many(&[("plant/a", b"after")]),
        sealpost_result::SEALPOST_OK
    );
    let sealed = data_packets(&publisher.outputs());

    // With only the first key, the message sealed after the rotation does not open.
    let mut stale = Subscriber::new(&pki, &reader);
    stale.incoming(&first_keys);
    assert_eq!(
        stale.incoming(&sealed),
        [],
        "held for a key it does not have"
    );
    let mut current = Subscriber::new(&pki, &reader);
    current.incoming(&new_keys);
    assert_eq!(payloads(&current.incoming(&sealed)), [b"after".to_vec()]);
}

#[test]
fn a_new_revocation_list_drops_revoked_grantees_and_is_checked() {
    let pki = Pki::new("c-api-crl");
    let issued = pki.publisher("plant-crl", &["plant/#"]);
    let (alice, bob) = (pki.subscriber("alice-crl"), pki.subscriber("bob-crl"));
    let mut publisher = Publisher::new(&pki, &issued);
    publisher.grant(&alice);
    publisher.grant(&bob);
    let keys = publisher.outputs();

    // A list from another CA, and an older list than the one in force, are refused.
    let foreign = c(&Pki::new("other CA").crl(&[&bob], 2));
    let older = c(&pki.crl(&[&bob], 0));
    for list in [&foreign, &older] {
        // SAFETY: a live handle and a NUL-terminated string.
        let r = unsafe {
            sealpost_publisher_set_revocation_list(publisher.handle, list.as_ptr(), now_ms())
        };
        assert_eq!(r, sealpost_result::SEALPOST_BAD_IDENTITY);
    }
    assert_eq!(publisher.outputs(), [], "a refused list changes nothing");

    let revoking_bob = c(&pki.crl(&[&bob], 2));
    // SAFETY: as above.
    let r = unsafe {
        sealpost_publisher_set_revocation_list(publisher.handle, revoking_bob.as_ptr(), now_ms())
    };
    assert_eq!(r, sealpost_result::SEALPOST_OK);
    let rekey = publisher.outputs();
    assert!(
        rekey
            .iter()
            .any(|o| matches!(o, Out::Publish { topic, data, retain: true }
            if topic.ends_with("/bob-crl") && data.is_empty())),
        "bob's retained key message is cleared: {rekey:?}"
    );
    assert_eq!(
        publisher.publish_many(&[("plant/a", b"secret")]),
        sealpost_result::SEALPOST_OK
    );
    let sealed = data_packets(&publisher.outputs());
    let mut a = Subscriber::new(&pki, &alice);
    a.incoming(&keys);
    a.incoming(&rekey);
    assert_eq!(payloads(&a.incoming(&sealed)), [b"secret".to_vec()]);
    let mut b = Subscriber::new(&pki, &bob);
    b.incoming(&keys);
    b.incoming(&rekey);
    assert_eq!(b.incoming(&sealed), [], "bob has no key for it");
}

#[test]
fn a_subscriber_given_a_list_that_revokes_the_publisher_refuses_its_messages() {
    let pki = Pki::new("c-api-sub-crl");
    let issued = pki.publisher("plant-rev", &["plant/#"]);
    let reader = pki.subscriber("reader-rev");
    let mut publisher = Publisher::new(&pki, &issued);
    publisher.grant(&reader);
    let keys = publisher.outputs();
    assert_eq!(
        publisher.publish_many(&[("plant/a", b"x")]),
        sealpost_result::SEALPOST_OK
    );
    let sealed = data_packets(&publisher.outputs());

    let mut subscriber = Subscriber::new(&pki, &reader);
    subscriber.incoming(&keys);
    let foreign = c(&Pki::new("other CA").crl(&[&issued], 2));
    // SAFETY: a live handle and a NUL-terminated string.
    let r = unsafe { sealpost_subscriber_set_revocation_list(subscriber.0, foreign.as_ptr()) };
    assert_eq!(r, sealpost_result::SEALPOST_BAD_IDENTITY);
    let revoking = c(&pki.crl(&[&issued], 2));
    // SAFETY: as above.
    let r = unsafe { sealpost_subscriber_set_revocation_list(subscriber.0, revoking.as_ptr()) };
    assert_eq!(r, sealpost_result::SEALPOST_OK);
    assert_eq!(
        subscriber.incoming(&sealed),
        [Out::Rejected(sealpost_result::SEALPOST_REJECTED_REVOKED)]
    );
}
