// Property-based tests of the two SCP11a decoders of untrusted card bytes, beyond arbitrary bytes
// (test/apdu/scp11/properties.test.ts, oce-ca.test.ts): TLV sequences built from the tags each
// decoder expects, with lengths around the limits, and mutations of genuine answers.
// - GET DATA FF33 (decodeOceCaIdentifiers, readOceCaIdentifiers): a list is accepted exactly when it
//   is `42 <1..32> 83 <2>` pairs, at most 16; everything else is ScpMalformedError; a status word
//   other than 9000/6A88/6A82 is ScpUnavailableError. Nothing else is ever thrown.
// - the MUTUAL AUTHENTICATE answer (decodeAuthenticateResponse, completeHostHandshake with the
//   station's static OCE key): accepted exactly when it is `5F49 <65> 86 <16>`; a genuine SCP11a
//   answer with any byte changed, cut or extended is refused with ScpMalformedError or
//   ScpIntegrityError (exit 15), never accepted, never another error.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SmartCardProtocol } from "../../../src/apdu/chaining.js";
import {
  cardHandshake,
  completeHostHandshake,
  decodeAuthenticateResponse,
  decodeOceCaIdentifiers,
  encodeAuthenticateData,
  generateP256,
  MAX_OCE_CA_IDENTIFIERS,
  p256Point,
  readOceCaIdentifiers,
  ScpIntegrityError,
  ScpMalformedError,
} from "../../../src/apdu/scp11/index.js";
import { encodeTlv } from "../../../src/apdu/tlv.js";
import { ExitCode, type OnboardError, ScpUnavailableError } from "../../../src/errors.js";
import { fixedAnswerTransport } from "../../helpers/fixed-answer-transport.js";

/** Tags no SCP11a answer expects, of every form (1, 2, 3 bytes; primitive and constructed). */
const STRAY_TAGS = fc.constantFrom(
  0x01,
  0x04,
  0x30,
  0x41,
  0x43,
  0x53,
  0x80,
  0x82,
  0x84,
  0x85,
  0x87,
  0xa6,
  0x5f48,
  0x7f49,
  0xbf21,
);

/**
 * One TLV: its tag mostly `tag` (else a stray one), its value length mostly one of `lengths` (the
 * decoder's limits and their neighbours), else anything up to `max`.
 */
const tlv = (tag: number, lengths: readonly number[], max: number) =>
  fc
    .record({
      tag: fc.oneof({ weight: 9, arbitrary: fc.constant(tag) }, { weight: 1, arbitrary: STRAY_TAGS }),
      length: fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(...lengths) },
        { weight: 1, arbitrary: fc.nat(max) },
      ),
      fill: fc.nat(0xff),
    })
    .map(({ tag, length, fill }) => {
      const value = new Uint8Array(length).fill(fill);
      return { tag, value, bytes: encodeTlv(tag, value) };
    });

