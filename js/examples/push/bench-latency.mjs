#!/usr/bin/env node
/**
 * End-to-end latency of the push path: the backend POSTs to the REST gateway at a paced
 * 100 messages/s for 10 s; the page (headless Chromium) notes when each one is shown.
 * Prints p50 and p99 of POST start -> plaintext on the page (one clock: same machine).
 *
 *   node bench-latency.mjs        (after npm run build; needs the CLIs, Mosquitto, chromium)
 */
import { post } from "./backend.mjs";
import { startPushStack } from "./stack.mjs";

const RATE = 100;
const COUNT = 1000;
const stack = await startPushStack();
try {
  const page = await stack.open("alice");
  const sent = [];
  const t0 = Date.now();
  const posts = [];
  for (let i = 0; i < COUNT; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    sent[i] = Date.now();
    posts.push(post(stack.gatewayUrl, stack.token, "push/latency", String(i)));
  }
  await Promise.all(posts);
  await page.waitForFunction((n) => window.arrivals?.length >= n, COUNT, { timeout: 60_000 });
  const arrivals = await page.evaluate(() => window.arrivals);
  const latencies = arrivals
    .map((a) => a.at - sent[Number(a.text.split(": ")[1])])
    .sort((a, b) => a - b);
  const pct = (p) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  console.log(
    `${latencies.length} messages at ${RATE}/s: p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${latencies.at(-1)} ms`,
  );
} finally {
  await stack.stop();
}
