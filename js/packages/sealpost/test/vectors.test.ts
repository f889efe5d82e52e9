/** The test vectors of docs/PROTOCOL.md, as protocol/tests/vectors.rs checks them in Rust. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { sigStructure } from "../src/cose.js";
import {
  createKeyMessage,
  importContentKey,
  leafHash,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  Opener,
  parseCertificate,
  parseEnvelope,
  rootAndPaths,
  sealBurst,
  sealEnvelope,
  toHex,
  Verifier,
  wrapForSubscriber,
} from "../src/index.js";
import { hexVector, readVectors, textVector } from "./vectors.js";

const v = readVectors();
const publishedAt = BigInt(textVector(v, "published_at"));
const topic = textVector(v, "topic");
const openAt = Number(publishedAt) + 60;
const te = new TextEncoder();

async function setup() {
  const verifier = await Verifier.create(hexVector(v, "ca_certificate"));
  const subscriber = await loadSubscriberIdentity(
    hexVector(v, "subscriber_certificate"),
    hexVector(v, "subscriber_private_key_pkcs8"),
  );
  const publisher = await loadPublisherIdentity(
    hexVector(v, "publisher_certificate"),
    hexVector(v, "publisher_private_key_pkcs8"),
  );
  return { verifier, subscriber, publisher };
}

test("sealing the vector inputs yields exactly the vector envelope", async () => {
  const { publisher } = await setup();
  const envelope = await sealEnvelope({
    identity: publisher,
    topic,
    plaintext: hexVector(v, "plaintext"),
    index: {
      publisher: publisher.certificate.id,
      epoch: BigInt(textVector(v, "epoch")),
      location: `mqtt:sealpost/keys/${publisher.certificate.id}`,
    },
    contentKey: await importContentKey(hexVector(v, "content_key")),
    seq: BigInt(textVector(v, "seq")),
    salt: hexVector(v, "nonce_salt"),
    publishedAt,
    embedCertificate: false,
  });
  assert.equal(toHex(envelope), textVector(v, "envelope"));
});

test("the vector key message yields the content key, and the envelope opens", async () => {
  const { verifier, subscriber } = await setup();
  const opener = new Opener({ verifier, identity: subscriber });
  const update = await opener.acceptKeyMessage(
    textVector(v, "key_message_topic"),
    hexVector(v, "key_message"),
    openAt,
  );
  assert.equal(update.publisher, "vector-pub");
  assert.deepEqual(update.newEpochs, [BigInt(textVector(v, "epoch"))]);
  const opened = await opener.open(topic, hexVector(v, "envelope"), openAt);
  assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
  assert.equal(opened.publisher, "vector-pub");
  assert.equal(opened.seq, BigInt(textVector(v, "seq")));
  assert.equal(opened.publishedAt, publishedAt);
});

test("the envelope opens with the content key given directly (KDC path)", async () => {
  const { verifier } = await setup();
  const opener = new Opener({ verifier });
  await opener.addPublisherCertificate(hexVector(v, "publisher_certificate"), openAt);
  await opener.addContentKey("vector-pub", 7n, hexVector(v, "content_key"));
  const opened = await opener.open(topic, hexVector(v, "envelope"), openAt);
  assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
});

test("a key message this SDK builds opens the same way (RSA-OAEP is randomised)", async () => {
  const { verifier, subscriber, publisher } = await setup();
  const subCert = await parseCertificate(hexVector(v, "subscriber_certificate"));
  const recipient = await wrapForSubscriber(subCert, {
    epoch: 7n,
    key: hexVector(v, "content_key"),
  });
  const keyTopic = textVector(v, "key_message_topic");
  const message = await createKeyMessage(publisher, subCert, [recipient], publishedAt, keyTopic);
  assert.notEqual(toHex(message), textVector(v, "key_message"));
  const opener = new Opener({ verifier, identity: subscriber });
  const update = await opener.acceptKeyMessage(keyTopic, message, openAt);
  assert.deepEqual(update.newEpochs, [7n]);
  const opened = await opener.open(topic, hexVector(v, "envelope"), openAt);
  assert.equal(toHex(opened.payload), textVector(v, "plaintext"));
});

const burstSize = Number(textVector(v, "burst_size"));
const burst = Array.from({ length: burstSize }, (_, i) => ({
  topic: textVector(v, `burst_topic_${i}`),
  plaintext: hexVector(v, `burst_plaintext_${i}`),
  envelope: hexVector(v, `burst_envelope_${i}`),
}));

test("each version 2 burst vector opens to its plaintext; the tree's root is burst_root", async () => {
  const { verifier } = await setup();
  const opener = new Opener({ verifier });
  await opener.addPublisherCertificate(hexVector(v, "publisher_certificate"), openAt);
  await opener.addContentKey("vector-pub", 7n, hexVector(v, "content_key"));
  const leaves: Uint8Array[] = [];
  for (const [i, m] of burst.entries()) {
    const opened = await opener.open(m.topic, m.envelope, openAt);
    assert.equal(toHex(opened.payload), toHex(m.plaintext));
    assert.equal(opened.seq, BigInt(textVector(v, "burst_seq")) + BigInt(i));
    const parsed = parseEnvelope(m.envelope);
    const tbs = sigStructure(parsed.sign1.protectedBytes, te.encode(m.topic), parsed.sign1.payload);
    leaves.push(await leafHash(tbs));
    assert.equal(parsed.proof?.treeSize, BigInt(burstSize));
    assert.equal(parsed.proof?.leafIndex, BigInt(i));
  }
  const { root, paths } = await rootAndPaths(leaves);
  assert.equal(toHex(root), textVector(v, "burst_root"));
  for (const [i, m] of burst.entries()) {
    const proof = parseEnvelope(m.envelope).proof;
    assert.deepEqual(proof?.path.map(toHex), paths[i]?.map(toHex));
  }
});

test("sealing the burst vector inputs yields exactly the burst vector envelopes", async () => {
  const { publisher } = await setup();
  const envelopes = await sealBurst({
    identity: publisher,
    messages: burst.map(({ topic, plaintext }) => ({ topic, plaintext })),
    index: {
      publisher: publisher.certificate.id,
      epoch: BigInt(textVector(v, "epoch")),
      location: `mqtt:sealpost/keys/${publisher.certificate.id}`,
    },
    contentKey: await importContentKey(hexVector(v, "content_key")),
    firstSeq: BigInt(textVector(v, "burst_seq")),
    salt: hexVector(v, "nonce_salt"),
    publishedAt,
    embedCertificate: false,
  });
  assert.deepEqual(
    envelopes.map(toHex),
    burst.map((m) => toHex(m.envelope)),
  );
});
