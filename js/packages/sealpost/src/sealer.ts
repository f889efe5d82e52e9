/** The publish path: sealing data envelopes and building key messages. */
import { buf } from "./bytes.js";
import { type CertificateInfo, mayPublish, rsaOaepKey } from "./certs.js";
import { encodeSign1, encStructure, sigStructure } from "./cose.js";
import {
  ENCRYPT0_PROTECTED,
  encodeEncrypt0,
  envelopeProtected,
  ivFor,
  type KeyIndex,
} from "./envelope.js";
import { SealError } from "./errors.js";
import type { PublisherIdentity } from "./identity.js";
import {
  encodeKeyMessageBody,
  encodeRecipient,
  keyMessageProtected,
  MAX_KEY_ENTRIES,
} from "./keyMessage.js";
import { validateTopic } from "./topic.js";

const te = new TextEncoder();

/** Everything one envelope is sealed from. */
export interface SealInput {
  identity: PublisherIdentity;
  topic: string;
  plaintext: Uint8Array;
  index: KeyIndex;
  /** The epoch's content key (AES-256-GCM). */
  contentKey: CryptoKey;
  seq: bigint;
  /** The publisher's 4 random IV bytes. */
  salt: Uint8Array;
  publishedAt: bigint;
  /** Embed the publisher certificate (x5chain); required in KDC mode. */
  embedCertificate: boolean;
}

/** Seals one data envelope (docs/PROTOCOL.md, "Data envelope"). */
export async function sealEnvelope(input: SealInput): Promise<Uint8Array> {
  const { identity, topic } = input;
  if (!validateTopic(topic)) throw new SealError(`invalid topic name ${JSON.stringify(topic)}`);
  if (!mayPublish(identity.certificate, topic)) {
    throw new SealError(`this publisher's certificate does not permit topic ${topic}`);
  }
  if (input.salt.length !== 4) throw new SealError("the IV salt is 4 bytes");
  const aad = te.encode(topic);
  const iv = ivFor(input.salt, input.seq);
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: buf(iv), additionalData: buf(encStructure(ENCRYPT0_PROTECTED, aad)) },
      input.contentKey,
      buf(input.plaintext),
    ),
  );
  const payload = encodeEncrypt0(iv, ciphertext);
  const protectedBytes = envelopeProtected(
    identity.certificate.fingerprint,
    input.publishedAt,
    input.seq,
    input.index,
  );
  const signature = await sign(identity.key, sigStructure(protectedBytes, aad, payload));
  return encodeSign1(
    protectedBytes,
    input.embedCertificate ? identity.certificate.der : null,
    payload,
    signature,
  );
}

/** One wrapped content key of a key message. */
export interface KeyEntry {
  epoch: bigint;
  /** Raw content key bytes (the publisher holds them to wrap them). */
  key: Uint8Array;
}

/** Wraps a content key for one subscriber into a COSE_recipient (RSA-OAEP-SHA256). */
export async function wrapForSubscriber(
  subscriber: CertificateInfo,
  entry: KeyEntry,
): Promise<unknown[]> {
  let wrapped: Uint8Array;
  try {
    const key = await rsaOaepKey(subscriber.cert);
    wrapped = new Uint8Array(
      await crypto.subtle.encrypt({ name: "RSA-OAEP" }, key, buf(entry.key)),
    );
  } catch (e) {
    throw new SealError(`key wrapping for ${subscriber.id} failed: ${(e as Error).message}`);
  }
  return encodeRecipient(entry.epoch, wrapped);
}

/**
 * Builds the key message for `subscriber` on `topic` from COSE_recipients made by
 * `wrapForSubscriber` (reused while an epoch is carried, as the protocol allows).
 */
export async function createKeyMessage(
  identity: PublisherIdentity,
  subscriber: CertificateInfo,
  recipients: unknown[][],
  issuedAt: bigint,
  topic: string,
): Promise<Uint8Array> {
  if (recipients.length < 1 || recipients.length > MAX_KEY_ENTRIES) {
    throw new SealError(`a key message carries 1 to ${MAX_KEY_ENTRIES} keys`);
  }
  const payload = encodeKeyMessageBody(
    {
      publisher: identity.certificate.id,
      subscriber: subscriber.id,
      subscriberFingerprint: subscriber.fingerprint,
      issuedAt,
    },
    recipients,
  );
  const protectedBytes = keyMessageProtected(identity.certificate.fingerprint);
  const signature = await sign(
    identity.key,
    sigStructure(protectedBytes, te.encode(topic), payload),
  );
  return encodeSign1(protectedBytes, identity.certificate.der, payload, signature);
}

async function sign(key: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("Ed25519", key, buf(data)));
}

/** Fresh random bytes from WebCrypto. */
export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}
