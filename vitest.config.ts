import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/setup.ts"],
    globalSetup: ["test/global-setup.ts"],
    // A bound for hangs, not a speed check (speed is measured by `npm run bench`): on the 2-core CI
    // machine with three files at once, in-process loops over every card command took 30 s (14 s alone).
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Most files wait on child processes, pcscd and namespaces, not on the CPU: vitest's default
    // (CPUs - 1) would run one file at a time on a 2-core CI machine. Every file already uses
    // private pcscd instances, free ports and per-process namespace names, so files run side by side.
    maxWorkers: 3,
  },
});
