//! CONNECT: authentication, the will's ACL check, the session's owner and expiry,
//! linking to the router, and the CONNACK that turns a socket into a [`Connection`].

use super::io::{ConnectPacket, Io};
use super::state::{ClientLimits, Connection, Unreported};
use super::PeerInfo;
use crate::acl::Identity;
use crate::codec::Version;
use crate::metrics::inc;
use crate::queue::{Held, OutQueue};
use crate::router::{router_client_id, RouterSlot};
use crate::session::{self, OwnerCheck, SavedSession};
use crate::shared::Shared;
use crate::subscriptions::Copies;
use crate::topic;
use rumqttd::protocol::{ConnAck, ConnAckProperties, ConnectReturnCode, Login, Packet};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tracing::{info, warn};

pub(super) fn connack(code: ConnectReturnCode, session_present: bool) -> ConnAck {
    ConnAck {
        session_present,
        code,
    }
}

/// Maps a refusal to the right code for the client's version (3.1.1 has only six).
pub(super) fn refusal(version: Version, code: ConnectReturnCode) -> ConnectReturnCode {
    match version {
        Version::V5 => code,
        Version::V4 => match code {
            ConnectReturnCode::BadUserNamePassword => ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::ClientIdentifierNotValid => {
                ConnectReturnCode::ClientIdentifierNotValid
            }
            ConnectReturnCode::UnsupportedProtocolVersion => {
                ConnectReturnCode::RefusedProtocolVersion
            }
            _ => ConnectReturnCode::ServiceUnavailable,
        },
    }
}

pub(super) async fn refuse<R: super::io::ReadSide, W: AsyncWrite + Unpin>(
    io: &mut Io<R, W>,
    version: Version,
    code: ConnectReturnCode,
) {
    io.queue(
        Packet::ConnAck(connack(refusal(version, code), false), None),
        version,
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), io.flush()).await;
}

pub(super) async fn authenticate(
    shared: &Shared,
    peer: &PeerInfo,
    login: Option<&Login>,
) -> Result<Identity, ConnectReturnCode> {
    if let Some(identity) = &peer.certificate {
        return Ok(identity.clone());
    }
    match (login, &shared.passwords) {
        (Some(login), Some(file)) => {
            let addr = peer.addr.map(|a| a.ip());
            let password = login.password.as_bytes();
            match file.login(addr, &login.username, password).await {
                crate::auth::Login::Accepted => Ok(Identity::User(login.username.clone())),
                crate::auth::Login::Refused => Err(ConnectReturnCode::BadUserNamePassword),
                // 3.1.1 has no such code: `refusal` makes it 0x03 server unavailable.
                crate::auth::Login::Throttled => {
                    inc(&shared.metrics.logins_throttled);
                    Err(ConnectReturnCode::ConnectionRateExceeded)
                }
            }
        }
        (Some(_), None) if shared.config.auth.allow_anonymous => Ok(Identity::Anonymous),
        (Some(_), None) => Err(ConnectReturnCode::BadUserNamePassword),
        (None, _) if shared.config.auth.allow_anonymous => Ok(Identity::Anonymous),
        (None, _) => Err(ConnectReturnCode::NotAuthorized),
    }
}

