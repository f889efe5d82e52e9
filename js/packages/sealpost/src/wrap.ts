/**
 * Key wrapping (docs/PROTOCOL.md, "Key wrapping"): the one module that knows how a content
 * key is wrapped for a subscriber certificate's public key and unwrapped with the private
 * key. Each algorithm is one entry of `WRAP_ALGORITHMS`; key messages, the opener and the
 * publisher only move `Wrapping`s, so a further algorithm is one more entry here.
 *
 * - RSA-OAEP-256 (COSE -41): WebCrypto RSA-OAEP with SHA-256, no `ek`.
 * - HPKE (COSE -65601): RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 *   AES-256-GCM, through the maintained `@hpke/core` (WebCrypto X25519 underneath), in the
 *   Key Encryption mode of draft-ietf-cose-hpke: `info` is the deterministic CBOR
 *   `Recipient_structure` `["HPKE Recipient", 3, <protected bytes as sent>, h'']`, `aad`
 *   is empty, `enc` travels in the unprotected `ek` (-4) parameter.
 * - HPKE with X-Wing (COSE -65602): the same with the hybrid post-quantum KEM X-Wing
 *   (`@hpke/hybridkem-x-wing`; the private key handling is in `xwing.ts`).
 */
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { buf } from "./bytes.js";
import { asBytes, asMap, asUint, decodeStrict, encodeCbor } from "./cbor.js";
import type { CertificateInfo } from "./certs.js";
import {
  ALG_A256GCM,
  ALG_HPKE_X25519_A256GCM_KE,
  ALG_HPKE_XWING_A256GCM_KE,
  ALG_RSA_OAEP_256,
  LABEL_ALG,
  LABEL_EK,
  LABEL_EPOCH,
} from "./cose.js";
import { malformed, Rejected, SealError } from "./errors.js";
import {
  OID_XWING,
  wipeKem,
  XWING,
  XWING_ENC_LEN,
  XWingPrivateKey,
  xwingKem,
  xwingPublicKeyBytes,
} from "./xwing.js";

/** The wrapping algorithms sealpost speaks, by stable name. */
export type WrapAlgorithm =
  | "RSA-OAEP-256"
  | "HPKE-X25519-SHA256-A256GCM"
  | "HPKE-XWING-SHA256-A256GCM";

/** One content key wrapped for one subscriber key: the parts of a `COSE_recipient`. */
export interface Wrapping {
  algorithm: WrapAlgorithm;
  epoch: bigint;
  /** The serialized protected header, exactly as received (HPKE binds these bytes). */
  protectedBytes: Uint8Array;
  /** The HPKE encapsulated key (`ek`), or null when the entry has none. */
  ek: Uint8Array | null;
  ciphertext: Uint8Array;
}

/** Length of a content key and of an X25519 encapsulated key. */
const KEY_LEN = 32;
const X25519_ENC_LEN = 32;
const RECIPIENT_CONTEXT = "HPKE Recipient";
const EMPTY = new Uint8Array(0);

/** What each algorithm is: its COSE id, the WebCrypto key it needs, wrap and unwrap. */
interface AlgorithmImpl {
  coseId: number;
  /** WebCrypto algorithm name of the subscriber's keys. */
  keyName: string;
  /** Wraps `contentKey` under the certificate's public key; `protectedBytes` is the header. */
  wrap(
    subscriber: CertificateInfo,
    protectedBytes: Uint8Array,
    contentKey: Uint8Array,
  ): Promise<{ ek: Uint8Array | null; ciphertext: Uint8Array }>;
  /** The content key, or a throw for any failure (the caller reports `decrypt_failed`). */
  unwrap(identity: UnwrapIdentity, w: Wrapping): Promise<Uint8Array>;
}

/** What unwrapping needs: the private key, and the certificate (HPKE binds its public key). */
export interface UnwrapIdentity {
  certificate: CertificateInfo;
  key: CryptoKey;
}

