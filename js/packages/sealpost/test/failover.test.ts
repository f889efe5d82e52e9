/**
 * Failover (issue 19 item 1, the TypeScript SDK): the backoff policy and the resend window
 * offline, then live with two real brokers (two Mosquitto processes that know nothing of
 * each other): the broker both the publisher and the subscriber use is killed (SIGKILL)
 * in the middle of a QoS 1 stream; both go on through the second broker, the publisher
 * publishes its key message there again and sends its recent envelopes again, and the
 * application receives every message exactly once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  Backoff,
  FIRST_PAUSE_MS,
  FileReplayStore,
  Link,
  LONGEST_PAUSE_MS,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  type Message,
  Publisher,
  Recent,
  type Rejection,
  Subscriber,
} from "../src/node.js";
import {
  type Broker,
  eventually,
  freePort,
  issue,
  makePki,
  type Pki,
  sleep,
  startMosquitto,
} from "./harness.js";

test("backoff: equal jitter, doubling from 0.5 s to 30 s, reset by a connection", () => {
  const low = new Backoff(() => 0);
  const high = new Backoff(() => 0.999999);
  const steps = Array.from({ length: 9 }, (): [number, number] => [low.failed(), high.failed()]);
  const expected = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  for (const [i, [lo, hi]] of steps.entries()) {
    const step = expected[i] as number;
    assert.equal(lo, step / 2, `lowest pause of step ${i}`);
    assert.ok(hi < step && hi > step * 0.99, `highest pause of step ${i}: ${hi}`);
  }
  assert.equal(expected.at(-1), LONGEST_PAUSE_MS);
  low.connected();
  assert.equal(low.failed(), FIRST_PAUSE_MS / 2, "back to the start after a connection");
  // Math.random: every pause within [step/2, step].
  const real = new Backoff();
  for (const step of expected) {
    const p = real.failed();
    assert.ok(p >= step / 2 && p <= step, `${p} within [${step / 2}, ${step}]`);
  }
});

test("the resend window keeps the last envelopes, oldest first, bounded", () => {
  const r = new Recent(3);
  for (let i = 0; i < 10; i++) {
    r.push({ topic: `t/${i}`, envelope: new Uint8Array([i]), retain: false });
  }
  assert.deepEqual(
    r.snapshot().map((s) => s.topic),
    ["t/7", "t/8", "t/9"],
  );
  const none = new Recent(0);
  none.push({ topic: "t", envelope: new Uint8Array(1), retain: false });
  assert.deepEqual(none.snapshot(), []);
  const big = new Recent(10);
  const eight = new Uint8Array(8 * 1024 * 1024);
  for (let i = 0; i < 3; i++) big.push({ topic: `b/${i}`, envelope: eight, retain: false });
  assert.deepEqual(
    big.snapshot().map((s) => s.topic),
    ["b/1", "b/2"],
    "at most 16 MiB kept",
  );
});

test("a first connection that fails is reported at once, with no retry", async () => {
  const port = await freePort(); // nothing listens there
  await assert.rejects(Link.connect([`mqtt://127.0.0.1:${port}`], { connectTimeout: 5000 }));
});

describe("two brokers", () => {
  let pki: Pki;
  const brokers: Broker[] = [];

  before(async () => {
    pki = await makePki("failover");
    await issue(pki, "publisher", "fpub", ["--topics", "failover/#"]);
    await issue(pki, "subscriber", "fsub");
    brokers.push(await startMosquitto(pki.dir), await startMosquitto(pki.dir));
  });

  after(async () => {
    for (const b of brokers) await b.stop();
  });

  test("a broker killed mid-stream: both fail over, every message reaches the application once", async () => {
    const [a, b] = brokers as [Broker, Broker];
    const urls = [a.url, b.url];
    const sub = await Subscriber.connect({
      url: urls,
      mqtt: { clientId: "failover-sub" },
      topics: ["failover/#"],
      caCertificate: await pki.read("ca.pem"),
      crl: await pki.read("crl.pem"),
      identity: await loadSubscriberIdentity(
        await pki.read("fsub.pem"),
        await pki.read("fsub.key"),
      ),
      replayStore: new FileReplayStore(join(pki.dir, "replay-failover.json")),
      holdMs: 10_000,
    });
    const messages: Message[] = [];
    const rejections: Rejection[] = [];
    const subEvents: string[] = [];
    sub.on("message", (m) => messages.push(m));
    sub.on("rejected", (r) => rejections.push(r));
    sub.on("reconnected", (url) => subEvents.push(url));
    const publisher = await Publisher.start({
      url: urls,
      mqtt: { clientId: "failover-pub" },
      identity: await loadPublisherIdentity(await pki.read("fpub.pem"), await pki.read("fpub.key")),
      caCertificate: await pki.read("ca.pem"),
      crl: await pki.read("crl.pem"),
      stateDir: join(pki.dir, "state-fpub"),
    });
    const pubEvents: string[] = [];
    publisher.link.on("reconnected", (url) => pubEvents.push(url));
    const total = 600;
    try {
      await publisher.grant(await pki.read("fsub.pem"));
      const sends: Promise<void>[] = [];
      for (let i = 0; i < total; i++) {
        sends.push(publisher.publish("failover/stream", `m${i}`));
        if (i === total / 3) {
          await eventually(
            () => messages.length > 0,
            "the stream flowing through the first broker",
          );
          a.kill(); // SIGKILL: no goodbye to anyone
        }
        await sleep(5);
      }
      await Promise.all(sends); // every QoS 1 publish acknowledged (by one broker or the other)
      await eventually(() => messages.length === total, "every message", 60_000);
      await sleep(2000); // the resend after the reconnect has come and gone
      const payloads = messages.map((m) => new TextDecoder().decode(m.payload));
      assert.equal(new Set(payloads).size, total, "no message delivered twice");
      assert.equal(payloads.length, total);
      assert.deepEqual(
        [...new Set(rejections.map((r) => r.kind))].filter((k) => k !== "replayed"),
        [],
        "only copies sent again are refused, as replays",
      );
      assert.deepEqual(pubEvents, [b.url], "the publisher moved to the second broker");
      assert.deepEqual(subEvents, [b.url], "the subscriber moved to the second broker");
    } finally {
      await publisher.close();
      await sub.close();
    }
  });
});
