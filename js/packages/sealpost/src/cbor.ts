/**
 * CBOR through the maintained `cbor2` library, in the strict profile sealpost's messages
 * use: every message is written in core deterministic encoding (RFC 8949 §4.2.1), and
 * anything else (longer heads, indefinite lengths, unsorted or duplicate keys, floats) is
 * refused, so that no byte of an accepted message is malleable.
 */
import { type DecodeOptions, decode, type EncodeOptions, encode, Tag } from "cbor2";
import { malformed } from "./errors.js";

const DECODE: DecodeOptions = {
  cde: true,
  preferMap: true,
  ignoreGlobalTags: true,
  rejectDuplicateKeys: true,
  rejectStreaming: true,
  rejectFloats: true,
  rejectUndefined: true,
  rejectSimple: false,
};
const ENCODE: EncodeOptions = { cde: true };

/** Decodes one strict CBOR item; throws `Rejected("malformed")` naming `what`. */
export function decodeStrict(bytes: Uint8Array, what: string): unknown {
  try {
    return decode(bytes, DECODE);
  } catch {
    throw malformed(what);
  }
}

/** Encodes in core deterministic encoding. */
export function encodeCbor(value: unknown): Uint8Array {
  return encode(value, ENCODE);
}

export { Tag };

/** A CBOR unsigned integer as a bigint, or null if `v` is not one. */
export function asUint(v: unknown): bigint | null {
  if (typeof v === "bigint") return v >= 0n ? v : null;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  return null;
}

/** A CBOR map, or null. */
export function asMap(v: unknown): Map<unknown, unknown> | null {
  return v instanceof Map ? v : null;
}

/** A CBOR byte string, or null. */
export function asBytes(v: unknown): Uint8Array | null {
  return v instanceof Uint8Array ? v : null;
}

/** The contents of tag `tag` wrapping an array of `length` items, or null. */
export function tagged(v: unknown, tag: number, length: number): unknown[] | null {
  if (!(v instanceof Tag) || Number(v.tag) !== tag) return null;
  const c = v.contents;
  return Array.isArray(c) && c.length === length ? c : null;
}