/** The HPKE `info`: the Recipient_structure of an entry with this protected header. */
export function hpkeInfo(protectedBytes: Uint8Array): Uint8Array {
  return encodeCbor([RECIPIENT_CONTEXT, ALG_A256GCM, protectedBytes, EMPTY]);
}

/** The certificate's public key as a WebCrypto key of `name`, for `usages`. */
function publicKey(cert: CertificateInfo, name: string, usages: KeyUsage[]): Promise<CryptoKey> {
  const alg = name === "RSA-OAEP" ? { name, hash: "SHA-256" } : { name };
  return crypto.subtle.importKey("spki", cert.cert.publicKey.rawData, alg, true, usages);
}

/** How one HPKE suite (HKDF-SHA256, AES-256-GCM, and a KEM) gets its keys. */
interface HpkeKem {
  coseId: number;
  keyName: string;
  encLen: number;
  /** The suite, built on first use (so pages that never meet the KEM never build it). */
  suite: () => CipherSuite;
  /** The recipient's public key as the suite's KEM takes it. */
  recipientPublicKey(cert: CertificateInfo): Promise<CryptoKey>;
  /** Runs `open` with the recipient key as the KEM takes it (and cleans up after). */
  withRecipientKey<T>(
    identity: UnwrapIdentity,
    open: (key: CryptoKey | CryptoKeyPair) => Promise<T>,
  ): Promise<T>;
}

