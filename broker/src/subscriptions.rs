//! A client's subscriptions as the edge sees them, and what they decide for each
//! message the router forwards.
//!
//! The router keeps one delivery stream per filter and knows nothing of MQTT 5
//! subscription options, so the edge keeps its own table of the client's filters with
//! their granted QoS, options and subscription identifier, and uses it to:
//! - deliver one copy of a message that matches several of the client's filters, at the
//!   highest QoS any of them granted, carrying every matching subscription identifier
//!   (MQTT 3.1.1 §3.3.5, MQTT 5 §3.3.4): the router sends one copy per filter, the edge
//!   delivers one and acknowledges the others to the router itself ([`Copies`]);
//! - apply no local, retain as published and retain handling.
//!
//! The table outlives the connection when the session does (`session::SavedSessions`),
//! so a resumed session keeps its options.

use crate::topic;
use std::collections::{HashMap, VecDeque};

/// One of the client's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// Granted maximum QoS.
    pub qos: u8,
    /// MQTT 5 no local: not sent messages this session published.
    pub no_local: bool,
    /// MQTT 5 retain as published: live messages keep the publisher's RETAIN flag.
    pub retain_as_published: bool,
    /// No retained messages for this filter at subscribe time (retain handling 2, or
    /// retain handling 1 on a repeated subscription).
    pub suppress_retained: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<usize>,
}

impl Subscription {
    /// A subscription with MQTT's defaults (everything 3.1.1 can express).
    pub fn plain(qos: u8) -> Subscription {
        Subscription {
            qos,
            no_local: false,
            retain_as_published: false,
            suppress_retained: false,
            id: None,
        }
    }

    fn has_options(&self) -> bool {
        self.no_local || self.retain_as_published || self.suppress_retained
    }
}

/// What the edge does with one copy of a forwarded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not for this client (another copy is or was delivered, or an option excludes
    /// it); the router still gets its acknowledgement.
    Skip,
    /// Deliver at no more than `max_qos` (before the publisher's QoS is applied).
    Deliver {
        /// Highest QoS granted by the matching filters.
        max_qos: u8,
        /// Set RETAIN (retain as published).
        retain: bool,
        /// Subscription identifiers to attach, replacing any others.
        ids: Vec<usize>,
    },
}

/// A copy of a forwarded message, as the connection saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copy {
    /// Unique message number from the edge's marker (0: unknown).
    pub message: u64,
    /// The router sent it at subscribe time (a retained message).
    pub at_subscribe: bool,
    /// The client's own session published it.
    pub own: bool,
    /// The publisher set RETAIN.
    pub retained: bool,
    /// QoS of this copy as the router sent it (its subscription's QoS in the router).
    pub router_qos: u8,
}

/// The client's subscriptions, by filter as subscribed (`$share/...` included).
///
/// What [`Subscriptions::decide`] needs to know of the whole table (whether some
/// filters overlap, whether some have options or identifiers) is kept as counts that
/// each insertion or removal updates, instead of comparing all pairs of filters again
/// for every filter added (O(N³) per SUBSCRIBE: 1,500 filters in one packet stalled a
/// worker thread for 19.5 s). Overlaps with a new filter are counted in a tree of the
/// filters' levels ([`Levels`]), which visits only the branches the filter can meet.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subscriptions {
    by_filter: HashMap<String, Subscription>,
    /// Pairs of non-shared filters some topic can match both of (so the router may
    /// send several copies of a message).
    overlapping_pairs: usize,
    /// The non-shared filters, level by level.
    levels: Levels,
    /// Filters with options or an identifier (so every message needs matching).
    special: usize,
    /// Filters with a subscription identifier.
    identifiers: usize,
}

