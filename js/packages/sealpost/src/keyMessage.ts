/** Key messages (docs/PROTOCOL.md, "Key messages"): parsing and building. */
import { asBytes, asUint, decodeStrict, encodeCbor } from "./cbor.js";
import {
  ALG_EDDSA,
  KIND_KEYS,
  LABEL_ALG,
  LABEL_KID,
  LABEL_KIND,
  LABEL_VERSION,
  VERSION,
} from "./cose.js";
import { malformed } from "./errors.js";
import { parseRecipient, type Wrapping } from "./wrap.js";

/** Most key entries one key message carries. */
export const MAX_KEY_ENTRIES = 16;

/** The signed payload of a key message. */
export interface KeyMessageBody {
  publisher: string;
  subscriber: string;
  /** SHA-256 of the subscriber certificate DER. */
  subscriberFingerprint: Uint8Array;
  issuedAt: bigint;
  /** The wrapped content keys, one per epoch (COSE_recipients, parsed). */
  entries: Wrapping[];
}

/** Parses the payload of a key message. */
export function parseKeyMessageBody(payload: Uint8Array): KeyMessageBody {
  const body = decodeStrict(payload, "key message body");
  if (!Array.isArray(body) || body.length !== 5) throw malformed("key message body");
  const [publisher, subscriber, fingerprint, issuedAt, keys] = body as unknown[];
  const fp = asBytes(fingerprint);
  const issued = asUint(issuedAt);
  if (
    typeof publisher !== "string" ||
    typeof subscriber !== "string" ||
    !fp ||
    fp.length !== 32 ||
    issued === null ||
    !Array.isArray(keys) ||
    keys.length < 1 ||
    keys.length > MAX_KEY_ENTRIES
  ) {
    throw malformed("key message body");
  }
  const entries = keys.map(parseRecipient);
  return {
    publisher,
    subscriber,
    subscriberFingerprint: fp,
    issuedAt: issued,
    entries,
  };
}

/** Encodes a key message body. */
export function encodeKeyMessageBody(
  body: Omit<KeyMessageBody, "entries">,
  recipients: unknown[][],
): Uint8Array {
  return encodeCbor([
    body.publisher,
    body.subscriber,
    body.subscriberFingerprint,
    body.issuedAt,
    recipients,
  ]);
}

/** The protected header of a key message. */
export function keyMessageProtected(fingerprint: Uint8Array): Uint8Array {
  return encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, ALG_EDDSA],
      [LABEL_KID, fingerprint],
      [LABEL_VERSION, VERSION],
      [LABEL_KIND, KIND_KEYS],
    ]),
  );
}