/** A lazily built HPKE suite around `makeKem`. */
function lazySuite(makeKem: () => CipherSuite["kem"]): () => CipherSuite {
  let suite: CipherSuite | null = null;
  return () => {
    suite ??= new CipherSuite({ kem: makeKem(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    return suite;
  };
}

/** The Key Encryption mode of draft-ietf-cose-hpke over one KEM. */
function hpkeAlgorithm(kem: HpkeKem): AlgorithmImpl {
  return {
    coseId: kem.coseId,
    keyName: kem.keyName,
    async wrap(subscriber, protectedBytes, contentKey) {
      const sealed = await kem.suite().seal(
        {
          recipientPublicKey: await kem.recipientPublicKey(subscriber),
          info: buf(hpkeInfo(protectedBytes)),
        },
        buf(contentKey),
        buf(EMPTY),
      );
      return { ek: new Uint8Array(sealed.enc), ciphertext: new Uint8Array(sealed.ct) };
    },
    async unwrap(identity, w) {
      if (w.ek === null || w.ek.length !== kem.encLen) {
        throw malformed(`an HPKE recipient needs a ${kem.encLen}-byte ek`);
      }
      const enc = buf(w.ek);
      const pt = await kem.withRecipientKey(identity, (recipientKey) =>
        kem
          .suite()
          .open(
            { recipientKey, enc, info: buf(hpkeInfo(w.protectedBytes)) },
            buf(w.ciphertext),
            buf(EMPTY),
          ),
      );
      return new Uint8Array(pt);
    },
  };
}

const ALGORITHMS: Record<WrapAlgorithm, AlgorithmImpl> = {
  "RSA-OAEP-256": {
    coseId: ALG_RSA_OAEP_256,
    keyName: "RSA-OAEP",
    async wrap(subscriber, _protected, contentKey) {
      const key = await publicKey(subscriber, "RSA-OAEP", ["encrypt"]);
      const ct = await crypto.subtle.encrypt({ name: "RSA-OAEP" }, key, buf(contentKey));
      return { ek: null, ciphertext: new Uint8Array(ct) };
    },
    async unwrap(identity, w) {
      if (w.ek !== null) throw malformed("ek in an RSA-OAEP recipient");
      const raw = await crypto.subtle.decrypt(
        { name: "RSA-OAEP" },
        identity.key,
        buf(w.ciphertext),
      );
      return new Uint8Array(raw);
    },
  },
  "HPKE-X25519-SHA256-A256GCM": hpkeAlgorithm({
    coseId: ALG_HPKE_X25519_A256GCM_KE,
    keyName: "X25519",
    encLen: X25519_ENC_LEN,
    suite: lazySuite(() => new DhkemX25519HkdfSha256()),
    recipientPublicKey: (cert) => publicKey(cert, "X25519", []),
    async withRecipientKey(identity, open) {
      // The private key stays a (non-extractable) CryptoKey: DHKEM also needs the public
      // key, which comes from our certificate instead of from the private key's bytes.
      const publicKeyOfCert = await publicKey(identity.certificate, "X25519", []);
      return open({ privateKey: identity.key, publicKey: publicKeyOfCert });
    },
  }),
  "HPKE-XWING-SHA256-A256GCM": hpkeAlgorithm({
    coseId: ALG_HPKE_XWING_A256GCM_KE,
    keyName: XWING,
    encLen: XWING_ENC_LEN,
    suite: lazySuite(() => xwingKem),
    recipientPublicKey: (cert) => xwingKem.deserializePublicKey(xwingPublicKeyBytes(cert)),
    async withRecipientKey(identity, open) {
      const key = identity.key;
      if (!(key instanceof XWingPrivateKey)) throw new Error("not an X-Wing private key");
      // WebCrypto has no X-Wing: the seed is decrypted for this one unwrapping only, and
      // both copies (ours and the one inside @hpke's key object) are wiped afterwards.
      return key.withSeed(async (seed) => {
        const recipientKey = await xwingKem.deserializePrivateKey(seed.slice());
        try {
          return await open(recipientKey);
        } finally {
          wipeKem(recipientKey);
        }
      });
    },
  }),
};

/** Every algorithm, in a stable order. */
export const WRAP_ALGORITHMS = Object.keys(ALGORITHMS) as WrapAlgorithm[];

/** The algorithm with COSE id `id`, or null if sealpost does not speak it. */
export function wrapAlgorithmOf(id: unknown): WrapAlgorithm | null {
  return WRAP_ALGORITHMS.find((a) => ALGORITHMS[a].coseId === id) ?? null;
}

/** The algorithm a WebCrypto key (private or public) of this name wraps with, or null. */
export function wrapAlgorithmOfKey(key: CryptoKey): WrapAlgorithm | null {
  return WRAP_ALGORITHMS.find((a) => ALGORITHMS[a].keyName === key.algorithm.name) ?? null;
}

/** The wrapping algorithm for a subscriber certificate's key; throws if it has none. */
export function wrapAlgorithmOfCertificate(cert: CertificateInfo): WrapAlgorithm {
  const name = cert.cert.publicKey.algorithm.name;
  // @peculiar/x509 names an rsaEncryption key by its default use, not "RSA-OAEP", and an
  // X-Wing key (unknown to it) by its object identifier.
  const keyName = name.startsWith("RSA") ? "RSA-OAEP" : name === OID_XWING ? XWING : name;
  const found = WRAP_ALGORITHMS.find((a) => ALGORITHMS[a].keyName === keyName);
  if (!found) throw new SealError(`${cert.id}: no key wrapping for a ${name} key`);
  return found;
}

/**
 * The WebCrypto algorithm to import a subscriber private key of this kind with, or null
 * for X-Wing, which WebCrypto does not have (`xwing.ts` keeps those keys).
 */
export function privateKeyImportParams(algorithm: WrapAlgorithm): {
  params: RsaHashedImportParams | Algorithm;
  usages: KeyUsage[];
} | null {
  switch (algorithm) {
    case "RSA-OAEP-256":
      return { params: { name: "RSA-OAEP", hash: "SHA-256" }, usages: ["decrypt"] };
    case "HPKE-X25519-SHA256-A256GCM":
      return { params: { name: "X25519" }, usages: ["deriveBits"] };
    case "HPKE-XWING-SHA256-A256GCM":
      return null;
  }
}

/** The serialized protected header `{1: alg, -65541: epoch}` of a COSE_recipient. */
function recipientProtected(algorithm: WrapAlgorithm, epoch: bigint): Uint8Array {
  return encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, ALGORITHMS[algorithm].coseId],
      [LABEL_EPOCH, epoch],
    ]),
  );
}

