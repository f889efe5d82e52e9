//! Which persistent sessions have a filter that may match a topic, found by the topic's
//! levels instead of by matching every session's filters: a trie of the filters, one
//! level per node, with `+` as a branch of its own and `#` kept at the node it
//! follows. A QoS 1/2 message then costs the depth of its topic and the sessions it
//! matches, whatever the number of persistent sessions.

use std::collections::{HashMap, HashSet};

/// The filters of persistent sessions, by level.
#[derive(Debug, Default)]
pub(crate) struct FilterIndex {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Clients with a filter that ends here, and how many (`a/b` and `$share/g/a/b`
    /// are both indexed as `a/b`).
    exact: HashMap<String, u32>,
    /// Clients with a filter that ends here with `#`.
    rest: HashMap<String, u32>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.exact.is_empty() && self.rest.is_empty()
    }
}

/// The levels of `filter` without a trailing `#`, and whether it had one.
fn levels(filter: &str) -> (Vec<&str>, bool) {
    let inner = crate::topic::strip_share(filter).unwrap_or(filter);
    let mut levels: Vec<&str> = inner.split('/').collect();
    let multi = levels.last() == Some(&"#");
    if multi {
        levels.pop();
    }
    (levels, multi)
}

impl FilterIndex {
    /// Indexes `client`'s `filter`.
    pub(crate) fn insert(&mut self, filter: &str, client: &str) {
        let (levels, multi) = levels(filter);
        let mut node = &mut self.root;
        for level in levels {
            node = node.children.entry(level.to_owned()).or_default();
        }
        let ends = if multi {
            &mut node.rest
        } else {
            &mut node.exact
        };
        *ends.entry(client.to_owned()).or_default() += 1;
    }

    /// Removes `client`'s `filter` (nodes left empty go with it).
    pub(crate) fn remove(&mut self, filter: &str, client: &str) {
        let (levels, multi) = levels(filter);
        remove(&mut self.root, &levels, multi, client);
    }

    /// Adds to `out` every client with a filter that may match `topic` (wildcards at
    /// the first level do not match `$` topics).
    pub(crate) fn candidates<'a>(&'a self, topic: &str, out: &mut HashSet<&'a str>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, dollar, out);
    }
}

fn remove(node: &mut Node, levels: &[&str], multi: bool, client: &str) {
    match levels.split_first() {
        None => {
            let ends = if multi {
                &mut node.rest
            } else {
                &mut node.exact
            };
            if let Some(n) = ends.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    ends.remove(client);
                }
            }
        }
        Some((level, below)) => {
            if let Some(child) = node.children.get_mut(*level) {
                remove(child, below, multi, client);
                if child.is_empty() {
                    node.children.remove(*level);
                }
            }
        }
    }
}

/// `dollar`: this is the first level of a `$` topic, which wildcards do not match.
fn walk<'a>(node: &'a Node, levels: &[&str], dollar: bool, out: &mut HashSet<&'a str>) {
    if !dollar {
        // `x/#` matches `x` itself and everything below it.
        out.extend(node.rest.keys().map(String::as_str));
    }
    match levels.split_first() {
        None => out.extend(node.exact.keys().map(String::as_str)),
        Some((level, below)) => {
            if let Some(child) = node.children.get(*level) {
                walk(child, below, false, out);
            }
            if !dollar {
                if let Some(child) = node.children.get("+") {
                    walk(child, below, false, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(index: &FilterIndex, topic: &str) -> Vec<String> {
        let mut out = HashSet::new();
        index.candidates(topic, &mut out);
        let mut v: Vec<String> = out.into_iter().map(str::to_owned).collect();
        v.sort();
        v
    }

    #[test]
    fn the_index_finds_exactly_the_matching_filters() {
        let mut index = FilterIndex::default();
        for (filter, client) in [
            ("a/b", "exact"),
            ("a/+", "plus"),
            ("a/#", "rest"),
            ("#", "all"),
            ("+/b", "first"),
            ("$SYS/#", "sys"),
            ("$share/g/a/b", "shared"),
            ("x/y", "other"),
        ] {
            index.insert(filter, client);
        }
        assert_eq!(
            candidates(&index, "a/b"),
            ["all", "exact", "first", "plus", "rest", "shared"]
        );
        assert_eq!(candidates(&index, "a"), ["all", "rest"]);
        assert_eq!(candidates(&index, "a/b/c"), ["all", "rest"]);
        assert_eq!(
            candidates(&index, "$SYS/x"),
            ["sys"],
            "no wildcard matches $"
        );
        assert_eq!(candidates(&index, "q"), ["all"]);
    }

    #[test]
    fn removed_filters_are_gone_and_shared_ones_are_counted() {
        let mut index = FilterIndex::default();
        index.insert("a/b", "c");
        index.insert("$share/g/a/b", "c");
        index.remove("a/b", "c");
        assert_eq!(candidates(&index, "a/b"), ["c"], "the shared one is left");
        index.remove("$share/g/a/b", "c");
        assert!(candidates(&index, "a/b").is_empty());
        assert!(index.root.is_empty(), "empty nodes are pruned");
        // Removing what is not there changes nothing.
        index.remove("z/#", "c");
    }
}
