/**
 * The symmetric and verification primitives of the hot paths (opening, sealing), behind
 * one interface with one implementation per platform, chosen once when the package is
 * resolved (package.json `imports`, `#platform`): in Node.js `node:crypto`, whose calls
 * are synchronous (no thread-pool round trip per hash, signature or decryption); elsewhere
 * (browsers) WebCrypto. Both are the platform's own crypto: nothing is hand-written.
 * Private keys (signing, RSA-OAEP unwrapping) stay WebCrypto `CryptoKey`s everywhere.
 */
import { platformPrimitives } from "#platform";

/** An AES-256-GCM content key imported by the platform (opaque: no way to its bytes). */
export interface ContentKey {
  readonly contentKey: unique symbol;
}

/** An Ed25519 public key imported by the platform for verifying (opaque). */
export interface VerifyKey {
  readonly verifyKey: unique symbol;
}

/** What each platform provides. Every method is async, whatever the platform does inside. */
export interface Primitives {
  /** Which implementation this is (`"node:crypto"` or `"webcrypto"`). */
  readonly name: string;
  /** SHA-256 of `data`. */
  sha256(data: Uint8Array): Promise<Uint8Array>;
  /** Imports an Ed25519 SubjectPublicKeyInfo (DER) for `verifyEd25519`; throws if it is not one. */
  importVerifyKey(spki: Uint8Array): Promise<VerifyKey>;
  /** Does `signature` verify over `data`? False (never a throw) for any bad input. */
  verifyEd25519(key: VerifyKey, signature: Uint8Array, data: Uint8Array): Promise<boolean>;
  /** Imports 32 raw bytes as an AES-256-GCM key. */
  importContentKey(raw: Uint8Array): Promise<ContentKey>;
  /** AES-256-GCM with a 16-byte tag appended to the ciphertext. */
  aesGcmEncrypt(
    key: ContentKey,
    iv: Uint8Array,
    aad: Uint8Array,
    plaintext: Uint8Array,
  ): Promise<Uint8Array>;
  /** The plaintext; throws if the tag does not verify (or the input is too short). */
  aesGcmDecrypt(
    key: ContentKey,
    iv: Uint8Array,
    aad: Uint8Array,
    ciphertext: Uint8Array,
  ): Promise<Uint8Array>;
}

/** This platform's primitives. */
export const primitives: Primitives = platformPrimitives;

/** SHA-256 with this platform's primitives. */
export function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return primitives.sha256(bytes);
}
