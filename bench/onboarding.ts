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
  /**
   * The same figures at "network configured" (SPEC.md §9): the moment `configured` is persisted,
   * before the receipt is signed and written (the agent's `after-persist-before-receipt` point).
   * Undefined when the onboarding did not get there.
   */
  readonly configured?: {
    readonly totals: MeterTotals;
    readonly wallMs: number;
    readonly cpuMs: number;
  };
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
  /**
   * SCP11b: with an SCP vendor CA the card first gets an SCP11b key from it; with `anchor` alone the
   * card state already holds one (provisioned by the parent, so that a child process does not load
   * the issuing side of the PKI). Either way the agent requires the channel to that anchor.
   */
  scp?: IssuerCredentials | { readonly anchor: Uint8Array },
  /** The agent's warm-up at start (Agent.open `warmUp`, default true): false measures a truly cold agent. */
  warmUp = true,
): Promise<MeasuredOnboarding> {
  const stateDir = await freshAgentDir(agentTemplate);
  const meter = new ApduMeter(profile);
  const card = new VirtualPivCard({ store: new MemoryCardStateStore(cardState), profile: profile.card });
  let anchor: Uint8Array | undefined;
  if (scp && "anchor" in scp) {
    anchor = scp.anchor;
  } else if (scp) {
    // Loaded only for these runs: it brings the issuing side of the PKI (@peculiar/x509, ≈ 18 MiB),
    // which is the emulated card's, not the agent's, and would count in an agent child's maxRSS.
    const { provisionScpKey } = await import("../src/card-emulator/scp-provision.js");
    await provisionScpKey(card, scp);
    anchor = new Uint8Array(scp.certificate.rawData);
  }
  const channel = anchor ? secureChannelPolicy([anchor], false) : undefined;
  try {
    let span: { cpu: NodeJS.CpuUsage; started: number } | undefined;
    let configured: MeasuredOnboarding["configured"];
    const startCpu = process.cpuUsage();
    const agent = await Agent.open({
      stateDir,
      net: "dry-run",
      warmUp,
      // Not a fault: the crash points are where the agent's steps meet; this one is right after
      // `configured` is on disk, which is where SPEC.md §9's "network configured" ends.
      faults: {
        reached: (point) => {
          if (point !== "after-persist-before-receipt" || !span) return;
          const used = process.cpuUsage(span.cpu);
          configured = {
            totals: meter.totals,
            wallMs: performance.now() - span.started,
            cpuMs: (used.user + used.system) / 1000,
          };
        },
      },
    });
    try {
      await agent.start();
      const startUsed = process.cpuUsage(startCpu);
      const cpu = process.cpuUsage();
      const started = performance.now();
      span = { cpu, started };
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
        ...(configured ? { configured } : {}),
      };
    } finally {
      await agent.close();
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** A copy of `cardState` with an SCP11b key (13/01) from `vendor`, as a card vendor provisions it. */
export async function withScpKey(cardState: CardState, vendor: IssuerCredentials): Promise<CardState> {
  const store = new MemoryCardStateStore(cardState);
  const { provisionScpKey } = await import("../src/card-emulator/scp-provision.js");
  await provisionScpKey(new VirtualPivCard({ store }), vendor);
  const provisioned = store.load();
  if (!provisioned) throw new Error("the provisioned card left no state");
  return provisioned;
}

/** Data-object bytes read: GET DATA and GET RESPONSE answers, SW included (deterministic per card). */
export function objectBytesRead(meter: ApduMeter): number {
  let total = 0;
  for (const o of meter.objects().values()) total += o.bytesIn;
  return total;
}
