/**
 * Receipts mid-room (issue 13, `station receipts --collect`): the receipts on a card are verified,
 * archived durably in the station directory, and only then cleared from the card, so that the next
 * rack's receipts fit.
 *
 *   1. read and verify every receipt (read-receipts.ts)
 *   2. a receipt object is collectable only when every receipt in it is verified (signature, device
 *      chain, serial binding, the card's current configuration, the planned state); objects holding a
 *      forged, unreadable or foreign receipt stay on the card untouched (exit 15)
 *   3. archive the raw bytes of the collectable objects with the report (receipts-archive/, written
 *      to a temporary file, fsync, rename, fsync of the directory), then read the archive back and
 *      compare it byte for byte with the card
 *   4. the officer's PIN (deleting objects needs it); each object is read again and deleted only if
 *      it is still exactly the archived bytes; the card is listed again to confirm
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError, PinBlockedError } from "../errors.js";
import { parseItemName, type SecureElement } from "../secure-element/secure-element.js";
import { bytesEqual } from "../util/bytes.js";
import { type ReceiptReport, readReceipts } from "./read-receipts.js";
import { jsonText, STATION_FILES, writeStationFile } from "./station-dir.js";
import type { PinRequest, SecretInput } from "./write-card.js";

export interface CollectReceiptsOptions {
  readonly element: SecureElement;
  readonly stationDir: string;
  readonly pin: SecretInput<PinRequest>;
  readonly now?: Date;
  readonly onProgress?: (message: string) => void;
}

export interface CollectResult {
  readonly report: ReceiptReport;
  /** Receipt objects archived and cleared from the card. */
  readonly cleared: readonly string[];
  /** Receipt objects left on the card, with why. */
  readonly kept: readonly { readonly item: string; readonly reason: string }[];
  /** The archive file, when anything was archived. */
  readonly archive?: string;
  readonly receiptsArchived: number;
  /** The card's free bytes after clearing. */
  readonly freeBytes: number;
}

/** `receipt-0[2]` → `receipt-0`. */
function itemOf(location: string): string {
  const bracket = location.indexOf("[");
  return bracket < 0 ? location : location.slice(0, bracket);
}

export async function collectReceiptsToStation(options: CollectReceiptsOptions): Promise<CollectResult> {
  const { element, stationDir } = options;
  const now = options.now ?? new Date();
  const progress = (m: string) => options.onProgress?.(m);

  // 1–2. Verified, and which objects may go.
  const report = await readReceipts({ element, stationDir, now });
  const names = (await element.listItems())
    .map((i) => i.name)
    .filter((n) => parseItemName(n)?.kind === "receipt");
  const kept: { item: string; reason: string }[] = [];
  const collectable: string[] = [];
  for (const name of names) {
    const rows = report.receipts.filter((r) => itemOf(r.location) === name);
    const bad = rows.find((r) => !r.verified);
    if (bad) kept.push({ item: name, reason: `${bad.location}: ${bad.reason ?? "not verified"}` });
    else if (rows.length > 0) collectable.push(name);
  }
  progress(
    `${report.receipts.length} receipt${report.receipts.length === 1 ? "" : "s"} read; ` +
      `${collectable.length} object${collectable.length === 1 ? "" : "s"} verified for collection, ${kept.length} kept`,
  );
  const raw = new Map<string, Uint8Array>();
  for (const name of collectable) {
    const bytes = await element.readItem(name);
    if (bytes) raw.set(name, bytes);
  }
  if (raw.size === 0) {
    return {
      report,
      cleared: [],
      kept,
      receiptsArchived: 0,
      freeBytes: (await element.capacity()).freeBytes,
    };
  }

  // 3. Archived durably, and read back.
  const rows = report.receipts.filter((r) => raw.has(itemOf(r.location)));
  const items = Object.fromEntries(
    [...raw].map(([name, bytes]) => [name, Buffer.from(bytes).toString("base64")]),
  );
  const relative = join(
    STATION_FILES.receiptsArchive,
    `${now.toISOString().replace(/[:.]/g, "-")}-collected-${report.configuration?.configurationId ?? "none"}-${randomBytes(4).toString("hex")}.json`,
  );
  const text = jsonText({
    format: "hsm-onboard/receipts-archive",
    version: 1,
    archivedAt: now.toISOString(),
    reason: "collected",
    card: element.info,
    configuration: report.configuration
      ? { configurationId: report.configuration.configurationId, sequence: report.configuration.sequence }
      : null,
    receipts: rows.map((r) => ({
      location: r.location,
      serial: r.serial ?? null,
      outcome: r.outcome ?? null,
      verified: r.verified,
      time: r.time?.toISOString() ?? null,
    })),
    items,
  });
  await writeStationFile(stationDir, relative, text);
  const archive = join(stationDir, relative);
  const stored = JSON.parse(await readFile(archive, "utf8")) as { items?: Record<string, string> };
  for (const [name, bytes] of raw) {
    const back = stored.items?.[name];
    if (back === undefined || !bytesEqual(new Uint8Array(Buffer.from(back, "base64")), bytes)) {
      throw new IntegrityError(`the archive ${archive} does not hold ${name} as read: nothing was cleared`);
    }
  }
  progress(
    `archived ${rows.length} receipt${rows.length === 1 ? "" : "s"} (${raw.size} objects) in ${archive}`,
  );

  // 4. Cleared, each object only if it is still what was archived.
  const triesLeft = await element.pinTriesLeft();
  if (triesLeft === 0) throw new PinBlockedError("the card's PIN is blocked: unblock it with the PUK first");
  const info = element.info as { owner?: string };
  const pin =
    typeof options.pin === "string"
      ? options.pin
      : await options.pin({ owner: report.configuration?.owner ?? info.owner ?? "", triesLeft });
  await element.verifyPin(pin);
  const cleared: string[] = [];
  for (const [name, bytes] of raw) {
    const current = await element.readItem(name);
    if (!current || !bytesEqual(current, bytes)) {
      kept.push({ item: name, reason: "changed since it was read (kept; it is archived as read)" });
      continue;
    }
    await element.deleteItem(name);
    cleared.push(name);
  }
  const left = new Set((await element.listItems()).map((i) => i.name));
  const notGone = cleared.filter((n) => left.has(n));
  if (notGone.length > 0) throw new IntegrityError(`${notGone.join(", ")} still on the card after deletion`);
  const { freeBytes } = await element.capacity();
  progress(
    `cleared ${cleared.length} receipt object${cleared.length === 1 ? "" : "s"} from the card (${freeBytes} bytes free)`,
  );
  return { report, cleared, kept, archive, receiptsArchived: rows.length, freeBytes };
}
