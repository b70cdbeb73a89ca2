/**
 * Per-owner sequence numbers (SPEC.md §4, §5): every configuration the station signs for an owner
 * carries a number higher than any before, so an HSM can refuse an older card (exit 17).
 *
 * The inventory allocates them (src/station/inventory: SQLite in the station directory, or a
 * PostgreSQL database several stations share): strictly increasing per owner across every station on
 * the database, each number recorded once before it is returned. If the card write fails later, the
 * number is spent, never handed out again. Gaps are harmless; reuse would not be.
 *
 * The station journal (station-journal.ts) records each number this station handed out, too. An
 * inventory that says less than the journal was put back (an older inventory.sqlite restored, a
 * database restored from a dump): the station refuses with ReplayError (17) rather than trust it.
 * A whole station directory restored (journal included) is caught by the sequence mark outside the
 * directory (sequence-mark.ts): a mark above the inventory raises the inventory to it first
 * ("sequence-resynchronised", one line on stderr), so the next number is above every number this
 * station handed out. A shared database still knows the later numbers too, and the card is a last
 * witness: a write over a newer configuration starts above it.
 *
 * `sequences.json` (the counter file before the inventory) is migrated: its numbers raise the
 * inventory's counters (never lower them) and the file is renamed `sequences.json.imported`.
 */
import { rename } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { ReplayError } from "../errors.js";
import type { Inventory } from "./inventory/inventory.js";
import { openInventory, stationName } from "./inventory/open.js";
import { defaultStateHome, ensureStationId, readSequenceMark, writeSequenceMark } from "./sequence-mark.js";
import { type LockOptions, readStationJson, STATION_FILES, withStationLock } from "./station-dir.js";
import {
  appendJournal,
  checkSequenceNotRolledBack,
  type HighWater,
  type JournalEvent,
  readJournal,
} from "./station-journal.js";

const FORMAT = "hsm-onboard/station-sequences";
export const IMPORTED_SEQUENCES = `${STATION_FILES.sequences}.imported`;

const sequencesSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(1),
  owners: z.record(
    z.string().min(1),
    z.object({
      last: z.int().nonnegative().max(Number.MAX_SAFE_INTEGER),
      allocatedAt: z.iso.datetime(),
    }),
  ),
});

export interface AllocateSequenceOptions extends LockOptions {
  /**
   * The lowest number acceptable, e.g. one above the sequence of a verified configuration already on
   * the card (written by another station of the same owner).
   */
  readonly atLeast?: number;
  readonly now?: Date;
  /** The inventory that allocates; default: the station's SQLite inventory (opened and closed here). */
  readonly inventory?: Inventory;
  /**
   * Where the sequence marks live (sequence-mark.ts); default: $HSM_ONBOARD_STATE_HOME, else
   * $XDG_STATE_HOME/hsm-onboard, else ~/.local/state/hsm-onboard.
   */
  readonly stateHome?: string;
  /** Told one line when the inventory was resynchronised upward to the mark; default: stderr. */
  readonly notice?: (line: string) => void;
}

/** Runs `fn` with `inventory`, or with the station's own SQLite inventory opened for the call. */
export async function withInventory<T>(
  stationDir: string,
  inventory: Inventory | undefined,
  fn: (inventory: Inventory) => Promise<T>,
): Promise<T> {
  if (inventory) return fn(inventory);
  const opened = await openInventory({ stationDir });
  try {
    return await fn(opened);
  } finally {
    await opened.close();
  }
}

/** The last number handed out for `owner`; 0 when none was. */
export async function lastSequence(
  stationDir: string,
  owner: string,
  options: { readonly inventory?: Inventory } = {},
): Promise<number> {
  return withInventory(stationDir, options.inventory, async (inventory) => {
    await importSequencesFile(stationDir, inventory, await readJournal(stationDir));
    return inventory.lastSequence(owner);
  });
}

