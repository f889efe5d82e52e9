/**
 * Own identities: a certificate and its private key as a non-extractable WebCrypto key,
 * so that (in a browser) the page never sees key bytes once imported.
 */
import { OneAsymmetricKey, PrivateKeyInfo } from "@peculiar/asn1-asym-key";
import { AsnConvert } from "@peculiar/asn1-schema";
import { type CertificateInfo, parseCertificate } from "./certs.js";
import { derOrPem } from "./pem.js";
import { privateKeyImportParams, wrapAlgorithmOfCertificate } from "./wrap.js";
import { XWingPrivateKey, xwingSeedFromPkcs8, xwingSeedMatches } from "./xwing.js";

/**
 * A subscriber: its certificate and the private key that unwraps content keys, as the
 * certificate's key says: an RSA-OAEP-SHA256 or an X25519 (HPKE) `CryptoKey`, or an
 * `XWingPrivateKey` (X-Wing, which WebCrypto does not have: see `xwing.ts`).
 */
export interface SubscriberIdentity {
  certificate: CertificateInfo;
  key: CryptoKey;
}

/** A publisher: Ed25519 certificate and its signing key. */
export interface PublisherIdentity {
  certificate: CertificateInfo;
  key: CryptoKey;
}

/**
 * Loads a subscriber identity from a certificate and a PKCS#8 key (DER or PEM). An X-Wing
 * key must belong to the certificate (its public key is derived and compared) and is kept
 * as an `XWingPrivateKey` whatever `extractable` says.
 */
export async function loadSubscriberIdentity(
  certificate: Uint8Array | string,
  pkcs8: Uint8Array | string,
  extractable = false,
): Promise<SubscriberIdentity> {
  const info = await parseCertificate(derOrPem(certificate, "CERTIFICATE"));
  if (info.role !== "subscriber") throw new Error(`${info.id} is not a subscriber certificate`);
  const der = derOrPem(pkcs8, "PRIVATE KEY");
  const webCrypto = privateKeyImportParams(wrapAlgorithmOfCertificate(info));
  if (!webCrypto) {
    const seed = xwingSeedFromPkcs8(der);
    // Our own decoding of a PEM key file is wiped; bytes the caller passed stay theirs.
    if (typeof pkcs8 === "string") der.fill(0);
    if (!(await xwingSeedMatches(seed, info))) {
      seed.fill(0);
      throw new Error(`the private key does not belong to ${info.id}`);
    }
    return { certificate: info, key: await XWingPrivateKey.fromSeed(seed) };
  }
  const key = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8V1(der),
    webCrypto.params,
    extractable,
    webCrypto.usages,
  );
  return { certificate: info, key };
}

/** Loads a publisher identity from a certificate and a PKCS#8 Ed25519 key (DER or PEM). */
export async function loadPublisherIdentity(
  certificate: Uint8Array | string,
  pkcs8: Uint8Array | string,
): Promise<PublisherIdentity> {
  const info = await parseCertificate(derOrPem(certificate, "CERTIFICATE"));
  if (info.role !== "publisher") throw new Error(`${info.id} is not a publisher certificate`);
  const key = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8V1(derOrPem(pkcs8, "PRIVATE KEY")),
    { name: "Ed25519" },
    false,
    ["sign"],
  );
  return { certificate: info, key };
}

/**
 * The same key as a version-1 PKCS#8 PrivateKeyInfo. The sealpost security center wrote
 * Ed25519 keys as RFC 5958 version 2 (with the public key) until December 2026, which
 * WebCrypto in Node.js and Chromium refuses to import; dropping the (derivable) public
 * key changes nothing. Keys it writes now are version 1 already and pass unchanged.
 */
export function pkcs8V1(der: Uint8Array): ArrayBuffer {
  const key = AsnConvert.parse(der, OneAsymmetricKey);
  if (key.version === 0 && !key.publicKey) return der.slice().buffer as ArrayBuffer;
  const v1 = new PrivateKeyInfo();
  v1.version = 0;
  v1.privateKeyAlgorithm = key.privateKeyAlgorithm;
  v1.privateKey = key.privateKey;
  return AsnConvert.serialize(v1);
}
