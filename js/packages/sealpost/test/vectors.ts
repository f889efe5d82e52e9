/** Reads the ```vectors block of docs/PROTOCOL.md: the one source of truth for both SDKs. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromHex } from "../src/bytes.js";

/** The repository root (the directory holding docs/PROTOCOL.md). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "docs", "PROTOCOL.md"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("docs/PROTOCOL.md not found above the tests");
    dir = up;
  }
  return dir;
}

/** The test vectors as name -> value text. */
export function readVectors(): Map<string, string> {
  const doc = readFileSync(join(repoRoot(), "docs", "PROTOCOL.md"), "utf8");
  const block = /```vectors\n([\s\S]*?)```/.exec(doc);
  if (!block?.[1]) throw new Error("no ```vectors block in docs/PROTOCOL.md");
  const out = new Map<string, string>();
  for (const line of block[1].split("\n")) {
    const m = /^(\w+) = (.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) out.set(m[1], m[2]);
  }
  return out;
}

/** A vector as bytes (hex). */
export function hexVector(v: Map<string, string>, name: string): Uint8Array {
  const text = v.get(name);
  if (text === undefined) throw new Error(`vector ${name} missing`);
  return fromHex(text);
}

/** A vector as text. */
export function textVector(v: Map<string, string>, name: string): string {
  const text = v.get(name);
  if (text === undefined) throw new Error(`vector ${name} missing`);
  return text;
}
