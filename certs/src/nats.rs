//! The sealpost broker's publish and subscribe permissions, written as a NATS server
//! authorization block for MQTT users, for deployments on a NATS cluster.
//!
//! The sealpost broker enforces two things that end-to-end sealing cannot: only a
//! publisher writes its key messages (`sealpost/keys/<publisher>/...`), and a
//! publisher publishes only to its certificate's topics. On NATS, the same rules become
//! per-user subject permissions. Users are named by their certificate's subject
//! (`CN=<id>`), as the NATS MQTT listener names them with `tls { verify_and_map: true }`,
//! so the permissions follow the certificate, not a password.
//!
//! What each certificate may do:
//! - a publisher: publish to its certificate's topic filters and to its own key topics;
//!   subscribe to its own key topics (the grant check reads them back);
//! - a subscriber: publish nothing; subscribe to the `read` filters and its own key
//!   topic (`sealpost/keys/+/<id>`);
//! - a TLS client: publish nothing; subscribe to the `read` filters.
//!
//! NATS denies win over allows, so "every key topic but one's own" cannot be written as
//! a deny: a filter (a publisher's topic, or a `read` filter) that reaches into
//! `sealpost/keys/` is refused rather than exported with more rights than the sealpost
//! broker would give. NATS does not read sealpost's revocation list: revoked and
//! expired certificates are left out of the export, so regenerate it and reload the
//! servers after each revocation.

use std::fmt::Write as _;

use crate::{topic, CertificateInfo, Role};

/// The topic prefix of key messages.
const KEY_TOPIC_PREFIX: &str = "sealpost/keys/";

/// The subject of every MQTT delivery subscription the NATS server makes for a QoS 1
/// subscriber (JetStream consumers deliver there): every MQTT user that subscribes at
/// QoS 1 needs it. Users are limited to MQTT connections, so nobody can subscribe to it
/// with the NATS protocol.
const MQTT_DELIVERY_SUBJECT: &str = "$MQTT.sub.>";

/// Why a set of certificates cannot be exported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsExportError {
    /// A topic filter has no NATS subject: it holds a character NATS gives another
    /// meaning (`*`, `>`, a space) or an empty level.
    #[error(
        "topic filter {0:?} cannot be written as a NATS subject (empty level, space, '*' or '>')"
    )]
    Untranslatable(String),
    /// A filter reaches into the key topics, which NATS cannot limit to one's own.
    #[error(
        "{who}: topic filter {filter:?} reaches into {KEY_TOPIC_PREFIX}, and NATS cannot \
         allow it without allowing every publisher's key topics; list narrower filters"
    )]
    CoversKeyTopics {
        /// The certificate identity, or `--read`.
        who: String,
        /// The filter.
        filter: String,
    },
}

/// The NATS subjects that together match what the MQTT topic filter `filter` matches.
///
/// NATS's MQTT support maps `/` to `.`, `.` within a level to `//`, `+` to `*` and `#`
/// to `>`; `a/#` also matches `a` itself, so it becomes `a` and `a.>`.
pub fn subjects(filter: &str) -> Result<Vec<String>, NatsExportError> {
    let untranslatable = || NatsExportError::Untranslatable(filter.to_owned());
    if !topic::validate_filter(filter) {
        return Err(untranslatable());
    }
    let mut levels = Vec::new();
    for level in filter.split('/') {
        let level = match level {
            "+" => "*".to_owned(),
            "#" => ">".to_owned(),
            "" => return Err(untranslatable()),
            l if l.contains(['*', '>', ' ']) => return Err(untranslatable()),
            l => l.replace('.', "//"),
        };
        levels.push(level);
    }
    let subject = levels.join(".");
    Ok(match subject.strip_suffix(".>") {
        Some(parent) => vec![parent.to_owned(), subject],
        None => vec![subject],
    })
}

/// Whether `filter` matches some key-message topic.
fn reaches_key_topics(filter: &str) -> bool {
    let mut levels = filter.split('/');
    for key_level in ["sealpost", "keys"] {
        match levels.next() {
            Some("#") => return true,
            Some("+") => {}
            Some(l) if l == key_level => {}
            _ => return false,
        }
    }
    // Key topics have at least one level after `sealpost/keys`.
    levels.next().is_some()
}

