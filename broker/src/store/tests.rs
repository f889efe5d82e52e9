//! The store without a network: what survives a reopen, expiry across downtime,
//! reference counting of shared messages, and damaged files.

use super::*;
use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

fn message(topic: &'static str, payload: &'static [u8]) -> StoredMessage {
    StoredMessage {
        topic: Bytes::from_static(topic.as_bytes()),
        qos: 1,
        retain: false,
        origin: 9,
        payload: Bytes::from_static(payload),
        properties: None,
    }
}

/// One time for every record of a test, so that records built twice compare equal.
static NOW: std::sync::LazyLock<u64> = std::sync::LazyLock::new(unix_now);

fn session(owner: &str, expiry: Option<u32>) -> SessionRecord {
    SessionRecord {
        owner: owner.into(),
        origin: 1,
        expiry,
        connected: false,
        disconnected_at: *NOW,
        offline_since: 1,
        subscriptions: vec![SubscriptionRecord {
            filter: "t/#".into(),
            qos: 1,
            no_local: false,
            retain_as_published: true,
            suppress_retained: false,
            id: Some(3),
        }],
        will_at: None,
    }
}

fn open(path: &Path) -> (Store, Loaded) {
    Store::open(path, Sync::Always).unwrap()
}

/// With a sync interval no test reaches: only the close writes to disk.
const PERIODIC: Sync = Sync::Periodic(Duration::from_secs(60));

fn open_periodic(path: &Path) -> (Store, Loaded) {
    Store::open(path, PERIODIC).unwrap()
}

/// A store with `"periodic"` sync, holding a session for each of `ids`.
async fn periodic_with_sessions(path: &Path, ids: &[&str]) -> Store {
    let (store, _) = open_periodic(path);
    let sessions = ids
        .iter()
        .map(|id| Op::Session(id.to_string(), session("x", None)));
    store.write(sessions.collect()).await.unwrap();
    store
}

/// Both ways of syncing, for tests that hold for both: with `"periodic"` the messages
/// wait unwritten until the commit (see `unwritten`), with `"always"` they go to the
/// writer.
const SYNCS: [Sync; 2] = [Sync::Always, PERIODIC];

fn enqueue(number: u64, m: StoredMessage, clients: &[&str]) -> Op {
    Op::Enqueue {
        number,
        message: m,
        clients: clients
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .into(),
    }
}

#[tokio::test]
async fn sessions_messages_and_wills_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let (store, loaded) = open(&path);
        assert!(loaded.sessions.is_empty() && loaded.messages.is_empty());
        assert_eq!(loaded.next_message, 1);
        store
            .write(vec![
                Op::Session("a".into(), session("user:alice", None)),
                Op::Session("b".into(), session("user:bob", Some(3600))),
                Op::Will("b".into(), Some(message("will/b", b"gone"))),
                enqueue(10, message("t/1", b"one"), &["a", "b"]),
                enqueue(11, message("t/2", b"two"), &["a"]),
            ])
            .await
            .unwrap();
        store.close();
    }
    let (_store, loaded) = open(&path);
    assert_eq!(loaded.next_message, 12);
    assert_eq!(loaded.messages.len(), 2);
    assert_eq!(loaded.messages[&11], message("t/2", b"two"));
    let a = &loaded.sessions[0];
    assert_eq!(
        (a.client_id.as_str(), &a.record, &a.will, &a.queue),
        ("a", &session("user:alice", None), &None, &vec![10, 11])
    );
    let b = &loaded.sessions[1];
    assert_eq!(b.record.owner, "user:bob");
    assert_eq!(b.will, Some(message("will/b", b"gone")));
    assert_eq!(b.queue, vec![10]);
}

#[tokio::test]
async fn a_message_goes_when_the_last_session_acknowledges_it() {
    for sync in SYNCS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (store, _) = Store::open(&path, sync).unwrap();
            store
                .write(vec![
                    Op::Session("a".into(), session("x", None)),
                    Op::Session("b".into(), session("x", None)),
                    enqueue(1, message("t/1", b"shared"), &["a", "b"]),
                    enqueue(2, message("t/2", b"a only"), &["a"]),
                ])
                .await
                .unwrap();
            store
                .write(vec![
                    Op::Ack("a".into(), vec![1]),
                    Op::Ack("a".into(), vec![2]),
                ])
                .await
                .unwrap();
            // An acknowledgement repeated (or for nothing queued) changes nothing.
            store
                .write(vec![Op::Ack("a".into(), vec![1])])
                .await
                .unwrap();
            store.close();
        }
        {
            let (store, loaded) = open(&path);
            assert_eq!(loaded.messages.keys().copied().collect::<Vec<_>>(), vec![1]);
            assert_eq!(loaded.sessions[0].queue, Vec::<u64>::new());
            assert_eq!(loaded.sessions[1].queue, vec![1]);
            // Numbers go on after the highest ever stored that is still there.
            assert_eq!(loaded.next_message, 2);
            store
                .write(vec![Op::Ack("b".into(), vec![1])])
                .await
                .unwrap();
            store.close();
        }
        let (_store, loaded) = open(&path);
        assert!(loaded.messages.is_empty());
    }
}

