/**
 * The receive path (docs/PROTOCOL.md, "Receiving, in this order"), without I/O: every
 * check in the document's order, each refusal a typed `Rejected`.
 */
import { equal, nowUnix, toHex } from "./bytes.js";
import { type CertificateError, type CertificateInfo, mayPublish, type Verifier } from "./certs.js";
import { checkPreamble, encStructure, KIND_KEYS, kidOf, parseSign1, sigStructure } from "./cose.js";
import { DEFAULT_MAX_ENVELOPE, type ParsedEnvelope, parseEnvelope } from "./envelope.js";
import { malformed, Rejected, type RejectionDetails } from "./errors.js";
import type { SubscriberIdentity } from "./identity.js";
import { parseKeyMessageBody } from "./keyMessage.js";
import { DEFAULT_KEPT_EPOCHS, importContentKey, Keyring } from "./keyring.js";
import { leafHash, PathMemo, ProofShapeError, rootFromPath, rootSigStructure } from "./merkle.js";
import { primitives, sha256, type VerifyKey } from "./primitives.js";
import { ReplayWindows } from "./replay.js";
import { DEFAULT_ROOT_CACHE, RootCache } from "./rootCache.js";
import { unwrapContentKey } from "./wrap.js";

/** Default maximum age of an envelope: 24 hours. */
export const DEFAULT_MAX_AGE_SECS = 24 * 3600;
/** Default allowance for publishers' clocks running ahead: 5 minutes. */
export const DEFAULT_CLOCK_SKEW_SECS = 300;
const MAX_KNOWN_PUBLISHERS = 4096;

/** An opened, verified message. */
export interface Opened {
  topic: string;
  publisher: string;
  seq: bigint;
  epoch: bigint;
  publishedAt: bigint;
  payload: Uint8Array;
}

/** What a key message taught. */
export interface KeyUpdate {
  publisher: string;
  newEpochs: bigint[];
  issuedAt: bigint;
}

/** Options of an opener. */
export interface OpenerOptions {
  /** Trusted CA (and revocation list). */
  verifier: Verifier;
  /** This subscriber (needed for key messages; KDC-only readers may omit it). */
  identity?: SubscriberIdentity;
  /** Replay state to start from (restored from a store). */
  replay?: ReplayWindows;
  maxEnvelope?: number;
  maxAgeSecs?: number;
  clockSkewSecs?: number;
  keptEpochs?: number;
  /** Verified burst roots remembered per publisher (default 16; 0 verifies every one). */
  rootCache?: number;
}

interface KnownPublisher {
  info: CertificateInfo;
  key: VerifyKey;
  /** Burst roots of this certificate whose signature verified. */
  roots: RootCache;
  /** The path nodes its last version 2 envelope hashed (a memo, see `PathMemo`). */
  paths: PathMemo;
  /** Topics already checked against its certificate's filters, and the answer. */
  topics: Map<string, boolean>;
}

/** Topic answers remembered per publisher before the memo starts over. */
const MAX_TOPICS_REMEMBERED = 1024;

/** May `known` publish to `topic`? Its certificate's filters, remembered per topic. */
function permits(known: KnownPublisher, topic: string): boolean {
  let answer = known.topics.get(topic);
  if (answer === undefined) {
    answer = mayPublish(known.info, topic);
    if (known.topics.size >= MAX_TOPICS_REMEMBERED) known.topics.clear();
    known.topics.set(topic, answer);
  }
  return answer;
}

const te = new TextEncoder();

/** Opens data envelopes and accepts key messages for one subscriber. */
export class Opener {
  readonly verifier: Verifier;
  readonly replay: ReplayWindows;
  private readonly identity: SubscriberIdentity | undefined;
  private readonly keyring: Keyring;
  private readonly publishers = new Map<string, KnownPublisher>();
  private readonly maxEnvelope: number;
  private readonly maxAge: number;
  private readonly clockSkew: number;
  private readonly rootCache: number;

  constructor(options: OpenerOptions) {
    this.verifier = options.verifier;
    this.identity = options.identity;
    this.replay = options.replay ?? new ReplayWindows();
    this.keyring = new Keyring(options.keptEpochs ?? DEFAULT_KEPT_EPOCHS);
    this.maxEnvelope = options.maxEnvelope ?? DEFAULT_MAX_ENVELOPE;
    this.maxAge = options.maxAgeSecs ?? DEFAULT_MAX_AGE_SECS;
    this.clockSkew = options.clockSkewSecs ?? DEFAULT_CLOCK_SKEW_SECS;
    this.rootCache = options.rootCache ?? DEFAULT_ROOT_CACHE;
  }

