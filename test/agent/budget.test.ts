/**
 * Card I/O and host CPU of one onboarding (SPEC.md §9, measured, not timed): the APDUs and bytes the
 * agent exchanges with the card, for the example plans and for generated plans of 1, 40 and 1,000
 * HSMs of the same shape. The agent reads the manifest and one shard, so the card I/O is bounded
 * by the largest shard, whatever the size of the plan. Host CPU is a benchmark, not a timed test
 * (SPEC.md §9): `npm run bench` measures it (bench/agent-host.ts).
 */
import { describe, expect, test } from "vitest";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { MAX_ITEM_BYTES } from "../../src/secure-element/card-layout.js";
import { generatePlan } from "../config/signing-fixtures.js";
import {
  ApduCounter,
  examplePlan,
  initAgent,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  useTestPki,
  writeConfig,
} from "./fixtures.js";

const bed = useTestPki();

interface Measured {
  apdus: number;
  bytesRead: number;
  bytesSent: number;
  manifestBytes: number;
  shardBytes: number;
  /** Instruction and response length of every APDU, in order. */
  exchanges: { ins: number; received: number }[];
}

let run = 0;
/** Onboards the HSM `serial` of `plan` once on a fresh card and agent; counts APDUs and host CPU. */
async function measure(plan: NetworkPlan, serial: string): Promise<Measured> {
  const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
  const encoded = await writeConfig(card, plan, { sequence: 1, crl: bed.crl1 });
  const { stateDir } = await initAgent(bed.dir, bed.testPki, { serial, crl: bed.crl1, name: `m${++run}` });
  const agent = await startAgent(stateDir, await DryRunBackend.open({}));
  const counter = new ApduCounter();
  const element = await openElement(card, counter);
  try {
    const result = await agent.onboard(element, pins(PIN));
    expect(result.exitCode, result.error?.message).toBe(0);
    const shard =
      encoded.shards.find((s) => s.firstSerial <= serial && serial <= s.lastSerial) ?? encoded.shards[0]!;
    return {
      apdus: counter.commands,
      bytesRead: counter.bytesReceived,
      bytesSent: counter.bytesSent,
      manifestBytes: encoded.manifest.length,
      shardBytes: shard.bytes.length,
      exchanges: counter.exchanges,
    };
  } finally {
    await element.close();
    await agent.close();
  }
}

/** The instruction of every APDU, in order. */
function instructions(m: Measured): string[] {
  return m.exchanges.map(({ ins }) => ins.toString(16).padStart(2, "0"));
}

/**
 * Bytes read may differ only by the lengths of the ECDSA signatures in DER (70 to 72 bytes for
 * P-256, by the leading bits of r and s) in what each onboarding reads from a freshly issued card:
 * the card's two certificates and its signature over the agent's challenge.
 */
const DER_SIGNATURE_SPREAD = 3 * 2;

describe("card I/O per onboarding", () => {
  test("example plans: rack-4 and room-40 exchange the same APDUs", async () => {
    const rack = await measure(await examplePlan("rack-4.yaml"), "1234567");
    const room = await measure(await examplePlan("room-40.yaml"), "1500001");
    console.log(`card I/O per onboarding: rack-4 ${summary(rack)}; room-40 ${summary(room)}`);
    expect(room.apdus).toBe(rack.apdus);
    expect(instructions(room)).toEqual(instructions(rack));
    expect(Math.abs(room.bytesRead - rack.bytesRead)).toBeLessThanOrEqual(DER_SIGNATURE_SPREAD);
    for (const m of [rack, room]) {
      // The manifest and the shard are fixed-size objects: each is read whole, once.
      expect(m.manifestBytes).toBe(MAX_ITEM_BYTES);
      expect(m.shardBytes).toBe(MAX_ITEM_BYTES);
      expect(m.bytesRead).toBeLessThan(m.manifestBytes + m.shardBytes + 3000);
    }
  });

  test("the same APDU count for 1, 40 and 1,000 HSMs; bytes bounded by one shard", async () => {
    const results: Record<number, Measured> = {};
    for (const n of [1, 40, 1000]) {
      const plan = generatePlan(n);
      results[n] = await measure(plan, plan.hsms[0]!.serial);
    }
    console.log(
      `card I/O by plan size: ${[1, 40, 1000].map((n) => `${n}: ${summary(results[n]!)}`).join("; ")}`,
    );
    // Whatever the plan size: the manifest and one shard, each read in the same APDUs, so the same
    // count and the same instructions in the same order; the bytes differ only by signature lengths.
    for (const n of [40, 1000]) {
      expect(results[n]!.apdus).toBe(results[1]!.apdus);
      expect(instructions(results[n]!)).toEqual(instructions(results[1]!));
      expect(Math.abs(results[n]!.bytesRead - results[1]!.bytesRead)).toBeLessThanOrEqual(
        DER_SIGNATURE_SPREAD,
      );
    }
    for (const m of Object.values(results)) {
      expect(m.bytesRead - m.manifestBytes - m.shardBytes).toBeLessThan(3000);
      expect(m.shardBytes).toBe(MAX_ITEM_BYTES);
    }
  });
});

function summary(m: Measured): string {
  return `${m.apdus} APDUs, ${m.bytesRead} bytes read, ${m.bytesSent} sent (manifest ${m.manifestBytes}, shard ${m.shardBytes})`;
}
