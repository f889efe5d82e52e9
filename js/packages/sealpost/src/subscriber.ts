/**
 * The subscriber: MQTT.js transport (WebSocket in a browser; TCP or WebSocket in Node.js)
 * around the `Opener`. It follows its own key topic and KDC keys, verifies everything the
 * protocol asks, holds messages whose certificate or key has not arrived (bounded),
 * persists the replay window before delivering, and reports every refusal as a typed
 * `rejected` event with the same kinds as the Rust SDK.
 */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { nowUnix } from "./bytes.js";
import { type RevocationList, Verifier } from "./certs.js";
import { CrlReloader, type CrlSource, DEFAULT_CRL_RELOAD_MS } from "./crlReloader.js";
import { Emitter } from "./emitter.js";
import { Rejected } from "./errors.js";
import type { SubscriberIdentity } from "./identity.js";
import { KdcClient, type KdcCredentials, type KdcTransport, KeyFetchFailed } from "./kdc.js";
import { type KeyUpdate, Opener } from "./opener.js";
import { derOrPem } from "./pem.js";
import { type ReplayStore, ReplayWindows } from "./replay.js";
import { filterMatches } from "./topic.js";

/** A delivered message: verified, decrypted, exactly once. */
export interface Message {
  topic: string;
  publisher: string;
  seq: bigint;
  payload: Uint8Array;
}

/** A refused message, with the reason's kind. */
export interface Rejection {
  topic: string;
  kind: Rejected["kind"];
  reason: Rejected;
}

/** Events of a subscriber. */
export interface SubscriberEvents {
  message: Message;
  rejected: Rejection;
  keys: KeyUpdate;
  keyFetchFailed: KeyFetchFailed;
  /** A changed revocation list from the `crl` source was verified and installed. */
  crlReloaded: RevocationList;
  /** The `crl` source could not be read or its list was refused; the one in force stays. */
  crlReloadFailed: Error;
  error: Error;
}

/** Options of `Subscriber.connect`. */
export interface SubscriberOptions {
  /** Broker URL: `ws://`, `wss://` (browsers), `mqtt://`, `mqtts://` (Node.js). */
  url: string;
  /** Extra MQTT.js options (client id, user name, password, TLS). */
  mqtt?: IClientOptions;
  /** Data topic filters to subscribe to. */
  topics: string[];
  /** The sealpost CA certificate (DER or PEM). */
  caCertificate: Uint8Array | string;
  /**
   * The CA's revocation list (DER or PEM), or a source of it (`fileCrlSource` in Node.js;
   * in a browser, e.g. a `fetch` of its URL) read at connect and again every
   * `crlReloadMs` while running. Required unless `insecureNoCrl`.
   */
  crl?: Uint8Array | string | CrlSource;
  /** How often a `crl` source is read again, ms (default 60 s). */
  crlReloadMs?: number;
  /** INSECURE: run without a revocation list (revoked publishers are accepted). */
  insecureNoCrl?: boolean;
  /** This subscriber (for key messages). KDC-only readers may omit it. */
  identity?: SubscriberIdentity;
  /** KDC credentials files (one per publisher KDC). */
  kdc?: KdcCredentials[];
  /**
   * How KDC requests are made (default: `fetch`; Node.js: `nodeKdcTransport`, which also
   * checks the KDC certificate against `verifier`'s revocation list, reloads included).
   */
  kdcTransport?: (credentials: KdcCredentials, verifier: Verifier) => KdcTransport;
  /** Where the replay window is persisted (a file in Node.js, IndexedDB in a browser). */
  replayStore: ReplayStore;
  /** QoS of the subscriptions (default 1). */
  qos?: 0 | 1;
  /** How long a message waits for its certificate or key, ms (default 10 s). */
  holdMs?: number;
  /** Messages held per kind of wait: verified (unknown key), and unverifiable. */
  maxHeld?: number;
  maxHeldUnverified?: number;
  /** Opener limits. */
  maxAgeSecs?: number;
}

interface Held {
  topic: string;
  bytes: Uint8Array;
  reason: Rejected;
  until: number;
}

const TRANSIENT_PAUSE_MS = 2000;
const REFUSAL_PAUSE_MS = 30_000;

