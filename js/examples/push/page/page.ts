/**
 * The push page: connects to the broker over WebSocket, logs in to the publisher's KDC
 * (CORS) on the first message of an epoch, and shows what it can open, and what it had
 * to refuse, with the reason. Its configuration (broker, CA, CRL, KDC credentials) comes
 * from `config.json?reader=ID` served beside it; a real page would ask the user for the
 * password instead.
 */
import { IndexedDbReplayStore, type KdcCredentials, Subscriber } from "sealpost";

interface Config {
  broker: string;
  topics: string[];
  ca: string;
  crl: string;
  credentials: KdcCredentials;
  holdMs: number;
}

declare global {
  interface Window {
    /** Every shown message with the wall-clock time it was shown (for bench-latency.mjs). */
    arrivals: { text: string; at: number }[];
  }
}
window.arrivals = [];

const el = (id: string) => document.getElementById(id) as HTMLElement;

function add(list: string, text: string): void {
  const li = document.createElement("li");
  li.textContent = text;
  el(list).append(li);
}

async function main(): Promise<void> {
  const reader = new URLSearchParams(location.search).get("reader") ?? "";
  el("reader").textContent = reader;
  const res = await fetch(`config.json?reader=${encodeURIComponent(reader)}`);
  const config = (await res.json()) as Config;
  const sub = await Subscriber.connect({
    url: config.broker,
    mqtt: { clientId: `page-${reader}-${crypto.randomUUID()}` },
    topics: config.topics,
    caCertificate: config.ca,
    crl: config.crl,
    kdc: [config.credentials],
    replayStore: new IndexedDbReplayStore(reader),
    holdMs: config.holdMs,
  });
  sub.on("message", (m) => {
    const text = `${m.topic}: ${new TextDecoder().decode(m.payload)}`;
    window.arrivals.push({ text, at: Date.now() });
    add("messages", text);
  });
  sub.on("rejected", (r) => add("rejections", `${r.topic}: ${r.kind}`));
  sub.on("keyFetchFailed", (f) => add("rejections", `key fetch failed: ${f.message}`));
  el("status").textContent = "subscribed";
}

main().catch((e: unknown) => {
  el("status").textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
});
