import { ExtendedKeyUsageExtension } from "@peculiar/x509";
import { describe, expect, it } from "vitest";
import { MalformedError } from "../../src/errors.js";
import { decodeCrlNumber, decodeExtendedKeyUsage, encodeCrlNumber } from "../../src/pki/der.js";
import { decodeOidContent, EKU, encodeOidContent, ONBOARDING_ARC } from "../../src/pki/oids.js";

describe("onboarding OIDs", () => {
  it("sit under 2.25 as the decimal value of the project's UUID (X.667)", () => {
    const uuid = "11757d98-aa5a-479d-98fd-bff2a826ba1e";
    expect(ONBOARDING_ARC).toBe(`2.25.${BigInt(`0x${uuid.replaceAll("-", "")}`)}`);
    expect([EKU.tokenAuth, EKU.configSigning, EKU.deviceReceipt]).toEqual([
      `${ONBOARDING_ARC}.1`,
      `${ONBOARDING_ARC}.2`,
      `${ONBOARDING_ARC}.3`,
    ]);
  });

  it("encode exactly as asn1js (inside @peculiar/x509) does, and decode back with their 128-bit arc", () => {
    for (const oid of [
      EKU.tokenAuth,
      EKU.configSigning,
      EKU.deviceReceipt,
      EKU.pivCardAuth,
      EKU.any,
      "1.2.840.10045.4.3.3",
    ]) {
      const ext = new ExtendedKeyUsageExtension([oid]);
      const der = new Uint8Array(ext.value);
      // SEQUENCE { OID }: 30 len 06 len content
      const content = der.subarray(4);
      expect(Buffer.from(encodeOidContent(oid)).toString("hex")).toBe(Buffer.from(content).toString("hex"));
      expect(decodeOidContent(content)).toBe(oid);
      expect(decodeExtendedKeyUsage(der)).toEqual([oid]);
    }
  });

  it("refuses non-minimal and truncated encodings", () => {
    expect(() => decodeOidContent(new Uint8Array([0x2a, 0x80, 0x01]))).toThrow(MalformedError);
    expect(() => decodeOidContent(new Uint8Array([0x2a, 0x86]))).toThrow(MalformedError);
    expect(() => decodeOidContent(new Uint8Array([]))).toThrow(MalformedError);
  });
});

describe("CRL numbers", () => {
  it("round-trip beyond 2^53, as RFC 5280 allows up to 20 octets", () => {
    for (const n of [0n, 1n, 127n, 128n, 2n ** 64n + 5n, 2n ** 158n]) {
      expect(decodeCrlNumber(encodeCrlNumber(n))).toBe(n);
    }
  });

  it("refuses negative numbers", () => {
    expect(() => encodeCrlNumber(-1n)).toThrow(RangeError);
    expect(() => decodeCrlNumber(new Uint8Array([0x02, 0x01, 0xff]))).toThrow(MalformedError);
  });
});
