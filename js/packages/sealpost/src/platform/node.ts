/**
 * The primitives on `node:crypto` (Node.js): synchronous one-shot calls, so opening a
 * message makes no thread-pool round trip. The results are plain `Uint8Array`s (never a
 * `Buffer` view into a shared pool).
 */
import * as nodeCrypto from "node:crypto";
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  createSecretKey,
  type KeyObject,
  verify,
} from "node:crypto";
import type { ContentKey, Primitives, VerifyKey } from "../primitives.js";

const TAG_LEN = 16;
const KEY_LEN = 32;

/** A copy of a `Buffer` as a plain `Uint8Array`. */
const plain = (b: Buffer): Uint8Array => new Uint8Array(b);

/**
 * One-shot `crypto.hash` (Node.js 20.12 and later) skips building a `Hash` object per call,
 * which is most of the cost of hashing the small inputs of inclusion paths.
 */
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: "buffer") => Buffer })
  .hash;

/** node:crypto: content keys are `KeyObject`s, verify keys Ed25519 public `KeyObject`s. */
export const nodePrimitives: Primitives = {
  name: "node:crypto",
  async sha256(data) {
    return plain(
      oneShot ? oneShot("sha256", data, "buffer") : createHash("sha256").update(data).digest(),
    );
  },
  async importVerifyKey(spki) {
    const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
    if (key.asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 key");
    return key as unknown as VerifyKey;
  },
  async verifyEd25519(key, signature, data) {
    try {
      return verify(null, data, key as unknown as KeyObject, signature);
    } catch {
      return false;
    }
  },
  async importContentKey(raw) {
    if (raw.length !== KEY_LEN) throw new Error("an AES-256 key is 32 bytes");
    return createSecretKey(raw) as unknown as ContentKey;
  },
  async aesGcmEncrypt(key, iv, aad, plaintext) {
    const cipher = createCipheriv("aes-256-gcm", key as unknown as KeyObject, iv, {
      authTagLength: TAG_LEN,
    });
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
    return plain(body);
  },
  async aesGcmDecrypt(key, iv, aad, ciphertext) {
    if (ciphertext.length < TAG_LEN) throw new Error("ciphertext shorter than its tag");
    const split = ciphertext.length - TAG_LEN;
    const decipher = createDecipheriv("aes-256-gcm", key as unknown as KeyObject, iv, {
      authTagLength: TAG_LEN,
    });
    decipher.setAAD(aad);
    decipher.setAuthTag(ciphertext.subarray(split));
    const out = decipher.update(ciphertext.subarray(0, split));
    // GCM releases no bytes at `final`, which checks the tag (and throws if it is wrong).
    decipher.final();
    return plain(out);
  },
};

/** The implementation `#platform` resolves to in Node.js. */
export const platformPrimitives = nodePrimitives;
