/**
 * "Disk full when persisting state" (SPEC.md §6: state persisted atomically — write, fsync, rename).
 *
 * 1. A real full disk: `hsm-onboard agent run --once` (dry-run applier, whose record lives in the
 *    state directory too) runs in a private mount namespace on a tmpfs that holds its state
 *    directory and has only N pages free, for N from 0 up to enough. Whatever N: the run ends with a
 *    clear exit code and no stack trace; the state file on the tmpfs is a valid state — the previous
 *    one or a later complete one, never torn; and once there is room again the next start reconciles,
 *    the applier's record equals what the state says is configured, and the card configures the HSM.
 * 2. An injected ENOSPC at each persist of one onboarding, in-process (every write of the state
 *    file from the k-th on fails): the state file stays the previous valid one byte for byte, the
 *    network is rolled back to match it (or never touched), and the next start recovers.
 */
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { AgentStateStore, STATE_FILES } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { ExitCode } from "../../src/errors.js";
import { createTestPki, initAgent, LAB_PLAN, PIN, pins, type TestPki, tempDir } from "../agent/fixtures.js";
import { buildForChildren, type PrivateBuild, requireOrSkip } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "./children.js";
import { agentOnceArgs, CardTemplate, openMetered } from "./support.js";

// Injected ENOSPC: every atomic write of a file named `state.json` fails while `diskFull.from` says so.
const diskFull = vi.hoisted(() => ({ writes: 0, failFrom: Number.POSITIVE_INFINITY, last: "" }));
vi.mock("../../src/util/fs.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../src/util/fs.js")>();
  return {
    ...actual,
    atomicWriteFile: async (path: string, data: string | Uint8Array, mode?: number) => {
      if (path.endsWith("/state.json") && ++diskFull.writes >= diskFull.failFrom) {
        throw Object.assign(new Error(`ENOSPC: no space left on device, write '${path}'`), {
          code: "ENOSPC",
          errno: -28,
        });
      }
      await actual.atomicWriteFile(path, data, mode);
      if (path.endsWith("/state.json"))
        diskFull.last = typeof data === "string" ? data : Buffer.from(data).toString("utf8");
    },
  };
});

const PLAN_B: NetworkPlan = {
  ...LAB_PLAN,
  hsms: LAB_PLAN.hsms.map((h, i) =>
    i === 0 ? { ...h, interfaces: [{ ...h.interfaces[0]!, ipv4: "198.51.100.21" }] } : h,
  ),
};

let base: { dir: string; cleanup: () => Promise<void> };
let testPki: TestPki;
let crl: Uint8Array;
let cardA: CardTemplate;
let cardB: CardTemplate;

beforeAll(async () => {
  base = await tempDir("hsm-security-disk-");
  testPki = await createTestPki(base.dir);
  crl = await testPki.crl(1);
  cardA = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "a");
  await cardA.write(LAB_PLAN, { crl, sequence: 1 });
  cardB = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "b", { officer: "Bob Officer" });
  await cardB.write(PLAN_B, { crl, sequence: 2 });
});
afterAll(async () => {
  await stopChildren();
  await base?.cleanup();
});

/** An agent configured with A (sequence 1), dry-run record in its state directory. */
async function configuredWithA(name: string): Promise<string> {
  const { stateDir } = await initAgent(base.dir, testPki, { crl, name });
  const agent = await Agent.open({ stateDir, net: "dry-run" });
  try {
    await agent.start();
    const element = await openMetered(cardA.card());
    try {
      expect((await agent.onboard(element, pins(PIN))).exitCode).toBe(0);
    } finally {
      await element.close();
    }
  } finally {
    await agent.close();
  }
  return stateDir;
}

/** Starts the agent with room on the disk: reconciles; returns the state and the applier's record. */
async function restart(stateDir: string) {
  const agent = await Agent.open({ stateDir, net: "dry-run" });
  try {
    await agent.start();
  } finally {
    await agent.close();
  }
  const { state } = await AgentStateStore.open(stateDir);
  const record = JSON.parse(await readFile(join(stateDir, STATE_FILES.dryRun), "utf8"));
  return { state, record };
}

