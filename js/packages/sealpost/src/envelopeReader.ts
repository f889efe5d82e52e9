/**
 * The fast path of envelope parsing: reads a data envelope laid out exactly as
 * docs/PROTOCOL.md pins it (core deterministic CBOR, the protected header's seven
 * parameters in their one order, COSE_Encrypt0 with `{1: 3}` and a 12-byte IV) straight
 * from its bytes, without building and re-encoding a general CBOR value. This is the
 * counterpart of the Rust opener's fast path, and the reason: the general strict decoder
 * (decode, then encode again and compare) was a third of the cost of opening a message.
 *
 * It only ever *accepts*: anything it does not recognise byte for byte (another layout,
 * a non-shortest head, invalid UTF-8, an unknown version, a bad location, trailing bytes)
 * makes it return null, and the caller parses with the general decoder, which accepts or
 * refuses with the typed error. So the fast path can change the speed, never the verdict:
 * every envelope it accepts has exactly one encoding, the one the general path accepts.
 */
import type { KeyIndex, ParsedEnvelope } from "./envelope.js";
import type { InclusionProof } from "./merkle.js";

const MAJOR_UINT = 0;
const MAJOR_BSTR = 2;
const MAJOR_TSTR = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const MAX_PATH_LEN = 64;

/** Fixed byte runs of the layout (each a canonical encoding of its item). */
const SIGN1_START = Uint8Array.of(0xd2, 0x84); // tag 18, array of 4
const LABEL_X5CHAIN = Uint8Array.of(0x18, 0x21); // 33
const LABEL_VDP = Uint8Array.of(0x19, 0x01, 0x8c); // 396
const VDP_INCLUSION = Uint8Array.of(0xa1, 0x20, 0x81); // {-1: [ (one proof)
/** `{1: -8, 4: h'<32 bytes>` ... the first two parameters of the protected header. */
const PROTECTED_START = Uint8Array.of(0xa7, 0x01, 0x27, 0x04, 0x58, 0x20);
const CWT_IAT = Uint8Array.of(0x0f, 0xa1, 0x06); // 15: {6:
const LABEL_VERSION = Uint8Array.of(0x3a, 0x00, 0x01, 0x00, 0x00); // -65537
const LABEL_KIND = Uint8Array.of(0x3a, 0x00, 0x01, 0x00, 0x01); // -65538
const LABEL_SEQ = Uint8Array.of(0x3a, 0x00, 0x01, 0x00, 0x02); // -65539
const KEY_INDEX = Uint8Array.of(0x3a, 0x00, 0x01, 0x00, 0x03, 0x83); // -65540: [
/** Tagged COSE_Encrypt0 `16([h'{1: 3}', {5: h'<12 bytes>'`. */
const ENCRYPT0_START = Uint8Array.of(0xd0, 0x83, 0x43, 0xa1, 0x01, 0x03, 0xa1, 0x05, 0x4c);

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A cursor over one CBOR item's bytes that reads only shortest-form heads. */
class Reader {
  at = 0;
  constructor(readonly bytes: Uint8Array) {}

  /** Consumes `run` if the bytes continue with exactly it. */
  fixed(run: Uint8Array): boolean {
    const b = this.bytes;
    if (this.at + run.length > b.length) return false;
    for (let i = 0; i < run.length; i++) if (b[this.at + i] !== run[i]) return false;
    this.at += run.length;
    return true;
  }

  /** The argument of a head of `major` in shortest form, or null (a bigint above 2^32). */
  head(major: number): number | bigint | null {
    const b = this.bytes;
    const first = b[this.at];
    if (first === undefined || first >> 5 !== major) return null;
    const info = first & 0x1f;
    if (info < 24) {
      this.at += 1;
      return info;
    }
    const size = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
    if (size === 0 || this.at + 1 + size > b.length) return null;
    // Big-endian by hand: a DataView per head was a measurable part of opening.
    let value = 0;
    for (let i = 1; i <= Math.min(size, 4); i++) value = value * 256 + (b[this.at + i] as number);
    if (size === 8) {
      let low = 0;
      for (let i = 5; i <= 8; i++) low = low * 256 + (b[this.at + i] as number);
      if (value === 0) return null; // fits in 32 bits: not the shortest head
      this.at += 9;
      return (BigInt(value) << 32n) | BigInt(low);
    }
    if (value < (size === 1 ? 24 : size === 2 ? 0x100 : 0x1_0000)) return null;
    this.at += 1 + size;
    return value;
  }

