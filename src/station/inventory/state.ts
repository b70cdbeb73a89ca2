/** How one HSM's inventory row reads, for `station inventory` and the rack view. */
import type { HsmState } from "./inventory.js";

/** What an HSM's row says: planned, on a card, onboarded ✓, failed ✗ (reason), dry run. */
export function stateOf(s: HsmState): { state: string; detail: string } {
  const r = s.receipt;
  if (r && (s.written === undefined || r.sequence === undefined || r.sequence >= s.written.sequence)) {
    if (!r.verified) return { state: "receipt ✗", detail: r.reason ?? "not verified" };
    if (r.dryRun) return { state: "dry run", detail: r.outcomeName ?? "" };
    if (r.outcome === 0) return { state: "onboarded ✓", detail: r.addresses.join(", ") };
    return { state: "failed ✗", detail: `${r.outcomeName ?? "?"} (exit ${r.outcome ?? "?"})` };
  }
  if (s.written) return { state: "on card", detail: `card ${s.written.cardSerial ?? "?"}` };
  return { state: "planned", detail: "" };
}

export function hsmStateJson(s: HsmState) {
  const { state, detail } = stateOf(s);
  return {
    owner: s.owner,
    serial: s.serial,
    hostname: s.hostname,
    state,
    detail,
    planDigest: s.planDigest,
    plannedAt: s.plannedAt.toISOString(),
    written: s.written ? { ...s.written, at: s.written.at.toISOString() } : null,
    receipt: s.receipt ? { ...s.receipt, at: s.receipt.at.toISOString() } : null,
  };
}
