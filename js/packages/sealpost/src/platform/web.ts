/** The primitives on WebCrypto (browsers; any platform without `node:crypto`). */
import { buf } from "../bytes.js";
import type { ContentKey, Primitives, VerifyKey } from "../primitives.js";

const subtle = () => globalThis.crypto.subtle;

/** WebCrypto: every call is asynchronous; content keys are non-extractable `CryptoKey`s. */
export const webPrimitives: Primitives = {
  name: "webcrypto",
  async sha256(data) {
    return new Uint8Array(await subtle().digest("SHA-256", buf(data)));
  },
  async importVerifyKey(spki) {
    const key = await subtle().importKey("spki", buf(spki), { name: "Ed25519" }, false, ["verify"]);
    return key as unknown as VerifyKey;
  },
  async verifyEd25519(key, signature, data) {
    try {
      return await subtle().verify(
        "Ed25519",
        key as unknown as CryptoKey,
        buf(signature),
        buf(data),
      );
    } catch {
      return false;
    }
  },
  async importContentKey(raw) {
    const key = await subtle().importKey("raw", buf(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
    return key as unknown as ContentKey;
  },
  async aesGcmEncrypt(key, iv, aad, plaintext) {
    const params = { name: "AES-GCM", iv: buf(iv), additionalData: buf(aad), tagLength: 128 };
    const out = await subtle().encrypt(params, key as unknown as CryptoKey, buf(plaintext));
    return new Uint8Array(out);
  },
  async aesGcmDecrypt(key, iv, aad, ciphertext) {
    const params = { name: "AES-GCM", iv: buf(iv), additionalData: buf(aad), tagLength: 128 };
    const out = await subtle().decrypt(params, key as unknown as CryptoKey, buf(ciphertext));
    return new Uint8Array(out);
  },
};

/** The implementation `#platform` resolves to outside Node.js. */
export const platformPrimitives = webPrimitives;
