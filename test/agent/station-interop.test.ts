/**
 * The loop closed end to end, in-process: the station writes a configuration with its own flow
 * (src/station/write-card.ts), four agents of rack-4 onboard from the same card, and the station
 * reads their receipts back and verifies each against the plan (src/station/read-receipts.ts).
 */
import { join } from "node:path";
import { expect, test } from "vitest";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { parseCrlFile, updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { readReceipts } from "../../src/station/read-receipts.js";
import { writeConfigurationToCard } from "../../src/station/write-card.js";
import {
  examplePlan,
  initAgent,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  useTestPki,
} from "./fixtures.js";

const bed = useTestPki();

test("station writes rack-4, four HSMs onboard from one card, the station verifies every receipt", async () => {
  const stationDir = join(bed.dir, "station");
  const crl = await bed.testPki.crl(1);
  await initStation(stationDir, bed.testPki.pki.root.certificate);
  await updateStationCrl(stationDir, parseCrlFile(crl, "crl"), {
    issuers: [bed.testPki.pki.tokenCa.certificate],
  });

  const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
  const plan = await examplePlan("rack-4.yaml");
  const station = await openElement(card);
  try {
    const written = await writeConfigurationToCard({ element: station, plan, stationDir, pin: PIN });
    expect(written.hsms).toBe(4);
  } finally {
    await station.close();
  }

  for (const hsm of plan.hsms) {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, { serial: hsm.serial, crl });
    const agent = await startAgent(stateDir, await DryRunBackend.open({}));
    const element = await openElement(card);
    try {
      const result = await agent.onboard(element, pins(PIN));
      expect(result, result.error?.message).toMatchObject({
        ok: true,
        hostname: hsm.hostname,
        receipt: { written: true },
      });
    } finally {
      await element.close();
      await agent.close();
    }
  }

  const reader = await openElement(card);
  try {
    const report = await readReceipts({ element: reader, stationDir });
    expect(report.receipts).toHaveLength(4);
    // These agents ran the dry-run applier: genuine receipts for the planned state, shown as a dry
    // run — never as configured, and with no address claimed as applied (issue 12).
    for (const row of report.receipts) {
      expect(row, row.reason).toMatchObject({
        authentic: true,
        current: true,
        verified: true,
        outcome: 0,
        dryRun: true,
        outcomeName: "dry run — nothing applied",
        addresses: [],
      });
    }
    expect(report.receipts.map((r) => r.hostname).sort()).toEqual(plan.hsms.map((h) => h.hostname).sort());
  } finally {
    await reader.close();
  }
});
