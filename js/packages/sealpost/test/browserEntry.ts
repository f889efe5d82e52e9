/**
 * Bundled (esbuild) into the page that browser.test.ts opens in headless Chromium: the
 * same SDK code as in Node.js, run by the browser's own WebCrypto and IndexedDB.
 */

import { fromHex } from "../src/bytes.js";
import {
  IndexedDbReplayStore,
  idbGet,
  loadStoredIdentity,
  loadSubscriberIdentity,
  Opener,
  primitives,
  Rejected,
  ReplayWindows,
  storeIdentity,
  toHex,
  Verifier,
  XWingPrivateKey,
} from "../src/index.js";

declare global {
  interface Window {
    importIdentity: (cert: string, pkcs8: string) => Promise<void>;
    openVectors: (v: Record<string, string>) => Promise<Record<string, unknown>>;
    acceptHpkeVector: (
      v: Record<string, string>,
      prefix: string,
      id: string,
    ) => Promise<Record<string, unknown>>;
  }
}

/** First visit: import the PKCS#8 key once, non-extractable, into IndexedDB. */
window.importIdentity = async (cert, pkcs8) => {
  await storeIdentity(await loadSubscriberIdentity(fromHex(cert), fromHex(pkcs8)));
};

/** Later visit: the key from IndexedDB only; open the vectors; persist the window. */
window.openVectors = async (v) => {
  const identity = await loadStoredIdentity("vector-sub");
  if (!identity) throw new Error("no stored identity");
  let exportRefused = false;
  try {
    await crypto.subtle.exportKey("pkcs8", identity.key);
  } catch {
    exportRefused = true;
  }
  const at = Number(v.published_at) + 60;
  const store = new IndexedDbReplayStore("vector-sub");
  const saved = await store.load();
  const opener = new Opener({
    verifier: await Verifier.create(fromHex(v.ca_certificate as string)),
    identity,
    replay: saved === null ? new ReplayWindows() : ReplayWindows.fromJSON(saved),
  });
  const update = await opener.acceptKeyMessage(
    v.key_message_topic as string,
    fromHex(v.key_message as string),
    at,
  );
  let plaintext: string | null = null;
  let rejected: string | null = null;
  try {
    const opened = await opener.open(v.topic as string, fromHex(v.envelope as string), at);
    plaintext = toHex(opened.payload);
  } catch (e) {
    rejected = e instanceof Rejected ? e.kind : String(e);
  }
  // The version 2 burst: inclusion proofs hashed by the browser's SHA-256.
  const burst: string[] = [];
  for (let i = 0; i < Number(v.burst_size); i++) {
    try {
      const topic = v[`burst_topic_${i}`] as string;
      const opened = await opener.open(topic, fromHex(v[`burst_envelope_${i}`] as string), at);
      burst.push(toHex(opened.payload));
    } catch (e) {
      burst.push(e instanceof Rejected ? e.kind : String(e));
    }
  }
  await store.save(opener.replay.toJSON());
  return {
    burst,
    extractable: identity.key.extractable,
    exportRefused,
    epochs: update.newEpochs.map(String),
    plaintext,
    primitives: primitives.name,
    rejected,
  };
};

/**
 * Later visit: an HPKE key (X25519, or X-Wing: `prefix` "hpke" or "xwing") from IndexedDB
 * only; the `<prefix>` vector key message. For X-Wing, whose key WebCrypto cannot hold,
 * the record must hold the seed only encrypted, under a key the page cannot export.
 */
window.acceptHpkeVector = async (v, prefix, id) => {
  const identity = await loadStoredIdentity(id);
  if (!identity) throw new Error(`no stored identity ${id}`);
  const key = identity.key;
  const exportable = key instanceof XWingPrivateKey ? key.toStored().sealingKey : key;
  let exportRefused = false;
  try {
    await crypto.subtle.exportKey(key instanceof XWingPrivateKey ? "raw" : "pkcs8", exportable);
  } catch {
    exportRefused = true;
  }
  const record = JSON.stringify(await idbGet("sealpost", `identity-${id}`), (_k, value) =>
    value instanceof Uint8Array ? toHex(value) : value,
  );
  const pkcs8 = v[`${prefix}_subscriber_private_key_pkcs8`] as string;
  const opener = new Opener({
    verifier: await Verifier.create(fromHex(v.ca_certificate as string)),
    identity,
  });
  const at = Number(v.published_at) + 60;
  const update = await opener.acceptKeyMessage(
    v[`${prefix}_key_message_topic`] as string,
    fromHex(v[`${prefix}_key_message`] as string),
    at,
  );
  const opened = await opener.open(v.topic as string, fromHex(v.envelope as string), at);
  return {
    algorithm: key.algorithm.name,
    extractable: key.extractable,
    exportRefused,
    // The private key's last 32 bytes (the X25519 scalar, the X-Wing seed) in the record.
    keyBytesInStore: record.includes(pkcs8.slice(-64)),
    epochs: update.newEpochs.map(String),
    plaintext: toHex(opened.payload),
  };
};
