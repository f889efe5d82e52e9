//! The verified burst roots of one publisher, so a burst's root signature is verified
//! once however many of its messages arrive.
//!
//! Only roots whose signature verified are ever inserted, and a hit requires the exact
//! (root, tree size, signature) triple: an attacker can neither add a root nor make an
//! envelope with a changed signature ride on a cached one.

use std::collections::VecDeque;

use crate::merkle::Hash;

/// Default number of verified roots remembered per publisher.
pub const DEFAULT_ROOT_CACHE: usize = 16;

/// One verified root: what its signature covered, and the signature.
#[derive(Clone, PartialEq, Eq)]
struct VerifiedRoot {
    root: Hash,
    tree_size: u64,
    signature: [u8; ed25519_dalek::SIGNATURE_LENGTH],
}

/// A bounded first-in first-out set of verified roots. Bursts arrive in order, so the
/// oldest root is the one least likely to be needed again.
#[derive(Default)]
pub(crate) struct RootCache {
    entries: VecDeque<VerifiedRoot>,
}

impl RootCache {
    /// Was exactly this (root, tree size, signature) verified before?
    pub(crate) fn contains(
        &self,
        root: &Hash,
        tree_size: u64,
        signature: &[u8; ed25519_dalek::SIGNATURE_LENGTH],
    ) -> bool {
        // Newest first: the burst being received is almost always the last one inserted.
        self.entries
            .iter()
            .rev()
            .any(|e| e.root == *root && e.tree_size == tree_size && e.signature == *signature)
    }

    /// Remembers a root whose signature the caller has just verified, keeping at most
    /// `capacity` (0 disables the cache).
    pub(crate) fn insert_verified(
        &mut self,
        root: Hash,
        tree_size: u64,
        signature: [u8; ed25519_dalek::SIGNATURE_LENGTH],
        capacity: usize,
    ) {
        if capacity == 0 {
            return;
        }
        while self.entries.len() >= capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(VerifiedRoot {
            root,
            tree_size,
            signature,
        });
    }

    /// Number of roots held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_matches_exactly() {
        let mut cache = RootCache::default();
        for i in 0..10u8 {
            cache.insert_verified([i; 32], 4, [i; 64], 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.contains(&[9; 32], 4, &[9; 64]));
        assert!(cache.contains(&[7; 32], 4, &[7; 64]));
        assert!(!cache.contains(&[6; 32], 4, &[6; 64]), "evicted");
        assert!(!cache.contains(&[9; 32], 5, &[9; 64]), "other tree size");
        assert!(!cache.contains(&[9; 32], 4, &[8; 64]), "other signature");
        let mut off = RootCache::default();
        off.insert_verified([1; 32], 1, [1; 64], 0);
        assert!(!off.contains(&[1; 32], 1, &[1; 64]));
    }
}
