/**
 * RFC 9162 Merkle trees over SHA-256 (docs/PROTOCOL.md, "Data envelope, version 2"): the
 * tree a version 2 burst signs once, the inclusion paths its envelopes carry, and the
 * root's derived protected header. Leaves and interior nodes are hashed with different
 * one-byte prefixes (0x00, 0x01), so a node can never be passed off as a leaf.
 */
import { equal } from "./bytes.js";
import { asBytes, asMap, asUint, decodeStrict, encodeCbor } from "./cbor.js";
import {
  ALG_EDDSA,
  LABEL_ALG,
  LABEL_KID,
  LABEL_KIND,
  LABEL_VERSION,
  sigStructure,
  VERSION_BURST,
} from "./cose.js";
import { malformed } from "./errors.js";
import { sha256 } from "./primitives.js";

/** Verifiable data structure label (draft-ietf-cose-merkle-tree-proofs). */
export const LABEL_VDS = 395;
/** Key of the inclusion proofs inside the verifiable data proofs map. */
export const VDP_INCLUSION = -1;
/** `RFC9162_SHA256`, the only verifiable data structure sealpost uses. */
export const VDS_RFC9162_SHA256 = 1;
/** sealpost label of the tree size in a burst root's protected header. */
export const LABEL_TREE_SIZE = -65542;
/** Kind of a burst root (only ever signed, never sent on its own). */
export const KIND_BURST_ROOT = 3n;
/** The longest inclusion path any tree with a 64-bit size can have. */
export const MAX_PATH_LEN = 64;

/** One message's position in its burst and the sibling hashes up to the root. */
export interface InclusionProof {
  treeSize: bigint;
  leafIndex: bigint;
  /** Sibling hashes, deepest first (RFC 9162 §2.1.3.1). */
  path: Uint8Array[];
}

/**
 * Reads the verifiable data proofs header of a version 2 envelope: `{-1: [bstr .cbor
 * [tree-size, leaf-index, [* bstr .size 32]]]}`, exactly one proof, in strict CBOR.
 * Whether the numbers fit together is checked when the proof is evaluated.
 */
export function parseProof(vdp: unknown): InclusionProof {
  const proofs = asMap(vdp);
  const list = proofs?.size === 1 ? proofs.get(VDP_INCLUSION) : undefined;
  const bytes = Array.isArray(list) && list.length === 1 ? asBytes(list[0]) : null;
  if (!bytes) throw malformed("verifiable data proofs (one inclusion proof)");
  const proof = decodeStrict(bytes, "inclusion proof");
  if (!Array.isArray(proof) || proof.length !== 3) throw malformed("inclusion proof");
  const treeSize = asUint(proof[0]);
  const leafIndex = asUint(proof[1]);
  const path = proof[2];
  if (treeSize === null || leafIndex === null || !Array.isArray(path)) {
    throw malformed("inclusion proof");
  }
  if (path.length > MAX_PATH_LEN || !path.every((h) => asBytes(h)?.length === 32)) {
    throw malformed("inclusion path");
  }
  return { treeSize, leafIndex, path: path as Uint8Array[] };
}

/** Encodes the verifiable data proofs header value holding one inclusion proof. */
export function encodeProof(proof: InclusionProof): Map<number, unknown> {
  const bytes = encodeCbor([proof.treeSize, proof.leafIndex, proof.path]);
  return new Map([[VDP_INCLUSION, [bytes]]]);
}

/** The leaf of one message: `SHA-256(0x00 || SHA-256(Sig_structure))`. */
export async function leafHash(toBeSigned: Uint8Array): Promise<Uint8Array> {
  return sha256(prefixed(0x00, await sha256(toBeSigned)));
}

/** An interior node: `SHA-256(0x01 || left || right)`. */
export function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Uint8Array> {
  return sha256(prefixed(0x01, left, right));
}

/** `prefix || a || b` (one allocation: this runs for every hash of every path). */
function prefixed(prefix: number, a: Uint8Array, b?: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + a.length + (b?.length ?? 0));
  out[0] = prefix;
  out.set(a, 1);
  if (b) out.set(b, 1 + a.length);
  return out;
}

/**
 * The interior nodes an inclusion path computed last, level by level, so that the next
 * message of the same burst reuses the parents it shares with the previous one instead of
 * hashing them again: consecutive leaves of a burst share all but about two of their path
 * nodes. It is a memo of `nodeHash` and nothing more: a parent is reused only for exactly
 * the same (left, right) pair at that level, so any changed bit of a path or leaf misses
 * and is hashed, and the root that comes out is always SHA-256 of what was received.
 */