  /** An unsigned integer, or null. */
  uint(): bigint | null {
    const v = this.head(MAJOR_UINT);
    return v === null ? null : BigInt(v);
  }

  /** A length (of a string, array or map) below 2^32, or null. */
  len(major: number): number | null {
    const v = this.head(major);
    return typeof v === "number" ? v : null;
  }

  /** A byte string (a view into the input), or null. */
  bstr(): Uint8Array | null {
    const n = this.len(MAJOR_BSTR);
    if (n === null || this.at + n > this.bytes.length) return null;
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  /** A text string in valid UTF-8, or null. */
  tstr(): string | null {
    const n = this.len(MAJOR_TSTR);
    if (n === null || this.at + n > this.bytes.length) return null;
    let text: string;
    try {
      text = utf8.decode(this.bytes.subarray(this.at, this.at + n));
    } catch {
      return null;
    }
    this.at += n;
    return text;
  }

  /** Are all the bytes read? */
  done(): boolean {
    return this.at === this.bytes.length;
  }
}

/** `{-1: [bstr .cbor [tree-size, leaf-index, [* bstr .size 32]]]}`, or null. */
function readProof(r: Reader): InclusionProof | null {
  if (!r.fixed(VDP_INCLUSION)) return null;
  const bytes = r.bstr();
  if (!bytes) return null;
  const p = new Reader(bytes);
  if (p.len(MAJOR_ARRAY) !== 3) return null;
  const treeSize = p.uint();
  const leafIndex = p.uint();
  const n = p.len(MAJOR_ARRAY);
  if (treeSize === null || leafIndex === null || n === null || n > MAX_PATH_LEN) return null;
  const path: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const h = p.bstr();
    if (h?.length !== 32) return null;
    path.push(h);
  }
  return p.done() ? { treeSize, leafIndex, path } : null;
}

/**
 * Reads a version 1 or 2 data envelope in the pinned layout, or returns null for anything
 * else (the general parser then decides). `validLocation` is the key-location check the
 * general parser applies.
 */
export function readEnvelope(
  bytes: Uint8Array,
  validLocation: (location: string) => boolean,
): ParsedEnvelope | null {
  const r = new Reader(bytes);
  if (!r.fixed(SIGN1_START)) return null;
  const protectedBytes = r.bstr();
  const entries = r.len(MAJOR_MAP);
  if (!protectedBytes || entries === null || entries > 2) return null;
  let x5chain: Uint8Array | null = null;
  let proof: InclusionProof | null = null;
  let read = 0;
  if (read < entries && r.fixed(LABEL_X5CHAIN)) {
    x5chain = r.bstr();
    if (!x5chain) return null;
    read++;
  }
  if (read < entries && r.fixed(LABEL_VDP)) {
    proof = readProof(r);
    if (!proof) return null;
    read++;
  }
  const payload = r.bstr();
  const signature = r.bstr();
  if (read !== entries || !payload || signature?.length !== 64 || !r.done()) return null;

  const h = new Reader(protectedBytes);
  if (!h.fixed(PROTECTED_START)) return null;
  const fingerprint = h.bytes.subarray(h.at, h.at + 32);
  h.at += 32;
  if (fingerprint.length !== 32 || !h.fixed(CWT_IAT)) return null;
  const publishedAt = h.uint();
  if (publishedAt === null || !h.fixed(LABEL_VERSION)) return null;
  const version = h.uint();
  // Version 1 carries no inclusion proof, version 2 always one; anything else: general path.
  if (version !== (proof ? 2n : 1n) || !h.fixed(LABEL_KIND) || h.uint() !== 1n) return null;
  if (!h.fixed(LABEL_SEQ)) return null;
  const seq = h.uint();
  if (seq === null || !h.fixed(KEY_INDEX)) return null;
  const publisher = h.tstr();
  const epoch = h.uint();
  const location = h.tstr();
  if (publisher === null || epoch === null || location === null || !h.done()) return null;
  if (!validLocation(location)) return null;

  const e = new Reader(payload);
  if (!e.fixed(ENCRYPT0_START)) return null;
  const iv = payload.subarray(e.at, e.at + 12);
  e.at += 12;
  const ciphertext = iv.length === 12 ? e.bstr() : null;
  if (!ciphertext || !e.done()) return null;
  const keyIndex: KeyIndex = { publisher, epoch, location };
  return {
    sign1: { protectedBytes, x5chain, payload, signature },
    proof,
    keyIndex,
    seq,
    publishedAt,
    fingerprint,
    encProtected: payload.subarray(3, 6),
    iv,
    ciphertext,
  };
}
