/**
 * sealpost for browsers and Node.js: an independent TypeScript implementation of
 * docs/PROTOCOL.md (versions 1 and 2). Everything here runs on WebCrypto and works unchanged in
 * current browsers and Node.js 20; Node-only pieces (file stores, the Publisher) are in
 * `sealpost/node`.
 */
export * from "./bytes.js";
export * from "./certs.js";
export * from "./crlReloader.js";
export * from "./emitter.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./idb.js";
export * from "./identity.js";
export * from "./kdc.js";
export * from "./keyMessage.js";
export * from "./keyring.js";
export * from "./link.js";
export * from "./merkle.js";
export * from "./opener.js";
export * from "./pem.js";
export * from "./primitives.js";
export * from "./replay.js";
export * from "./rootCache.js";
export * from "./sealer.js";
export * from "./subscriber.js";
export * from "./topic.js";
export * from "./wrap.js";
export * from "./xwing.js";
