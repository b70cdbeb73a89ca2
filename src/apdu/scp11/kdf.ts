/**
 * ANSI X9.63 key derivation with SHA-256 (SEC 1 §3.6.1), as GP Card Specification 2.3
 * Amendment F §3.1.2 uses it for SCP11: K = SHA-256(Z ‖ 00000001 ‖ sharedInfo) ‖
 * SHA-256(Z ‖ 00000002 ‖ sharedInfo) ‖ …, truncated to the length asked for.
 */
import { createHash } from "node:crypto";

const SHA256_BYTES = 32;
/** Far more than SCP11 needs (80 bytes); keeps the loop bounded whatever the caller asks. */
export const X963_MAX_OUTPUT = 32 * SHA256_BYTES;

export function x963KdfSha256(z: Uint8Array, sharedInfo: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 1 || length > X963_MAX_OUTPUT) {
    throw new RangeError(`X9.63 KDF output of ${length} bytes (1..${X963_MAX_OUTPUT})`);
  }
  const out = new Uint8Array(Math.ceil(length / SHA256_BYTES) * SHA256_BYTES);
  const counter = new Uint8Array(4);
  for (let i = 1, o = 0; o < length; i++, o += SHA256_BYTES) {
    new DataView(counter.buffer).setUint32(0, i);
    out.set(createHash("sha256").update(z).update(counter).update(sharedInfo).digest(), o);
  }
  return out.slice(0, length);
}
