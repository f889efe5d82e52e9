/**
 * Real components for the live tests: the Rust CLIs (built by `cargo build --bins`),
 * the sealpost broker and Mosquitto on ephemeral loopback ports, a PKI made by
 * `sealpost-certs`. Nothing is skipped: a missing binary fails the test.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { KdcCredentials } from "../src/kdc.js";
import { repoRoot } from "./vectors.js";

const run = promisify(execFile);

/** Path of a Rust binary of this workspace. */
export function rustBin(name: string): string {
  const dir = process.env.SEALPOST_BIN_DIR ?? join(repoRoot(), "target", "debug");
  const path = join(dir, name);
  if (!existsSync(path)) throw new Error(`${path} missing: run \`cargo build --bins\` first`);
  return path;
}

/** Runs a Rust CLI to completion; returns stdout. */
export async function cli(name: string, args: string[], cwd?: string): Promise<string> {
  const { stdout } = await run(rustBin(name), args, { cwd, maxBuffer: 1 << 24 });
  return stdout;
}

/** A free loopback TCP port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

/** Waits until something accepts connections on the port. */
export async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = tcpConnect(port, "127.0.0.1");
      c.once("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on port ${port}`);
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for `predicate` to hold. */
export async function eventually(predicate: () => boolean, what: string, ms = 15_000) {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A started process that is stopped by `stop()`. */
export interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  stop: () => Promise<void>;
}

/** Spawns a long-running process, collecting its output. */
export function start(command: string, args: string[], cwd?: string): Running {
  const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

/** A PKI made by `sealpost-certs` in a temporary directory. */
export interface Pki {
  dir: string;
  path: (name: string) => string;
  read: (name: string) => Promise<string>;
}

/** Creates a CA in a fresh temporary directory. */
export async function makePki(label: string): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), `sealpost-js-${label}-`));
  await cli("sealpost-certs", ["--dir", join(dir, "pki"), "init"]);
  const path = (name: string) => join(dir, "pki", name);
  return { dir, path, read: (name) => readFile(path(name), "utf8") };
}

/** Issues a certificate: `kind` publisher (with topics), subscriber, or server (names). */
export async function issue(pki: Pki, kind: string, id: string, extra: string[] = []) {
  const args = ["issue", kind, "--dir", join(pki.dir, "pki")];
  if (kind === "server") args.push("--dns", ...extra, "--out", pki.path(id));
  else args.push("--id", id, ...extra);
  await cli("sealpost-certs", args);
}

/** A broker on loopback ports. */
export interface Broker {
  name: string;
  /** Plain MQTT over TCP. */
  url: string;
  /** MQTT over TLS with client certificates (sealpost) or plain TCP again (Mosquitto). */
  tlsUrl: string;
  /** MQTT over WebSocket. */
  wsUrl: string;
  stop: () => Promise<void>;
}

/** Mosquitto: anyone may read and write anything (key topics included). */
export async function startMosquitto(dir: string): Promise<Broker> {
  const [port, wsPort] = [await freePort(), await freePort()];
  const conf = join(dir, "mosquitto.conf");
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      `listener ${wsPort} 127.0.0.1`,
      "protocol websockets",
      "allow_anonymous true",
      "persistence false",
      "",
    ].join("\n"),
  );
  const binary = existsSync("/usr/sbin/mosquitto") ? "/usr/sbin/mosquitto" : "mosquitto";
  const proc = start(binary, ["-c", conf]);
  await waitForPort(port);
  await waitForPort(wsPort);
  const url = `mqtt://127.0.0.1:${port}`;
  return {
    name: "mosquitto",
    url,
    tlsUrl: url,
    wsUrl: `ws://127.0.0.1:${wsPort}`,
    stop: proc.stop,
  };
}

/**
 * The sealpost broker: TCP, TLS with the CA's client certificates (publishers write their
 * key topics, subscribers read theirs), and WebSocket; `extraToml` adds ACL rules or users.
 */
export async function startSealpost(pki: Pki, extraToml = ""): Promise<Broker> {
  const [port, tlsPort, wsPort] = [await freePort(), await freePort(), await freePort()];
  const conf = join(pki.dir, "broker.toml");
  await writeFile(
    conf,
    `[[listener]]
kind = "tcp"
bind = "127.0.0.1:${port}"
[[listener]]
kind = "tls"
bind = "127.0.0.1:${tlsPort}"
[listener.tls]
cert = "${pki.path("127.0.0.1.pem")}"
key = "${pki.path("127.0.0.1.key")}"
client_ca = "${pki.path("ca.pem")}"
[[listener]]
kind = "ws"
bind = "127.0.0.1:${wsPort}"
[limits]
max_packet_size = 2000000
${extraToml}
`,
  );
  const proc = start(rustBin("sealpost-broker"), ["--config", conf]);
  await waitForPort(port);
  await waitForPort(tlsPort);
  await waitForPort(wsPort);
  return {
    name: "sealpost",
    url: `mqtt://127.0.0.1:${port}`,
    tlsUrl: `mqtts://127.0.0.1:${tlsPort}`,
    wsUrl: `ws://127.0.0.1:${wsPort}`,
    stop: proc.stop,
  };
}

/**
 * `sealpost-pub kdc add-reader`: the credentials of `reader` for the KDC that `kdcArgs`
 * serves on `port`, written to `out` and returned.
 */
export async function addKdcReader(
  pki: Pki,
  reader: string,
  stateDir: string,
  port: number,
  out: string,
): Promise<KdcCredentials> {
  await cli("sealpost-pub", [
    "kdc",
    "add-reader",
    reader,
    "-o",
    out,
    "--state-dir",
    stateDir,
    "--kdc-cert",
    pki.path("127.0.0.1.pem"),
    "--kdc-address",
    `https://127.0.0.1:${port}`,
  ]);
  return JSON.parse(await readFile(out, "utf8")) as KdcCredentials;
}

/** `sealpost-pub` arguments: keys by the KDC only, served on `port` as 127.0.0.1. */
export function kdcArgs(pki: Pki, stateDir: string, port: number): string[] {
  return [
    "--state-dir",
    stateDir,
    "--kdc",
    `127.0.0.1:${port}`,
    "--kdc-cert",
    pki.path("127.0.0.1.pem"),
    "--kdc-key",
    pki.path("127.0.0.1.key"),
    "--kdc-only",
  ];
}
