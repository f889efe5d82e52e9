//! Authorization: what an authenticated identity may publish and subscribe to.
//!
//! Three layers, all of which must agree for a PUBLISH:
//! 1. key-message topics (`sealpost/keys/<publisher-id>/...`) are writable only by the
//!    publisher certificate whose id is `<publisher-id>`, whatever the rules say;
//! 2. a client authenticated by a publisher certificate may publish only to the topics
//!    its certificate lists;
//! 3. the configured rules (`[[acl.rules]]`), or the default when no rule names the
//!    identity.
//!
//! Reading is decided at SUBSCRIBE by the rules, and once more for every delivery of a
//! key message (`acl.key_topic_readers`): by default only its recipients receive it.

use crate::config::{AclConfig, AclDefault, AclRule, KeyTopicReaders};
use crate::topic;

/// Prefix of key-message topics; the next level is the publisher id.
pub const KEY_TOPIC_PREFIX: &str = "sealpost/keys/";

/// Role carried by a security-center certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// Seals and publishes messages; its certificate lists the topics it may publish.
    Publisher,
    /// Receives sealed messages.
    Subscriber,
    /// A TLS client certificate without publishing rights of its own.
    Client,
    /// A server certificate (not expected from a client; gets only the rules).
    Server,
}

/// Who a connection is, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials (only when `auth.allow_anonymous`).
    Anonymous,
    /// A password-file user.
    User(String),
    /// A client certificate verified against the security center's CA.
    Certificate {
        /// The certificate's sealpost id.
        id: String,
        /// Its role.
        role: CertRole,
        /// Topic filters a publisher certificate may publish to.
        topics: Vec<String>,
    },
}

impl CertRole {
    /// The role's name in identity labels.
    pub fn name(self) -> &'static str {
        match self {
            CertRole::Publisher => "publisher",
            CertRole::Subscriber => "subscriber",
            CertRole::Client => "client",
            CertRole::Server => "server",
        }
    }
}

impl Identity {
    /// The name ACL rules use, which is also who owns a persistent session:
    /// `anonymous`, `user:<name>`, or for a certificate its role and id
    /// (`publisher:<id>`, `subscriber:<id>`, `client:<id>`, `server:<id>`). The kind
    /// and the role are part of it: a password user `x`, a subscriber certificate `x`
    /// and a publisher certificate `x` are three identities, so a certificate whose id
    /// happens to equal a publisher's gets neither that publisher's rules nor its
    /// sessions.
    pub fn label(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".to_owned(),
            Identity::User(name) => format!("user:{name}"),
            Identity::Certificate { id, role, .. } => format!("{}:{id}", role.name()),
        }
    }

    /// Is `label` this identity's [`label`](Identity::label)? Compared in place: this
    /// runs for every PUBLISH and key-message delivery when there are rules.
    pub fn has_label(&self, label: &str) -> bool {
        let named = |kind: &str, name: &str| {
            label
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(':'))
                == Some(name)
        };
        match self {
            Identity::Anonymous => label == "anonymous",
            Identity::User(name) => named("user", name),
            Identity::Certificate { id, role, .. } => named(role.name(), id),
        }
    }
}

/// Checks the `identity` of an ACL rule: `*`, `anonymous`, or a kind (`user`, or a
/// certificate role) and a non-empty name. A label no identity can have would make its
/// rule silently dead; the old role-less `cert:<id>` is refused with a hint, because it
/// would have to guess a role.
fn validate_label(label: &str) -> Result<(), String> {
    if label == "*" || label == "anonymous" {
        return Ok(());
    }
    const KINDS: [&str; 5] = ["user", "publisher", "subscriber", "client", "server"];
    match label.split_once(':') {
        Some(("cert", id)) => Err(format!(
            "ACL identity {label:?}: certificate identities name their role: \
             \"publisher:{id}\", \"subscriber:{id}\" or \"client:{id}\""
        )),
        Some((kind, name)) if KINDS.contains(&kind) && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "ACL identity {label:?} is none of \"*\", \"anonymous\", \"user:<name>\", \
             \"publisher:<id>\", \"subscriber:<id>\", \"client:<id>\", \"server:<id>\""
        )),
    }
}

