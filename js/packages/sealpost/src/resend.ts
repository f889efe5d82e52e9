/**
 * The last envelopes a publisher sent at QoS 1, sent again after a reconnect (as the Rust
 * publisher does: publisher-sdk/src/resend.rs).
 *
 * A broker that goes away takes with it what it had acknowledged but not yet delivered,
 * and a subscriber that fails over to the next broker a moment after the publisher misses
 * what reached that broker before it subscribed there. So after every reconnect, once
 * subscribers that lost the same broker have had time to come back (`RESEND_DELAY_MS`),
 * the publisher sends its recent envelopes again. Subscribers drop the ones they already
 * have by sequence number (replay window), so each reaches the application once.
 */

/**
 * How many recent QoS 1 envelopes are kept, by default: half the subscribers' replay
 * window (1024), so that what is sent again is still inside it even with as many new
 * messages sent meanwhile.
 */
export const DEFAULT_RESEND_WINDOW = 512;
/** At most this many bytes of envelopes are kept, whatever the count. */
const MAX_BYTES = 16 * 1024 * 1024;
/** How long after a reconnect the recent envelopes are sent again, ms. */
export const RESEND_DELAY_MS = 1000;

/** One envelope as it was published. */
export interface Sent {
  topic: string;
  envelope: Uint8Array;
  retain: boolean;
}

/** The most recent envelopes, oldest first, bounded in count and bytes. */
export class Recent {
  private sent: Sent[] = [];
  private head = 0;
  private bytes = 0;

  /** Keeps up to `capacity` envelopes (0: none). */
  constructor(private readonly capacity: number = DEFAULT_RESEND_WINDOW) {}

  /** Records an envelope just published, forgetting the oldest beyond the bounds. */
  push(sent: Sent): void {
    if (this.capacity === 0 || sent.envelope.length > MAX_BYTES) return;
    this.sent.push(sent);
    this.bytes += sent.envelope.length;
    while (this.sent.length - this.head > this.capacity || this.bytes > MAX_BYTES) {
      this.bytes -= (this.sent[this.head] as Sent).envelope.length;
      this.head += 1;
    }
    // Drop the forgotten prefix now and then, not on every push.
    if (this.head > this.capacity) {
      this.sent = this.sent.slice(this.head);
      this.head = 0;
    }
  }

  /** The recent envelopes, oldest first. */
  snapshot(): Sent[] {
    return this.sent.slice(this.head);
  }
}