impl Subscriptions {
    /// Adds or replaces a subscription; returns the one it replaced.
    pub fn insert(&mut self, filter: String, sub: Subscription) -> Option<Subscription> {
        if !self.by_filter.contains_key(&filter) && !is_shared(&filter) {
            // Replacing keeps the pairs; only a new filter adds any.
            self.overlapping_pairs += self.levels.overlaps(&filter);
            self.levels.insert(&filter);
        }
        self.count(&sub, 1);
        let old = self.by_filter.insert(filter, sub);
        if let Some(old) = &old {
            self.count(old, -1);
        }
        old
    }

    /// Removes a subscription; false if there was none on this filter.
    pub fn remove(&mut self, filter: &str) -> bool {
        let Some(old) = self.by_filter.remove(filter) else {
            return false;
        };
        self.count(&old, -1);
        if !is_shared(filter) {
            self.levels.remove(filter);
            self.overlapping_pairs = self
                .overlapping_pairs
                .saturating_sub(self.levels.overlaps(filter));
        }
        true
    }

    /// The subscription on exactly this filter.
    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        self.by_filter.get(filter)
    }

    /// Every subscription, by filter.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Subscription)> {
        self.by_filter.iter()
    }

    /// Whether a message on `topic` published at QoS 1 or 2 by the session of `origin`
    /// reaches this session at QoS 1 or 2 (so it must be stored for it): some matching
    /// filter granted QoS 1 or 2, and not all of them exclude it by no local.
    pub fn takes_qos1(&self, topic: &str, origin: u64, own_origin: u64) -> bool {
        self.by_filter.iter().any(|(filter, s)| {
            s.qos > 0
                && !(s.no_local && origin == own_origin)
                && topic::filter_matches(topic::strip_share(filter).unwrap_or(filter), topic)
        })
    }

    /// The highest QoS among the filters that match `topic` (the QoS the router sends
    /// it with); `None` when none does.
    pub fn max_qos(&self, topic: &str) -> Option<u8> {
        self.by_filter
            .iter()
            .filter(|(filter, _)| {
                topic::filter_matches(topic::strip_share(filter).unwrap_or(filter), topic)
            })
            .map(|(_, s)| s.qos)
            .max()
    }

    /// Number of subscriptions (filters), shared ones included.
    pub fn len(&self) -> usize {
        self.by_filter.len()
    }

    /// Whether [`Subscriptions::decide`] looks at the topic (otherwise any will do).
    pub fn needs_topic(&self) -> bool {
        self.special > 0 || self.overlapping_pairs > 0
    }

    /// Whether any filter has a subscription identifier.
    pub fn has_identifiers(&self) -> bool {
        self.identifiers > 0
    }

    /// Adds (`delta` 1) or takes away (-1) what `sub` counts for.
    fn count(&mut self, sub: &Subscription, delta: isize) {
        let step = |n: &mut usize, applies: bool| {
            if applies {
                *n = n.saturating_add_signed(delta);
            }
        };
        step(&mut self.identifiers, sub.id.is_some());
        step(&mut self.special, sub.has_options() || sub.id.is_some());
    }

    /// Decides what to do with one copy. `copies` remembers messages delivered through
    /// one of several matching filters.
    pub fn decide(&self, topic: &[u8], copy: Copy, copies: &mut Copies) -> Decision {
        let deliver_as_is = Decision::Deliver {
            max_qos: 2,
            retain: false,
            ids: Vec::new(),
        };
        // The common case (no options, identifiers or overlapping filters) needs no
        // matching: the router's copy is the one to deliver.
        if !self.needs_topic() {
            return deliver_as_is;
        }
        let Ok(topic) = std::str::from_utf8(topic) else {
            return deliver_as_is;
        };
        let mut plain_matches = 0usize;
        let mut max_qos = 0u8;
        let mut ids = Vec::new();
        let (mut all_suppress, mut all_no_local, mut any_rap) = (true, true, false);
        let mut matched = false;
        for (filter, s) in &self.by_filter {
            let shared = topic::strip_share(filter).filter(|f| *f != filter.as_str());
            if !topic::filter_matches(shared.unwrap_or(filter), topic) {
                continue;
            }
            matched = true;
            if shared.is_none() {
                plain_matches += 1;
            }
            max_qos = max_qos.max(s.qos);
            ids.extend(s.id);
            all_suppress &= s.suppress_retained;
            all_no_local &= s.no_local;
            any_rap |= s.retain_as_published;
        }
        if !matched {
            // A copy for a filter the edge no longer knows (unsubscribed meanwhile).
            return deliver_as_is;
        }
        ids.sort_unstable();
        ids.dedup();
        if copy.at_subscribe {
            // Retained messages are sent once per subscription at subscribe time, not
            // deduplicated; suppressed only when every matching filter asks for it.
            return if all_suppress {
                Decision::Skip
            } else {
                Decision::Deliver {
                    max_qos,
                    retain: true,
                    ids,
                }
            };
        }
        if copy.own && all_no_local {
            return Decision::Skip;
        }
        if plain_matches > 1 && copy.message != 0 {
            // Deliver the first copy whose router QoS can carry the wanted QoS (the
            // copy of the highest-QoS filter always can); skip the rest.
            let wanted = max_qos;
            let deliver = copies.take(copy.message, plain_matches, copy.router_qos >= wanted);
            if !deliver {
                return Decision::Skip;
            }
        }
        Decision::Deliver {
            max_qos,
            retain: copy.retained && any_rap,
            ids,
        }
    }
}

