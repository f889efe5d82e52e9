/**
 * The per-publisher replay window (docs/PROTOCOL.md, "Receiving", step 2): each sequence
 * number is accepted once, in any order, within 1024 of the highest accepted; older ones
 * are refused. The state serialises to JSON so a store (a file in Node, IndexedDB in a
 * browser) can persist it across restarts.
 */

/** Width of the window. */
export const WINDOW = 1024n;

/** Result of checking a sequence number. */
export type ReplayCheck = "fresh" | "duplicate" | "too_old";

interface Window {
  highest: bigint;
  /** Accepted numbers `highest - k` for k < WINDOW, as a set of offsets. */
  seen: Set<number>;
}

/** Serialised form: publisher -> [highest (decimal), accepted offsets]. */
export type ReplayState = Record<string, [string, number[]]>;

/** Replay windows of all publishers. */
export class ReplayWindows {
  private readonly windows = new Map<string, Window>();

  /** Is `seq` new for `publisher`? Changes nothing. */
  check(publisher: string, seq: bigint): ReplayCheck {
    const w = this.windows.get(publisher);
    if (!w || seq > w.highest) return "fresh";
    const k = w.highest - seq;
    if (k >= WINDOW) return "too_old";
    return w.seen.has(Number(k)) ? "duplicate" : "fresh";
  }

  /** Records `seq` as accepted; false if it was not fresh. */
  record(publisher: string, seq: bigint): boolean {
    if (this.check(publisher, seq) !== "fresh") return false;
    const w = this.windows.get(publisher);
    if (!w) {
      this.windows.set(publisher, { highest: seq, seen: new Set([0]) });
      return true;
    }
    if (seq > w.highest) {
      const by = seq - w.highest;
      const shifted = new Set<number>();
      for (const k of w.seen) {
        const moved = BigInt(k) + by;
        if (moved < WINDOW) shifted.add(Number(moved));
      }
      shifted.add(0);
      w.seen = shifted;
      w.highest = seq;
    } else {
      w.seen.add(Number(w.highest - seq));
    }
    return true;
  }

  /** The state, for persisting. */
  toJSON(): ReplayState {
    const out: ReplayState = {};
    for (const [p, w] of this.windows) out[p] = [w.highest.toString(), [...w.seen]];
    return out;
  }

  /** Restores persisted state; throws on anything inconsistent (never guesses). */
  static fromJSON(state: unknown): ReplayWindows {
    const windows = new ReplayWindows();
    if (typeof state !== "object" || state === null || Array.isArray(state)) {
      throw new Error("corrupt replay state");
    }
    for (const [publisher, entry] of Object.entries(state)) {
      if (!Array.isArray(entry) || entry.length !== 2) throw new Error("corrupt replay state");
      const [highest, seen] = entry as unknown[];
      if (typeof highest !== "string" || !/^\d+$/.test(highest) || !Array.isArray(seen)) {
        throw new Error("corrupt replay state");
      }
      const offsets = new Set<number>();
      for (const k of seen) {
        if (!Number.isInteger(k) || k < 0 || k >= Number(WINDOW)) {
          throw new Error("corrupt replay state");
        }
        offsets.add(k);
      }
      if (!offsets.has(0)) throw new Error("corrupt replay state: highest not marked");
      windows.windows.set(publisher, { highest: BigInt(highest), seen: offsets });
    }
    return windows;
  }
}

/** Where a subscriber persists its replay windows. */
export interface ReplayStore {
  /** The saved state, or null if none was saved yet. */
  load(): Promise<unknown | null>;
  /** Saves the state durably before messages are handed to the application. */
  save(state: ReplayState): Promise<void>;
}

/** Keeps the state in memory only: an explicit opt-out of persistence. */
export class MemoryReplayStore implements ReplayStore {
  private state: ReplayState | null = null;
  async load(): Promise<unknown | null> {
    return this.state;
  }
  async save(state: ReplayState): Promise<void> {
    this.state = state;
  }
}
