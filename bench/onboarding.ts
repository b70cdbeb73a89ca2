/**
 * One measured agent onboarding, exactly as `agent run` does it for an in-process card. Imports only
 * what the agent itself loads (plus the emulated card and the meter), so that the agent host
 * benchmark's child process (agent-child.ts) measures the agent's memory, not the harness's.
 */
import { cp, mkdir, rm } from "node:fs/promises";
import { Agent } from "../src/agent/agent.js";
import type { OnboardingResult } from "../src/agent/onboarding.js";
import { type CardState, MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { ApduMeter, type LatencyProfile, type MeterTotals } from "../src/card-emulator/latency-profile.js";
import { MeteredCard } from "../src/card-emulator/metered-card.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import type { IssuerCredentials } from "../src/pki/issue.js";
import { secureChannelPolicy } from "../src/secure-element/channel-policy.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import { InProcessTransport } from "../src/transport/in-process.js";

/** The officer card's PIN after personalisation (fixture.ts). */
export const BENCH_PIN = "246810";

let runCounter = 0;

/** A fresh copy of an agent state directory template, next to it. */
export async function freshAgentDir(template: string): Promise<string> {
  const dir = `${template}-run-${process.pid}-${++runCounter}`;
  await mkdir(dir, { recursive: true });
  await cp(template, dir, { recursive: true });
  return dir;
}

export interface MeasuredOnboarding {
  readonly result: OnboardingResult;
  readonly meter: ApduMeter;
  readonly totals: MeterTotals;
  /** Wall time from power-on to the agent's result, emulator included. */
  readonly wallMs: number;
  /** User + system CPU of this process (all threads) over the same span, emulator included. */
  readonly cpuMs: number;
  /**
   * CPU of starting the agent before the card is present (Agent.open + start: lock, state, audit
   * log, device key, validation warm-up), as `agent run` does once per process. Not in `cpuMs`.
   */
  readonly startCpuMs: number;
}

/**
 * One onboarding: a copy of `cardState` is powered on under `profile.card` behind a MeteredCard, PIV
 * is opened (SELECT, version, serial — what openCard does), then the agent onboards it with the
 * dry-run network on a fresh copy of the agent state directory `agentTemplate`. The agent is opened
 * and started first, as `agent run` does before any card (timed apart: startCpuMs). The metered
 * span is card-present → result.
 */
export async function measureOnboarding(
  cardState: CardState,
  agentTemplate: string,
  profile: LatencyProfile,
  /** With an SCP vendor CA: the card gets an SCP11b key from it and the agent requires the channel. */
  scpVendor?: IssuerCredentials,
): Promise<MeasuredOnboarding> {
  const stateDir = await freshAgentDir(agentTemplate);
  const meter = new ApduMeter(profile);
  const card = new VirtualPivCard({ store: new MemoryCardStateStore(cardState), profile: profile.card });
  // Loaded only for the SCP11 runs: it brings the issuing side of the PKI (@peculiar/x509, ≈ 18 MiB),
  // which is the emulated card's, not the agent's, and would count in the agent child's maxRSS.
  if (scpVendor) {
    const { provisionScpKey } = await import("../src/card-emulator/scp-provision.js");
    await provisionScpKey(card, scpVendor);
  }
  const channel = scpVendor
    ? secureChannelPolicy([new Uint8Array(scpVendor.certificate.rawData)], false)
    : undefined;
  try {
    const startCpu = process.cpuUsage();
    const agent = await Agent.open({ stateDir, net: "dry-run" });
    try {
      await agent.start();
      const startUsed = process.cpuUsage(startCpu);
      const cpu = process.cpuUsage();
      const started = performance.now();
      const element = await PivElement.open(
        new InProcessTransport(new MeteredCard(card, meter), { readerName: "bench virtual card" }),
        channel ? { channel } : {},
      );
      let result: OnboardingResult;
      try {
        result = await agent.onboard(element, { read: async () => BENCH_PIN });
      } finally {
        await element.close();
      }
      const wallMs = performance.now() - started;
      const used = process.cpuUsage(cpu);
      return {
        result,
        meter,
        totals: meter.totals,
        wallMs,
        cpuMs: (used.user + used.system) / 1000,
        startCpuMs: (startUsed.user + startUsed.system) / 1000,
      };
    } finally {
      await agent.close();
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** Data-object bytes read: GET DATA and GET RESPONSE answers, SW included (deterministic per card). */
export function objectBytesRead(meter: ApduMeter): number {
  let total = 0;
  for (const o of meter.objects().values()) total += o.bytesIn;
  return total;
}
