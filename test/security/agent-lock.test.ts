/**
 * Issue 10 finding 5: two agents could both take the state lock (O_EXCL, then the PID in a separate
 * write — a reader in between saw an empty lock and took it as stale —, and stale-lock removal raced).
 * Here 6 separate Node processes fight over one state directory's lock, each taking it 12 times and
 * recording "enter"/"leave" in a shared append-only journal while it holds it; every process "crashes"
 * (exits holding the lock) on its last round, so stale locks are broken again and again under
 * contention. The journal must never show two holders at once.
 */
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createTestPki, initAgent, tempDir } from "../agent/fixtures.js";
import { buildForChildren, type PrivateBuild } from "../helpers/pcsc-env.js";

const CHILD = `
import { appendFileSync } from "node:fs";
const { AgentStateStore } = await import(process.env.STORE_URL);
const [dir, journal, rounds] = process.argv.slice(2);
const store = await AgentStateStore.open(dir);
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
let held = 0;
for (let round = 0; round < Number(rounds); ) {
  let release;
  try {
    release = await store.lock();
  } catch (error) {
    if (!/another agent|stale lock|cannot take/.test(String(error.message))) throw error;
    await pause(Math.random() * 3);
    continue;
  }
  appendFileSync(journal, \`enter \${process.pid}\\n\`);
  await pause(1 + Math.random() * 2);
  appendFileSync(journal, \`leave \${process.pid}\\n\`);
  round++;
  held++;
  if (round === Number(rounds)) process.exit(0); // "crash" holding the lock: it is stale now
  await release();
}
`;

describe("the agent's state lock under contention (separate processes)", () => {
  let base: { dir: string; cleanup: () => Promise<void> };
  let build: PrivateBuild;
  let stateDir: string;
  beforeAll(async () => {
    base = await tempDir("hsm-security-lock-");
    build = await buildForChildren(["agent/state-store.js"]);
    await writeFile(join(build.dir, "lock-child.mjs"), CHILD);
    const pki = await createTestPki(base.dir);
    ({ stateDir } = await initAgent(base.dir, pki, { name: "lock" }));
  }, 120_000);
  afterAll(async () => {
    await build?.cleanup();
    await base?.cleanup();
  });

  test("6 processes × 12 rounds, each ending in a crash with the lock held: never two holders at once", async () => {
    const journal = join(base.dir, "journal");
    await writeFile(journal, "");
    const children = Array.from({ length: 6 }, () =>
      spawn(process.execPath, [join(build.dir, "lock-child.mjs"), stateDir, journal, "12"], {
        env: { ...process.env, STORE_URL: build.url("agent/state-store.js") },
        stdio: ["ignore", "ignore", "pipe"],
      }),
    );
    const results = await Promise.all(
      children.map(
        (child) =>
          new Promise<{ code: number | null; stderr: string }>((resolve) => {
            let stderr = "";
            child.stderr.setEncoding("utf8").on("data", (s: string) => {
              stderr += s;
            });
            const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
            child.once("exit", (code) => {
              clearTimeout(timer);
              resolve({ code, stderr });
            });
          }),
      ),
    );
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const lines = (await readFile(journal, "utf8")).trim().split("\n");
    expect(lines).toHaveLength(6 * 12 * 2);
    let holder: string | undefined;
    for (const [i, line] of lines.entries()) {
      const [what, pid] = line.split(" ");
      if (what === "enter") {
        expect(holder, `line ${i + 1}: ${pid} entered while ${holder} held the lock`).toBeUndefined();
        holder = pid;
      } else {
        expect(pid, `line ${i + 1}`).toBe(holder);
        holder = undefined;
      }
    }
  }, 120_000);
});
