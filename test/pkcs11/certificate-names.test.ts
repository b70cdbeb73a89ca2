/**
 * certificateNames: the subject, issuer and serial a PKCS#11 certificate object carries, read without
 * an X.509 library — the same bytes @peculiar/x509 gives, and nothing but a MalformedError (or
 * views into the input) for any other bytes.
 */
import type { X509Certificate } from "@peculiar/x509";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { MalformedError } from "../../src/errors.js";
import { certificateNames } from "../../src/pkcs11/certificate-names.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";

let pki: OnboardingPki;
beforeAll(async () => {
  pki = await createPki({ owner: "ACME Bank" });
});

function serialDer(cert: X509Certificate): Uint8Array {
  // The serial's INTEGER as @peculiar/x509 reads it, re-encoded: positive, minimal.
  let content = Buffer.from(cert.serialNumber, "hex");
  if ((content[0] ?? 0) >= 0x80) content = Buffer.concat([Buffer.of(0), content]);
  return Uint8Array.from([0x02, content.length, ...content]);
}

describe("certificateNames", () => {
  it("gives the DER @peculiar/x509 gives for subject, issuer and serial", () => {
    for (const cert of [pki.root.certificate, pki.tokenCa.certificate, pki.deviceCa.certificate]) {
      const names = certificateNames(new Uint8Array(cert.rawData));
      expect(Buffer.from(names.subject)).toEqual(Buffer.from(cert.subjectName.toArrayBuffer()));
      expect(Buffer.from(names.issuer)).toEqual(Buffer.from(cert.issuerName.toArrayBuffer()));
      expect(Buffer.from(names.serialNumber)).toEqual(Buffer.from(serialDer(cert)));
    }
  });

  it("refuses trailing bytes, a truncated certificate and a non-SEQUENCE", () => {
    const der = new Uint8Array(pki.root.certificate.rawData);
    expect(() => certificateNames(Uint8Array.from([...der, 0]))).toThrow(MalformedError);
    expect(() => certificateNames(der.subarray(0, der.length - 1))).toThrow(MalformedError);
    expect(() => certificateNames(Uint8Array.of(0x04, 0x00))).toThrow(MalformedError);
    expect(() => certificateNames(new Uint8Array())).toThrow(MalformedError);
  });

  it("any bytes: a MalformedError or three TLVs found inside the input (property)", () => {
    const der = new Uint8Array(pki.tokenCa.certificate.rawData);
    const mutated = fc
      .tuple(fc.nat({ max: der.length - 1 }), fc.integer({ min: 0, max: 255 }))
      .map(([i, b]) => {
        const copy = der.slice();
        copy[i] = b;
        return copy;
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), mutated), (bytes) => {
        let names: ReturnType<typeof certificateNames>;
        try {
          names = certificateNames(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedError);
          return;
        }
        for (const part of [names.subject, names.issuer, names.serialNumber]) {
          expect(part.buffer).toBe(bytes.buffer);
          expect(part.byteOffset + part.length).toBeLessThanOrEqual(bytes.byteOffset + bytes.length);
        }
        expect(names.serialNumber[0]).toBe(0x02);
        expect(names.subject[0]).toBe(0x30);
        expect(names.issuer[0]).toBe(0x30);
      }),
      { numRuns: 2000 },
    );
  });
});
