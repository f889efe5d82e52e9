/** PEM (RFC 7468) to DER, for the files the security center (`sealpost-certs`) writes. */
import { fromBase64 } from "./bytes.js";

/** The DER of the first PEM block labelled `label` (e.g. "CERTIFICATE", "X509 CRL"). */
export function pemDecode(text: string, label: string): Uint8Array {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`);
  const m = re.exec(text);
  if (!m?.[1]) throw new Error(`no ${label} PEM block`);
  return fromBase64(m[1].replace(/\s+/g, ""));
}

/** Accepts DER bytes or PEM text. */
export function derOrPem(input: Uint8Array | string, label: string): Uint8Array {
  return typeof input === "string" ? pemDecode(input, label) : input;
}
