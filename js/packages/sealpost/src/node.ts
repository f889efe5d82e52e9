/**
 * Node.js-only pieces: the replay window in a file, a KDC transport that trusts the
 * sealpost CA only and pins the KDC certificate, and the `Publisher`.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { dirname } from "node:path";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { nowUnix } from "./bytes.js";
import type { Verifier } from "./certs.js";
import type { CrlSource } from "./crlReloader.js";
import type { KdcCredentials, KdcTransport } from "./kdc.js";
import type { ReplayState, ReplayStore } from "./replay.js";

export * from "./index.js";
export * from "./publisher.js";

/** The replay window in a file (written atomically before messages are delivered). */
export class FileReplayStore implements ReplayStore {
  constructor(private readonly path: string) {}

  async load(): Promise<unknown | null> {
    try {
      return JSON.parse(await readFile(this.path, "utf8"));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
  }

  async save(state: ReplayState): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    await writeFile(`${this.path}.tmp`, JSON.stringify(state), { mode: 0o600 });
    await rename(`${this.path}.tmp`, this.path);
  }
}

/** A revocation list file (PEM or DER), read anew on every reload. */
export function fileCrlSource(path: string): CrlSource {
  return async () => {
    const bytes = await readFile(path);
    return bytes[0] === 0x30 ? new Uint8Array(bytes) : bytes.toString("utf8");
  };
}

/**
 * KDC requests over HTTPS trusting `caPem` only, with the KDC certificate pinned to the
 * credentials' `kdc_certificate_sha256` and, given the subscriber's `verifier`, absent from
 * its revocation list in force (a current one): all checked before the password is sent.
 */
export function nodeKdcTransport(
  caPem: string,
): (c: KdcCredentials, verifier?: Verifier) => KdcTransport {
  return (credentials, verifier) => {
    const pin = credentials.kdc_certificate_sha256?.toLowerCase();
    if (!pin || !/^[0-9a-f]{64}$/.test(pin)) {
      throw new Error("the credentials file names no KDC certificate pin");
    }
    return (url, init) =>
      new Promise((resolve, reject) => {
        const req = request(
          url,
          {
            method: init.method,
            headers: init.headers,
            // A fresh connection per request: a pooled one would skip the checks below,
            // and a list reloaded since then would not apply to it.
            agent: false,
            ca: caPem,
            checkServerIdentity: (host: string, cert: PeerCertificate) => {
              const named = checkServerIdentity(host, cert);
              if (named) return named;
              try {
                verifier?.checkRevocation("the KDC certificate", cert.serialNumber, nowUnix());
              } catch (e) {
                return e as Error;
              }
              const actual = createHash("sha256").update(cert.raw).digest("hex");
              return actual === pin
                ? undefined
                : new Error("KDC certificate does not match the pin");
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => {
              let json: unknown = null;
              try {
                json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
              } catch {
                json = null;
              }
              resolve({ status: res.statusCode ?? 0, json });
            });
          },
        );
        req.on("error", reject);
        if (init.body) req.write(init.body);
        req.end();
      });
  };
}
