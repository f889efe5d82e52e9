/**
 * The push demo in a real browser (headless Chromium through playwright-core): a backend
 * POSTs to the REST gateway, which seals with the publisher's identity; the page of
 * reader alice logs in to the KDC (CORS) and shows the plaintext; the page of reader bob,
 * after bob was revoked over the gateway's API, shows the rejection and no plaintext; a
 * `mosquitto_sub -t '#'` spy on the broker sees only ciphertext. Screenshots of both
 * pages are saved in test-artifacts/.
 */
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import {
  cli,
  eventually,
  freePort,
  issue,
  makePki,
  rustBin,
  start,
  startMosquitto,
  waitForPort,
} from "../../../packages/sealpost/dist/test/harness.js";
import { post } from "../backend.mjs";
import { servePage } from "../server.mjs";

const artifacts = fileURLToPath(new URL("../test-artifacts/", import.meta.url));
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const running = [];
let browser;

after(async () => {
  await browser?.close();
  for (const r of running.reverse()) await r.stop();
});

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo: Chromium's SPKI pin. */
function spkiPin(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

test("a page reads what the backend POSTs; a revoked reader's page shows the rejection", async () => {
  const pki = await makePki("push");
  await issue(pki, "publisher", "web-pub", ["--topics", "push/#"]);
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  const mosquitto = await startMosquitto(pki.dir);
  running.push(mosquitto);
  const state = join(pki.dir, "state");
  const [gatewayPort, kdcPort, pagePort] = [await freePort(), await freePort(), await freePort()];
  const origin = `http://127.0.0.1:${pagePort}`;
  const kdcAddress = `https://127.0.0.1:${kdcPort}`;

  const token = (
    await cli("sealpost-gateway", [
      "token",
      "add",
      "backend",
      "--topics",
      "push/#",
      "--state-dir",
      state,
    ])
  ).trim();
  const operator = (
    await cli("sealpost-gateway", ["token", "add", "ops", "--operator", "--state-dir", state])
  ).trim();
  const gateway = start(rustBin("sealpost-gateway"), [
    "serve",
    "--http",
    `127.0.0.1:${gatewayPort}`,
    "-L",
    mosquitto.url,
    "--cert",
    pki.path("web-pub.pem"),
    "--key",
    pki.path("web-pub.key"),
    "--cafile",
    pki.path("ca.pem"),
    "--crl",
    pki.path("crl.pem"),
    "--state-dir",
    state,
    "--kdc",
    `127.0.0.1:${kdcPort}`,
    "--kdc-cert",
    pki.path("127.0.0.1.pem"),
    "--kdc-key",
    pki.path("127.0.0.1.key"),
    "--kdc-only",
    "--kdc-allow-origin",
    origin,
  ]);
  running.push(gateway);
  await waitForPort(gatewayPort);
  await waitForPort(kdcPort);
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;

  const config = async (reader) => {
    const file = join(pki.dir, `${reader}.json`);
    await cli("sealpost-pub", [
      "kdc",
      "add-reader",
      reader,
      "-o",
      file,
      "--state-dir",
      state,
      "--kdc-cert",
      pki.path("127.0.0.1.pem"),
      "--kdc-address",
      kdcAddress,
    ]);
    return {
      broker: mosquitto.wsUrl,
      topics: ["push/#"],
      ca: await pki.read("ca.pem"),
      crl: await pki.read("crl.pem"),
      credentials: JSON.parse(await readFile(file, "utf8")),
      holdMs: 3000,
    };
  };
  const page = await servePage(
    { alice: await config("alice"), bob: await config("bob") },
    pagePort,
  );
  running.push({ stop: () => new Promise((r) => page.close(() => r())) });

  // The spy: a plain MQTT client on '#', holding no keys.
  const spy = start("mosquitto_sub", [
    "-h",
    "127.0.0.1",
    "-p",
    String(new URL(mosquitto.url).port),
    "-t",
    "#",
    "-v",
  ]);
  running.push(spy);

  // Chromium trusts the KDC's certificate by its key only (it is not in its trust store).
  const kdcKey = spkiPin(await pki.read("127.0.0.1.pem"));
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [...CHROMIUM_FLAGS, `--ignore-certificate-errors-spki-list=${kdcKey}`],
  });
  const open = async (reader) => {
    const context = await browser.newContext();
    const p = await context.newPage();
    p.on(
      "console",
      (m) => process.env.SEALPOST_TEST_DEBUG && console.error(`${reader}: ${m.text()}`),
    );
    await p.goto(`${origin}/?reader=${reader}`);
    await p.waitForFunction(
      () => document.getElementById("status")?.textContent === "subscribed",
      null,
      { timeout: 20_000 },
    );
    return p;
  };
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
