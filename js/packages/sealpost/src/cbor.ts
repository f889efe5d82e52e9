/**
 * CBOR through the maintained `cborg` library, in the strict profile sealpost's messages
 * use: every message is written in core deterministic encoding (RFC 8949 §4.2.1), and
 * anything else (longer heads, indefinite lengths, unsorted or duplicate keys, floats) is
 * refused, so that no byte of an accepted message is malleable.
 *
 * `cborg` refuses longer heads, indefinite lengths, duplicate keys and `undefined` itself;
 * what it cannot check on decode (key order, floats standing for integers, invalid UTF-8)
 * is caught by encoding the decoded value again in deterministic encoding and requiring
 * the very bytes received: an item has exactly one such encoding.
 */
import {
  type DecodeOptions,
  decode,
  type EncodeOptions,
  encode,
  rfc8949EncodeOptions,
  Tagged,
} from "cborg";
import { equal } from "./bytes.js";
import { malformed } from "./errors.js";

/** The COSE message tags sealpost reads (COSE_Encrypt0, COSE_Sign1); any other is refused. */
const TAGS = [16, 18];

const DECODE: DecodeOptions = {
  strict: true,
  useMaps: true,
  rejectDuplicateMapKeys: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowInfinity: false,
  allowNaN: false,
  tags: Tagged.preserve(...TAGS),
};
const ENCODE: EncodeOptions = rfc8949EncodeOptions;

/** Decodes one strict CBOR item; throws `Rejected("malformed")` naming `what`. */
export function decodeStrict(bytes: Uint8Array, what: string): unknown {
  let value: unknown;
  try {
    value = decode(bytes, DECODE);
  } catch {
    throw malformed(what);
  }
  let again: Uint8Array;
  try {
    again = encode(value, ENCODE);
  } catch {
    throw malformed(what);
  }
  if (!equal(again, bytes)) throw malformed(what);
  return value;
}

/** Encodes in core deterministic encoding. */
export function encodeCbor(value: unknown): Uint8Array {
  return encode(value, ENCODE);
}

/** A tagged CBOR item (the library's own type, so encoding writes the tag). */
export { Tagged as Tag };

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
  if (!(v instanceof Tagged) || v.tag !== tag) return null;
  const c: unknown = v.value;
  return Array.isArray(c) && c.length === length ? c : null;
}
