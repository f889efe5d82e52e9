/**
 * `npm run bench:floor` (from js/packages/sealpost): the CPU time of the bare `node:crypto`
 * calls that opening one version 2 envelope of a burst needs at the least, with nothing
 * of the SDK around them: SHA-256 of the Sig_structure and of the leaf, about two path
 * nodes (the rest hit the path memo), and one AES-256-GCM decryption with its tag
 * check. It bounds what any Node.js opener built on `node:crypto` can reach, to compare
 * with the Rust opener's whole per-message cost (`npm run bench`).
 */
import { createCipheriv, createDecipheriv, createSecretKey, hash, randomBytes } from "node:crypto";

const N = 20_000;
const key = createSecretKey(randomBytes(32));
const iv = randomBytes(12);
const aad = randomBytes(60);
const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
for (const size of [256, 1024]) {
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
  const tag = cipher.getAuthTag();
  const tbs = randomBytes(size + 100);
  const leaf = randomBytes(33);
  const node = randomBytes(65);
  let best = Number.POSITIVE_INFINITY;
  for (let run = 0; run < 3; run++) {
    const start = cpu();
    for (let i = 0; i < N; i++) {
      hash("sha256", tbs, "buffer");
      hash("sha256", leaf, "buffer");
      hash("sha256", node, "buffer");
      hash("sha256", node, "buffer");
      const d = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: 16 });
      d.setAAD(aad);
      d.setAuthTag(tag);
      d.update(ct);
      d.final();
    }
    best = Math.min(best, (cpu() - start) / N);
  }
  console.log(
    `node:crypto floor of a version 2 open, ${size} B: ${best.toFixed(1)} µs CPU, at most ${Math.round(1e6 / best).toLocaleString("en-US")} msg/s`,
  );
}
