/**
 * The revocation list reloaded while running (Node.js subscriber, `fileCrlSource`),
 * through a real broker (Mosquitto) with certificates from `sealpost-certs`: a publisher
 * revoked after the subscriber started is cut off once the new list is read; unreadable
 * or foreign lists are refused and the list in force stays; and the KDC client refuses a
 * KDC whose certificate the reloaded list revokes, before it sends the password.
 */
import assert from "node:assert/strict";
import { copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  FileReplayStore,
  fileCrlSource,
  type KdcCredentials,
  type KeyFetchFailed,
  loadPublisherIdentity,
  loadSubscriberIdentity,
  type Message,
  nodeKdcTransport,
  Publisher,
  type Rejection,
  type RevocationList,
  Subscriber,
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
  rustBin,
  start,
  startMosquitto,
  waitForPort,
} from "./harness.js";

let pki: Pki;
let foreign: Pki;
let broker: Broker;
const RELOAD_MS = 200;

before(async () => {
  pki = await makePki("crl");
  foreign = await makePki("crl-foreign");
  await issue(pki, "publisher", "cpub", ["--topics", "crl/#"]);
  await issue(pki, "publisher", "kpub", ["--topics", "crl/#"]);
  await issue(pki, "subscriber", "csub");
  await issue(pki, "server", "127.0.0.1", ["127.0.0.1"]);
  broker = await startMosquitto(pki.dir);
});

after(async () => {
  await broker?.stop();
});

const revoke = (name: string) =>
  cli("sealpost-certs", ["revoke", "--dir", join(pki.dir, "pki"), pki.path(name)]);

interface Watched {
  sub: Subscriber;
  messages: Message[];
  rejections: Rejection[];
  reloaded: RevocationList[];
  failures: Error[];
  keyFailures: KeyFetchFailed[];
}

/** A subscriber whose revocation list is the file `watched`, read every 200 ms. */
async function watchingSubscriber(
  name: string,
  watched: string,
  kdc?: KdcCredentials[],
): Promise<Watched> {
  const sub = await Subscriber.connect({
    url: broker.url,
    mqtt: { clientId: `crl-${name}` },
    topics: ["crl/#"],
    caCertificate: await pki.read("ca.pem"),
    crl: fileCrlSource(watched),
    crlReloadMs: RELOAD_MS,
    identity: await loadSubscriberIdentity(await pki.read("csub.pem"), await pki.read("csub.key")),
    kdc,
    kdcTransport: nodeKdcTransport(await pki.read("ca.pem")),
    replayStore: new FileReplayStore(join(pki.dir, `replay-${name}.json`)),
    holdMs: 2000,
  });
  const w: Watched = {
    sub,
    messages: [],
    rejections: [],
    reloaded: [],
    failures: [],
    keyFailures: [],
  };
  sub.on("message", (m) => w.messages.push(m));
  sub.on("rejected", (r) => w.rejections.push(r));
  sub.on("crlReloaded", (l) => w.reloaded.push(l));
  sub.on("crlReloadFailed", (e) => w.failures.push(e));
  sub.on("keyFetchFailed", (e) => w.keyFailures.push(e));
  return w;
}

const text = (m: Message) => new TextDecoder().decode(m.payload);
const settle = () => new Promise((r) => setTimeout(r, 3 * RELOAD_MS));

