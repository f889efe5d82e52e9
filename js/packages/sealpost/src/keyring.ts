/** Content keys by (publisher, epoch), keeping a few recent epochs per publisher. */
import { type ContentKey, primitives } from "./primitives.js";

/** How many epochs per publisher are kept by default. */
export const DEFAULT_KEPT_EPOCHS = 4;
/** Length of a content key. */
export const CONTENT_KEY_LEN = 32;

/** Imports 32 raw bytes as an AES-256-GCM key (non-extractable in a browser). */
export async function importContentKey(raw: Uint8Array): Promise<ContentKey> {
  if (raw.length !== CONTENT_KEY_LEN) throw new Error("a content key is 32 bytes");
  return primitives.importContentKey(raw);
}

/** The content keys a subscriber holds. */
export class Keyring {
  private readonly keys = new Map<string, Map<bigint, ContentKey>>();

  constructor(private readonly kept = DEFAULT_KEPT_EPOCHS) {}

  /** Is the key of this epoch known? */
  has(publisher: string, epoch: bigint): boolean {
    return this.keys.get(publisher)?.has(epoch) ?? false;
  }

  /** The key of this epoch, if known. */
  get(publisher: string, epoch: bigint): ContentKey | undefined {
    return this.keys.get(publisher)?.get(epoch);
  }

  /**
   * Adds a key; returns false if it was known already or is older than every kept epoch
   * (the oldest is dropped once more than `kept` are held).
   */
  insert(publisher: string, epoch: bigint, key: ContentKey): boolean {
    let epochs = this.keys.get(publisher);
    if (!epochs) {
      epochs = new Map();
      this.keys.set(publisher, epochs);
    }
    if (epochs.has(epoch)) return false;
    const sorted = [...epochs.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (sorted.length >= this.kept && sorted[0] !== undefined && epoch < sorted[0]) return false;
    epochs.set(epoch, key);
    while (epochs.size > this.kept) {
      const oldest = [...epochs.keys()].reduce((a, b) => (a < b ? a : b));
      epochs.delete(oldest);
    }
    return true;
  }
}
