/**
 * The publisher (Node.js): seals and publishes, grants and revokes readers (rotating the
 * content key as docs/PROTOCOL.md "Grant and revoke" requires), publishes retained key
 * messages, and persists its sequence high-water mark, keys and grants in a state
 * directory (mode 0600) so that a restart never reuses a sequence number.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { hash as hashPassword } from "@node-rs/argon2";
import type { IClientOptions, MqttClient } from "mqtt";
import { fromBase64, nowUnix, toBase64, toHex } from "./bytes.js";
import { decodeStrict, encodeCbor } from "./cbor.js";
import { type CertificateInfo, Verifier } from "./certs.js";
import type { PublisherIdentity } from "./identity.js";
import type { KdcCredentials } from "./kdc.js";
import {
  type KdcReader,
  KdcServer,
  type KdcServerOptions,
  normaliseKdcAddress,
} from "./kdcServer.js";
import { importContentKey } from "./keyring.js";
import { type BrokerUrls, Link } from "./link.js";
import { derOrPem } from "./pem.js";
import { type ContentKey, sha256 } from "./primitives.js";
import { DEFAULT_RESEND_WINDOW, RESEND_DELAY_MS, Recent } from "./resend.js";
import {
  checkTopic,
  createKeyMessage,
  DEFAULT_MAX_BURST,
  randomBytes,
  sealBurst,
  sealEnvelope,
  wrapForSubscriber,
} from "./sealer.js";

/** Sequence numbers reserved (and persisted) at a time. */
const RESERVE = 1000n;
/** Epochs kept and carried in key messages. */
const KEPT_EPOCHS = 4;

/** Options of `Publisher.start`. */
export interface PublisherOptions {
  /**
   * Broker URL, or several for failover: when the broker goes away, the next one is tried
   * with backoff (`link.ts`), the key messages are published there again, and the last
   * `resendWindow` QoS 1 envelopes are sent again (`resend.ts`).
   */
  url: BrokerUrls;
  mqtt?: IClientOptions;
  /** QoS 1 envelopes kept to send again after a reconnect (default 512; 0: none). */
  resendWindow?: number;
  identity: PublisherIdentity;
  /** The sealpost CA (granted readers are verified against it). */
  caCertificate: Uint8Array | string;
  /** The CA's revocation list; required unless `insecureNoCrl`. */
  crl?: Uint8Array | string;
  insecureNoCrl?: boolean;
  /** State directory (created if missing). */
  stateDir: string;
  /** Key-topic prefix (default `sealpost/keys/<publisher id>`). */
  keyTopicPrefix?: string;
  /** Rotate when granting after something was sealed (default true: backward secrecy). */
  rotateOnGrant?: boolean;
  /**
   * Wire version of data envelopes: 2 (default) seals tree-signed bursts, one signature
   * per burst; 1 signs every message, for subscribers not yet upgraded to version 2.
   */
  wireVersion?: 1 | 2;
  /**
   * Run a key distribution center (key-delivery mode 2, as `sealpost-pub --kdc`): readers
   * added with `addReader` log in over HTTPS and fetch the keys; envelopes then name the
   * KDC address and embed the publisher certificate.
   */
  kdc?: PublisherKdcOptions;
}

/** The publisher's KDC: where it listens, its certificate, CORS, and whether it is alone. */
export interface PublisherKdcOptions extends KdcServerOptions {
  /** The address readers use (default `https://<listen host>:<port>`). */
  address?: string;
  /** Deliver keys by the KDC only: no key messages (`--kdc-only`); `grant` is refused. */
  only?: boolean;
}