/**
 * Wraps `contentKey` (epoch `epoch`) for a subscriber certificate, with the algorithm its
 * key calls for, into one encodable COSE_recipient.
 */
export async function wrapContentKey(
  subscriber: CertificateInfo,
  epoch: bigint,
  contentKey: Uint8Array,
): Promise<unknown[]> {
  const algorithm = wrapAlgorithmOfCertificate(subscriber);
  const protectedBytes = recipientProtected(algorithm, epoch);
  let out: { ek: Uint8Array | null; ciphertext: Uint8Array };
  try {
    out = await ALGORITHMS[algorithm].wrap(subscriber, protectedBytes, contentKey);
  } catch (e) {
    throw new SealError(`key wrapping for ${subscriber.id} failed: ${(e as Error).message}`);
  }
  const unprotected = new Map<number, unknown>();
  if (out.ek) unprotected.set(LABEL_EK, out.ek);
  return [protectedBytes, unprotected, out.ciphertext];
}

/**
 * Parses one COSE_recipient: an unknown `alg` is `unsupported_algorithm`; an unprotected
 * header other than `{}` or `{-4: bstr}` is `malformed`.
 */
export function parseRecipient(r: unknown): Wrapping {
  if (!Array.isArray(r) || r.length !== 3) throw malformed("COSE_recipient");
  const [p, u, c] = r as unknown[];
  const protectedBytes = asBytes(p);
  const unprotected = asMap(u);
  const ciphertext = asBytes(c);
  if (!protectedBytes || !unprotected || !ciphertext) throw malformed("COSE_recipient");
  let ek: Uint8Array | null = null;
  if (unprotected.size > 0) {
    ek = asBytes(unprotected.get(LABEL_EK));
    if (unprotected.size !== 1 || !ek) throw malformed("COSE_recipient unprotected header");
  }
  const header = asMap(decodeStrict(protectedBytes, "COSE_recipient header"));
  if (!header) throw malformed("COSE_recipient header");
  const algorithm = wrapAlgorithmOf(header.get(LABEL_ALG));
  if (!algorithm) {
    throw new Rejected("unsupported_algorithm", "unsupported key wrapping algorithm");
  }
  const epoch = asUint(header.get(LABEL_EPOCH));
  if (epoch === null) throw malformed("COSE_recipient epoch");
  return { algorithm, epoch, protectedBytes, ek, ciphertext };
}

/**
 * Unwraps one entry with our private key. The entry's algorithm must be our key's
 * (`wrong_key_type`, before the key is touched); an entry whose `ek` does not fit its
 * algorithm is `malformed`; any failed decryption or a result that is not 32 bytes is
 * `decrypt_failed`.
 */
export async function unwrapContentKey(
  identity: UnwrapIdentity,
  w: Wrapping,
  publisher: string,
): Promise<Uint8Array> {
  const ours = wrapAlgorithmOfKey(identity.key);
  if (ours !== w.algorithm) {
    throw new Rejected("wrong_key_type", `a ${ours ?? "foreign"} key cannot open ${w.algorithm}`, {
      publisher,
    });
  }
  let raw: Uint8Array;
  try {
    raw = await ALGORITHMS[w.algorithm].unwrap(identity, w);
  } catch (e) {
    if (e instanceof Rejected) throw e;
    throw new Rejected("decrypt_failed", "key unwrapping failed", { publisher });
  }
  if (raw.length !== KEY_LEN) {
    throw new Rejected("decrypt_failed", "key unwrapping failed", { publisher });
  }
  return raw;
}
