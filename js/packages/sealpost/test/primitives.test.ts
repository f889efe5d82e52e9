/**
 * The primitives seam: Node.js resolves `#platform` to `node:crypto`, and both
 * implementations (WebCrypto runs in Node.js too) give the same answers on the
 * PROTOCOL.md vectors, refuse the same bad inputs, and read each other's output.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { toHex } from "../src/bytes.js";
import { asBytes, decodeStrict, tagged } from "../src/cbor.js";
import { parseCertificate } from "../src/certs.js";
import { encStructure, parseSign1, sigStructure } from "../src/cose.js";
import { nodePrimitives } from "../src/platform/node.js";
import { webPrimitives } from "../src/platform/web.js";
import { type Primitives, primitives } from "../src/primitives.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const te = new TextEncoder();
const topic = te.encode(textVector(v, "topic"));
const sign1 = parseSign1(hexVector(v, "envelope"));
const tbs = sigStructure(sign1.protectedBytes, topic, sign1.payload);
const encrypt0 = tagged(decodeStrict(sign1.payload, "COSE_Encrypt0"), 16, 3) ?? [];
const encProtected = asBytes(encrypt0[0]) ?? new Uint8Array();
const iv = asBytes((encrypt0[1] as Map<number, unknown>).get(5)) ?? new Uint8Array();
const ciphertext = asBytes(encrypt0[2]) ?? new Uint8Array();
const aad = encStructure(encProtected, topic);
const flip = (b: Uint8Array, i: number) => {
  const c = new Uint8Array(b);
  c[i] = (c[i] ?? 0) ^ 1;
  return c;
};
const spki = async (name: string) =>
  new Uint8Array((await parseCertificate(hexVector(v, name))).cert.publicKey.rawData);

test("in Node.js the seam resolves to node:crypto", () => {
  assert.equal(primitives.name, "node:crypto");
});

for (const p of [nodePrimitives, webPrimitives]) {
  const name = p.name;
  test(`${name}: the vector envelope verifies and decrypts; any changed byte does not`, async () => {
    const key = await p.importVerifyKey(await spki("publisher_certificate"));
    assert.equal(await p.verifyEd25519(key, sign1.signature, tbs), true);
    assert.equal(await p.verifyEd25519(key, flip(sign1.signature, 3), tbs), false);
    assert.equal(await p.verifyEd25519(key, sign1.signature, flip(tbs, 40)), false);
    assert.equal(await p.verifyEd25519(key, sign1.signature.subarray(1), tbs), false);

    const ck = await p.importContentKey(hexVector(v, "content_key"));
    const plaintext = await p.aesGcmDecrypt(ck, iv, aad, ciphertext);
    assert.equal(toHex(plaintext), textVector(v, "plaintext"));
    assert.equal(Object.getPrototypeOf(plaintext), Uint8Array.prototype, "a plain Uint8Array");
    for (const [what, attempt] of [
      ["tag", () => p.aesGcmDecrypt(ck, iv, aad, flip(ciphertext, ciphertext.length - 1))],
      ["body", () => p.aesGcmDecrypt(ck, iv, aad, flip(ciphertext, 0))],
      ["aad", () => p.aesGcmDecrypt(ck, iv, flip(aad, 2), ciphertext)],
      ["iv", () => p.aesGcmDecrypt(ck, flip(iv, 0), aad, ciphertext)],
      ["short", () => p.aesGcmDecrypt(ck, iv, aad, ciphertext.subarray(0, 15))],
    ] as const) {
      await assert.rejects(attempt(), `${name}: changed ${what} must not decrypt`);
    }
  });

  test(`${name}: refuses an RSA key for Ed25519 and a 31-byte content key`, async () => {
    await assert.rejects(p.importVerifyKey(await spki("subscriber_certificate")));
    await assert.rejects(p.importContentKey(new Uint8Array(31)));
  });
}

test("each implementation opens what the other sealed, and hashes alike", async () => {
  const raw = hexVector(v, "content_key");
  const message = te.encode("sealed by one platform, opened by the other");
  const pairs: [Primitives, Primitives][] = [
    [nodePrimitives, webPrimitives],
    [webPrimitives, nodePrimitives],
  ];
  for (const [pa, pb] of pairs) {
    const sealed = await pa.aesGcmEncrypt(await pa.importContentKey(raw), iv, aad, message);
    const opened = await pb.aesGcmDecrypt(await pb.importContentKey(raw), iv, aad, sealed);
    assert.deepEqual(opened, message, `${pa.name} -> ${pb.name}`);
  }
  assert.deepEqual(await nodePrimitives.sha256(tbs), await webPrimitives.sha256(tbs));
  assert.equal(
    toHex(await nodePrimitives.sha256(te.encode("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});