/// The compiled access control list.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    default: AclDefault,
    rules: Vec<AclRule>,
    key_topic_readers: KeyTopicReaders,
}

impl Acl {
    /// Builds the ACL from configuration, refusing invalid filters so that a typo does
    /// not silently open or close access.
    pub fn new(config: &AclConfig) -> Result<Acl, String> {
        for rule in &config.rules {
            validate_label(&rule.identity)?;
            for f in rule.publish.iter().chain(&rule.subscribe) {
                if !topic::validate_filter(f) {
                    return Err(format!(
                        "invalid filter {f:?} in ACL rule for {}",
                        rule.identity
                    ));
                }
            }
        }
        Ok(Acl {
            default: config.default,
            rules: config.rules.clone(),
            key_topic_readers: config.key_topic_readers,
        })
    }

    /// The rules that apply to `identity`. Called for every PUBLISH: allocates nothing.
    fn rules_for<'a>(&'a self, identity: &'a Identity) -> impl Iterator<Item = &'a AclRule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.identity == "*" || identity.has_label(&r.identity))
    }

    /// May `identity` publish to `topic` (a valid topic name)?
    pub fn may_publish(&self, identity: &Identity, topic_name: &str) -> bool {
        if let Some(rest) = topic_name.strip_prefix(KEY_TOPIC_PREFIX) {
            let owner = rest.split('/').next().unwrap_or("");
            // Key messages decide who can read a publisher's data: only that publisher
            // may write them, and no rule can widen this.
            return matches!(identity,
                Identity::Certificate { id, role: CertRole::Publisher, .. } if id == owner && !owner.is_empty());
        }
        if let Identity::Certificate {
            role: CertRole::Publisher,
            topics,
            ..
        } = identity
        {
            if !topics.iter().any(|f| topic::filter_matches(f, topic_name)) {
                return false;
            }
        }
        let mut rules = self.rules_for(identity).peekable();
        if rules.peek().is_none() {
            return self.default == AclDefault::Allow;
        }
        rules.any(|r| {
            r.publish
                .iter()
                .any(|f| topic::filter_matches(f, topic_name))
        })
    }

    /// May `identity` receive a message the router forwards on `topic_name`? Checked for
    /// every delivery, so that a wide subscription (`#`) is accepted but carries no key
    /// messages: true for any topic outside `sealpost/keys/`, whose readers were decided
    /// at SUBSCRIBE. Under [`KeyTopicReaders::Recipients`] `sealpost/keys/<p>/<s>[/...]`
    /// goes to the subscriber certificate `s`, the publisher certificate `p`, and to an
    /// identity whose own rule (a `*` rule does not count) has a `subscribe` filter
    /// matching the topic: the way to open key topics to readers without a certificate
    /// for TLS (browsers, X25519 keys). A topic that is not UTF-8 is refused.
    pub fn may_read(&self, identity: &Identity, topic_name: &[u8]) -> bool {
        if !topic_name.starts_with(KEY_TOPIC_PREFIX.as_bytes())
            || self.key_topic_readers == KeyTopicReaders::Rules
        {
            return true;
        }
        let Ok(topic_name) = std::str::from_utf8(topic_name) else {
            return false;
        };
        let mut levels = topic_name[KEY_TOPIC_PREFIX.len()..].split('/');
        let (publisher, subscriber) = (levels.next(), levels.next());
        let named = |level: Option<&str>, id: &str| level == Some(id) && !id.is_empty();
        match identity {
            Identity::Certificate {
                id,
                role: CertRole::Subscriber,
                ..
            } if named(subscriber, id) => return true,
            Identity::Certificate {
                id,
                role: CertRole::Publisher,
                ..
            } if named(publisher, id) => return true,
            _ => {}
        }
        self.rules
            .iter()
            .filter(|r| identity.has_label(&r.identity))
            .any(|r| {
                r.subscribe
                    .iter()
                    .any(|f| topic::filter_matches(f, topic_name))
            })
    }

    /// May `identity` subscribe to `filter` (a valid filter, `$share/<group>/` removed)?
    pub fn may_subscribe(&self, identity: &Identity, filter: &str) -> bool {
        let mut rules = self.rules_for(identity).peekable();
        if rules.peek().is_none() {
            return self.default == AclDefault::Allow;
        }
        rules.any(|r| r.subscribe.iter().any(|f| topic::filter_covers(f, filter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(toml_text: &str) -> Acl {
        let c: crate::config::Config = toml::from_str(toml_text).unwrap();
        Acl::new(&c.acl).unwrap()
    }

    fn publisher(id: &str, topics: &[&str]) -> Identity {
        Identity::Certificate {
            id: id.into(),
            role: CertRole::Publisher,
            topics: topics.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_allow_without_rules_but_key_topics_stay_reserved() {
        let a = Acl::default();
        assert!(a.may_publish(&Identity::Anonymous, "a/b"));
        assert!(a.may_subscribe(&Identity::Anonymous, "#"));
        assert!(!a.may_publish(&Identity::Anonymous, "sealpost/keys/p1/x"));
        assert!(!a.may_publish(&Identity::User("p1".into()), "sealpost/keys/p1/x"));
        assert!(a.may_publish(&publisher("p1", &["#"]), "sealpost/keys/p1/x"));
        assert!(!a.may_publish(&publisher("p2", &["#"]), "sealpost/keys/p1/x"));
        assert!(!a.may_publish(&publisher("p1", &["#"]), "sealpost/keys/p10/x"));
    }

    #[test]
    fn rules_apply_per_identity_with_wildcards() {
        let a = acl(r#"
            [acl]
            default = "deny"
            [[acl.rules]]
            identity = "user:alice"
            publish = ["sensors/+/temp"]
            subscribe = ["cmd/#"]
            "#);
        let alice = Identity::User("alice".into());
        assert!(a.may_publish(&alice, "sensors/1/temp"));
        assert!(!a.may_publish(&alice, "sensors/1/hum"));
        assert!(a.may_subscribe(&alice, "cmd/a/+"));
        assert!(!a.may_subscribe(&alice, "#"));
        assert!(!a.may_publish(&Identity::User("bob".into()), "sensors/1/temp"));
    }

    #[test]
    fn publisher_certificate_limits_publishing_to_its_topics() {
        let a = Acl::default();
        let p = publisher("p1", &["plant/+/power"]);
        assert!(a.may_publish(&p, "plant/3/power"));
        assert!(!a.may_publish(&p, "plant/3/valve"));
    }

    #[test]
    fn invalid_rule_filters_are_refused() {
        let c: crate::config::Config = toml::from_str(
            r#"
            [[acl.rules]]
            identity = "*"
            publish = ["a/#/b"]
            "#,
        )
        .unwrap();
        assert!(Acl::new(&c.acl).is_err());
    }

    #[test]
    fn certificate_rules_name_the_role() {
        let a = acl(r#"
            [acl]
            default = "deny"
            [[acl.rules]]
            identity = "publisher:p1"
            publish = ["plant/#"]
            subscribe = ["plant/#"]
            "#);
        let p1 = publisher("p1", &["plant/#"]);
        assert!(a.may_publish(&p1, "plant/1"));
        assert!(a.may_subscribe(&p1, "plant/#"));
        // Same id, other roles or kinds: not the publisher, so not its rules.
        for other in [CertRole::Subscriber, CertRole::Client, CertRole::Server] {
            let not_p1 = Identity::Certificate {
                id: "p1".into(),
                role: other,
                topics: vec!["#".into()],
            };
            assert!(!a.may_publish(&not_p1, "plant/1"), "{other:?}");
            assert!(!a.may_subscribe(&not_p1, "plant/#"), "{other:?}");
            assert!(
                !a.may_publish(&not_p1, "sealpost/keys/p1/alice"),
                "{other:?}"
            );
        }
        let user = Identity::User("p1".into());
        assert!(!a.may_subscribe(&user, "plant/#"));
        assert_ne!(user.label(), p1.label());
        for identity in [user, p1, Identity::Anonymous] {
            assert!(identity.has_label(&identity.label()));
            for other in [
                "*",
                "user:p",
                "user:p1x",
                "publisher:p1x",
                "subscriber:p1",
                "user",
            ] {
                assert!(!identity.has_label(other), "{identity:?} {other}");
            }
        }
    }

    #[test]
    fn key_topics_are_read_by_their_recipients_and_explicit_rules_only() {
        let a = acl(r##"
            [[acl.rules]]
            identity = "*"
            subscribe = ["#"]
            [[acl.rules]]
            identity = "user:alice-web"
            subscribe = ["sealpost/keys/+/alice"]
            "##);
        let cert = |id: &str, role| Identity::Certificate {
            id: id.into(),
            role,
            topics: vec![],
        };
        let topic = b"sealpost/keys/p1/alice";
        assert!(a.may_read(&Identity::Anonymous, b"plant/1"));
        assert!(a.may_read(&cert("alice", CertRole::Subscriber), topic));
        assert!(a.may_read(
            &cert("alice", CertRole::Subscriber),
            b"sealpost/keys/p1/alice/1"
        ));
        assert!(a.may_read(&publisher("p1", &[]), topic));
        assert!(a.may_read(&Identity::User("alice-web".into()), topic));
        // A `*` rule is nobody's own: it does not open key topics.
        assert!(!a.may_read(&Identity::Anonymous, topic));
        assert!(!a.may_read(&Identity::User("alice".into()), topic));
        assert!(!a.may_read(&Identity::User("alice-web".into()), b"sealpost/keys/p1/bob"));
        assert!(!a.may_read(&cert("eve", CertRole::Subscriber), topic));
        assert!(!a.may_read(&cert("alice", CertRole::Client), topic));
        assert!(!a.may_read(&cert("p1", CertRole::Subscriber), topic));
        assert!(!a.may_read(&cert("alice", CertRole::Publisher), topic));
        assert!(!a.may_read(&publisher("p2", &[]), topic));
        assert!(!a.may_read(&cert("alice", CertRole::Subscriber), b"sealpost/keys/p1"));
        assert!(!a.may_read(
            &cert("alice", CertRole::Subscriber),
            b"sealpost/keys/\xff/alice"
        ));
        assert!(!a.may_read(&cert("", CertRole::Subscriber), b"sealpost/keys/p1/"));
        let rules = acl("[acl]\nkey_topic_readers = \"rules\"\n");
        assert!(rules.may_read(&Identity::Anonymous, topic));
    }

    #[test]
    fn rule_identities_must_be_ones_an_identity_can_have() {
        for bad in ["cert:p1", "usr:alice", "alice", "user:", "publisher:"] {
            let c: crate::config::Config = toml::from_str(&format!(
                "[[acl.rules]]\nidentity = {bad:?}\nsubscribe = [\"#\"]\n"
            ))
            .unwrap();
            let e = Acl::new(&c.acl).expect_err(bad);
            if bad == "cert:p1" {
                assert!(e.contains("publisher:p1"), "{e}");
            }
        }
        for good in [
            "*",
            "anonymous",
            "user:a",
            "subscriber:s",
            "client:c",
            "server:b",
        ] {
            let c: crate::config::Config =
                toml::from_str(&format!("[[acl.rules]]\nidentity = {good:?}\n")).unwrap();
            assert!(Acl::new(&c.acl).is_ok(), "{good}");
        }
    }
}