const tmpfs = requireOrSkip(
  process.getuid?.() === 0
    ? { ok: true, reason: "" }
    : { ok: false, reason: "a tmpfs in a private mount namespace needs root" },
);

describe.skipIf(!tmpfs.ok)(
  `a real full disk (tmpfs in a private mount namespace)${tmpfs.ok ? "" : ` — skipped: ${tmpfs.reason}`}`,
  () => {
    let build: PrivateBuild;
    beforeAll(async () => {
      build = await buildForChildren(["cli/main.js"]);
    }, 180_000);
    afterAll(async () => {
      await build?.cleanup();
    });

    /**
     * Copies `stateDir` onto a fresh tmpfs with `freePages` pages free, runs `agent run --once` with
     * card B on it, and copies the tmpfs back over `stateDir` (the filler left behind).
     */
    async function runOnFullDisk(stateDir: string, freePages: number, cardFile: string) {
      const mountPoint = join(base.dir, `mnt-${freePages}`);
      await mkdir(mountPoint, { recursive: true });
      // Paths come in as positional parameters (no quoting games); nothing here deletes outside the tmpfs.
      const script = [
        "set -e",
        'MNT="$1"; OUT="$2"; FREE="$3"; shift 3',
        'mount -t tmpfs -o size=2m,mode=0700 tmpfs "$MNT"',
        'cp -a "$OUT"/. "$MNT"/',
        // Reserve the pages that stay free, fill everything else, then give the reserve back.
        'if [ "$FREE" -gt 0 ]; then dd if=/dev/zero of="$MNT/.reserve" bs=4096 count="$FREE" status=none; fi',
        'dd if=/dev/zero of="$MNT/.filler" bs=4096 status=none 2>/dev/null || true',
        'rm -f "$MNT/.reserve"',
        "set +e",
        '"$@"',
        "rc=$?",
        'rm -f "$MNT/.filler"',
        'cp -a "$MNT"/. "$OUT"/',
        'exit "$rc"',
      ].join("\n");
      return runCliChild(build, agentOnceArgs(mountPoint, "--json"), {
        env: { [VIRTUAL_CARD_ENV]: cardFile },
        stdin: `${PIN}\n`,
        timeoutMs: 30_000,
        wrap: (argv) => [
          "unshare",
          "-m",
          "--propagation",
          "private",
          "sh",
          "-c",
          script,
          "sh",
          mountPoint,
          stateDir,
          String(freePages),
          ...argv,
        ],
      });
    }

    test("with 0, 1, 2, 3 or 64 pages free: a clear exit, a valid state file, and after it a consistent network and a configured HSM", async () => {
      const seen: string[] = [];
      for (const freePages of [0, 1, 2, 3, 64]) {
        const where = `${freePages} pages free`;
        const stateDir = await configuredWithA(`full-${freePages}`);
        const before = await readFile(join(stateDir, STATE_FILES.state), "utf8");
        const cardFile = join(base.dir, `full-${freePages}-card-b.json`);
        new FileCardStateStore(cardFile).save(cardB.cardState);
        const run = await runOnFullDisk(stateDir, freePages, cardFile);
        expect(run.signal, where).toBeNull();
        expect(run.stderr, where).not.toMatch(/\n\s+at /);
        const after = await readFile(join(stateDir, STATE_FILES.state), "utf8");
        // Never torn: the state file is a valid state; unchanged when nothing could be written.
        const { state } = await AgentStateStore.open(stateDir);
        if (run.code !== ExitCode.ok) {
          expect(run.stderr, where).toMatch(/ENOSPC|no space/i);
          if (after === before) seen.push(`${freePages}: exit ${run.code}, state unchanged`);
          else seen.push(`${freePages}: exit ${run.code}, state ${state.stage}`);
        } else {
          seen.push(`${freePages}: configured`);
          expect(state.configured?.sequence, where).toBe(2);
        }
        // Room again: the next start reconciles; the applier holds exactly what the state says.
        const reconciled = await restart(stateDir);
        expect(reconciled.state.applying, where).toBeUndefined();
        expect(reconciled.record.applied, where).toEqual(reconciled.state.configured?.network);
        expect([1, 2], where).toContain(reconciled.state.configured?.sequence);
        const audit = await readAuditLog(join(stateDir, STATE_FILES.audit), {
          expectedHead: reconciled.state.auditHead!,
        });
        expect(audit.ok, `${where}: ${JSON.stringify(audit.problems)}`).toBe(true);
        // And card B configures the HSM (or already did).
        const agent = await Agent.open({ stateDir, net: "dry-run" });
        try {
          await agent.start();
          const element = await openMetered(cardB.card());
          try {
            const result = await agent.onboard(element, pins(PIN));
            expect([ExitCode.ok, ExitCode.replay], `${where}: ${result.error?.message}`).toContain(
              result.exitCode,
            );
          } finally {
            await element.close();
          }
        } finally {
          await agent.close();
        }
        expect((await AgentStateStore.open(stateDir)).state.configured?.sequence, where).toBe(2);
        await rm(join(base.dir, `mnt-${freePages}`), { recursive: true, force: true });
      }
      console.info(`full disk: ${seen.join("; ")}`);
      expect(seen.some((s) => s.includes("exit"))).toBe(true);
      expect(seen.at(-1)).toMatch(/configured/);
    }, 120_000);
  },
);

