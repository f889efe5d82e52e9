use crate::ConnectionId;
use std::collections::{HashMap, VecDeque};

/// Waiters are connections which are waiting to be notified. They have
/// made a data request but router didn't respond because of the connection
/// being caughtup. Waiters stores connection id and pending request
// sealpost: with an index of where each connection's requests are (`places`), so that
// taking one connection's requests out costs the same however many others wait. rumqttd
// searched the whole list for each: with one filter that 100,000 subscribers wait on
// (a broadcast topic), their disconnecting (an outage, a restart of their gateway) cost
// the router thread, which every connection needs, time quadratic in their number
// (vendor/rumqttd/SEALPOST.md).
#[derive(Debug)]
pub struct Waiters<T> {
    /// Waiters on new topics
    current: VecDeque<(ConnectionId, T)>,
    /// Where each connection's requests are in `current`.
    places: HashMap<ConnectionId, Places>,
}

/// The positions in `current` of one connection's requests: nearly always one (a
/// connection has a second on the same log only with a shared subscription of the same
/// filter, or another group's).
#[derive(Debug)]
enum Places {
    One(usize),
    Many(Vec<usize>),
}

impl Places {
    fn as_slice(&self) -> &[usize] {
        match self {
            Places::One(at) => std::slice::from_ref(at),
            Places::Many(ats) => ats,
        }
    }

    fn add(&mut self, at: usize) {
        match self {
            Places::One(first) => *self = Places::Many(vec![*first, at]),
            Places::Many(ats) => ats.push(at),
        }
    }

    /// Replaces position `from` with `to`; whether `from` was there.
    fn moved(&mut self, from: usize, to: usize) -> bool {
        match self {
            Places::One(at) if *at == from => {
                *at = to;
                true
            }
            Places::One(_) => false,
            Places::Many(ats) => match ats.iter_mut().find(|at| **at == from) {
                Some(at) => {
                    *at = to;
                    true
                }
                None => false,
            },
        }
    }

    /// Takes position `at` out; whether none is left.
    fn without(&mut self, at: usize) -> bool {
        match self {
            Places::One(_) => true,
            Places::Many(ats) => {
                ats.retain(|a| *a != at);
                ats.is_empty()
            }
        }
    }
}

impl<T> Waiters<T> {
    pub fn with_capacity(max_connections: usize) -> Waiters<T> {
        Waiters {
            current: VecDeque::with_capacity(max_connections),
            places: HashMap::new(),
        }
    }

    /// Current parked connection requests waiting for new data
    pub fn waiters(&self) -> &VecDeque<(ConnectionId, T)> {
        &self.current
    }

    /// Pushes a request to current wait queue
    pub fn register(&mut self, id: ConnectionId, request: T) {
        let at = self.current.len();
        self.current.push_back((id, request));
        self.places
            .entry(id)
            .and_modify(|places| places.add(at))
            .or_insert(Places::One(at));
    }

    /// Swaps next wait queue with current wait queue
    pub fn take(&mut self) -> Option<VecDeque<(ConnectionId, T)>> {
        if self.current.is_empty() {
            return None;
        }

        let next = VecDeque::new();
        self.places = HashMap::new();
        Some(std::mem::replace(&mut self.current, next))
    }

    /// Remove a connection from waiters
    pub fn remove(&mut self, id: ConnectionId) -> Vec<T> {
        let Some(places) = self.places.remove(&id) else {
            return Vec::new();
        };
        // Last first: the one moved into a freed place is then never one of `id`'s.
        let mut ats = places.as_slice().to_vec();
        ats.sort_unstable_by(|a, b| b.cmp(a));
        ats.into_iter().filter_map(|at| self.swap_remove(at)).collect()
    }

    // sealpost: replaces `get_mut`, through which `DataLog::remove_waiters_for_id`
    // searched the list itself.
    /// Takes out the first of `id`'s requests that `wanted` accepts.
    pub fn remove_one(&mut self, id: ConnectionId, wanted: impl Fn(&T) -> bool) -> Option<T> {
        let places = self.places.get_mut(&id)?;
        let at = *places
            .as_slice()
            .iter()
            .find(|&&at| self.current.get(at).is_some_and(|(_, r)| wanted(r)))?;
        if places.without(at) {
            self.places.remove(&id);
        }
        self.swap_remove(at)
    }

    /// Takes the request at `at` out, the last one taking its place; `at` must already be
    /// gone from its connection's `places`. (`None` only if the index were wrong: the
    /// router thread, which every connection needs, does not stop for it.)
    fn swap_remove(&mut self, at: usize) -> Option<T> {
        let last = self.current.len().checked_sub(1)?;
        if at < last {
            let moved = self.current[last].0;
            let found = self
                .places
                .get_mut(&moved)
                .is_some_and(|places| places.moved(last, at));
            debug_assert!(found, "every waiting request has its place");
        }
        self.current.swap_remove_back(at).map(|(_, request)| request)
    }
}
