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

/**
 * Whether the receipt shows the HSM applied what the inventory recorded as its plan: the network
 * digest it reported against the plan entry's state digest. undefined when either is not known.
 */
export function digestMatch(s: HsmState): boolean | undefined {
  const reported = s.receipt?.networkDigest;
  if (reported === undefined || s.stateDigest === undefined) return undefined;
  return reported === s.stateDigest;
}

/** One HSM in full (`station inventory --json`, the rack view's detail). */
export function hsmStateJson(s: HsmState) {
  const { state, detail } = stateOf(s);
  const match = digestMatch(s);
  return {
    owner: s.owner,
    serial: s.serial,
    hostname: s.hostname,
    state,
    detail,
    planDigest: s.planDigest,
    plannedAt: s.plannedAt.toISOString(),
    plannedAddresses: s.addresses,
    plannedStateDigest: s.stateDigest ?? null,
    written: s.written ? { ...s.written, at: s.written.at.toISOString() } : null,
    receipt: s.receipt
      ? {
          ...s.receipt,
          time: s.receipt.time?.toISOString() ?? null,
          at: s.receipt.at.toISOString(),
          digestMatchesPlan: match ?? null,
        }
      : null,
  };
}

/** The states in the order the rack view's compact list numbers them. */
export const VIEW_STATES = ["planned", "on card", "onboarded ✓", "failed ✗", "receipt ✗", "dry run"] as const;

/**
 * The rack view's first load, compact: the plans once, then per HSM one short array
 * [plan index, serial, hostname, state index, detail] instead of an object with every field (the
 * full record is fetched for the one HSM a person opens).
 */
export function compactInventory(states: readonly HsmState[], mark: string) {
  const plans: { owner: string; digest: string }[] = [];
  const planIndex = new Map<string, number>();
  const rows: [number, string, string, number, string][] = [];
  for (const s of states) {
    let p = planIndex.get(s.planDigest);
    if (p === undefined) {
      p = plans.length;
      planIndex.set(s.planDigest, p);
      plans.push({ owner: s.owner, digest: s.planDigest });
    }
    const { state, detail } = stateOf(s);
    const code = (VIEW_STATES as readonly string[]).indexOf(state);
    rows.push([p, s.serial, s.hostname, Math.max(code, 0), detail]);
  }
  return { mark, states: VIEW_STATES, plans, hsms: rows };
}