describe("ENOSPC injected at each persist of the state file (in-process)", () => {
  test("from the k-th write on, for every k: the state file stays the previous valid one; the network is rolled back to match it or never touched; the next start recovers", async () => {
    // How many state writes one onboarding of B makes on an HSM configured with A.
    const probeDir = await configuredWithA("count-writes");
    diskFull.writes = 0;
    {
      const agent = await Agent.open({ stateDir: probeDir, net: "dry-run" });
      const element = await openMetered(cardB.card());
      try {
        await agent.start();
        diskFull.writes = 0;
        expect((await agent.onboard(element, pins(PIN))).exitCode).toBe(0);
      } finally {
        await element.close();
        await agent.close();
      }
    }
    const writesPerOnboarding = diskFull.writes;
    expect(writesPerOnboarding).toBeGreaterThanOrEqual(5); // the stages, then the audit head

    const outcomes: string[] = [];
    for (let k = 1; k <= writesPerOnboarding; k++) {
      const stateDir = await configuredWithA(`enospc-${k}`);
      const agent = await Agent.open({
        stateDir,
        net: await DryRunBackend.open({ file: join(stateDir, STATE_FILES.dryRun) }),
      });
      const element = await openMetered(cardB.card());
      let lastGood = "";
      try {
        await agent.start();
        lastGood = await readFile(join(stateDir, STATE_FILES.state), "utf8");
        diskFull.last = lastGood;
        diskFull.writes = 0;
        diskFull.failFrom = k;
        // Every write that succeeds before the disk fills up is the new "previous valid one".
        const result = await agent.onboard(element, pins(PIN));
        outcomes.push(`${k}: exit ${result.exitCode}`);
        const onDisk = await readFile(join(stateDir, STATE_FILES.state), "utf8");
        // Valid, and exactly what the last successful write left (before the onboarding: k = 1).
        const { state } = await AgentStateStore.open(stateDir);
        expect(onDisk, `k=${k}`).toBe(k === 1 ? lastGood : diskFull.last);
        if (state.stage === "configured" && state.configured?.sequence === 2) {
          expect(result.exitCode).toBe(0); // configured was on disk before the disk filled up
        } else {
          expect(result.exitCode, `k=${k}`).not.toBe(0);
        }
      } finally {
        diskFull.failFrom = Number.POSITIVE_INFINITY;
        await element.close();
        await agent.close();
      }
      // Room again: reconciled, and the applier's record equals the state's configuration.
      const { state, record } = await restart(stateDir);
      expect(state.applying, `k=${k}`).toBeUndefined();
      expect(record.applied, `k=${k}`).toEqual(state.configured?.network);
      expect([1, 2]).toContain(state.configured?.sequence);
    }
    console.info(`ENOSPC from the k-th state write: ${outcomes.join("; ")}`);
  });
});
