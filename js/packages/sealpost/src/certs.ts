/**
 * Certificates of the sealpost security center (docs/PROTOCOL.md, "Parties and keys"):
 * parsing with the maintained `@peculiar/x509`, and a verifier that trusts one CA and its
 * revocation list. There is no way to skip a check.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { buf, equal, toHex } from "./bytes.js";
import { sha256 } from "./primitives.js";
import { decodeFilter, filterMatches, validateFilter } from "./topic.js";

const ROLE_PREFIX = "urn:sealpost:role:";
const PUBLISH_PREFIX = "urn:sealpost:publish:";
const ED25519 = { name: "Ed25519" };

/** The roles the security center issues. */
export type Role = "authority" | "publisher" | "subscriber" | "server" | "client" | "broker";
const ROLES: readonly string[] = [
  "authority",
  "publisher",
  "subscriber",
  "server",
  "client",
  "broker",
];

/** Why a certificate was refused; the opener maps these to rejection kinds. */
export type CertificateProblem = "malformed" | "untrusted" | "expired" | "revoked" | "bad_crl";

/** A refused certificate or revocation list. */
export class CertificateError extends Error {
  constructor(
    readonly problem: CertificateProblem,
    message: string,
  ) {
    super(message);
    this.name = "CertificateError";
  }
}

/** What sealpost reads from a certificate. */
export interface CertificateInfo {
  /** Identity: the subject common name. */
  id: string;
  role: Role;
  /** Topic filters a publisher may publish to. */
  topics: string[];
  /** SHA-256 of the DER. */
  fingerprint: Uint8Array;
  /** Serial number, lower-case hex without leading zeros. */
  serial: string;
  notBefore: number;
  notAfter: number;
  der: Uint8Array;
  /** The parsed certificate (for its public key). */
  cert: x509.X509Certificate;
}

/** May the certificate's holder publish to `topic`? */
export function mayPublish(info: CertificateInfo, topic: string): boolean {
  return info.topics.some((f) => filterMatches(f, topic));
}

const stripSerial = (hex: string): string => hex.toLowerCase().replace(/^0+/, "");

/** Parses a certificate without verifying it. */
export async function parseCertificate(der: Uint8Array): Promise<CertificateInfo> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(buf(der));
  } catch {
    throw new CertificateError("malformed", "certificate does not parse");
  }
  const id = cert.subjectName.getField("CN")[0] ?? "";
  let role: Role | null = null;
  const topics: string[] = [];
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    if (name.type !== "url") continue;
    if (name.value.startsWith(ROLE_PREFIX)) {
      const r = name.value.slice(ROLE_PREFIX.length);
      if (!ROLES.includes(r)) throw new CertificateError("malformed", "unknown role");
      if (role !== null) throw new CertificateError("malformed", "more than one role");
      role = r as Role;
    } else if (name.value.startsWith(PUBLISH_PREFIX)) {
      const filter = decodeFilter(name.value.slice(PUBLISH_PREFIX.length));
      if (filter === null || !validateFilter(filter)) {
        throw new CertificateError("malformed", "bad topic filter");
      }
      topics.push(filter);
    }
  }
  if (role === null) throw new CertificateError("malformed", "no sealpost role");
  return {
    id,
    role,
    topics,
    fingerprint: await sha256(der),
    serial: stripSerial(cert.serialNumber),
    notBefore: Math.floor(cert.notBefore.getTime() / 1000),
    notAfter: Math.floor(cert.notAfter.getTime() / 1000),
    der,
    cert,
  };
}

/** A verified revocation list. */
export interface RevocationList {
  revoked: Set<string>;
  number: bigint;
  thisUpdate: number;
  nextUpdate: number;
}

/** Verifies certificates against one trusted CA and (optionally) its revocation list. */
export class Verifier {
  private revocations: RevocationList | null = null;

  private constructor(
    /** The trusted CA. */
    readonly authority: CertificateInfo,
    private readonly caKey: CryptoKey,
    private readonly caSubject: Uint8Array,
  ) {}

