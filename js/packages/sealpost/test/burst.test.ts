/**
 * Version 2 (tree-signed bursts) rejection paths, offline, from the burst vectors: every
 * change to a proof, index, tree size or signature is refused, a proof from another burst
 * does not verify, and only verified roots enter the cache.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeStrict, encodeCbor } from "../src/cbor.js";
import { encodeSign1, LABEL_VERSION, parseSign1 } from "../src/cose.js";
import {
  encodeProof,
  type InclusionProof,
  importContentKey,
  loadPublisherIdentity,
  Opener,
  parseEnvelope,
  parseProof,
  primitives,
  Rejected,
  sealBurst,
  Verifier,
} from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const at = Number(textVector(v, "published_at")) + 60;
const topics = [0, 1, 2].map((i) => textVector(v, `burst_topic_${i}`));
const envelopes = [0, 1, 2].map((i) => hexVector(v, `burst_envelope_${i}`));

async function opener(rootCache?: number) {
  const o = new Opener({
    verifier: await Verifier.create(hexVector(v, "ca_certificate")),
    rootCache,
  });
  await o.addPublisherCertificate(hexVector(v, "publisher_certificate"), at);
  await o.addContentKey("vector-pub", 7n, hexVector(v, "content_key"));
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

/** Re-encodes envelope `i` with a changed proof, signature or version. */
function rebuild(
  i: number,
  change: { proof?: InclusionProof; signature?: Uint8Array; version?: number; vdp?: unknown },
): Uint8Array {
  const sign1 = parseSign1(envelopes[i] as Uint8Array);
  let protectedBytes = sign1.protectedBytes;
  if (change.version !== undefined) {
    const header = decodeStrict(protectedBytes, "h") as Map<number, unknown>;
    header.set(LABEL_VERSION, change.version);
    protectedBytes = encodeCbor(header);
  }
  const vdp = "vdp" in change ? change.vdp : change.proof ? encodeProof(change.proof) : sign1.vdp;
  return encodeSign1(protectedBytes, null, sign1.payload, change.signature ?? sign1.signature, vdp);
}

function proofOf(i: number): InclusionProof {
  return parseProof(parseSign1(envelopes[i] as Uint8Array).vdp);
}

function flip(bytes: Uint8Array, at = 0): Uint8Array {
  const out = bytes.slice();
  out[at] = (out[at] as number) ^ 1;
  return out;
}

test("a changed path hash is a bad signature; the genuine envelope still opens", async () => {
  const o = await opener();
  const p = proofOf(0);
  const bad = rebuild(0, {
    proof: { ...p, path: [flip(p.path[0] as Uint8Array), ...p.path.slice(1)] },
  });
  assert.equal(await kindOf(o.open(topics[0] as string, bad, at)), "bad_signature");
  assert.equal(await kindOf(o.open(topics[0] as string, envelopes[0] as Uint8Array, at)), "opened");
});

test("a changed leaf index or tree size that still fits the path is a bad signature", async () => {
  const o = await opener();
  // The burst's root is verified and cached (with tree size 3) first.
  assert.equal(await kindOf(o.open(topics[1] as string, envelopes[1] as Uint8Array, at)), "opened");
  const p = proofOf(0);
  // Leaf 1 of 3 also has a two-hash path; leaf 0 of 4 has the same path, and the same
  // root, as leaf 0 of 3: only the signed tree size tells them apart.
  assert.equal(
    await kindOf(o.open(topics[0] as string, rebuild(0, { proof: { ...p, leafIndex: 1n } }), at)),
    "bad_signature",
  );
  assert.equal(
    await kindOf(o.open(topics[0] as string, rebuild(0, { proof: { ...p, treeSize: 4n } }), at)),
    "bad_signature",
  );
});

test("an index outside the tree or a path of the wrong length is bad_inclusion_proof", async () => {
  const o = await opener();
  const p0 = proofOf(0);
  const p2 = proofOf(2);
  const cases = [
    rebuild(0, { proof: { ...p0, leafIndex: 3n } }),
    rebuild(0, { proof: { ...p0, path: p0.path.slice(1) } }),
    rebuild(2, { proof: { ...p2, path: [...p2.path, p0.path[0] as Uint8Array] } }),
    rebuild(2, { proof: { ...p2, treeSize: 4n } }),
  ];
  for (const [n, bad] of cases.entries()) {
    const i = n < 2 ? 0 : 2;
    assert.equal(
      await kindOf(o.open(topics[i] as string, bad, at)),
      "bad_inclusion_proof",
      `case ${n}`,
    );
  }
});

test("a changed signature is refused, also when the burst's root is already cached", async () => {
  const o = await opener();
  const sig = parseSign1(envelopes[1] as Uint8Array).signature;
  assert.equal(
    await kindOf(o.open(topics[1] as string, rebuild(1, { signature: flip(sig, 10) }), at)),
    "bad_signature",
  );
  assert.equal(await kindOf(o.open(topics[0] as string, envelopes[0] as Uint8Array, at)), "opened");
  // The root of envelope 1 is now cached, but only with its genuine signature.
  assert.equal(
    await kindOf(o.open(topics[1] as string, rebuild(1, { signature: flip(sig, 10) }), at)),
    "bad_signature",
  );
  assert.equal(await kindOf(o.open(topics[1] as string, envelopes[1] as Uint8Array, at)), "opened");
});

