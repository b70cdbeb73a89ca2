/** From the station's results (plans, writes, receipt reports) to inventory records. */
import { createHash } from "node:crypto";
import type { NetworkPlan } from "../../config/plan-model.js";
import { networkStateDigest } from "../../config/shard.js";
import type { ReceiptReport } from "../read-receipts.js";
import { withInventory } from "../sequence-store.js";
import type { WriteResult } from "../write-card.js";
import type { Inventory, PlanRecord, ReceiptRecord, WriteRecord } from "./inventory.js";
import { stationName } from "./open.js";

/** SHA-256 of the validated plan's JSON form (the parser fixes the key order), hex. */
export function planDigest(plan: NetworkPlan): string {
  return createHash("sha256").update(JSON.stringify(plan)).digest("hex");
}

/**
 * The plan as the inventory keeps it. Each HSM's state digest is networkStateDigest of its entry with
 * the subnets it uses — what the agent reports in its receipt after applying exactly this entry, so
 * the rack view can compare a receipt with the plan the inventory recorded (not only with the card).
 */
export function planRecordOf(plan: NetworkPlan, recordedAt: Date = new Date()): PlanRecord {
  const subnets = new Map(plan.subnets.map((s) => [s.name, s]));
  return {
    digest: planDigest(plan),
    owner: plan.owner,
    recordedAt,
    hsms: plan.hsms.map((h) => ({
      serial: h.serial,
      hostname: h.hostname,
      addresses: h.interfaces.flatMap((i) => [
        ...(i.ipv4 === undefined ? [] : [`${i.name} ${i.ipv4}`]),
        ...(i.ipv6 === undefined ? [] : [`${i.name} ${i.ipv6}`]),
      ]),
      stateDigest: Buffer.from(
        networkStateDigest({
          hsm: h,
          subnets: [...new Set(h.interfaces.map((i) => i.subnet))].flatMap((name) => {
            const subnet = subnets.get(name);
            return subnet ? [subnet] : [];
          }),
        }),
      ).toString("hex"),
    })),
  };
}

export function writeRecordOf(result: WriteResult, digest: string): WriteRecord {
  return {
    kind: "write",
    configurationId: result.configurationId,
    owner: result.owner,
    sequence: result.sequence,
    planDigest: digest,
    ...(result.card.serial === undefined ? {} : { cardSerial: result.card.serial }),
    cardName: result.card.name,
    ...(result.officer === undefined ? {} : { officer: result.officer }),
    writtenAt: result.issuedAt,
    hsms: result.hsms,
  };
}

/**
 * Every row of a receipt report, verified or not. `station` names the verifying station (its
 * stationName) for the receipt's "verified by".
 */
export function receiptRecordsOf(
  report: ReceiptReport,
  collectedAt: Date = new Date(),
  station?: string,
): ReceiptRecord[] {
  const anchor = report.trustAnchor === undefined ? "" : ` to trust anchor "${report.trustAnchor}"`;
  return report.receipts.map((r) => ({
    ...(r.serial === undefined ? {} : { serial: r.serial }),
    ...(r.hostname === undefined ? {} : { hostname: r.hostname }),
    ...(r.configurationId === undefined ? {} : { configurationId: r.configurationId }),
    ...(r.sequence === undefined ? {} : { sequence: r.sequence }),
    ...(r.outcome === undefined ? {} : { outcome: r.outcome }),
    ...(r.outcomeName === undefined ? {} : { outcomeName: r.outcomeName }),
    verified: r.verified,
    authentic: r.authentic,
    ...(r.reason === undefined ? {} : { reason: r.reason }),
    addresses: r.addresses,
    ...(r.stateDigest === undefined ? {} : { networkDigest: r.stateDigest }),
    ...(r.plannedDigest === undefined ? {} : { planDigest: r.plannedDigest }),
    // Receipts without the dry-run flag are from appliers that apply (issue 12): known only when authentic.
    ...(r.authentic ? { dryRun: r.dryRun === true } : {}),
    // The receipt's channel (issue 11): SCP11… or plaintext; NULL when the receipt does not say.
    ...(r.channel === undefined ? {} : { scp: /^scp/i.test(r.channel), channel: r.channel }),
    ...(r.deviceSubject === undefined ? {} : { deviceSubject: r.deviceSubject }),
    verifiedBy: `${station === undefined ? "the station" : `station ${station}`}: COSE signature with the device certificate's key, device chain${
      r.deviceCa === undefined ? "" : ` via "${r.deviceCa}"`
    }${anchor}`,
    ...(r.time === undefined ? {} : { time: r.time }),
    ...(report.card.serial === undefined ? {} : { cardSerial: report.card.serial }),
    collectedAt,
  }));
}

/** Records every row of a receipt report in `inventory` (default: the station's SQLite inventory). */
export function recordReceiptReport(
  stationDir: string,
  report: ReceiptReport,
  inventory?: Inventory,
  collectedAt: Date = new Date(),
): Promise<number> {
  return withInventory(stationDir, inventory, (i) =>
    i.recordReceipts(receiptRecordsOf(report, collectedAt, stationName(stationDir))),
  );
}
