/**
 * The whole push stack on loopback, for the demo's test and its latency benchmark: a PKI
 * from `sealpost-certs`, Mosquitto (TCP and WebSocket), `sealpost-gateway` with a KDC
 * that allows the page's origin, KDC readers alice and bob, the page server, a
 * `mosquitto_sub -t '#'` spy, and headless Chromium (Debian's, through playwright-core).
 */
import { createHash, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  cli,
  freePort,
  issue,
  makePki,
  rustBin,
  start,
  startMosquitto,
  waitForPort,
} from "../../packages/sealpost/dist/test/harness.js";
import { servePage } from "./server.mjs";

/** The flags headless Chromium needs here (no network chatter on a closed network). */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo: Chromium's SPKI pin. */
function spkiPin(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** Starts everything; `stack.stop()` ends it all. */
export async function startPushStack() {
  const stack = {
    running: [],
    browser: null,
    async stop() {
      await stack.browser?.close();
      for (const r of stack.running.reverse()) await r.stop();
    },
  };

  const pki = await makePki("push");
  await issue(pki, "publisher", "web-pub", ["--topics", "push/#"]);
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  const mosquitto = await startMosquitto(pki.dir);
  stack.running.push(mosquitto);
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
  stack.running.push(gateway);
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
  stack.running.push({ stop: () => new Promise((r) => page.close(() => r())) });

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
  stack.running.push(spy);

  // Chromium trusts the KDC's certificate by its key only (it is not in its trust store).
  const kdcKey = spkiPin(await pki.read("127.0.0.1.pem"));
  stack.browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [...CHROMIUM_FLAGS, `--ignore-certificate-errors-spki-list=${kdcKey}`],
  });
  const open = async (reader) => {
    const context = await stack.browser.newContext();
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
  return Object.assign(stack, { gatewayUrl, token, operator, spy, open });
}
