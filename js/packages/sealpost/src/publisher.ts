/**
 * The publisher (Node.js): seals and publishes, grants and revokes readers (rotating the
 * content key as docs/PROTOCOL.md "Grant and revoke" requires), publishes retained key
 * messages, and persists its sequence high-water mark, keys and grants in a state
 * directory (mode 0600) so that a restart never reuses a sequence number.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { fromBase64, nowUnix, toBase64 } from "./bytes.js";
import { decodeStrict, encodeCbor } from "./cbor.js";
import { type CertificateInfo, Verifier } from "./certs.js";
import type { PublisherIdentity } from "./identity.js";
import { importContentKey } from "./keyring.js";
import { derOrPem } from "./pem.js";
import type { ContentKey } from "./primitives.js";
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
  url: string;
  mqtt?: IClientOptions;
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

  private constructor(
    readonly client: MqttClient,
    private readonly options: PublisherOptions,
    private readonly verifier: Verifier,
    private epoch: bigint,
    private readonly keys: Map<bigint, Uint8Array>,
    private readonly grants: Map<string, Grant>,
    seqReserved: bigint,
  ) {
    this.nextSeq = seqReserved;
    this.seqReserved = seqReserved;
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
    const client = await mqtt.connectAsync(options.url, { clean: true, ...options.mqtt });
    const publisher = new Publisher(client, options, verifier, epoch, keys, grants, seqReserved);
    await publisher.save();
    for (const id of grants.keys()) await publisher.publishKeyMessage(id);
    return publisher;
  }

  /** The current key epoch. */
  get currentEpoch(): bigint {
    return this.epoch;
  }

  /** Granted reader ids. */
  readers(): string[] {
    return [...this.grants.keys()];
  }

  private get prefix(): string {
    return this.options.keyTopicPrefix ?? `sealpost/keys/${this.options.identity.certificate.id}`;
  }

  /** Grants a subscriber certificate (DER or PEM): it receives a key message. */
  async grant(certificate: Uint8Array | string): Promise<void> {
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

  /** Revokes a reader: clears its key message and rotates the key for the others. */
  async revoke(id: string): Promise<void> {
    if (!this.grants.delete(id)) throw new Error(`${id} is not granted`);
    await this.client.publishAsync(`${this.prefix}/${id}`, Buffer.alloc(0), {
      qos: 1,
      retain: true,
    });
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
              await this.client.publishAsync(m.topic, Buffer.from(envelopes[i] as Uint8Array), {
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
        location: `mqtt:${this.prefix}`,
      },
      contentKey: this.contentKey,
      salt: this.salt,
      publishedAt: BigInt(nowUnix()),
      embedCertificate: false,
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
    await this.client.endAsync();
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
    };
    const path = join(this.options.stateDir, "publisher.json");
    await writeFile(`${path}.tmp`, JSON.stringify(state), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }
}