/**
 * Moves a `sequences.json` into the inventory (raising counters only) and renames it. A file that
 * says less than the journal recorded was put back: ReplayError, as before the inventory.
 */
export async function importSequencesFile(
  stationDir: string,
  inventory: Inventory,
  journal: HighWater,
  now: Date = new Date(),
): Promise<number> {
  const file = await readStationJson(stationDir, STATION_FILES.sequences, sequencesSchema);
  if (!file) return 0;
  const owners = Object.entries(file.owners);
  for (const [owner, entry] of owners) checkSequenceNotRolledBack(journal, owner, entry.last);
  for (const [owner, entry] of owners) {
    await inventory.raiseSequence(owner, entry.last, stationName(stationDir), now);
  }
  await rename(join(stationDir, STATION_FILES.sequences), join(stationDir, IMPORTED_SEQUENCES));
  return owners.length;
}

/**
 * Allocates `owner`'s next sequence number (1 for the first), recorded in the inventory, the sequence
 * mark outside the station directory and the station journal before it is returned. Concurrent
 * allocations (other processes, other stations on a shared database) get distinct numbers. A mark
 * above the inventory (the station directory was restored from an older copy) raises the inventory to
 * it first; a mark that cannot be read is ReplayError (17).
 */
export async function allocateSequence(
  stationDir: string,
  owner: string,
  options: AllocateSequenceOptions = {},
): Promise<number> {
  return withStationLock(
    stationDir,
    "sequences",
    () =>
      withInventory(stationDir, options.inventory, async (inventory) => {
        const journal = await readJournal(stationDir);
        await importSequencesFile(stationDir, inventory, journal, options.now);
        // Every number, in the station journal and in the inventory's.
        const journalBoth = async (event: JournalEvent, number: number, detail?: string) => {
          await appendJournal(stationDir, event, owner, number, options.now);
          await inventory.appendJournal({
            event,
            key: owner,
            number: String(number),
            station: stationName(stationDir),
            time: options.now ?? new Date(),
            ...(detail === undefined ? {} : { detail }),
          });
        };
        const recorded = journal.sequences.get(owner);
        if (recorded !== undefined) {
          const last = await inventory.lastSequence(owner);
          if (BigInt(last) < recorded) {
            throw new ReplayError(
              `station rollback detected: the inventory ${inventory.location} says ${last} for "${owner}", but the station journal recorded ${recorded}; the inventory was restored or edited — refusing to hand out a sequence number again`,
            );
          }
        }
        const stateHome = options.stateHome ?? defaultStateHome(process.env);
        const stationId = await ensureStationId(stationDir, stateHome);
        const mark = await readSequenceMark(stateHome, stationId, owner);
        if (mark !== undefined) {
          const last = await inventory.lastSequence(owner);
          if (last < mark) {
            await inventory.raiseSequence(owner, mark, stationName(stationDir), options.now);
            await journalBoth(
              "sequence-resynchronised",
              mark,
              `the inventory said ${last}, the station's sequence mark ${mark}: the station directory was restored from an older copy`,
            );
            (options.notice ?? ((line: string) => process.stderr.write(`hsm-onboard: ${line}\n`)))(
              `notice: sequence of "${owner}" resynchronised from ${last} to ${mark} (the station directory is older than its sequence mark; restored from a backup?) — the next number is above ${mark}`,
            );
          }
        }
        const next = await inventory.allocateSequence(owner, {
          ...(options.atLeast === undefined ? {} : { atLeast: options.atLeast }),
          station: stationName(stationDir),
          ...(options.now === undefined ? {} : { now: options.now }),
        });
        if (!Number.isSafeInteger(next + 1)) {
          throw new ReplayError(`the sequence number of "${owner}" cannot grow any further`);
        }
        await writeSequenceMark(stateHome, stationId, owner, next, stationDir, options.now);
        await journalBoth("sequence", next);
        return next;
      }),
    options,
  );
}
