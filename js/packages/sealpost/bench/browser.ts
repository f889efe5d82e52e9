/** The browser entry of the open benchmark (bundled by esbuild, driven by chromium.ts). */
import { openThroughput } from "./openBench.js";

declare global {
  interface Window {
    openThroughput: typeof openThroughput;
  }
}
window.openThroughput = openThroughput;
