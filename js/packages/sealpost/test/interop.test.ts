/**
 * Live interop through real brokers (the sealpost broker and Mosquitto): the Rust CLIs
 * (`sealpost-pub`, `sealpost-sub`, `sealpost-certs`) against this SDK, both ways, both
 * key-delivery modes, and the attack cases, which the TS and the Rust subscriber must
 * reject with the same kinds.
 */
import assert from "node:assert/strict";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt from "mqtt";
import { decodeStrict, encodeCbor } from "../src/cbor.js";
import { encodeSign1, LABEL_SEQ, parseSign1 } from "../src/cose.js";
import {
  encodeProof,
  FileReplayStore,
  importContentKey,
  type KdcCredentials,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  type Message,
  nodeKdcTransport,
  Publisher,
  parseEnvelope,
  parseProof,
  pemDecode,
  pkcs8V1,
  type Rejection,
  randomBytes,
  Subscriber,
  sealEnvelope,
  toBase64,
} from "../src/node.js";
import {
  addKdcReader,
  type Broker,
  cli,
  eventually,
  freePort,
  issue,
  kdcArgs,
  makePki,
  type Pki,
  type Running,
  rustBin,
  start,
  startMosquitto,
  startSealpost,
  waitForPort,
} from "./harness.js";

let pki: Pki;
let foreign: Pki;
const brokers: Broker[] = [];

before(async () => {
  pki = await makePki("interop");
  for (const id of ["rpub", "tpub", "revpub"]) {
    await issue(pki, "publisher", id, ["--topics", "interop/#"]);
  }
  for (const id of ["rsub", "tsub"]) await issue(pki, "subscriber", id);
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  await cli("sealpost-certs", ["revoke", "--dir", join(pki.dir, "pki"), pki.path("revpub.pem")]);
  foreign = await makePki("foreign");
  await issue(foreign, "publisher", "fpub", ["--topics", "interop/#"]);
  brokers.push(await startSealpost(pki), await startMosquitto(pki.dir));
});

after(async () => {
  for (const b of brokers) await b.stop();
});

/** How the SDKs connect to `broker`: TLS with a client certificate on sealpost. */
function urlFor(broker: Broker): string {
  return broker.tlsUrl;
}

async function tlsOptions(broker: Broker, id: string) {
  if (broker.name !== "sealpost") return {};
  return {
    ca: await pki.read("ca.pem"),
    cert: await pki.read(`${id}.pem`),
    // Node's TLS, like WebCrypto, reads only version-1 PKCS#8 Ed25519 keys.
    key: pemEncode(new Uint8Array(pkcs8V1(pemDecode(await pki.read(`${id}.key`), "PRIVATE KEY")))),
    rejectUnauthorized: true,
  };
}

/** The Rust CLIs' common arguments for identity `id` on `broker`. */
function rustArgs(broker: Broker, id: string): string[] {
  return [
    "-L",
    urlFor(broker),
    "--cert",
    pki.path(`${id}.pem`),
    "--key",
    pki.path(`${id}.key`),
    "--cafile",
    pki.path("ca.pem"),
    "--crl",
    pki.path("crl.pem"),
  ];
}

interface Collected {
  sub: Subscriber;
  messages: Message[];
  rejections: Rejection[];
}

async function tsSubscriber(
  broker: Broker,
  topics: string[],
  name: string,
  kdc?: KdcCredentials[],
): Promise<Collected> {
  const sub = await Subscriber.connect({
    url: urlFor(broker),
    mqtt: { ...(await tlsOptions(broker, "tsub")), clientId: `ts-${name}-${broker.name}` },
    topics,
    caCertificate: await pki.read("ca.pem"),
    crl: await pki.read("crl.pem"),
    identity: await loadSubscriberIdentity(await pki.read("tsub.pem"), await pki.read("tsub.key")),
    kdc,
    kdcTransport: nodeKdcTransport(await pki.read("ca.pem")),
    replayStore: new FileReplayStore(join(pki.dir, `replay-${name}-${broker.name}.json`)),
    holdMs: 3000,
  });
  const c: Collected = { sub, messages: [], rejections: [] };
  sub.on("message", (m) => c.messages.push(m));
  sub.on("rejected", (r) => {
    c.rejections.push(r);
    if (process.env.SEALPOST_TEST_DEBUG) console.error(`subscriber ${name}: ${r.reason.message}`);
  });
  sub.on("error", (e) => console.error(`subscriber ${name}: ${e.message}`));
  sub.on("keyFetchFailed", (e) => console.error(`subscriber ${name}: ${e.message}`));
  return c;
}

async function grantDir(name: string, ids: string[]): Promise<string> {
  const dir = join(pki.dir, `grants-${name}`);
  await mkdir(dir, { recursive: true });
  for (const id of ids) await copyFile(pki.path(`${id}.pem`), join(dir, `${id}.pem`));
  return dir;
}

