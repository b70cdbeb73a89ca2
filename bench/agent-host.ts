/**
 * Agent host cost (SPEC.md §9, last bullet): CPU per onboarding and peak resident memory, measured
 * in child processes that run only the agent (agent-child.ts), so maxRSS is the agent's own and the
 * first onboarding in each is cold — as on an HSM, which onboards once after it starts.
 *
 * - one child runs RUNS onboardings: maxRSS before/after, the cold first one, the warm median;
 * - COLD_REPEATS more children run one onboarding each: the cold figure is the minimum over all
 *   first onboardings (on a busy machine a single wall time measures the run queue);
 * - one child runs with V8's young generation capped (--max-semi-space-size=1): what that flag
 *   would do to the peak resident set;
 * - one child times the verification steps alone (verification.ts), cold then warm.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CardState } from "../src/card-emulator/card-state-store.js";
import type { AgentChildJob, AgentChildReport, AgentChildRun } from "./agent-child.js";
import { runChild } from "./child.js";
import type { BenchFixture } from "./fixture.js";
import { fixed, median, print, section, table } from "./report.js";

export interface AgentHostResult {
  readonly report?: AgentChildReport;
  readonly verification?: NonNullable<AgentChildReport["verification"]>;
  readonly error?: string;
  /** First onboarding in a process: the lowest over the cold runs, emulated card time subtracted. */
  readonly coldHostWallMs?: number;
  readonly coldHostCpuMs?: number;
  readonly warmHostWallMs?: number;
  readonly warmHostCpuMs?: number;
  /** maxRSS (KiB) after the first onboarding with --max-semi-space-size=1. */
  readonly smallYoungGenMaxRssKiB?: number;
}

const RUNS = 8;
const COLD_REPEATS = 2;
const SMALL_YOUNG_GENERATION = "--max-semi-space-size=1";

const hostWall = (r: AgentChildRun) => r.wallMs - r.emulatorMs;
const hostCpu = (r: AgentChildRun) => r.cpuMs - r.emulatorMs;

export async function benchAgentHost(
  fixture: BenchFixture,
  cardState: CardState,
  agentTemplate: string,
  serial: string,
  hsms: number,
): Promise<AgentHostResult> {
  section(
    `2. Agent host: CPU and peak RSS per onboarding (${hsms.toLocaleString("en-US")}-HSM card, yubikey5, child processes)`,
  );
  const cardStateFile = join(fixture.dir, "agent-host-card.json");
  await writeFile(cardStateFile, JSON.stringify(cardState), { mode: 0o600 });
  const writeJob = async (name: string, job: AgentChildJob) => {
    const file = join(fixture.dir, `agent-host-${name}.json`);
    await writeFile(file, JSON.stringify(job));
    return file;
  };
  const base: AgentChildJob = { cardStateFile, agentTemplate, profile: "yubikey5", runs: RUNS };
  const main = await runChild<AgentChildReport>("agent-child.js", [await writeJob("main", base)], 90_000);
  const report = main.value;
  if (!report) {
    print(`  failed: ${main.error}`);
    return { ...(main.error ? { error: main.error } : {}) };
  }
  const onceJob = await writeJob("once", { ...base, runs: 1 });
  const colds: AgentChildRun[] = [report.runs[0]!];
  for (let i = 0; i < COLD_REPEATS; i++) {
    const again = await runChild<AgentChildReport>("agent-child.js", [onceJob], 60_000);
    if (again.value?.runs[0]) colds.push(again.value.runs[0]);
  }
  const small = await runChild<AgentChildReport>("agent-child.js", [onceJob], 60_000, [
    SMALL_YOUNG_GENERATION,
  ]);
  const verifyChild = await runChild<AgentChildReport>(
    "agent-child.js",
    [
      await writeJob("verify", {
        ...base,
        runs: 0,
        verification: {
          rootDerBase64: Buffer.from(fixture.rootDer).toString("base64"),
          serial,
          deviceDir: join(fixture.dir, `device-${serial}`),
        },
      }),
    ],
    60_000,
  );

  const failed = [...report.runs, ...colds].filter((r) => !r.ok);
  if (failed.length > 0) print(`  ! ${failed.length} onboarding(s) failed: ${failed[0]?.error}`);
  const warm = report.runs.slice(1);
  const result: AgentHostResult = {
    report,
    ...(verifyChild.value?.verification ? { verification: verifyChild.value.verification } : {}),
    coldHostWallMs: Math.min(...colds.map(hostWall)),
    coldHostCpuMs: Math.min(...colds.map(hostCpu)),
    warmHostWallMs: median(warm.map(hostWall)),
    warmHostCpuMs: median(warm.map(hostCpu)),
    ...(small.value ? { smallYoungGenMaxRssKiB: small.value.firstMaxRssKiB } : {}),
  };
  print(
    "  whole onboarding on the host (state files with fsync, audit log, dry-run apply, receipt signing),",
  );
  print("  the emulated card's own time subtracted; CPU is process.cpuUsage (all threads, GC included):");
  table(
    ["onboarding", "host wall ms", "host CPU ms"],
    [
      [
        `first in a fresh process (cold, the realistic one): lowest of ${colds.length}`,
        fixed(result.coldHostWallMs!),
        fixed(result.coldHostCpuMs!),
      ],
      [
        "  each of them",
        colds.map((r) => fixed(hostWall(r), 0)).join(" "),
        colds.map((r) => fixed(hostCpu(r), 0)).join(" "),
      ],
      [
        `next ${warm.length} in the first process (warm, median)`,
        fixed(result.warmHostWallMs!),
        fixed(result.warmHostCpuMs!),
      ],
    ],
  );
  print(
    `  before the card, not counted above: agent start (Agent.open + start: lock, state, audit log, device key,` +
      ` validation warm-up) ${colds.map((r) => fixed(r.startCpuMs, 1)).join(" / ")} ms CPU in the fresh processes`,
  );
  const mib = (kib: number) => `${fixed(kib / 1024)} MiB = ${fixed((kib * 1024) / 1e6)} MB`;
  print();
  table(
    ["peak resident set (process.resourceUsage().maxRSS)", "size"],
    [
      ["agent modules loaded, before the first card", mib(report.baselineMaxRssKiB)],
      ["after the first onboarding", mib(report.firstMaxRssKiB)],
      [`after ${report.runs.length} onboardings`, mib(report.finalMaxRssKiB)],
      ...(result.smallYoungGenMaxRssKiB !== undefined
        ? [[`after the first onboarding, node ${SMALL_YOUNG_GENERATION}`, mib(result.smallYoungGenMaxRssKiB)]]
        : []),
    ],
  );
  const v = result.verification;
  if (!v) print(`  verification timing failed: ${verifyChild.error}`);
  if (v) {
    print();
    print("  host-side verification only (same calls and options as src/agent/onboarding.ts), CPU ms,");
    print("  in a fresh process (first call: cold code paths; then the median of 15), after the");
    print(
      `  agent's warm-up at start (warmUpValidation(root), before any card: ${fixed(v.warmUpCpuMs, 2)} ms CPU):`,
    );
    table(
      ["step", "first call", "warm (median)"],
      [
        ...v.steps.map((s) => [s.step, fixed(s.coldCpuMs, 2), fixed(s.warmCpuMs, 2)]),
        ["= verification", fixed(v.verifyColdCpuMs, 2), fixed(v.verifyWarmCpuMs, 2)],
        [v.receipt.step, fixed(v.receipt.coldCpuMs, 2), fixed(v.receipt.warmCpuMs, 2)],
      ],
    );
  }
  return result;
}
