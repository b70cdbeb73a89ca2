#!/usr/bin/env node
// `npm run fuzz`: the decoder fuzz suite (test/security/fuzz.test.ts) with many more runs than CI
// gives it. FUZZ_RUNS sets the runs per decoder (default 5,000: a few minutes); FUZZ_SEED replays a
// failure that fast-check reported. Extra arguments go to vitest (e.g. `-t manifest` for one decoder).
//
//   npm run fuzz
//   FUZZ_RUNS=50000 npm run fuzz -- -t "shard"
//   FUZZ_SEED=1379682647 FUZZ_RUNS=200 npm run fuzz
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const runs = process.env.FUZZ_RUNS ?? "5000";
if (!/^[1-9]\d*$/.test(runs)) {
  process.stderr.write(`fuzz: FUZZ_RUNS must be a positive whole number, got "${runs}"\n`);
  process.exit(2);
}
const vitest = join(
  dirname(createRequire(join(root, "package.json")).resolve("vitest/package.json")),
  "vitest.mjs",
);
const result = spawnSync(
  process.execPath,
  [
    vitest,
    "run",
    "test/security/fuzz.test.ts",
    // One decoder may take minutes at high run counts.
    "--testTimeout",
    String(Math.max(30_000, Number(runs) * 60)),
    ...process.argv.slice(2),
  ],
  { cwd: root, stdio: "inherit", env: { ...process.env, FUZZ_RUNS: runs } },
);
process.exit(result.status ?? 1);
