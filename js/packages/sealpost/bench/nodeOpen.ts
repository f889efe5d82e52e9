/**
 * `npm run bench:node` (from js/packages/sealpost): only the Node.js cells of `npm run
 * bench` (open throughput per second of process CPU time, best of 3 runs of 2,000
 * messages; 256 B and 1 KiB; version 1 and version 2 bursts of 64), without Chromium, so
 * that two commits can be compared quickly, alternately, in one session.
 */
import { readVectors } from "../test/vectors.js";
import { type BenchVectors, openThroughput } from "./openBench.js";

const v = Object.fromEntries(readVectors()) as unknown as BenchVectors;
const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const cells: string[] = [];
for (const size of [256, 1024]) {
  for (const burst of [1, 64]) {
    let best = 0;
    for (let i = 0; i < 3; i++) {
      best = Math.max(best, await openThroughput(v, size, 2000, cpu, burst));
    }
    cells.push(`${size} B ${burst === 1 ? "v1" : "v2/64"}: ${best.toFixed(0)}`);
  }
}
console.log(`node open, msg/s of process CPU time: ${cells.join(", ")}`);
