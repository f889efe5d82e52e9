//! MQTT topic name and filter rules used by the edge.
//!
//! Re-exported from the security center so that the broker's ACL, the certificates'
//! topic lists and the SDKs agree on what a filter matches.

pub use sealpost_certs::topic::{filter_covers, filter_matches, validate_filter, validate_topic};

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
