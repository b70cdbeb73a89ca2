/**
 * ECDSA for the project's two profiles, ES256 (P-256 + SHA-256) and ES384 (P-384 + SHA-384)
 * (RFC 9053 §2.1), and the conversion between the two signature encodings we meet:
 * - raw r‖s, each integer left-padded to the curve size (IEEE P1363; what COSE carries), and
 * - DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 5480 §2.2 / RFC 3279; what PIV
 *   cards and OpenSSL produce).
 * Parsing is strict: DER must be the one valid encoding (X.690 §10), and r and s must lie in
 * [1, n-1] for the curve order n (SEC 1 §4.1.4 step 1), so a signature has exactly one accepted
 * form in either encoding. Failures are typed: MalformedError for an encoding that cannot be a
 * signature, IntegrityError for a well-formed signature that does not verify.
 */
import { createECDH, type KeyObject, sign as nodeSign, verify as nodeVerify, randomBytes } from "node:crypto";
import { IntegrityError, MalformedError } from "../errors.js";

export type EcdsaAlgorithm = "ES256" | "ES384";

export interface EcdsaProfile {
  readonly algorithm: EcdsaAlgorithm;
  /** COSE algorithm identifier (RFC 9053 §2.1). */
  readonly coseAlgorithm: number;
  /** Name as node:crypto reports it in `asymmetricKeyDetails.namedCurve`. */
  readonly nodeCurve: "prime256v1" | "secp384r1";
  readonly curve: "P-256" | "P-384";
  readonly hash: "sha256" | "sha384";
  /** Byte length of one field element, so a raw signature is twice this. */
  readonly size: 32 | 48;
  /** Order n of the base point (SEC 2 §2.4.2 and §2.5.1). */
  readonly order: bigint;
}

export const ECDSA_PROFILES: Readonly<Record<EcdsaAlgorithm, EcdsaProfile>> = {
  ES256: {
    algorithm: "ES256",
    coseAlgorithm: -7,
    nodeCurve: "prime256v1",
    curve: "P-256",
    hash: "sha256",
    size: 32,
    order: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  },
  ES384: {
    algorithm: "ES384",
    coseAlgorithm: -35,
    nodeCurve: "secp384r1",
    curve: "P-384",
    hash: "sha384",
    size: 48,
    order:
      0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  },
};

/** The algorithm that goes with an EC key's curve, or undefined for any other key. */
export function ecdsaAlgorithmForKey(key: KeyObject): EcdsaAlgorithm | undefined {
  if (key.asymmetricKeyType !== "ec") return undefined;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve === "prime256v1") return "ES256";
  if (curve === "secp384r1") return "ES384";
  return undefined;
}

