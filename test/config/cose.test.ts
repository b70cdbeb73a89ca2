import { createPublicKey } from "node:crypto";
import { Tag } from "cbor-x";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { cborUint, decodeCborStrict, encodeCbor } from "../../src/config/cbor.js";
import {
  CoseHeader,
  coseSign1ToBeSigned,
  coseSignToBeSigned,
  leafPublicKey,
  signCoseSign,
  signCoseSign1,
  verifyCoseSign,
  verifyCoseSign1,
  withoutSelfSignedRoot,
} from "../../src/config/cose.js";
import { signEcdsaRaw } from "../../src/crypto/ecdsa.js";
import { CardNotTrustedError, IntegrityError, isOnboardError, MalformedError } from "../../src/errors.js";
import { createTestIdentity, type TestIdentity } from "./signing-fixtures.js";

const hex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s/g, ""), "hex"));
const payload = new TextEncoder().encode("configuration payload");
const byChain = ({ x5chain }: { x5chain: readonly Uint8Array[] }) => leafPublicKey(x5chain);

let alice: TestIdentity; // P-256
let bob: TestIdentity; // P-384
beforeAll(async () => {
  alice = await createTestIdentity({ curve: "P-256" });
  bob = await createTestIdentity({ curve: "P-384", officer: "Bob Example" });
});

/** A COSE_Sign1 signed by alice over arbitrary header maps and tag (to build hostile messages). */
function craftSign1(options: {
  protectedHeader?: Map<unknown, unknown> | Uint8Array;
  unprotected?: Map<unknown, unknown>;
  tag?: number | null;
  signature?: Uint8Array;
  payload?: Uint8Array | null;
}): Uint8Array {
  const p = options.protectedHeader ?? new Map([[CoseHeader.alg, -7]]);
  const protectedBytes = p instanceof Uint8Array ? p : encodeCbor(p);
  const content = options.payload === undefined ? payload : options.payload;
  const signature =
    options.signature ??
    signEcdsaRaw(
      alice.privateKey,
      "ES256",
      encodeCbor(["Signature1", protectedBytes, new Uint8Array(0), content ?? new Uint8Array(0)]),
    );
  const message = [protectedBytes, options.unprotected ?? new Map(), content, signature];
  return encodeCbor(options.tag === null ? message : new Tag(message, options.tag ?? 18));
}

const verify1 = (bytes: Uint8Array, allowUntagged = false) =>
  verifyCoseSign1(bytes, { keyFor: () => createPublicKey(alice.privateKey), allowUntagged });

describe("COSE_Sign", () => {
  it("signs with several signers and verifies each with the leaf key of its protected x5chain", async () => {
    const bytes = await signCoseSign(payload, [alice.signer, bob.signer], {
      contentType: "application/test",
    });
    const seen: number[] = [];
    const result = await verifyCoseSign(bytes, {
      keyFor: (s) => {
        seen.push(s.index);
        return byChain(s);
      },
    });
    expect(seen).toEqual([0, 1]);
    expect(result.payload).toEqual(payload);
    expect(result.protectedHeader.get(CoseHeader.contentType)).toBe("application/test");
    expect(result.signers.map((s) => s.algorithm)).toEqual(["ES256", "ES384"]);
    expect(result.signers[1]!.x5chain).toEqual(bob.chain);
    expect(result.signers.every((s) => s.x5chainProtected && s.unprotectedHeader.size === 0)).toBe(true);
    expect(coseSignToBeSigned(bytes)).toHaveLength(2);
  });

  it("refuses the message when any one signature fails, naming it", async () => {
    const bytes = await signCoseSign(payload, [alice.signer, bob.signer]);
    // verify both signatures with alice's key: signature 1 cannot match
    await expect(verifyCoseSign(bytes, { keyFor: () => byChain({ x5chain: alice.chain }) })).rejects.toThrow(
      /signature 1: ES384 needs a P-384 public key/,
    );
    const wrongKey = await createTestIdentity({ curve: "P-384" });
    await expect(
      verifyCoseSign(bytes, {
        keyFor: (s) => (s.index === 1 ? byChain({ x5chain: wrongKey.chain }) : byChain(s)),
      }),
    ).rejects.toThrow(/signature 1: ES384 signature does not verify/);
  });

  it("passes the resolver's refusal through", async () => {
    const bytes = await signCoseSign(payload, [alice.signer]);
    const refusal = new CardNotTrustedError("not our CA");
    await expect(
      verifyCoseSign(bytes, {
        keyFor: () => {
          throw refusal;
        },
      }),
    ).rejects.toBe(refusal);
  });

  it("refuses an empty signer list and a signer whose card returns a bad signature", async () => {
    await expect(signCoseSign(payload, [])).rejects.toThrow(/1\.\.16 signers/);
    const liar = { ...alice.signer, sign: async () => new Uint8Array(64).fill(1) };
    await expect(signCoseSign(payload, [liar])).rejects.toThrow(/own certificate does not verify/);
    const short = { ...alice.signer, sign: async () => new Uint8Array(70) };
    await expect(signCoseSign(payload, [short])).rejects.toThrow(/expected 64/);
  });
});

