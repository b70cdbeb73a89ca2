/**
 * PIV card management key (key reference 9B): block ciphers and the GENERAL AUTHENTICATE
 * challenge-response, as YubiKeys do it (SP 800-73-4 Part 2 §3.2.4, Appendix A.1; Yubico
 * "Authenticate: management key").
 *
 * Algorithm bytes (SP 800-78-4 Table 6-2): 03 = 3-key 3DES (8-byte blocks), 08/0A/0C = AES-128/192/256
 * (16-byte blocks). Single blocks are enciphered in ECB mode without padding.
 */
import { createCipheriv, createDecipheriv, randomBytes, timingSafeEqual } from "node:crypto";
import { PIV_INS } from "../apdu/instructions.js";
import { IncorrectDataError, SecurityStatusError } from "../apdu/status-words.js";
import { decodeTlv, decodeTlvs, encodeTlv, encodeTlvs, requireTlv, TlvError } from "../apdu/tlv.js";
import { ManagementKeyError } from "./errors.js";

export type ManagementKeyType = "3des" | "aes128" | "aes192" | "aes256";

export const MANAGEMENT_KEY_REFERENCE = 0x9b;

export const MANAGEMENT_KEY_ALGORITHM: Readonly<Record<ManagementKeyType, number>> = {
  "3des": 0x03,
  aes128: 0x08,
  aes192: 0x0a,
  aes256: 0x0c,
};

const KEY_LENGTH: Readonly<Record<ManagementKeyType, number>> = {
  "3des": 24,
  aes128: 16,
  aes192: 24,
  aes256: 32,
};
const CIPHER: Readonly<Record<ManagementKeyType, string>> = {
  "3des": "des-ede3",
  aes128: "aes-128-ecb",
  aes192: "aes-192-ecb",
  aes256: "aes-256-ecb",
};

/** YubiKey factory default: 01..08 three times (3DES before firmware 5.7, AES-192 from 5.7). */
export const DEFAULT_MANAGEMENT_KEY = Uint8Array.from([
  1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
]);

export function managementKeyTypeFromAlgorithm(alg: number): ManagementKeyType | undefined {
  for (const [type, a] of Object.entries(MANAGEMENT_KEY_ALGORITHM)) {
    if (a === alg) return type as ManagementKeyType;
  }
  return undefined;
}

export function managementKeyLength(type: ManagementKeyType): number {
  return KEY_LENGTH[type];
}

export function managementKeyBlockSize(type: ManagementKeyType): number {
  return type === "3des" ? 8 : 16;
}

export function checkManagementKey(type: ManagementKeyType, key: Uint8Array): void {
  if (!(type in KEY_LENGTH))
    throw new ManagementKeyError("invalid-key", `unsupported management key type ${type}`);
  if (key.length !== KEY_LENGTH[type]) {
    throw new ManagementKeyError(
      "invalid-key",
      `a ${type} management key is ${KEY_LENGTH[type]} bytes, got ${key.length}`,
    );
  }
}

/** Enciphers or deciphers exactly one block (ECB, no padding). */
export function managementKeyCipher(
  type: ManagementKeyType,
  key: Uint8Array,
  block: Uint8Array,
  direction: "encrypt" | "decrypt",
): Uint8Array {
  checkManagementKey(type, key);
  if (block.length !== managementKeyBlockSize(type)) {
    throw new RangeError(`${type} block must be ${managementKeyBlockSize(type)} bytes, got ${block.length}`);
  }
  const c =
    direction === "encrypt"
      ? createCipheriv(CIPHER[type], key, null)
      : createDecipheriv(CIPHER[type], key, null);
  c.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([c.update(block), c.final()]));
}

/** What the exchange needs from a card connection: send a command, get data or a typed error. */
export type ApduSender = (command: {
  cla: number;
  ins: number;
  p1: number;
  p2: number;
  data: Uint8Array;
  le?: number;
}) => Promise<Uint8Array>;

const TAG_DYNAMIC_AUTH = 0x7c;
const TAG_WITNESS = 0x80;
const TAG_CHALLENGE = 0x81;
const TAG_RESPONSE = 0x82;

function dynamicAuthItems(response: Uint8Array) {
  return decodeTlvs(decodeTlv(response, TAG_DYNAMIC_AUTH).value);
}

function refused(type: ManagementKeyType, cause: unknown): unknown {
  if (cause instanceof SecurityStatusError || cause instanceof IncorrectDataError) {
    return new ManagementKeyError("wrong-key", `the card refused the ${type} management key`, { cause });
  }
  return cause;
}

/**
 * Mutual authentication with the management key, witness first (as yubico-piv-tool and yubikit):
 * 1. `7C 02 80 00` → card: `7C {80 E(W)}`, W its random witness;
 * 2. `7C {80 W, 81 C}` → card: `7C {82 E(C)}`; the card checked W (else 6982), we check E(C).
 * Afterwards the card holds "management key authenticated" until reset, reselection or power-off.
 */
export async function authenticateManagementKey(
  send: ApduSender,
  type: ManagementKeyType,
  key: Uint8Array,
): Promise<void> {
  checkManagementKey(type, key);
  const alg = MANAGEMENT_KEY_ALGORITHM[type];
  const bs = managementKeyBlockSize(type);
  const command = (data: Uint8Array) => ({
    cla: 0,
    ins: PIV_INS.generalAuthenticate,
    p1: alg,
    p2: MANAGEMENT_KEY_REFERENCE,
    data,
    le: 256,
  });
  let first: Uint8Array;
  try {
    first = await send(command(encodeTlv(TAG_DYNAMIC_AUTH, encodeTlv(TAG_WITNESS))));
  } catch (e) {
    throw refused(type, e);
  }
  const encryptedWitness = requireTlv(dynamicAuthItems(first), TAG_WITNESS, "management key witness");
  if (encryptedWitness.length !== bs)
    throw new TlvError(`witness of ${encryptedWitness.length} bytes, expected ${bs}`);
  const witness = managementKeyCipher(type, key, encryptedWitness, "decrypt");
  const challenge = new Uint8Array(randomBytes(bs));
  let second: Uint8Array;
  try {
    second = await send(
      command(
        encodeTlv(
          TAG_DYNAMIC_AUTH,
          encodeTlvs([
            [TAG_WITNESS, witness],
            [TAG_CHALLENGE, challenge],
          ]),
        ),
      ),
    );
  } catch (e) {
    throw refused(type, e);
  }
  const answer = requireTlv(dynamicAuthItems(second), TAG_RESPONSE, "management key response");
  const expected = managementKeyCipher(type, key, challenge, "encrypt");
  if (answer.length !== expected.length || !timingSafeEqual(answer, expected)) {
    throw new ManagementKeyError(
      "card-not-authentic",
      "the card did not prove knowledge of the management key",
    );
  }
}
