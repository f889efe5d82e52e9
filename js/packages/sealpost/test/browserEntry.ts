/**
 * Bundled (esbuild) into the page that browser.test.ts opens in headless Chromium: the
 * same SDK code as in Node.js, run by the browser's own WebCrypto and IndexedDB.
 */

import { fromHex } from "../src/bytes.js";
import {
  IndexedDbReplayStore,
  loadStoredIdentity,
  loadSubscriberIdentity,
  Opener,
  primitives,
  Rejected,
  ReplayWindows,
  storeIdentity,
  toHex,
  Verifier,
} from "../src/index.js";

declare global {
  interface Window {
    importIdentity: (cert: string, pkcs8: string) => Promise<void>;
    openVectors: (v: Record<string, string>) => Promise<Record<string, unknown>>;
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
