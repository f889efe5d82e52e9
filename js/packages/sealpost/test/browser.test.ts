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
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { readVectors } from "./vectors.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
let browser: Browser | undefined;
let close: (() => void) | undefined;

after(async () => {
  await browser?.close();
  close?.();
});

test("the SDK opens the vectors in Chromium with a non-extractable key from IndexedDB", async () => {
  const bundle = join(root, "dist", "test", "browser.bundle.js");
  execFileSync("npx", [
    "esbuild",
    join(root, "test", "browserEntry.ts"),
    "--bundle",
    "--format=esm",
    "--platform=browser",
    "--target=es2022",
    `--outfile=${bundle}`,
    "--log-level=warning",
  ]);
  const js = readFileSync(bundle);
  const server = createServer((req, res) => {
    res.setHeader("Content-Type", req.url === "/t.js" ? "text/javascript" : "text/html");
    res.end(
      req.url === "/t.js" ? js : '<!doctype html><script type="module" src="/t.js"></script>',
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  close = () => server.close();
  const address = server.address();
  const url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`;
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page: Page = await (await browser.newContext()).newPage();
  const load = async () => {
    await page.goto(url);
    await page.waitForFunction(() => typeof window.openVectors === "function");
  };
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
  // HPKE in the browser: X25519 through Chromium's WebCrypto, the key from IndexedDB.
  assert.deepEqual(
    await page.evaluate(
      ([vv]) => window.acceptHpkeVector(vv as Record<string, string>, "hpke", "vector-sub-x"),
      [v],
    ),
    {
      algorithm: "X25519",
      extractable: false,
      exportRefused: true,
      keyBytesInStore: false,
      epochs: [v.epoch],
      plaintext: v.plaintext,
    },
  );
  // X-Wing: @hpke's X-Wing in the page, the seed decrypted from IndexedDB for the unwrap.
  assert.deepEqual(
    await page.evaluate(
      ([vv]) => window.acceptHpkeVector(vv as Record<string, string>, "xwing", "vector-sub-w"),
      [v],
    ),
    {
      algorithm: "X-Wing",
      extractable: false,
      exportRefused: true,
      keyBytesInStore: false,
      epochs: [v.epoch],
      plaintext: v.plaintext,
    },
  );
  await load();
  const again = await page.evaluate((vv) => window.openVectors(vv), v);
  assert.equal(again.plaintext, null);
  assert.equal(again.rejected, "replayed", "the window persisted in IndexedDB");
  assert.deepEqual(again.burst, Array(burstSize).fill("replayed"));
});