/// Messages of which the router sends several copies (one per matching filter), until
/// every copy has arrived. Bounded: a copy that never comes (the filter was
/// unsubscribed in between) cannot grow it without limit.
#[derive(Debug, Default)]
pub(crate) struct Copies {
    pending: HashMap<u64, Pending>,
    order: VecDeque<u64>,
}

#[derive(Debug)]
struct Pending {
    remaining: usize,
    delivered: bool,
}

/// Messages tracked at most; older ones are forgotten first.
const MAX_PENDING: usize = 4096;

impl Copies {
    /// Records one of `total` copies of `message`; true when this copy is the one to
    /// deliver: the first that `can_carry` the wanted QoS, or the last one if none
    /// could.
    fn take(&mut self, message: u64, total: usize, can_carry: bool) -> bool {
        let entry = self.pending.entry(message).or_insert_with(|| {
            self.order.push_back(message);
            Pending {
                remaining: total,
                delivered: false,
            }
        });
        entry.remaining = entry.remaining.saturating_sub(1);
        let deliver = !entry.delivered && (can_carry || entry.remaining == 0);
        entry.delivered |= deliver;
        if entry.remaining == 0 {
            self.pending.remove(&message);
        }
        while self.order.len() > MAX_PENDING {
            if let Some(old) = self.order.pop_front() {
                self.pending.remove(&old);
            }
        }
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order.retain(|m| pending.contains_key(m));
        }
        deliver
    }
}

/// Topic filters as a tree of their levels, with counts that tell how many of them a
/// filter overlaps (some topic name can match both: levels pairwise equal or
/// wildcarded, `#` matching the rest; conservative for `$` topics) without comparing
/// it with each: a literal level meets only the same literal, `+` and `#`.
#[derive(Debug, Clone, Default)]
struct Levels {
    children: HashMap<String, Levels>,
    /// Filters that end at this node.
    ends: usize,
    /// Filters that end at this node or below it.
    total: usize,
}

