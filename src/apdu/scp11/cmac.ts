/**
 * AES-CMAC (NIST SP 800-38B, RFC 4493) on node:crypto's AES (which has no CMAC of its own):
 * subkeys K1/K2 from AES(K, 0¹²⁸), then CBC-MAC over the message with its last block XORed with K1
 * (complete block) or padded `80 00…` and XORed with K2. Keys of 16, 24 or 32 bytes.
 */
import { createCipheriv, createDecipheriv, timingSafeEqual } from "node:crypto";

const BLOCK = 16;
const ZERO_IV = new Uint8Array(BLOCK);

function cipherName(key: Uint8Array, mode: "ecb" | "cbc"): string {
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
    throw new RangeError(`AES key of ${key.length} bytes (16, 24 or 32 expected)`);
  }
  return `aes-${key.length * 8}-${mode}`;
}

/** AES in ECB mode over whole blocks (no padding). */
export function aesEcbEncrypt(key: Uint8Array, data: Uint8Array): Uint8Array {
  if (data.length % BLOCK !== 0) throw new RangeError("AES-ECB input is not a whole number of blocks");
  const c = createCipheriv(cipherName(key, "ecb"), key, null);
  c.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([c.update(data), c.final()]));
}

/** AES in CBC mode over whole blocks (no padding). */
export function aesCbc(key: Uint8Array, iv: Uint8Array, data: Uint8Array, decrypt = false): Uint8Array {
  if (data.length % BLOCK !== 0) throw new RangeError("AES-CBC input is not a whole number of blocks");
  const name = cipherName(key, "cbc");
  const c = decrypt ? createDecipheriv(name, key, iv) : createCipheriv(name, key, iv);
  c.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([c.update(data), c.final()]));
}

/** Doubling in GF(2¹²⁸) as RFC 4493 §2.3 generates K1 and K2. */
function dbl(block: Uint8Array): Uint8Array {
  const out = new Uint8Array(BLOCK);
  let carry = 0;
  for (let i = BLOCK - 1; i >= 0; i--) {
    const b = block[i]!;
    out[i] = ((b << 1) | carry) & 0xff;
    carry = b >> 7;
  }
  if (carry) out[BLOCK - 1]! ^= 0x87;
  return out;
}

/** The full 16-byte AES-CMAC of `message` under `key`. */
export function aesCmac(key: Uint8Array, message: Uint8Array): Uint8Array {
  const l = aesEcbEncrypt(key, new Uint8Array(BLOCK));
  const k1 = dbl(l);
  const k2 = dbl(k1);
  const n = message.length === 0 ? 1 : Math.ceil(message.length / BLOCK);
  const complete = message.length > 0 && message.length % BLOCK === 0;
  const padded = new Uint8Array(n * BLOCK);
  padded.set(message, 0);
  const lastStart = (n - 1) * BLOCK;
  if (!complete) padded[message.length] = 0x80;
  const sub = complete ? k1 : k2;
  for (let i = 0; i < BLOCK; i++) padded[lastStart + i]! ^= sub[i]!;
  const cbc = aesCbc(key, ZERO_IV, padded);
  return cbc.slice(cbc.length - BLOCK);
}

/** Constant-time comparison of two MACs (false when the lengths differ). */
export function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
