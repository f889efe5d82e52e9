/**
 * Typed outcomes of every refused message: the same kinds, with the same names, as the
 * Rust SDK's `Rejected::kind()`, so that metrics and tests compare across implementations.
 */

/** Stable short names of rejection reasons (docs/PROTOCOL.md, "Receiving, in this order"). */
export type RejectionKind =
  | "malformed"
  | "oversized"
  | "unknown_version"
  | "unsupported_algorithm"
  | "replayed"
  | "stale"
  | "unknown_publisher"
  | "untrusted_publisher"
  | "expired"
  | "revoked"
  | "topic_not_permitted"
  | "bad_inclusion_proof"
  | "bad_signature"
  | "unknown_key"
  | "decrypt_failed"
  | "wrong_key_type"
  | "not_for_us";

/** Details a rejection may carry (never key material). */
export interface RejectionDetails {
  /** Publisher named in the envelope, when it could be read. */
  publisher?: string;
  /** Sequence number in the envelope, when it could be read. */
  seq?: bigint;
  /** Key epoch named in the key index (`unknown_key`). */
  epoch?: bigint;
  /** Key location from the key index (`unknown_key`). */
  location?: string;
  /** Topic the message arrived on. */
  topic?: string;
}

/** Why an envelope or key message was refused. Nothing refused is ever delivered. */
export class Rejected extends Error {
  /** The reason, as a stable short name. */
  readonly kind: RejectionKind;
  /** What the envelope said, as far as it was read. */
  readonly details: RejectionDetails;

  constructor(kind: RejectionKind, message: string, details: RejectionDetails = {}) {
    super(`${kind}: ${message}`);
    this.name = "Rejected";
    this.kind = kind;
    this.details = details;
  }

  /** Could this message open later, once a missing certificate or key arrives? */
  get retryable(): boolean {
    return this.kind === "unknown_key" || this.kind === "unknown_publisher";
  }
}

/** Why sealing or building a key message was refused. */
export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SealError";
  }
}

/** Shorthand for the most common rejection. */
export function malformed(what: string): Rejected {
  return new Rejected("malformed", what);
}
