/** The publish path: sealing data envelopes and building key messages. */
import { buf } from "./bytes.js";
import { type CertificateInfo, mayPublish, rsaOaepKey } from "./certs.js";
import { encodeSign1, encStructure, sigStructure, VERSION, VERSION_BURST } from "./cose.js";
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
import { encodeProof, leafHash, rootAndPaths, rootSigStructure } from "./merkle.js";
import { type ContentKey, primitives } from "./primitives.js";
import { validateTopic } from "./topic.js";

const te = new TextEncoder();

/** Everything one envelope is sealed from. */
export interface SealInput {
  identity: PublisherIdentity;
  topic: string;
  plaintext: Uint8Array;
  index: KeyIndex;
  /** The epoch's content key (AES-256-GCM). */
  contentKey: ContentKey;
  seq: bigint;
  /** The publisher's 4 random IV bytes. */
  salt: Uint8Array;
  publishedAt: bigint;
  /** Embed the publisher certificate (x5chain); required in KDC mode. */
  embedCertificate: boolean;
}

/**
 * Seals one version 1 data envelope (docs/PROTOCOL.md, "Data envelope"): one signature
 * per message, for subscribers that read only version 1. `sealBurst` writes version 2.
 */
export async function sealEnvelope(input: SealInput): Promise<Uint8Array> {
  const { protectedBytes, aad, payload } = await encryptOne(input, VERSION);
  const signature = await sign(input.identity.key, sigStructure(protectedBytes, aad, payload));
  return encodeSign1(protectedBytes, certificateToEmbed(input), payload, signature);
}

/** One message of a burst. */
export interface BurstMessage {
  topic: string;
  plaintext: Uint8Array;
}

/** A burst: the inputs all its messages share, the messages, and the first sequence number. */
export interface BurstInput extends Omit<SealInput, "topic" | "plaintext" | "seq"> {
  /** Sequence number of the first message; the others follow one by one. */
  firstSeq: bigint;
  /** At least one message, in sealing order. */
  messages: BurstMessage[];
}

/** Default largest burst a publisher seals under one signature (as in the Rust SDK). */
export const DEFAULT_MAX_BURST = 256;

/**
 * Seals a burst of version 2 envelopes (docs/PROTOCOL.md, "Data envelope, version 2"):
 * one Ed25519 signature over the RFC 9162 root of the messages' `Sig_structure`s; every
 * envelope carries that signature and its own inclusion proof. A burst of one costs what
 * a version 1 envelope costs.
 */
export async function sealBurst(input: BurstInput): Promise<Uint8Array[]> {
  const n = input.messages.length;
  if (n < 1 || n > DEFAULT_MAX_BURST) {
    throw new SealError(`a burst holds 1 to ${DEFAULT_MAX_BURST} messages`);
  }
  const sealed = [];
  for (const [i, m] of input.messages.entries()) {
    sealed.push(
      await encryptOne({ ...input, ...m, seq: input.firstSeq + BigInt(i) }, VERSION_BURST),
    );
  }
  const leaves = await Promise.all(
    sealed.map((e) => leafHash(sigStructure(e.protectedBytes, e.aad, e.payload))),
  );
  const { root, paths } = await rootAndPaths(leaves);
  const treeSize = BigInt(n);
  const fingerprint = input.identity.certificate.fingerprint;
  const signature = await sign(input.identity.key, rootSigStructure(fingerprint, treeSize, root));
  return sealed.map((e, i) =>
    encodeSign1(
      e.protectedBytes,
      certificateToEmbed(input),
      e.payload,
      signature,
      encodeProof({ treeSize, leafIndex: BigInt(i), path: paths[i] ?? [] }),
    ),
  );
}

/** Checks, encrypts and builds the protected header of one message, not yet signed. */
async function encryptOne(
  input: SealInput,
  version: bigint,
): Promise<{ protectedBytes: Uint8Array; aad: Uint8Array; payload: Uint8Array }> {
  const { identity, topic } = input;
  checkTopic(identity, topic);
  if (input.salt.length !== 4) throw new SealError("the IV salt is 4 bytes");
  const aad = te.encode(topic);
  const iv = ivFor(input.salt, input.seq);
  const ciphertext = await primitives.aesGcmEncrypt(
    input.contentKey,
    iv,
    encStructure(ENCRYPT0_PROTECTED, aad),
    input.plaintext,
  );
  const payload = encodeEncrypt0(iv, ciphertext);
  const protectedBytes = envelopeProtected(
    identity.certificate.fingerprint,
    input.publishedAt,
    input.seq,
    input.index,
    version,
  );
  return { protectedBytes, aad, payload };
}

/** Throws `SealError` unless `topic` is a valid topic name this publisher may use. */
export function checkTopic(identity: PublisherIdentity, topic: string): void {
  if (!validateTopic(topic)) throw new SealError(`invalid topic name ${JSON.stringify(topic)}`);
  if (!mayPublish(identity.certificate, topic)) {
    throw new SealError(`this publisher's certificate does not permit topic ${topic}`);
  }
}

function certificateToEmbed(input: { identity: PublisherIdentity; embedCertificate: boolean }) {
  return input.embedCertificate ? input.identity.certificate.der : null;
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