/// The subjects of `filters`, refusing any that reach into the key topics.
fn data_subjects(who: &str, filters: &[String]) -> Result<Vec<String>, NatsExportError> {
    let mut out = Vec::new();
    for filter in filters {
        if reaches_key_topics(filter) {
            return Err(NatsExportError::CoversKeyTopics {
                who: who.to_owned(),
                filter: filter.clone(),
            });
        }
        out.extend(subjects(filter)?);
    }
    Ok(out)
}

/// One user's permissions.
struct User {
    id: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// The NATS `authorization` block for `certificates` (already verified by the caller:
/// revoked and expired ones left out), with `read` the topic filters subscribers and
/// clients may subscribe to. Certificates of other roles (servers, the CA) get no user.
pub fn authorization(
    certificates: &[CertificateInfo],
    read: &[String],
) -> Result<String, NatsExportError> {
    let read_subjects = data_subjects("--read", read)?;
    let mut users = Vec::new();
    for cert in certificates {
        let key_topics = |filter: String| subjects(&filter);
        let (publish, subscribe) = match cert.role {
            Role::Publisher => {
                let own_keys = key_topics(format!("{KEY_TOPIC_PREFIX}{}/#", cert.id))?;
                let mut publish = data_subjects(&cert.id, &cert.topics)?;
                publish.extend(own_keys.iter().cloned());
                (publish, own_keys)
            }
            Role::Subscriber => {
                let mut subscribe = read_subjects.clone();
                subscribe.extend(key_topics(format!("{KEY_TOPIC_PREFIX}+/{}", cert.id))?);
                (Vec::new(), subscribe)
            }
            Role::Client => (Vec::new(), read_subjects.clone()),
            Role::Server | Role::Authority => continue,
        };
        users.push(User {
            id: cert.id.clone(),
            publish,
            subscribe,
        });
    }
    Ok(render(&users))
}

/// Writes the block in NATS configuration syntax (JSON strings are valid there).
fn render(users: &[User]) -> String {
    let list = |subjects: &[String]| {
        let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from(
        "# NATS authorization for sealpost certificates (sealpost-certs export-nats).\n\
         # Needs `tls { verify_and_map: true }` in the mqtt block: users are certificate subjects.\n\
         authorization {\n  users = [\n",
    );
    for user in users {
        let publish = if user.publish.is_empty() {
            // An empty allow list would mean "no restriction" to NATS.
            format!("{{ deny: {} }}", list(&[">".to_owned()]))
        } else {
            format!("{{ allow: {} }}", list(&user.publish))
        };
        let mut subscribe = user.subscribe.clone();
        subscribe.push(MQTT_DELIVERY_SUBJECT.to_owned());
        let _ = writeln!(
            out,
            "    {{ user: {}, permissions: {{ publish: {publish}, subscribe: {{ allow: {} }} }}, \
             allowed_connection_types: [\"MQTT\"] }}",
            quote(&format!("CN={}", user.id)),
            list(&subscribe),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// A NATS configuration string literal. Identities and subjects hold no `"` or `\`
/// (identities are `A-Z a-z 0-9 . _ -`; topics with them are refused by MQTT or kept
/// verbatim), but quote them properly all the same.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_subjects_nats_gives_mqtt_topics() {
        assert_eq!(subjects("plant/a").unwrap(), ["plant.a"]);
        assert_eq!(subjects("plant/+/temp").unwrap(), ["plant.*.temp"]);
        assert_eq!(subjects("plant/#").unwrap(), ["plant", "plant.>"]);
        assert_eq!(subjects("#").unwrap(), [">"]);
        assert_eq!(subjects("v1.2/x").unwrap(), ["v1//2.x"]);
    }

    #[test]
    fn filters_nats_cannot_express_are_refused() {
        for bad in ["a//b", "/a", "a/", "a*/b", "a/>", "a b", "a/#/b", ""] {
            assert!(subjects(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_reaching_into_key_topics_are_recognised() {
        for f in [
            "#",
            "+/#",
            "sealpost/#",
            "sealpost/keys/#",
            "+/+/alice/bob",
            "sealpost/keys/+",
        ] {
            assert!(reaches_key_topics(f), "{f:?}");
        }
        for f in [
            "plant/#",
            "sealpost/keys",
            "sealpost/other/#",
            "+/x/#",
            "sealpost",
        ] {
            assert!(!reaches_key_topics(f), "{f:?}");
        }
    }
}
