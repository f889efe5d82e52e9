/**
 * Open throughput of this SDK, the same routine in Node.js and in a browser: seal `n`
 * envelopes of `size` bytes with the PROTOCOL.md test-vector identities (256 B, 1 KiB),
 * then open them one after another with a fresh opener that knows the publisher
 * certificate and the content key (as after its key message): parse, replay window,
 * certificate checks, Ed25519 verify, AES-256-GCM, exactly as the subscriber does.
 * `burst` 1 seals version 1 envelopes (one signature each); more seals version 2 bursts
 * of that many messages (one root signature each, verified once by the opener).
 */
import { fromHex } from "../src/bytes.js";
import { Verifier } from "../src/certs.js";
import { loadPublisherIdentity } from "../src/identity.js";
import { importContentKey } from "../src/keyring.js";
import { Opener } from "../src/opener.js";
import { sealBurst, sealEnvelope } from "../src/sealer.js";

/** The vectors the benchmark needs, as hex. */
export interface BenchVectors {
  ca_certificate: string;
  publisher_certificate: string;
  publisher_private_key_pkcs8: string;
  content_key: string;
}

/** The topic every benchmark envelope is sealed for. */
export const BENCH_TOPIC = "plant/7/temp";
/** The key epoch of the benchmark envelopes. */
export const BENCH_EPOCH = 7n;

/** Benchmark envelopes and the time (unix seconds) they are to be opened at. */
export interface BenchEnvelopes {
  envelopes: Uint8Array[];
  now: number;
}

/**
 * Seals `n` envelopes of `size` bytes with the vector publisher: version 1 (one signature
 * each) if `burst` is 0, else version 2 bursts of `burst` messages (1: a burst of one).
 */
export async function sealBenchEnvelopes(
  v: BenchVectors,
  size: number,
  n: number,
  burst: number,
): Promise<BenchEnvelopes> {
  const identity = await loadPublisherIdentity(
    fromHex(v.publisher_certificate),
    fromHex(v.publisher_private_key_pkcs8),
  );
  const contentKey = await importContentKey(fromHex(v.content_key));
  const now = Math.floor(Date.now() / 1000);
  const topic = BENCH_TOPIC;
  const common = {
    identity,
    index: {
      publisher: identity.certificate.id,
      epoch: BENCH_EPOCH,
      location: "mqtt:sealpost/keys/vector-pub",
    },
    contentKey,
    salt: new Uint8Array([1, 2, 3, 4]),
    publishedAt: BigInt(now),
    embedCertificate: false,
  };
  const plaintext = new Uint8Array(size).fill(0x5a);
  const envelopes: Uint8Array[] = [];
  for (let i = 0; i < n; i += Math.max(burst, 1)) {
    if (burst === 0) {
      envelopes.push(await sealEnvelope({ ...common, topic, plaintext, seq: BigInt(i + 1) }));
    } else {
      const count = Math.min(burst, n - i);
      const messages = Array.from({ length: count }, () => ({ topic, plaintext }));
      envelopes.push(...(await sealBurst({ ...common, messages, firstSeq: BigInt(i + 1) })));
    }
  }
  return { envelopes, now };
}

/**
 * Opens `sealed` one after another with a fresh opener that knows the publisher
 * certificate and the content key (as after its key message), and returns the messages
 * opened per second of wall-clock time, or of CPU time if `cpuMicros` (the process's CPU
 * time so far, in microseconds; Node.js: `process.cpuUsage`) is given.
 */
export async function openEnvelopes(
  v: BenchVectors,
  sealed: BenchEnvelopes,
  cpuMicros?: () => number,
): Promise<number> {
  const opener = new Opener({ verifier: await Verifier.create(fromHex(v.ca_certificate)) });
  await opener.addPublisherCertificate(fromHex(v.publisher_certificate), sealed.now);
  await opener.addContentKey("vector-pub", BENCH_EPOCH, fromHex(v.content_key));
  const clock = cpuMicros ?? (() => performance.now() * 1000);
  const start = clock();
  for (const envelope of sealed.envelopes) await opener.open(BENCH_TOPIC, envelope, sealed.now);
  return sealed.envelopes.length / ((clock() - start) / 1e6);
}

/**
 * Messages opened per second (see `openEnvelopes`) of `n` fresh envelopes of `size` bytes,
 * version 1 if `burst` is 1, else version 2 bursts of `burst`.
 */
export async function openThroughput(
  v: BenchVectors,
  size: number,
  n: number,
  cpuMicros?: () => number,
  burst = 1,
): Promise<number> {
  const sealed = await sealBenchEnvelopes(v, size, n, burst === 1 ? 0 : burst);
  return openEnvelopes(v, sealed, cpuMicros);
}