#[tokio::test]
async fn an_outgoing_qos2_flow_keeps_its_packet_id_then_its_pubrel_state_until_pubcomp() {
    for sync in SYNCS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let sent = |number, pkid| Op::Sent {
            client_id: "a".into(),
            number,
            pkid,
        };
        {
            let (store, _) = Store::open(&path, sync).unwrap();
            store
                .write(vec![
                    Op::Session("a".into(), session("x", None)),
                    enqueue(1, message("t/1", b"one"), &["a"]),
                    enqueue(2, message("t/2", b"two"), &["a"]),
                    enqueue(3, message("t/3", b"three"), &["a"]),
                    sent(1, 41),
                    sent(2, 42),
                    sent(3, 43),
                    // Not queued for the session (acknowledged first): not kept.
                    sent(9, 49),
                ])
                .await
                .unwrap();
            // Message 1: PUBREC (its PUBREL state stays); message 2: PUBREC and PUBCOMP.
            let released = |number, pkid| Op::Released {
                client_id: "a".into(),
                number,
                pkid,
            };
            store
                .write(vec![
                    released(1, 41),
                    released(2, 42),
                    Op::Completed("a".into(), 42),
                ])
                .await
                .unwrap();
            store.close();
        }
        {
            let (store, loaded) = open(&path);
            let a = &loaded.sessions[0];
            assert_eq!(a.queue, vec![3], "released messages are gone");
            assert_eq!(a.sent, vec![(3, 43)]);
            assert_eq!(a.releasing, vec![41]);
            assert_eq!(loaded.messages.keys().copied().collect::<Vec<_>>(), vec![3]);
            // A new session with the same client id inherits none of it.
            store
                .write(vec![
                    Op::EndSession("a".into()),
                    Op::Session("a".into(), session("x", None)),
                ])
                .await
                .unwrap();
            store.close();
        }
        let (_store, loaded) = open(&path);
        let a = &loaded.sessions[0];
        assert!(a.queue.is_empty() && a.sent.is_empty() && a.releasing.is_empty());
        assert!(loaded.messages.is_empty());
    }
}

#[tokio::test]
async fn ending_a_session_deletes_its_queue_and_will() {
    for sync in SYNCS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (store, _) = Store::open(&path, sync).unwrap();
            store
                .write(vec![
                    Op::Session("a".into(), session("x", None)),
                    Op::Session("b".into(), session("x", None)),
                    Op::Will("a".into(), Some(message("w", b"w"))),
                    enqueue(1, message("t/1", b"shared"), &["a", "b"]),
                    enqueue(2, message("t/2", b"a only"), &["a"]),
                ])
                .await
                .unwrap();
            store.write(vec![Op::EndSession("a".into())]).await.unwrap();
            store.close();
        }
        let (_store, loaded) = open(&path);
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].client_id, "b");
        assert_eq!(loaded.messages.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(loaded.due_wills.is_empty());
    }
}

#[tokio::test]
async fn expiry_counts_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let now = unix_now();
    {
        let (store, _) = open(&path);
        let short = SessionRecord {
            disconnected_at: now,
            will_at: Some(now + 5),
            ..session("x", Some(10))
        };
        let expiring_message = StoredMessage {
            properties: Some(Box::new(PublishProperties {
                message_expiry_interval: Some(20),
                ..Default::default()
            })),
            ..message("t/3", b"expires")
        };
        store
            .write(vec![
                Op::Session("short".into(), short),
                Op::Will("short".into(), Some(message("will/short", b"bye"))),
                Op::Session("long".into(), session("x", Some(3600))),
                Op::Session("never".into(), session("x", None)),
                enqueue(1, message("t/1", b"both"), &["short", "long"]),
                enqueue(2, message("t/2", b"short only"), &["short"]),
                enqueue(3, expiring_message, &["never"]),
            ])
            .await
            .unwrap();
        store.close();
    }
    // 60 s later.
    let (store, loaded) = Store::open_at(&path, Sync::Always, now + 60).unwrap();
    store.close();
    let ids: Vec<&str> = loaded
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(ids, vec!["long", "never"], "the 10 s session expired");
    assert_eq!(loaded.due_wills, vec![message("will/short", b"bye")]);
    // Its messages were deleted, the shared one kept for the other session; the
    // message whose own expiry ran out is gone too.
    assert_eq!(loaded.messages.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(loaded.sessions[1].queue, Vec::<u64>::new());
    let (_store, again) = open(&path);
    assert_eq!(again.sessions.len(), 2, "deleted, not only skipped");
    assert!(again.due_wills.is_empty(), "a due will is handed out once");
}