  /** Installs a content key (from the KDC). */
  async addContentKey(publisher: string, epoch: bigint, raw: Uint8Array): Promise<boolean> {
    return this.keyring.insert(publisher, epoch, await importContentKey(raw));
  }

  /** Is the content key of this epoch known? */
  hasContentKey(publisher: string, epoch: bigint): boolean {
    return this.keyring.has(publisher, epoch);
  }

  /** Verifies a publisher certificate against the CA and remembers it. */
  async addPublisherCertificate(der: Uint8Array, now = nowUnix()): Promise<CertificateInfo> {
    const info = await this.verifyPublisher(der, now);
    try {
      this.verifier.checkTimeAndRevocation(info, now);
    } catch (e) {
      throw certificateRejection(e);
    }
    return info;
  }

  private async verifyPublisher(der: Uint8Array, now: number): Promise<CertificateInfo> {
    const known = this.publishers.get(toHex(await sha256(der)));
    if (known) return known.info;
    let info: CertificateInfo;
    try {
      info = await this.verifier.verify(der, now);
    } catch (e) {
      throw certificateRejection(e);
    }
    if (info.role !== "publisher") {
      throw new Rejected("untrusted_publisher", `${info.id} has role ${info.role}, not publisher`);
    }
    let key: VerifyKey;
    try {
      key = await primitives.importVerifyKey(new Uint8Array(info.cert.publicKey.rawData));
    } catch {
      throw new Rejected("untrusted_publisher", `${info.id}: not an Ed25519 key`);
    }
    if (this.publishers.size >= MAX_KNOWN_PUBLISHERS) this.publishers.clear();
    this.publishers.set(toHex(info.fingerprint), {
      info,
      key,
      roots: new RootCache(),
      paths: new PathMemo(),
      topics: new Map(),
    });
    return info;
  }

  /** Finds (or learns from `embedded`) the publisher certificate the kid names. */
  private async publisher(
    fingerprint: Uint8Array,
    embedded: Uint8Array | null,
    claimed: string,
    now: number,
  ): Promise<KnownPublisher> {
    const fp = toHex(fingerprint);
    if (!this.publishers.has(fp)) {
      if (!embedded) {
        throw new Rejected("unknown_publisher", `no certificate known for ${claimed}`, {
          publisher: claimed,
        });
      }
      const info = await this.verifyPublisher(embedded, now);
      if (!equal(info.fingerprint, fingerprint)) {
        throw new Rejected("untrusted_publisher", "embedded certificate does not match the kid");
      }
    }
    const known = this.publishers.get(fp);
    if (!known) throw new Rejected("unknown_publisher", claimed, { publisher: claimed });
    if (embedded && !equal(embedded, known.info.der)) {
      throw new Rejected("untrusted_publisher", "embedded certificate does not match the kid");
    }
    try {
      this.verifier.checkTimeAndRevocation(known.info, now);
    } catch (e) {
      throw certificateRejection(e);
    }
    if (known.info.id !== claimed) {
      throw new Rejected(
        "untrusted_publisher",
        `certificate belongs to ${known.info.id}, message claims ${claimed}`,
      );
    }
    return known;
  }

  /**
   * Opens a data envelope received on `topic`. Resolves to the plaintext, or rejects
   * with a `Rejected` whose `kind` says why.
   */
  async open(topic: string, bytes: Uint8Array, now = nowUnix()): Promise<Opened> {
    const env = parseEnvelope(bytes, this.maxEnvelope);
    const { publisher, epoch, location } = env.keyIndex;
    const details = { publisher, seq: env.seq, topic };
    if (this.replay.check(publisher, env.seq) !== "fresh") {
      throw new Rejected("replayed", `${publisher} sequence ${env.seq}`, details);
    }
    const at = BigInt(now);
    if (
      env.publishedAt < at - BigInt(this.maxAge) ||
      env.publishedAt > at + BigInt(this.clockSkew)
    ) {
      throw new Rejected("stale", `${publisher} published at ${env.publishedAt}`, details);
    }
    const known = await this.publisher(env.fingerprint, env.sign1.x5chain, publisher, now);
    if (!permits(known, topic)) {
      throw new Rejected(
        "topic_not_permitted",
        `${publisher} may not publish to ${topic}`,
        details,
      );
    }
    const topicBytes = te.encode(topic);
    await this.verifyEnvelope(known, env, topicBytes, details);
    const key = this.keyring.get(publisher, epoch);
    if (!key) {
      throw new Rejected("unknown_key", `no content key for ${publisher} epoch ${epoch}`, {
        ...details,
        epoch,
        location,
      });
    }
    let payload: Uint8Array;
    try {
      payload = await primitives.aesGcmDecrypt(
        key,
        env.iv,
        encStructure(env.encProtected, topicBytes),
        env.ciphertext,
      );
    } catch {
      throw new Rejected("decrypt_failed", "decryption failed", details);
    }
    if (!this.replay.record(publisher, env.seq)) {
      throw new Rejected("replayed", `${publisher} sequence ${env.seq}`, details);
    }
    return { topic, publisher, seq: env.seq, epoch, publishedAt: env.publishedAt, payload };
  }

