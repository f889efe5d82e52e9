/**
 * HPKE key wrapping, for X25519 and X-Wing subscribers: the `hpke_*` and `xwing_*` vectors
 * of docs/PROTOCOL.md as protocol/tests/vectors.rs checks them, key messages this SDK
 * builds for such readers, and every rejection of an entry (unknown algorithm, another
 * key type, a bad `ek`, a tampered entry).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { XWing } from "@hpke/hybridkem-x-wing";
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
  type SubscriberIdentity,
  toHex,
  Verifier,
  wrapForSubscriber,
  XWingPrivateKey,
} from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const publishedAt = BigInt(textVector(v, "published_at"));
const openAt = Number(publishedAt) + 60;
const topic = textVector(v, "topic");
const epoch = BigInt(textVector(v, "epoch"));
const contentKey = hexVector(v, "content_key");

/** The subscriber whose vectors are named `<prefix>_*` (`""`: the RSA one). */
const subscriberOf = (prefix: string) =>
  loadSubscriberIdentity(
    hexVector(v, `${prefix}subscriber_certificate`),
    hexVector(v, `${prefix}subscriber_private_key_pkcs8`),
  );
const hpkeSubscriber = () => subscriberOf("hpke_");
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

async function opener(identity: SubscriberIdentity) {
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

/** The two HPKE key types, each with its vectors (`<prefix>_*`) and its bare RFC 9180 suite. */
interface KemCase {
  label: string;
  prefix: "hpke" | "xwing";
  algorithm: string;
  coseId: number;
  encLen: number;
  /** The recipient key for a bare @hpke open, made from the vector key file alone. */
  bareRecipientKey: () => Promise<CryptoKey | CryptoKeyPair>;
  suite: () => CipherSuite;
}

const KEMS: KemCase[] = [
  {
    label: "X25519",
    prefix: "hpke",
    algorithm: "HPKE-X25519-SHA256-A256GCM",
    coseId: -65601,
    encLen: 32,
    async bareRecipientKey() {
      const sub = await hpkeSubscriber();
      const publicKey = await crypto.subtle.importKey(
        "spki",
        sub.certificate.cert.publicKey.rawData,
        { name: "X25519" },
        true,
        [],
      );
      return { privateKey: sub.key, publicKey };
    },
    suite: () =>
      new CipherSuite({
        kem: new DhkemX25519HkdfSha256(),
        kdf: new HkdfSha256(),
        aead: new Aes256Gcm(),
      }),
  },
  {
    label: "X-Wing",
    prefix: "xwing",
    algorithm: "HPKE-XWING-SHA256-A256GCM",
    coseId: -65602,
    encLen: 1120,
    // PROTOCOL.md: the private key file's last 32 bytes are the X-Wing seed.
    bareRecipientKey: () =>
      new XWing().deserializePrivateKey(
        hexVector(v, "xwing_subscriber_private_key_pkcs8").slice(-32),
      ),
    suite: () =>
      new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256(), aead: new Aes256Gcm() }),
  },
];

test("the X25519 subscriber key is a non-extractable X25519 CryptoKey", async () => {
  const sub = await hpkeSubscriber();
  assert.equal(sub.key.algorithm.name, "X25519");
  assert.equal(sub.key.extractable, false);
  assert.deepEqual(sub.key.usages, ["deriveBits"]);
});

test("the X-Wing subscriber key keeps its seed only encrypted, under a non-extractable key", async () => {
  const sub = await subscriberOf("xwing_");
  assert.ok(sub.key instanceof XWingPrivateKey);
  assert.equal(sub.key.algorithm.name, "X-Wing");
  assert.equal(sub.key.extractable, false);
  const stored = sub.key.toStored();
  assert.equal(stored.sealingKey.extractable, false);
  assert.equal(stored.sealingKey.algorithm.name, "AES-GCM");
  await assert.rejects(crypto.subtle.exportKey("raw", stored.sealingKey));
  const seed = toHex(hexVector(v, "xwing_subscriber_private_key_pkcs8").slice(-32));
  assert.ok(!toHex(stored.sealedSeed).includes(seed), "the stored form holds no plain seed");
  assert.equal(stored.sealedSeed.length, 32 + 16);
  // The seed comes out inside `withSeed` only, and that buffer is wiped afterwards.
  let seen: Uint8Array | null = null;
  await sub.key.withSeed(async (s) => {
    assert.equal(toHex(s), seed);
    seen = s;
  });
  assert.deepEqual(seen, new Uint8Array(32));
});