test("a proof and signature from another burst of the same publisher do not verify", async () => {
  const publisher = await loadPublisherIdentity(
    hexVector(v, "publisher_certificate"),
    hexVector(v, "publisher_private_key_pkcs8"),
  );
  const other = await sealBurst({
    identity: publisher,
    messages: topics.map((topic) => ({ topic, plaintext: new Uint8Array([1, 2, 3]) })),
    index: { publisher: "vector-pub", epoch: 7n, location: "mqtt:sealpost/keys/vector-pub" },
    contentKey: await importContentKey(hexVector(v, "content_key")),
    firstSeq: 3000n,
    salt: hexVector(v, "nonce_salt"),
    publishedAt: BigInt(textVector(v, "published_at")),
    embedCertificate: false,
  });
  const o = await opener();
  // The other burst opens, so its root is verified and cached.
  assert.equal(await kindOf(o.open(topics[1] as string, other[1] as Uint8Array, at)), "opened");
  const donor = parseEnvelope(other[1] as Uint8Array);
  const spliced = rebuild(1, {
    proof: donor.proof as InclusionProof,
    signature: donor.sign1.signature,
  });
  assert.equal(await kindOf(o.open(topics[1] as string, spliced, at)), "bad_signature");
});

test("a forged envelope never enters the root cache", async () => {
  const o = await opener();
  // Envelope 0 on another topic its certificate permits: another leaf, another root,
  // whose signature fails. Were that root cached anyway, the second try would pass the
  // signature step and fail later, at decryption (the topic is the AEAD's extra data).
  assert.equal(
    await kindOf(o.open("plant/9/temp", envelopes[0] as Uint8Array, at)),
    "bad_signature",
  );
  assert.equal(
    await kindOf(o.open("plant/9/temp", envelopes[0] as Uint8Array, at)),
    "bad_signature",
  );
});

test("the root signature is verified once per burst, or per message without a cache", async () => {
  const verify = primitives.verifyEd25519;
  let calls = 0;
  primitives.verifyEd25519 = (...args) => {
    calls++;
    return verify(...args);
  };
  try {
    for (const [cache, expected] of [
      [undefined, 1],
      [0, 3],
    ] as const) {
      const o = await opener(cache);
      calls = 0;
      for (const [i, e] of envelopes.entries()) {
        assert.equal(await kindOf(o.open(topics[i] as string, e, at)), "opened");
      }
      assert.equal(calls, expected, `root cache ${cache}`);
    }
  } finally {
    primitives.verifyEd25519 = verify;
  }
});

test("version 1 relabelled as 2, 2 as 1, or a version 2 without its proof are malformed", async () => {
  const o = await opener();
  const v1 = hexVector(v, "envelope");
  const s1 = parseSign1(v1);
  const header = decodeStrict(s1.protectedBytes, "h") as Map<number, unknown>;
  header.set(LABEL_VERSION, 2);
  const relabelled = encodeSign1(encodeCbor(header), null, s1.payload, s1.signature);
  assert.equal(await kindOf(o.open(textVector(v, "topic"), relabelled, at)), "malformed");
  assert.equal(
    await kindOf(o.open(topics[0] as string, rebuild(0, { version: 1 }), at)),
    "malformed",
  );
  assert.equal(
    await kindOf(o.open(topics[0] as string, rebuild(0, { vdp: undefined }), at)),
    "malformed",
  );
  assert.equal(
    await kindOf(o.open(topics[0] as string, rebuild(0, { vdp: new Map([[-1, []]]) }), at)),
    "malformed",
  );
});

test("a publisher refuses a wire version other than 1 or 2 before connecting", async () => {
  const { Publisher } = await import("../src/node.js");
  await assert.rejects(
    Publisher.start({
      url: "mqtt://127.0.0.1:9",
      identity: await loadPublisherIdentity(
        hexVector(v, "publisher_certificate"),
        hexVector(v, "publisher_private_key_pkcs8"),
      ),
      caCertificate: hexVector(v, "ca_certificate"),
      insecureNoCrl: true,
      stateDir: "/nonexistent/never-created",
      wireVersion: 3 as 2,
    }),
    /wireVersion is 1 or 2, not 3/,
  );
});

test("with the path memo warm, every bit of a later envelope's path still counts", async () => {
  // Envelopes 0 and 1 are siblings: after 0 opens, 1's path nodes above the leaves are in
  // the memo (`PathMemo`). A changed bit anywhere in 1's path must still be refused.
  const o = await opener();
  assert.equal(await kindOf(o.open(topics[0] as string, envelopes[0] as Uint8Array, at)), "opened");
  const p = proofOf(1);
  for (const [level, hash] of p.path.entries()) {
    for (let byte = 0; byte < hash.length; byte += 7) {
      const path = p.path.map((h, i) => (i === level ? flip(h, byte) : h));
      const bad = rebuild(1, { proof: { ...p, path } });
      assert.equal(await kindOf(o.open(topics[1] as string, bad, at)), "bad_signature");
    }
  }
  assert.equal(await kindOf(o.open(topics[1] as string, envelopes[1] as Uint8Array, at)), "opened");
  // And a message whose leaf differs (another topic) misses the memo at its first level.
  assert.equal(
    await kindOf(o.open(topics[0] as string, envelopes[2] as Uint8Array, at)),
    "bad_signature",
  );
});
