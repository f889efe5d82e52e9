//! RFC 9162 Merkle trees over SHA-256: the tree a version 2 burst signs once.
//!
//! Leaves and interior nodes are hashed with different one-byte prefixes (RFC 9162
//! §2.1.1: `0x00` for leaves, `0x01` for nodes), so a node can never be passed off as a
//! leaf or the other way round. The tree shape, the inclusion paths and their
//! verification are exactly RFC 9162's (§2.1.1, §2.1.3.1, §2.1.3.2), so any RFC 9162
//! (certificate transparency, COSE receipts) verifier computes the same root.

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// The longest inclusion path any tree with a `u64` size can have.
pub const MAX_PATH_LEN: usize = 64;

/// The leaf hash of one message: `SHA-256(0x00 || SHA-256(to-be-signed))`.
pub fn leaf_hash(to_be_signed_digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(to_be_signed_digest);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the tree over `leaves` (leaf hashes, in order) and the inclusion path of
/// every leaf, deepest sibling first (RFC 9162 §2.1.3.1). `leaves` must not be empty.
pub fn root_and_paths(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    assert!(!leaves.is_empty(), "a tree has at least one leaf");
    let depth = usize::BITS - (leaves.len() - 1).leading_zeros();
    let mut paths = vec![Vec::with_capacity(depth as usize); leaves.len()];
    let root = subtree(leaves, &mut paths);
    (root, paths)
}

/// The root of `leaves`, pushing each leaf's sibling at this level onto its path after
/// the deeper ones.
fn subtree(leaves: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    // RFC 9162: split at the largest power of two smaller than the number of leaves.
    let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
    let (left_paths, right_paths) = paths.split_at_mut(k);
    let left = subtree(&leaves[..k], left_paths);
    let right = subtree(&leaves[k..], right_paths);
    left_paths.iter_mut().for_each(|p| p.push(right));
    right_paths.iter_mut().for_each(|p| p.push(left));
    node_hash(&left, &right)
}

/// Why an inclusion proof cannot be evaluated at all (as opposed to yielding a root that
/// is simply not the signed one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofShape {
    /// The leaf index is not below the tree size.
    IndexOutsideTree,
    /// The path is longer or shorter than the index and tree size require.
    WrongPathLength,
}

/// The root an inclusion proof leads to from `leaf` (RFC 9162 §2.1.3.2): the proof is
/// valid if this root is the signed one.
pub fn root_from_path(
    leaf_index: u64,
    tree_size: u64,
    leaf: &Hash,
    path: &[Hash],
) -> Result<Hash, ProofShape> {
    root_from_path_with(leaf_index, tree_size, leaf, path, &mut NodeMemo::default())
}

/// The interior nodes hashed for the last inclusion proof evaluated with it, by step of
/// the path: `(left, right, node_hash(left, right))`. Messages of one burst that arrive
/// together share most of their paths (neighbours share all but the lowest steps), and
/// [`root_from_path_with`] takes a node from here instead of hashing it again when, and
/// only when, both of its children are exactly the ones hashed before: the same
/// computation on the same inputs, so the root (and every check made on it) is the same
/// as without it, whatever the proof.
#[derive(Clone, Default)]
pub struct NodeMemo {
    steps: Vec<(Hash, Hash, Hash)>,
}

impl NodeMemo {
    /// `node_hash(left, right)`, from step `step` of the last proof if it hashed exactly
    /// these children there; remembered for the next proof either way.
    fn node(&mut self, step: usize, left: &Hash, right: &Hash) -> Hash {
        if let Some((l, r, node)) = self.steps.get(step) {
            if l == left && r == right {
                return *node;
            }
        }
        let node = node_hash(left, right);
        if step < self.steps.len() {
            self.steps[step] = (*left, *right, node);
        } else if step == self.steps.len() {
            self.steps.push((*left, *right, node));
        }
        node
    }
}

/// [`root_from_path`], hashing only the interior nodes that `memo` does not hold for
/// exactly the same children (see [`NodeMemo`]).
pub fn root_from_path_with(
    leaf_index: u64,
    tree_size: u64,
    leaf: &Hash,
    path: &[Hash],
    memo: &mut NodeMemo,
) -> Result<Hash, ProofShape> {
    if leaf_index >= tree_size {
        return Err(ProofShape::IndexOutsideTree);
    }
    let (mut fnode, mut snode) = (leaf_index, tree_size - 1);
    let mut root = *leaf;
    for (step, sibling) in path.iter().enumerate() {
        if snode == 0 {
            return Err(ProofShape::WrongPathLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            root = memo.node(step, sibling, &root);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            root = memo.node(step, &root, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofShape::WrongPathLength);
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8; 32])).collect()
    }

    /// RFC 9162 §2.1.1's recursive definition, written out directly.
    fn reference_root(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let mut k = 1;
        while k * 2 < leaves.len() {
            k *= 2;
        }
        node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
    }

    #[test]
    fn every_path_of_every_small_tree_leads_to_the_root() {
        for n in 1..=70 {
            let leaves = leaves(n);
            let (root, paths) = root_and_paths(&leaves);
            assert_eq!(root, reference_root(&leaves), "size {n}");
            for (i, path) in paths.iter().enumerate() {
                assert_eq!(
                    root_from_path(i as u64, n as u64, &leaves[i], path),
                    Ok(root),
                    "size {n}, leaf {i}"
                );
                // The same path for any other index does not lead to this root.
                for j in [i + 1, i.wrapping_sub(1)] {
                    if j < n {
                        assert_ne!(
                            root_from_path(j as u64, n as u64, &leaves[i], path),
                            Ok(root),
                            "size {n}, leaf {i} as leaf {j}"
                        );
                    }
                }
            }
        }
    }

    /// Why the tree size is signed with the root: an inclusion path alone does not fix
    /// it (the path of leaf 0 of 3 is also a valid path of leaf 0 of 4).
    #[test]
    fn a_path_alone_does_not_fix_the_tree_size() {
        let leaves = leaves(3);
        let (root, paths) = root_and_paths(&leaves);
        assert_eq!(root_from_path(0, 4, &leaves[0], &paths[0]), Ok(root));
    }

    #[test]
    fn a_lone_leaf_is_its_own_root_with_an_empty_path() {
        let leaf = leaves(1)[0];
        assert_eq!(root_and_paths(&[leaf]), (leaf, vec![vec![]]));
        assert_eq!(root_from_path(0, 1, &leaf, &[]), Ok(leaf));
    }

    #[test]
    fn misshapen_proofs_are_refused() {
        let leaf = leaves(1)[0];
        assert_eq!(
            root_from_path(1, 1, &leaf, &[]),
            Err(ProofShape::IndexOutsideTree)
        );
        assert_eq!(
            root_from_path(0, 0, &leaf, &[]),
            Err(ProofShape::IndexOutsideTree)
        );
        assert_eq!(
            root_from_path(0, 1, &leaf, &[leaf]),
            Err(ProofShape::WrongPathLength)
        );
        assert_eq!(
            root_from_path(0, 4, &leaf, &[leaf]),
            Err(ProofShape::WrongPathLength)
        );
        assert_eq!(
            root_from_path(u64::MAX - 1, u64::MAX, &leaf, &[leaf; MAX_PATH_LEN + 1]),
            Err(ProofShape::WrongPathLength)
        );
    }

    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let plain: Hash = Sha256::digest([a, b].concat()).into();
        assert_ne!(node_hash(&a, &b), leaf_hash(&plain));
        assert_ne!(node_hash(&a, &b), plain);
        assert_ne!(leaf_hash(&a), Hash::from(Sha256::digest(a)));
    }
}
