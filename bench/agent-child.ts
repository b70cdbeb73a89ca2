/**
 * Child process of the agent host benchmark (agent-host.ts): runs the agent onboarding alone in a
 * fresh Node process, so that its peak resident set (`process.resourceUsage().maxRSS`) is the
 * agent's — project modules, the emulated card and one onboarding — and nothing of the benchmark
 * harness. The first onboarding is the realistic one (an agent onboards once per boot: cold code
 * paths); later ones show the warm cost.
 *
 *   node bench/agent-child.js JOB.json    → one JSON line on stdout
 */
import { readFileSync } from "node:fs";
import type { CardState } from "../src/card-emulator/card-state-store.js";
import { LATENCY_PROFILES } from "../src/card-emulator/latency-profile.js";
import { measureOnboarding } from "./onboarding.js";
import type { VerificationTimes } from "./verification.js";

export interface AgentChildJob {
  readonly cardStateFile: string;
  readonly agentTemplate: string;
  readonly profile: string;
  readonly runs: number;
  /** SCP11b: the card state holds an SD key; the agent requires the channel to this vendor CA (DER). */
  readonly scpAnchorBase64?: string;
  /** The agent's warm-up at start (default true); false: a truly cold agent. */
  readonly warmUp?: boolean;
  /** Then (once maxRSS is taken) time the verification steps; run it with `runs: 0` for cold figures. */
  readonly verification?: {
    readonly rootDerBase64: string;
    readonly serial: string;
    readonly deviceDir: string;
  };
}

export interface AgentChildRun {
  readonly ok: boolean;
  readonly error?: string;
  readonly wallMs: number;
  readonly cpuMs: number;
  /** Agent.open + start before the card (not in cpuMs). */
  readonly startCpuMs: number;
  readonly emulatorMs: number;
  /** CPU the emulated card used (subtracted from cpuMs for host CPU). */
  readonly emulatorCpuMs: number;
  readonly modeledCardMs: number;
  readonly apdus: number;
  /** Up to "network configured" (`configured` persisted, before the receipt), when reached. */
  readonly configured?: {
    readonly wallMs: number;
    readonly cpuMs: number;
    readonly emulatorMs: number;
    readonly emulatorCpuMs: number;
    readonly modeledCardMs: number;
    readonly apdus: number;
  };
}

export interface AgentChildReport {
  /** maxRSS (KiB) once the modules are loaded, before any onboarding. */
  readonly baselineMaxRssKiB: number;
  /** maxRSS (KiB) after the first onboarding, and after all of them. */
  readonly firstMaxRssKiB: number;
  readonly finalMaxRssKiB: number;
  readonly runs: readonly AgentChildRun[];
  readonly verification?: VerificationTimes;
}

const jobFile = process.argv[2];
if (!jobFile) throw new Error("usage: agent-child JOB.json");
const job = JSON.parse(readFileSync(jobFile, "utf8")) as AgentChildJob;
const profile = LATENCY_PROFILES[job.profile];
if (!profile) throw new Error(`unknown profile ${job.profile}`);
const cardState = JSON.parse(readFileSync(job.cardStateFile, "utf8")) as CardState;

const baselineMaxRssKiB = process.resourceUsage().maxRSS;
let firstMaxRssKiB = baselineMaxRssKiB;
const runs: AgentChildRun[] = [];
for (let i = 0; i < Math.min(Math.max(0, job.runs), 50); i++) {
  const m = await measureOnboarding(
    cardState,
    job.agentTemplate,
    profile,
    job.scpAnchorBase64 ? { anchor: new Uint8Array(Buffer.from(job.scpAnchorBase64, "base64")) } : undefined,
    job.warmUp ?? true,
  );
  const c = m.configured;
  runs.push({
    ok: m.result.ok,
    ...(m.result.error ? { error: m.result.error.message } : {}),
    wallMs: m.wallMs,
    cpuMs: m.cpuMs,
    startCpuMs: m.startCpuMs,
    emulatorMs: m.totals.emulatorMs,
    emulatorCpuMs: m.totals.emulatorCpuMs,
    modeledCardMs: m.totals.modeledMs,
    apdus: m.totals.apdus,
    ...(c
      ? {
          configured: {
            wallMs: c.wallMs,
            cpuMs: c.cpuMs,
            emulatorMs: c.totals.emulatorMs,
            emulatorCpuMs: c.totals.emulatorCpuMs,
            modeledCardMs: c.totals.modeledMs,
            apdus: c.totals.apdus,
          },
        }
      : {}),
  });
  if (i === 0) firstMaxRssKiB = process.resourceUsage().maxRSS;
}
const finalMaxRssKiB = process.resourceUsage().maxRSS;
let verification: VerificationTimes | undefined;
if (job.verification) {
  // Loaded only now, so the onboarding runs' maxRSS does not include the benchmark's own code.
  const { loadDeviceIdentity } = await import("../src/agent/device-identity.js");
  const { measureVerification } = await import("./verification.js");
  const device = await loadDeviceIdentity(job.verification.deviceDir);
  try {
    verification = await measureVerification(
      cardState,
      new Uint8Array(Buffer.from(job.verification.rootDerBase64, "base64")),
      job.verification.serial,
      device.signer,
      15,
      job.warmUp ?? true,
    );
  } finally {
    await device.close();
  }
}
const report: AgentChildReport = {
  baselineMaxRssKiB,
  firstMaxRssKiB,
  finalMaxRssKiB,
  runs,
  ...(verification ? { verification } : {}),
};
process.stdout.write(`${JSON.stringify(report)}\n`);
