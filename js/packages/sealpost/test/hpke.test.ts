/**
 * HPKE key wrapping (X25519 subscribers): the `hpke_*` vectors of docs/PROTOCOL.md as
 * protocol/tests/vectors.rs checks them, key messages this SDK builds for X25519 readers,
 * and every rejection of an entry (unknown algorithm, the other key type, a bad `ek`, a
 * tampered entry).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { buf } from "../src/bytes.js";
import { decodeStrict, encodeCbor } from "../src/cbor.js";
import { LABEL_ALG, LABEL_EK, LABEL_EPOCH, parseSign1 } from "../src/cose.js";
import {
  createKeyMessage,
  hpkeInfo,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  Opener,
  parseCertificate,
  parseKeyMessageBody,
  Rejected,
  toHex,
  Verifier,
  wrapForSubscriber,
} from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const publishedAt = BigInt(textVector(v, "published_at"));
const openAt = Number(publishedAt) + 60;
const topic = textVector(v, "topic");
const epoch = BigInt(textVector(v, "epoch"));
const hpkeTopic = textVector(v, "hpke_key_message_topic");
const contentKey = hexVector(v, "content_key");

const hpkeSubscriber = () =>
  loadSubscriberIdentity(
    hexVector(v, "hpke_subscriber_certificate"),
    hexVector(v, "hpke_subscriber_private_key_pkcs8"),
  );
const rsaSubscriber = () =>
  loadSubscriberIdentity(
    hexVector(v, "subscriber_certificate"),
    hexVector(v, "subscriber_private_key_pkcs8"),
  );
const publisher = () =>
  loadPublisherIdentity(
    hexVector(v, "publisher_certificate"),
    hexVector(v, "publisher_private_key_pkcs8"),
  );

async function opener(identity: Awaited<ReturnType<typeof hpkeSubscriber>>) {
  return new Opener({ verifier: await Verifier.create(hexVector(v, "ca_certificate")), identity });
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Rejected, `not a Rejected: ${e}`);
    return e.kind;
  }
  return "accepted";
}

test("the X25519 subscriber key is a non-extractable X25519 CryptoKey", async () => {
  const sub = await hpkeSubscriber();
  assert.equal(sub.key.algorithm.name, "X25519");
  assert.equal(sub.key.extractable, false);
  assert.deepEqual(sub.key.usages, ["deriveBits"]);
});

test("the hpke vector key message yields the content key, and the envelope opens", async () => {
  const o = await opener(await hpkeSubscriber());
  const update = await o.acceptKeyMessage(hpkeTopic, hexVector(v, "hpke_key_message"), openAt);
  assert.equal(update.publisher, "vector-pub");
  assert.deepEqual(update.newEpochs, [epoch]);
  const opened = await o.open(topic, hexVector(v, "envelope"), openAt);
  assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
});

test("the hpke vector entry is the documented header, ek, ciphertext and info", async () => {
  const body = parseKeyMessageBody(parseSign1(hexVector(v, "hpke_key_message")).payload);
  assert.equal(body.entries.length, 1);
  const [entry] = body.entries;
  assert.ok(entry);
  assert.equal(entry.algorithm, "HPKE-X25519-SHA256-A256GCM");
  assert.equal(entry.epoch, epoch);
  assert.equal(toHex(entry.protectedBytes), textVector(v, "hpke_recipient_protected"));
  assert.equal(toHex(entry.ek ?? new Uint8Array()), textVector(v, "hpke_ek"));
  assert.equal(toHex(entry.ciphertext), textVector(v, "hpke_ciphertext"));
  assert.equal(toHex(hpkeInfo(entry.protectedBytes)), textVector(v, "hpke_info"));
  const header = decodeStrict(entry.protectedBytes, "header") as Map<number, unknown>;
  assert.equal(header.get(LABEL_ALG), -65601);
});

test("a bare RFC 9180 single-shot open of the vector yields the content key", async () => {
  const suite = new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
  const sub = await hpkeSubscriber();
  const publicKey = await crypto.subtle.importKey(
    "spki",
    sub.certificate.cert.publicKey.rawData,
    { name: "X25519" },
    true,
    [],
  );
  const pt = await suite.open(
    {
      recipientKey: { privateKey: sub.key, publicKey },
      enc: buf(hexVector(v, "hpke_ek")),
      info: buf(hexVector(v, "hpke_info")),
    },
    buf(hexVector(v, "hpke_ciphertext")),
    new ArrayBuffer(0),
  );
  assert.equal(toHex(new Uint8Array(pt)), toHex(contentKey));
});

test("a key message this SDK builds for an X25519 reader opens (HPKE is randomised)", async () => {
  const pub = await publisher();
  const subCert = await parseCertificate(hexVector(v, "hpke_subscriber_certificate"));
  const recipient = await wrapForSubscriber(subCert, { epoch, key: contentKey });
  const message = await createKeyMessage(pub, subCert, [recipient], publishedAt, hpkeTopic);
  assert.notEqual(toHex(message), textVector(v, "hpke_key_message"));
  const entry = parseKeyMessageBody(parseSign1(message).payload).entries[0];
  assert.equal(entry?.algorithm, "HPKE-X25519-SHA256-A256GCM");
  assert.equal(entry?.ciphertext.length, 48);
  assert.equal(
    toHex(entry?.protectedBytes ?? new Uint8Array()),
    textVector(v, "hpke_recipient_protected"),
  );
  const o = await opener(await hpkeSubscriber());
  assert.deepEqual((await o.acceptKeyMessage(hpkeTopic, message, openAt)).newEpochs, [epoch]);
  const opened = await o.open(topic, hexVector(v, "envelope"), openAt);
  assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
});

/** A key message to `subCertHex` carrying `recipient`, signed by the vector publisher. */
async function keyMessageWith(subCertHex: string, recipient: unknown[]): Promise<Uint8Array> {
  const subCert = await parseCertificate(hexVector(v, subCertHex));
  return createKeyMessage(await publisher(), subCert, [recipient], publishedAt, hpkeTopic);
}

