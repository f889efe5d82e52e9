/**
 * The TS publisher's KDC (key-delivery mode 2 from Node.js, as `sealpost-pub --kdc`):
 * read by the Rust subscriber (`sealpost-sub --kdc-credentials`) through the sealpost
 * broker and Mosquitto, and by the TS subscriber; every answer of the HTTP API and its
 * error codes; CORS for configured origins only; a revoked reader gets nothing more.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import {
  FileReplayStore,
  type KdcCredentials,
  loadPublisherIdentity,
  type Message,
  nodeKdcTransport,
  Publisher,
  type PublisherKdcOptions,
  type Rejection,
  Subscriber,
} from "../src/node.js";
import {
  type Broker,
  cli,
  eventually,
  issue,
  makePki,
  type Pki,
  startMosquitto,
  startSealpost,
} from "./harness.js";

let pki: Pki;
const brokers: Broker[] = [];
const PAGE = "http://127.0.0.1:5555";

before(async () => {
  pki = await makePki("tskdc");
  await issue(pki, "publisher", "kpub", ["--topics", "kdc/#"]);
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  brokers.push(await startSealpost(pki), await startMosquitto(pki.dir));
});

after(async () => {
  for (const b of brokers) await b.stop();
});

/** A TS publisher with a KDC on a free loopback port, on `broker`. */
async function kdcPublisher(
  broker: Broker,
  name: string,
  kdc: Partial<PublisherKdcOptions> = {},
): Promise<Publisher> {
  return Publisher.start({
    url: broker.url,
    mqtt: { clientId: `kpub-${name}` },
    identity: await loadPublisherIdentity(await pki.read("kpub.pem"), await pki.read("kpub.key")),
    caCertificate: await pki.read("ca.pem"),
    crl: await pki.read("crl.pem"),
    stateDir: join(pki.dir, `state-${name}`),
    kdc: {
      listen: "127.0.0.1:0",
      cert: await pki.read("127.0.0.1.pem"),
      key: await pki.read("127.0.0.1.key"),
      only: true,
      ...kdc,
    },
  });
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown> | null;
}

