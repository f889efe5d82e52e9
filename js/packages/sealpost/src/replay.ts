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

const SLOTS = Number(WINDOW);

/**
 * One publisher's window as a ring of flags: the slot of `n` (n mod WINDOW) is set while
 * `n` is accepted and inside the window. Advancing clears the slots of the numbers that
 * leave it, so an in-order stream costs O(1) per message, not O(WINDOW).
 */
class Window {
  private readonly seen = new Uint8Array(SLOTS);

  constructor(public highest: bigint) {
    this.seen[slot(highest)] = 1;
  }

  check(seq: bigint): ReplayCheck {
    if (seq > this.highest) return "fresh";
    if (this.highest - seq >= WINDOW) return "too_old";
    return this.seen[slot(seq)] ? "duplicate" : "fresh";
  }

  /** Marks a number `check` found fresh. */
  mark(seq: bigint): void {
    if (seq > this.highest) {
      if (seq - this.highest >= WINDOW) {
        this.seen.fill(0);
      } else {
        for (let n = this.highest + 1n; n < seq; n++) this.seen[slot(n)] = 0;
      }
      this.highest = seq;
    }
    this.seen[slot(seq)] = 1;
  }

  /** Accepted numbers as offsets below the highest. */
  offsets(): number[] {
    const out: number[] = [];
    for (let k = 0; k < SLOTS; k++) {
      if (this.seen[slot(this.highest - BigInt(k))]) out.push(k);
    }
    return out;
  }
}

const slot = (n: bigint): number => Number(BigInt.asUintN(64, n) % WINDOW);

/** Serialised form: publisher -> [highest (decimal), accepted offsets]. */
export type ReplayState = Record<string, [string, number[]]>;

/** Replay windows of all publishers. */
export class ReplayWindows {
  private readonly windows = new Map<string, Window>();

  /** Is `seq` new for `publisher`? Changes nothing. */
  check(publisher: string, seq: bigint): ReplayCheck {
    return this.windows.get(publisher)?.check(seq) ?? "fresh";
  }

  /** Records `seq` as accepted; false if it was not fresh. */
  record(publisher: string, seq: bigint): boolean {
    const w = this.windows.get(publisher);
    if (!w) {
      this.windows.set(publisher, new Window(seq));
      return true;
    }
    if (w.check(seq) !== "fresh") return false;
    w.mark(seq);
    return true;
  }

  /** The state, for persisting. */
  toJSON(): ReplayState {
    const out: ReplayState = {};
    for (const [p, w] of this.windows) out[p] = [w.highest.toString(), w.offsets()];
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
      const top = BigInt(highest);
      const w = new Window(top);
      let highestMarked = false;
      for (const k of seen) {
        if (!Number.isInteger(k) || k < 0 || k >= SLOTS || BigInt(k) > top) {
          throw new Error("corrupt replay state");
        }
        if (k === 0) highestMarked = true;
        w.mark(top - BigInt(k));
      }
      if (!highestMarked) throw new Error("corrupt replay state: highest not marked");
      windows.windows.set(publisher, w);
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
