/**
 * The push demo in a real browser (headless Chromium through playwright-core): a backend
 * POSTs to the REST gateway, which seals with the publisher's identity; the page of
 * reader alice logs in to the KDC (CORS) and shows the plaintext; the page of reader bob,
 * after bob was revoked over the gateway's API, shows the rejection and no plaintext; a
 * `mosquitto_sub -t '#'` spy on the broker sees only ciphertext. Screenshots of both
 * pages are saved in test-artifacts/.
 */
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { eventually } from "../../../packages/sealpost/dist/test/harness.js";
import { post } from "../backend.mjs";
import { startPushStack } from "../stack.mjs";

const artifacts = fileURLToPath(new URL("../test-artifacts/", import.meta.url));
let stack;

after(async () => {
  await stack?.stop();
});

test("a page reads what the backend POSTs; a revoked reader's page shows the rejection", async () => {
  stack = await startPushStack();
  const { gatewayUrl, token, operator, spy, open } = stack;
  const alice = await open("alice");
  const bob = await open("bob");

  await post(gatewayUrl, token, "push/news", "hello readers");
  for (const p of [alice, bob]) {
    await p.waitForFunction(
      () => document.getElementById("messages")?.textContent?.includes("hello readers"),
      null,
      { timeout: 20_000 },
    );
  }

  // The operator revokes bob; the key rotates; bob's page can no longer read.
  const revoked = await fetch(`${gatewayUrl}/v1/readers/bob`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${operator}` },
  });
  assert.equal(revoked.status, 200, await revoked.text());
  await post(gatewayUrl, token, "push/news", "after bob left");
  await alice.waitForFunction(
    () => document.getElementById("messages")?.textContent?.includes("after bob left"),
    null,
    { timeout: 20_000 },
  );
  await bob.waitForFunction(
    () => document.getElementById("rejections")?.textContent?.includes("push/news: unknown_key"),
    null,
    { timeout: 20_000 },
  );
  assert.ok(
    !(await bob.textContent("#messages")).includes("after bob left"),
    "bob read nothing after his revocation",
  );
  assert.match(
    await bob.textContent("#rejections"),
    /revoked/,
    "the KDC refused bob's key fetch as revoked",
  );

  await mkdir(artifacts, { recursive: true });
  await alice.screenshot({ path: join(artifacts, "alice.png") });
  await bob.screenshot({ path: join(artifacts, "bob.png") });

  // The broker forwarded both envelopes, and not one byte of plaintext.
  await eventually(
    () => (spy.stdout().match(/^push\/news /gm) ?? []).length >= 2,
    "the spy's copies",
  );
  assert.ok(!spy.stdout().includes("hello readers"));
  assert.ok(!spy.stdout().includes("after bob left"));
});
