//! MQTT topic name and filter rules used by the edge.
//!
//! Re-exported from the security center so that the broker's ACL, the certificates'
//! topic lists and the SDKs agree on what a filter matches.

pub use sealpost_certs::topic::{filter_covers, filter_matches, validate_filter, validate_topic};

use std::borrow::Cow;

/// The most levels a topic name or filter from a client may have: Mosquitto's limit
/// too (its `TOPIC_HIERARCHY_LIMIT`). The broker's trees of filters (a connection's
/// `subscriptions::Levels`, the router's) hold a node per level, and what walked or
/// dropped them level by level took a worker thread's stack through with one
/// subscription to a filter of 32,000 levels (an MQTT string holds 65,535 bytes): the
/// process aborted. A deeper topic name is refused as an invalid one, a deeper filter
/// as an invalid filter.
pub const MAX_LEVELS: usize = 200;

/// A topic name a client may publish to: valid MQTT, of at most [`MAX_LEVELS`] levels.
pub fn valid_topic(topic: &str) -> bool {
    validate_topic(topic) && levels(topic) <= MAX_LEVELS
}

/// A topic filter a client may subscribe to: valid MQTT, of at most [`MAX_LEVELS`]
/// levels.
pub fn valid_filter(filter: &str) -> bool {
    validate_filter(filter) && levels(filter) <= MAX_LEVELS
}

fn levels(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'/').count() + 1
}

/// Splits a shared subscription `$share/<group>/<filter>` into its filter, or returns
/// the filter unchanged. `None` when the share syntax is malformed.
pub fn strip_share(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        Some(rest) => {
            let (group, inner) = rest.split_once('/')?;
            if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
                return None;
            }
            Some(inner)
        }
        None => Some(filter),
    }
}

/// The filter the router gets for a client's filter. rumqttd keeps one delivery cursor
/// and one round robin per shared group *name*, whatever the filter: a client that
/// joined `$share/workers/eve-own/#` would move the cursor of `$share/workers/jobs/#`
/// and take its turns, and its members would lose messages. So the router's group is
/// named after both the group and the filter: `$share/<g>/<f>` becomes
/// `$share/<esc(g)>%%<esc(f)>/<f>`, where `esc` percent-encodes `% / + # $`. The
/// result is one topic level, and distinct (group, filter) pairs give distinct names
/// (`esc` never produces `%%`, so the first `%%` separates the two). Other filters are
/// unchanged.
pub fn router_filter(filter: &str) -> Cow<'_, str> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Cow::Borrowed(filter);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Cow::Borrowed(filter);
    };
    let mut out = String::with_capacity(filter.len() * 2 + 8);
    out.push_str("$share/");
    escape_level(group, &mut out);
    out.push_str("%%");
    escape_level(inner, &mut out);
    out.push('/');
    out.push_str(inner);
    Cow::Owned(out)
}

/// A subscription the edge makes in the router for a session's own (a session restored
/// after a restart, a resumed session's filters): the router's name for the filter,
/// its QoS, and none of the MQTT 5 options, which the edge applies itself.
pub(crate) fn router_subscription(filter: &str, qos: u8) -> rumqttd::protocol::Filter {
    rumqttd::protocol::Filter {
        path: router_filter(filter).into_owned(),
        qos: rumqttd::protocol::qos(qos.min(2)).unwrap_or(rumqttd::protocol::QoS::AtMostOnce),
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: rumqttd::protocol::RetainForwardRule::OnEverySubscribe,
    }
}

/// Appends `s` with `% / + # $` percent-encoded, so that it fits in one topic level
/// with no wildcard and no `%%`.
fn escape_level(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' | '/' | '+' | '#' | '$' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_groups_are_distinct_per_group_and_filter() {
        assert_eq!(router_filter("a/#"), "a/#");
        assert_eq!(
            router_filter("$share/workers/jobs/#"),
            "$share/workers%%jobs%2F%23/jobs/#"
        );
        let pairs = [
            ("workers", "jobs/#"),
            ("workers", "eve-own/#"),
            ("workers%", "%jobs/#"),
            ("workers%%", "jobs/#"),
            ("w", "orkers/jobs/#"),
            ("workers%2F", "jobs/#"),
        ];
        let mut groups = std::collections::HashSet::new();
        for (g, f) in pairs {
            let mapped = router_filter(&format!("$share/{g}/{f}")).into_owned();
            let (group, inner) = mapped["$share/".len()..].split_once('/').unwrap();
            // One level, no wildcard, and the filter itself unchanged.
            assert!(!group.contains(['+', '#']), "{mapped}");
            assert_eq!(inner, f);
            assert!(groups.insert(group.to_owned()), "{g} {f} -> {mapped}");
        }
    }
}
