/**
 * The MQTT connection of the publisher and the subscriber, with failover: several broker
 * addresses, and after the broker goes away, the next one, tried after a pause that grows
 * exponentially with jitter (MQTT.js itself reconnects at a fixed period to one address).
 * The same policy as the Rust SDKs (client/src/link.rs): about 0.5 s after the
 * first failure, doubling up to 30 s, back to the start once a connection is accepted;
 * each pause drawn at random between half and all of its step ("equal jitter"), so the
 * clients of a broker that went away do not all come back at once.
 *
 * In-flight QoS 1 messages are kept across the reconnect (MQTT.js sends them again from
 * its outgoing store), and the owner is told of every reconnect (`onReconnect`) to do
 * what the new broker may lack: subscribe again, publish key messages again.
 */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { Emitter } from "./emitter.js";

/** First pause after a failed attempt, ms. */
export const FIRST_PAUSE_MS = 500;
/** Longest pause between attempts, ms. */
export const LONGEST_PAUSE_MS = 30_000;

/** Pauses between reconnect attempts (see the module comment). */
export class Backoff {
  private failures = 0;

  /** `random` returns a number in [0, 1) (tests pass their own). */
  constructor(private readonly random: () => number = Math.random) {}

  /** Records a failed attempt; returns the pause before the next one, ms. */
  failed(): number {
    const step = Math.min(FIRST_PAUSE_MS * 2 ** Math.min(this.failures, 6), LONGEST_PAUSE_MS);
    this.failures += 1;
    return step / 2 + step * 0.5 * this.random();
  }

  /** Records an accepted connection. */
  connected(): void {
    this.failures = 0;
  }
}

/** One or several broker addresses (failover in the order given). */
export type BrokerUrls = string | string[];

/** What a link reports. */
export interface LinkEvents {
  /** Connected again (to `url`) after the connection was lost. */
  reconnected: string;
  /** The connection was lost or an attempt failed; the next attempt is in `pauseMs`. */
  reconnecting: { url: string; pauseMs: number };
}

/** The MQTT.js `servers` entry of an address; all addresses share the first one's path. */
function server(url: string): {
  host: string;
  port: number;
  protocol: "mqtt" | "mqtts" | "ws" | "wss";
} {
  const u = new URL(url);
  const protocol = u.protocol.replace(/:$/, "");
  if (!["mqtt", "mqtts", "ws", "wss"].includes(protocol)) {
    throw new Error(`${url}: a broker address is mqtt://, mqtts://, ws:// or wss://`);
  }
  const defaults: Record<string, number> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 };
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : (defaults[protocol] as number),
    protocol: protocol as "mqtt" | "mqtts" | "ws" | "wss",
  };
}

/** A connection to one of several brokers, reconnecting with backoff until closed. */
export class Link extends Emitter<LinkEvents> {
  private closing = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly backoff: Backoff;
  private current = 0;
  /** Set once the first connection was accepted. */
  private onReconnect: (() => Promise<void>) | undefined;

  private constructor(
    /** The MQTT.js client (the same object across reconnects). */
    readonly client: MqttClient,
    /** The broker addresses, in failover order. */
    readonly urls: string[],
    random?: () => number,
  ) {
    super();
    this.backoff = new Backoff(random);
  }

  /**
   * Connects to the first address. Fails at once, with the reason, if that attempt fails
   * (a refused login, nothing listening, TLS), as the Rust SDKs do; after that, any loss
   * leads to the next address.
   */
  static async connect(
    urls: BrokerUrls,
    options: IClientOptions,
    random?: () => number,
  ): Promise<Link> {
    const list = typeof urls === "string" ? [urls] : [...urls];
    if (list.length === 0) throw new Error("no broker address");
    const servers = list.map(server);
    const first = list[0] as string;
    // reconnectPeriod 0: MQTT.js does not reconnect by itself; the link does, with backoff.
    const client = mqtt.connect(first, { ...options, servers, reconnectPeriod: 0 });
    await new Promise<void>((resolve, reject) => {
      const fail = (e?: Error) => {
        client.removeListener("connect", ok);
        client.end(true);
        reject(e ?? new Error(`${first}: the connection closed before the broker accepted it`));
      };
      const ok = () => {
        client.removeListener("error", fail);
        client.removeListener("close", fail);
        resolve();
      };
      client.once("connect", ok);
      client.once("error", fail);
      client.once("close", fail);
    });
    const link = new Link(client, list, random);
    client.on("close", () => link.lost());
    client.on("connect", () => link.accepted());
    return link;
  }

  /** Runs `hook` after every reconnect (not the first connection). */
  whenReconnected(hook: () => Promise<void>): void {
    this.onReconnect = hook;
  }

  /** The address of the current (or last) connection. */
  get url(): string {
    return this.urls[this.current] as string;
  }

  /** Disconnects for good. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.timer);
    await this.client.endAsync();
  }

  private accepted(): void {
    this.backoff.connected();
    this.emit("reconnected", this.url);
    void this.onReconnect?.().catch((e: unknown) => {
      this.client.emit("error", e instanceof Error ? e : new Error(String(e)));
    });
  }

  private lost(): void {
    if (this.closing || this.timer !== undefined) return;
    const pauseMs = this.backoff.failed();
    this.emit("reconnecting", { url: this.url, pauseMs });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closing) return;
      // MQTT.js's `servers` rotation takes the next address on each connect.
      this.current = (this.current + 1) % this.urls.length;
      // The same stores: unacknowledged QoS 1 messages are sent again after the CONNACK.
      this.client.reconnect({
        incomingStore: this.client.incomingStore,
        outgoingStore: this.client.outgoingStore,
      });
    }, pauseMs);
  }
}
