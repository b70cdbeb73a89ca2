/**
 * The SCP11 key agreement (GP Card Specification 2.3 Amendment F §3.1, §7.6), both sides, pure:
 * no APDU is sent here. NIST P-256, AES-128 session keys and 8-byte MACs, as YubiKey 5.7+ does.
 *
 *   authenticate data  = A6 { 90 02 11 0v | 95 01 3C | 80 01 88 | 81 01 10 } ‖ 5F49 41 <ePK.OCE>
 *   card answer        = 5F49 41 <ePK.SD> ‖ 86 10 <receipt>
 *   Z                  = ECDH(eSK.OCE, ePK.SD) ‖ ECDH(SK.OCE, PK.SD)   (SCP11b: SK.OCE = eSK.OCE)
 *   80 bytes           = X9.63-KDF-SHA-256(Z, 3C 88 10) → receipt key, S-ENC, S-MAC, S-RMAC, DEK
 *   receipt            = AES-CMAC(receipt key, authenticate data ‖ the card's 5F49 TLV)
 *
 * Every public point is checked (uncompressed, on the curve) before it is used; the receipt is
 * compared in constant time. Failures are ScpIntegrityError / ScpMalformedError (exit 15).
 */
import {
  createECDH,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { concatBytes, decodeTlvs, encodeTlv } from "../tlv.js";
import { aesCmac, macEqual } from "./cmac.js";
import { ScpIntegrityError, ScpMalformedError, ScpRequestError } from "./errors.js";
import { x963KdfSha256 } from "./kdf.js";

export type Scp11Variant = "a" | "b" | "c";

/** Key identifiers of the SD's SCP11 keys (GP Amendment F §7.1.1; YubiKey defaults). */
export const SCP11_KID: Readonly<Record<Scp11Variant, number>> = { a: 0x11, b: 0x13, c: 0x15 };
/** The second byte of tag 90 (the SCP11 variant, "i" parameter). */
export const SCP11_PARAM: Readonly<Record<Scp11Variant, number>> = { b: 0x00, a: 0x01, c: 0x03 };
/** Key usage: C-MAC, R-MAC, C-DECRYPTION, R-ENCRYPTION (GP Amendment F Table 6-3). */
export const SCP11_KEY_USAGE = 0x3c;
/** Key type AES (GP Card Spec Table 11-16). */
export const SCP11_KEY_TYPE_AES = 0x88;
/** AES-128 session keys. */
export const SCP11_KEY_LENGTH = 16;
export const SCP11_SHARED_INFO = Uint8Array.of(SCP11_KEY_USAGE, SCP11_KEY_TYPE_AES, SCP11_KEY_LENGTH);

const CURVE = "prime256v1";
/** 04 ‖ X ‖ Y on P-256. */
export const P256_POINT_BYTES = 65;
const P256_SCALAR_BYTES = 32;

export const TAG_CONTROL_REFERENCE = 0xa6;
export const TAG_EPK = 0x5f49;
export const TAG_RECEIPT = 0x86;

/** The four session keys (AES-128) and the key that checked the receipt is not kept. */
export interface ScpSessionKeys {
  readonly sEnc: Uint8Array;
  readonly sMac: Uint8Array;
  readonly sRmac: Uint8Array;
  readonly dek: Uint8Array;
}

export interface Scp11Session {
  readonly keys: ScpSessionKeys;
  /** The receipt: the first MAC chaining value of the session. */
  readonly receipt: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// EC helpers (P-256 only)
// ---------------------------------------------------------------------------------------------

function checkP256(key: KeyObject, what: string): void {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== "ec" || d?.namedCurve !== "prime256v1") {
    throw new ScpMalformedError(`${what} is not a P-256 key`);
  }
}

/** The private scalar (32 bytes) of a P-256 private key. */
export function p256Scalar(key: KeyObject): Uint8Array {
  checkP256(key, "private key");
  const d = key.export({ format: "jwk" }).d;
  if (!d) throw new ScpMalformedError("EC private key without its scalar");
  const raw = Buffer.from(d, "base64url");
  if (raw.length > P256_SCALAR_BYTES) throw new ScpMalformedError("P-256 scalar longer than 32 bytes");
  const out = new Uint8Array(P256_SCALAR_BYTES);
  out.set(raw, P256_SCALAR_BYTES - raw.length);
  return out;
}

/** The uncompressed point (04 ‖ X ‖ Y) of a P-256 public or private key. */
export function p256Point(key: KeyObject): Uint8Array {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  checkP256(pub, "public key");
  const jwk = pub.export({ format: "jwk" });
  const pad = (s: string | undefined) => {
    const b = Buffer.from(s ?? "", "base64url");
    const o = new Uint8Array(P256_SCALAR_BYTES);
    o.set(b, P256_SCALAR_BYTES - b.length);
    return o;
  };
  return concatBytes(Uint8Array.of(0x04), pad(jwk.x), pad(jwk.y));
}

/**
 * Checks that `point` is an uncompressed P-256 point on the curve (not the point at infinity, not
 * off-curve, not a compressed or hybrid encoding) and returns it as a public KeyObject.
 */
export function p256PublicKey(point: Uint8Array, what = "public key"): KeyObject {
  if (point.length !== P256_POINT_BYTES || point[0] !== 0x04) {
    throw new ScpIntegrityError(`${what}: not an uncompressed P-256 point`);
  }
  try {
    // OpenSSL refuses coordinates off the curve when it builds the key.
    return createPublicKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: Buffer.from(point.subarray(1, 33)).toString("base64url"),
        y: Buffer.from(point.subarray(33, 65)).toString("base64url"),
      },
      format: "jwk",
    });
  } catch (cause) {
    throw new ScpIntegrityError(`${what}: not a point on P-256`, { cause });
  }
}

