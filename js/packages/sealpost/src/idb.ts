/**
 * Browser persistence in IndexedDB: the replay window, and the subscriber's private key
 * as a non-extractable `CryptoKey` (IndexedDB stores CryptoKey objects by structured
 * clone, so the page never sees the key bytes once imported). An X-Wing key, which
 * WebCrypto cannot hold, is stored as its seed encrypted under a non-extractable AES-GCM
 * `CryptoKey` (`xwing.ts`; js/README.md says what that does and does not protect).
 */
import { parseCertificate } from "./certs.js";
import type { SubscriberIdentity } from "./identity.js";
import type { ReplayState, ReplayStore } from "./replay.js";
import { type SealedXWingSeed, XWingPrivateKey } from "./xwing.js";

const STORE = "sealpost";

function open(dbName: string): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(dbName, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function run<T>(
  dbName: string,
  mode: IDBTransactionMode,
  op: (s: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const db = await open(dbName);
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = op(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Reads a value stored under `key`, or null. */
export async function idbGet(dbName: string, key: string): Promise<unknown | null> {
  const v = await run(dbName, "readonly", (s) => s.get(key));
  return v ?? null;
}

/** Stores `value` (anything structured-clonable, CryptoKeys included) under `key`. */
export async function idbPut(dbName: string, key: string, value: unknown): Promise<void> {
  await run(dbName, "readwrite", (s) => s.put(value, key));
}

/** The replay window of subscriber `id`, in IndexedDB database `dbName`. */
export class IndexedDbReplayStore implements ReplayStore {
  constructor(
    private readonly id: string,
    private readonly dbName = "sealpost",
  ) {}
  load(): Promise<unknown | null> {
    return idbGet(this.dbName, `replay-${this.id}`);
  }
  save(state: ReplayState): Promise<void> {
    return idbPut(this.dbName, `replay-${this.id}`, state);
  }
}

/**
 * Keeps a subscriber identity in IndexedDB: the certificate, and the private key as the
 * (non-extractable) `CryptoKey` itself, so a page imports the PKCS#8 bytes once and from
 * then on holds only a handle it cannot read. An X-Wing key is kept as its encrypted seed
 * and the non-extractable key that decrypts it; its seed itself is never stored.
 */
export async function storeIdentity(
  identity: SubscriberIdentity,
  dbName = "sealpost",
): Promise<void> {
  if (identity.key.extractable) throw new Error("refusing to store an extractable private key");
  const key = identity.key instanceof XWingPrivateKey ? identity.key.toStored() : identity.key;
  await idbPut(dbName, `identity-${identity.certificate.id}`, {
    certificate: identity.certificate.der,
    key,
    xwing: identity.key instanceof XWingPrivateKey,
  });
}

/** The identity `storeIdentity` kept for subscriber `id`, or null. */
export async function loadStoredIdentity(
  id: string,
  dbName = "sealpost",
): Promise<SubscriberIdentity | null> {
  const stored = (await idbGet(dbName, `identity-${id}`)) as {
    certificate: Uint8Array;
    key: CryptoKey | SealedXWingSeed;
    xwing?: boolean;
  } | null;
  if (!stored) return null;
  const key = stored.xwing
    ? XWingPrivateKey.fromStored(stored.key as SealedXWingSeed)
    : (stored.key as CryptoKey);
  return { certificate: await parseCertificate(stored.certificate), key };
}
