/**
 * The station's own journal (issue 10 finding 5: a station must detect its own rollback). Every
 * sequence number it hands out and every CRL it takes in is appended here, hash-chained, after the
 * file that holds it (sequences.json, crls/) is written. The journal is the high-water mark: when
 * sequences.json says less for an owner, or a stored CRL carries a lower number than one the journal
 * recorded for its issuer, a file was put back (a restored backup, an edit) and the station refuses
 * with ReplayError (exit 17) rather than re-issue a sequence number or write a revoked card.
 *
 * Line: `{"seq":N,"time":ISO,"event":"sequence"|"sequence-resynchronised"|"crl","key":OWNER|ISSUER-ID,"number":"N","prev":HEX} HASH`
 * where HASH = SHA-256(prev ‖ "\n" ‖ the JSON text before the space), hex; prev is the previous
 * line's HASH (64 zeros first). The text is hashed as stored, so no canonical form is needed. An
 * edited, reordered or deleted line breaks the chain (IntegrityError, exit 15). A journal cut at its
 * end, or the whole directory restored, is not detectable from inside the directory: the sequence
 * mark outside it (sequence-mark.ts), a shared inventory database and the card's sequence on the
 * next write are the outside witnesses (docs/THREAT_MODEL.md).
 */
import { createHash } from "node:crypto";
import { appendFile, open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError, ReplayError } from "../errors.js";

export const JOURNAL_FILE = "journal.log";
const GENESIS = "0".repeat(64);
/** Longest line read back; a longer one is damage. */
const MAX_LINE = 4096;

/**
 * "sequence-resynchronised": the inventory was raised to the sequence mark kept outside the directory
 * (sequence-mark.ts); its number counts as handed out, like a "sequence" entry's.
 */
export type JournalEvent = "sequence" | "sequence-resynchronised" | "crl";
const EVENTS: ReadonlySet<unknown> = new Set<JournalEvent>(["sequence", "sequence-resynchronised", "crl"]);

export interface HighWater {
  /** Highest sequence number handed out, per owner. */
  readonly sequences: ReadonlyMap<string, bigint>;
  /** Highest CRL number taken in, per issuer id (station-dir issuerId). */
  readonly crls: ReadonlyMap<string, bigint>;
  readonly head: string;
  readonly count: number;
}

function lineHash(prev: string, body: string): string {
  return createHash("sha256").update(`${prev}\n${body}`).digest("hex");
}

/** Reads and verifies the journal; an absent journal is empty. IntegrityError when the chain is broken. */
export async function readJournal(stationDir: string): Promise<HighWater> {
  const path = join(stationDir, JOURNAL_FILE);
  const text = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
  const sequences = new Map<string, bigint>();
  const crls = new Map<string, bigint>();
  let prev = GENESIS;
  let count = 0;
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  for (const [i, line] of lines.entries()) {
    const space = line.lastIndexOf(" ");
    const body = line.slice(0, space);
    const hash = line.slice(space + 1);
    let entry: { seq?: unknown; event?: unknown; key?: unknown; number?: unknown; prev?: unknown };
    try {
      if (line.length > MAX_LINE || space < 0) throw new Error("shape");
      entry = JSON.parse(body);
    } catch {
      throw new IntegrityError(`station journal ${path}: line ${i + 1} is not a journal entry`);
    }
    if (
      entry.seq !== i + 1 ||
      entry.prev !== prev ||
      lineHash(prev, body) !== hash ||
      !EVENTS.has(entry.event) ||
      typeof entry.key !== "string" ||
      typeof entry.number !== "string" ||
      !/^\d{1,40}$/.test(entry.number)
    ) {
      throw new IntegrityError(
        `station journal ${path}: line ${i + 1} breaks the chain (edited, deleted or reordered)`,
      );
    }
    const map = entry.event === "crl" ? crls : sequences;
    const number = BigInt(entry.number);
    if ((map.get(entry.key) ?? -1n) < number) map.set(entry.key, number);
    prev = hash;
    count++;
  }
  return { sequences, crls, head: prev, count };
}

/** Appends one entry (fsync'd). The caller holds the station lock that guards the file it records. */
export async function appendJournal(
  stationDir: string,
  event: JournalEvent,
  key: string,
  number: bigint | number,
  now: Date = new Date(),
): Promise<void> {
  const { head, count } = await readJournal(stationDir);
  const body = JSON.stringify({
    seq: count + 1,
    time: now.toISOString(),
    event,
    key,
    number: BigInt(number).toString(),
    prev: head,
  });
  const path = join(stationDir, JOURNAL_FILE);
  await appendFile(path, `${body} ${lineHash(head, body)}\n`, { mode: 0o600 });
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** ReplayError when sequences.json says less for `owner` than the journal recorded. */
export function checkSequenceNotRolledBack(journal: HighWater, owner: string, last: number): void {
  const recorded = journal.sequences.get(owner);
  if (recorded !== undefined && BigInt(last) < recorded) {
    throw new ReplayError(
      `station rollback detected: sequences.json says ${last} for "${owner}", but the station journal recorded ${recorded}; a station file was restored or edited — refusing to hand out a sequence number again`,
    );
  }
}

/** ReplayError when a stored CRL is older than one the journal recorded for its issuer. */
export function checkCrlNotRolledBack(
  journal: HighWater,
  issuer: string,
  number: bigint,
  shownAs: string,
): void {
  const recorded = journal.crls.get(issuer);
  if (recorded !== undefined && number < recorded) {
    throw new ReplayError(
      `station rollback detected: the station holds CRL number ${number} of "${shownAs}", but it took number ${recorded} before; a station file was restored or edited — refusing to use an older CRL`,
    );
  }
}
