/**
 * The publisher's key distribution center in Node.js (docs/PROTOCOL.md, "Key distribution
 * center"): HTTPS (`node:https`, TLS 1.2+), `POST <address>/login` and
 * `GET <address>/epochs/<E>`, the same answers and error codes as the Rust KDC, so both
 * subscriber SDKs use it unchanged; CORS for configured origins only
 * (`allowOrigins`, as `--kdc-allow-origin`).
 *
 * Passwords are stored only as argon2id hashes (`@node-rs/argon2`, m = 19 MiB, t = 2,
 * p = 1); tokens are 32 random bytes, kept in memory as SHA-256 hashes, at most 8 per
 * reader, each bound to the password hash it was issued under (credentials issued again
 * invalidate the old tokens). Failed logins are limited per client address (an IPv6 /64
 * counts as one): logins still being checked count as failures until decided.
 */
import { createHash, randomBytes as nodeRandomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { isIPv6 } from "node:net";
import type { Duplex } from "node:stream";
import { verify as verifyPassword } from "@node-rs/argon2";

/** What the KDC knows of one reader. */
export interface KdcReader {
  /** argon2id PHC string of the password. */
  hash: string;
  /** The first epoch this reader may fetch. */
  fromEpoch: bigint;
  revoked: boolean;
}

/** What the KDC serves from: the publisher's readers and keys, read on every request. */
export interface KdcBackend {
  publisher: string;
  /** The publisher certificate (DER), sent with every key. */
  certificate: Uint8Array;
  reader(id: string): KdcReader | undefined;
  key(epoch: bigint): Uint8Array | undefined;
}

/** Options of the KDC. */
export interface KdcServerOptions {
  /** Where to listen, `host:port` (port 0: any free one). */
  listen: string;
  /** The server certificate and key (PEM), role `server`, naming the address's host. */
  cert: string;
  key: string;
  /** Page origins allowed to call the KDC (`http(s)://host[:port]`; no `*`, no `null`). */
  allowOrigins?: string[];
  /** Token lifetime, seconds (default 300). */
  tokenLifetimeSecs?: number;
  /** Failed logins allowed per client address per minute (default 5). */
  maxFailedLogins?: number;
}

const MAX_BODY = 4096;
const MAX_READER_LEN = 128;
const MAX_PASSWORD_LEN = 256;
const TOKENS_PER_READER = 8;
const FAILED_LOGIN_WINDOW_MS = 60_000;
const MAX_CONNECTIONS = 256;
const MAX_CONNECTIONS_PER_ADDRESS = 16;

/** `scheme://host[:port]`, lower case, or null if `origin` is not of that form. */
export function normaliseOrigin(origin: string): string | null {
  const lower = origin.toLowerCase();
  const m = /^(https?):\/\/([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?$/.exec(lower);
  return m ? lower : null;
}

/** `https://host:port[/path]` with an explicit port and no trailing slash. */
export function normaliseKdcAddress(address: string): string {
  const u = new URL(address);
  if (u.protocol !== "https:") throw new Error(`${address}: a KDC address is https://`);
  if (u.search || u.hash || u.username || u.password) {
    throw new Error(`${address}: a KDC address has no query, fragment or user`);
  }
  const port = u.port || "443";
  const path = u.pathname.replace(/\/+$/, "");
  return `https://${u.hostname}:${port}${path}`;
}

/** The client address as the limits count it: IPv4 as is, IPv6 by its /64. */
function addressKey(ip: string | undefined): string {
  const a = (ip ?? "").replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1");
  if (!isIPv6(a)) return a;
  const [head = "", tail = ""] = a.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  return `${groups.slice(0, 4).join(":")}::/64`;
}

const sha256hex = (text: string) => createHash("sha256").update(text).digest("hex");

interface Token {
  reader: string;
  /** The password hash the token was issued under. */
  credential: string;
  until: number;
}

/** A running KDC. */
export class KdcServer {
  private readonly tokens = new Map<string, Token>();
  /** Failure times (and checks in progress) per client address. */
  private readonly failures = new Map<string, { times: number[]; pending: number }>();
  private readonly connections = new Map<string, number>();
  private readonly origins: string[];
  private readonly lifetimeMs: number;
  private readonly maxFailed: number;

  private constructor(
    private readonly server: Server,
    /** The normalised address path prefix (`/path` or empty). */
    private readonly prefix: string,
    private readonly backend: KdcBackend,
    options: KdcServerOptions,
  ) {
    this.origins = (options.allowOrigins ?? []).map((o) => normaliseOrigin(o) as string);
    this.lifetimeMs = (options.tokenLifetimeSecs ?? 300) * 1000;
    this.maxFailed = options.maxFailedLogins ?? 5;
  }

  /** Starts the KDC for `address` (its path is the endpoints' prefix). */
  static async start(
    address: string,
    options: KdcServerOptions,
    backend: KdcBackend,
  ): Promise<KdcServer> {
    const prefix = new URL(normaliseKdcAddress(address)).pathname.replace(/\/+$/, "");
    for (const o of options.allowOrigins ?? []) {
      if (!normaliseOrigin(o)) {
        throw new Error(`allowOrigins: ${o} is not an origin (http(s)://host[:port])`);
      }
    }
    const server = createServer({
      cert: options.cert,
      key: options.key,
      minVersion: "TLSv1.2",
      handshakeTimeout: 3000,
    });
    const kdc = new KdcServer(server, prefix, backend, options);
    server.headersTimeout = 5000;
    server.requestTimeout = 10_000;
    server.maxConnections = MAX_CONNECTIONS;
    server.keepAliveTimeout = 0;
    server.on("connection", (socket) => kdc.admit(socket));
    server.on("request", (req, res) => {
      kdc
        .handle(req, res)
        .catch(() => kdc.send(req, res, 500, errorBody("internal", "internal error")));
    });
    const [host, port] = splitHostPort(options.listen);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return kdc;
  }

  /** The port it listens on. */
  get port(): number {
    const a = this.server.address();
    return typeof a === "object" && a ? a.port : 0;
  }

  /** Drops every token of `reader` (revocation). */
  dropTokens(reader: string): void {
    for (const [hash, t] of this.tokens) if (t.reader === reader) this.tokens.delete(hash);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** At most 16 connections from one client address at once; more are closed at once. */
  private admit(socket: Duplex & { remoteAddress?: string }): void {
    const key = addressKey(socket.remoteAddress);
    const n = (this.connections.get(key) ?? 0) + 1;
    if (n > MAX_CONNECTIONS_PER_ADDRESS) {
      socket.destroy();
      return;
    }
    this.connections.set(key, n);
    socket.once("close", () => {
      const left = (this.connections.get(key) ?? 1) - 1;
      if (left <= 0) this.connections.delete(key);
      else this.connections.set(key, left);
    });
  }

  private allowedOrigin(req: IncomingMessage): string | null {
    const origin = req.headers.origin;
    if (this.origins.length === 0 || typeof origin !== "string") return null;
    return this.origins.includes(origin.toLowerCase()) ? origin : null;
  }

  /** Writes a JSON answer, with CORS headers for an allowed origin. */
  private send(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    if (res.headersSent) return;
    const h: Record<string, string> = {
      "Content-Type": "application/json",
      "Cache-Control": "no-store",
      Connection: "close",
      ...headers,
    };
    if (this.origins.length > 0) {
      h.Vary = "Origin";
      const origin = this.allowedOrigin(req);
      if (origin) h["Access-Control-Allow-Origin"] = origin;
    }
    res.writeHead(status, h);
    res.end(JSON.stringify(body));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const origin = this.allowedOrigin(req);
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] && origin) {
      res.writeHead(204, {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "authorization, content-type",
        "Access-Control-Max-Age": "600",
        Vary: "Origin",
        "Cache-Control": "no-store",
        Connection: "close",
      });
      res.end();
      return;
    }
    const path = new URL(req.url ?? "/", "https://kdc").pathname;
    const rest = path.startsWith(this.prefix) ? path.slice(this.prefix.length) : null;
    if (rest === "/login") {
      if (req.method !== "POST")
        return this.send(req, res, 405, errorBody("method_not_allowed", "use POST"));
      return this.login(req, res);
    }
    if (rest?.startsWith("/epochs/")) {
      if (req.method !== "GET")
        return this.send(req, res, 405, errorBody("method_not_allowed", "use GET"));
      return this.fetch(req, res, rest.slice("/epochs/".length));
    }
    this.send(req, res, 404, errorBody("not_found", "no such endpoint"));
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    if (body === null)
      return this.send(req, res, 413, errorBody("too_large", "request body too large"));
    let request: { reader?: unknown; password?: unknown };
    try {
      request = JSON.parse(body) as typeof request;
    } catch {
      request = {};
    }
    const { reader, password } = request ?? {};
    if (typeof reader !== "string" || typeof password !== "string") {
      return this.send(req, res, 400, errorBody("bad_request", 'expected {"reader", "password"}'));
    }
    if (
      Buffer.byteLength(reader) > MAX_READER_LEN ||
      Buffer.byteLength(password) > MAX_PASSWORD_LEN
    ) {
      return this.send(req, res, 400, errorBody("bad_request", "reader or password too long"));
    }
    const key = addressKey(req.socket.remoteAddress);
    const wait = this.beginAttempt(key);
    if (wait > 0) {
      return this.send(
        req,
        res,
        429,
        errorBody("rate_limited", "too many failed logins; retry later"),
        {
          "Retry-After": String(Math.ceil(wait / 1000)),
        },
      );
    }
    const record = this.backend.reader(reader);
    let ok = false;
    try {
      // An unknown reader costs the same argon2 time (checked against a dummy hash).
      ok = await verifyPassword(record?.hash ?? DUMMY_HASH, password).catch(() => false);
      ok = ok && record !== undefined;
    } finally {
      this.finishAttempt(key, !ok || record?.revoked === true);
    }
    if (!ok || !record) {
      return this.send(
        req,
        res,
        401,
        errorBody("invalid_credentials", "unknown reader or wrong password"),
      );
    }
    if (record.revoked) {
      return this.send(req, res, 403, errorBody("revoked", "the publisher revoked this reader"));
    }
    const token = nodeRandomBytes(32).toString("base64url");
    const mine = [...this.tokens].filter(([, t]) => t.reader === reader);
    for (const [hash] of mine.slice(0, Math.max(0, mine.length - TOKENS_PER_READER + 1))) {
      this.tokens.delete(hash); // the oldest beyond 8 (a Map keeps insertion order)
    }
    this.tokens.set(sha256hex(token), {
      reader,
      credential: record.hash,
      until: Date.now() + this.lifetimeMs,
    });
    this.send(req, res, 200, {
      access_token: token,
      token_type: "Bearer",
      expires_in: Math.floor(this.lifetimeMs / 1000),
    });
  }

  private async fetch(req: IncomingMessage, res: ServerResponse, epochText: string): Promise<void> {
    const unauthorized = (code: "invalid_token" | "token_expired", message: string) =>
      this.send(req, res, 401, errorBody(code, message), {
        "WWW-Authenticate": `Bearer error="${code}"`,
      });
    const auth = req.headers.authorization;
    const token =
      typeof auth === "string" && auth.startsWith("Bearer ") ? auth.slice(7).trim() : null;
    if (!token) return unauthorized("invalid_token", "missing bearer token");
    const hash = sha256hex(token);
    const t = this.tokens.get(hash);
    if (!t) return unauthorized("invalid_token", "unknown or invalidated token");
    if (t.until <= Date.now()) {
      this.tokens.delete(hash);
      return unauthorized("token_expired", "the access token has expired");
    }
    if (!/^\d{1,20}$/.test(epochText)) {
      return this.send(
        req,
        res,
        400,
        errorBody("bad_request", "the epoch must be a decimal number"),
      );
    }
    const epoch = BigInt(epochText);
    const record = this.backend.reader(t.reader);
    if (!record || record.revoked || record.hash !== t.credential) {
      this.tokens.delete(hash); // revoked, or credentials issued again since
      return unauthorized("invalid_token", "unknown or invalidated token");
    }
    if (epoch < record.fromEpoch) {
      return this.send(
        req,
        res,
        403,
        errorBody("not_granted", "this reader was granted after that epoch"),
      );
    }
    const key = this.backend.key(epoch);
    if (!key) return this.send(req, res, 404, errorBody("unknown_epoch", "no key for that epoch"));
    this.send(req, res, 200, {
      publisher: this.backend.publisher,
      epoch: Number(epoch),
      key: Buffer.from(key).toString("base64url"),
      certificate: Buffer.from(this.backend.certificate).toString("base64"),
    });
  }

  /** Counts a login as in progress; > 0: refused, retry after that many ms. */
  private beginAttempt(key: string): number {
    const now = Date.now();
    const entry = this.failures.get(key) ?? { times: [], pending: 0 };
    entry.times = entry.times.filter((t) => t > now - FAILED_LOGIN_WINDOW_MS);
    this.failures.set(key, entry);
    if (entry.times.length + entry.pending >= this.maxFailed) {
      const oldest = entry.times[0] ?? now;
      return Math.max(1000, oldest + FAILED_LOGIN_WINDOW_MS - now);
    }
    entry.pending += 1;
    return 0;
  }

  private finishAttempt(key: string, failed: boolean): void {
    const entry = this.failures.get(key);
    if (!entry) return;
    entry.pending -= 1;
    if (failed) entry.times.push(Date.now());
    if (entry.times.length === 0 && entry.pending === 0) this.failures.delete(key);
  }
}

/** A hash no password matches in practice, for unknown readers (same argon2 cost). */
const DUMMY_HASH =
  "$argon2id$v=19$m=19456,t=2,p=1$c2VhbHBvc3QtZHVtbXk$2xqvVxOU3S8wY5tPmfi0jX4m8uYj9Cj3kqZc5Qb7k0Q";

function errorBody(error: string, message: string) {
  return { error, message };
}

/** The body, or null once it passes 4 KiB. */
async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function splitHostPort(listen: string): [string, number] {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(listen);
  if (!m?.[1] || !m[2]) throw new Error(`${listen}: expected host:port`);
  return [m[1].replace(/^\[|\]$/g, ""), Number(m[2])];
}
