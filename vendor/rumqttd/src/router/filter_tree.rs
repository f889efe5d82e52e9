// sealpost: this file is sealpost's (see SEALPOST.md, "Filters found by a topic's levels").
//! The filters of the router's logs, as a tree of their levels, so that a topic finds
//! the filters it matches by walking its own levels.
//!
//! Why: rumqttd matched a topic against every filter, and remembered the result for
//! each topic that matched any (`publish_filters`), for ever. Devices that publish to
//! topics of their own under a wildcard subscription grew that map by an entry each,
//! and a client publishing to ever new topics grew it without bound; a topic no filter
//! matches was matched against every filter at each message. Here a topic costs a
//! lookup per level (two where a `+` filter branches off), whatever the number of
//! filters and topics, and nothing is kept per topic.

use std::collections::HashMap;

/// The names of a level's filters and their nodes: keyed at random per process, as the
/// standard map is (topics and filters are the clients'), but hashed with aHash, faster
/// than SipHash on short names (docs/BENCHMARKS.md, session 19).
type Names = HashMap<Box<str>, usize, ahash::RandomState>;

/// Filters (their log's index) by their levels. Every filter is inserted once (the
/// router keeps one log per filter) and never removed (the router keeps its logs).
///
/// The nodes live in one list and name each other by position, and a lookup keeps the
/// nodes it has still to visit in a list of its own rather than on the stack: a client
/// may subscribe to a filter, and publish to a topic, of tens of thousands of levels
/// (a level per two bytes of a packet), which a walk (or a drop) that recursed level by
/// level would take the router thread's stack through.
#[derive(Debug)]
pub struct FilterTree {
    /// The nodes, the root (the level before the first) first.
    nodes: Vec<Node>,
    /// The last topic looked up and the filters it matched, valid until a filter is
    /// added: a batch of messages often holds many of one topic. (One entry, whatever
    /// the topics; its buffers are reused, so a miss allocates nothing once they have
    /// grown.)
    last: Last,
    /// A lookup's nodes to visit: (node, where its levels start in the topic, `None`
    /// once the topic has no level left). Kept for the next lookup's.
    to_visit: Vec<(usize, Option<usize>)>,
}