impl Levels {
    fn insert(&mut self, filter: &str) {
        let mut node = self;
        node.total += 1;
        for level in filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
            node.total += 1;
        }
        node.ends += 1;
    }

    /// Removes one filter that [`Levels::insert`] added.
    fn remove(&mut self, filter: &str) {
        fn remove_from(node: &mut Levels, mut levels: std::str::Split<'_, char>) -> bool {
            let removed = match levels.next() {
                None if node.ends > 0 => {
                    node.ends -= 1;
                    true
                }
                None => false,
                Some(level) => match node.children.get_mut(level) {
                    Some(child) => {
                        let removed = remove_from(child, levels);
                        if child.total == 0 {
                            node.children.remove(level);
                        }
                        removed
                    }
                    None => false,
                },
            };
            if removed {
                node.total -= 1;
            }
            removed
        }
        remove_from(self, filter.split('/'));
    }

    /// How many filters of the tree overlap `filter`.
    fn overlaps(&self, filter: &str) -> usize {
        let levels: Vec<&str> = filter.split('/').collect();
        self.count(&levels)
    }

    fn count(&self, levels: &[&str]) -> usize {
        // A `#` below this node matches whatever the filter has from here on.
        let hash = self.children.get("#").map_or(0, |c| c.total);
        match levels.split_first() {
            // The filter ends here: filters that end here too, or go on with `#`.
            None => self.ends + hash,
            // `#` in the filter meets every filter that got this far.
            Some((&"#", _)) => self.total,
            // `+` meets every level but `#` (counted once, above).
            Some((&"+", rest)) => {
                hash + self
                    .children
                    .iter()
                    .filter(|(level, _)| level.as_str() != "#")
                    .map(|(_, c)| c.count(rest))
                    .sum::<usize>()
            }
            // A literal meets itself and `+`.
            Some((level, rest)) => {
                let same = self.children.get(*level).map_or(0, |c| c.count(rest));
                let plus = self.children.get("+").map_or(0, |c| c.count(rest));
                hash + same + plus
            }
        }
    }
}

