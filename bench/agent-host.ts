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

/** Host time of first onboardings in fresh processes (cold), emulated card time subtracted. */
export interface ColdHostFigures {
  /** Each cold run, card present → result (receipt included). */
  readonly wallMs: readonly number[];
  readonly cpuMs: readonly number[];
  /** Each cold run, card present → network configured (`configured` persisted, before the receipt). */
  readonly configuredWallMs: readonly number[];
  readonly configuredCpuMs: readonly number[];
  /** Modeled card time and APDUs of one run, to configured and in all. */
  readonly modeledCardMs: number;
  readonly configuredModeledCardMs: number;
  readonly apdus: number;
  readonly configuredApdus: number;
}

export interface AgentHostResult {
  readonly report?: AgentChildReport;
  readonly verification?: NonNullable<AgentChildReport["verification"]>;
  readonly error?: string;
  /** First onboarding in a process: the median over the cold runs, emulated card time subtracted. */
  readonly coldHostWallMs?: number;
  readonly coldHostCpuMs?: number;
  readonly warmHostWallMs?: number;
  readonly warmHostCpuMs?: number;
  /** The cold runs themselves, plaintext and (when measured) inside SCP11b. */
  readonly cold?: ColdHostFigures;
  readonly coldScp?: ColdHostFigures;
  /** Cold runs of an agent started without its warm-up (Agent.open warmUp: false): truly cold. */
  readonly coldNoWarmUp?: ColdHostFigures;
  /** The verification steps in a process that skipped the warm-up. */
  readonly verificationNoWarmUp?: NonNullable<AgentChildReport["verification"]>;
  /** maxRSS (KiB) after the first onboarding with --max-semi-space-size=1. */
  readonly smallYoungGenMaxRssKiB?: number;
}

const RUNS = 8;
/** Fresh processes besides the main one, each onboarding once (cold); SCP11b: COLD_REPEATS + 1. */
const COLD_REPEATS = 4;
const SMALL_YOUNG_GENERATION = "--max-semi-space-size=1";

const hostWall = (r: AgentChildRun) => r.wallMs - r.emulatorMs;
const hostCpu = (r: AgentChildRun) => r.cpuMs - r.emulatorCpuMs;

function coldFigures(runs: readonly AgentChildRun[]): ColdHostFigures | undefined {
  const ok = runs.filter((r) => r.ok && r.configured);
  const first = ok[0];
  if (!first?.configured) return undefined;
  return {
    wallMs: ok.map(hostWall),
    cpuMs: ok.map(hostCpu),
    configuredWallMs: ok.map((r) => r.configured!.wallMs - r.configured!.emulatorMs),
    configuredCpuMs: ok.map((r) => r.configured!.cpuMs - r.configured!.emulatorCpuMs),
    modeledCardMs: first.modeledCardMs,
    configuredModeledCardMs: first.configured.modeledCardMs,
    apdus: first.apdus,
    configuredApdus: first.configured.apdus,
  };
}