export class PathMemo {
  private readonly lefts: Uint8Array[] = [];
  private readonly rights: Uint8Array[] = [];
  private readonly parents: Uint8Array[] = [];

  /** The parent remembered for exactly (`left`, `right`) at step `level`, or null. */
  get(level: number, left: Uint8Array, right: Uint8Array): Uint8Array | null {
    const l = this.lefts[level];
    const r = this.rights[level];
    const p = this.parents[level];
    return l && r && p && equal(l, left) && equal(r, right) ? p : null;
  }

  /** `nodeHash(left, right)` for step `level`, remembered for the next path. */
  async hash(level: number, left: Uint8Array, right: Uint8Array): Promise<Uint8Array> {
    const parent = await nodeHash(left, right);
    this.lefts[level] = left.slice();
    this.rights[level] = right.slice();
    this.parents[level] = parent;
    return parent;
  }
}

/** Why an inclusion proof cannot be evaluated (as opposed to leading to a wrong root). */
export class ProofShapeError extends Error {}

/**
 * The root an inclusion proof leads to from `leaf` (RFC 9162 §2.1.3.2). The proof is
 * valid only if this root is the signed one; a path that does not fit the leaf index and
 * tree size throws `ProofShapeError`.
 */
export async function rootFromPath(
  proof: InclusionProof,
  leaf: Uint8Array,
  memo?: PathMemo,
): Promise<Uint8Array> {
  // A memo hit is answered without a promise: most steps of a burst's paths are hits.
  const hash = (level: number, left: Uint8Array, right: Uint8Array) =>
    memo ? (memo.get(level, left, right) ?? memo.hash(level, left, right)) : nodeHash(left, right);
  if (proof.leafIndex >= proof.treeSize) {
    throw new ProofShapeError("leaf index outside the tree");
  }
  let fnode = proof.leafIndex;
  let snode = proof.treeSize - 1n;
  let root = leaf;
  for (const [level, sibling] of proof.path.entries()) {
    if (snode === 0n) throw new ProofShapeError("path longer than index and tree size require");
    if ((fnode & 1n) === 1n || fnode === snode) {
      const h = hash(level, sibling, root);
      root = h instanceof Uint8Array ? h : await h;
      while ((fnode & 1n) === 0n && fnode !== 0n) {
        fnode >>= 1n;
        snode >>= 1n;
      }
    } else {
      const h = hash(level, root, sibling);
      root = h instanceof Uint8Array ? h : await h;
    }
    fnode >>= 1n;
    snode >>= 1n;
  }
  if (snode !== 0n) throw new ProofShapeError("path shorter than index and tree size require");
  return root;
}

/**
 * The root of the tree over `leaves` (leaf hashes, in order, at least one) and every
 * leaf's inclusion path, deepest sibling first.
 */
export async function rootAndPaths(
  leaves: Uint8Array[],
): Promise<{ root: Uint8Array; paths: Uint8Array[][] }> {
  if (leaves.length === 0) throw new Error("a tree has at least one leaf");
  const paths: Uint8Array[][] = leaves.map(() => []);
  const subtree = async (from: number, to: number): Promise<Uint8Array> => {
    const n = to - from;
    if (n === 1) return leaves[from] as Uint8Array;
    // RFC 9162: split at the largest power of two smaller than the number of leaves.
    let k = 1;
    while (k * 2 < n) k *= 2;
    const left = await subtree(from, from + k);
    const right = await subtree(from + k, to);
    for (let i = from; i < from + k; i++) paths[i]?.push(right);
    for (let i = from + k; i < to; i++) paths[i]?.push(left);
    return nodeHash(left, right);
  };
  return { root: await subtree(0, leaves.length), paths };
}

/**
 * The Sig_structure a burst's root signature covers: `["Signature1", root_protected, h'',
 * root]`, with `root_protected` derived from the envelope's kid and the tree size.
 */
export function rootSigStructure(
  fingerprint: Uint8Array,
  treeSize: bigint,
  root: Uint8Array,
): Uint8Array {
  const rootProtected = encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, ALG_EDDSA],
      [LABEL_KID, fingerprint],
      [LABEL_VDS, VDS_RFC9162_SHA256],
      [LABEL_VERSION, VERSION_BURST],
      [LABEL_KIND, KIND_BURST_ROOT],
      [LABEL_TREE_SIZE, treeSize],
    ]),
  );
  return sigStructure(rootProtected, new Uint8Array(0), root);
}