  /**
   * Step 5: version 1, the envelope's own signature; version 2, the leaf, its inclusion
   * path to a root, and the root signature, unless exactly this (root, tree size,
   * signature) verified before. Only a verified root enters the cache.
   */
  private async verifyEnvelope(
    known: KnownPublisher,
    env: ParsedEnvelope,
    topic: Uint8Array,
    details: RejectionDetails,
  ): Promise<void> {
    const { sign1, proof } = env;
    const tbs = sigStructure(sign1.protectedBytes, topic, sign1.payload);
    if (!proof) {
      if (!(await primitives.verifyEd25519(known.key, sign1.signature, tbs))) {
        throw new Rejected("bad_signature", "bad signature", details);
      }
      return;
    }
    let root: Uint8Array;
    try {
      root = await rootFromPath(proof, await leafHash(tbs), known.paths);
    } catch (e) {
      if (e instanceof ProofShapeError) {
        throw new Rejected("bad_inclusion_proof", e.message, details);
      }
      throw e;
    }
    if (known.roots.contains(root, proof.treeSize, sign1.signature)) return;
    const rootTbs = rootSigStructure(env.fingerprint, proof.treeSize, root);
    if (!(await primitives.verifyEd25519(known.key, sign1.signature, rootTbs))) {
      throw new Rejected("bad_signature", "bad signature", details);
    }
    known.roots.insertVerified(root, proof.treeSize, sign1.signature, this.rootCache);
  }

  /** Verifies a key message received on `topic` and learns the keys it wraps for us. */
  async acceptKeyMessage(topic: string, bytes: Uint8Array, now = nowUnix()): Promise<KeyUpdate> {
    if (bytes.length > this.maxEnvelope) {
      throw new Rejected("oversized", `key message of ${bytes.length} bytes`);
    }
    const sign1 = parseSign1(bytes);
    checkPreamble(sign1, KIND_KEYS);
    const fingerprint = kidOf(sign1.protected);
    if (!sign1.x5chain) throw malformed("key message without certificate");
    const body = parseKeyMessageBody(sign1.payload);
    const known = await this.publisher(fingerprint, sign1.x5chain, body.publisher, now);
    const tbs = sigStructure(sign1.protectedBytes, te.encode(topic), sign1.payload);
    if (!(await primitives.verifyEd25519(known.key, sign1.signature, tbs))) {
      throw new Rejected("bad_signature", "bad signature", { publisher: body.publisher, topic });
    }
    // Only now, with the publisher authenticated, touch the private key.
    const identity = this.identity;
    if (!identity || !equal(body.subscriberFingerprint, identity.certificate.fingerprint)) {
      throw new Rejected("not_for_us", "key message addressed to another subscriber");
    }
    const newEpochs: bigint[] = [];
    for (const entry of body.entries) {
      const epoch = entry.epoch;
      if (this.keyring.has(body.publisher, epoch)) continue;
      const raw = await unwrapContentKey(identity, entry, body.publisher);
      if (this.keyring.insert(body.publisher, epoch, await importContentKey(raw))) {
        newEpochs.push(epoch);
      }
    }
    return { publisher: body.publisher, newEpochs, issuedAt: body.issuedAt };
  }
}

/** Maps a certificate problem to the rejection kind the Rust SDK reports for it. */
function certificateRejection(e: unknown): Rejected {
  const err = e as CertificateError;
  switch (err.problem) {
    case "expired":
      return new Rejected("expired", err.message);
    case "revoked":
    case "bad_crl":
      return new Rejected("revoked", err.message);
    default:
      return new Rejected("untrusted_publisher", err instanceof Error ? err.message : String(e));
  }
}
