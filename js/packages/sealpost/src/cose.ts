/**
 * The COSE (RFC 9052) structures sealpost uses: COSE_Sign1 around COSE_Encrypt0 for data,
 * COSE_Sign1 for key messages, and the Sig_structure / Enc_structure both sign and encrypt.
 */
import { asBytes, asMap, asUint, decodeStrict, encodeCbor, Tag, tagged } from "./cbor.js";
import { malformed, Rejected } from "./errors.js";

/** COSE algorithm identifiers (IANA registry). */
export const ALG_EDDSA = -8;
/** A256GCM. */
export const ALG_A256GCM = 3;
/** RSAES-OAEP w/ SHA-256. */
export const ALG_RSA_OAEP_256 = -41;
/**
 * HPKE Key Encryption, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM: private use
 * until draft-ietf-cose-hpke registers this suite (docs/PROTOCOL.md, "Key wrapping").
 */
export const ALG_HPKE_X25519_A256GCM_KE = -65601;
/** HPKE Key Encryption with X-Wing / HKDF-SHA256 / AES-256-GCM: private use, next to it. */
export const ALG_HPKE_XWING_A256GCM_KE = -65602;

/** Registered header labels. */
export const LABEL_ALG = 1;
/** kid. */
export const LABEL_KID = 4;
/** ek: the HPKE encapsulated key of a COSE_recipient (draft-ietf-cose-hpke). */
export const LABEL_EK = -4;
/** IV. */
export const LABEL_IV = 5;
/** CWT claims (RFC 9597). */
export const LABEL_CWT_CLAIMS = 15;
/** x5chain. */
export const LABEL_X5CHAIN = 33;
/** CWT claim `iat`. */
export const CWT_IAT = 6;
/** sealpost private-use labels. */
export const LABEL_VERSION = -65537;
/** Message kind. */
export const LABEL_KIND = -65538;
/** Sequence number. */
export const LABEL_SEQ = -65539;
/** Key index. */
export const LABEL_KEY_INDEX = -65540;
/** Epoch of a COSE_recipient. */
export const LABEL_EPOCH = -65541;

/** Protocol version of key messages and of one-signature data envelopes. */
export const VERSION = 1n;
/** Protocol version of tree-signed data envelopes (bursts). */
export const VERSION_BURST = 2n;
/** Verifiable data proofs (draft-ietf-cose-merkle-tree-proofs): the inclusion proof. */
export const LABEL_VDP = 396;
/** Kind of a data envelope. */
export const KIND_DATA = 1n;
/** Kind of a key message. */
export const KIND_KEYS = 2n;

/** CBOR tags of the COSE messages. */
export const TAG_SIGN1 = 18;
/** COSE_Encrypt0. */
export const TAG_ENCRYPT0 = 16;

/** A parsed COSE_Sign1: the protected header both as received bytes and decoded. */
export interface Sign1 {
  protectedBytes: Uint8Array;
  protected: Map<unknown, unknown>;
  /** The x5chain certificate (a single DER certificate), if present. */
  x5chain: Uint8Array | null;
  /** The verifiable data proofs header (label 396, version 2 only), still unchecked. */
  vdp: unknown;
  payload: Uint8Array;
  signature: Uint8Array;
}

/**
 * Parses a tagged COSE_Sign1 whose unprotected header holds at most an x5chain and a
 * verifiable data proofs entry (whether the latter may be there, `checkPreamble` decides).
 */
export function parseSign1(bytes: Uint8Array): Sign1 {
  const items = tagged(decodeStrict(bytes, "COSE_Sign1"), TAG_SIGN1, 4);
  if (!items) throw malformed("COSE_Sign1");
  const [p, u, payload, signature] = items;
  const protectedBytes = asBytes(p);
  const unprotected = asMap(u);
  const payloadBytes = asBytes(payload);
  const sig = asBytes(signature);
  if (!protectedBytes || !unprotected || !sig) throw malformed("COSE_Sign1");
  if (!payloadBytes) throw malformed("detached payload");
  const header = asMap(decodeStrict(protectedBytes, "protected header"));
  if (!header) throw malformed("protected header");
  let x5chain: Uint8Array | null = null;
  let vdp: unknown;
  for (const [label, value] of unprotected) {
    if (label === LABEL_VDP) {
      vdp = value;
      continue;
    }
    if (label !== LABEL_X5CHAIN) throw malformed("unexpected unprotected header");
    x5chain = asBytes(value);
    if (!x5chain) throw malformed("x5chain must be a single certificate");
  }
  return { protectedBytes, protected: header, x5chain, vdp, payload: payloadBytes, signature: sig };
}

/**
 * Checks version, kind, algorithm and signature length, in the Rust SDK's order, and
 * returns the version. Data envelopes are version 1 or 2 (bursts), key messages version
 * 1; an inclusion proof is required in version 2 and refused in version 1.
 */
