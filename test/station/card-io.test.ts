/**
 * What the station costs in card I/O (SPEC.md §9 counts APDUs): a write is one capacity scan of the
 * card (PivElement reads every object once: ~291 GET DATA, ~0.4 s on a YubiKey) plus a few dozen
 * commands whatever the plan size; reading receipts reads only the receipt objects in use.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeCommandApdu } from "../../src/apdu/command.js";
import { loadPlanFile } from "../../src/config/plan.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import { readReceipts } from "../../src/station/read-receipts.js";
import { writeConfigurationToCard } from "../../src/station/write-card.js";
import {
  EXAMPLES,
  generatedPlan,
  makePki,
  makeStation,
  type PersonalisedCard,
  PIN,
  personaliseCard,
  removeTempDirs,
  type TestPki,
} from "./fixtures.js";

/** GET DATA over the PIV objects 5FC101–5FC123 and the vendor range 5FFF00–5FFFFF. */
const CAPACITY_SCAN = 0x23 + 0x100;

let pki: TestPki;
let counted: { card: PersonalisedCard; counts: Map<number, number> };
beforeAll(async () => {
  pki = await makePki();
  const counts = new Map<number, number>();
  const card = await personaliseCard(pki, {
    intercept: (command, next) => {
      const ins = decodeCommandApdu(command).ins;
      counts.set(ins, (counts.get(ins) ?? 0) + 1);
      return next(command);
    },
  });
  counted = { card, counts };
});
afterAll(removeTempDirs);

function total(counts: Map<number, number>): number {
  return [...counts.values()].reduce((a, b) => a + b, 0);
}

describe("card I/O of the station", () => {
  it("a write is one capacity scan plus a small constant number of commands", async () => {
    const stationDir = await makeStation(pki);
    const perPlan: number[] = [];
    for (const plan of [
      await loadPlanFile(join(EXAMPLES, "rack-4.yaml")),
      await loadPlanFile(join(EXAMPLES, "room-40.yaml")),
      generatedPlan(300),
    ]) {
      counted.counts.clear();
      const c = await openInProcessCard(counted.card.card);
      await writeConfigurationToCard({ element: c.element, plan, stationDir, pin: PIN });
      await c.dispose();
      const apdus = total(counted.counts);
      perPlan.push(apdus);
      // Signing: 9E challenge + 9C signature + management-key authentication (2 steps).
      expect(counted.counts.get(0x87)).toBe(4);
      expect(apdus - CAPACITY_SCAN).toBeLessThan(80);
    }
    console.info(`station write APDUs (rack-4, room-40, 300 HSMs): ${perPlan.join(", ")}`);
  });

  it("reading receipts reads the manifest and the receipt objects in use, nothing else", async () => {
    const stationDir = await makeStation(pki);
    counted.counts.clear();
    const c = await openInProcessCard(counted.card.card);
    await readReceipts({ element: c.element, stationDir });
    await c.dispose();
    expect(total(counted.counts)).toBeLessThanOrEqual(6);
  });
});