function bytesToBigInt(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes).toString("hex")}`);
}

function checkScalar(value: bigint, name: "r" | "s", profile: EcdsaProfile): void {
  if (value < 1n || value >= profile.order) {
    throw new MalformedError(`${profile.algorithm} signature: ${name} is outside [1, n-1]`);
  }
}

/** Splits and range-checks a raw r‖s signature. */
function parseRaw(raw: Uint8Array, profile: EcdsaProfile): { r: bigint; s: bigint } {
  if (raw.length !== 2 * profile.size) {
    throw new MalformedError(
      `${profile.algorithm} signature must be ${2 * profile.size} bytes (r‖s), got ${raw.length}`,
    );
  }
  const r = bytesToBigInt(raw.subarray(0, profile.size));
  const s = bytesToBigInt(raw.subarray(profile.size));
  checkScalar(r, "r", profile);
  checkScalar(s, "s", profile);
  return { r, s };
}

/** Minimal two's-complement content octets of a positive INTEGER (X.690 §8.3.2). */
function derIntegerContent(value: bigint): Uint8Array {
  let hex = value.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  // A leading bit of 1 would read as negative: prefix a zero octet.
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
  return new Uint8Array(Buffer.from(hex, "hex"));
}

function derLength(length: number): number[] {
  if (length < 0x80) return [length];
  if (length < 0x100) return [0x81, length];
  return [0x82, length >> 8, length & 0xff];
}

/** raw r‖s → DER Ecdsa-Sig-Value. Rejects a wrong length or r, s outside [1, n-1]. */
export function ecdsaRawToDer(raw: Uint8Array, algorithm: EcdsaAlgorithm): Uint8Array {
  const profile = ECDSA_PROFILES[algorithm];
  const { r, s } = parseRaw(raw, profile);
  const ri = derIntegerContent(r);
  const si = derIntegerContent(s);
  const body = [0x02, ...derLength(ri.length), ...ri, 0x02, ...derLength(si.length), ...si];
  return new Uint8Array([0x30, ...derLength(body.length), ...body]);
}

/** Reads a DER definite length at `pos`; returns [length, next position]. Only minimal forms pass. */
function readDerLength(der: Uint8Array, pos: number, what: string): [number, number] {
  const first = der[pos];
  if (first === undefined) throw new MalformedError(`${what}: truncated length`);
  if (first < 0x80) return [first, pos + 1];
  const count = first & 0x7f;
  // 0x80 is the indefinite form (BER only); more than two length octets cannot be a signature.
  if (count === 0 || count > 2) throw new MalformedError(`${what}: invalid length form`);
  if (pos + 1 + count > der.length) throw new MalformedError(`${what}: truncated length`);
  let length = 0;
  for (let i = 0; i < count; i++) length = (length << 8) | der[pos + 1 + i]!;
  // X.690 §10.1: the definite form with the fewest octets.
  if (length < 0x80 || (count === 2 && length < 0x100)) {
    throw new MalformedError(`${what}: length not minimally encoded`);
  }
  return [length, pos + 1 + count];
}

/** The content octets of a positive, minimally encoded DER INTEGER at `pos`, at most `size` + 1 long. */
function readDerInteger(
  der: Uint8Array,
  pos: number,
  end: number,
  size: number,
  what: string,
): [Uint8Array, number] {
  if (der[pos] !== 0x02) throw new MalformedError(`${what}: expected INTEGER`);
  const [length, start] = readDerLength(der, pos + 1, what);
  if (length === 0) throw new MalformedError(`${what}: empty INTEGER`);
  if (start + length > end) throw new MalformedError(`${what}: INTEGER runs past the SEQUENCE`);
  // Bounding the length before converting keeps a hostile length from costing anything.
  if (length > size + 1) throw new MalformedError(`${what}: INTEGER too long`);
  const content = der.subarray(start, start + length);
  if (content[0]! & 0x80) throw new MalformedError(`${what}: negative INTEGER`);
  if (content.length > 1 && content[0] === 0 && !(content[1]! & 0x80)) {
    throw new MalformedError(`${what}: INTEGER not minimally encoded`);
  }
  const magnitude = content[0] === 0 ? content.subarray(1) : content;
  if (magnitude.length > size) throw new MalformedError(`${what}: INTEGER too long`);
  return [magnitude, start + length];
}

/**
 * DER Ecdsa-Sig-Value → r‖s with each half `size` bytes, for any curve (the fast certificate path
 * meets P-521 too). Strict DER, positive integers, nothing after the SEQUENCE; no range check on r
 * and s (ecdsaDerToRaw adds it for the project's profiles).
 */
export function ecdsaDerToRawOfSize(der: Uint8Array, size: number, what = "DER signature"): Uint8Array {
  if (der[0] !== 0x30) throw new MalformedError(`${what}: expected SEQUENCE`);
  const [length, start] = readDerLength(der, 1, what);
  const end = start + length;
  if (end !== der.length) throw new MalformedError(`${what}: SEQUENCE length does not match the input`);
  const [r, afterR] = readDerInteger(der, start, end, size, `${what} r`);
  const [s, afterS] = readDerInteger(der, afterR, end, size, `${what} s`);
  if (afterS !== end) throw new MalformedError(`${what}: extra data inside the SEQUENCE`);
  const raw = new Uint8Array(2 * size);
  raw.set(r, size - r.length);
  raw.set(s, 2 * size - s.length);
  return raw;
}

/** DER Ecdsa-Sig-Value → raw r‖s. Strict DER; r and s in [1, n-1]; nothing after the SEQUENCE. */
export function ecdsaDerToRaw(der: Uint8Array, algorithm: EcdsaAlgorithm): Uint8Array {
  const profile = ECDSA_PROFILES[algorithm];
  const raw = ecdsaDerToRawOfSize(der, profile.size, `${algorithm} DER signature`);
  parseRaw(raw, profile);
  return raw;
}

function checkKey(key: KeyObject, type: "public" | "private", profile: EcdsaProfile): void {
  if (key.type === type && ecdsaAlgorithmForKey(key) === profile.algorithm) return;
  const got =
    key.type !== type
      ? `a ${key.type} key`
      : (key.asymmetricKeyDetails?.namedCurve ?? key.asymmetricKeyType ?? "an unknown key");
  throw new IntegrityError(`${profile.algorithm} needs a ${profile.curve} ${type} key, got ${got}`);
}

/**
 * Verifies a raw r‖s signature over `data` (hashed here with the algorithm's hash). Returns only
 * when the signature is valid; otherwise throws MalformedError (encoding) or IntegrityError.
 */
export function verifyEcdsaRaw(
  publicKey: KeyObject,
  algorithm: EcdsaAlgorithm,
  data: Uint8Array,
  signature: Uint8Array,
): void {
  const profile = ECDSA_PROFILES[algorithm];
  checkKey(publicKey, "public", profile);
  parseRaw(signature, profile);
  const ok = nodeVerify(profile.hash, data, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature);
  if (!ok) throw new IntegrityError(`${algorithm} signature does not verify`);
}

/** As verifyEcdsaRaw, for a DER signature (strictly parsed first). */
export function verifyEcdsaDer(
  publicKey: KeyObject,
  algorithm: EcdsaAlgorithm,
  data: Uint8Array,
  signature: Uint8Array,
): void {
  verifyEcdsaRaw(publicKey, algorithm, data, ecdsaDerToRaw(signature, algorithm));
}

/** Signs `data` with a software key; returns raw r‖s. */
export function signEcdsaRaw(privateKey: KeyObject, algorithm: EcdsaAlgorithm, data: Uint8Array): Uint8Array {
  const profile = ECDSA_PROFILES[algorithm];
  checkKey(privateKey, "private", profile);
  return new Uint8Array(nodeSign(profile.hash, data, { key: privateKey, dsaEncoding: "ieee-p1363" }));
}

/**
 * ECDSA over a digest computed elsewhere, as a PIV card signs in GENERAL AUTHENTICATE (the host
 * sends the hash of the message; SEC 1 §4.1.3 from step 4 on): node:crypto only signs messages it
 * hashes itself, so the scalar arithmetic is done here and OpenSSL computes k·G through ECDH. A
 * digest shorter than the curve size is taken as its integer value (left-padded), never longer.
 * Returns raw r‖s. Not constant-time: for the virtual card and the warm-up's world, whose keys are
 * test keys, never for a key that protects anything.
 */
export function signEcdsaDigestRaw(
  privateKey: KeyObject,
  algorithm: EcdsaAlgorithm,
  digest: Uint8Array,
): Uint8Array {
  const profile = ECDSA_PROFILES[algorithm];
  checkKey(privateKey, "private", profile);
  if (digest.length === 0 || digest.length > profile.size)
    throw new RangeError(`an ${algorithm} digest has 1 to ${profile.size} bytes, got ${digest.length}`);
  const n = profile.order;
  const d = toBigint(new Uint8Array(Buffer.from(privateKey.export({ format: "jwk" }).d ?? "", "base64url")));
  const e = toBigint(digest);
  const ecdh = createECDH(profile.nodeCurve);
  // Bounded: a retry needs r or s to be 0, which has probability about 2^-255 per draw.
  for (let attempt = 0; attempt < 16; attempt++) {
    const k = (toBigint(new Uint8Array(randomBytes(profile.size + 16))) % (n - 1n)) + 1n;
    ecdh.setPrivateKey(fromBigint(k, profile.size));
    const r = toBigint(new Uint8Array(ecdh.getPublicKey()).subarray(1, 1 + profile.size)) % n;
    if (r === 0n) continue;
    const s = (powMod(k, n - 2n, n) * ((e + r * d) % n)) % n;
    if (s === 0n) continue;
    const out = new Uint8Array(2 * profile.size);
    out.set(fromBigint(r, profile.size), 0);
    out.set(fromBigint(s, profile.size), profile.size);
    return out;
  }
  throw new Error("ECDSA: no signature after 16 draws of k");
}

function toBigint(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${Buffer.from(b).toString("hex")}`);
}

function fromBigint(v: bigint, length: number): Uint8Array {
  return new Uint8Array(Buffer.from(v.toString(16).padStart(length * 2, "0"), "hex"));
}

function powMod(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  let b = base % m;
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
  }
  return result;
}
