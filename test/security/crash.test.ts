/**
 * SPEC.md §8 "survived: the process killed mid-apply" — for real: `hsm-onboard agent run --once --net
 * iproute2` runs as a child process inside a network namespace this test created, reconfiguring an
 * HSM from configuration A (sequence 1, applied before) to B (sequence 2), and kills itself with
 * SIGKILL at a crash point (src/agent/faults.ts, HSM_ONBOARD_CRASH_AT): after the snapshot is
 * persisted, after each changing `ip` command, after the apply before verification, after
 * verification before `configured` is persisted, after that before the receipt.
 *
 * Then the agent starts again (no card: it reconciles and exits 10), and the namespace's network
 * must be exactly A or exactly B (`ip -json` addresses, MTU, up state, routes), matching what the
 * state file says is configured, with no `applying` left. A third start with the card (in this
 * process: Agent.open, start, onboard — what the CLI runs) ends with B configured (exit 0, or 17
 * when B was already recorded before the crash). Nothing is lost: the audit log verifies.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { CRASH_AT_ENV, type CrashPoint } from "../../src/agent/faults.js";
import { Iproute2Backend } from "../../src/agent/net/iproute2.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { ExitCode } from "../../src/errors.js";
import { createTestPki, initAgent, OWNER, PIN, pins, type TestPki, tempDir } from "../agent/fixtures.js";
import { ip, NetnsLab, netnsCapability, settled } from "../agent/netns.js";
import { buildForChildren, type PrivateBuild, requireOrSkip } from "../helpers/pcsc-env.js";
import { type ChildResult, runCliChild, stopChildren } from "./children.js";
import { CardTemplate, networkOf, openMetered } from "./support.js";

const cap = requireOrSkip(netnsCapability());

/** IPv4 only (no DAD wait), a gateway and an MTU, so that B changes five things in A. */
function plan(ipv4: string, gateway: string, mtu: number): NetworkPlan {
  return {
    owner: OWNER,
    subnets: [{ name: "lab", cidr: "198.51.100.0/24", gateway, dns: ["198.51.100.53"], ntp: [], mtu }],
    hsms: [
      { serial: "1234567", hostname: "hsm-crash-01", interfaces: [{ name: "eth0", subnet: "lab", ipv4 }] },
    ],
  };
}
const PLAN_A = plan("198.51.100.11", "198.51.100.1", 1400);
const PLAN_B = plan("198.51.100.21", "198.51.100.254", 1500);

const CRASH_POINTS: CrashPoint[] = [
  "after-snapshot",
  "mid-apply:1",
  "mid-apply:2",
  "mid-apply:3",
  "mid-apply:4",
  "mid-apply:5",
  "mid-apply:6",
  "after-apply-before-verify",
  "after-verify-before-persist",
  "after-persist-before-receipt",
];

interface PointOutcome {
  readonly point: CrashPoint;
  readonly killed: boolean;
  readonly afterRestart: "A" | "B";
}