/** A connected sealpost subscriber. */
export class Subscriber extends Emitter<SubscriberEvents> {
  private queue: Promise<void> = Promise.resolve();
  private readonly held: Held[] = [];
  private readonly heldUnverified: Held[] = [];
  private readonly fetching = new Map<string, Promise<void>>();
  private readonly pausedUntil = new Map<string, number>();
  private readonly kdcClients: Map<string, KdcClient>;
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly crlTimer: ReturnType<typeof setInterval> | undefined;
  private closing = false;

  private constructor(
    /** The MQTT.js client (for the application's own plain traffic, if any). */
    readonly client: MqttClient,
    /** The opener (verifier, keyring, replay window). */
    readonly opener: Opener,
    private readonly options: SubscriberOptions,
    crl: CrlReloader | null,
  ) {
    super();
    const transport = options.kdcTransport;
    this.kdcClients = new Map(
      (options.kdc ?? []).map((c) => [c.kdc, new KdcClient(c, transport?.(c, opener.verifier))]),
    );
    this.timer = setInterval(() => this.enqueue(() => this.expireHeld()), 500);
    if (crl) {
      const every = options.crlReloadMs ?? DEFAULT_CRL_RELOAD_MS;
      this.crlTimer = setInterval(() => this.enqueue(() => this.reloadCrl(crl)), every);
    }
  }