/** The vector's HPKE entry with `change` applied to [protected, unprotected, ciphertext]. */
function vectorEntry(change: (e: [Uint8Array, Map<number, unknown>, Uint8Array]) => void) {
  const e: [Uint8Array, Map<number, unknown>, Uint8Array] = [
    hexVector(v, "hpke_recipient_protected"),
    new Map<number, unknown>([[LABEL_EK, hexVector(v, "hpke_ek")]]),
    hexVector(v, "hpke_ciphertext"),
  ];
  change(e);
  return e;
}

const flip = (b: Uint8Array, at: number) => {
  const c = b.slice();
  c[at] = (c[at] as number) ^ 1;
  return c;
};

test("an entry of the other key type is wrong_key_type, both ways", async () => {
  const rsaCert = await parseCertificate(hexVector(v, "subscriber_certificate"));
  const xCert = await parseCertificate(hexVector(v, "hpke_subscriber_certificate"));
  const rsaEntry = await wrapForSubscriber(rsaCert, { epoch, key: contentKey });
  const hpkeEntry = await wrapForSubscriber(xCert, { epoch, key: contentKey });
  const toX = await keyMessageWith("hpke_subscriber_certificate", rsaEntry);
  const toRsa = await keyMessageWith("subscriber_certificate", hpkeEntry);
  const x = await opener(await hpkeSubscriber());
  const rsa = await opener(await rsaSubscriber());
  assert.equal(await kindOf(x.acceptKeyMessage(hpkeTopic, toX, openAt)), "wrong_key_type");
  assert.equal(await kindOf(rsa.acceptKeyMessage(hpkeTopic, toRsa, openAt)), "wrong_key_type");
});

test("the hpke vector key message is not_for_us for the RSA subscriber", async () => {
  const rsa = await opener(await rsaSubscriber());
  const message = hexVector(v, "hpke_key_message");
  assert.equal(await kindOf(rsa.acceptKeyMessage(hpkeTopic, message, openAt)), "not_for_us");
});

test("malformed and tampered HPKE entries are refused with their kinds", async () => {
  const unknownAlg = encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, -65602],
      [LABEL_EPOCH, epoch],
    ]),
  );
  const otherEpoch = encodeCbor(
    new Map<number, unknown>([
      [LABEL_ALG, -65601],
      [LABEL_EPOCH, epoch + 1n],
    ]),
  );
  const cases: [string, unknown[]][] = [
    ["malformed", vectorEntry((e) => e[1].clear())],
    ["malformed", vectorEntry((e) => e[1].set(LABEL_EK, hexVector(v, "hpke_ek").slice(1)))],
    ["malformed", vectorEntry((e) => e[1].set(LABEL_EK, "not bytes"))],
    ["malformed", vectorEntry((e) => e[1].set(5, new Uint8Array(12)))],
    ["unsupported_algorithm", vectorEntry((e) => (e[0] = unknownAlg))],
    ["decrypt_failed", vectorEntry((e) => (e[2] = flip(e[2], 0)))],
    ["decrypt_failed", vectorEntry((e) => e[1].set(LABEL_EK, flip(hexVector(v, "hpke_ek"), 3)))],
    // The protected header (and so the epoch) is bound to the key schedule through `info`.
    ["decrypt_failed", vectorEntry((e) => (e[0] = otherEpoch))],
  ];
  for (const [kind, entry] of cases) {
    const message = await keyMessageWith("hpke_subscriber_certificate", entry);
    const o = await opener(await hpkeSubscriber());
    assert.equal(await kindOf(o.acceptKeyMessage(hpkeTopic, message, openAt)), kind, `${kind}`);
  }
  // An RSA-OAEP entry with an ek is malformed, before the RSA key is used.
  const rsaCert = await parseCertificate(hexVector(v, "subscriber_certificate"));
  const rsaEntry = await wrapForSubscriber(rsaCert, { epoch, key: contentKey });
  (rsaEntry[1] as Map<number, unknown>).set(LABEL_EK, new Uint8Array(32));
  const message = await keyMessageWith("subscriber_certificate", rsaEntry);
  const rsa = await opener(await rsaSubscriber());
  assert.equal(await kindOf(rsa.acceptKeyMessage(hpkeTopic, message, openAt)), "malformed");
});

test("an X25519 private key with an RSA certificate is refused when loading", async () => {
  await assert.rejects(
    loadSubscriberIdentity(
      hexVector(v, "subscriber_certificate"),
      hexVector(v, "hpke_subscriber_private_key_pkcs8"),
    ),
  );
});