describe.skipIf(!cap.ok)(
  `agent killed at each step of an apply (child process, netns)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let testPki: TestPki;
    let crl: Uint8Array;
    let cardA: CardTemplate;
    let cardB: CardTemplate;
    const labs: NetnsLab[] = [];
    const CRASH_BATCH = 1;
    /** A restart takes 0.6–1.2 s here (no card; reconcile, re-apply A or keep B, exit 10). */
    const RESTART_BOUND_MS = 30_000;
    const timings: string[] = [];
    const notes: string[] = [];

    beforeAll(async () => {
      base = await tempDir("hsm-security-crash-");
      build = await buildForChildren(["cli/main.js", "agent/faults.js"]);
      testPki = await createTestPki(base.dir);
      crl = await testPki.crl(1);
      cardA = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "a");
      await cardA.write(PLAN_A, { crl, sequence: 1 });
      cardB = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "b", { officer: "Bob Officer" });
      await cardB.write(PLAN_B, { crl, sequence: 2 });
    }, 180_000);
    afterAll(async () => {
      await stopChildren();
      for (const lab of labs) await lab.cleanup();
      await build?.cleanup();
      await base?.cleanup();
    });

    /** One crash point from start to end; returns what was observed. */
    async function crashAt(point: CrashPoint, index: number): Promise<PointOutcome> {
      const lab = new NetnsLab();
      labs.push(lab);
      const hsm = lab.namespace("hsm");
      const peer = lab.namespace("peer");
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      const { stateDir } = await initAgent(base.dir, testPki, { crl, name: `crash-${index}` });

      // A, applied before (in this process, the same applier the child uses).
      const agent = await Agent.open({
        stateDir,
        net: new Iproute2Backend({ netns: hsm, probeWindowMs: 200 }),
      });
      try {
        await agent.start();
        const element = await openMetered(cardA.card());
        try {
          const result = await agent.onboard(element, pins(PIN));
          expect(result.exitCode, result.error?.message).toBe(0);
        } finally {
          await element.close();
        }
      } finally {
        await agent.close();
      }
      await settled(hsm);
      const networkA = networkOf(hsm);

      // B, with a crash armed.
      const cardFile = join(base.dir, `crash-${index}-card-b.json`);
      new FileCardStateStore(cardFile).save(cardB.cardState);
      const run = (env: Record<string, string>, timeoutMs = 90_000): Promise<ChildResult> =>
        runCliChild(
          build,
          [
            "agent",
            "run",
            "--allow-plaintext",
            "--state-dir",
            stateDir,
            "--once",
            "--net",
            "iproute2",
            "--pin-stdin",
            "--json",
          ],
          {
            netns: hsm,
            env,
            stdin: `${PIN}\n`,
            timeoutMs,
          },
        );
      let crashed = await run({ [VIRTUAL_CARD_ENV]: cardFile, [CRASH_AT_ENV]: point });
      if (crashed.signal !== "SIGKILL" && crashed.code !== 0) {
        // The run failed before reaching the point (on a loaded machine: a timeout of the applier,
        // which rolls back — exit 20). What it left is checked below like any other outcome; the
        // point itself gets one more try, and the first failure is reported.
        notes.push(
          `${point}: first run ended with exit ${crashed.code} before the point: ${crashed.stderr.trim().split("\n").at(-1)}`,
        );
        new FileCardStateStore(cardFile).save(cardB.cardState);
        crashed = await run({ [VIRTUAL_CARD_ENV]: cardFile, [CRASH_AT_ENV]: point });
      }
      const killed = crashed.signal === "SIGKILL";
      if (!killed) {
        // The point lies beyond the last command of this apply: the run simply succeeded.
        expect(point, `exit ${crashed.code} signal ${crashed.signal}: ${crashed.stderr}`).toMatch(
          /^mid-apply:/,
        );
        expect(crashed.code, crashed.stderr).toBe(0);
      }
      const leftState = (await AgentStateStore.open(stateDir)).state;
      if (killed) {
        const expectedStage = point === "after-persist-before-receipt" ? "configured" : "applying";
        expect(leftState.stage, `${point}: ${crashed.stderr}`).toBe(expectedStage);
      }

      // The next start, no card in reach: it reconciles, then gives up waiting (exit 10). A start
      // that hangs is killed after RESTART_BOUND_MS and started once more, as systemd does with the
      // unit (TimeoutStartSec, then Restart=on-failure): once in ~14 loaded runs (session 3) and once
      // in CI a restart printed its first line and then nothing for 90 s, cause not found. The
      // runner's diagnostic (wait channels, Node report) goes into the output to explain the next one.
      const restartOnce = () =>
        run({ [VIRTUAL_CARD_ENV]: join(base.dir, "no-such-card.json") }, RESTART_BOUND_MS);
      const restart = await restartOnce().catch(async (error: Error) => {
        if (!/still running after/.test(error.message)) throw error;
        notes.push(`${point}: RESTART HUNG, killed and started again:\n${error.message}`);
        console.warn(`crash test, ${point}: restart hung; started again:\n${error.message}`);
        return restartOnce();
      });
      expect(restart.code, restart.stderr).toBe(ExitCode.noCard);
      await settled(hsm);
      const afterRestart = networkOf(hsm);
      const reconciled = (await AgentStateStore.open(stateDir)).state;
      expect(reconciled.applying, point).toBeUndefined();
      const configuredSequence = reconciled.configured?.sequence;
      if (configuredSequence === 1) {
        expect(afterRestart, `${point}: the network is A exactly`).toEqual(networkA);
      }

      // The card again (in this process: the same Agent.open + start + onboard the CLI runs): B.
      const again = await Agent.open({
        stateDir,
        net: new Iproute2Backend({ netns: hsm, probeWindowMs: 200 }),
      });
      let last: { code: number; stderr: string; ms: number };
      const lastStarted = performance.now();
      try {
        await again.start();
        const element = await openMetered(cardB.card());
        try {
          const result = await again.onboard(element, pins(PIN));
          last = { code: result.exitCode, stderr: result.error?.message ?? "", ms: 0 };
        } finally {
          await element.close();
        }
      } finally {
        await again.close();
      }
      last.ms = performance.now() - lastStarted;
      expect([ExitCode.ok, ExitCode.replay], `${point}: ${last.stderr}`).toContain(last.code);
      if (last.code === ExitCode.replay) expect(configuredSequence).toBe(2);
      await settled(hsm);
      const networkB = networkOf(hsm);
      expect(networkB).not.toEqual(networkA);
      const final = (await AgentStateStore.open(stateDir)).state;
      expect(final.configured?.sequence).toBe(2);
      // A refused card (17) sets the stage back to waiting-for-card, configured network and all
      // (SPEC.md §6 "any failure returns to waiting-for-card"); the next start says configured again.
      expect(final.stage).toBe(last.code === ExitCode.ok ? "configured" : "waiting-for-card");
      expect(final.applying).toBeUndefined();
      if (configuredSequence === 2) {
        expect(afterRestart, `${point}: the network is B exactly`).toEqual(networkB);
      } else {
        expect(configuredSequence, point).toBe(1);
      }
      const audit = await readAuditLog(join(stateDir, "audit.log"), { expectedHead: final.auditHead! });
      expect(audit.ok, point).toBe(true);
      await lab.cleanup();
      timings.push(
        `${point}: crash run ${crashed.ms.toFixed(0)} ms, restart ${restart.ms.toFixed(0)} ms, last ${last.ms.toFixed(0)} ms`,
      );
      return { point, killed, afterRestart: configuredSequence === 2 ? "B" : "A" };
    }

    test("at every crash point: killed, restarted, the network is exactly the old or the new configuration, matching the state; the card then configures B", async () => {
      const outcomes: PointOutcome[] = [];
      // One at a time: each point has its own namespaces, state directory and card file, but with two
      // at once a restart after the kill once hung for its whole 90 s bound in a loaded 3-worker run
      // (1 in ~14 runs, cause not found; session 3's note), and more at once was flaky in session 1.
      for (let i = 0; i < CRASH_POINTS.length; i += CRASH_BATCH) {
        const batch = CRASH_POINTS.slice(i, i + CRASH_BATCH);
        outcomes.push(...(await Promise.all(batch.map((p, j) => crashAt(p, i + j)))));
      }
      const summary = Object.fromEntries(
        outcomes.map((o) => [o.point, o.killed ? `killed → ${o.afterRestart}` : "not reached"]),
      );
      // Every named point outside the apply's command count was reached and killed the agent.
      for (const point of CRASH_POINTS.filter((p) => !p.startsWith("mid-apply:"))) {
        expect(summary[point], JSON.stringify(summary)).toMatch(/^killed/);
      }
      expect(
        outcomes.filter((o) => o.point.startsWith("mid-apply:") && o.killed).length,
        JSON.stringify(summary),
      ).toBeGreaterThanOrEqual(4);
      // Before `configured` was persisted the restart rolls back to A; after it, B stands.
      expect(summary["after-verify-before-persist"]).toBe("killed → A");
      expect(summary["after-persist-before-receipt"]).toBe("killed → B");
      console.info(`crash points: ${JSON.stringify(summary)}\n${[...notes, ...timings].join("\n")}`);
    }, 600_000);
  },
);
