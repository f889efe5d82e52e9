/**
 * The browser entry of the open benchmark (bundled by esbuild, driven by run.ts): opens
 * the envelopes run.ts sealed (as hex), with the same routine as in Node.js.
 */
import { fromHex } from "../src/bytes.js";
import { type BenchVectors, openEnvelopes } from "./openBench.js";

declare global {
  interface Window {
    openEnvelopesHex: (v: BenchVectors, envelopes: string[], now: number) => Promise<number>;
  }
}
window.openEnvelopesHex = (v, envelopes, now) =>
  openEnvelopes(v, { envelopes: envelopes.map(fromHex), now });
