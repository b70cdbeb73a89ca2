import { generateKeyPairSync } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MalformedError } from "../../src/errors.js";
import { CURVES, curveOfEcParams, ecPointFromAttribute, spkiFromEcPoint } from "../../src/pkcs11/ec.js";

const curves = ["P-256", "P-384"] as const;

function keyOn(curve: (typeof curves)[number]) {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const jwk = publicKey.export({ format: "jwk" });
  const point = Buffer.concat([
    Buffer.of(4),
    Buffer.from(jwk.x!, "base64url"),
    Buffer.from(jwk.y!, "base64url"),
  ]);
  return { spki, point };
}

describe("EC public keys from CKA_EC_POINT", () => {
  it.each(curves)("%s: the DER OCTET STRING and the bare point give node's own SPKI", (curve) => {
    for (let i = 0; i < 20; i++) {
      const { spki, point } = keyOn(curve);
      const wrapped = Buffer.concat([Buffer.of(0x04, point.length), point]);
      expect(Buffer.from(spkiFromEcPoint(ecPointFromAttribute(wrapped, curve), curve))).toEqual(spki);
      expect(Buffer.from(spkiFromEcPoint(ecPointFromAttribute(point, curve), curve))).toEqual(spki);
    }
  });

  it("maps the curve OIDs both ways", () => {
    for (const curve of curves) expect(curveOfEcParams(CURVES[curve].ecParams)).toBe(curve);
    expect(curveOfEcParams(Buffer.from("06052b81040023", "hex"))).toBeUndefined(); // P-521
  });

  it("refuses anything that is not an uncompressed point on the curve", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 120 }),
        fc.constantFrom(...curves),
        (bytes, curve) => {
          try {
            const point = ecPointFromAttribute(bytes, curve);
            spkiFromEcPoint(point, curve);
            // Random bytes are on the curve with negligible probability.
            return false;
          } catch (error) {
            return error instanceof MalformedError;
          }
        },
      ),
    );
    const { point } = keyOn("P-256");
    const compressed = Buffer.concat([Buffer.of(0x02), point.subarray(1, 33)]);
    expect(() => ecPointFromAttribute(compressed, "P-256")).toThrow(MalformedError);
    const offCurve = Buffer.from(point);
    offCurve[64] = (offCurve[64] ?? 0) ^ 1;
    expect(() => spkiFromEcPoint(offCurve, "P-256")).toThrow(MalformedError);
  });
});
