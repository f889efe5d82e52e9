//! Hashing for maps keyed by the broker's own numbers: message numbers (see `marker`)
//! and the edge's subscription identifiers in the router (see `router_gaps`).
//!
//! Why not the standard SipHash: these maps are looked up for every message (the
//! store's writer fills and empties its maps in every transaction, and a connection
//! looks up the filter of each message the router forwards to it), and SipHash was a
//! tenth of the writer's time and about 1 % of the connections'. The keys are not a
//! client's, so they need no protection against chosen collisions.

/// A `BuildHasher` for maps keyed by the broker's own numbers.
pub(crate) type ByNumber = std::hash::BuildHasherDefault<NumberHasher>;

/// See [`ByNumber`]: a multiplication spreads consecutive numbers over the table.
#[derive(Default)]
pub(crate) struct NumberHasher(u64);

impl std::hash::Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}