/** One HTTPS request to the KDC, trusting the sealpost CA only. */
async function call(
  url: string,
  method: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  const ca = await pki.read("ca.pem");
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> | null = null;
        try {
          json = text ? (JSON.parse(text) as Record<string, unknown>) : null;
        } catch {
          json = null;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const login = (kdc: string, reader: string, password: string) =>
  call(
    `${kdc}/login`,
    "POST",
    { "Content-Type": "application/json" },
    JSON.stringify({ reader, password }),
  );

for (const brokerName of ["sealpost", "mosquitto"]) {
  test(`TS publisher's KDC -> Rust subscriber (through ${brokerName})`, async () => {
    const broker = brokers.find((b) => b.name === brokerName) as Broker;
    const publisher = await kdcPublisher(broker, `rust-${brokerName}`);
    try {
      const credentials = await publisher.addReader("rreader");
      assert.equal(credentials.kdc, publisher.kdcAddress);
      assert.match(credentials.kdc, /^https:\/\/127\.0\.0\.1:\d+$/);
      const file = join(pki.dir, `rreader-${brokerName}.json`);
      await writeFile(file, JSON.stringify(credentials), { mode: 0o600 });
      await publisher.publish("kdc/rust", "through the TS KDC", { retain: true });
      const out = await cli("sealpost-sub", [
        "-L",
        broker.url,
        "--kdc-credentials",
        file,
        "--cafile",
        pki.path("ca.pem"),
        "--crl",
        pki.path("crl.pem"),
        "-t",
        "kdc/rust",
        "-C",
        "1",
        "-W",
        "30",
        "--state-dir",
        join(pki.dir, `sub-rreader-${brokerName}`),
      ]);
      assert.equal(out.trim(), "through the TS KDC");
    } finally {
      await publisher.close();
    }
  });
}

describe("the TS KDC", () => {
  let publisher: Publisher;
  let kdc: string;
  let alice: KdcCredentials;
  let n = 0;

  // A fresh publisher and KDC per test: failed logins (revoked ones count) stay apart.
  beforeEach(async () => {
    n += 1;
    publisher = await kdcPublisher(brokers[1] as Broker, `api-${n}`, { allowOrigins: [PAGE] });
    kdc = publisher.kdcAddress as string;
    alice = await publisher.addReader("alice");
  });

  afterEach(async () => {
    await publisher.close();
  });

  test("a TS subscriber reads through it, and a revoked reader reads nothing more", async () => {
    const broker = brokers[1] as Broker;
    const sub = await Subscriber.connect({
      url: broker.url,
      mqtt: { clientId: "ts-kdc-reader" },
      topics: ["kdc/ts"],
      caCertificate: await pki.read("ca.pem"),
      crl: await pki.read("crl.pem"),
      kdc: [alice],
      kdcTransport: nodeKdcTransport(await pki.read("ca.pem")),
      replayStore: new FileReplayStore(join(pki.dir, "replay-ts-kdc.json")),
      holdMs: 3000,
    });
    const messages: Message[] = [];
    const rejections: Rejection[] = [];
    sub.on("message", (m) => messages.push(m));
    sub.on("rejected", (r) => rejections.push(r));
    try {
      await publisher.publish("kdc/ts", "one");
      await eventually(() => messages.length === 1, "the first message");
      const bob = await publisher.addReader("bob"); // still granted: the epoch moves on
      await publisher.revoke("alice");
      assert.deepEqual(publisher.readers(), ["bob"]);
      await publisher.publish("kdc/ts", "two");
      await eventually(() => rejections.length === 1, "the revoked reader's rejection");
      assert.equal(rejections[0]?.kind, "unknown_key");
      assert.deepEqual(
        messages.map((m) => new TextDecoder().decode(m.payload)),
        ["one"],
      );
      assert.equal((await login(kdc, "alice", alice.password)).json?.error, "revoked");
      assert.equal((await login(kdc, "bob", bob.password)).status, 200);
    } finally {
      await sub.close();
    }
  });

  test("login, key fetch and every refusal answer as PROTOCOL.md says", async () => {
    const carol = await publisher.addReader("carol");
    const ok = await login(kdc, "carol", carol.password);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers["cache-control"], "no-store");
    assert.equal(ok.json?.token_type, "Bearer");
    assert.equal(ok.json?.expires_in, 300);
    const token = ok.json?.access_token as string;
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const bearer = { Authorization: `Bearer ${token}` };
    const epoch = publisher.currentEpoch;
    const key = await call(`${kdc}/epochs/${epoch}`, "GET", bearer);
    assert.equal(key.status, 200);
    assert.equal(key.json?.publisher, "kpub");
    assert.equal(key.json?.epoch, Number(epoch));
    assert.equal(Buffer.from(key.json?.key as string, "base64url").length, 32);
    const cases: [Promise<Answer>, number, string][] = [
      [login(kdc, "carol", "wrong"), 401, "invalid_credentials"],
      [login(kdc, "nobody", carol.password), 401, "invalid_credentials"],
      [call(`${kdc}/login`, "POST", {}, "not json"), 400, "bad_request"],
      [login(kdc, "x".repeat(129), "p"), 400, "bad_request"],
      [call(`${kdc}/login`, "POST", {}, "x".repeat(5000)), 413, "too_large"],
      [call(`${kdc}/login`, "GET"), 405, "method_not_allowed"],
      [call(`${kdc}/elsewhere`, "GET"), 404, "not_found"],
      [call(`${kdc}/epochs/${epoch}`, "GET"), 401, "invalid_token"],
      [
        call(`${kdc}/epochs/${epoch}`, "GET", { Authorization: "Bearer forged" }),
        401,
        "invalid_token",
      ],
      [call(`${kdc}/epochs/seven`, "GET", bearer), 400, "bad_request"],
      [call(`${kdc}/epochs/${epoch - 1n}`, "GET", bearer), 403, "not_granted"],
      [call(`${kdc}/epochs/${epoch + 100n}`, "GET", bearer), 404, "unknown_epoch"],
    ];
    for (const [answer, status, error] of cases) {
      const a = await answer;
      assert.equal(a.status, status, `${error}: ${JSON.stringify(a.json)}`);
      assert.equal(a.json?.error, error);
      assert.equal(typeof a.json?.message, "string");
      assert.ok(!JSON.stringify(a.json).includes(carol.password), "no password in errors");
    }
    const noToken = await call(`${kdc}/epochs/${epoch}`, "GET");
    assert.equal(noToken.headers["www-authenticate"], 'Bearer error="invalid_token"');
    // Credentials issued again: the old token dies with the old password.
    const again = await publisher.addReader("carol");
    assert.notEqual(again.password, carol.password);
    const old = await call(`${kdc}/epochs/${epoch}`, "GET", bearer);
    assert.equal(old.json?.error, "invalid_token");
    assert.equal((await login(kdc, "carol", carol.password)).status, 401);
    assert.equal((await login(kdc, "carol", again.password)).status, 200);
  });

  test("CORS: the configured origin only, never a wildcard or credentials", async () => {
    const preflight = (origin: string) =>
      call(`${kdc}/login`, "OPTIONS", {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
      });
    const allowed = await preflight(PAGE);
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers["access-control-allow-origin"], PAGE);
    assert.equal(allowed.headers["access-control-allow-methods"], "GET, POST");
    assert.equal(allowed.headers["access-control-allow-headers"], "authorization, content-type");
    assert.equal(allowed.headers["access-control-max-age"], "600");
    assert.equal(allowed.headers["access-control-allow-credentials"], undefined);
    const other = await preflight("http://evil.example");
    assert.equal(other.status, 405);
    assert.equal(other.json?.error, "method_not_allowed");
    assert.equal(other.headers["access-control-allow-origin"], undefined);
    const bob = await publisher.addReader("bob"); // new password for this test
    const fromPage = await call(
      `${kdc}/login`,
      "POST",
      { Origin: PAGE, "Content-Type": "application/json" },
      JSON.stringify({ reader: "bob", password: bob.password }),
    );
    assert.equal(fromPage.status, 200);
    assert.equal(fromPage.headers["access-control-allow-origin"], PAGE);
    assert.equal(fromPage.headers.vary, "Origin");
    const fromOther = await call(`${kdc}/elsewhere`, "GET", { Origin: "http://evil.example" });
    assert.equal(fromOther.headers["access-control-allow-origin"], undefined);
    assert.equal(fromOther.headers.vary, "Origin");
    for (const bad of ["*", "null", "http://127.0.0.1:5555/path", "ftp://x"]) {
      await assert.rejects(
        kdcPublisher(brokers[1] as Broker, "bad-origin", { allowOrigins: [bad] }),
        /origin/,
        bad,
      );
    }
  });

  test("failed logins are limited per address: 5 a minute, then 429 with Retry-After", async () => {
    const tries = await Promise.all(Array.from({ length: 7 }, () => login(kdc, "alice", "bad")));
    const statuses = tries.map((t) => t.status).sort();
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429]);
    const limited = await login(kdc, "alice", alice.password);
    assert.equal(limited.status, 429, "even the right password waits");
    assert.equal(limited.json?.error, "rate_limited");
    assert.ok(Number(limited.headers["retry-after"]) > 0);
  });
});
