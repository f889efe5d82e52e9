/** Key messages (docs/PROTOCOL.md, "Key messages"): parsing and building. */
import { asBytes, asMap, asUint, decodeStrict, encodeCbor } from "./cbor.js";
import {
  ALG_EDDSA,
  ALG_RSA_OAEP_256,
  KIND_KEYS,
  LABEL_ALG,
  LABEL_EPOCH,
  LABEL_KID,
  LABEL_KIND,
  LABEL_VERSION,
  VERSION,
} from "./cose.js";
import { malformed, Rejected } from "./errors.js";

/** Most key entries one key message carries. */
export const MAX_KEY_ENTRIES = 16;

/** The signed payload of a key message. */
export interface KeyMessageBody {
  publisher: string;
  subscriber: string;
  /** SHA-256 of the subscriber certificate DER. */
  subscriberFingerprint: Uint8Array;
  issuedAt: bigint;
  /** Wrapped content keys by epoch; `recipient` is the encoded COSE_recipient. */
  entries: { epoch: bigint; wrapped: Uint8Array; recipient: unknown[] }[];
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
  const entries = keys.map((r: unknown) => {
    if (!Array.isArray(r) || r.length !== 3) throw malformed("COSE_recipient");
    const [p, u, c] = r as unknown[];
    const protectedBytes = asBytes(p);
    const unprotected = asMap(u);
    const wrapped = asBytes(c);
    if (!protectedBytes || !unprotected || unprotected.size !== 0 || !wrapped) {
      throw malformed("COSE_recipient");
    }
    const header = asMap(decodeStrict(protectedBytes, "COSE_recipient header"));
    if (!header) throw malformed("COSE_recipient header");
    if (header.get(LABEL_ALG) !== ALG_RSA_OAEP_256) {
      throw new Rejected("unsupported_algorithm", "unsupported key wrapping algorithm");
    }
    const epoch = asUint(header.get(LABEL_EPOCH));
    if (epoch === null) throw malformed("COSE_recipient epoch");
    return { epoch, wrapped, recipient: r };
  });
  return {
    publisher,
    subscriber,
    subscriberFingerprint: fp,
    issuedAt: issued,
    entries,
  };
}

/** Builds one COSE_recipient: a content key wrapped under a subscriber's RSA key. */
export function encodeRecipient(epoch: bigint, wrapped: Uint8Array): unknown[] {
  const protectedBytes = encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, ALG_RSA_OAEP_256],
      [LABEL_EPOCH, epoch],
    ]),
  );
  return [protectedBytes, new Map(), wrapped];
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
