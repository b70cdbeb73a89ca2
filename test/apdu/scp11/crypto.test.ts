import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  aesCmac,
  deriveScp11Keys,
  macEqual,
  padIso9797m2,
  unpadIso9797m2,
  x963KdfSha256,
} from "../../../src/apdu/scp11/index.js";
import { h, scp11b, x } from "./vectors.js";

describe("AES-CMAC (RFC 4493 §4 test vectors)", () => {
  const key = h("2b7e151628aed2a6abf7158809cf4f3c");
  const m64 = h(
    "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
  );
  it.each([
    [0, "BB1D6929E95937287FA37D129B756746"],
    [16, "070A16B46B4D4144F79BDD9DD04A287C"],
    [40, "DFA66747DE9AE63030CA32611497C827"],
    [64, "51F0BEBF7E3B9D92FC49741779363CFE"],
  ])("message of %i bytes", (len, mac) => {
    expect(x(aesCmac(key, m64.subarray(0, len)))).toBe(mac);
  });

  it("refuses keys that are not AES keys", () => {
    expect(() => aesCmac(new Uint8Array(15), new Uint8Array(0))).toThrow(RangeError);
  });

  it("compares MACs only when lengths agree", () => {
    expect(macEqual(h("0102"), h("0102"))).toBe(true);
    expect(macEqual(h("0102"), h("0103"))).toBe(false);
    expect(macEqual(h("0102"), h("010203"))).toBe(false);
  });
});

describe("X9.63 KDF with SHA-256", () => {
  it("is SHA-256(Z ‖ counter ‖ sharedInfo) concatenated and truncated", () => {
    const z = h("00112233445566778899");
    const info = h("3c8810");
    const k1 = createHash("sha256").update(z).update(h("00000001")).update(info).digest();
    const k2 = createHash("sha256").update(z).update(h("00000002")).update(info).digest();
    expect(x(x963KdfSha256(z, info, 40))).toBe(x(Buffer.concat([k1, k2]).subarray(0, 40)));
  });

  it("bounds its output", () => {
    expect(() => x963KdfSha256(h("00"), h(""), 0)).toThrow(RangeError);
    expect(() => x963KdfSha256(h("00"), h(""), 100_000)).toThrow(RangeError);
  });

  it("derives the SCP11b vector's five keys from its Z", () => {
    const v = scp11b();
    expect(v.sharedInfo).toBe("3c8810");
    const { receiptKey, keys } = deriveScp11Keys(h(v["Z = ShSee||ShSes"]));
    expect(x(receiptKey)).toBe(v.receipt_key.toUpperCase());
    expect(x(keys.sEnc)).toBe(v["S-ENC"].toUpperCase());
    expect(x(keys.sMac)).toBe(v["S-MAC"].toUpperCase());
    expect(x(keys.sRmac)).toBe(v["S-RMAC"].toUpperCase());
    expect(x(keys.dek)).toBe(v.DEK.toUpperCase());
  });
});

describe("ISO/IEC 9797-1 method 2 padding", () => {
  it("always adds a block's worth at most, and an empty input becomes one block", () => {
    expect(x(padIso9797m2(new Uint8Array(0)))).toBe(`80${"00".repeat(15)}`);
    expect(padIso9797m2(new Uint8Array(16)).length).toBe(32);
  });

  it("round-trips, and refuses padding that is not 80 00… in the last block", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (d) => {
        expect(x(unpadIso9797m2(padIso9797m2(d))!)).toBe(x(d));
      }),
    );
    expect(unpadIso9797m2(new Uint8Array(16))).toBeUndefined();
    expect(unpadIso9797m2(h("80"))).toBeUndefined();
    // 80 followed by 16 zero bytes: the padding would span two blocks.
    const wide = new Uint8Array(32);
    wide[15] = 0x80;
    expect(unpadIso9797m2(wide)).toBeUndefined();
  });
});