export async function benchAgentHost(
  fixture: BenchFixture,
  cardState: CardState,
  agentTemplate: string,
  serial: string,
  hsms: number,
  /** The same card with an SCP11b key, and the vendor CA the agent is given: cold runs inside SCP11b. */
  scp?: { readonly cardState: CardState; readonly anchor: Uint8Array },
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
  const noWarmUpJob = await writeJob("once-no-warm-up", { ...base, runs: 1, warmUp: false });
  const noWarmUpColds: AgentChildRun[] = [];
  for (let i = 0; i <= COLD_REPEATS; i++) {
    const r = await runChild<AgentChildReport>("agent-child.js", [noWarmUpJob], 60_000);
    if (r.value?.runs[0]) noWarmUpColds.push(r.value.runs[0]);
  }
  const scpColds: AgentChildRun[] = [];
  if (scp) {
    const scpCardFile = join(fixture.dir, "agent-host-card-scp.json");
    await writeFile(scpCardFile, JSON.stringify(scp.cardState), { mode: 0o600 });
    const scpJob = await writeJob("once-scp", {
      ...base,
      runs: 1,
      cardStateFile: scpCardFile,
      scpAnchorBase64: Buffer.from(scp.anchor).toString("base64"),
    });
    for (let i = 0; i <= COLD_REPEATS; i++) {
      const r = await runChild<AgentChildReport>("agent-child.js", [scpJob], 60_000);
      if (r.value?.runs[0]) scpColds.push(r.value.runs[0]);
      else print(`  ! SCP11b cold run failed: ${r.error}`);
    }
  }
  const small = await runChild<AgentChildReport>("agent-child.js", [onceJob], 60_000, [
    SMALL_YOUNG_GENERATION,
  ]);
  const verificationJob = {
    ...base,
    runs: 0,
    verification: {
      rootDerBase64: Buffer.from(fixture.rootDer).toString("base64"),
      serial,
      deviceDir: join(fixture.dir, `device-${serial}`),
    },
  };
  const verifyChild = await runChild<AgentChildReport>(
    "agent-child.js",
    [await writeJob("verify", verificationJob)],
    60_000,
  );
  const verifyColdChild = await runChild<AgentChildReport>(
    "agent-child.js",
    [await writeJob("verify-no-warm-up", { ...verificationJob, warmUp: false })],
    60_000,
  );

  const failed = [...report.runs, ...colds, ...scpColds].filter((r) => !r.ok);
  if (failed.length > 0) print(`  ! ${failed.length} onboarding(s) failed: ${failed[0]?.error}`);
  const warm = report.runs.slice(1);
  const result: AgentHostResult = {
    report,
    ...(verifyChild.value?.verification ? { verification: verifyChild.value.verification } : {}),
    ...(verifyColdChild.value?.verification
      ? { verificationNoWarmUp: verifyColdChild.value.verification }
      : {}),
    coldHostWallMs: median(colds.map(hostWall)),
    coldHostCpuMs: median(colds.map(hostCpu)),
    warmHostWallMs: median(warm.map(hostWall)),
    warmHostCpuMs: median(warm.map(hostCpu)),
    ...(small.value ? { smallYoungGenMaxRssKiB: small.value.firstMaxRssKiB } : {}),
  };
  const cold = coldFigures(colds);
  const coldScp = coldFigures(scpColds);
  const coldNoWarmUp = coldFigures(noWarmUpColds);
  if (cold) Object.assign(result, { cold });
  if (coldNoWarmUp) Object.assign(result, { coldNoWarmUp });
  if (coldScp) Object.assign(result, { coldScp });
  print(
    "  whole onboarding on the host (state files with fsync, audit log, dry-run apply, receipt signing),",
  );
  print(
    "  the emulated card's own time subtracted (wall from wall, its CPU from CPU); CPU is process.cpuUsage",
  );
  print("  (all threads, GC included):");
  const each = (values: readonly number[]) => values.map((v) => fixed(v, 0)).join(" ");
  const coldRows = (name: string, f: ColdHostFigures | undefined) =>
    f
      ? [
          [
            `${name}: first in a fresh process (cold), median of ${f.wallMs.length}`,
            fixed(median(f.wallMs)),
            fixed(median(f.cpuMs)),
            fixed(median(f.configuredWallMs)),
            fixed(median(f.configuredCpuMs)),
          ],
          [
            "  each of them",
            each(f.wallMs),
            each(f.cpuMs),
            each(f.configuredWallMs),
            each(f.configuredCpuMs),
          ],
        ]
      : [];
  table(
    [
      "onboarding (host ms, emulated card subtracted)",
      "wall",
      "CPU",
      "wall to configured",
      "CPU to configured",
    ],
    [
      ...coldRows("plaintext", cold),
      ...coldRows("plaintext, agent started without its warm-up", coldNoWarmUp),
      [
        `plaintext: next ${warm.length} in the first process (warm, median)`,
        fixed(result.warmHostWallMs!),
        fixed(result.warmHostCpuMs!),
        "",
        "",
      ],
      ...coldRows("SCP11b", coldScp),
    ],
  );
  print("  An agent warms up at start (src/agent/warm-up.ts: its whole host-side path once over a built-in");
  print(
    "  configuration, before any card); 'without its warm-up' is a truly cold process (Agent.open warmUp: false).",
  );
  print(
    "  'to configured' ends when `configured` is persisted (SPEC.md §9 \"network configured\"); the rest is the receipt",
  );
  print("  (device-key signature, receipt object read and written on the card) and the audit record.");
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
  const v0 = result.verificationNoWarmUp;
  if (!v) print(`  verification timing failed: ${verifyChild.error}`);
  if (v) {
    print();
    print("  host-side verification only (same calls and options as src/agent/onboarding.ts), CPU ms,");
    print("  in a fresh process: first call (cold code paths) after the agent's warm-up at start");
    print(
      `  (${fixed(v.warmUpCpuMs, 2)} ms CPU, before any card), first call without it, then the median of 15 (warm):`,
    );
    table(
      ["step", "first, warmed-up agent", "first, no warm-up", "warm (median)"],
      [
        ...v.steps.map((s, i) => [
          s.step,
          fixed(s.coldCpuMs, 2),
          v0?.steps[i] ? fixed(v0.steps[i]!.coldCpuMs, 2) : "-",
          fixed(s.warmCpuMs, 2),
        ]),
        [
          "= verification",
          fixed(v.verifyColdCpuMs, 2),
          v0 ? fixed(v0.verifyColdCpuMs, 2) : "-",
          fixed(v.verifyWarmCpuMs, 2),
        ],
        [
          v.receipt.step,
          fixed(v.receipt.coldCpuMs, 2),
          v0 ? fixed(v0.receipt.coldCpuMs, 2) : "-",
          fixed(v.receipt.warmCpuMs, 2),
        ],
      ],
    );
  }
  return result;
}
