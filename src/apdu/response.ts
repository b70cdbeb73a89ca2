/**
 * ISO/IEC 7816-4 §5.1 response APDUs: data field ‖ SW1 SW2.
 */
import { BadResponseError } from "../errors.js";

export { BadResponseError } from "../errors.js";

export interface ResponseApdu {
  readonly data: Uint8Array;
  /** SW1 << 8 | SW2 */
  readonly sw: number;
}

export function decodeResponseApdu(bytes: Uint8Array): ResponseApdu {
  if (bytes.length < 2) throw new BadResponseError(`response APDU of ${bytes.length} bytes (no status word)`);
  const n = bytes.length;
  return { data: bytes.slice(0, n - 2), sw: (bytes[n - 2]! << 8) | bytes[n - 1]! };
}

export function encodeResponseApdu(data: Uint8Array, sw: number): Uint8Array {
  const out = new Uint8Array(data.length + 2);
  out.set(data, 0);
  out[data.length] = (sw >> 8) & 0xff;
  out[data.length + 1] = sw & 0xff;
  return out;
}

export function sw1(sw: number): number {
  return (sw >> 8) & 0xff;
}

export function sw2(sw: number): number {
  return sw & 0xff;
}

export function formatSw(sw: number): string {
  return sw.toString(16).toUpperCase().padStart(4, "0");
}
