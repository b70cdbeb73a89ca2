// A clone alone passes its own tests: no source, test or script reads files outside the repository
// (the team's shared folder is not beside every clone). Test vectors live under test/vectors/.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

// Built from parts so this file does not match itself.
const FORBIDDEN = [
  ["..", "shared"].join("/"),
  ["", "shared", "vectors"].join("/"),
  ["HSM_ONBOARD", "VECTORS_DIR"].join("_"),
];

function* codeFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      if (name !== "node_modules") yield* codeFiles(path);
    } else if (/\.(ts|mts|js|mjs|cjs|sh)$/.test(name)) yield path;
  }
}

describe("the repository is self-contained", () => {
  it("no file under src/, test/, scripts/ or bench/ refers to the team's shared folder", () => {
    const offenders: string[] = [];
    let scanned = 0;
    for (const top of ["src", "test", "scripts", "bench"]) {
      for (const file of codeFiles(join(root, top))) {
        scanned++;
        const text = readFileSync(file, "utf8");
        for (const needle of FORBIDDEN)
          if (text.includes(needle)) offenders.push(`${relative(root, file)}: ${needle}`);
      }
    }
    expect(scanned).toBeGreaterThan(100);
    expect(offenders).toEqual([]);
  });

  it("the vector suites the tests read are in the repository, each with its licence", () => {
    for (const suite of ["cose-wg", "wycheproof"]) {
      expect(statSync(join(root, "test", "vectors", suite, "LICENSE")).isFile()).toBe(true);
    }
    const readme = readFileSync(join(root, "test", "vectors", "README.md"), "utf8");
    expect(readme).toMatch(/cose-wg\/Examples/);
    expect(readme).toMatch(/google\/wycheproof/);
  });
});