for (const kem of KEMS) {
  const { prefix, label } = kem;
  const keyTopic = textVector(v, `${prefix}_key_message_topic`);
  const sub = () => subscriberOf(`${prefix}_`);

  test(`the ${prefix} vector key message yields the content key, and the envelope opens`, async () => {
    const o = await opener(await sub());
    const update = await o.acceptKeyMessage(
      keyTopic,
      hexVector(v, `${prefix}_key_message`),
      openAt,
    );
    assert.equal(update.publisher, "vector-pub");
    assert.deepEqual(update.newEpochs, [epoch]);
    const opened = await o.open(topic, hexVector(v, "envelope"), openAt);
    assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
  });

  test(`the ${prefix} vector entry is the documented header, ek, ciphertext and info`, async () => {
    const body = parseKeyMessageBody(parseSign1(hexVector(v, `${prefix}_key_message`)).payload);
    assert.equal(body.entries.length, 1);
    const [entry] = body.entries;
    assert.ok(entry);
    assert.equal(entry.algorithm, kem.algorithm);
    assert.equal(entry.epoch, epoch);
    assert.equal(toHex(entry.protectedBytes), textVector(v, `${prefix}_recipient_protected`));
    assert.equal(toHex(entry.ek ?? new Uint8Array()), textVector(v, `${prefix}_ek`));
    assert.equal(entry.ek?.length, kem.encLen);
    assert.equal(toHex(entry.ciphertext), textVector(v, `${prefix}_ciphertext`));
    assert.equal(toHex(hpkeInfo(entry.protectedBytes)), textVector(v, `${prefix}_info`));
    const header = decodeStrict(entry.protectedBytes, "header") as Map<number, unknown>;
    assert.equal(header.get(LABEL_ALG), kem.coseId);
  });

  test(`a bare RFC 9180 single-shot open of the ${prefix} vector yields the content key`, async () => {
    const pt = await kem.suite().open(
      {
        recipientKey: await kem.bareRecipientKey(),
        enc: buf(hexVector(v, `${prefix}_ek`)),
        info: buf(hexVector(v, `${prefix}_info`)),
      },
      buf(hexVector(v, `${prefix}_ciphertext`)),
      new ArrayBuffer(0),
    );
    assert.equal(toHex(new Uint8Array(pt)), toHex(contentKey));
  });

  test(`a key message this SDK builds for an ${label} reader opens (HPKE is randomised)`, async () => {
    const pub = await publisher();
    const subCert = await parseCertificate(hexVector(v, `${prefix}_subscriber_certificate`));
    const recipient = await wrapForSubscriber(subCert, { epoch, key: contentKey });
    const message = await createKeyMessage(pub, subCert, [recipient], publishedAt, keyTopic);
    assert.notEqual(toHex(message), textVector(v, `${prefix}_key_message`));
    const entry = parseKeyMessageBody(parseSign1(message).payload).entries[0];
    assert.equal(entry?.algorithm, kem.algorithm);
    assert.equal(entry?.ciphertext.length, 48);
    assert.equal(entry?.ek?.length, kem.encLen);
    assert.equal(
      toHex(entry?.protectedBytes ?? new Uint8Array()),
      textVector(v, `${prefix}_recipient_protected`),
    );
    const o = await opener(await sub());
    assert.deepEqual((await o.acceptKeyMessage(keyTopic, message, openAt)).newEpochs, [epoch]);
    const opened = await o.open(topic, hexVector(v, "envelope"), openAt);
    assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
  });

  test(`the ${prefix} vector key message is not_for_us for the RSA subscriber`, async () => {
    const rsa = await opener(await rsaSubscriber());
    const message = hexVector(v, `${prefix}_key_message`);
    assert.equal(await kindOf(rsa.acceptKeyMessage(keyTopic, message, openAt)), "not_for_us");
  });

  test(`malformed and tampered ${label} entries are refused with their kinds`, async () => {
    const ek = hexVector(v, `${prefix}_ek`);
    const unknownAlg = encodeCbor(
      new Map<number, unknown>([
        [LABEL_ALG, -65603],
        [LABEL_EPOCH, epoch],
      ]),
    );
    const otherEpoch = encodeCbor(
      new Map<number, unknown>([
        [LABEL_ALG, kem.coseId],
        [LABEL_EPOCH, epoch + 1n],
      ]),
    );
    const entry = (change: (e: [Uint8Array, Map<number, unknown>, Uint8Array]) => void) =>
      vectorEntry(prefix, change);
    const cases: [string, unknown[]][] = [
      ["malformed", entry((e) => e[1].clear())],
      ["malformed", entry((e) => e[1].set(LABEL_EK, ek.slice(1)))],
      ["malformed", entry((e) => e[1].set(LABEL_EK, "not bytes"))],
      ["malformed", entry((e) => e[1].set(5, new Uint8Array(12)))],
      ["unsupported_algorithm", entry((e) => (e[0] = unknownAlg))],
      ["decrypt_failed", entry((e) => (e[2] = flip(e[2], 0)))],
      ["decrypt_failed", entry((e) => e[1].set(LABEL_EK, flip(ek, 3)))],
      // The protected header (and so the epoch) is bound to the key schedule through `info`.
      ["decrypt_failed", entry((e) => (e[0] = otherEpoch))],
    ];
    for (const [kind, e] of cases) {
      const message = await keyMessageWith(`${prefix}_subscriber_certificate`, e, keyTopic);
      const o = await opener(await sub());
      assert.equal(await kindOf(o.acceptKeyMessage(keyTopic, message, openAt)), kind, `${kind}`);
    }
  });
}

