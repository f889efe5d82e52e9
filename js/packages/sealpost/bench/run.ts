/**
 * `npm run bench` (from js/packages/sealpost): open throughput of this SDK in Node.js
 * against the Rust protocol core's opener, **on the very same envelopes, in one run**,
 * with headless Chromium beside. For each cell (256 B and 1 KiB; version 1, a version 2
 * burst of one, version 2 bursts of 64) it seals 4,000 envelopes here, writes them to a
 * file, and then alternates three times: the Rust opener over the file
 * (`count_ops open_file`, CPU time of its thread, a fresh opener per run) and this SDK's
 * opener in Node.js (CPU time of the whole process: libuv's pool and the garbage collector
 * included); then three runs in Chromium (wall clock: no process CPU clock there). It
 * prints the best run of each and the ratio Node.js / Rust as a Markdown table.
 *
 * The Rust example is built first (`cargo build --release --locked -p sealpost-protocol
 * --example count_ops`, in the repository's target directory or `CARGO_TARGET_DIR`), or
 * taken from `SEALPOST_COUNT_OPS`. `--no-browser` leaves Chromium out.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromHex, toBase64, toHex } from "../src/bytes.js";
import { openBundledPage } from "../test/chromium.js";
import { readVectors, repoRoot } from "../test/vectors.js";
import {
  BENCH_EPOCH,
  BENCH_TOPIC,
  type BenchEnvelopes,
  type BenchVectors,
  openEnvelopes,
  sealBenchEnvelopes,
} from "./openBench.js";

const v = Object.fromEntries(readVectors()) as unknown as BenchVectors;
const N = 4000;
const ROUNDS = 3;
const SIZES = [256, 1024];
/** 0: version 1 (a signature per message); n: version 2 bursts of n. */
const KINDS = [
  { burst: 0, label: "version 1" },
  { burst: 1, label: "version 2, bursts of 1" },
  { burst: 64, label: "version 2, bursts of 64" },
];
const withBrowser = !process.argv.includes("--no-browser");

/** The Rust `count_ops` example, built in release mode unless given. */
function countOps(): string {
  const given = process.env.SEALPOST_COUNT_OPS;
  if (given) return given;
  const repo = repoRoot();
  execFileSync(
    "cargo",
    ["build", "--release", "--locked", "-p", "sealpost-protocol", "--example", "count_ops"],
    { cwd: repo, stdio: "inherit" },
  );
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  return join(target, "release", "examples", "count_ops");
}

/** The file `count_ops open_file` reads: length-prefixed records (see count_ops.rs). */
function envelopeFile(sealed: BenchEnvelopes): Uint8Array {
  const te = new TextEncoder();
  const ca = `-----BEGIN CERTIFICATE-----\n${toBase64(fromHex(v.ca_certificate))}\n-----END CERTIFICATE-----\n`;
  const records = [
    te.encode(ca),
    fromHex(v.publisher_certificate),
    fromHex(v.content_key),
    te.encode("vector-pub"),
    te.encode(String(BENCH_EPOCH)),
    te.encode(String(sealed.now)),
    te.encode(BENCH_TOPIC),
    ...sealed.envelopes,
  ];
  const parts: Uint8Array[] = [];
  for (const r of records) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, r.length);
    parts.push(len, r);
  }
  return Buffer.concat(parts);
}

/** Messages per second of CPU time of one Rust run over `file`. */
function rustRun(bin: string, file: string): number {
  const out = execFileSync(bin, ["open_file", file, "1"], { encoding: "utf8" });
  const ns = /([\d.]+) ns CPU per operation/.exec(out);
  if (!ns?.[1]) throw new Error(`count_ops printed no CPU time: ${out}`);
  return 1e9 / Number(ns[1]);
}

const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

/** Opens envelopes in headless Chromium, same routine, same bytes (wall clock). */
async function chromiumOpener() {
  const chromium = await openBundledPage(join("bench", "browser.ts"));
  await chromium.load(() => typeof window.openEnvelopesHex === "function");
  return {
    open: (sealed: BenchEnvelopes) =>
      chromium.page.evaluate(([vv, envs, now]) => window.openEnvelopesHex(vv, envs, now), [
        v,
        sealed.envelopes.map(toHex),
        sealed.now,
      ] as const),
    close: () => chromium.close(),
  };
}

const bin = countOps();
const browser = withBrowser ? await chromiumOpener() : null;
const dir = mkdtempSync(join(tmpdir(), "sealpost-bench-"));
const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
const rows: string[] = [];
try {
  for (const size of SIZES) {
    for (const kind of KINDS) {
      const sealed = await sealBenchEnvelopes(v, size, N, kind.burst);
      const file = join(dir, `envelopes-${size}-${kind.burst}.bin`);
      writeFileSync(file, envelopeFile(sealed));
      let rust = 0;
      let node = 0;
      for (let i = 0; i < ROUNDS; i++) {
        rust = Math.max(rust, rustRun(bin, file));
        node = Math.max(node, await openEnvelopes(v, sealed, cpu));
      }
      let web = 0;
      for (let i = 0; browser && i < ROUNDS; i++) web = Math.max(web, await browser.open(sealed));
      const row = `| ${size} B, ${kind.label} | ${fmt(rust)} | ${fmt(node)} | **${(node / rust).toFixed(2)}x** | ${browser ? fmt(web) : "-"} |`;
      rows.push(row);
      console.error(row);
    }
  }
} finally {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(
  `\nOpen throughput, msg/s, best of ${ROUNDS} alternating runs of ${N} envelopes (the same envelopes for all three openers):\n`,
);
console.log(
  "| envelopes | Rust `Opener` (thread CPU time) | TypeScript in Node.js (process CPU time) | Node.js / Rust | TypeScript in headless Chromium (wall clock) |",
);
console.log("|---|---|---|---|---|");
for (const row of rows) console.log(row);