/** A message waiting for the next burst. */
interface Queued {
  topic: string;
  plaintext: Uint8Array;
  qos: 0 | 1;
  retain: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface Grant {
  certificate: CertificateInfo;
  fromEpoch: bigint;
  /** COSE_recipients by epoch, reused while the epoch is carried. */
  recipients: Map<bigint, unknown[]>;
}

interface State {
  seqReserved: string;
  epoch: string;
  keys: Record<string, string>;
  grants: Record<
    string,
    { certificate: string; fromEpoch: string; recipients: Record<string, string> }
  >;
  /** KDC readers: argon2id password hash, first epoch, revoked. */
  kdcReaders?: Record<string, { hash: string; fromEpoch: string; revoked: boolean }>;
}

/** A connected publisher. */
export class Publisher {
  private nextSeq: bigint;
  private seqReserved: bigint;
  private sealedInEpoch = true;
  private readonly salt = randomBytes(4);
  private contentKey: ContentKey | null = null;
  /** Messages published while a burst is being sealed; the next burst takes them. */
  private queue: Queued[] = [];
  private draining = false;
  /** The key message in force per reader (topic, bytes), published again on reconnect. */
  private readonly keyMessages = new Map<string, { topic: string; bytes: Uint8Array }>();
  private readonly recent: Recent;
  private readonly kdcReaders = new Map<string, KdcReader>();
  private kdc: { server: KdcServer; address: string; certificateSha256: string } | null = null;

  private constructor(
    /** The broker connection, failover included. */
    readonly link: Link,
    private readonly options: PublisherOptions,
    private readonly verifier: Verifier,
    private epoch: bigint,
    private readonly keys: Map<bigint, Uint8Array>,
    private readonly grants: Map<string, Grant>,
    seqReserved: bigint,
  ) {
    this.nextSeq = seqReserved;
    this.seqReserved = seqReserved;
    this.recent = new Recent(options.resendWindow ?? DEFAULT_RESEND_WINDOW);
  }

  /** The MQTT.js client. */
  get client(): MqttClient {
    return this.link.client;
  }

  private async startKdc(options: PublisherKdcOptions): Promise<void> {
    const identity = this.options.identity.certificate;
    const server = await KdcServer.start(options.address ?? "https://kdc", options, {
      publisher: identity.id,
      certificate: identity.der,
      reader: (id) => this.kdcReaders.get(id),
      key: (epoch) => this.keys.get(epoch),
    });
    const host = options.listen.replace(/:\d+$/, "");
    const address = normaliseKdcAddress(options.address ?? `https://${host}:${server.port}`);
    const certificateSha256 = toHex(await sha256(derOrPem(options.cert, "CERTIFICATE")));
    this.kdc = { server, address, certificateSha256 };
  }

  /** The KDC's address (what envelopes name), or null without a KDC. */
  get kdcAddress(): string | null {
    return this.kdc?.address ?? null;
  }

  /**
   * Adds a KDC reader (or issues its credentials again: a new password, the old one's
   * tokens invalid, the epochs it was entitled to kept) and returns its credentials file.
   * A new reader rotates the key first, as a grant does (backward secrecy).
   */
  async addReader(id: string): Promise<KdcCredentials> {
    const kdc = this.kdc;
    if (!kdc) throw new Error("this publisher runs no KDC");
    if (id.length === 0 || Buffer.byteLength(id) > 128)
      throw new Error("a reader id is 1 to 128 bytes");
    const password = Buffer.from(randomBytes(24)).toString("base64url");
    const hash = await hashPassword(password);
    const existing = this.kdcReaders.get(id);
    if (existing && !existing.revoked) {
      existing.hash = hash;
      kdc.server.dropTokens(id);
    } else {
      if ((this.options.rotateOnGrant ?? true) && this.sealedInEpoch) await this.rotate();
      this.kdcReaders.set(id, { hash, fromEpoch: this.epoch, revoked: false });
    }
    await this.save();
    return {
      kdc: kdc.address,
      reader: id,
      password,
      kdc_certificate_sha256: kdc.certificateSha256,
    };
  }

