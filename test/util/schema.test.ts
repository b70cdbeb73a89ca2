import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as zod from "zod";
import * as mini from "../../src/util/schema.js";

/**
 * One schema definition, built with zod and with src/util/schema.ts: every feature the agent's
 * files use (objects with optional keys, nested arrays, records, literals, enums, unions, nullable,
 * integer and string refinements). The two must accept the same values and give the same data.
 */
// biome-ignore lint/suspicious/noExplicitAny: the same builder runs over both libraries
function build(z: any) {
  const hex = z.string().regex(/^[0-9a-f]{4}$/);
  return z.object({
    format: z.literal("fmt"),
    version: z.literal(1),
    serial: z.string().min(1),
    even: z
      .string()
      .regex(/^[0-9a-f]*$/, "hex")
      .refine((v: string) => v.length % 2 === 0, "whole bytes")
      .optional(),
    channel: z.string().max(3).optional(),
    stage: z.enum(["a", "b"]),
    family: z.union([z.literal(4), z.literal(6)]),
    count: z.int().nonnegative(),
    byte: z.number().int().min(0).max(255).optional(),
    ratio: z.number().optional(),
    port: z.int().min(1).max(10).optional(),
    positive: z.int().positive().optional(),
    flag: z.boolean().optional(),
    list: z.array(z.object({ name: z.string(), id: hex.optional() })),
    map: z.record(z.string(), z.string().regex(/^\d+$/)).optional(),
    files: z.record(z.string(), z.string().nullable()).optional(),
    nested: z.object({ seq: z.int(), hash: hex }).optional(),
  });
}

const ours = build(mini);
const theirs = build(zod);

const near = fc.oneof(
  fc.constantFrom("fmt", "a", "b", "c", "", "12", "1x", "abcd", "ABCD", "abc", "0a1f", "x"),
  fc.constantFrom(0, 1, -1, 4, 6, 10, 11, 1.5, 255, 256, 2 ** 53, -(2 ** 53), 1e300),
  fc.constantFrom(true, false, null),
);
const valueArb = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    near,
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom("name", "id", "seq", "hash", "k"), tie("value"), {
      maxKeys: 3,
    }),
  ),
})).value;

/** Valid documents, then (mostly) one or two fields replaced by near-misses; as JSON gives them. */
const document = fc
  .record({
    format: fc.constant("fmt"),
    version: fc.constant(1),
    serial: fc.constantFrom("s1", "x"),
    even: fc.option(fc.constantFrom("", "0a", "0a1f", "abc", "zz"), { nil: undefined }),
    channel: fc.option(fc.constantFrom("ab", "abc"), { nil: undefined }),
    stage: fc.constantFrom("a", "b"),
    family: fc.constantFrom(4, 6),
    count: fc.nat(),
    byte: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    ratio: fc.option(fc.double({ noNaN: true, noDefaultInfinity: true }), { nil: undefined }),
    port: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
    positive: fc.option(fc.integer({ min: 1, max: 2 }), { nil: undefined }),
    flag: fc.option(fc.boolean(), { nil: undefined }),
    list: fc.array(
      fc.record({ name: fc.constantFrom("eth0"), id: fc.option(fc.constant("0a1f"), { nil: undefined }) }),
      {
        maxLength: 3,
      },
    ),
    map: fc.option(fc.dictionary(fc.string({ maxLength: 3 }), fc.constantFrom("12", "0")), {
      nil: undefined,
    }),
    files: fc.option(fc.dictionary(fc.string({ maxLength: 3 }), fc.constantFrom("text", null)), {
      nil: undefined,
    }),
    nested: fc.option(fc.record({ seq: fc.integer(), hash: fc.constant("0a1f") }), { nil: undefined }),
    extra: fc.option(valueArb, { nil: undefined }),
  })
  .chain((doc) => {
    const keys = [...Object.keys(doc), "extra2"];
    const replacement = fc.tuple(fc.constantFrom(...keys), fc.oneof(near, valueArb, fc.constant(undefined)));
    return fc.array(replacement, { maxLength: 2 }).map((changes) => {
      const changed: Record<string, unknown> = { ...doc };
      for (const [key, value] of changes) changed[key] = value;
      return changed;
    });
  })
  .map((doc) => JSON.parse(JSON.stringify(doc)) as unknown);

describe("src/util/schema.ts (the agent's validator) against zod", () => {
  it("accepts exactly what zod accepts and returns the same data (unknown keys dropped)", () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.oneof(document, valueArb), (value) => {
        const a = ours.safeParse(value);
        const b = theirs.safeParse(value);
        expect(a.success).toBe(b.success);
        if (a.success && b.success) {
          expect(a.data).toEqual(b.data);
          accepted++;
        } else {
          refused++;
          if (!a.success) expect(a.error.issues.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 3000 },
    );
    expect(accepted).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
  });

  // The one deliberate difference: zod 4 passes over a `__proto__` key of a record without checking
  // it; here it is checked and kept as a plain key. (So `__proto__` is left out of the values above.)
  it("parse throws naming the path of the first problem; a __proto__ key stays data", () => {
    expect(() => mini.object({ a: mini.array(mini.int()) }).parse({ a: [1, "x"] })).toThrow(
      /^a\.1: expected an integer/,
    );
    const record = mini.record(mini.string(), mini.string()).parse(JSON.parse('{"__proto__": "x"}'));
    expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
    expect(Object.keys(record)).toEqual(["__proto__"]);
    expect(mini.record(mini.string(), mini.string()).safeParse(JSON.parse('{"__proto__": 1}')).success).toBe(
      false,
    );
  });
});
