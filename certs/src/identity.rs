//! Identities, roles and the sealpost-specific fields carried in certificates.
//!
//! sealpost facts live in standard places so any X.509 tool can read them:
//! the identity is the subject common name, and the role and publish permissions are
//! URI subject alternative names (`urn:sealpost:role:publisher`,
//! `urn:sealpost:publish:<percent-encoded filter>`).

use std::fmt;

use crate::CertError;

/// URI SAN prefix that carries the role.
pub(crate) const ROLE_URI_PREFIX: &str = "urn:sealpost:role:";
/// URI SAN prefix that carries one permitted publish topic filter.
pub(crate) const PUBLISH_URI_PREFIX: &str = "urn:sealpost:publish:";

/// What a certificate is for. Every certificate the security center issues has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The certificate authority itself.
    Authority,
    /// A publisher: Ed25519 key that signs envelopes, with the topic filters it may publish.
    Publisher,
    /// A subscriber: RSA key under which content keys are wrapped.
    Subscriber,
    /// A TLS server (broker, key distribution center).
    Server,
    /// A TLS client of the broker.
    Client,
}

impl Role {
    /// The name used in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Authority => "authority",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
            Role::Server => "server",
            Role::Client => "client",
        }
    }

    /// Parses [`Role::as_str`] back.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Authority,
            Role::Publisher,
            Role::Subscriber,
            Role::Server,
            Role::Client,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that `id` is usable as an identity: 1 to 64 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.`.
///
/// Identities appear in MQTT topic names (key-message topics) and file names, so they
/// must never contain `/`, wildcards or anything a shell or file system treats specially.
pub fn validate_id(id: &str) -> Result<(), CertError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_restricted() {
        for good in ["sensor-1", "a", "Plant_7.line2"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a+b",
            "a#",
            "with space",
            &"x".repeat(65),
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_round_trip_through_uris() {
        for f in ["sensors/+/temp", "#", "plant 7/ä/#", "a%b"] {
            let e = crate::topic::encode_for_uri(f);
            assert!(e.is_ascii() && !e.contains(' ') && !e.contains('#') && !e.contains('+'));
            assert_eq!(crate::topic::decode_from_uri(&e).as_deref(), Some(f));
        }
        assert_eq!(crate::topic::decode_from_uri("%G1"), None);
        assert_eq!(crate::topic::decode_from_uri("%4"), None);
    }
}
