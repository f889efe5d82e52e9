/** The browser entry of the open benchmark (bundled by esbuild, driven by chromium.ts). */
import { type BenchVectors, openThroughput } from "./openBench.js";

declare global {
  interface Window {
    openThroughput: (v: BenchVectors, size: number, n: number) => Promise<number>;
  }
}
window.openThroughput = openThroughput;
