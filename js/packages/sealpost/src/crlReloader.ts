/**
 * The revocation list read again while running (docs/SECURITY.md: revocation lists are
 * reloaded by the subscriber too): a source (a file in Node.js, a URL in a browser) is read
 * at start and on a timer, and each changed list the CA signed is installed. A list that
 * cannot be read or verified, or is older than the one in force, is refused and the one in
 * force stays: the subscriber never falls back to no list, and a list that stops being
 * renewed fails closed once it is past its next update.
 */
import { equal } from "./bytes.js";
import type { Verifier } from "./certs.js";
import { derOrPem } from "./pem.js";

/** Reads the current revocation list (DER bytes or PEM text). */
export type CrlSource = () => Promise<Uint8Array | string>;

/** Default interval between reads of a revocation list source: 60 s (as in the Rust SDK). */
export const DEFAULT_CRL_RELOAD_MS = 60_000;

/** Installs the lists a source yields into one verifier. */
export class CrlReloader {
  private installed: Uint8Array | null = null;

  constructor(
    private readonly verifier: Verifier,
    private readonly source: CrlSource,
  ) {}

  /**
   * Reads the source and installs the list if it changed; true if it did. Throws (and
   * changes nothing) if the list cannot be read, does not verify, or is older.
   */
  async reload(): Promise<boolean> {
    const der = derOrPem(await this.source(), "X509 CRL");
    if (this.installed && equal(der, this.installed)) return false;
    await this.verifier.setRevocationList(der);
    this.installed = der;
    return true;
  }
}