/** ECDH on P-256: the X coordinate of d·Q, with Q checked to lie on the curve. */
export function p256Ecdh(privateKey: KeyObject, point: Uint8Array, what = "public key"): Uint8Array {
  p256PublicKey(point, what);
  const ecdh = createECDH(CURVE);
  ecdh.setPrivateKey(p256Scalar(privateKey));
  try {
    return new Uint8Array(ecdh.computeSecret(point));
  } catch (cause) {
    throw new ScpIntegrityError(`${what}: key agreement refused the point`, { cause });
  }
}

/** A fresh P-256 key pair (the ephemeral key of either side). */
export function generateP256(): KeyObject {
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
}

/** A P-256 private key from its 32-byte scalar (how the virtual card persists its SCP keys). */
export function p256PrivateKeyFromScalar(d: Uint8Array): KeyObject {
  if (d.length !== P256_SCALAR_BYTES) throw new ScpMalformedError("P-256 scalar must be 32 bytes");
  const ecdh = createECDH(CURVE);
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64url");
  return createPrivateKey({
    key: {
      kty: "EC",
      crv: "P-256",
      d: b64(d),
      x: b64(point.subarray(1, 33)),
      y: b64(point.subarray(33, 65)),
    },
    format: "jwk",
  });
}

/** A P-256 private key from DER PKCS#8 (or SEC 1) bytes, as the test vectors carry them. */
export function p256PrivateKeyFromDer(der: Uint8Array): KeyObject {
  const buf = Buffer.from(der);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: buf, format: "der", type: "pkcs8" });
  } catch {
    key = createPrivateKey({ key: buf, format: "der", type: "sec1" });
  }
  checkP256(key, "private key");
  return key;
}

// ---------------------------------------------------------------------------------------------
// Authenticate data (host → card) and answer (card → host)
// ---------------------------------------------------------------------------------------------

/** The data field of INTERNAL AUTHENTICATE (11b) or MUTUAL AUTHENTICATE (11a/c). */
export function encodeAuthenticateData(variant: Scp11Variant, ePkOce: Uint8Array): Uint8Array {
  if (ePkOce.length !== P256_POINT_BYTES) throw new RangeError("ePK.OCE must be an uncompressed P-256 point");
  const params = concatBytes(
    encodeTlv(0x90, Uint8Array.of(0x11, SCP11_PARAM[variant])),
    encodeTlv(0x95, Uint8Array.of(SCP11_KEY_USAGE)),
    encodeTlv(0x80, Uint8Array.of(SCP11_KEY_TYPE_AES)),
    encodeTlv(0x81, Uint8Array.of(SCP11_KEY_LENGTH)),
  );
  return concatBytes(encodeTlv(TAG_CONTROL_REFERENCE, params), encodeTlv(TAG_EPK, ePkOce));
}