#[tokio::test]
async fn periodic_sync_keeps_what_was_written_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let (store, _) = open_periodic(&path);
        store
            .write(vec![
                Op::Session("a".into(), session("x", None)),
                enqueue(1, message("t/1", b"m"), &["a"]),
            ])
            .await
            .unwrap();
        store.close();
    }
    let (_store, loaded) = open(&path);
    assert_eq!(loaded.sessions[0].queue, vec![1]);
}

#[tokio::test]
async fn with_periodic_sync_a_message_acknowledged_before_the_sync_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let store = periodic_with_sessions(&path, &["a", "b"]).await;
        // Held back until the sync (here: the close), by which time a has acknowledged
        // both and b neither.
        let pending = store
            .submit(&mut vec![enqueue(1, message("t/1", b"a only"), &["a"])])
            .unwrap();
        pending.wait().await.unwrap();
        store.send(vec![Op::Ack("a".into(), vec![1])]);
        let pending = store
            .submit(&mut vec![enqueue(2, message("t/2", b"both"), &["a", "b"])])
            .unwrap();
        pending.wait().await.unwrap();
        store.send(vec![Op::Ack("a".into(), vec![2])]);
        store.close();
        assert_eq!(store.messages_written(), 1, "only message 2, for b");
    }
    let (_store, loaded) = open(&path);
    assert_eq!(loaded.messages.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(loaded.sessions[0].queue, Vec::<u64>::new());
    assert_eq!(loaded.sessions[1].queue, vec![2]);
}

/// With `"periodic"`, a message not yet written when a session ends is not written
/// for it, nor for a new session of the same client id, which gets only the messages
/// queued after the end.
#[tokio::test]
async fn with_periodic_sync_a_session_that_ends_leaves_no_unwritten_message_to_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let store = periodic_with_sessions(&path, &["a", "b"]).await;
        store
            .submit(&mut vec![enqueue(1, message("t/1", b"old"), &["a", "b"])])
            .unwrap()
            .wait()
            .await
            .unwrap();
        // Not waited for: it waits for the writer with the message still unwritten.
        store.send(vec![
            Op::EndSession("a".into()),
            Op::Session("a".into(), session("x", None)),
        ]);
        store
            .submit(&mut vec![enqueue(2, message("t/2", b"new"), &["a"])])
            .unwrap()
            .wait()
            .await
            .unwrap();
        store.close();
    }
    let (_store, loaded) = open(&path);
    let queue = |id: &str| {
        let s = loaded.sessions.iter().find(|s| s.client_id == id).unwrap();
        s.queue.clone()
    };
    assert_eq!(queue("a"), vec![2], "the new session's message only");
    assert_eq!(queue("b"), vec![1]);
}

/// With `"periodic"`, messages a session does not acknowledge (it is offline) wait
/// unwritten at most until there are `UNWRITTEN_FULL` of them: then the writer takes
/// them, long before the sync.
#[tokio::test]
async fn with_periodic_sync_too_many_unwritten_messages_are_written_before_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = periodic_with_sessions(&dir.path().join(FILE_NAME), &["b"]).await;
    let full = inbox::UNWRITTEN_FULL as u64;
    let ops = (1..full).map(|n| enqueue(n, message("t/1", b"m"), &["b"]));
    store
        .submit(&mut ops.collect())
        .unwrap()
        .wait()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.messages_written(), 0, "one short of the bound: kept");
    store
        .submit(&mut vec![enqueue(full, message("t/1", b"m"), &["b"])])
        .unwrap()
        .wait()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.messages_written() < full {
        assert!(Instant::now() < deadline, "not written before the sync");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.close();
}

