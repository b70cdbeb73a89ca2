/** GlobalPlatform SCP11 (GP Card Specification 2.3 Amendment F): crypto core, both sides. */

export * from "./cert-store.js";
export { aesCbc, aesCmac, aesEcbEncrypt, macEqual } from "./cmac.js";
export { ScpIntegrityError, ScpMalformedError, ScpOceRefusedError } from "./errors.js";
export * from "./handshake.js";
export * from "./host.js";
export { x963KdfSha256 } from "./kdf.js";
export * from "./oce-ca.js";
export * from "./scp-trust.js";
export * from "./scp03.js";
export * from "./secure-messaging.js";