describe("COSE_Sign1", () => {
  it("carries the chain as an array, a single certificate as a bstr, or none", async () => {
    for (const x5chain of [alice.chain, alice.chain.slice(0, 1), []]) {
      const bytes = await signCoseSign1(payload, alice.signer, { x5chain });
      const result = await verifyCoseSign1(bytes, { keyFor: () => createPublicKey(alice.privateKey) });
      expect(result.payload).toEqual(payload);
      expect(result.signer.x5chain).toEqual(x5chain);
      const protectedBytes = (
        decodeCborStrict(bytes, { what: "t", maxBytes: 1e5, allowTopLevelTag: true }).value as unknown[]
      )[0];
      const header = decodeCborStrict(protectedBytes as Uint8Array, { what: "t", maxBytes: 1e5 })
        .value as Map<number, unknown>;
      const carried = header.get(CoseHeader.x5chain);
      if (x5chain.length === 0) expect(header.has(CoseHeader.x5chain)).toBe(false);
      else if (x5chain.length === 1) expect(carried).toBeInstanceOf(Uint8Array);
      else expect(Array.isArray(carried)).toBe(true);
    }
  });

  it("leaves only a self-signed root out of a chain", () => {
    expect(withoutSelfSignedRoot(alice.chain)).toEqual(alice.chain.slice(0, 2));
    expect(withoutSelfSignedRoot(alice.chain.slice(0, 2))).toEqual(alice.chain.slice(0, 2));
    expect(withoutSelfSignedRoot(alice.chain.slice(2))).toEqual(alice.chain.slice(2));
    expect(withoutSelfSignedRoot([])).toEqual([]);
  });

  it("accepts a message that verifies and that it can rebuild the ToBeSigned of", async () => {
    const bytes = craftSign1({});
    await expect(verify1(bytes)).resolves.toMatchObject({ payload });
    expect(coseSign1ToBeSigned(bytes)).toEqual(
      encodeCbor(["Signature1", encodeCbor(new Map([[1, -7]])), new Uint8Array(0), payload]),
    );
  });

  it.each([
    ["a wrong tag", () => craftSign1({ tag: 98 }), /wrong CBOR tag 98, expected 18/],
    ["a missing tag (unless allowed)", () => craftSign1({ tag: null }), /tag 18 missing/],
    [
      "an unknown critical header",
      () =>
        craftSign1({
          protectedHeader: new Map<number, unknown>([
            [1, -7],
            [2, [99]],
            [99, 1],
          ]),
        }),
      /unknown critical header 99/,
    ],
    [
      "crit naming an absent label",
      () =>
        craftSign1({
          protectedHeader: new Map<number, unknown>([
            [1, -7],
            [2, [4]],
          ]),
        }),
      /absent from the protected header/,
    ],
    [
      "an empty crit",
      () =>
        craftSign1({
          protectedHeader: new Map<number, unknown>([
            [1, -7],
            [2, []],
          ]),
        }),
      /crit/,
    ],
    [
      "crit in the unprotected header",
      () => craftSign1({ unprotected: new Map([[2, [1]]]) }),
      /crit must be in the protected/,
    ],
    [
      "a label in both headers",
      () => craftSign1({ unprotected: new Map([[1, -7]]) }),
      /in both the protected and unprotected/,
    ],
    [
      "a duplicate label in the protected header",
      () => craftSign1({ protectedHeader: hex("a2 01 26 01 26") }),
      /duplicate map key/,
    ],
    [
      "a duplicate label in the unprotected header",
      () => {
        // {4: h'01', 4: h'02'} spliced in place of an empty unprotected map
        const good = Buffer.from(craftSign1({ unprotected: new Map([[4, new Uint8Array([1])]]) })).toString(
          "hex",
        );
        return hex(good.replace("a1044101", "a20441010441 02".replace(" ", "")));
      },
      /duplicate map key/,
    ],
    [
      "a protected header that is not a bstr",
      () => encodeCbor(new Tag([new Map([[1, -7]]), new Map(), payload, new Uint8Array(64)], 18)),
      /protected header: expected a byte string/,
    ],
    [
      "a signature of the wrong length",
      () => craftSign1({ signature: new Uint8Array(63) }),
      /must be 64 bytes, got 63/,
    ],
    [
      "an unsupported algorithm (ES512)",
      () => craftSign1({ protectedHeader: new Map([[1, -36]]) }),
      /unsupported algorithm -36/,
    ],
    ["no algorithm", () => craftSign1({ protectedHeader: new Map([[4, new Uint8Array(1)]]) }), /no alg/],
    ["a detached payload", () => craftSign1({ payload: null }), /detached/],
    [
      "a kid that is not a bstr",
      () => craftSign1({ unprotected: new Map([[4, "11"]]) }),
      /kid: expected a byte string/,
    ],
    ["an empty x5chain array", () => craftSign1({ unprotected: new Map([[33, []]]) }), /x5chain/],
    [
      "a text alg-like label value",
      () => craftSign1({ protectedHeader: new Map([[1, "ES256"]]) }),
      /unsupported algorithm ES256/,
    ],
  ])("refuses %s", async (_name, build, reason) => {
    const bytes = build();
    await expect(verify1(bytes)).rejects.toBeInstanceOf(IntegrityError);
    await expect(verify1(bytes)).rejects.toThrow(reason);
  });

  it("accepts an untagged message only when asked to, and a critical header it understands", async () => {
    await expect(verify1(craftSign1({ tag: null }), true)).resolves.toMatchObject({ payload });
    const crit = craftSign1({
      protectedHeader: new Map<number, unknown>([
        [1, -7],
        [2, [4]],
        [4, new Uint8Array([7])],
      ]),
    });
    await expect(verify1(crit)).resolves.toMatchObject({ signer: { kid: new Uint8Array([7]) } });
  });
});

