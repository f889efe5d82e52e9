/** MQTT topic names and filters (MQTT 3.1.1 §4.7), as certificates and the opener use them. */

/** Longest topic name or filter MQTT can carry, in bytes. */
export const MAX_TOPIC_LEN = 65_535;

const encoder = new TextEncoder();
/** UTF-8 length; a string of n UTF-16 units is at most 3n bytes, so short ones skip encoding. */
const utf8Length = (s: string): number =>
  s.length * 3 <= MAX_TOPIC_LEN ? s.length : encoder.encode(s).length;

/** A topic *name*: non-empty, no wildcards, no NUL, at most 65,535 bytes. */
export function validateTopic(topic: string): boolean {
  return topic.length > 0 && !/[+#\0]/.test(topic) && utf8Length(topic) <= MAX_TOPIC_LEN;
}

/** A topic *filter*: `+` only as a whole level, `#` only as the whole last level. */
export function validateFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes("\0") || utf8Length(filter) > MAX_TOPIC_LEN) {
    return false;
  }
  const levels = filter.split("/");
  return levels.every((level, i) => {
    if (level === "#") return i === levels.length - 1;
    if (level === "+") return true;
    return !/[+#]/.test(level);
  });
}

/**
 * Does `filter` match `topic`? Invalid input matches nothing (fails closed), and a filter
 * starting with a wildcard does not match topics starting with `$`.
 */
export function filterMatches(filter: string, topic: string): boolean {
  if (!validateFilter(filter) || !validateTopic(topic)) return false;
  if (topic.startsWith("$") && (filter.startsWith("+") || filter.startsWith("#"))) return false;
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Decodes a percent-encoded filter from a `urn:sealpost:publish:` SAN; null if invalid. */
export function decodeFilter(encoded: string): string | null {
  // SAN URIs are ASCII (IA5String); anything else is not a filter we issued.
  if (!/^[\x20-\x7e]*$/.test(encoded)) return null;
  const out: number[] = [];
  const bytes = new TextEncoder().encode(encoded);
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x25) {
      const hex = encoded.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) return null;
      out.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      out.push(bytes[i] as number);
    }
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(out));
  } catch {
    return null;
  }
}

/** Percent-encodes a filter for a `urn:sealpost:publish:` SAN. */
export function encodeFilter(filter: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(filter)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
