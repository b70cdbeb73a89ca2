/**
 * The agent's path loads no X.509 object library (issue 9, "The PKI fast path"; docs/PKI.md): from
 * every module under src/agent, following every import that can load code — static imports,
 * re-exports and dynamic `import("…")`, type-only imports excepted — no module reached imports
 * @peculiar/x509 or the ASN.1 libraries under it. A failure prints the chain that reaches one.
 *
 * Source-level and conservative: `import { X }` counts even where TypeScript would elide it (write
 * `import type` for types), and a dynamic import counts whether or not it runs.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");

/** Packages the agent must never load: @peculiar/x509 and what it is built on. */
const FORBIDDEN = [/^@peculiar\//, /^asn1js$/, /^pkijs$/, /^tsyringe$/, /^reflect-metadata$/];

/**
 * cbor-x's main entry, which also loads its optional native string extractor (cbor-extract: C++ that
 * reads a card's untrusted bytes); src/config/cbor.ts takes the plain JavaScript codec from
 * `cbor-x/decode` and `cbor-x/encode`.
 */
const NATIVE_CBOR = [/^cbor-x$/, /^cbor-extract$/];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** Strips comments, so an import written in a comment does not count. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
}

/** Every specifier a module can load: `import … from`, `export … from`, `import "…"`, `import("…")`. */
function loadedSpecifiers(text: string): string[] {
  const src = code(text);
  const out: string[] = [];
  const statement = /\b(import|export)\s+(type\s+)?([^;'"]*?)\s*from\s*["']([^"']+)["']/g;
  for (const m of src.matchAll(statement)) {
    if (m[2]) continue; // import type … / export type …
    const clause = m[3]!.trim();
    // `import { type A, type B } from` loads nothing either (TypeScript drops it).
    const braces = /^\{([^}]*)\}$/.exec(clause);
    if (braces && braces[1]!.split(",").every((s) => s.trim() === "" || /^type\s/.test(s.trim()))) continue;
    out.push(m[4]!);
  }
  for (const m of src.matchAll(/\bimport\s*["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of src.matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]!);
  return out;
}

/** The module graph from `roots`: for each forbidden package reached, one chain of files to it. */
function reach(roots: readonly string[], forbidden: readonly RegExp[] = FORBIDDEN): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const parent = new Map<string, string | undefined>();
  const queue: string[] = [];
  for (const r of roots) {
    parent.set(r, undefined);
    queue.push(r);
  }
  const chain = (file: string): string[] => {
    const out: string[] = [];
    for (let f: string | undefined = file; f !== undefined; f = parent.get(f)) out.unshift(relative(SRC, f));
    return out;
  };
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const spec of loadedSpecifiers(readFileSync(file, "utf8"))) {
      if (spec.startsWith(".")) {
        const target = resolve(dirname(file), spec.replace(/\.js$/, ".ts"));
        if (!parent.has(target)) {
          parent.set(target, file);
          queue.push(target);
        }
      } else if (forbidden.some((re) => re.test(spec)) && !found.has(spec)) {
        found.set(spec, [...chain(file), spec]);
      }
    }
  }
  return found;
}

describe("the agent's import graph", () => {
  const agentModules = sourceFiles(join(SRC, "agent"));

  it("reaches no X.509 or ASN.1 object library (@peculiar/x509, asn1js, …)", () => {
    expect(agentModules.length).toBeGreaterThan(5);
    const found = reach(agentModules);
    expect(
      [...found.values()].map((c) => c.join(" → ")),
      "the agent must validate with src/pki/path-validation.ts (node:crypto only)",
    ).toEqual([]);
  });

  it("reaches cbor-x only through its JavaScript entries (no native extractor)", () => {
    expect([...reach(agentModules, NATIVE_CBOR).values()].map((c) => c.join(" → "))).toEqual([]);
    // …and those entries really leave the extractor out, while the main entry would load it here.
    const probe = (specifier: string) =>
      spawnSync(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `const m = await import("${specifier}"); console.log(m.isNativeAccelerationEnabled)`,
        ],
        { cwd: resolve(SRC, ".."), encoding: "utf8" },
      ).stdout.trim();
    expect(probe("cbor-x/decode")).toBe("false");
    expect(probe("cbor-x")).toBe("true");
  });

  it("the walker sees what it must: the station's graph does reach @peculiar/x509", () => {
    // A check that could never fail proves nothing: the same walk from the station finds the library.
    const found = reach(sourceFiles(join(SRC, "station")));
    expect(found.get("@peculiar/x509")?.length).toBeGreaterThan(1);
  });

  it("reads every form of import and ignores type-only ones", () => {
    const sample = [
      'import { a } from "./a.js";',
      'import type { B } from "./b.js";',
      'import { type C, type D } from "./c.js";',
      'import { type E, f } from "./e.js";',
      'export { g } from "./g.js";',
      'export type { H } from "./h.js";',
      'import "./side-effect.js";',
      'const x = await import("./lazy.js");',
      '// import { z } from "./commented.js";',
      "/* import { y } from './block.js'; */",
    ].join("\n");
    expect(loadedSpecifiers(sample).sort()).toEqual(
      ["./a.js", "./e.js", "./g.js", "./lazy.js", "./side-effect.js"].sort(),
    );
  });
});
