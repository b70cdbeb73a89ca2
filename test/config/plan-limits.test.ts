/**
 * The cheap scans that run before a plan is parsed (src/config/plan-limits.ts), over untrusted text:
 * the JSON value bound is never below the true count, the duplicate-key finder agrees with a decoded
 * comparison, and none of them throws or recurses on any input.
 */
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  csvLineCount,
  firstDuplicateJsonKey,
  jsonValueBound,
  yamlWithinTokenLimit,
} from "../../src/config/plan-limits.js";

function countValues(value: unknown): number {
  if (Array.isArray(value)) return 1 + value.reduce((n: number, v) => n + countValues(v), 0);
  if (value !== null && typeof value === "object")
    return 1 + Object.values(value).reduce((n: number, v) => n + countValues(v), 0);
  return 1;
}

describe("plan limit scans (property-based)", () => {
  test("jsonValueBound is an upper bound on the values of any JSON text", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.boolean(), (value, pretty) => {
        const text = JSON.stringify(value, null, pretty ? 2 : undefined);
        expect(jsonValueBound(text)).toBeGreaterThanOrEqual(countValues(value));
      }),
      { numRuns: 300 },
    );
  });

  test("firstDuplicateJsonKey: none in JSON.stringify output; a key added twice (any escaping) is found", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), fc.jsonValue(), fc.boolean(), (value, key, other, escaped) => {
        expect(firstDuplicateJsonKey(JSON.stringify(value))).toBeUndefined();
        const first = JSON.stringify(key);
        const second = escaped
          ? `"${[...key].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("")}"`
          : first;
        const text = `{"wrap":[${JSON.stringify(value)},{${first}:${JSON.stringify(other)},${second}:1}]}`;
        JSON.parse(text); // valid JSON
        expect(firstDuplicateJsonKey(text)).toEqual({ key, path: ".wrap[1]" });
      }),
      { numRuns: 300 },
    );
  });

  test("no scan throws on arbitrary text, and deep nesting costs no stack", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (text) => {
        jsonValueBound(text);
        yamlWithinTokenLimit(text, 50);
        csvLineCount(text, 10);
        try {
          JSON.parse(text);
        } catch {
          return; // the duplicate scan runs on valid JSON only
        }
        firstDuplicateJsonKey(text);
      }),
      { numRuns: 500 },
    );
    const deep = `${"[".repeat(200_000)}{"a":1,"a":2}${"]".repeat(200_000)}`;
    expect(firstDuplicateJsonKey(deep)?.key).toBe("a");
  });

  test("the YAML token count stops at its limit", () => {
    expect(yamlWithinTokenLimit("a: [1, 2, 3]\n", 100)).toBe(true);
    expect(yamlWithinTokenLimit("- 1\n".repeat(1000), 100)).toBe(false);
    expect(csvLineCount("h\n1\n2\n", 10)).toBe(3);
    expect(csvLineCount("h\n1\n2", 10)).toBe(3);
  });
});