const pemEncode = (der: Uint8Array) =>
  `-----BEGIN PRIVATE KEY-----\n${toBase64(der)}\n-----END PRIVATE KEY-----\n`;

/**
 * One state directory per broker for the Rust publisher `rpub`: its key epochs and
 * sequence numbers continue across the tests, as a real publisher's do (a publisher that
 * lost its state would reuse epoch numbers with new keys).
 */
const rpubState = (brokerName: string) => join(pki.dir, `state-rpub-${brokerName}`);
/** The same for the TS publisher `tpub`. */
const tpubState = (brokerName: string) => join(pki.dir, `state-tpub-${brokerName}`);

const text = (m: Message) => new TextDecoder().decode(m.payload);

/** The rejection kinds `sealpost-sub` printed (`rejected TOPIC: REASON (KIND)`). */
function rustKinds(proc: Running): string[] {
  return [...proc.stderr().matchAll(/^rejected .*\((\w+)\)$/gm)].map((m) => m[1] as string);
}

for (const brokerName of ["sealpost", "mosquitto"]) {
  describe(`interop through ${brokerName}`, () => {
    const broker = () => brokers.find((b) => b.name === brokerName) as Broker;

    test("Rust publisher -> TS subscriber (key messages)", async () => {
      const c = await tsSubscriber(broker(), ["interop/rust/#"], "r2t");
      try {
        const grants = await grantDir("r2t", ["tsub"]);
        await cli("sealpost-pub", [
          ...rustArgs(broker(), "rpub"),
          "-t",
          "interop/rust/a",
          "-m",
          "from rust",
          "--grant-dir",
          grants,
          "--state-dir",
          rpubState(brokerName),
        ]);
        await eventually(() => c.messages.length === 1, "the message from Rust");
        const [m] = c.messages as [Message];
        assert.equal(text(m), "from rust");
        assert.equal(m.publisher, "rpub");
        assert.equal(m.topic, "interop/rust/a");
        assert.deepEqual(c.rejections, []);
      } finally {
        await c.sub.close();
      }
    });

    test("TS publisher -> Rust subscriber (retained key message and data)", async () => {
      const publisher = await Publisher.start({
        url: urlFor(broker()),
        mqtt: { ...(await tlsOptions(broker(), "tpub")), clientId: `tpub-${brokerName}` },
        identity: await loadPublisherIdentity(
          await pki.read("tpub.pem"),
          await pki.read("tpub.key"),
        ),
        caCertificate: await pki.read("ca.pem"),
        crl: await pki.read("crl.pem"),
        stateDir: tpubState(brokerName),
      });
      try {
        await publisher.grant(await pki.read("rsub.pem"));
        await publisher.publish("interop/ts/a", "from typescript", { retain: true });
      } finally {
        await publisher.close();
      }
      const out = await cli("sealpost-sub", [
        ...rustArgs(broker(), "rsub"),
        "-t",
        "interop/ts/a",
        "-C",
        "1",
        "-W",
        "20",
        "--state-dir",
        join(pki.dir, `sub-t2r-${brokerName}`),
      ]);
      assert.equal(out.trim(), "from typescript");
    });

    test("TS publisher revokes: the revoked TS reader is cut off, the Rust reader goes on, across a restart", async () => {
      const topic = "interop/revoke/a";
      const c = await tsSubscriber(broker(), [topic], "revoke");
      const rust = start(rustBin("sealpost-sub"), [
        ...rustArgs(broker(), "rsub"),
        "-t",
        topic,
        "-W",
        "60",
        "--state-dir",
        join(pki.dir, `sub-revoke-${brokerName}`),
        "--hold",
        "2",
      ]);
      const options = {
        url: urlFor(broker()),
        mqtt: { ...(await tlsOptions(broker(), "tpub")), clientId: `tpub-revoke-${brokerName}` },
        identity: await loadPublisherIdentity(
          await pki.read("tpub.pem"),
          await pki.read("tpub.key"),
        ),
        caCertificate: await pki.read("ca.pem"),
        crl: await pki.read("crl.pem"),
        stateDir: tpubState(brokerName),
      };
      try {
        let publisher = await Publisher.start(options);
        await publisher.grant(await pki.read("tsub.pem"));
        await publisher.grant(await pki.read("rsub.pem"));
        // Retained: it reaches the Rust subscriber however long it takes to subscribe.
        await publisher.publish(topic, "one", { retain: true });
        await eventually(() => c.messages.length === 1, "the first message (TS)");
        await eventually(() => rust.stdout().includes("one"), "the first message (Rust)");
        const epoch = publisher.currentEpoch;
        await publisher.revoke("tsub");
        assert.ok(publisher.currentEpoch > epoch, "revoking rotates the key");
        assert.deepEqual(publisher.readers(), ["rsub"]);
        await publisher.publish(topic, "two");
        await publisher.close();
        // A restarted publisher resumes above its persisted sequence numbers.
        publisher = await Publisher.start(options);
        await publisher.publish(topic, "three");
        await publisher.close();
        await eventually(() => rust.stdout().includes("three"), "the later messages (Rust)");
        assert.deepEqual(rust.stdout().trim().split("\n"), ["one", "two", "three"]);
        assert.deepEqual(rustKinds(rust), []);
        await eventually(() => c.rejections.length === 2, "the revoked reader's rejections");
        assert.deepEqual(
          c.rejections.map((r) => r.kind),
          ["unknown_key", "unknown_key"],
        );
        assert.deepEqual(c.messages.map(text), ["one"]);
      } finally {
        await rust.stop();
        await c.sub.close();
      }
    });

    test("TS publisher bursts (version 2 by default, version 1 on request) -> Rust subscriber", async () => {
      const options = {
        url: urlFor(broker()),
        mqtt: { ...(await tlsOptions(broker(), "tpub")), clientId: `tpub-burst-${brokerName}` },
        identity: await loadPublisherIdentity(
          await pki.read("tpub.pem"),
          await pki.read("tpub.key"),
        ),
        caCertificate: await pki.read("ca.pem"),
        crl: await pki.read("crl.pem"),
        stateDir: tpubState(brokerName),
      };
      const topics = [0, 1, 2, 3, 4].map((i) => `interop/burst/${i}`);
      let publisher = await Publisher.start(options);
      try {
        await publisher.grant(await pki.read("rsub.pem"));
        // Published concurrently: one burst, one signature.
        await Promise.all(
          topics.map((t, i) => publisher.publish(t, `burst ${i}`, { retain: true })),
        );
      } finally {
        await publisher.close();
      }
      publisher = await Publisher.start({ ...options, wireVersion: 1 });
      try {
        await publisher.publish("interop/burst/v1", "version 1", { retain: true });
      } finally {
        await publisher.close();
      }
      const spy = await mqtt.connectAsync(broker().url, { clientId: `spy-burst-${brokerName}` });
      const seen = new Map<string, Uint8Array>();
      spy.on("message", (t, p) => seen.set(t, new Uint8Array(p)));
      try {
        await spy.subscribeAsync("interop/burst/#", { qos: 1 });
        await eventually(() => seen.size === 6, "the retained envelopes");
      } finally {
        await spy.endAsync();
      }
      const burst = topics.map((t) => parseEnvelope(seen.get(t) as Uint8Array));
      assert.deepEqual(
        burst.map((e) => [e.proof?.treeSize, e.proof?.leafIndex]),
        topics.map((_, i) => [5n, BigInt(i)]),
      );
      assert.equal(new Set(burst.map((e) => toBase64(e.sign1.signature))).size, 1);
      assert.equal(parseEnvelope(seen.get("interop/burst/v1") as Uint8Array).proof, null);
      const out = await cli("sealpost-sub", [
        ...rustArgs(broker(), "rsub"),
        "-t",
        "interop/burst/#",
        "-C",
        "6",
        "-W",
        "20",
        "--state-dir",
        join(pki.dir, `sub-burst-${brokerName}`),
      ]);
      assert.deepEqual(out.trim().split("\n").sort(), [
        "burst 0",
        "burst 1",
        "burst 2",
        "burst 3",
        "burst 4",
        "version 1",
      ]);
    });

    test("Rust publisher's KDC -> TS subscriber (KDC mode, pinned certificate)", async () => {
      const state = rpubState(brokerName);
      const port = await freePort();
      const creds = join(pki.dir, `creds-${brokerName}.json`);
      const credentials = await addKdcReader(pki, "tsub", state, port, creds);
      const c = await tsSubscriber(broker(), ["interop/kdc/#"], "kdc", [credentials]);
      const pub = start(rustBin("sealpost-pub"), [
        ...rustArgs(broker(), "rpub"),
        "-t",
        "interop/kdc/a",
        "-m",
        "via the KDC",
        ...kdcArgs(pki, state, port),
      ]);
      try {
        await waitForPort(port);
        await eventually(() => c.messages.length === 1, "the message through the KDC", 20_000);
        assert.equal(text(c.messages[0] as Message), "via the KDC");
        assert.deepEqual(c.rejections, []);
      } finally {
        await pub.stop();
        await c.sub.close();
      }
    });

    test("attacks: TS and Rust subscribers reject with the same kinds", async () => {
      const topics = ["interop/attack/#", "other/#"];
      const c = await tsSubscriber(broker(), topics, "attack");
      const rust = start(rustBin("sealpost-sub"), [
        ...rustArgs(broker(), "rsub"),
        ...topics.flatMap((t) => ["-t", t]),
        "-W",
        "60",
        "--state-dir",
        join(pki.dir, `sub-attack-${brokerName}`),
        "--hold",
        "2",
      ]);
      const spy = await mqtt.connectAsync(broker().url, { clientId: `spy-${brokerName}` });
      const seen = new Map<string, Buffer>();
      spy.on("message", (t, p) => seen.set(t, Buffer.from(p)));
      await spy.subscribeAsync("interop/#", { qos: 1 });
      try {
        await eventually(
          () => rust.stderr().length > 0 || rust.child.pid !== undefined,
          "sealpost-sub",
        );
        await new Promise((r) => setTimeout(r, 1500)); // the Rust subscriber subscribes
        const grants = await grantDir("attack", ["tsub", "rsub"]);
        const state = rpubState(brokerName);
        for (const [topic, body] of [
          ["interop/attack/a", "genuine"],
          ["interop/hidden/x", "never seen by the subscribers"],
        ]) {
          await cli("sealpost-pub", [
            ...rustArgs(broker(), "rpub"),
            "-t",
            topic as string,
            "-m",
            body as string,
            "--grant-dir",
            grants,
            "--state-dir",
            state,
            "--no-rotate-on-grant",
          ]);
        }
        await eventually(() => c.messages.length === 1, "the genuine message (TS)");
        await eventually(() => rust.stdout().includes("genuine"), "the genuine message (Rust)");
        await eventually(() => seen.has("interop/hidden/x"), "the spy's copy");
        const genuine = seen.get("interop/attack/a") as Buffer;
        const hidden = seen.get("interop/hidden/x") as Buffer;

        // An attacker bumps the sequence number (so it passes the replay window).
        const sign1 = parseSign1(new Uint8Array(genuine));
        const header = decodeStrict(sign1.protectedBytes, "header") as Map<number, unknown>;
        header.set(LABEL_SEQ, BigInt(header.get(LABEL_SEQ) as number) + 1000n);
        const bumped = encodeSign1(
          encodeCbor(header),
          sign1.x5chain,
          sign1.payload,
          sign1.signature,
          sign1.vdp, // the Rust publisher seals version 2: keep the inclusion proof
        );
        // The same with a tree size its (empty) inclusion path cannot fit.
        const genuineProof = parseProof(sign1.vdp);
        const misfit = encodeSign1(
          encodeCbor(header.set(LABEL_SEQ, BigInt(header.get(LABEL_SEQ) as bigint) + 1n)),
          sign1.x5chain,
          sign1.payload,
          sign1.signature,
          encodeProof({ ...genuineProof, treeSize: genuineProof.treeSize + 1n }),
        );
        // Publishers outside the trust: another CA's, and one the CA revoked.
        const forged = async (store: Pki, id: string) =>
          sealEnvelope({
            identity: await loadPublisherIdentity(
              await store.read(`${id}.pem`),
              await store.read(`${id}.key`),
            ),
            topic: "interop/attack/a",
            plaintext: new TextEncoder().encode("forged"),
            index: { publisher: id, epoch: 1n, location: `mqtt:sealpost/keys/${id}` },
            contentKey: await importContentKey(randomBytes(32)),
            seq: 1n,
            salt: randomBytes(4),
            publishedAt: BigInt(Math.floor(Date.now() / 1000)),
            embedCertificate: true,
          });
        const attacks: [string, Uint8Array][] = [
          ["interop/attack/a", bumped],
          ["interop/attack/a", misfit],
          ["interop/attack/a", genuine],
          ["interop/attack/c", hidden],
          ["other/x", hidden],
          ["interop/attack/a", await forged(foreign, "fpub")],
          ["interop/attack/a", await forged(pki, "revpub")],
        ];
        const expected = [
          "bad_signature",
          "bad_inclusion_proof",
          "replayed",
          "bad_signature",
          "topic_not_permitted",
          "untrusted_publisher",
          "revoked",
        ];
        for (const [topic, bytes] of attacks) {
          await spy.publishAsync(topic, Buffer.from(bytes), { qos: 1 });
          await c.sub.settled();
        }
        await eventually(() => c.rejections.length >= expected.length, "the TS rejections");
        await eventually(() => rustKinds(rust).length >= expected.length, "the Rust rejections");
        assert.deepEqual(
          c.rejections.map((r) => r.kind),
          expected,
        );
        assert.deepEqual(rustKinds(rust), expected);
        assert.equal(c.messages.length, 1, "nothing but the genuine message was delivered");
      } finally {
        await spy.endAsync();
        await rust.stop();
        await c.sub.close();
      }
    });
  });
}
