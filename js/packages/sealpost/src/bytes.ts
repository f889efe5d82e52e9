/** Small byte helpers shared by the modules (no crypto here). */

/** Hex string (any case, no separators) to bytes; throws on bad input. */
export function fromHex(hex: string): Uint8Array {
  const clean = hex.trim();
  if (clean.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(clean)) {
    throw new Error("not a hex string");
  }
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** Bytes to lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Concatenation of byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Byte-wise equality (not constant time: used on public values only). */
export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** base64 (standard or url alphabet, padding optional) to bytes. */
export function fromBase64(text: string): Uint8Array {
  const std = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(std) || std.length % 4 === 1) {
    throw new Error("not base64");
  }
  const bin = atob(std + "=".repeat((4 - (std.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Bytes to standard base64 with padding. */
export function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * A copy in a fresh ArrayBuffer of exactly its length, as WebCrypto's stricter typings
 * want. Not `bytes.slice()`: on a Node.js `Buffer` (which libraries may hand out as a
 * `Uint8Array`) that is a view whose `.buffer` is a whole shared pool.
 */
export function buf(bytes: Uint8Array): ArrayBuffer {
  return new Uint8Array(bytes).buffer as ArrayBuffer;
}

/** The current time in unix seconds. */
export function nowUnix(): number {
  return Math.floor(Date.now() / 1000);
}