impl Default for FilterTree {
    fn default() -> Self {
        FilterTree {
            nodes: vec![Node::default()],
            last: Last::default(),
            to_visit: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Last {
    valid: bool,
    topic: String,
    matched: Vec<usize>,
}

#[derive(Debug, Default)]
struct Node {
    /// Filters that end at this level.
    end: Vec<usize>,
    /// Filters whose next level is `#`: they match a topic that ends at this level or
    /// goes on below it.
    rest: Vec<usize>,
    /// The node of the filters whose next level is `+`.
    any: Option<usize>,
    /// The nodes of the filters whose next level is a name. (Boxed: most nodes are the
    /// last level of a filter, with no name below them. The tree costs the router
    /// 170-260 bytes per filter, see docs/BENCHMARKS.md, session 19.)
    #[allow(clippy::box_collection)] // boxed on purpose, see above
    named: Option<Box<Names>>,
}

impl FilterTree {
    /// Adds `filter` (a valid MQTT filter: `#` only as its last level) with its log's
    /// index.
    pub fn insert(&mut self, filter: &str, idx: usize) {
        self.last.valid = false;
        let mut at = 0;
        for level in filter.split('/') {
            let next = self.nodes.len();
            let node = &mut self.nodes[at];
            at = match level {
                "#" => {
                    node.rest.push(idx);
                    return;
                }
                "+" => *node.any.get_or_insert(next),
                name => *node
                    .named
                    .get_or_insert_with(Box::default)
                    .entry(name.into())
                    .or_insert(next),
            };
            if at == next {
                self.nodes.push(Node::default());
            }
        }
        self.nodes[at].end.push(idx);
    }

    /// Appends to `out` the index of every filter `topic` matches, each once, as
    /// `crate::protocol::matches` decides: a topic that starts with `$` matches no
    /// filter, and a topic level `#` (not a valid topic name) only a `#`.
    pub fn matches(&mut self, topic: &str, out: &mut Vec<usize>) {
        if topic.starts_with('$') {
            return;
        }
        let last = &mut self.last;
        if last.valid && last.topic == topic {
            out.extend_from_slice(&last.matched);
            return;
        }
        let start = out.len();
        self.walk(topic, out);
        let last = &mut self.last;
        last.topic.clear();
        last.topic.push_str(topic);
        last.matched.clear();
        last.matched.extend_from_slice(&out[start..]);
        last.valid = true;
    }

    /// Visits the nodes `topic`'s levels lead to, from the root.
    fn walk(&mut self, topic: &str, out: &mut Vec<usize>) {
        let to_visit = &mut self.to_visit;
        to_visit.clear();
        to_visit.push((0, Some(0)));
        while let Some((at, from)) = to_visit.pop() {
            let node = &self.nodes[at];
            out.extend_from_slice(&node.rest);
            let Some(from) = from else {
                out.extend_from_slice(&node.end);
                continue;
            };
            let (level, next) = match topic[from..].find('/') {
                Some(i) => (&topic[from..from + i], Some(from + i + 1)),
                None => (&topic[from..], None),
            };
            if level == "#" {
                continue;
            }
            if let Some(&child) = node.named.as_ref().and_then(|n| n.get(level)) {
                to_visit.push((child, next));
            }
            if let Some(child) = node.any {
                to_visit.push((child, next));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FilterTree;
    use crate::protocol::matches;

    const FILTERS: &[&str] = &[
        "#", "+", "a", "a/#", "a/+", "a/b", "a/b/#", "a/+/c", "+/b/c", "+/+", "+/#", "a/b/c", "/",
        "/+", "+/", "a//b", "a/+/+/#", "b/#", "", "x/y/z",
    ];
    const TOPICS: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "a/x/c",
        "b",
        "b/b/c",
        "x/y/z",
        "x/y",
        "/",
        "//",
        "",
        "a//b",
        "a/",
        "/a",
        "$SYS/a",
        "$share/g/a/b",
        "a/#",
        "a/+",
        "é/b",
        "a/b/c/d/e/f",
    ];

    #[test]
    fn a_topic_matches_what_rumqttd_matched() {
        let mut tree = FilterTree::default();
        for (idx, filter) in FILTERS.iter().enumerate() {
            tree.insert(filter, idx);
        }
        for topic in TOPICS {
            let mut found = Vec::new();
            tree.matches(topic, &mut found);
            found.sort_unstable();
            let expected: Vec<usize> = (0..FILTERS.len())
                .filter(|&i| matches(topic, FILTERS[i]))
                .collect();
            assert_eq!(found, expected, "topic {topic:?}");
        }
    }

    /// Numbers drawn from a fixed sequence (a linear congruential generator).
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize % n
        }

        /// One to four levels of a few names (one beginning with `$`, one of two
        /// bytes), and with `wild` `+` anywhere and `#` last (as the broker validates
        /// filters).
        fn levels(&mut self, wild: bool) -> String {
            const NAMES: [&str; 5] = ["a", "b", "", "$x", "é"];
            let depth = 1 + self.below(4);
            (0..depth)
                .map(|i| match self.below(if wild { 7 } else { 5 }) {
                    6 if i + 1 == depth => "#",
                    5 | 6 => "+",
                    n => NAMES[n],
                })
                .collect::<Vec<_>>()
                .join("/")
        }
    }

    /// Filters and topics drawn at random, compared pair by pair (each topic looked up
    /// twice: the second time the last lookup's copy answers).
    #[test]
    fn generated_topics_match_what_rumqttd_matched() {
        let mut draw = Draw(0x5ea1_0057);
        let filters: Vec<String> = (0..200).map(|_| draw.levels(true)).collect();
        let topics: Vec<String> = (0..500).map(|_| draw.levels(false)).collect();
        let mut tree = FilterTree::default();
        let mut unique: Vec<&String> = Vec::new();
        for filter in &filters {
            if !unique.contains(&filter) {
                tree.insert(filter, unique.len());
                unique.push(filter);
            }
        }
        let mut pairs = 0;
        for topic in &topics {
            let mut found = Vec::new();
            tree.matches(topic, &mut found);
            found.sort_unstable();
            let expected: Vec<usize> = (0..unique.len())
                .filter(|&i| matches(topic, unique[i]))
                .collect();
            assert_eq!(found, expected, "topic {topic:?}");
            // Again, from the last lookup's copy.
            let mut again = Vec::new();
            tree.matches(topic, &mut again);
            again.sort_unstable();
            assert_eq!(again, expected, "topic {topic:?} again");
            pairs += found.len();
        }
        // Not a comparison of empty lists.
        assert!(pairs > 1000, "{pairs} matching pairs");
    }

    /// A filter and a topic of 100,000 levels: nothing recurses level by level (on a
    /// test thread's 2 MiB stack, a recursive walk or drop of this tree overflowed).
    #[test]
    fn a_hundred_thousand_levels_take_no_stack() {
        let deep = vec!["a"; 100_000].join("/");
        let mut tree = FilterTree::default();
        tree.insert(&deep, 0);
        tree.insert(&vec!["+"; 100_000].join("/"), 1);
        let mut found = Vec::new();
        tree.matches(&deep, &mut found);
        found.sort_unstable();
        assert_eq!(found, [0, 1]);
        drop(tree);
    }

    #[test]
    fn a_filter_added_later_is_found_by_topics_seen_before() {
        let mut tree = FilterTree::default();
        tree.insert("a/b", 0);
        let mut found = Vec::new();
        tree.matches("a/b", &mut found);
        assert_eq!(found, [0]);
        tree.insert("a/+", 1);
        found.clear();
        tree.matches("a/b", &mut found);
        found.sort_unstable();
        assert_eq!(found, [0, 1]);
    }
}