export function checkPreamble(sign1: Sign1, kind: bigint): bigint {
  const h = sign1.protected;
  const version = uintHeader(h, LABEL_VERSION);
  if (version === null) throw malformed("no version");
  if (version !== VERSION && !(kind === KIND_DATA && version === VERSION_BURST)) {
    throw new Rejected("unknown_version", `unknown envelope version ${version}`);
  }
  if (uintHeader(h, LABEL_KIND) !== kind) throw malformed("wrong message kind");
  if ((sign1.vdp !== undefined) !== (version === VERSION_BURST)) {
    throw malformed(
      version === VERSION_BURST ? "no inclusion proof" : "unexpected inclusion proof",
    );
  }
  if (h.get(LABEL_ALG) !== ALG_EDDSA) {
    throw new Rejected("unsupported_algorithm", "unsupported algorithm");
  }
  if (sign1.signature.length !== 64) throw malformed("signature length");
  return version;
}

/** The kid: the SHA-256 fingerprint of the publisher certificate. */
export function kidOf(header: Map<unknown, unknown>): Uint8Array {
  const kid = asBytes(header.get(LABEL_KID));
  if (kid?.length !== 32) throw malformed("kid is not a 32-byte certificate fingerprint");
  return kid as Uint8Array;
}

/** An unsigned integer header value, or null. */
export function uintHeader(h: Map<unknown, unknown>, label: number): bigint | null {
  return asUint(h.get(label));
}

/** `0x84` (array of 4) and the text "Signature1": how every Sig_structure starts. */
const SIGNATURE1_START = Uint8Array.of(0x84, 0x6a, ...new TextEncoder().encode("Signature1"));
/** `0x83` (array of 3) and the text "Encrypt0": how every Enc_structure starts. */
const ENCRYPT0_START = Uint8Array.of(0x83, 0x68, ...new TextEncoder().encode("Encrypt0"));

/** Length of the shortest CBOR head of a byte string of `n` bytes. */
function bstrHeadLen(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x1_0000 ? 3 : n < 0x1_0000_0000 ? 5 : 9;
}

/** Writes the byte string `b` (shortest head, then its bytes) at `at`; returns the end. */
function writeBstr(out: Uint8Array, at: number, b: Uint8Array): number {
  const n = b.length;
  const size = n < 24 ? 0 : n < 0x100 ? 1 : n < 0x1_0000 ? 2 : n < 0x1_0000_0000 ? 4 : 8;
  out[at++] = 0x40 | (size === 0 ? n : size === 1 ? 24 : size === 2 ? 25 : size === 4 ? 26 : 27);
  // The length big-endian, by hand (no DataView per call on this path).
  for (let i = size - 1; i >= 0; i--) out[at++] = Math.floor(n / 2 ** (8 * i)) & 0xff;
  out.set(b, at);
  return at + n;
}

/**
 * A CBOR array of a fixed text start (`start`) followed by byte strings, in core
 * deterministic encoding, written directly: these structures are built for every message
 * sealed or opened, and their encoding is fully determined (checked against cborg by the
 * vectors and primitives tests).
 */
function structure(start: Uint8Array, parts: Uint8Array[]): Uint8Array {
  let len = start.length;
  for (const p of parts) len += bstrHeadLen(p.length) + p.length;
  const out = new Uint8Array(len);
  out.set(start, 0);
  let at = start.length;
  for (const p of parts) at = writeBstr(out, at, p);
  return out;
}

/** `["Signature1", protected, external_aad, payload]`. */
export function sigStructure(
  protectedBytes: Uint8Array,
  externalAad: Uint8Array,
  payload: Uint8Array,
): Uint8Array {
  return structure(SIGNATURE1_START, [protectedBytes, externalAad, payload]);
}

/** `["Encrypt0", protected, external_aad]`. */
export function encStructure(protectedBytes: Uint8Array, externalAad: Uint8Array): Uint8Array {
  return structure(ENCRYPT0_START, [protectedBytes, externalAad]);
}

/** Encodes a tagged COSE_Sign1 (with `vdp`, the proofs header of a version 2 envelope). */
export function encodeSign1(
  protectedBytes: Uint8Array,
  x5chain: Uint8Array | null,
  payload: Uint8Array,
  signature: Uint8Array,
  vdp?: unknown,
): Uint8Array {
  const unprotected = new Map<number, unknown>();
  if (x5chain) unprotected.set(LABEL_X5CHAIN, x5chain);
  if (vdp !== undefined) unprotected.set(LABEL_VDP, vdp);
  return encodeCbor(new Tag(TAG_SIGN1, [protectedBytes, unprotected, payload, signature]));
}