  /**
   * After a reconnect: the broker (another one, after a failover) may lack the retained
   * key messages, and subscribers that failed over too may have missed the last
   * envelopes; publish the first again now, the second once they had time to come back.
   */
  private async afterReconnect(): Promise<void> {
    for (const { topic, bytes } of [...this.keyMessages.values()]) {
      await this.client.publishAsync(topic, Buffer.from(bytes), { qos: 1, retain: true });
    }
    await new Promise((r) => setTimeout(r, RESEND_DELAY_MS));
    for (const { topic, envelope, retain } of this.recent.snapshot()) {
      await this.client.publishAsync(topic, Buffer.from(envelope), { qos: 1, retain });
    }
  }

  /** Loads (or creates) the state, connects, and republishes the key messages. */
  static async start(options: PublisherOptions): Promise<Publisher> {
    if (options.wireVersion !== undefined && ![1, 2].includes(options.wireVersion)) {
      throw new Error(`wireVersion is 1 or 2, not ${options.wireVersion}`);
    }
    if (!options.crl && !options.insecureNoCrl) {
      throw new Error("a revocation list (crl) is required; insecureNoCrl opts out");
    }
    const verifier = await Verifier.create(derOrPem(options.caCertificate, "CERTIFICATE"));
    if (options.crl) await verifier.setRevocationList(derOrPem(options.crl, "X509 CRL"));
    await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
    let state: State | null = null;
    try {
      state = JSON.parse(await readFile(join(options.stateDir, "publisher.json"), "utf8")) as State;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const keys = new Map<bigint, Uint8Array>();
    const grants = new Map<string, Grant>();
    let epoch = 1n;
    let seqReserved = 1n;
    if (state) {
      epoch = BigInt(state.epoch);
      seqReserved = BigInt(state.seqReserved);
      for (const [e, k] of Object.entries(state.keys)) keys.set(BigInt(e), fromBase64(k));
      for (const [id, g] of Object.entries(state.grants)) {
        const certificate = await verifier.verify(fromBase64(g.certificate), nowUnix());
        const recipients = new Map<bigint, unknown[]>();
        for (const [e, r] of Object.entries(g.recipients)) {
          recipients.set(BigInt(e), decodeStrict(fromBase64(r), "stored recipient") as unknown[]);
        }
        grants.set(id, { certificate, fromEpoch: BigInt(g.fromEpoch), recipients });
      }
    } else {
      keys.set(epoch, randomBytes(32));
    }
    if (options.kdc?.only && grants.size > 0) {
      throw new Error("a KDC-only publisher has no key-message readers; its state has some");
    }
    const link = await Link.connect(options.url, { clean: true, ...options.mqtt });
    const publisher = new Publisher(link, options, verifier, epoch, keys, grants, seqReserved);
    for (const [id, r] of Object.entries(state?.kdcReaders ?? {})) {
      publisher.kdcReaders.set(id, {
        hash: r.hash,
        fromEpoch: BigInt(r.fromEpoch),
        revoked: r.revoked,
      });
    }
    if (options.kdc) {
      try {
        await publisher.startKdc(options.kdc);
      } catch (e) {
        await link.close();
        throw e;
      }
    }
    link.whenReconnected(() => publisher.afterReconnect());
    await publisher.save();
    for (const id of grants.keys()) await publisher.publishKeyMessage(id);
    return publisher;
  }

  /** The current key epoch. */
  get currentEpoch(): bigint {
    return this.epoch;
  }

  /** Granted reader ids (key messages), then active KDC readers. */
  readers(): string[] {
    const kdc = [...this.kdcReaders].filter(([, r]) => !r.revoked).map(([id]) => id);
    return [...this.grants.keys(), ...kdc];
  }

  private get prefix(): string {
    return this.options.keyTopicPrefix ?? `sealpost/keys/${this.options.identity.certificate.id}`;
  }

  /** Grants a subscriber certificate (DER or PEM): it receives a key message. */
  async grant(certificate: Uint8Array | string): Promise<void> {
    if (this.options.kdc?.only) throw new Error("a KDC-only publisher grants with addReader");
    const info = await this.verifier.verify(derOrPem(certificate, "CERTIFICATE"), nowUnix());
    if (info.role !== "subscriber") throw new Error(`${info.id} is not a subscriber certificate`);
    const existing = this.grants.get(info.id);
    if (existing) {
      existing.certificate = info; // a renewed certificate is not a new grant
      existing.recipients.clear();
    } else {
      if ((this.options.rotateOnGrant ?? true) && this.sealedInEpoch) await this.rotate();
      this.grants.set(info.id, { certificate: info, fromEpoch: this.epoch, recipients: new Map() });
    }
    await this.save();
    await this.publishKeyMessage(info.id);
  }

  /**
   * Revokes a reader: clears its key message (or marks the KDC reader revoked and drops
   * its tokens) and rotates the key for the others.
   */
  async revoke(id: string): Promise<void> {
    const reader = this.kdcReaders.get(id);
    const kdcReader = reader !== undefined && !reader.revoked;
    if (!this.grants.has(id) && !kdcReader) throw new Error(`${id} is not granted`);
    if (kdcReader) {
      reader.revoked = true;
      this.kdc?.server.dropTokens(id);
    }
    if (this.grants.delete(id)) {
      this.keyMessages.delete(id);
      await this.client.publishAsync(`${this.prefix}/${id}`, Buffer.alloc(0), {
        qos: 1,
        retain: true,
      });
    }
    await this.rotate();
  }

  /** Starts a new epoch with a fresh key and republishes the key messages. */
  async rotate(): Promise<void> {
    this.epoch += 1n;
    this.keys.set(this.epoch, randomBytes(32));
    for (const e of [...this.keys.keys()]) {
      if (e <= this.epoch - BigInt(KEPT_EPOCHS)) this.keys.delete(e);
    }
    this.contentKey = null;
    this.sealedInEpoch = false;
    await this.save();
    for (const id of this.grants.keys()) await this.publishKeyMessage(id);
  }

  /**
   * Seals `payload` for `topic` and publishes it. Messages published concurrently (several
   * calls in flight) queue up while a burst is being sealed, and the next burst seals them
   * all with one signature (version 2). Nothing waits for a burst to fill: a lone message
   * is sealed at once, as a burst of one.
   */
  publish(
    topic: string,
    payload: Uint8Array | string,
    opts: { qos?: 0 | 1; retain?: boolean } = {},
  ): Promise<void> {
    try {
      checkTopic(this.options.identity, topic); // refused alone, never failing a burst
    } catch (e) {
      return Promise.reject(e);
    }
    const plaintext = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    return new Promise((resolve, reject) => {
      this.queue.push({
        topic,
        plaintext,
        qos: opts.qos ?? 1,
        retain: opts.retain ?? false,
        resolve,
        reject,
      });
      if (!this.draining) {
        this.draining = true;
        void this.drain();
      }
    });
  }

  /** Seals and sends what is queued, burst by burst, until the queue is empty. */
  private async drain(): Promise<void> {
    // One turn of the microtask queue, so that publishes made in the same tick share a
    // burst; this never waits for messages that are not already on their way.
    await Promise.resolve();
    while (this.queue.length > 0) {
      const burst = this.queue.splice(0, DEFAULT_MAX_BURST);
      try {
        const envelopes = await this.seal(burst);
        await Promise.all(
          burst.map(async (m, i) => {
            try {
              const envelope = envelopes[i] as Uint8Array;
              if (m.qos === 1) this.recent.push({ topic: m.topic, envelope, retain: m.retain });
              await this.client.publishAsync(m.topic, Buffer.from(envelope), {
                qos: m.qos,
                retain: m.retain,
              });
              m.resolve();
            } catch (e) {
              m.reject(e);
            }
          }),
        );
      } catch (e) {
        for (const m of burst) m.reject(e);
      }
    }
    this.draining = false;
  }

  /** Seals one burst (version 2) or one envelope per message (version 1). */
  private async seal(burst: Queued[]): Promise<Uint8Array[]> {
    const count = BigInt(burst.length);
    if (this.nextSeq + count > this.seqReserved) {
      this.seqReserved = this.nextSeq + count + RESERVE;
      await this.save(); // persisted before any number of the new block is used
    }
    const firstSeq = this.nextSeq;
    this.nextSeq += count;
    const raw = this.keys.get(this.epoch);
    if (!raw) throw new Error("no current content key");
    this.contentKey ??= await importContentKey(raw);
    const common = {
      identity: this.options.identity,
      index: {
        publisher: this.options.identity.certificate.id,
        epoch: this.epoch,
        location: this.kdc?.address ?? `mqtt:${this.prefix}`,
      },
      contentKey: this.contentKey,
      salt: this.salt,
      publishedAt: BigInt(nowUnix()),
      // A KDC reader may get no key message to learn the certificate from.
      embedCertificate: this.kdc !== null,
    };
    this.sealedInEpoch = true;
    const messages = burst.map(({ topic, plaintext }) => ({ topic, plaintext }));
    if ((this.options.wireVersion ?? 2) === 2) {
      return sealBurst({ ...common, firstSeq, messages });
    }
    return Promise.all(
      messages.map((m, i) => sealEnvelope({ ...common, ...m, seq: firstSeq + BigInt(i) })),
    );
  }

  /** Disconnects. */
  async close(): Promise<void> {
    await this.kdc?.server.close();
    await this.link.close();
  }

  private async publishKeyMessage(id: string): Promise<void> {
    const grant = this.grants.get(id);
    if (!grant) return;
    const epochs = [...this.keys.keys()]
      .filter((e) => e >= grant.fromEpoch)
      .sort((a, b) => (a < b ? -1 : 1));
    const recipients: unknown[][] = [];
    for (const epoch of epochs) {
      let r = grant.recipients.get(epoch);
      if (!r) {
        r = await wrapForSubscriber(grant.certificate, {
          epoch,
          key: this.keys.get(epoch) as Uint8Array,
        });
        grant.recipients.set(epoch, r);
      }
      recipients.push(r);
    }
    for (const e of [...grant.recipients.keys()])
      if (!epochs.includes(e)) grant.recipients.delete(e);
    if (recipients.length === 0) return;
    const topic = `${this.prefix}/${id}`;
    const message = await createKeyMessage(
      this.options.identity,
      grant.certificate,
      recipients,
      BigInt(nowUnix()),
      topic,
    );
    await this.save();
    this.keyMessages.set(id, { topic, bytes: message });
    await this.client.publishAsync(topic, Buffer.from(message), { qos: 1, retain: true });
  }

  /** Writes the state atomically (temporary file, then rename), mode 0600. */
  private async save(): Promise<void> {
    const state: State = {
      seqReserved: this.seqReserved.toString(),
      epoch: this.epoch.toString(),
      keys: Object.fromEntries([...this.keys].map(([e, k]) => [e.toString(), toBase64(k)])),
      grants: Object.fromEntries(
        [...this.grants].map(([id, g]) => [
          id,
          {
            certificate: toBase64(g.certificate.der),
            fromEpoch: g.fromEpoch.toString(),
            recipients: Object.fromEntries(
              [...g.recipients].map(([e, r]) => [e.toString(), toBase64(encodeCbor(r))]),
            ),
          },
        ]),
      ),
      kdcReaders: Object.fromEntries(
        [...this.kdcReaders].map(([id, r]) => [
          id,
          { hash: r.hash, fromEpoch: r.fromEpoch.toString(), revoked: r.revoked },
        ]),
      ),
    };
    const path = join(this.options.stateDir, "publisher.json");
    await writeFile(`${path}.tmp`, JSON.stringify(state), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }
}
