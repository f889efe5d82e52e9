//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7).
//!
//! Shared by the security center (a publisher certificate lists the filters it may publish
//! to), the broker ACL and the SDKs, so that all of them agree on what a filter matches.

/// Maximum length of a topic name or filter in bytes (the MQTT UTF-8 string limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Is `topic` a valid topic *name* (what a PUBLISH carries): non-empty, no wildcards,
/// no NUL, at most [`MAX_TOPIC_LEN`] bytes.
pub fn validate_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN && !topic.contains(['+', '#', '\0'])
}

/// Percent-encodes a topic or topic filter so it fits in a URI (RFC 3986 unreserved set
/// plus `/`), as publisher certificates carry their filters.
pub fn encode_for_uri(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len());
    for b in filter.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_for_uri`] (and decodes any `%XX` escape, as in a URL path); `None`
/// on malformed escapes or invalid UTF-8.
pub fn decode_from_uri(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Is `filter` a valid topic *filter*: non-empty, no NUL, `+` only as a whole level,
/// `#` only as the whole last level.
pub fn validate_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Does the topic filter `filter` match the topic name `topic`?
///
/// Follows the MQTT rules, including that a filter starting with a wildcard does not
/// match topics starting with `$` (MQTT 3.1.1 §4.7.2). Invalid filters or topics match
/// nothing, so a malformed ACL entry fails closed.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if !validate_filter(filter) || !validate_topic(topic) {
        return false;
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is every topic matched by `inner` also matched by `outer`?
///
/// Used to decide whether a subscription filter stays inside what an ACL rule allows.
/// Conservative: returns `false` when unsure.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if !validate_filter(outer) || !validate_filter(inner) {
        return false;
    }
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(il)) if il != "#" => {}
            (Some(ol), Some(il)) if ol == il => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("#", "a/b/c"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(!filter_matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!filter_matches("#", "$SYS/uptime"));
        assert!(!filter_matches("+/uptime", "$SYS/uptime"));
        assert!(filter_matches("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn invalid_filters_and_topics_match_nothing() {
        for bad in ["", "a/#/b", "a+/b", "a/b#", "sp#", "a\0b"] {
            assert!(!validate_filter(bad), "{bad:?}");
            assert!(!filter_matches(bad, "a/b"), "{bad:?}");
        }
        assert!(!validate_topic("a/+"));
        assert!(!validate_topic("a/#"));
        assert!(!validate_topic(""));
        assert!(!filter_matches("#", "a/+"));
    }

    #[test]
    fn covers_is_conservative() {
        assert!(filter_covers("a/#", "a/b/+"));
        assert!(filter_covers("a/+/c", "a/+/c"));
        assert!(filter_covers("a/+/c", "a/b/c"));
        assert!(!filter_covers("a/+/c", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("#", "$SYS/#"));
    }
}