/** A genuine answer changed: one byte xor'ed, cut at a point, or bytes inserted. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), by: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;
function mutate(genuine: Uint8Array, m: Mutation): Uint8Array {
  const at = m.at % genuine.length;
  if (m.kind === "flip") {
    const out = genuine.slice();
    out[at]! ^= m.by;
    return out;
  }
  if (m.kind === "cut") return genuine.slice(0, at);
  return Uint8Array.from([...genuine.subarray(0, at), ...m.bytes, ...genuine.subarray(at)]);
}

function typedOnly(f: () => unknown, ...types: (abstract new (...a: never[]) => Error)[]): unknown {
  try {
    return f();
  } catch (e) {
    expect(
      types.some((t) => e instanceof t),
      String(e),
    ).toBe(true);
    expect((e as OnboardError).exitCode).toBeDefined();
    return e;
  }
}

describe("GET DATA FF33 (the card's OCE CA identifiers)", () => {
  it("42/83 pairs (stray tags, lengths at the limits, up to 18 pairs, a lone 42 after them): accepted exactly when they are ≤ 16 well-formed pairs", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(tlv(0x42, [0, 1, 20, 32, 33], 40), tlv(0x83, [1, 2, 3], 4)), {
          maxLength: MAX_OCE_CA_IDENTIFIERS + 2,
        }),
        fc.option(tlv(0x42, [1, 20], 40)),
        (pairs, extra) => {
          const items = [...pairs.flat(), ...(extra ? [extra] : [])];
          const bytes = Uint8Array.from(items.flatMap((i) => [...i.bytes]));
          const wellFormed =
            items.length % 2 === 0 &&
            items.length <= 2 * MAX_OCE_CA_IDENTIFIERS &&
            items.every((i, n) =>
              n % 2 === 0
                ? i.tag === 0x42 && i.value.length >= 1 && i.value.length <= 32
                : i.tag === 0x83 && i.value.length === 2,
            );
          const out = typedOnly(() => decodeOceCaIdentifiers(bytes), ScpMalformedError);
          if (wellFormed) {
            expect(Array.isArray(out)).toBe(true);
            expect((out as unknown[]).length).toBe(items.length / 2);
          } else {
            expect(out).toBeInstanceOf(ScpMalformedError);
            expect((out as OnboardError).exitCode).toBe(ExitCode.integrity);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("a genuine list with a byte changed, cut or extended: the same list, another well-formed list, or ScpMalformedError", () => {
    const genuine = Uint8Array.from([
      ...encodeTlv(0x42, new Uint8Array(20).fill(0x5a)),
      ...encodeTlv(0x83, Uint8Array.of(0x10, 0x01)),
      ...encodeTlv(0x42, new Uint8Array(32).fill(0x33)),
      ...encodeTlv(0x83, Uint8Array.of(0x10, 0x02)),
    ]);
    fc.assert(
      fc.property(mutation, (m) => {
        const out = typedOnly(() => decodeOceCaIdentifiers(mutate(genuine, m)), ScpMalformedError);
        if (Array.isArray(out)) {
          for (const id of out) {
            expect(id.ski.length).toBeGreaterThanOrEqual(1);
            expect(id.ski.length).toBeLessThanOrEqual(32);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("readOceCaIdentifiers on any answer: a list, [] (6A88/6A82), ScpMalformedError or ScpUnavailableError; one APDU", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 80 }),
        fc.constantFrom(0x9000, 0x6a88, 0x6a82, 0x6f00, 0x6982, 0x6985, 0x6d00, 0x6283),
        async (data, sw) => {
          const { transport, sent } = fixedAnswerTransport(data, sw);
          const out = await readOceCaIdentifiers(new SmartCardProtocol(transport)).catch((e: unknown) => e);
          expect(sent).toHaveLength(1);
          if (sw === 0x6a88 || sw === 0x6a82) expect(out).toEqual([]);
          else if (sw !== 0x9000) {
            expect(out).toBeInstanceOf(ScpUnavailableError);
            expect((out as OnboardError).exitCode).toBe(ExitCode.cardNotTrusted);
          } else if (!Array.isArray(out)) expect(out).toBeInstanceOf(ScpMalformedError);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("the MUTUAL AUTHENTICATE answer (5F49 ePK.SD ‖ 86 receipt)", () => {
  it("5F49/86 in every order and count (stray tags, lengths at the limits): decoded exactly when 5F49 <65> then 86 <16>", () => {
    fc.assert(
      fc.property(
        tlv(0x5f49, [0, 1, 64, 65, 66], 80),
        tlv(0x86, [0, 8, 15, 16, 17], 40),
        fc.constantFrom("in order", "swapped", "point only", "receipt only", "receipt twice", "extra"),
        (point, receipt, shape) => {
          const items =
            shape === "in order"
              ? [point, receipt]
              : shape === "swapped"
                ? [receipt, point]
                : shape === "point only"
                  ? [point]
                  : shape === "receipt only"
                    ? [receipt]
                    : shape === "receipt twice"
                      ? [point, receipt, receipt]
                      : [point, receipt, point];
          const bytes = Uint8Array.from(items.flatMap((i) => [...i.bytes]));
          const wellFormed =
            items.length === 2 &&
            items[0]!.tag === 0x5f49 &&
            items[0]!.value.length === 65 &&
            items[1]!.tag === 0x86 &&
            items[1]!.value.length === 16;
          const out = typedOnly(() => decodeAuthenticateResponse(bytes), ScpMalformedError);
          if (wellFormed) expect(out).not.toBeInstanceOf(Error);
          else expect(out).toBeInstanceOf(ScpMalformedError);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("a genuine SCP11a answer with a byte changed, cut or extended is never accepted: ScpMalformedError or ScpIntegrityError only", () => {
    const skSd = generateP256();
    const skOce = generateP256();
    const eSkOce = generateP256();
    const authData = encodeAuthenticateData("a", p256Point(eSkOce));
    const card = cardHandshake({ authData, skSd, pkOce: p256Point(skOce) });
    const host = (answer: Uint8Array) =>
      completeHostHandshake({ authData, answer, eSkOce, skOce, pkSd: p256Point(skSd) });
    // The genuine answer opens the session with the card's keys.
    expect(Buffer.from(host(card.answer).keys.sMac).equals(Buffer.from(card.keys.sMac))).toBe(true);
    fc.assert(
      fc.property(mutation, (m) => {
        const changed = mutate(card.answer, m);
        if (Buffer.from(changed).equals(Buffer.from(card.answer))) return;
        const out = typedOnly(() => host(changed), ScpMalformedError, ScpIntegrityError);
        expect(out).toBeInstanceOf(Error);
        expect((out as OnboardError).exitCode).toBe(ExitCode.integrity);
      }),
      { numRuns: 300 },
    );
  });
});