/// A `$share/...` filter: its copies are not merged with the others'.
fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference [`Levels`] is checked against: true when some topic name can
    /// match both filters (levels pairwise equal or wildcarded, `#` matching the
    /// rest). Conservative for `$` topics.
    fn filters_overlap(a: &str, b: &str) -> bool {
        let mut a = a.split('/');
        let mut b = b.split('/');
        loop {
            match (a.next(), b.next()) {
                (Some("#"), _) | (_, Some("#")) => return true,
                (None, None) => return true,
                (Some(x), Some(y)) if x == y || x == "+" || y == "+" => continue,
                _ => return false,
            }
        }
    }

    fn copy(message: u64, router_qos: u8) -> Copy {
        Copy {
            message,
            at_subscribe: false,
            own: false,
            retained: false,
            router_qos,
        }
    }

    #[test]
    fn overlap_is_found_level_by_level() {
        assert!(filters_overlap("a/#", "a/b"));
        assert!(filters_overlap("a/+", "+/b"));
        assert!(filters_overlap("#", "x/y/z"));
        assert!(filters_overlap("a/b", "a/b"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a", "a/b"));
    }

    /// What the counts must equal: every pair compared again.
    fn recomputed(subs: &Subscriptions) -> (bool, bool, usize) {
        let plain: Vec<&String> = subs.by_filter.keys().filter(|f| !is_shared(f)).collect();
        let pairs: usize = plain
            .iter()
            .enumerate()
            .map(|(i, a)| {
                plain[i + 1..]
                    .iter()
                    .filter(|b| filters_overlap(a, b))
                    .count()
            })
            .sum();
        let overlap = pairs > 0;
        let special = subs
            .by_filter
            .values()
            .any(|s| s.has_options() || s.id.is_some());
        let ids = subs.by_filter.values().any(|s| s.id.is_some());
        (overlap || special, ids, pairs)
    }

    #[test]
    fn incremental_counts_match_a_full_recompute() {
        let filters = [
            "a/#",
            "a/b",
            "a/+",
            "+/b",
            "c",
            "c/d",
            "$share/g/a/#",
            "$share/g/c",
            "#",
            "x/+/z",
            "+",
            "+/+",
            "a",
            "a/b/c",
            "+/#",
            "$SYS/x",
            "",
            "/",
            "a//b",
            "x/y/z",
        ];
        let mut subs = Subscriptions::default();
        // A fixed pseudo-random walk of inserts, replacements and removals.
        let mut state = 0x2545_f491_u32;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let filter = filters[state as usize % filters.len()];
            if state & 0x300 == 0 {
                subs.remove(filter);
            } else {
                let s = Subscription {
                    id: (state & 0x400 != 0).then_some(1),
                    no_local: state & 0x800 != 0,
                    ..Subscription::plain((state >> 12) as u8 % 3)
                };
                subs.insert(filter.to_owned(), s);
            }
            let (needs_topic, ids, pairs) = recomputed(&subs);
            assert_eq!(
                subs.needs_topic(),
                needs_topic,
                "{:?}",
                subs.by_filter.keys()
            );
            assert_eq!(subs.has_identifiers(), ids);
            assert_eq!(subs.overlapping_pairs, pairs, "{:?}", subs.by_filter.keys());
        }
    }

    #[test]
    fn one_copy_at_the_highest_qos_with_every_identifier() {
        let mut subs = Subscriptions::default();
        subs.insert(
            "a/#".into(),
            Subscription {
                id: Some(7),
                ..Subscription::plain(0)
            },
        );
        subs.insert(
            "a/+".into(),
            Subscription {
                id: Some(3),
                ..Subscription::plain(2)
            },
        );
        let mut copies = Copies::default();
        // The QoS 0 copy cannot carry QoS 2: skipped; the QoS 2 copy is delivered.
        assert_eq!(subs.decide(b"a/b", copy(1, 0), &mut copies), Decision::Skip);
        assert_eq!(
            subs.decide(b"a/b", copy(1, 2), &mut copies),
            Decision::Deliver {
                max_qos: 2,
                retain: false,
                ids: vec![3, 7]
            }
        );
        assert!(copies.pending.is_empty());
        // Same message number again later: a new message as far as the edge knows.
        assert!(matches!(
            subs.decide(b"a/b", copy(1, 2), &mut copies),
            Decision::Deliver { .. }
        ));
        // Only one filter matches: delivered as is, with its identifier.
        assert_eq!(
            subs.decide(b"a/b/c", copy(2, 0), &mut copies),
            Decision::Deliver {
                max_qos: 0,
                retain: false,
                ids: vec![7]
            }
        );
    }

    #[test]
    fn the_last_copy_is_delivered_if_none_could_carry_the_qos() {
        let mut copies = Copies::default();
        assert!(!copies.take(9, 2, false));
        assert!(copies.take(9, 2, false));
        assert!(copies.take(10, 2, true));
        assert!(!copies.take(10, 2, true));
    }

    #[test]
    fn pending_copies_are_bounded() {
        let mut copies = Copies::default();
        for m in 0..(3 * MAX_PENDING as u64) {
            copies.take(m, 3, true);
        }
        assert!(copies.pending.len() <= MAX_PENDING);
        assert!(copies.order.len() <= MAX_PENDING);
    }

    #[test]
    fn no_local_and_retain_handling_apply_when_every_matching_filter_asks() {
        let mut subs = Subscriptions::default();
        subs.insert(
            "n/#".into(),
            Subscription {
                no_local: true,
                suppress_retained: true,
                ..Subscription::plain(1)
            },
        );
        let mut copies = Copies::default();
        let own = Copy {
            own: true,
            ..copy(1, 1)
        };
        let at_subscribe = Copy {
            at_subscribe: true,
            ..copy(2, 1)
        };
        assert_eq!(subs.decide(b"n/x", own, &mut copies), Decision::Skip);
        assert_eq!(
            subs.decide(b"n/x", at_subscribe, &mut copies),
            Decision::Skip
        );
        subs.insert("n/x".into(), Subscription::plain(1));
        assert!(matches!(
            subs.decide(b"n/x", at_subscribe, &mut copies),
            Decision::Deliver { .. }
        ));
    }
}