pub(super) async fn accept<R: super::io::ReadSide, W: AsyncWrite + Unpin>(
    io: &mut Io<R, W>,
    connect: ConnectPacket,
    peer: &PeerInfo,
) -> Option<Connection> {
    let shared = io.shared.clone();
    let version = connect.version;
    let Packet::Connect(connect, props, will, will_props, login) = connect.packet else {
        inc(&shared.metrics.malformed);
        return None;
    };
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if version == Version::V4 && !connect.clean_session {
            refuse(io, version, ConnectReturnCode::ClientIdentifierNotValid).await;
            return None;
        }
        let id = format!("sealpost-{:016x}", rand::random::<u64>());
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id
    } else {
        connect.client_id.clone()
    };

    let identity = match authenticate(&shared, peer, login.as_ref()).await {
        Ok(i) => i,
        Err(code) => {
            inc(&shared.metrics.auth_failures);
            info!(client_id = %client_id, peer = ?peer.addr, ?code, "authentication refused");
            refuse(io, version, code).await;
            return None;
        }
    };

    if let Some(w) = &will {
        let ok = std::str::from_utf8(&w.topic)
            .ok()
            .filter(|t| topic::valid_topic(t))
            .is_some_and(|t| shared.acl.may_publish(&identity, t));
        if !ok {
            info!(client_id = %client_id, "will topic not allowed");
            refuse(io, version, ConnectReturnCode::NotAuthorized).await;
            return None;
        }
    }

    // How long the session outlives the connection: MQTT 5 session expiry interval
    // (absent = 0, 0xFFFFFFFF = never); MQTT 3.1.1 clean session 0 = never. Then the
    // operator's maximum (MQTT 5 §3.2.2.3.2: a server may grant less, and says so).
    let requested_expiry = match version {
        Version::V4 if connect.clean_session => Some(0),
        Version::V4 => None,
        Version::V5 => match props.as_ref().and_then(|p| p.session_expiry_interval) {
            Some(u32::MAX) => None,
            s => Some(s.unwrap_or(0)),
        },
    };
    let session_expiry = shared.config.limits.session_expiry(requested_expiry);
    let mut clean_start = connect.clean_session;
    let client_limits = props
        .as_ref()
        .map(|p| ClientLimits {
            receive_max: p.receive_maximum,
            max_packet_size: p.max_packet_size,
            topic_alias_max: p.topic_alias_max.unwrap_or(0),
        })
        .unwrap_or_default();
    let will_delay = will_props
        .as_ref()
        .and_then(|p| p.delay_interval)
        .unwrap_or(0);

    let mut lock = shared.sessions.lock(&client_id).await;
    // Whose session the client id names is checked before anything is linked (see
    // `session`): another identity neither resumes it nor closes its connection.
    let new_session_for_other = shared.config.session.new_session_for_other_identity;
    match session::check_owner(&lock, &identity, new_session_for_other) {
        OwnerCheck::Own => {}
        OwnerCheck::NewSession => clean_start = true,
        OwnerCheck::Refused => {
            shared.sessions.unlock(lock);
            inc(&shared.metrics.session_owner_refused);
            info!(client_id = %client_id, identity = %identity.label(), "client id belongs to another identity's session: refused");
            refuse(io, version, ConnectReturnCode::NotAuthorized).await;
            return None;
        }
    }
    // The router keeps a session after its connection only if linked without clean
    // session, and discards the old one only if linked with it: a new session that must
    // outlive its connection needs both, so the old one is ended first (before this
    // connection becomes the owner: ending a session forgets its owner).
    let persist = session_expiry != Some(0);
    let router_clean = clean_start && !persist;
    let max_sessions = shared.config.limits.max_sessions_per_identity;
    if persist
        && !shared
            .sessions
            .may_keep_another(&lock, &identity, max_sessions)
    {
        shared.sessions.unlock(lock);
        inc(&shared.metrics.sessions_over_quota);
        info!(client_id = %client_id, identity = %identity.label(), "persistent sessions of the identity at limits.max_sessions_per_identity: refused");
        refuse(io, version, ConnectReturnCode::QuotaExceeded).await;
        return None;
    }
    if clean_start && persist {
        shared.sessions.end_session(&mut lock).await;
    }
    let mut started = shared
        .sessions
        .start(&mut lock, &identity, !clean_start, persist);
    if let Some(w) = started.will_to_publish.take() {
        shared.system.publish_will(w).await;
    }
    // A clean session that takes over nothing starts without a router link (see
    // `link`): one that ends an older connection or a kept session links now, because
    // that is how the router learns of it.
    let unlinked = router_clean && !started.took_over && !started.kept_before();
    let link = if unlinked {
        Ok((RouterSlot::unlinked(), None, false))
    } else {
        shared
            .router
            .link_async(router_client_id(&client_id), router_clean)
            .await
            .map(|(slot, rx, ack)| {
                let present = match Option::<Packet>::from(ack) {
                    Some(Packet::ConnAck(ack, _)) => ack.session_present,
                    _ => false,
                };
                (slot, Some(rx), present)
            })
    };
    // A resumed session keeps the edge's subscription table and origin id; a new one
    // starts afresh, and any table saved for an older session with this id is stale.
    let mut saved = match link {
        Ok((_, _, true)) => shared.sessions.saved().resume(&client_id),
        _ => None,
    }
    .unwrap_or_else(|| {
        shared.sessions.discard(&client_id);
        SavedSession {
            origin: session::new_origin(),
            ..Default::default()
        }
    });
    // What the last connection held is this connection's alone. After a restart,
    // the QoS 2 flows awaiting PUBCOMP come first (their PUBREL is sent again), and
    // the packet ids of the messages routed again stay theirs.
    let mut held: Vec<Held> = std::mem::take(&mut saved.releasing)
        .into_iter()
        .map(Held::released_flow)
        .collect();
    held.append(&mut saved.held);
    let mut queue = OutQueue::resumed(held);
    let redeliver: HashMap<u64, u16> = std::mem::take(&mut saved.unacknowledged)
        .into_iter()
        .collect();
    for &pkid in redeliver.values().filter(|&&p| p != 0) {
        queue.reserve(pkid);
    }
    // The session, its owner and its expiry are stored from the start (and a will an
    // earlier connection left waiting is no longer pending).
    if persist && link.is_ok() && shared.store.is_durable() {
        saved.owner = identity.label();
        saved.expiry = session_expiry;
        shared.sessions.save(&client_id, saved.clone());
    }
    let generation = started.generation;
    let take_over = if unlinked {
        shared.sessions.unlinked(&mut lock, generation)
    } else {
        None
    };
    if link.is_err() {
        shared.sessions.abandon(&mut lock, started);
    }
    shared.sessions.unlock(lock);
    let (slot, link_rx, session_present) = match link {
        Ok(v) => v,
        Err(e) => {
            warn!(client_id = %client_id, error = %e, "router refused the connection");
            refuse(io, version, ConnectReturnCode::ServerUnavailable).await;
            return None;
        }
    };
    let limits = &shared.config.limits;
    // MQTT 5 §3.2.2.3.14: the server's keep alive, when it has one, replaces the
    // client's; 3.1.1 cannot tell the client, so its own value stays.
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let (Version::V5, Some(k)) = (version, limits.server_keep_alive) {
        if k != keep_alive {
            keep_alive = k;
            server_keep_alive = Some(k);
        }
    }
    // MQTT 5 §3.1.2.11.6: response information only when asked for.
    let prefix = &shared.config.session.response_information_prefix;
    let response_information = (version == Version::V5
        && props.as_ref().and_then(|p| p.request_response_info) == Some(1)
        && !prefix.is_empty())
    .then(|| format!("{prefix}{}", router_client_id(&client_id)));
    let props = (version == Version::V5).then(|| ConnAckProperties {
        session_expiry_interval: (session_expiry != requested_expiry)
            .then(|| session_expiry.unwrap_or(u32::MAX)),
        receive_max: Some(limits.max_inflight),
        max_packet_size: Some(limits.max_packet_size as u32),
        assigned_client_identifier: assigned,
        topic_alias_max: Some(limits.topic_alias_max),
        server_keep_alive,
        response_information,
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        ..Default::default()
    });
    io.queue(
        Packet::ConnAck(connack(ConnectReturnCode::Success, session_present), props),
        version,
    );
    inc(&shared.metrics.connections_open);
    if link_rx.is_some() {
        inc(&shared.metrics.connections_linked);
    }
    info!(client_id = %client_id, identity = %identity.label(), ?version, keep_alive, ?session_expiry, "client connected");
    let shared_boundary = shared.sessions.replay_boundary();
    Some(Connection {
        shared,
        version,
        client_id,
        identity,
        keep_alive,
        generation,
        session_expiry,
        expiry_zero_at_connect: requested_expiry == Some(0),
        router_clean,
        will_delay,
        slot,
        link_rx,
        take_over,
        publish_acks: None,
        published_unacked: 0,
        link_used: false,
        will: will.map(|w| Box::new((w, will_props))),
        aliases: HashMap::new(),
        to_router: VecDeque::new(),
        last_batch: 0,
        pending_subacks: HashMap::new(),
        awaiting_release: saved.awaiting_release.into_iter().collect(),
        inflight_in: 0,
        qos2_in_router: HashSet::new(),
        queue,
        clean_exit: false,
        origin: saved.origin,
        subscriptions: saved.subscriptions,
        gaps: saved.gaps,
        copies: Copies::default(),
        limits: client_limits,
        redeliver,
        from_store: HashSet::new(),
        out_aliases: HashMap::new(),
        unreported: Unreported::default(),
        to_store: Vec::new(),
        store_acks: Vec::new(),
        acknowledge_now: false,
        restored: saved.restored,
        replay_boundary: shared_boundary,
        last_takers: None,
        unsettled: Vec::new(),
        drops: Default::default(),
    })
}
