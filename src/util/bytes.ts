/**
 * Byte helpers shared by every layer (bottom layer, next to errors and crypto).
 */

/** Lowercase hex of `bytes`, no separators. */
export function hex(bytes: Uint8Array | ArrayBuffer): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString("hex");
}

/** Byte-wise equality (not constant-time: for public values only). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}
