/**
 * The fast path of envelope parsing (`envelopeReader.ts`) against the general strict
 * decoder: on the vector envelopes and on every single-byte change and truncation of
 * them, the fast path either declines (null) or returns exactly what the general path
 * returns, and never accepts an envelope the general path refuses. The directly written
 * Sig_structure and Enc_structure equal cborg's encoding at every head size.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeCbor } from "../src/cbor.js";
import { encStructure, sigStructure } from "../src/cose.js";
import { isValidLocation, parseEnvelopeGeneral } from "../src/envelope.js";
import { readEnvelope } from "../src/envelopeReader.js";
import { Rejected } from "../src/errors.js";
import { importContentKey, loadPublisherIdentity, sealEnvelope } from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const envelopes: [string, Uint8Array][] = [["envelope", hexVector(v, "envelope")]];
for (let i = 0; i < Number(textVector(v, "burst_size")); i++) {
  envelopes.push([`burst_envelope_${i}`, hexVector(v, `burst_envelope_${i}`)]);
}

/** The general path's verdict: the parsed envelope, or the rejection kind. */
function general(bytes: Uint8Array): unknown {
  try {
    return parseEnvelopeGeneral(bytes);
  } catch (e) {
    assert.ok(e instanceof Rejected, `not a Rejected: ${e}`);
    return e.kind;
  }
}

/** Plain data for comparison (views and copies of the same bytes compare equal). */
const plain = (x: unknown): unknown =>
  JSON.parse(
    JSON.stringify(x, (_k, value) =>
      typeof value === "bigint"
        ? `${value}n`
        : value instanceof Uint8Array
          ? Array.from(value)
          : value,
    ),
  );

test("the fast path reads every vector envelope exactly as the general decoder", () => {
  for (const [name, bytes] of envelopes) {
    const fast = readEnvelope(bytes, isValidLocation);
    assert.ok(fast, `${name}: the fast path declined a well-formed envelope`);
    assert.deepEqual(plain(fast), plain(general(bytes)), name);
  }
});

test("on every changed or truncated envelope the fast path declines or agrees, never accepts more", () => {
  let declined = 0;
  let agreed = 0;
  for (const [name, original] of envelopes) {
    const variants: Uint8Array[] = [];
    for (let at = 0; at < original.length; at++) {
      for (const x of [0x01, 0x20, 0x80, 0xff]) {
        const changed = original.slice();
        changed[at] = (changed[at] as number) ^ x;
        variants.push(changed);
      }
      variants.push(original.subarray(0, at));
    }
    const longer = new Uint8Array(original.length + 1);
    longer.set(original);
    variants.push(longer);
    for (const bytes of variants) {
      const fast = readEnvelope(bytes, isValidLocation);
      if (fast === null) {
        declined++;
        continue;
      }
      const slow = general(bytes);
      assert.equal(typeof slow, "object", `${name}: fast path accepted what is ${slow}`);
      assert.deepEqual(plain(fast), plain(slow), name);
      agreed++;
    }
  }
  // Changes inside byte strings (ciphertext, signature, kid, path hashes) keep the layout.
  assert.ok(agreed > 0 && declined > 0, `agreed ${agreed}, declined ${declined}`);
});

test("the directly written Sig_structure and Enc_structure are cborg's encoding", () => {
  for (const n of [0, 1, 23, 24, 255, 256, 65535, 65536]) {
    const a = new Uint8Array(n).fill(7);
    const b = new Uint8Array(n === 0 ? 3 : n - 1).fill(9);
    assert.deepEqual(sigStructure(a, b, a), encodeCbor(["Signature1", a, b, a]), `${n}`);
    assert.deepEqual(encStructure(b, a), encodeCbor(["Encrypt0", b, a]), `${n}`);
  }
});

test("heads of every size (sequence numbers up to 2^64 - 1) read the same both ways", async () => {
  const identity = await loadPublisherIdentity(
    hexVector(v, "publisher_certificate"),
    hexVector(v, "publisher_private_key_pkcs8"),
  );
  const contentKey = await importContentKey(hexVector(v, "content_key"));
  const seqs = [
    0n,
    23n,
    24n,
    255n,
    256n,
    65535n,
    65536n,
    2n ** 32n - 1n,
    2n ** 32n,
    2n ** 64n - 1n,
  ];
  for (const seq of seqs) {
    const bytes = await sealEnvelope({
      identity,
      topic: textVector(v, "topic"),
      plaintext: new Uint8Array(300),
      index: { publisher: "vector-pub", epoch: seq, location: "mqtt:sealpost/keys/vector-pub" },
      contentKey,
      seq,
      salt: hexVector(v, "nonce_salt"),
      publishedAt: seq,
      embedCertificate: true,
    });
    const fast = readEnvelope(bytes, isValidLocation);
    assert.ok(fast, `sequence ${seq}: declined`);
    assert.equal(fast.seq, seq);
    assert.deepEqual(plain(fast), plain(general(bytes)), `sequence ${seq}`);
  }
});
