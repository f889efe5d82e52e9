/**
 * Live HPKE interop (issue 16 item 2, issue 17): X25519 and X-Wing subscribers made by
 * `sealpost-certs issue subscriber --key x25519|xwing`, through the sealpost broker and
 * Mosquitto. For each KEM, the Rust publisher wraps for the TS reader; the TS publisher
 * wraps for a Rust reader of that KEM and a Rust RSA reader at once, and revoking the TS
 * reader rotates the key for both key types. A KEM certificate cannot authenticate a TLS
 * client (neither X25519 nor X-Wing signs), so on the sealpost broker these readers log in
 * as password users whose own ACL rule names their key topic.
 */
import assert from "node:assert/strict";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  FileReplayStore,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  type Message,
  Publisher,
  pemDecode,
  pkcs8V1,
  type Rejection,
  Subscriber,
  toBase64,
} from "../src/node.js";
import {
  addBrokerUser,
  type Broker,
  cli,
  eventually,
  issue,
  makePki,
  type Pki,
  rustBin,
  start,
  startMosquitto,
  startSealpost,
} from "./harness.js";

let pki: Pki;
const brokers: Broker[] = [];
/** The KEMs, each with its TS and Rust readers (`tsub<suffix>`, `rsub<suffix>`). */
const KEMS = [
  { key: "x25519", label: "X25519", algorithm: "X25519", suffix: "x" },
  { key: "xwing", label: "X-Wing", algorithm: "X-Wing", suffix: "w" },
];
const X_READERS = KEMS.flatMap((k) => [`tsub${k.suffix}`, `rsub${k.suffix}`]);
const password = (user: string) => `${user}-password`;

before(async () => {
  pki = await makePki("hpke");
  // One TS publisher identity per KEM: each test's publisher starts at epoch 1, and a key
  // message another test left retained must not carry a different key for that epoch.
  for (const id of ["hrpub", ...KEMS.map((k) => `htpub${k.suffix}`)]) {
    await issue(pki, "publisher", id, ["--topics", "hpke/#"]);
  }
  for (const k of KEMS) {
    for (const id of [`tsub${k.suffix}`, `rsub${k.suffix}`]) {
      await issue(pki, "subscriber", id, ["--key", k.key]);
    }
  }
  await issue(pki, "subscriber", "rsub");
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  const passwd = join(pki.dir, "broker.passwd");
  for (const user of X_READERS) addBrokerUser(passwd, user, password(user));
  const rules = X_READERS.map(
    (user) => `[[acl.rules]]
identity = "user:${user}"
publish = []
subscribe = ["hpke/#", "sealpost/keys/+/${user}"]
`,
  ).join("");
  brokers.push(
    await startSealpost(pki, `[auth]\npassword_file = "${passwd}"\n${rules}`),
    await startMosquitto(pki.dir),
  );
});

after(async () => {
  for (const b of brokers) await b.stop();
});

const pemKey = (der: Uint8Array) =>
  `-----BEGIN PRIVATE KEY-----\n${toBase64(der)}\n-----END PRIVATE KEY-----\n`;

/** MQTT.js options for a certificate holder: TLS client certificate on sealpost. */
async function tlsOptions(broker: Broker, id: string) {
  if (broker.name !== "sealpost") return {};
  return {
    ca: await pki.read("ca.pem"),
    cert: await pki.read(`${id}.pem`),
    key: pemKey(new Uint8Array(pkcs8V1(pemDecode(await pki.read(`${id}.key`), "PRIVATE KEY")))),
    rejectUnauthorized: true,
  };
}

