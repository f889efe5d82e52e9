/**
 * The verified burst roots of one publisher, so that a burst's root signature is
 * verified once however many of its messages arrive. Only roots whose signature verified
 * are ever inserted, and a hit needs the exact (root, tree size, signature): no forged
 * envelope can add a root, and a changed signature never rides on a cached one.
 */
import { equal } from "./bytes.js";

/** Default number of verified roots remembered per publisher. */
export const DEFAULT_ROOT_CACHE = 16;

interface VerifiedRoot {
  root: Uint8Array;
  treeSize: bigint;
  signature: Uint8Array;
}

/** A bounded first-in first-out set of verified roots (bursts arrive in order). */
export class RootCache {
  private readonly entries: VerifiedRoot[] = [];

  /** Was exactly this (root, tree size, signature) verified before? */
  contains(root: Uint8Array, treeSize: bigint, signature: Uint8Array): boolean {
    return this.entries.some(
      (e) => e.treeSize === treeSize && equal(e.root, root) && equal(e.signature, signature),
    );
  }

  /** Remembers a root whose signature the caller has just verified (0 disables). */
  insertVerified(
    root: Uint8Array,
    treeSize: bigint,
    signature: Uint8Array,
    capacity: number,
  ): void {
    if (capacity <= 0) return;
    while (this.entries.length >= capacity) this.entries.shift();
    this.entries.push({
      root: new Uint8Array(root),
      treeSize,
      signature: new Uint8Array(signature),
    });
  }

  /** Number of roots held. */
  get size(): number {
    return this.entries.length;
  }
}