/** A key message to `subCertHex` carrying `recipient`, signed by the vector publisher. */
async function keyMessageWith(
  subCertHex: string,
  recipient: unknown[],
  keyTopic = textVector(v, "hpke_key_message_topic"),
): Promise<Uint8Array> {
  const subCert = await parseCertificate(hexVector(v, subCertHex));
  return createKeyMessage(await publisher(), subCert, [recipient], publishedAt, keyTopic);
}

/** The `<prefix>` vector's entry with `change` applied to [protected, unprotected, ciphertext]. */
function vectorEntry(
  prefix: string,
  change: (e: [Uint8Array, Map<number, unknown>, Uint8Array]) => void,
) {
  const e: [Uint8Array, Map<number, unknown>, Uint8Array] = [
    hexVector(v, `${prefix}_recipient_protected`),
    new Map<number, unknown>([[LABEL_EK, hexVector(v, `${prefix}_ek`)]]),
    hexVector(v, `${prefix}_ciphertext`),
  ];
  change(e);
  return e;
}

const flip = (b: Uint8Array, at: number) => {
  const c = b.slice();
  c[at] = (c[at] as number) ^ 1;
  return c;
};

test("an entry of another key type is wrong_key_type, every way among RSA, X25519, X-Wing", async () => {
  const prefixes = ["", "hpke_", "xwing_"];
  const hpkeTopic = textVector(v, "hpke_key_message_topic");
  for (const from of prefixes) {
    const cert = await parseCertificate(hexVector(v, `${from}subscriber_certificate`));
    const entry = await wrapForSubscriber(cert, { epoch, key: contentKey });
    for (const to of prefixes.filter((p) => p !== from)) {
      const message = await keyMessageWith(`${to}subscriber_certificate`, entry);
      const o = await opener(await subscriberOf(to));
      const kind = await kindOf(o.acceptKeyMessage(hpkeTopic, message, openAt));
      assert.equal(kind, "wrong_key_type", `${from || "rsa_"} entry to ${to || "rsa_"}`);
    }
  }
});

test("an RSA-OAEP entry with an ek is malformed, before the RSA key is used", async () => {
  const hpkeTopic = textVector(v, "hpke_key_message_topic");
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

test("an X-Wing certificate takes only its own X-Wing key, and an X-Wing key nothing else", async () => {
  const xCert = hexVector(v, "xwing_subscriber_certificate");
  const xKey = hexVector(v, "xwing_subscriber_private_key_pkcs8");
  const otherSeed = xKey.slice();
  otherSeed[otherSeed.length - 1] = (otherSeed[otherSeed.length - 1] as number) ^ 1;
  const refused: [Uint8Array, Uint8Array, RegExp][] = [
    [xCert, hexVector(v, "hpke_subscriber_private_key_pkcs8"), /not an X-Wing key/],
    [xCert, otherSeed, /does not belong/],
    [hexVector(v, "hpke_subscriber_certificate"), xKey, /./],
    [hexVector(v, "subscriber_certificate"), xKey, /./],
  ];
  for (const [cert, key, message] of refused) {
    await assert.rejects(loadSubscriberIdentity(cert, key), message);
  }
});
