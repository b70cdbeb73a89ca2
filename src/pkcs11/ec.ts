import { createPublicKey } from "node:crypto";
import { ECDSA_PROFILES, type EcdsaAlgorithm } from "../crypto/ecdsa.js";
import { MalformedError } from "../errors.js";

export type EcCurve = "P-256" | "P-384";

interface CurveInfo {
  /** CKA_EC_PARAMS: the DER namedCurve OID (RFC 5480 §2.1.1.1, ECParameters choice namedCurve). */
  readonly ecParams: Buffer;
  /** The ECDSA profile (hash, signature size) the project pairs with the curve. */
  readonly algorithm: EcdsaAlgorithm;
  /** Field element length in bytes: r and s are each this long in r‖s form. */
  readonly fieldBytes: number;
}

export const CURVES: Readonly<Record<EcCurve, CurveInfo>> = {
  // 1.2.840.10045.3.1.7 (secp256r1)
  "P-256": {
    ecParams: Buffer.from("06082a8648ce3d030107", "hex"),
    algorithm: "ES256",
    fieldBytes: ECDSA_PROFILES.ES256.size,
  },
  // 1.3.132.0.34 (secp384r1)
  "P-384": {
    ecParams: Buffer.from("06052b81040022", "hex"),
    algorithm: "ES384",
    fieldBytes: ECDSA_PROFILES.ES384.size,
  },
};

export function curveOfEcParams(ecParams: Uint8Array): EcCurve | undefined {
  for (const [name, info] of Object.entries(CURVES) as [EcCurve, CurveInfo][]) {
    if (info.ecParams.equals(ecParams)) return name;
  }
  return undefined;
}

/**
 * The uncompressed point 04‖X‖Y from CKA_EC_POINT. PKCS#11 v2.40 §2.3.3 says the attribute is the
 * DER OCTET STRING holding the point (SoftHSM2, OpenSC); some modules return the bare point. The two
 * are told apart by length, which is fixed for a curve, not by guessing from the first bytes.
 */
export function ecPointFromAttribute(value: Uint8Array, curve: EcCurve): Uint8Array {
  const pointLength = 1 + 2 * CURVES[curve].fieldBytes;
  if (value.length === pointLength + 2 && value[0] === 0x04 && value[1] === pointLength) {
    return checkUncompressed(value.subarray(2), curve);
  }
  if (value.length === pointLength) return checkUncompressed(value, curve);
  throw new MalformedError(`CKA_EC_POINT of ${value.length} bytes is not an uncompressed ${curve} point`);
}

function checkUncompressed(point: Uint8Array, curve: EcCurve): Uint8Array {
  if (point[0] !== 0x04) throw new MalformedError(`CKA_EC_POINT is not an uncompressed ${curve} point`);
  return point;
}

/** SubjectPublicKeyInfo DER (RFC 5480) for an uncompressed point, built and checked by node:crypto. */
export function spkiFromEcPoint(point: Uint8Array, curve: EcCurve): Uint8Array {
  const n = CURVES[curve].fieldBytes;
  if (point.length !== 1 + 2 * n || point[0] !== 0x04) {
    throw new MalformedError(`not an uncompressed ${curve} point`);
  }
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");
  try {
    const key = createPublicKey({
      key: { kty: "EC", crv: curve, x: b64(point.subarray(1, 1 + n)), y: b64(point.subarray(1 + n)) },
      format: "jwk",
    });
    return new Uint8Array(key.export({ type: "spki", format: "der" }));
  } catch (cause) {
    // node:crypto refuses a point that is not on the curve.
    throw new MalformedError(`the token returned an invalid ${curve} public key`, { cause });
  }
}