/** Where and how the Rust CLIs connect as `id`: X25519 readers as password users. */
function rustArgs(broker: Broker, id: string): string[] {
  const x = X_READERS.includes(id);
  const login = x && broker.name === "sealpost" ? ["-u", id, "-P", password(id)] : [];
  return [
    "-L",
    x ? broker.url : broker.tlsUrl,
    ...login,
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

/** The TS reader of `kem` (`tsubx`, `tsubw`), as a password user on sealpost. */
async function tsKemSubscriber(broker: Broker, kem: Kem, topic: string, name: string) {
  const id = `tsub${kem.suffix}`;
  const login = broker.name === "sealpost" ? { username: id, password: password(id) } : {};
  const identity = await loadSubscriberIdentity(
    await pki.read(`${id}.pem`),
    await pki.read(`${id}.key`),
  );
  assert.equal(identity.key.algorithm.name, kem.algorithm);
  const sub = await Subscriber.connect({
    url: broker.url,
    mqtt: { ...login, clientId: `ts${kem.suffix}-${name}-${broker.name}` },
    topics: [topic],
    caCertificate: await pki.read("ca.pem"),
    crl: await pki.read("crl.pem"),
    identity,
    replayStore: new FileReplayStore(join(pki.dir, `replay-${name}-${broker.name}.json`)),
    holdMs: 3000,
  });
  const c: Collected = { sub, messages: [], rejections: [] };
  sub.on("message", (m) => c.messages.push(m));
  sub.on("rejected", (r) => c.rejections.push(r));
  sub.on("error", (e) => console.error(`subscriber ${name}: ${e.message}`));
  return c;
}

const text = (m: Message) => new TextDecoder().decode(m.payload);
type Kem = (typeof KEMS)[number];

for (const brokerName of ["sealpost", "mosquitto"]) {
  describe(`HPKE interop through ${brokerName}`, () => {
    const broker = () => brokers.find((b) => b.name === brokerName) as Broker;

    for (const kem of KEMS) {
      const ts = `tsub${kem.suffix}`;
      const rust = `rsub${kem.suffix}`;

      test(`Rust publisher -> TS ${kem.label} subscriber`, async () => {
        const c = await tsKemSubscriber(
          broker(),
          kem,
          `hpke/rust/${kem.key}/#`,
          `r2t${kem.suffix}`,
        );
        try {
          const grants = join(pki.dir, `grants-r2t${kem.suffix}-${brokerName}`);
          await mkdir(grants, { recursive: true });
          await copyFile(pki.path(`${ts}.pem`), join(grants, `${ts}.pem`));
          await cli("sealpost-pub", [
            ...rustArgs(broker(), "hrpub"),
            "-t",
            `hpke/rust/${kem.key}/a`,
            "-m",
            "from rust, wrapped with HPKE",
            "--grant-dir",
            grants,
            "--state-dir",
            join(pki.dir, `state-hrpub-${kem.key}-${brokerName}`),
          ]);
          await eventually(() => c.messages.length === 1, "the message from Rust");
          assert.equal(text(c.messages[0] as Message), "from rust, wrapped with HPKE");
          assert.equal(c.messages[0]?.publisher, "hrpub");
          assert.deepEqual(c.rejections, []);
        } finally {
          await c.sub.close();
        }
      });

      test(`TS publisher -> Rust ${kem.label} and RSA readers; revoking the TS ${kem.label} reader rotates for both types`, async () => {
        const topic = `hpke/ts/${kem.key}`;
        const c = await tsKemSubscriber(broker(), kem, topic, `t2r${kem.suffix}`);
        const readers = [rust, "rsub"].map((id) =>
          start(rustBin("sealpost-sub"), [
            ...rustArgs(broker(), id),
            "-t",
            topic,
            "-W",
            "60",
            "--state-dir",
            join(pki.dir, `sub-${id}-${kem.key}-${brokerName}`),
            "--hold",
            "2",
          ]),
        );
        const publisher = await Publisher.start({
          url: broker().tlsUrl,
          mqtt: {
            ...(await tlsOptions(broker(), `htpub${kem.suffix}`)),
            clientId: `htpub-${kem.key}-${brokerName}`,
          },
          identity: await loadPublisherIdentity(
            await pki.read(`htpub${kem.suffix}.pem`),
            await pki.read(`htpub${kem.suffix}.key`),
          ),
          caCertificate: await pki.read("ca.pem"),
          crl: await pki.read("crl.pem"),
          stateDir: join(pki.dir, `state-htpub-${kem.key}-${brokerName}`),
        });
        try {
          for (const id of [rust, "rsub", ts]) {
            await publisher.grant(await pki.read(`${id}.pem`));
          }
          // Retained: the Rust readers get it however long they take to subscribe.
          await publisher.publish(topic, "one", { retain: true });
          await eventually(() => c.messages.length === 1, `the first message (TS ${kem.label})`);
          for (const r of readers) await eventually(() => r.stdout().includes("one"), "one (Rust)");
          const epoch = publisher.currentEpoch;
          await publisher.revoke(ts);
          assert.ok(publisher.currentEpoch > epoch, "revoking rotates the key");
          assert.deepEqual(publisher.readers().sort(), ["rsub", rust]);
          await publisher.publish(topic, "two");
          for (const r of readers) {
            await eventually(() => r.stdout().includes("two"), "two (Rust)");
            assert.deepEqual(r.stdout().trim().split("\n"), ["one", "two"]);
            assert.ok(!/^rejected /m.test(r.stderr()), r.stderr());
          }
          await eventually(() => c.rejections.length === 1, "the revoked reader's rejection");
          assert.equal(c.rejections[0]?.kind, "unknown_key");
          assert.deepEqual(c.messages.map(text), ["one"]);
        } finally {
          await publisher.close();
          for (const r of readers) await r.stop();
          await c.sub.close();
        }
      });
    }
  });
}