describe("strict CBOR", () => {
  const decode = (bytes: Uint8Array, allowTopLevelTag = false) =>
    decodeCborStrict(bytes, { what: "test", maxBytes: 1000, allowTopLevelTag });

  it("round-trips plain values, including integers beyond 32 bits", () => {
    const value = fc.letrec((tie) => ({
      item: fc.oneof(
        { depthSize: "small" },
        fc.integer(),
        fc.maxSafeNat().map(cborUint),
        fc.string(),
        fc.boolean(),
        fc.constant(null),
        fc.array(tie("item"), { maxLength: 4 }),
        fc
          .uniqueArray(fc.tuple(fc.oneof(fc.integer({ min: -100, max: 100 }), fc.string()), tie("item")), {
            selector: ([k]) => k,
            maxLength: 4,
          })
          .map((entries) => new Map(entries)),
      ),
    })).item;
    fc.assert(
      fc.property(value, (v) => {
        const decoded = decodeCborStrict(encodeCbor(v), { what: "t", maxBytes: 1e6 }).value;
        const normalize = (x: unknown): unknown =>
          typeof x === "bigint"
            ? Number(x)
            : x instanceof Map
              ? new Map([...x].map(([k, y]) => [k, normalize(y)]))
              : Array.isArray(x)
                ? x.map(normalize)
                : x;
        expect(decoded).toEqual(normalize(v));
      }),
    );
    expect(decode(encodeCbor(cborUint(2 ** 53 - 1))).value).toBe(2 ** 53 - 1);
    expect(encodeCbor(cborUint(2 ** 32))).toEqual(hex("1b 00000001 00000000"));
  });

  it.each([
    ["indefinite-length array", "9f 01 ff", /indefinite/],
    ["indefinite-length bstr", "5f 41 00 ff", /indefinite/],
    ["non-shortest integer", "18 05", /shortest/],
    ["non-shortest length", "59 0001 00", /shortest/],
    ["a float", "f9 3c00", /floating-point/],
    ["undefined", "f7", /simple values/],
    ["a simple value", "e0", /simple values/],
    ["a tag inside", "81 c1 00", /tags are not accepted/],
    ["a top-level tag when none is allowed", "c1 00", /tags are not accepted/],
    ["trailing bytes", "01 02", /after the CBOR item/],
    ["invalid UTF-8", "62 c3 28", /UTF-8/],
    ["a byte-string map key", "a1 41 00 00", /integers or text/],
    ["a duplicate text key", "a2 61 61 00 61 61 01", /duplicate map key/],
    ["an integer beyond 2^53", "1b 0020000000000000", /beyond 2\^53/],
    ["a negative integer beyond -(2^53-1)", "3b 001fffffffffffff", /negative integer/],
    ["a reserved additional-information value", "1c", /reserved/],
    ["truncated input", "19 01", /truncated/],
    ["a 4 GB byte string header", "5a ffffffff 00", /runs past the end/],
    ["a 2^32-element array header", "9b 0000000100000000 00", /runs past the end/],
    ["a 2^32-1-element array header", "9a ffffffff 00", /runs past the end/],
    ["a 2^31-entry map header", "ba 80000000 00", /runs past the end/],
    ["deep nesting", `${"81".repeat(40)}00`, /nested too deeply/],
    ["nested tags", "d8 62 d8 62 00", /nested tags/],
    ["empty input", "", /empty/],
  ])("refuses %s, at once", (_name, input, reason) => {
    const started = performance.now();
    const bytes = hex(input);
    expect(() => decode(bytes, _name.startsWith("nested tags"))).toThrow(MalformedError);
    expect(() => decode(bytes, _name.startsWith("nested tags"))).toThrow(reason);
    expect(performance.now() - started).toBeLessThan(50);
  });

  it("refuses input above its size limit before parsing", () => {
    expect(() => decodeCborStrict(new Uint8Array(1001), { what: "t", maxBytes: 1000 })).toThrow(
      /exceeds the 1000-byte limit/,
    );
  });
});

describe("hostile bytes", () => {
  it("random bytes never make a COSE decoder throw anything but a typed error", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        for (const attempt of [
          () => verifyCoseSign(bytes, { keyFor: byChain, allowUntagged: true }),
          () => verifyCoseSign1(bytes, { keyFor: byChain, allowUntagged: true }),
          () => coseSignToBeSigned(bytes, { allowUntagged: true }),
          () => coseSign1ToBeSigned(bytes, { allowUntagged: true }),
        ]) {
          try {
            await attempt();
          } catch (e) {
            expect(isOnboardError(e), String(e)).toBe(true);
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("a signed message with any one byte changed is refused with a typed error", async () => {
    const bytes = await signCoseSign(payload, [alice.signer], { contentType: 1 });
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: bytes.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (at, delta) => {
          const changed = new Uint8Array(bytes);
          changed[at] = (changed[at]! + delta) & 0xff;
          await expect(verifyCoseSign(changed, { keyFor: byChain })).rejects.toBeInstanceOf(IntegrityError);
        },
      ),
      { numRuns: 500 },
    );
  });
});
