/**
 * One error hierarchy in one place (issue 9): every error class of src/ is declared in src/errors.ts
 * and derives from OnboardError there; every `code` is a literal of OnboardErrorCode (the compiler
 * checks that); every class has an exit code of SPEC.md §7's table.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import * as errors from "../../src/errors.js";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

describe("the error hierarchy", () => {
  it("declares every class that extends an error in src/errors.ts only", () => {
    const elsewhere: string[] = [];
    for (const file of sources(SRC)) {
      if (relative(SRC, file) === "errors.ts") continue;
      const text = readFileSync(file, "utf8");
      for (const match of text.matchAll(/class\s+(\w+)\s+extends\s+(\w*Error)\b/g)) {
        elsewhere.push(`${relative(SRC, file)}: ${match[1]} extends ${match[2]}`);
      }
    }
    expect(elsewhere).toEqual([]);
  });

  it("derives every exported error class from OnboardError, with a code and a documented exit code", () => {
    const exitCodes = new Set<number>(Object.values(errors.ExitCode));
    const classes = (Object.entries(errors) as [string, unknown][]).filter(
      (entry): entry is [string, { prototype: unknown }] =>
        typeof entry[1] === "function" && (entry[1] as { prototype: unknown }).prototype instanceof Error,
    );
    expect(classes.length).toBeGreaterThan(40);
    for (const [name, value] of classes) {
      expect(value === errors.OnboardError || value.prototype instanceof errors.OnboardError, name).toBe(
        true,
      );
    }
    // One instance of a few with constructors of their own, to read code and exit code.
    const samples: errors.OnboardError[] = [
      new errors.UnknownStatusError(0x6f00),
      new errors.ApduError(0x6a82),
      new errors.RackError("interrupted", errors.ExitCode.interrupted),
      new errors.PcscError("gone", "SCardEstablishContext", 0x8010001d, { serviceGone: true }),
      new errors.InternalError("bug"),
      new errors.MalformedError("bad"),
    ];
    for (const e of samples) {
      expect(e.code, e.name).toMatch(/^ERR_[A-Z0-9_]+$/);
      expect(exitCodes.has(e.exitCode), e.name).toBe(true);
    }
    expect(samples.map((e) => [e.code, e.exitCode])).toEqual([
      ["ERR_UNKNOWN_STATUS", 15],
      ["ERR_APDU", 1],
      ["ERR_RACK", 130],
      ["ERR_PCSC_NO_SERVICE", 10],
      ["ERR_INTERNAL", 1],
      ["ERR_MALFORMED", 15],
    ]);
  });

  it("InternalError.from keeps typed errors and wraps anything else as exit 1", () => {
    const typed = new errors.NoCardError("none");
    expect(errors.InternalError.from(typed)).toBe(typed);
    const wrapped = errors.InternalError.from(new TypeError("x is undefined"));
    expect(wrapped).toBeInstanceOf(errors.InternalError);
    expect([wrapped.code, wrapped.exitCode, wrapped.message]).toEqual(["ERR_INTERNAL", 1, "x is undefined"]);
  });
});
