/**
 * Per-owner sequence numbers (SPEC.md §4, §5): every configuration the station signs for an owner
 * carries a number higher than any before, so an HSM can refuse an older card (exit 17).
 *
 * A number is persisted before it is used: `allocateSequence` writes the counter (atomically, under
 * the station's `sequences` lock) and only then returns the number. If the card write fails later,
 * the number is spent, never handed out again. Gaps are harmless; reuse would not be. The station
 * journal (station-journal.ts) records each number too: a sequences.json put back is found (17).
 */
import { z } from "zod";
import { ReplayError } from "../errors.js";
import {
  jsonText,
  type LockOptions,
  readStationJson,
  STATION_FILES,
  withStationLock,
  writeStationFile,
} from "./station-dir.js";
import { appendJournal, checkSequenceNotRolledBack, readJournal } from "./station-journal.js";

const FORMAT = "hsm-onboard/station-sequences";

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
type SequencesFile = z.infer<typeof sequencesSchema>;

export interface AllocateSequenceOptions extends LockOptions {
  /**
   * The lowest number acceptable, e.g. one above the sequence of a verified configuration already on
   * the card (written by another station of the same owner).
   */
  readonly atLeast?: number;
  readonly now?: Date;
}

/** The last number handed out for `owner`; 0 when none was. */
export async function lastSequence(stationDir: string, owner: string): Promise<number> {
  const file = await readStationJson(stationDir, STATION_FILES.sequences, sequencesSchema);
  return file ? (ownerEntry(file, owner)?.last ?? 0) : 0;
}

/** Own properties only: an owner called "constructor" or "__proto__" is just a name. */
function ownerEntry(file: SequencesFile, owner: string): SequencesFile["owners"][string] | undefined {
  return Object.hasOwn(file.owners, owner) ? file.owners[owner] : undefined;
}

/**
 * Allocates `owner`'s next sequence number (1 for the first), persisted before it is returned.
 * Concurrent allocations (other processes too) get distinct numbers through the lock file.
 */
export async function allocateSequence(
  stationDir: string,
  owner: string,
  options: AllocateSequenceOptions = {},
): Promise<number> {
  return withStationLock(
    stationDir,
    "sequences",
    async () => {
      const file: SequencesFile = (await readStationJson(
        stationDir,
        STATION_FILES.sequences,
        sequencesSchema,
      )) ?? {
        format: FORMAT,
        version: 1,
        owners: {},
      };
      const last = ownerEntry(file, owner)?.last ?? 0;
      checkSequenceNotRolledBack(await readJournal(stationDir), owner, last);
      const next = Math.max(last + 1, options.atLeast ?? 0);
      if (!Number.isSafeInteger(next)) {
        throw new ReplayError(`the sequence number of "${owner}" cannot grow any further`);
      }
      const updated: SequencesFile = {
        ...file,
        owners: {
          ...file.owners,
          [owner]: { last: next, allocatedAt: (options.now ?? new Date()).toISOString() },
        },
      };
      await writeStationFile(stationDir, STATION_FILES.sequences, jsonText(updated));
      await appendJournal(stationDir, "sequence", owner, next, options.now);
      return next;
    },
    options,
  );
}