  /** Trusts the CA certificate `der`: a self-signed Ed25519 sealpost CA. */
  static async create(der: Uint8Array): Promise<Verifier> {
    const ca = await parseCertificate(der);
    if (ca.role !== "authority") throw new CertificateError("untrusted", "not a CA certificate");
    const bc = ca.cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) throw new CertificateError("untrusted", "basic constraints do not allow CA use");
    const key = await ed25519Key(ca.cert);
    if (!(await ca.cert.verify({ publicKey: key, signatureOnly: true }))) {
      throw new CertificateError("untrusted", "CA certificate is not self-signed");
    }
    return new Verifier(ca, key, new Uint8Array(ca.cert.subjectName.toArrayBuffer()));
  }

  /** The revocation list in force, if any. */
  get revocationList(): RevocationList | null {
    return this.revocations;
  }

  /**
   * Installs a revocation list (DER) after checking the CA signed it. A list older (by CRL
   * number) than the installed one is refused, so revocations cannot be rolled back.
   */
  async setRevocationList(der: Uint8Array): Promise<void> {
    const bad = (why: string) => new CertificateError("bad_crl", why);
    let crl: x509.X509Crl;
    try {
      crl = new x509.X509Crl(buf(der));
    } catch {
      throw bad("revocation list does not parse");
    }
    if (!equal(new Uint8Array(crl.issuerName.toArrayBuffer()), this.caSubject)) {
      throw bad("issued by another CA");
    }
    if (crl.signatureAlgorithm.name !== "Ed25519") throw bad("not signed with Ed25519");
    if (!(await crl.verify({ publicKey: this.caKey }))) {
      throw bad("signature does not verify with the CA key");
    }
    const numberExt = crl.extensions.find((e) => e.type === "2.5.29.20");
    if (!numberExt) throw bad("no CRL number");
    const number = derInteger(new Uint8Array(numberExt.value));
    if (!crl.nextUpdate) throw bad("no next update time");
    if (this.revocations && number < this.revocations.number) {
      throw bad(`CRL number ${number} is older than the installed ${this.revocations.number}`);
    }
    this.revocations = {
      revoked: new Set(crl.entries.map((e) => stripSerial(e.serialNumber))),
      number,
      thisUpdate: Math.floor(crl.thisUpdate.getTime() / 1000),
      nextUpdate: Math.floor(crl.nextUpdate.getTime() / 1000),
    };
  }

  /** Verifies `der` at `now` (unix seconds): issued by the CA, valid, not revoked. */
  async verify(der: Uint8Array, now: number): Promise<CertificateInfo> {
    const info = await parseCertificate(der);
    const untrusted = new CertificateError("untrusted", `${info.id}: not issued by the trusted CA`);
    if (!equal(new Uint8Array(info.cert.issuerName.toArrayBuffer()), this.caSubject)) {
      throw untrusted;
    }
    if (info.cert.signatureAlgorithm.name !== "Ed25519") throw untrusted;
    let signed = false;
    try {
      signed = await info.cert.verify({ publicKey: this.caKey, signatureOnly: true });
    } catch {
      signed = false;
    }
    if (!signed) throw untrusted;
    const bc = info.cert.getExtension(x509.BasicConstraintsExtension);
    if (info.role === "authority" || bc?.ca) {
      throw new CertificateError("untrusted", `${info.id} is a CA certificate`);
    }
    this.checkTimeAndRevocation(info, now);
    return info;
  }

  /** The checks that depend on time and the revocation list (re-run on every use). */
  checkTimeAndRevocation(info: CertificateInfo, now: number): void {
    if (now < info.notBefore || now > info.notAfter) {
      throw new CertificateError("expired", `${info.id}: outside its validity period`);
    }
    this.checkRevocation(info.id, info.serial, now);
  }

  /**
   * Throws unless the certificate with this serial (hex, any case and leading zeros) is
   * absent from the revocation list in force and that list is current; passes with no
   * list installed (`insecureNoCrl`).
   */
  checkRevocation(id: string, serial: string, now: number): void {
    const list = this.revocations;
    if (!list) return;
    const s = stripSerial(serial);
    if (list.revoked.has(s)) {
      throw new CertificateError("revoked", `${id}: revoked (serial ${s})`);
    }
    if (now > list.nextUpdate) {
      throw new CertificateError("bad_crl", "the revocation list is past its next update");
    }
  }
}

/** The certificate's Ed25519 public key as a WebCrypto key. */
export async function ed25519Key(cert: x509.X509Certificate): Promise<CryptoKey> {
  if (cert.publicKey.algorithm.name !== "Ed25519") {
    throw new CertificateError("untrusted", "not an Ed25519 key");
  }
  return crypto.subtle.importKey("spki", cert.publicKey.rawData, ED25519, false, ["verify"]);
}

/** The certificate's RSA key for RSA-OAEP-SHA256 wrapping. */
export async function rsaOaepKey(cert: x509.X509Certificate): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "spki",
    cert.publicKey.rawData,
    { name: "RSA-OAEP", hash: "SHA-256" },
    false,
    ["encrypt"],
  );
}

/** Decodes the DER INTEGER of a CRL number extension value. */
function derInteger(der: Uint8Array): bigint {
  if (der[0] !== 0x02 || der.length < 3 || der[1] !== der.length - 2) {
    throw new CertificateError("bad_crl", "malformed CRL number");
  }
  const body = der.subarray(2);
  return body.length === 0 ? 0n : BigInt(`0x${toHex(body)}`);
}
