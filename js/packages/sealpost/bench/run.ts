/**
 * `npm run bench` (from js/packages/sealpost): open throughput in Node.js and in headless
 * Chromium at 256 B and 1 KiB, version 1 and version 2 (bursts of 64), best of 3 runs of 2,000 messages each; in Node.js also
 * per CPU second of the whole process (all threads: WebCrypto runs on libuv's pool, and
 * GC), comparable with the CPU time the Rust `count_ops` example reports. Compare with
 * the Rust opener measured in the same session (docs/BENCHMARKS.md gives the commands).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { readVectors } from "../test/vectors.js";
import { type BenchVectors, openThroughput } from "./openBench.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const v = Object.fromEntries(readVectors()) as unknown as BenchVectors;
const N = 2000;
const SIZES = [256, 1024];
/** Version 1 (a signature per message), then version 2 bursts of 64 messages. */
const BURSTS = [1, 64];
const label = (burst: number) => (burst === 1 ? "version 1" : `version 2, bursts of ${burst}`);
const best = async (f: () => Promise<number>) => Math.max(await f(), await f(), await f());

const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
for (const size of SIZES) {
  for (const burst of BURSTS) {
    const wall = await best(() => openThroughput(v, size, N, undefined, burst));
    const onCpu = await best(() => openThroughput(v, size, N, cpu, burst));
    console.log(
      `node     open ${size} B, ${label(burst)}: ${wall.toFixed(0)} msg/s wall clock, ${onCpu.toFixed(0)} msg/s of process CPU time`,
    );
  }
}

execFileSync("npx", [
  "esbuild",
  join(root, "bench", "browser.ts"),
  "--bundle",
  "--format=esm",
  "--platform=browser",
  "--target=es2022",
  `--outfile=${join(root, "dist", "bench", "browser.bundle.js")}`,
  "--log-level=warning",
]);
const bundle = readFileSync(join(root, "dist", "bench", "browser.bundle.js"));
const server = createServer((req, res) => {
  if (req.url === "/bench.js") {
    res.setHeader("Content-Type", "text/javascript");
    res.end(bundle);
  } else {
    res.setHeader("Content-Type", "text/html");
    res.end('<!doctype html><script type="module" src="/bench.js"></script>');
  }
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
const address = server.address();
const port = typeof address === "object" && address ? address.port : 0;
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage();
await page.goto(`http://127.0.0.1:${port}/`);
await page.waitForFunction(() => typeof window.openThroughput === "function");
for (const size of SIZES) {
  for (const burst of BURSTS) {
    const rate = await best(() =>
      page.evaluate(
        ([vv, s, n, b]) =>
          window.openThroughput(
            vv as BenchVectors,
            s as number,
            n as number,
            undefined,
            b as number,
          ),
        [v, size, N, burst] as const,
      ),
    );
    console.log(`chromium open ${size} B, ${label(burst)}: ${rate.toFixed(0)} msg/s`);
  }
}
await browser.close();
server.close();
