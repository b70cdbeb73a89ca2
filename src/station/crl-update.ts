/**
 * Taking a token CA's CRL into the station (`station init --crl`, `station update-crl`): the CRL must
 * be signed by a token CA that the station's trust anchor issued, be current, and be at least as new
 * as the CRL the station holds for that token CA (an older CRL number is a rollback: ReplayError,
 * exit 17). The station writes the CRL onto every card it configures (SPEC.md §4 Revocation), so an
 * agent checks the same list.
 */

import { ReplayError, UsageError } from "../errors.js";
import { isDeviceCa } from "../pki/ca-facts.js";
import { crlParts } from "../pki/der.js";
import { type X509Certificate, X509Crl } from "../util/x509.js";
import type { Inventory } from "./inventory/inventory.js";
import { stationName } from "./inventory/open.js";
import { withInventory } from "./sequence-store.js";
import {
  crlPath,
  issuerId,
  readCrlOf,
  readIssuers,
  readTrustAnchor,
  storeCrl,
  storeIssuer,
  withStationLock,
} from "./station-dir.js";
import { appendJournal } from "./station-journal.js";
import { checkTokenCa, crlIssuedUnder, verifyCrlSignedBy } from "./trust.js";

export interface CrlUpdate {
  readonly crl: X509Crl;
  readonly crlNumber: bigint;
  /** CRL number the station held before for this token CA. */
  readonly previousNumber?: bigint;
  readonly issuer: X509Certificate;
  /** The station already held exactly this CRL. */
  readonly unchanged: boolean;
  readonly path: string;
}

export interface UpdateCrlOptions {
  /**
   * A device CA's CRL (`station update-crl --device`, issue 10): its issuer must be a device CA
   * (CA-level EKU device only) under the trust anchor. Receipts of the devices it revokes are then
   * shown as revoked.
   */
  readonly device?: boolean;
  /** Candidate token CA certificates (from --issuer or from a card), besides those the station keeps. */
  readonly issuers?: readonly X509Certificate[];
  readonly now?: Date;
  /** The inventory that records the event (default: the station's SQLite inventory). */
  readonly inventory?: Inventory;
}

/** How a CRL reads in the inventory's journal: issuer, what it revokes, what it replaces. */
export function crlDetail(crl: X509Crl, previous?: bigint): string {
  const serials = crl.entries.map((e) => e.serialNumber.toLowerCase());
  const shown = serials.slice(0, 10).join(", ");
  const revoked =
    serials.length === 0
      ? "revokes nothing"
      : `revokes ${serials.length} certificate${serials.length === 1 ? "" : "s"} (serial ${shown}${serials.length > 10 ? ", …" : ""})`;
  return `"${crl.issuer}" ${revoked}${previous === undefined ? "" : `, replacing CRL number ${previous}`}`;
}

/** Parses a CRL given as PEM or DER bytes; UsageError when it is not one. */
export function parseCrlFile(bytes: Uint8Array, shownAs: string): X509Crl {
  try {
    const text = Buffer.from(bytes).toString("latin1");
    return text.includes("-----BEGIN")
      ? new X509Crl(text)
      : new X509Crl(new Uint8Array(bytes).slice().buffer);
  } catch (cause) {
    throw new UsageError(`${shownAs} is not a readable CRL (PEM or DER)`, { cause });
  }
}

export async function updateStationCrl(
  stationDir: string,
  crl: X509Crl,
  options: UpdateCrlOptions = {},
): Promise<CrlUpdate> {
  const now = options.now ?? new Date();
  const anchor = await readTrustAnchor(stationDir);
  const candidates = [...(options.issuers ?? []), ...(await readIssuers(stationDir))].filter((c) =>
    crlIssuedUnder(crl, c),
  );
  if (candidates.length === 0) {
    throw new UsageError(
      `the CRL was issued by "${crl.issuer}", a token CA this station does not know yet: ` +
        "give its certificate with --issuer FILE, or read it from the officer's card with --from-card",
    );
  }
  let issuer: X509Certificate | undefined;
  let crlNumber: bigint | undefined;
  let failure: unknown;
  for (const candidate of candidates) {
    try {
      await checkTokenCa(candidate, anchor, now);
      if (options.device === true && !isDeviceCa(candidate)) {
        throw new UsageError(
          `"${candidate.subject}" is not a device CA (CA-level extendedKeyUsage device only)`,
        );
      }
      if (options.device !== true && isDeviceCa(candidate)) {
        throw new UsageError(`"${candidate.subject}" is a device CA: take its CRL with --device`);
      }
      crlNumber = await verifyCrlSignedBy(crl, candidate, now);
      issuer = candidate;
      break;
    } catch (error) {
      failure ??= error;
    }
  }
  if (!issuer || crlNumber === undefined) throw failure;
  const verifiedIssuer = issuer;
  const verifiedNumber = crlNumber;

  return withStationLock(stationDir, "crl", async () => {
    const stored = await readCrlOf(stationDir, crlParts(crl.rawData).issuer);
    if (stored) {
      if (verifiedNumber < stored.crlNumber) {
        throw new ReplayError(
          `CRL number ${verifiedNumber} is older than the station's CRL number ${stored.crlNumber} of "${crl.issuer}": refused`,
        );
      }
      if (verifiedNumber === stored.crlNumber) {
        if (Buffer.from(stored.crl.rawData).equals(Buffer.from(crl.rawData))) {
          if (options.device !== true) await storeIssuer(stationDir, verifiedIssuer);
          return {
            crl,
            crlNumber: verifiedNumber,
            previousNumber: stored.crlNumber,
            issuer: verifiedIssuer,
            unchanged: true,
            path: crlPath(stationDir, crl),
          };
        }
        throw new ReplayError(
          `a different CRL with the same CRL number ${verifiedNumber} as the station's: refused (a token CA never reuses a number)`,
        );
      }
    }
    if (options.device !== true) await storeIssuer(stationDir, verifiedIssuer); // issuers/: token CAs
    const path = await storeCrl(stationDir, crl);
    const key = issuerId(crlParts(crl.rawData).issuer);
    await appendJournal(stationDir, "crl", key, verifiedNumber, now);
    // The inventory's journal too (issue 14): `station history` shows what the CRL revokes.
    await withInventory(stationDir, options.inventory, (inventory) =>
      inventory.appendJournal({
        event: options.device === true ? "crl-device" : "crl",
        key,
        number: String(verifiedNumber),
        station: stationName(stationDir),
        time: now,
        detail: crlDetail(crl, stored?.crlNumber),
      }),
    );
    return {
      crl,
      crlNumber: verifiedNumber,
      ...(stored ? { previousNumber: stored.crlNumber } : {}),
      issuer: verifiedIssuer,
      unchanged: false,
      path,
    };
  });
}