test("a publisher revoked while the subscriber runs is cut off at the next reload; bad lists are refused", async () => {
  const watched = join(pki.dir, "watched-publisher.pem");
  await copyFile(pki.path("crl.pem"), watched);
  const w = await watchingSubscriber("publisher", watched);
  const publisher = await Publisher.start({
    url: broker.url,
    mqtt: { clientId: "crl-cpub" },
    identity: await loadPublisherIdentity(await pki.read("cpub.pem"), await pki.read("cpub.key")),
    caCertificate: await pki.read("ca.pem"),
    crl: await pki.read("crl.pem"),
    stateDir: join(pki.dir, "state-cpub"),
  });
  try {
    await publisher.grant(await pki.read("csub.pem"));
    await publisher.publish("crl/a", "before");
    await eventually(() => w.messages.length === 1, "the message before revocation");
    const inForce = w.sub.opener.verifier.revocationList?.number;

    // Unreadable, and signed by another CA: refused, the list in force stays.
    await writeFile(watched, "-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n");
    await eventually(() => w.failures.length >= 1, "the refusal of a garbled list");
    await copyFile(foreign.path("crl.pem"), watched);
    const garbled = w.failures.length;
    await eventually(() => w.failures.length > garbled, "the refusal of a foreign list");
    assert.match(w.failures.at(-1)?.message ?? "", /another CA|does not verify with the CA key/);
    assert.equal(w.sub.opener.verifier.revocationList?.number, inForce);
    await publisher.publish("crl/a", "still trusted");
    await eventually(() => w.messages.length === 2, "the message under the list in force");

    await revoke("cpub.pem");
    await copyFile(pki.path("crl.pem"), watched);
    await eventually(() => w.reloaded.length === 1, "the new list installed");
    assert.ok((w.reloaded[0]?.number ?? 0n) > (inForce ?? 0n), "a newer CRL number");
    await publisher.publish("crl/a", "after");
    await eventually(() => w.rejections.length === 1, "the revoked publisher's rejection");
    assert.equal(w.rejections[0]?.kind, "revoked");
    await settle();
    assert.deepEqual(w.messages.map(text), ["before", "still trusted"]);
  } finally {
    await publisher.close();
    await w.sub.close();
  }
});

test("the Node.js KDC client refuses a KDC whose certificate a reloaded list revokes", async () => {
  const state = join(pki.dir, "state-kpub");
  const port = await freePort();
  const credentials = await addKdcReader(pki, "csub", state, port, join(pki.dir, "creds.json"));
  // The KDC keeps serving with its certificate once it is revoked (as an impostor holding
  // its key would): its own list is the one from before, so only the subscriber can refuse.
  const kdcCrl = join(pki.dir, "crl-before-kdc-revoked.pem");
  await copyFile(pki.path("crl.pem"), kdcCrl);
  const publish = (message: string) =>
    start(rustBin("sealpost-pub"), [
      "-L",
      broker.url,
      "--cert",
      pki.path("kpub.pem"),
      "--key",
      pki.path("kpub.key"),
      "--cafile",
      pki.path("ca.pem"),
      "--crl",
      kdcCrl,
      "-t",
      "crl/kdc",
      "-m",
      message,
      ...kdcArgs(pki, state, port),
    ]);
  const watchedA = join(pki.dir, "watched-kdc-a.pem");
  const watchedB = join(pki.dir, "watched-kdc-b.pem");
  await copyFile(pki.path("crl.pem"), watchedA);
  await copyFile(pki.path("crl.pem"), watchedB);
  // A: the control, which fetches its key while the KDC certificate is good.
  const a = await watchingSubscriber("kdc-a", watchedA, [credentials]);
  const b = await watchingSubscriber("kdc-b", watchedB, [credentials]);
  await b.sub.client.unsubscribeAsync("crl/#"); // B sees nothing until the list changed
  let pub = publish("one");
  try {
    await waitForPort(port);
    await eventually(() => a.messages.length === 1, "the control's message through the KDC");
    await pub.stop();

    await revoke("127.0.0.1.pem");
    await copyFile(pki.path("crl.pem"), watchedB);
    await eventually(() => b.reloaded.length === 1, "B's new list installed");
    await b.sub.client.subscribeAsync("crl/#", { qos: 1 });
    pub = publish("two");
    await waitForPort(port);
    await eventually(() => b.keyFailures.length >= 1, "B's refused key fetch");
    assert.match(b.keyFailures[0]?.message ?? "", /KDC certificate: revoked/);
    // (B also refuses the retained key message of the publisher revoked above.)
    const given = () => b.rejections.filter((r) => r.topic === "crl/kdc");
    await eventually(() => given().length >= 1, "B's held message given up");
    assert.equal(given()[0]?.kind, "unknown_key");
    assert.deepEqual(b.messages, []);
  } catch (e) {
    console.error(pub.stderr());
    throw e;
  } finally {
    await pub.stop();
    await a.sub.close();
    await b.sub.close();
  }
});