#[tokio::test]
async fn a_read_of_a_sessions_queue_sees_the_messages_held_back_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    for sync in SYNCS {
        let _ = std::fs::remove_file(&path);
        let (store, _) = Store::open(&path, sync).unwrap();
        store
            .write(vec![Op::Session("a".into(), session("x", None))])
            .await
            .unwrap();
        // Not awaited: the writer may still hold it when the read comes.
        let _pending = store
            .submit(&mut vec![enqueue(7, message("t/7", b"m"), &["a"])])
            .unwrap();
        let queued = store.queued_for("a").await.unwrap();
        assert_eq!(
            queued.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![7],
            "{sync:?}"
        );
        store.close();
    }
}

#[test]
fn a_damaged_file_is_refused_with_its_name_and_repair_moves_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let (store, _) = open(&path);
        store.send(vec![Op::Session("a".into(), session("x", None))]);
        store.close();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    for damage in ["truncated", "garbage"] {
        match damage {
            "truncated" => {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(len / 3).unwrap();
            }
            _ => std::fs::write(&path, vec![0x5a; 8192]).unwrap(),
        }
        let err = Store::open(&path, Sync::Always).err().expect(damage);
        let text = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{damage}: {text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("--repair"), "{text}");
        let Repaired::MovedAside(aside) = repair(&path).unwrap() else {
            panic!("{damage}: not moved aside");
        };
        assert!(aside.exists() && !path.exists());
        // A good file again for the next kind of damage.
        std::fs::remove_file(&aside).unwrap();
        let (store, _) = open(&path);
        store.send(vec![Op::Session("a".into(), session("x", None))]);
        store.close();
    }
}

#[test]
fn an_unreadable_value_is_refused_and_repair_deletes_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let database = Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut sessions = txn.open_table(SESSIONS).unwrap();
            sessions.insert("bad", &b"\xff\xff"[..]).unwrap();
            sessions
                .insert("good", session("x", None).encode().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(&path, Sync::Always).err().unwrap();
    assert!(
        matches!(&err, StoreError::Corrupt { what, .. } if what == "session \"bad\""),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(repair(&path).unwrap(), Repaired::ValuesDeleted);
    let (_store, loaded) = open(&path);
    let ids: Vec<&str> = loaded
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(ids, vec!["good"]);
    drop(_store);
    assert_eq!(repair(&path).unwrap(), Repaired::Nothing);
}

#[test]
fn a_store_in_use_is_refused_and_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (_store, _) = open(&path);
    assert!(matches!(
        Store::open(&path, Sync::Always),
        Err(StoreError::Open { .. })
    ));
    assert!(repair(&path).is_err());
    assert!(path.exists());
}

fn batch(ops: Vec<Op>) -> Batch {
    Batch {
        ops,
        done: None,
        may_wait: true,
        at: Instant::now(),
    }
}

/// The writer takes held batches oldest first once their hold runs out; the sessions'
/// acknowledgements of those messages come after them, in younger batches. Joined to
/// the messages they acknowledge, they cancel them out: nothing is written for a
/// message every session has, and the younger batches keep everything else.
#[test]
fn acknowledgements_in_younger_batches_join_their_messages_and_cancel_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::create(dir.path().join(FILE_NAME)).unwrap();
    let mut taken = vec![batch(vec![
        enqueue(1, message("t/1", b"for a and b"), &["a", "b"]),
        enqueue(2, message("t/2", b"for a"), &["a"]),
    ])];
    let mut younger = [
        batch(vec![Op::Ack("a".into(), vec![1, 3])]),
        batch(vec![
            Op::Ack("b".into(), vec![1]),
            Op::Session("b".into(), session("x", None)),
        ]),
    ];
    let mut refs = HashMap::new();
    let written = commit(
        &database,
        &mut taken,
        younger.iter_mut(),
        &mut refs,
        Durability::Immediate,
    )
    .unwrap();
    assert_eq!(
        written,
        Some(1),
        "message 2 only: a has not acknowledged it"
    );
    assert_eq!(refs, HashMap::from([(2, 1)]));
    // What is not for messages 1 or 2 stays where it was, for a later transaction.
    assert!(matches!(&younger[0].ops[..], [Op::Ack(c, n)] if c == "a" && n == &[3]));
    assert!(matches!(
        &younger[1].ops[..],
        [Op::Ack(c, n), Op::Session(..)] if c == "b" && n.is_empty()
    ));
    let txn = database.begin_read().unwrap();
    let messages = txn.open_table(MESSAGES).unwrap();
    assert!(messages.get(1).unwrap().is_none());
    assert!(messages.get(2).unwrap().is_some());
}
