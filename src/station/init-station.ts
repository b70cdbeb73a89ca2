/**
 * `station init`: the station directory with its trust anchor, the manufacturer root every card
 * chain must lead to. Re-running it with the same root changes nothing; another root needs `force`,
 * and then the token CAs and CRLs kept under the old root are dropped (they no longer chain to
 * anything trusted). Sequence counters and TOTP enrolments are kept: numbers must never go back.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import type { X509Certificate } from "../util/x509.js";
import { readTrustAnchorIfAny, STATION_FILES, withStationLock, writeTrustAnchor } from "./station-dir.js";
import { checkTrustAnchor } from "./trust.js";

export type InitOutcome = "created" | "unchanged" | "replaced";

export async function initStation(
  stationDir: string,
  trustAnchor: X509Certificate,
  options: { readonly force?: boolean; readonly now?: Date } = {},
): Promise<InitOutcome> {
  const now = options.now ?? new Date();
  await checkTrustAnchor(trustAnchor, now);
  return withStationLock(stationDir, "crl", async () => {
    const existing = await readTrustAnchorIfAny(stationDir);
    if (existing && Buffer.from(existing.rawData).equals(Buffer.from(trustAnchor.rawData)))
      return "unchanged";
    if (existing && !options.force) {
      throw new UsageError(
        `${stationDir} already trusts "${existing.subject}"; pass --force to replace the trust anchor ` +
          "(the token CAs and CRLs kept under the old one are dropped)",
      );
    }
    if (existing) {
      await rm(join(stationDir, STATION_FILES.crls), { recursive: true, force: true });
      await rm(join(stationDir, STATION_FILES.issuers), { recursive: true, force: true });
    }
    await writeTrustAnchor(stationDir, trustAnchor, now);
    return existing ? "replaced" : "created";
  });
}
