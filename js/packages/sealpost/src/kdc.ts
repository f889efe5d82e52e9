/**
 * KDC client (docs/PROTOCOL.md, "Key distribution center"): log in, fetch the content key
 * of an epoch, log in again once on `invalid_token` / `token_expired`. The HTTP transport
 * is injectable: in a browser it is `fetch` (the browser checks TLS); in Node.js,
 * `sealpost/node` supplies one that trusts the sealpost CA only and pins the KDC
 * certificate named in the credentials file.
 */
import { fromBase64 } from "./bytes.js";

/** A credentials file (`sealpost-pub kdc add-reader`). */
export interface KdcCredentials {
  kdc: string;
  reader: string;
  password: string;
  kdc_certificate_sha256?: string;
}

/** One HTTP request/answer, as the KDC client needs it. */
export type KdcTransport = (
  url: string,
  init: { method: "GET" | "POST"; headers: Record<string, string>; body?: string },
) => Promise<{ status: number; json: unknown }>;

/** The default transport: `fetch` with credentials omitted (the token is the credential). */
export const fetchTransport: KdcTransport = async (url, init) => {
  const res = await fetch(url, { ...init, credentials: "omit", cache: "no-store" });
  let json: unknown = null;
  try {
    json = await res.json();
  } catch {
    json = null;
  }
  return { status: res.status, json };
};

/** A key the KDC returned. */
export interface FetchedKey {
  publisher: string;
  epoch: bigint;
  key: Uint8Array;
  certificate: Uint8Array;
}

/** Why a key fetch failed: `refused` (4xx other than auth) waits longer than `transient`. */
export class KeyFetchFailed extends Error {
  constructor(
    readonly publisher: string,
    readonly epoch: bigint,
    readonly refusal: boolean,
    message: string,
  ) {
    super(message);
    this.name = "KeyFetchFailed";
  }
}

/** A logged-in session with one KDC. */
export class KdcClient {
  private token: { value: string; until: number } | null = null;

  constructor(
    readonly credentials: KdcCredentials,
    private readonly transport: KdcTransport = fetchTransport,
  ) {
    if (!credentials.kdc.startsWith("https://")) {
      throw new Error("a KDC address must be https://");
    }
  }

  private async login(): Promise<string> {
    const { status, json } = await this.transport(`${this.credentials.kdc}/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        reader: this.credentials.reader,
        password: this.credentials.password,
      }),
    });
    const body = json as { access_token?: unknown; expires_in?: unknown; error?: unknown };
    if (status !== 200 || typeof body?.access_token !== "string") {
      throw new Error(`login refused: ${status} ${String(body?.error ?? "")}`);
    }
    const lifetime = typeof body.expires_in === "number" ? body.expires_in : 60;
    this.token = { value: body.access_token, until: Date.now() + (lifetime - 10) * 1000 };
    return body.access_token;
  }

  /** Fetches the key of `epoch` (the publisher is checked against the answer). */
  async fetchKey(publisher: string, epoch: bigint): Promise<FetchedKey> {
    const fail = (refusal: boolean, why: string) =>
      new KeyFetchFailed(publisher, epoch, refusal, why);
    for (let attempt = 0; attempt < 2; attempt++) {
      let token: string;
      try {
        token = this.token && this.token.until > Date.now() ? this.token.value : await this.login();
      } catch (e) {
        throw fail(true, (e as Error).message);
      }
      let answer: { status: number; json: unknown };
      try {
        answer = await this.transport(`${this.credentials.kdc}/epochs/${epoch}`, {
          method: "GET",
          headers: { Authorization: `Bearer ${token}` },
        });
      } catch (e) {
        throw fail(false, `KDC unreachable: ${(e as Error).message}`);
      }
      const body = answer.json as Record<string, unknown> | null;
      if (answer.status === 401) {
        this.token = null;
        continue;
      }
      if (answer.status !== 200 || !body) {
        throw fail(
          answer.status < 500,
          `KDC answered ${answer.status} ${String(body?.error ?? "")}`,
        );
      }
      if (
        body.publisher !== publisher ||
        String(body.epoch) !== epoch.toString() ||
        typeof body.key !== "string" ||
        typeof body.certificate !== "string"
      ) {
        throw fail(true, "KDC answer does not match the request");
      }
      const key = fromBase64(body.key);
      if (key.length !== 32) throw fail(true, "KDC key is not 32 bytes");
      return { publisher, epoch, key, certificate: fromBase64(body.certificate) };
    }
    throw fail(true, "KDC refused the token twice");
  }
}
