/**
 * The SDK unchanged in headless Chromium (Debian's, through playwright-core): the
 * subscriber key imported once as a non-extractable CryptoKey into IndexedDB, then, after
 * a reload, the PROTOCOL.md vector key message and envelope opened with the browser's own
 * WebCrypto; the replay window persisted in IndexedDB refuses the envelope after another
 * reload. The X25519 (HPKE) subscriber key is kept and used the same way; the X-Wing key,
 * which WebCrypto cannot hold, is kept as its seed encrypted under a non-extractable
 * AES-GCM key, and opens the xwing vector after the reload.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, test } from "node:test";
import { type BundledPage, openBundledPage } from "./chromium.js";
import { readVectors } from "./vectors.js";

let chromium: BundledPage | undefined;

after(async () => {
  await chromium?.close();
});

test("the SDK opens the vectors in Chromium with a non-extractable key from IndexedDB", async () => {
  chromium = await openBundledPage(join("test", "browserEntry.ts"));
  const { page } = chromium;
  const load = () => (chromium as BundledPage).load(() => typeof window.openVectors === "function");
  const v = Object.fromEntries(readVectors());
  await load();
  await page.evaluate(
    ([c, k]) => window.importIdentity(c as string, k as string),
    [v.subscriber_certificate, v.subscriber_private_key_pkcs8],
  );
  await page.evaluate(
    ([c, k]) => window.importIdentity(c as string, k as string),
    [v.hpke_subscriber_certificate, v.hpke_subscriber_private_key_pkcs8],
  );
  await page.evaluate(
    ([c, k]) => window.importIdentity(c as string, k as string),
    [v.xwing_subscriber_certificate, v.xwing_subscriber_private_key_pkcs8],
  );
  await load(); // a later visit: the key bytes are gone, the CryptoKey is in IndexedDB
  const first = await page.evaluate((vv) => window.openVectors(vv), v);
  const burstSize = Number(v.burst_size);
  assert.deepEqual(first, {
    burst: Array.from({ length: burstSize }, (_, i) => v[`burst_plaintext_${i}`]),
    extractable: false,
    exportRefused: true,
    epochs: [v.epoch],
    plaintext: v.plaintext,
    primitives: "webcrypto",
    rejected: null,
  });
  // HPKE in the browser: X25519 through Chromium's WebCrypto, the key from IndexedDB; X-Wing
  // through @hpke's X-Wing in the page, its seed decrypted from IndexedDB for the unwrap.
  for (const [prefix, id, algorithm] of [
    ["hpke", "vector-sub-x", "X25519"],
    ["xwing", "vector-sub-w", "X-Wing"],
  ]) {
    assert.deepEqual(
      await page.evaluate(
        ([vv, p, i]) =>
          window.acceptHpkeVector(vv as Record<string, string>, p as string, i as string),
        [v, prefix, id] as const,
      ),
      {
        algorithm,
        extractable: false,
        exportRefused: true,
        keyBytesInStore: false,
        epochs: [v.epoch],
        plaintext: v.plaintext,
      },
    );
  }
  await load();
  const again = await page.evaluate((vv) => window.openVectors(vv), v);
  assert.equal(again.plaintext, null);
  assert.equal(again.rejected, "replayed", "the window persisted in IndexedDB");
  assert.deepEqual(again.burst, Array(burstSize).fill("replayed"));
});