export interface AuthenticateRequest {
  readonly variant: Scp11Variant;
  /** ePK.OCE, checked to be a P-256 point. */
  readonly ePkOce: Uint8Array;
}

/**
 * Card side: parses and checks the authenticate data. Only what this card supports is accepted:
 * SCP11 with key usage 3C, AES-128, and a valid P-256 ePK.OCE; anything else is ScpRequestError.
 */
export function decodeAuthenticateData(data: Uint8Array): AuthenticateRequest {
  let items: ReturnType<typeof decodeTlvs>;
  try {
    items = decodeTlvs(data, { maxItems: 4 });
  } catch (cause) {
    throw new ScpRequestError("authenticate data is not BER-TLV", { cause });
  }
  if (items.length !== 2 || items[0]!.tag !== TAG_CONTROL_REFERENCE || items[1]!.tag !== TAG_EPK) {
    throw new ScpRequestError("authenticate data must be A6 then 5F49");
  }
  let params: ReturnType<typeof decodeTlvs>;
  try {
    params = decodeTlvs(items[0]!.value, { maxItems: 8 });
  } catch (cause) {
    throw new ScpRequestError("control reference template is not BER-TLV", { cause });
  }
  const get = (tag: number): Uint8Array => {
    const found = params.filter((p) => p.tag === tag);
    if (found.length !== 1)
      throw new ScpRequestError(`control reference template: tag ${tag.toString(16)} missing or repeated`);
    return found[0]!.value;
  };
  if (params.length !== 4) throw new ScpRequestError("control reference template: unexpected tags");
  const scp = get(0x90);
  if (scp.length !== 2 || scp[0] !== 0x11) throw new ScpRequestError("not an SCP11 request");
  const variant = (Object.keys(SCP11_PARAM) as Scp11Variant[]).find((v) => SCP11_PARAM[v] === scp[1]);
  if (!variant) throw new ScpRequestError("unknown SCP11 variant");
  const usage = get(0x95);
  const type = get(0x80);
  const len = get(0x81);
  if (usage.length !== 1 || usage[0] !== SCP11_KEY_USAGE) throw new ScpRequestError("unsupported key usage");
  if (type.length !== 1 || type[0] !== SCP11_KEY_TYPE_AES) throw new ScpRequestError("unsupported key type");
  if (len.length !== 1 || len[0] !== SCP11_KEY_LENGTH) throw new ScpRequestError("unsupported key length");
  const ePkOce = items[1]!.value.slice();
  try {
    p256PublicKey(ePkOce, "ePK.OCE");
  } catch (cause) {
    throw new ScpRequestError("ePK.OCE is not a P-256 point", { cause });
  }
  return { variant, ePkOce };
}

export interface AuthenticateResponse {
  /** ePK.SD, the card's ephemeral point (not yet checked against the curve). */
  readonly ePkSd: Uint8Array;
  /** The whole 5F49 TLV as received: it goes into the receipt. */
  readonly ePkSdTlv: Uint8Array;
  readonly receipt: Uint8Array;
}

/** Host side: the card's answer must be exactly `5F49 41 <point>` ‖ `86 10 <receipt>`. */
export function decodeAuthenticateResponse(data: Uint8Array): AuthenticateResponse {
  let items: ReturnType<typeof decodeTlvs>;
  try {
    items = decodeTlvs(data, { maxItems: 2 });
  } catch (cause) {
    throw new ScpMalformedError("card's authenticate answer is not BER-TLV", { cause });
  }
  if (items.length !== 2 || items[0]!.tag !== TAG_EPK || items[1]!.tag !== TAG_RECEIPT) {
    throw new ScpMalformedError("card's authenticate answer must be 5F49 then 86");
  }
  const ePkSd = items[0]!.value.slice();
  const receipt = items[1]!.value.slice();
  if (ePkSd.length !== P256_POINT_BYTES) throw new ScpMalformedError("ePK.SD is not a 65-byte point");
  if (receipt.length !== 16) throw new ScpMalformedError("receipt is not 16 bytes");
  return { ePkSd, ePkSdTlv: encodeTlv(TAG_EPK, ePkSd), receipt };
}

