#!/usr/bin/env node
// `npm run bench`: compiles src/ and bench/ with the project's TypeScript (tsconfig.bench.json) into
// a private temporary directory — not dist/, which other runs may be writing — runs bench/run.js
// there, and removes the directory. The compiled tree gets "type": "module" and a node_modules
// symlink to the project's, like the e2e tests' private builds (docs/TESTBED-NOTES.md).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const out = mkdtempSync(join(tmpdir(), "hsm-onboard-bench-build-"));
const cleanup = () => rmSync(out, { recursive: true, force: true });

const tsc = spawnSync("npx", ["tsc", "-p", join(root, "tsconfig.bench.json"), "--outDir", out], {
  cwd: root,
  stdio: "inherit",
});
if (tsc.status !== 0) {
  // tsc still emits every file it can: type errors in a file being edited elsewhere in the tree
  // should not stop a benchmark of the rest. Without the entry point there is nothing to run.
  if (!existsSync(join(out, "bench", "run.js"))) {
    cleanup();
    process.stderr.write(`bench: compiling failed (tsc exit ${tsc.status ?? tsc.signal})\n`);
    process.exit(1);
  }
  process.stderr.write("bench: WARNING: type errors above; running the code as compiled\n");
}
writeFileSync(join(out, "package.json"), '{ "type": "module" }\n');
symlinkSync(join(root, "node_modules"), join(out, "node_modules"), "dir");

const child = spawn(process.execPath, [join(out, "bench", "run.js"), ...process.argv.slice(2)], {
  cwd: root,
  stdio: "inherit",
  // The benchmark stations' sequence marks (src/station/sequence-mark.ts) go with the build, not into
  // the home directory of whoever runs the benchmark.
  env: { ...process.env, HSM_ONBOARD_BENCH_ROOT: root, HSM_ONBOARD_STATE_HOME: join(out, "state") },
});
// Ctrl-C reaches the child through the terminal; wait for it to clean up, then remove the build.
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
child.on("close", (code, signal) => {
  cleanup();
  process.exit(code ?? (signal ? 128 + 15 : 1));
});
