/** Rejection paths of the opener and the replay window, offline, from the vectors. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeStrict, encodeCbor } from "../src/cbor.js";
import { encodeSign1, LABEL_VERSION, parseSign1 } from "../src/cose.js";
import { loadSubscriberIdentity, Opener, Rejected, ReplayWindows, Verifier } from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const topic = textVector(v, "topic");
const envelope = hexVector(v, "envelope");
const at = Number(textVector(v, "published_at")) + 60;

async function opener(options: { withKey?: boolean; maxEnvelope?: number } = {}) {
  const o = new Opener({
    verifier: await Verifier.create(hexVector(v, "ca_certificate")),
    maxEnvelope: options.maxEnvelope,
  });
  await o.addPublisherCertificate(hexVector(v, "publisher_certificate"), at);
  if (options.withKey ?? true) await o.addContentKey("vector-pub", 7n, hexVector(v, "content_key"));
  return o;
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Rejected, `not a Rejected: ${e}`);
    return e.kind;
  }
  return "opened";
}

test("a replayed envelope is refused, once opened", async () => {
  const o = await opener();
  assert.equal(await kindOf(o.open(topic, envelope, at)), "opened");
  assert.equal(await kindOf(o.open(topic, envelope, at)), "replayed");
});

test("a flipped ciphertext bit is a bad signature; the window does not move", async () => {
  const o = await opener();
  const tampered = envelope.slice();
  tampered[tampered.length - 70] = (tampered[tampered.length - 70] as number) ^ 1;
  assert.equal(await kindOf(o.open(topic, tampered, at)), "bad_signature");
  assert.equal(await kindOf(o.open(topic, envelope, at)), "opened");
});

test("another topic the publisher may use is a bad signature", async () => {
  const o = await opener();
  assert.equal(await kindOf(o.open("plant/8/temp", envelope, at)), "bad_signature");
});

test("a topic outside the certificate is topic_not_permitted", async () => {
  const o = await opener();
  assert.equal(await kindOf(o.open("plant/7/humidity", envelope, at)), "topic_not_permitted");
});

test("stale and future envelopes are refused", async () => {
  const o = await opener();
  assert.equal(await kindOf(o.open(topic, envelope, at + 2 * 86400)), "stale");
  assert.equal(await kindOf(o.open(topic, envelope, at - 3600)), "stale");
});

test("oversized, malformed and unknown-version envelopes are refused before any crypto", async () => {
  const small = await opener({ maxEnvelope: 100 });
  assert.equal(await kindOf(small.open(topic, envelope, at)), "oversized");
  const o = await opener();
  assert.equal(await kindOf(o.open(topic, envelope.subarray(0, 50), at)), "malformed");
  assert.equal(await kindOf(o.open(topic, new Uint8Array([0xd2, 0x80]), at)), "malformed");
  const sign1 = parseSign1(envelope);
  const header = decodeStrict(sign1.protectedBytes, "h") as Map<number, unknown>;
  header.set(LABEL_VERSION, 3);
  const v3 = encodeSign1(encodeCbor(header), null, sign1.payload, sign1.signature);
  assert.equal(await kindOf(o.open(topic, v3, at)), "unknown_version");
});

test("a missing key is unknown_key, a missing certificate unknown_publisher", async () => {
  const noKey = await opener({ withKey: false });
  assert.equal(await kindOf(noKey.open(topic, envelope, at)), "unknown_key");
  const noCert = new Opener({ verifier: await Verifier.create(hexVector(v, "ca_certificate")) });
  assert.equal(await kindOf(noCert.open(topic, envelope, at)), "unknown_publisher");
});

test("a key message for another subscriber is not_for_us; without identity too", async () => {
  const o = await opener();
  const keyTopic = textVector(v, "key_message_topic");
  assert.equal(
    await kindOf(o.acceptKeyMessage(keyTopic, hexVector(v, "key_message"), at)),
    "not_for_us",
  );
  const sub = await loadSubscriberIdentity(
    hexVector(v, "subscriber_certificate"),
    hexVector(v, "subscriber_private_key_pkcs8"),
  );
  const right = new Opener({
    verifier: await Verifier.create(hexVector(v, "ca_certificate")),
    identity: sub,
  });
  assert.equal(
    await kindOf(
      right.acceptKeyMessage("sealpost/keys/vector-pub/other", hexVector(v, "key_message"), at),
    ),
    "bad_signature",
  );
});

test("the replay window accepts out-of-order numbers once and refuses older than 1024", () => {
  const w = new ReplayWindows();
  assert.ok(w.record("p", 5000n));
  assert.ok(w.record("p", 4990n));
  assert.equal(w.check("p", 4990n), "duplicate");
  assert.equal(w.check("p", 5000n - 1023n), "fresh");
  assert.equal(w.check("p", 5000n - 1024n), "too_old");
  assert.ok(w.record("p", 7000n));
  assert.equal(w.check("p", 5000n), "too_old");
  const restored = ReplayWindows.fromJSON(JSON.parse(JSON.stringify(w.toJSON())));
  assert.equal(restored.check("p", 7000n), "duplicate");
  assert.equal(restored.check("p", 6999n), "fresh");
  assert.throws(() => ReplayWindows.fromJSON({ p: ["12", [5]] }), /corrupt/);
});

test("a number that left the window unseen is accepted once when it arrives late", () => {
  const w = new ReplayWindows();
  for (let n = 0n; n < 10_000n; n++) if (n !== 100n && n !== 7000n) assert.ok(w.record("p", n));
  assert.deepEqual(w.lateRanges("p"), [
    [100n, 100n],
    [7000n, 7000n],
  ]);
  assert.equal(w.check("p", 99n), "too_old");
  assert.ok(w.record("p", 100n));
  assert.ok(!w.record("p", 100n));
  assert.ok(w.record("p", 7000n));
  assert.deepEqual(w.lateRanges("p"), []);
  // Jumped-over numbers are one range, split when one of them comes.
  const j = new ReplayWindows();
  assert.ok(j.record("p", 10n));
  assert.ok(j.record("p", 10n + 5n * 1024n));
  assert.deepEqual(j.lateRanges("p"), [
    [0n, 9n],
    [11n, 10n + 4n * 1024n],
  ]);
  assert.ok(j.record("p", 500n));
  const restored = ReplayWindows.fromJSON(JSON.parse(JSON.stringify(j.toJSON())));
  assert.deepEqual(restored.lateRanges("p"), j.lateRanges("p"));
  assert.equal(restored.check("p", 500n), "too_old");
  assert.equal(restored.check("p", 501n), "fresh");
  // The oldest ranges are forgotten first (256 kept).
  const sparse = new ReplayWindows();
  for (let n = 0n; n < 2n * (256n + 1024n + 10n); n += 2n) assert.ok(sparse.record("p", n));
  const ranges = sparse.lateRanges("p");
  assert.equal(ranges.length, 256);
  const [oldest] = ranges[0] ?? [0n];
  assert.equal(sparse.check("p", oldest - 2n), "too_old");
  assert.equal(sparse.check("p", oldest), "fresh");
  // Late ranges that could make the window accept a seen number are corrupt.
  const top = "9000";
  const ok = { p: [top, [0], ["1", "2", "10", "20"]] };
  assert.doesNotThrow(() => ReplayWindows.fromJSON(ok));
  for (const bad of [
    ["1"],
    ["5", "4"],
    ["1", "5", "5", "9"],
    ["1", "5", "6", "9"],
    ["10", "20", "1", "2"],
    ["1", "7977"],
    [1, 2],
  ]) {
    assert.throws(
      () => ReplayWindows.fromJSON({ p: [top, [0], bad] }),
      /corrupt/,
      JSON.stringify(bad),
    );
  }
});

test("the replay window stays exact while the ring wraps: gaps stay fresh, seen stay seen", () => {
  const w = new ReplayWindows();
  const skipped = (n: bigint) => n % 7n === 3n;
  for (let n = 1n; n <= 5000n; n++) if (!skipped(n)) assert.ok(w.record("p", n));
  for (let n = 5000n - 1023n; n <= 5000n; n++) {
    assert.equal(w.check("p", n), skipped(n) ? "fresh" : "duplicate", `sequence ${n}`);
  }
  assert.equal(w.check("p", 5000n - 1024n), "too_old");
  assert.ok(w.record("p", 5001n + 1024n), "a jump of more than the window");
  // 5002 shares its slot with 3978, which was recorded: the jump must have cleared it.
  assert.equal(w.check("p", 5002n), "fresh", "nothing survives from before the jump");
  // 5001 was never seen, and the jump took it out of the window: kept, still fresh.
  assert.equal(w.check("p", 5001n), "fresh");
  assert.equal(w.check("p", 5000n), "too_old");
  const restored = ReplayWindows.fromJSON(JSON.parse(JSON.stringify(w.toJSON())));
  assert.equal(restored.check("p", 5001n + 1024n), "duplicate");
  assert.equal(restored.check("p", 5002n), "fresh");
  assert.throws(() => ReplayWindows.fromJSON({ p: ["3", [0, 4]] }), /corrupt/);
});