export function encodeAuthenticateResponse(ePkSd: Uint8Array, receipt: Uint8Array): Uint8Array {
  return concatBytes(encodeTlv(TAG_EPK, ePkSd), encodeTlv(TAG_RECEIPT, receipt));
}

// ---------------------------------------------------------------------------------------------
// Keys and receipt
// ---------------------------------------------------------------------------------------------

/** X9.63 over Z → receipt key and the four session keys. */
export function deriveScp11Keys(z: Uint8Array): { receiptKey: Uint8Array; keys: ScpSessionKeys } {
  const k = x963KdfSha256(z, SCP11_SHARED_INFO, 5 * SCP11_KEY_LENGTH);
  const part = (i: number) => k.slice(i * SCP11_KEY_LENGTH, (i + 1) * SCP11_KEY_LENGTH);
  return { receiptKey: part(0), keys: { sEnc: part(1), sMac: part(2), sRmac: part(3), dek: part(4) } };
}

export function computeReceipt(
  receiptKey: Uint8Array,
  authData: Uint8Array,
  ePkSdTlv: Uint8Array,
): Uint8Array {
  return aesCmac(receiptKey, concatBytes(authData, ePkSdTlv));
}

export interface HostHandshakeInput {
  /** The authenticate data the host sent (encodeAuthenticateData). */
  readonly authData: Uint8Array;
  /** The card's answer (its data field). */
  readonly answer: Uint8Array;
  /** The host's ephemeral private key. */
  readonly eSkOce: KeyObject;
  /** The host's static key (SCP11a/c); absent for SCP11b. */
  readonly skOce?: KeyObject;
  /** PK.SD: the public point of the card's SCP key certificate (already validated). */
  readonly pkSd: Uint8Array;
}

/**
 * Host side: checks ePK.SD, computes Z, derives the keys and verifies the receipt (constant time).
 * Nothing is returned unless the card proved it holds SK.SD for this very exchange.
 */
export function completeHostHandshake(input: HostHandshakeInput): Scp11Session {
  const answer = decodeAuthenticateResponse(input.answer);
  const shSee = p256Ecdh(input.eSkOce, answer.ePkSd, "ePK.SD");
  const shSes = p256Ecdh(input.skOce ?? input.eSkOce, input.pkSd, "PK.SD");
  const { receiptKey, keys } = deriveScp11Keys(concatBytes(shSee, shSes));
  const expected = computeReceipt(receiptKey, input.authData, answer.ePkSdTlv);
  if (!macEqual(expected, answer.receipt)) {
    throw new ScpIntegrityError(
      "secure channel: the card's receipt does not verify (wrong SCP key or tampered handshake)",
    );
  }
  return { keys, receipt: answer.receipt };
}

export interface CardHandshakeInput {
  /** The authenticate data as received. */
  readonly authData: Uint8Array;
  /** SK.SD, the card's static SCP key. */
  readonly skSd: KeyObject;
  /** PK.OCE from the verified OCE certificate (SCP11a/c); absent for SCP11b. */
  readonly pkOce?: Uint8Array;
  /** The card's ephemeral key; a fresh one when absent (pinned only by known-answer tests). */
  readonly eSkSd?: KeyObject;
}

/** Card side: the answer to send (5F49 ‖ 86) and the session it opens. */
export function cardHandshake(
  input: CardHandshakeInput,
): Scp11Session & { answer: Uint8Array; variant: Scp11Variant } {
  const request = decodeAuthenticateData(input.authData);
  if (request.variant !== "b" && !input.pkOce)
    throw new ScpRequestError("SCP11a/c without an OCE certificate");
  const eSkSd = input.eSkSd ?? generateP256();
  const ePkSd = p256Point(eSkSd);
  const shSee = p256Ecdh(eSkSd, request.ePkOce, "ePK.OCE");
  const shSes = p256Ecdh(input.skSd, request.variant === "b" ? request.ePkOce : input.pkOce!, "PK.OCE");
  const { receiptKey, keys } = deriveScp11Keys(concatBytes(shSee, shSes));
  const ePkSdTlv = encodeTlv(TAG_EPK, ePkSd);
  const receipt = computeReceipt(receiptKey, input.authData, ePkSdTlv);
  return { keys, receipt, answer: encodeAuthenticateResponse(ePkSd, receipt), variant: request.variant };
}
