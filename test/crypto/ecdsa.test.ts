import { createHash, generateKeyPairSync, sign, verify } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ECDSA_PROFILES,
  type EcdsaAlgorithm,
  ecdsaAlgorithmForKey,
  ecdsaDerToRaw,
  ecdsaDerToRawOfSize,
  ecdsaRawToDer,
  signEcdsaDigestRaw,
  signEcdsaRaw,
  verifyEcdsaDer,
  verifyEcdsaRaw,
} from "../../src/crypto/ecdsa.js";
import { IntegrityError, MalformedError } from "../../src/errors.js";

const keys = {
  ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }),
  ES384: generateKeyPairSync("ec", { namedCurve: "P-384" }),
};
const ALGORITHMS: EcdsaAlgorithm[] = ["ES256", "ES384"];
const hex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s/g, ""), "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** A scalar in [1, n-1] as `size` big-endian bytes. */
function scalar(algorithm: EcdsaAlgorithm) {
  const { order, size } = ECDSA_PROFILES[algorithm];
  return fc.bigInt({ min: 1n, max: order - 1n }).map((v) => hex(v.toString(16).padStart(size * 2, "0")));
}

describe.each(ALGORITHMS)("%s", (algorithm) => {
  const { size, order } = ECDSA_PROFILES[algorithm];
  const { publicKey, privateKey } = keys[algorithm];
  const data = new TextEncoder().encode("hsm-onboard");

  it("signs and verifies raw and DER; the algorithm follows the key's curve", () => {
    expect(ecdsaAlgorithmForKey(privateKey)).toBe(algorithm);
    const raw = signEcdsaRaw(privateKey, algorithm, data);
    expect(raw.length).toBe(2 * size);
    verifyEcdsaRaw(publicKey, algorithm, data, raw);
    verifyEcdsaDer(publicKey, algorithm, data, ecdsaRawToDer(raw, algorithm));
    expect(() => verifyEcdsaRaw(publicKey, algorithm, new Uint8Array([1]), raw)).toThrow(IntegrityError);
  });

  it("signs a digest computed elsewhere, as a PIV card does: OpenSSL verifies it over the message, k is fresh each time", () => {
    const { hash } = ECDSA_PROFILES[algorithm];
    for (const message of [data, new Uint8Array(0), new Uint8Array(1000).fill(0xa5)]) {
      const digest = new Uint8Array(createHash(hash).update(message).digest());
      const raw = signEcdsaDigestRaw(privateKey, algorithm, digest);
      expect(raw.length).toBe(2 * size);
      expect(verify(hash, message, { key: publicKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
      expect(verify(hash, Uint8Array.of(1), { key: publicKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(false);
      expect(toHex(signEcdsaDigestRaw(privateKey, algorithm, digest))).not.toBe(toHex(raw));
    }
    expect(() => signEcdsaDigestRaw(privateKey, algorithm, new Uint8Array(0))).toThrow(RangeError);
    expect(() => signEcdsaDigestRaw(privateKey, algorithm, new Uint8Array(size + 1))).toThrow(RangeError);
    expect(() => signEcdsaDigestRaw(publicKey, algorithm, new Uint8Array(size))).toThrow(IntegrityError);
  });

  it("raw → DER → raw is the identity, and DER → raw → DER too (one encoding each)", () => {
    fc.assert(
      fc.property(scalar(algorithm), scalar(algorithm), (r, s) => {
        const raw = new Uint8Array([...r, ...s]);
        const der = ecdsaRawToDer(raw, algorithm);
        expect(ecdsaDerToRaw(der, algorithm)).toEqual(raw);
        expect(ecdsaRawToDer(ecdsaDerToRaw(der, algorithm), algorithm)).toEqual(der);
      }),
    );
  });

  it("refuses raw signatures of the wrong length or with r, s outside [1, n-1]", () => {
    const one = hex("01".padStart(size * 2, "0"));
    const zero = new Uint8Array(size);
    const n = hex(order.toString(16).padStart(size * 2, "0"));
    for (const bad of [
      new Uint8Array(2 * size - 1),
      new Uint8Array(2 * size + 1),
      new Uint8Array([...zero, ...one]),
    ]) {
      expect(() => ecdsaRawToDer(bad, algorithm)).toThrow(MalformedError);
    }
    expect(() => ecdsaRawToDer(new Uint8Array([...one, ...n]), algorithm)).toThrow(/outside/);
    expect(() => verifyEcdsaRaw(publicKey, algorithm, data, new Uint8Array([...n, ...one]))).toThrow(
      MalformedError,
    );
  });

  it("refuses a key of the other curve", () => {
    const other = algorithm === "ES256" ? keys.ES384 : keys.ES256;
    const raw = signEcdsaRaw(privateKey, algorithm, data);
    expect(() => verifyEcdsaRaw(other.publicKey, algorithm, data, raw)).toThrow(IntegrityError);
    expect(() => signEcdsaRaw(other.privateKey, algorithm, data)).toThrow(IntegrityError);
    expect(() => verifyEcdsaRaw(privateKey, algorithm, data, raw)).toThrow(/public key/);
  });
});

describe("strict DER", () => {
  // r = 1, s = 2 in minimal DER: 30 06 02 01 01 02 01 02
  const good = "3006020101020102";
  it("accepts the minimal encoding", () => {
    expect(toHex(ecdsaDerToRaw(hex(good), "ES256"))).toBe(
      `${"01".padStart(64, "0")}${"02".padStart(64, "0")}`,
    );
  });

  it.each([
    ["long-form length where short form fits", "308106020101020102"],
    ["indefinite length", "3080020101020102 0000"],
    ["trailing bytes", `${good}00`],
    ["length shorter than content", "3005020101020102"],
    ["leading zero on a small integer", "300702020001020102"],
    ["negative integer", "3006020181020102".replace("0181", "01ff")],
    ["r = 0", "3006020100020102"],
    ["empty integer", "30050200020102"],
    ["wrong outer tag", "3106020101020102"],
    ["wrong integer tag", "3006030101020102"],
    ["extra element", "3009020101020102020103"],
    ["one integer only", "3003020101"],
    ["empty input", ""],
  ])("refuses %s", (_name, der) => {
    expect(() => ecdsaDerToRaw(hex(der), "ES256")).toThrow(MalformedError);
  });

  it("refuses r = n and an integer longer than the curve allows", () => {
    const n = ECDSA_PROFILES.ES256.order.toString(16);
    const rn = `022100${n}`;
    expect(() => ecdsaDerToRaw(hex(`3026${rn}020101`), "ES256")).toThrow(/outside/);
    const long = `0222 0100${"00".repeat(32)}`;
    expect(() => ecdsaDerToRaw(hex(`3027${long}020101`), "ES256")).toThrow(MalformedError);
  });

  it("never throws anything but MalformedError on random input", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 120 }),
        fc.constantFrom<EcdsaAlgorithm>("ES256", "ES384"),
        (bytes, alg) => {
          try {
            ecdsaDerToRaw(bytes, alg);
          } catch (e) {
            expect(e).toBeInstanceOf(MalformedError);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("ecdsaDerToRawOfSize (any curve; the fast certificate path)", () => {
  it("turns OpenSSL's DER signatures into the r‖s node:crypto makes, P-521 included", () => {
    for (const [namedCurve, size] of [
      ["P-256", 32],
      ["P-384", 48],
      ["P-521", 66],
    ] as const) {
      const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve });
      for (let i = 0; i < 8; i++) {
        const data = Buffer.from(`message ${i}`);
        const der = sign("sha256", data, privateKey);
        const raw = ecdsaDerToRawOfSize(der, size);
        expect(raw.length).toBe(2 * size);
        expect(verify("sha256", data, { key: publicKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
      }
    }
  });

  it("agrees with ecdsaDerToRaw wherever that accepts", () => {
    fc.assert(
      fc.property(fc.constantFrom<EcdsaAlgorithm>("ES256", "ES384"), fc.integer(), (alg, seed) => {
        const raw = signEcdsaRaw(keys[alg].privateKey, alg, Buffer.from(String(seed)));
        const der = ecdsaRawToDer(raw, alg);
        expect(toHex(ecdsaDerToRawOfSize(der, ECDSA_PROFILES[alg].size))).toBe(
          toHex(ecdsaDerToRaw(der, alg)),
        );
      }),
      { numRuns: 100 },
    );
  });

  it("never throws anything but MalformedError on random input, and only returns 2 × size bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 160 }), fc.constantFrom(32, 48, 66), (bytes, size) => {
        try {
          expect(ecdsaDerToRawOfSize(bytes, size).length).toBe(2 * size);
        } catch (e) {
          expect(e).toBeInstanceOf(MalformedError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
