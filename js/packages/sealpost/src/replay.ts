/**
 * The per-publisher replay window (docs/PROTOCOL.md, "Receiving", step 2): each sequence
 * number is accepted once, in any order. Within 1024 of the highest accepted a ring of
 * flags says what was seen; numbers that leave it unseen are kept as ranges (at most
 * {@link MAX_LATE_RANGES}, the oldest dropped first) and are still accepted once when
 * they arrive late (a broker's redelivery after a lost first delivery); anything else
 * older is refused. The state serialises to JSON so a store (a file in Node, IndexedDB
 * in a browser) can persist it across restarts.
 */

/** Width of the window. */
export const WINDOW = 1024n;

/** How many ranges of unseen numbers below the window are kept per publisher. */
export const MAX_LATE_RANGES = 256;

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
  /** Unseen numbers below the window: inclusive ranges, ascending, disjoint, not adjacent. */
  late: [bigint, bigint][] = [];

  constructor(public highest: bigint) {
    this.seen[slot(highest)] = 1;
  }

  check(seq: bigint): ReplayCheck {
    if (seq > this.highest) return "fresh";
    if (this.highest - seq >= WINDOW) return this.lateIndex(seq) >= 0 ? "fresh" : "too_old";
    return this.seen[slot(seq)] ? "duplicate" : "fresh";
  }

  /** Marks a number `check` found fresh. */
  mark(seq: bigint): void {
    if (seq > this.highest) {
      const by = seq - this.highest;
      // The numbers leaving the window, oldest first; the unseen ones are kept.
      const oldest = this.highest - WINDOW + 1n;
      const leaving = by < WINDOW ? by : WINDOW;
      for (let n = oldest < 0n ? 0n : oldest; n < oldest + leaving; n++) {
        if (!this.seen[slot(n)]) this.pushLate(n, n);
      }
      if (by > WINDOW) this.pushLate(this.highest + 1n, seq - WINDOW);
      if (by >= WINDOW) {
        this.seen.fill(0);
      } else {
        for (let n = this.highest + 1n; n < seq; n++) this.seen[slot(n)] = 0;
      }
      this.highest = seq;
    } else if (this.highest - seq >= WINDOW) {
      this.takeLate(seq);
      return;
    }
    this.seen[slot(seq)] = 1;
  }

  /** Index of the late range holding `seq`, or -1. */
  private lateIndex(seq: bigint): number {
    let lo = 0;
    let hi = this.late.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const range = this.late[mid];
      if (range !== undefined && range[1] < seq) lo = mid + 1;
      else hi = mid;
    }
    const range = this.late[lo];
    return range !== undefined && range[0] <= seq ? lo : -1;
  }

  private pushLate(start: bigint, end: bigint): void {
    const last = this.late[this.late.length - 1];
    if (last !== undefined && last[1] + 1n === start) {
      last[1] = end;
      return;
    }
    this.late.push([start, end]);
    this.forgetOldest();
  }

  private takeLate(seq: bigint): void {
    const i = this.lateIndex(seq);
    const range = this.late[i];
    if (range === undefined) return;
    const [start, end] = range;
    if (start === end) this.late.splice(i, 1);
    else if (seq === start) range[0] = seq + 1n;
    else if (seq === end) range[1] = seq - 1n;
    else {
      this.late.splice(i, 1, [start, seq - 1n], [seq + 1n, end]);
      this.forgetOldest();
    }
  }

  private forgetOldest(): void {
    if (this.late.length > MAX_LATE_RANGES) this.late.splice(0, this.late.length - MAX_LATE_RANGES);
  }

  /** Accepted numbers as offsets below the highest. */
  offsets(): number[] {
    const out: number[] = [];
    for (let k = 0; k < SLOTS; k++) {
      if (this.highest - BigInt(k) >= 0n && this.seen[slot(this.highest - BigInt(k))]) out.push(k);
    }
    return out;
  }
}

const slot = (n: bigint): number => Number(BigInt.asUintN(64, n) % WINDOW);

/**
 * Serialised form: publisher -> [highest (decimal), accepted offsets], and a third element
 * when there are late ranges: their bounds, flattened, in decimal.
 */
export type ReplayState = Record<string, [string, number[]] | [string, number[], string[]]>;

const corrupt = (): never => {
  throw new Error("corrupt replay state");
};

/** Reads flattened late ranges, checked as the Rust core checks them. */
function lateRanges(flat: unknown, top: bigint): [bigint, bigint][] {
  if (!Array.isArray(flat) || flat.length % 2 !== 0 || flat.length / 2 > MAX_LATE_RANGES) corrupt();
  const values = (flat as unknown[]).map((v) =>
    typeof v === "string" && /^\d+$/.test(v) ? BigInt(v) : corrupt(),
  );
  if (values.length > 0 && top < WINDOW) corrupt();
  const out: [bigint, bigint][] = [];
  let floor = 0n;
  for (let i = 0; i < values.length; i += 2) {
    const [start, end] = values.slice(i, i + 2) as [bigint, bigint];
    if (start < floor || start > end || end > top - WINDOW) corrupt();
    floor = end + 2n;
    out.push([start, end]);
  }
  return out;
}

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

  /** The kept unseen ranges of one publisher (inclusive, ascending). */
  lateRanges(publisher: string): [bigint, bigint][] {
    return (this.windows.get(publisher)?.late ?? []).map(([a, b]) => [a, b]);
  }

  /** The state, for persisting. */
  toJSON(): ReplayState {
    const out: ReplayState = {};
    for (const [p, w] of this.windows) {
      const late = w.late.flatMap(([a, b]) => [a.toString(), b.toString()]);
      out[p] =
        late.length > 0
          ? [w.highest.toString(), w.offsets(), late]
          : [w.highest.toString(), w.offsets()];
    }
    return out;
  }

  /** Restores persisted state; throws on anything inconsistent (never guesses). */
  static fromJSON(state: unknown): ReplayWindows {
    const windows = new ReplayWindows();
    if (typeof state !== "object" || state === null || Array.isArray(state)) corrupt();
    for (const [publisher, entry] of Object.entries(state as object)) {
      if (!Array.isArray(entry) || (entry.length !== 2 && entry.length !== 3)) corrupt();
      const [highest, seen, late] = entry as unknown[];
      if (typeof highest !== "string" || !/^\d+$/.test(highest) || !Array.isArray(seen)) {
        corrupt();
      }
      const top = BigInt(highest as string);
      const w = new Window(top);
      let highestMarked = false;
      for (const k of seen as unknown[]) {
        if (
          typeof k !== "number" ||
          !Number.isInteger(k) ||
          k < 0 ||
          k >= SLOTS ||
          BigInt(k) > top
        ) {
          corrupt();
        }
        if (k === 0) highestMarked = true;
        w.mark(top - BigInt(k as number));
      }
      if (!highestMarked) throw new Error("corrupt replay state: highest not marked");
      if (late !== undefined) w.late = lateRanges(late, top);
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
