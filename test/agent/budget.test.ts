/**
 * Card I/O and host CPU of one onboarding (SPEC.md §9, measured, not timed): the APDUs and bytes the
 * agent exchanges with the card, for the example plans and for generated plans of 1, 40 and 1,000
 * HSMs of the same shape. The agent reads the manifest and one shard, so the card I/O is bounded
 * by the largest shard, whatever the size of the plan.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { MAX_ITEM_BYTES } from "../../src/secure-element/card-layout.js";
import { generatePlan } from "../config/signing-fixtures.js";
import {
  ApduCounter,
  createTestPki,
  examplePlan,
  initAgent,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  type TestPki,
  tempDir,
  writeConfig,
} from "./fixtures.js";

let base: { dir: string; cleanup: () => Promise<void> };
let testPki: TestPki;
let crl: Uint8Array;
beforeAll(async () => {
  base = await tempDir();
  testPki = await createTestPki(base.dir);
  crl = await testPki.crl(1);
});
afterAll(async () => {
  await base.cleanup();
});

interface Measured {
  apdus: number;
  bytesRead: number;
  bytesSent: number;
  manifestBytes: number;
  shardBytes: number;
  hostCpuMs: number;
}

let run = 0;
/** Onboards the HSM `serial` of `plan` once on a fresh card and agent; counts APDUs and host CPU. */
async function measure(plan: NetworkPlan, serial: string): Promise<Measured> {
  const { card } = await personalizeCard(testPki.pki.tokenCa);
  const encoded = await writeConfig(card, plan, { sequence: 1, crl });
  const { stateDir } = await initAgent(base.dir, testPki, { serial, crl, name: `m${++run}` });
  const agent = await startAgent(stateDir, await DryRunBackend.open({}));
  const counter = new ApduCounter();
  const element = await openElement(card, counter);
  try {
    const before = process.cpuUsage();
    const result = await agent.onboard(element, pins(PIN));
    const cpu = process.cpuUsage(before);
    expect(result.exitCode, result.error?.message).toBe(0);
    const shard =
      encoded.shards.find((s) => s.firstSerial <= serial && serial <= s.lastSerial) ?? encoded.shards[0]!;
    return {
      apdus: counter.commands,
      bytesRead: counter.bytesReceived,
      bytesSent: counter.bytesSent,
      manifestBytes: encoded.manifest.length,
      shardBytes: shard.bytes.length,
      hostCpuMs: (cpu.user + cpu.system - counter.cardCpuMicros) / 1000,
    };
  } finally {
    await element.close();
    await agent.close();
  }
}

describe("card I/O per onboarding", () => {
  test("example plans: rack-4 and room-40", async () => {
    const rack = await measure(await examplePlan("rack-4.yaml"), "1234567");
    const room = await measure(await examplePlan("room-40.yaml"), "1500001");
    console.log(`card I/O per onboarding: rack-4 ${JSON.stringify(rack)}; room-40 ${JSON.stringify(room)}`);
    for (const m of [rack, room]) {
      expect(m.bytesRead).toBeLessThan(m.manifestBytes + m.shardBytes + 3000);
      expect(m.apdus).toBeLessThan(40);
    }
  });

  test("the same APDU count for 1, 40 and 1,000 HSMs; bytes bounded by one shard", async () => {
    const results: Record<number, Measured> = {};
    for (const n of [1, 40, 1000]) {
      const plan = generatePlan(n);
      results[n] = await measure(plan, plan.hsms[0]!.serial);
    }
    console.log(`card I/O by plan size: ${JSON.stringify(results)}`);
    // Whatever the plan size: the manifest and one shard, each read in the same number of APDUs
    // (a PIV object up to 3,063 bytes is one GET DATA plus GET RESPONSE pieces).
    expect(results[1000]!.apdus - results[1]!.apdus).toBeLessThanOrEqual(24);
    for (const m of Object.values(results)) {
      expect(m.bytesRead - m.manifestBytes - m.shardBytes).toBeLessThan(3000);
      expect(m.shardBytes).toBeLessThanOrEqual(MAX_ITEM_BYTES);
    }
  });

  test("host-side CPU per onboarding (median of 9, warm)", async () => {
    const plan = await examplePlan("room-40.yaml");
    const samples: number[] = [];
    for (let i = 0; i < 9; i++) samples.push((await measure(plan, "1500001")).hostCpuMs);
    samples.sort((a, b) => a - b);
    console.log(
      `agent host CPU per onboarding (ms, card emulator excluded): median ${samples[4]!.toFixed(1)}, all ${samples.map((s) => s.toFixed(1)).join(" ")}`,
    );
    expect(samples[4]).toBeGreaterThan(0);
  });
});
