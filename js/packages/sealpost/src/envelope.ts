/** Data envelopes (docs/PROTOCOL.md, "Data envelope"): parsing and building. */
import { concat } from "./bytes.js";
import { asBytes, asMap, asUint, decodeStrict, encodeCbor, Tag, tagged } from "./cbor.js";
import {
  ALG_A256GCM,
  ALG_EDDSA,
  CWT_IAT,
  checkPreamble,
  KIND_DATA,
  kidOf,
  LABEL_ALG,
  LABEL_CWT_CLAIMS,
  LABEL_IV,
  LABEL_KEY_INDEX,
  LABEL_KID,
  LABEL_KIND,
  LABEL_SEQ,
  LABEL_VERSION,
  parseSign1,
  type Sign1,
  TAG_ENCRYPT0,
  uintHeader,
  VERSION,
  VERSION_BURST,
} from "./cose.js";
import { readEnvelope } from "./envelopeReader.js";
import { malformed, Rejected } from "./errors.js";
import { type InclusionProof, parseProof } from "./merkle.js";
import { validateTopic } from "./topic.js";

/** Default largest envelope or key message an opener accepts, in bytes. */
export const DEFAULT_MAX_ENVELOPE = 1024 * 1024;
/** Length of the AES-GCM IV. */
export const IV_LEN = 12;

/** Which key opens an envelope, and where it is delivered. */
export interface KeyIndex {
  publisher: string;
  epoch: bigint;
  /** `mqtt:<key-topic prefix>` or an `https://` KDC address. */
  location: string;
}

/** An envelope parsed but not yet verified. */
export interface ParsedEnvelope {
  /** The parts of the COSE_Sign1 the opener goes on with. */
  sign1: Pick<Sign1, "protectedBytes" | "x5chain" | "payload" | "signature">;
  /** Version 2 only: where this message sits in its signed burst. */
  proof: InclusionProof | null;
  keyIndex: KeyIndex;
  seq: bigint;
  publishedAt: bigint;
  fingerprint: Uint8Array;
  encProtected: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

/** Is `s` a key location sealpost accepts (plain `http://` never is)? */
export function isValidLocation(s: string): boolean {
  if (s.startsWith("mqtt:")) return validateTopic(s.slice(5));
  return s.startsWith("https://") && s.length > "https://".length;
}

/** The key-topic prefix of an `mqtt:` location, or null for a KDC address. */
export function keyTopicPrefix(location: string): string | null {
  return location.startsWith("mqtt:") ? location.slice(5) : null;
}

/** Parses a data envelope (step 1 of "Receiving"). */
export function parseEnvelope(bytes: Uint8Array, maxLen = DEFAULT_MAX_ENVELOPE): ParsedEnvelope {
  if (bytes.length > maxLen) {
    throw new Rejected("oversized", `envelope of ${bytes.length} bytes exceeds ${maxLen}`);
  }
  // The pinned layout straight from the bytes; anything else through the general decoder.
  return readEnvelope(bytes, isValidLocation) ?? parseEnvelopeGeneral(bytes);
}

/**
 * What `parseEnvelope` does for an envelope the fast path (`envelopeReader.ts`) does not
 * recognise: the general strict CBOR decoder, and every check with its typed error.
 */
export function parseEnvelopeGeneral(bytes: Uint8Array): ParsedEnvelope {
  const sign1 = parseSign1(bytes);
  const version = checkPreamble(sign1, KIND_DATA);
  const proof = version === VERSION_BURST ? parseProof(sign1.vdp) : null;
  const h = sign1.protected;
  const fingerprint = kidOf(h);
  const seq = uintHeader(h, LABEL_SEQ);
  if (seq === null) throw malformed("no sequence number");
  const index = h.get(LABEL_KEY_INDEX);
  if (!Array.isArray(index)) throw malformed("no key index");
  const [publisher, epoch, location] = index as unknown[];
  const epochN = asUint(epoch);
  if (
    index.length !== 3 ||
    typeof publisher !== "string" ||
    typeof location !== "string" ||
    epochN === null
  ) {
    throw malformed("key index");
  }
  if (!isValidLocation(location)) throw malformed("key location");
  const claims = asMap(h.get(LABEL_CWT_CLAIMS));
  if (!h.has(LABEL_CWT_CLAIMS)) throw malformed("no publication time");
  const publishedAt = claims && claims.size === 1 ? asUint(claims.get(CWT_IAT)) : null;
  if (publishedAt === null) throw malformed("publication time (CWT claims {6: iat})");
  const enc = tagged(decodeStrict(sign1.payload, "COSE_Encrypt0"), TAG_ENCRYPT0, 3);
  if (!enc) throw malformed("COSE_Encrypt0");
  const encProtected = asBytes(enc[0]);
  const unprotected = asMap(enc[1]);
  const ciphertext = asBytes(enc[2]);
  if (!encProtected || !unprotected) throw malformed("COSE_Encrypt0");
  const encHeader = asMap(decodeStrict(encProtected, "COSE_Encrypt0 header"));
  if (encHeader?.size !== 1 || encHeader.get(LABEL_ALG) !== ALG_A256GCM) {
    throw new Rejected("unsupported_algorithm", "unsupported algorithm");
  }
  const iv = asBytes(unprotected.get(LABEL_IV));
  if (!iv || iv.length !== IV_LEN || unprotected.size !== 1) throw malformed("IV length");
  if (!ciphertext) throw malformed("no ciphertext");
  const { protectedBytes, x5chain, payload, signature } = sign1;
  return {
    sign1: { protectedBytes, x5chain, payload, signature },
    proof,
    keyIndex: { publisher, epoch: epochN, location },
    seq,
    publishedAt,
    fingerprint,
    encProtected,
    iv,
    ciphertext,
  };
}

/**
 * The protected header of a data envelope, in the exact bytes the protocol pins;
 * `version` 1 (one signature per message) or 2 (tree-signed burst).
 */
export function envelopeProtected(
  fingerprint: Uint8Array,
  publishedAt: bigint,
  seq: bigint,
  index: KeyIndex,
  version: bigint = VERSION,
): Uint8Array {
  return encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, ALG_EDDSA],
      [LABEL_KID, fingerprint],
      [LABEL_CWT_CLAIMS, new Map([[CWT_IAT, publishedAt]])],
      [LABEL_VERSION, version],
      [LABEL_KIND, KIND_DATA],
      [LABEL_SEQ, seq],
      [LABEL_KEY_INDEX, [index.publisher, index.epoch, index.location]],
    ]),
  );
}

/** The protected header of COSE_Encrypt0: `{1: 3}`. */
export const ENCRYPT0_PROTECTED = encodeCbor(new Map([[LABEL_ALG, ALG_A256GCM]]));

/** The IV: the publisher's 4-byte salt, then the sequence number as 8 bytes big-endian. */
export function ivFor(salt: Uint8Array, seq: bigint): Uint8Array {
  const counter = new Uint8Array(8);
  new DataView(counter.buffer).setBigUint64(0, seq);
  return concat(salt, counter);
}

/** Encodes the tagged COSE_Encrypt0 payload. */
export function encodeEncrypt0(iv: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  return encodeCbor(
    new Tag(TAG_ENCRYPT0, [ENCRYPT0_PROTECTED, new Map([[LABEL_IV, iv]]), ciphertext]),
  );
}