  /** Connects, subscribes to the data topics and this subscriber's key topic. */
  static async connect(options: SubscriberOptions): Promise<Subscriber> {
    if (!options.crl && !options.insecureNoCrl) {
      throw new Error("a revocation list (crl) is required; insecureNoCrl opts out");
    }
    const verifier = await Verifier.create(derOrPem(options.caCertificate, "CERTIFICATE"));
    const { crl } = options;
    let reloader: CrlReloader | null = null;
    if (typeof crl === "function") {
      reloader = new CrlReloader(verifier, crl);
      await reloader.reload();
    } else if (crl) await verifier.setRevocationList(derOrPem(crl, "X509 CRL"));
    else console.warn("sealpost: INSECURE: no revocation list, revoked publishers are accepted");
    const saved = await options.replayStore.load();
    const replay = saved === null ? new ReplayWindows() : ReplayWindows.fromJSON(saved);
    const opener = new Opener({
      verifier,
      identity: options.identity,
      replay,
      maxAgeSecs: options.maxAgeSecs,
    });
    const client = await mqtt.connectAsync(options.url, {
      clean: true,
      reconnectPeriod: 1000,
      ...options.mqtt,
    });
    const sub = new Subscriber(client, opener, options, reloader);
    client.on("message", (topic, payload) => {
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      sub.enqueue(() => sub.handle(topic, bytes.slice()));
    });
    client.on("error", (e) => {
      if (!sub.closing) sub.emit("error", e);
    });
    const qos = options.qos ?? 1;
    const filters = [...options.topics];
    if (options.identity) filters.push(`sealpost/keys/+/${options.identity.certificate.id}`);
    await client.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos }])));
    return sub;
  }

  /** Installs a newer revocation list (DER or PEM); the one in force stays on failure. */
  async setRevocationList(crl: Uint8Array | string): Promise<void> {
    await this.opener.verifier.setRevocationList(derOrPem(crl, "X509 CRL"));
  }

  /** Resolves once every message received so far has been handled. */
  async settled(): Promise<void> {
    await this.queue;
  }

  /** Disconnects. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    clearInterval(this.crlTimer);
    await this.client.endAsync();
    await this.queue;
  }

  private async reloadCrl(crl: CrlReloader): Promise<void> {
    try {
      if (await crl.reload()) {
        const list = this.opener.verifier.revocationList;
        if (list) this.emit("crlReloaded", list);
      }
    } catch (e) {
      this.emit("crlReloadFailed", e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Messages are handled one at a time, in arrival order: delivery is exactly once. */
  private enqueue(work: () => Promise<void>): void {
    this.queue = this.queue.then(work).catch((e) => this.emit("error", e as Error));
  }

  private isKeyTopic(topic: string): boolean {
    const id = this.options.identity?.certificate.id;
    return id !== undefined && filterMatches(`sealpost/keys/+/${id}`, topic);
  }

  private async handle(topic: string, bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return; // a cleared retained message
    if (this.isKeyTopic(topic)) {
      try {
        const update = await this.opener.acceptKeyMessage(topic, bytes);
        this.emit("keys", update);
        await this.retryHeld();
      } catch (e) {
        this.reject(topic, e);
      }
      return;
    }
    await this.tryOpen({ topic, bytes, reason: new Rejected("malformed", ""), until: 0 }, true);
  }

  /** Opens one message; holds it if it may open later; true if it left the buffer. */
  private async tryOpen(item: Held, fresh: boolean): Promise<boolean> {
    try {
      const opened = await this.opener.open(item.topic, item.bytes);
      await this.options.replayStore.save(this.opener.replay.toJSON());
      this.emit("message", {
        topic: opened.topic,
        publisher: opened.publisher,
        seq: opened.seq,
        payload: opened.payload,
      });
      return true;
    } catch (e) {
      if (!(e instanceof Rejected) || !e.retryable) {
        this.reject(item.topic, e);
        return true;
      }
      if (fresh) this.hold(item.topic, item.bytes, e);
      else item.reason = e;
      return false;
    }
  }

  private hold(topic: string, bytes: Uint8Array, reason: Rejected): void {
    const verified = reason.kind === "unknown_key";
    const buffer = verified ? this.held : this.heldUnverified;
    const limit = verified
      ? (this.options.maxHeld ?? 1024)
      : (this.options.maxHeldUnverified ?? 64);
    const { publisher, seq } = reason.details;
    if (
      verified &&
      buffer.some((h) => h.reason.details.publisher === publisher && h.reason.details.seq === seq)
    ) {
      this.reject(topic, new Rejected("replayed", `${publisher} sequence ${seq}`, reason.details));
      return;
    }
    if (buffer.length >= limit) {
      const dropped = buffer.shift();
      if (dropped) this.reject(dropped.topic, dropped.reason);
    }
    buffer.push({ topic, bytes, reason, until: Date.now() + (this.options.holdMs ?? 10_000) });
    if (verified) this.startKeyFetch(reason);
  }

  private startKeyFetch(reason: Rejected): void {
    const { publisher, epoch, location } = reason.details;
    if (publisher === undefined || epoch === undefined || location === undefined) return;
    const client = this.kdcClients.get(location);
    if (!client) return;
    const id = `${publisher}/${epoch}`;
    if (this.fetching.has(id) || (this.pausedUntil.get(id) ?? 0) > Date.now()) return;
    const run = (async () => {
      try {
        const fetched = await client.fetchKey(publisher, epoch);
        this.enqueue(async () => {
          try {
            await this.opener.addPublisherCertificate(fetched.certificate, nowUnix());
            await this.opener.addContentKey(publisher, epoch, fetched.key);
            this.emit("keys", { publisher, newEpochs: [epoch], issuedAt: BigInt(nowUnix()) });
            await this.retryHeld();
          } catch (e) {
            this.pausedUntil.set(id, Date.now() + REFUSAL_PAUSE_MS);
            this.emit("keyFetchFailed", new KeyFetchFailed(publisher, epoch, true, String(e)));
          }
        });
      } catch (e) {
        const failure =
          e instanceof KeyFetchFailed ? e : new KeyFetchFailed(publisher, epoch, false, String(e));
        this.pausedUntil.set(
          id,
          Date.now() + (failure.refusal ? REFUSAL_PAUSE_MS : TRANSIENT_PAUSE_MS),
        );
        this.emit("keyFetchFailed", failure);
      } finally {
        this.fetching.delete(id);
      }
    })();
    this.fetching.set(id, run);
  }

  private async retryHeld(): Promise<void> {
    for (const buffer of [this.heldUnverified, this.held]) {
      const waiting = buffer.splice(0);
      for (const item of waiting) {
        if (!(await this.tryOpen(item, false))) {
          // Still waiting (possibly now for its key rather than its certificate).
          const target = item.reason.kind === "unknown_key" ? this.held : this.heldUnverified;
          target.push(item);
          if (item.reason.kind === "unknown_key") this.startKeyFetch(item.reason);
        }
      }
    }
  }

  private async expireHeld(): Promise<void> {
    const now = Date.now();
    for (const buffer of [this.held, this.heldUnverified]) {
      for (let i = buffer.length - 1; i >= 0; i--) {
        const item = buffer[i];
        if (item && item.until <= now) {
          buffer.splice(i, 1);
          this.reject(item.topic, item.reason);
        }
      }
    }
  }

  private reject(topic: string, e: unknown): void {
    if (e instanceof Rejected) {
      this.emit("rejected", { topic, kind: e.kind, reason: e });
    } else {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
    }
  }
}
