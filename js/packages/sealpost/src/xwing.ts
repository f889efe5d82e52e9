/**
 * X-Wing subscriber keys (docs/PROTOCOL.md, "Parties and keys" and "Key wrapping"): the
 * hybrid post-quantum KEM (X25519 with ML-KEM-768, draft-connolly-cfrg-xwing-kem) through
 * the maintained `@hpke/hybridkem-x-wing`. Certificates carry the 1,216-byte encapsulation
 * key under id-XWing; the private key file is PKCS#8 version 1 with the same identifier and
 * the 32-byte seed as an inner OCTET STRING (as RFC 8410 does for X25519).
 *
 * WebCrypto has no X-Wing, so the seed cannot live in a non-extractable `CryptoKey` the
 * way RSA and X25519 keys do. What this module does instead (js/README.md and
 * docs/SECURITY.md say what that protects and what not): the seed is kept **encrypted**
 * (AES-256-GCM) under a fresh non-extractable WebCrypto key made for it, and decrypted
 * into a short-lived buffer only for the one unwrapping that needs it, which is wiped
 * afterwards. Stored in IndexedDB, the record holds the non-extractable key and the
 * ciphertext, never the seed.
 */
import { XWing } from "@hpke/hybridkem-x-wing";
import { OneAsymmetricKey } from "@peculiar/asn1-asym-key";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import { buf, equal } from "./bytes.js";
import type { CertificateInfo } from "./certs.js";

/** id-XWing (draft-connolly-cfrg-xwing-kem). */
export const OID_XWING = "1.3.6.1.4.1.62253.25722";
/** The algorithm name an X-Wing key reports (as `@hpke/hybridkem-x-wing` names it). */
export const XWING = "X-Wing";
/** Length of an X-Wing private key (its seed). */
export const XWING_SEED_LEN = 32;
/** Length of an X-Wing public (encapsulation) key. */
export const XWING_PUBLIC_KEY_LEN = 1216;
/** Length of an X-Wing encapsulated key (`enc`): ML-KEM-768 ciphertext and X25519 share. */
export const XWING_ENC_LEN = 1120;

const IV_LEN = 12;
const AAD = new TextEncoder().encode("sealpost X-Wing seed");

/** The X-Wing KEM (one instance: it holds no key). */
export const xwingKem = new XWing();

/** What `XWingPrivateKey` keeps, and what IndexedDB stores for it (structured clone). */
export interface SealedXWingSeed {
  /** Non-extractable AES-256-GCM key, made for this seed only. */
  sealingKey: CryptoKey;
  iv: Uint8Array;
  /** The seed encrypted under `sealingKey` (with its tag). */
  sealedSeed: Uint8Array;
}

/**
 * An X-Wing private key: the seed, encrypted under a non-extractable AES-GCM key. It looks
 * like a `CryptoKey` of algorithm "X-Wing" (so it sits in a `SubscriberIdentity`), is not
 * extractable through this SDK, and opens its seed only inside `withSeed`.
 */
export class XWingPrivateKey implements CryptoKey {
  readonly algorithm: KeyAlgorithm = { name: XWING };
  readonly extractable = false;
  readonly type: KeyType = "private";
  readonly usages: KeyUsage[] = ["deriveBits"];

  private constructor(private readonly sealed: SealedXWingSeed) {}

  /** Seals `seed` (32 bytes) under a fresh non-extractable key, then wipes `seed`. */
  static async fromSeed(seed: Uint8Array): Promise<XWingPrivateKey> {
    try {
      if (seed.length !== XWING_SEED_LEN) throw new Error("an X-Wing seed is 32 bytes");
      const sealingKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
        "encrypt",
        "decrypt",
      ]);
      const iv = crypto.getRandomValues(new Uint8Array(IV_LEN));
      const sealedSeed = new Uint8Array(
        await crypto.subtle.encrypt(
          { name: "AES-GCM", iv: buf(iv), additionalData: buf(AAD) },
          sealingKey,
          buf(seed),
        ),
      );
      return new XWingPrivateKey({ sealingKey, iv, sealedSeed });
    } finally {
      seed.fill(0);
    }
  }

  /** Rebuilds a key from what `toStored` returned (e.g. read back from IndexedDB). */
  static fromStored(stored: SealedXWingSeed): XWingPrivateKey {
    if (
      !(stored.iv instanceof Uint8Array) ||
      !(stored.sealedSeed instanceof Uint8Array) ||
      stored.sealingKey?.extractable !== false
    ) {
      throw new Error("not a stored X-Wing key");
    }
    return new XWingPrivateKey(stored);
  }

  /** The parts to store: the non-extractable key and the encrypted seed, never the seed. */
  toStored(): SealedXWingSeed {
    return { ...this.sealed };
  }

  /** Runs `use` with the seed in a buffer that is wiped when `use` settles. */
  async withSeed<T>(use: (seed: Uint8Array) => Promise<T>): Promise<T> {
    const { sealingKey, iv, sealedSeed } = this.sealed;
    const seed = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buf(iv), additionalData: buf(AAD) },
        sealingKey,
        buf(sealedSeed),
      ),
    );
    try {
      return await use(seed);
    } finally {
      seed.fill(0);
    }
  }
}

/** The X-Wing encapsulation key of a certificate with an id-XWing key; throws otherwise. */
export function xwingPublicKeyBytes(cert: CertificateInfo): Uint8Array {
  const spki = AsnConvert.parse(cert.cert.publicKey.rawData, SubjectPublicKeyInfo);
  const bits = new Uint8Array(spki.subjectPublicKey);
  if (spki.algorithm.algorithm !== OID_XWING || bits.length !== XWING_PUBLIC_KEY_LEN) {
    throw new Error(`${cert.id}: not an X-Wing public key`);
  }
  return bits;
}

/**
 * The seed of an X-Wing PKCS#8 private key (DER); throws for any other key or shape. The
 * caller wipes the result once sealed (`XWingPrivateKey.fromSeed` does).
 */
export function xwingSeedFromPkcs8(der: Uint8Array): Uint8Array {
  const key = AsnConvert.parse(der, OneAsymmetricKey);
  if (key.privateKeyAlgorithm.algorithm !== OID_XWING) throw new Error("not an X-Wing key");
  if (key.privateKeyAlgorithm.parameters) throw new Error("X-Wing keys have no parameters");
  const inner = AsnConvert.parse(key.privateKey, OctetString);
  const seed = new Uint8Array(inner.buffer);
  if (seed.length !== XWING_SEED_LEN) throw new Error("an X-Wing seed is 32 bytes");
  return seed;
}

/** Does `seed` belong to the certificate (its public key is the certificate's)? */
export async function xwingSeedMatches(seed: Uint8Array, cert: CertificateInfo): Promise<boolean> {
  const pair = await xwingKem.generateKeyPairDerand(seed.slice());
  const derived = new Uint8Array(await xwingKem.serializePublicKey(pair.publicKey));
  wipeKem(pair.privateKey);
  return equal(derived, xwingPublicKeyBytes(cert));
}

/** Wipes the bytes `@hpke` keeps inside a key object of its own (not a WebCrypto key). */
export function wipeKem(key: CryptoKey): void {
  const bytes = (key as { key?: unknown }).key;
  if (bytes instanceof Uint8Array) bytes.fill(0);
}
