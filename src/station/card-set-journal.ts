/**
 * A card set in progress (issue 13): what `station write` fixed when it allocated the set's one
 * sequence number — the plan's digest, the configuration id, the sequence, the validity window and
 * every card's serial range — and which cards are written. Persisted in the station directory
 * (`card-sets/<configuration id>.json`, atomic writes) before the first card is written and after
 * each card is verified, so that an interrupted set (card 3 of 5 failed, the officer went home) is
 * finished with `station write --plan SAME --resume ID`: the remaining cards get the same
 * configuration id, sequence and content, and a different plan is refused (a sequence number never
 * names two contents). Every write of a journal holds the set's lock (`.card-set-<id>.lock` in the
 * station directory), and recording a card re-reads the journal under it: two `station write
 * --resume` on one set do not lose each other's cards.
 */
import { join } from "node:path";
import { z } from "zod";
import type { CardPart, CardSetPlan } from "../config/card-set.js";
import type { CardRange } from "../config/manifest.js";
import type { NetworkPlan } from "../config/plan-model.js";
import { compareSerials, planShards } from "../config/shard.js";
import { UsageError } from "../errors.js";
import { jsonText, readStationJson, withStationLock, writeStationFile } from "./station-dir.js";

export const CARD_SETS_DIR = "card-sets";
const FORMAT = "hsm-onboard/card-set";

const journalSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(1),
  owner: z.string(),
  planDigest: z.string().regex(/^[0-9a-f]{64}$/),
  configurationId: z.string().regex(/^[0-9a-f]{32}$/),
  sequence: z.number().int().nonnegative(),
  issuedAt: z.number().int().nonnegative(),
  notBefore: z.number().int().nonnegative(),
  notAfter: z.number().int().nonnegative(),
  shardBytes: z.number().int().positive(),
  cosigners: z.number().int().nonnegative(),
  cards: z.array(
    z.object({ firstSerial: z.string(), lastSerial: z.string(), hsms: z.number().int().positive() }),
  ),
  written: z.array(
    z.object({
      index: z.number().int().positive(),
      cardName: z.string(),
      cardSerial: z.string().optional(),
      officer: z.string().optional(),
      writtenAt: z.string(),
    }),
  ),
});

export type CardSetJournal = z.infer<typeof journalSchema>;
/** One card of the set written and verified. */
export type WrittenCard = CardSetJournal["written"][number];

export function journalPath(configurationId: string): string {
  return join(CARD_SETS_DIR, `${configurationId}.json`);
}

export function newCardSetJournal(fields: {
  readonly owner: string;
  readonly planDigest: string;
  readonly configurationId: Uint8Array;
  readonly sequence: number;
  readonly issuedAt: number;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly set: CardSetPlan;
  readonly cosigners: number;
}): CardSetJournal {
  return {
    format: FORMAT,
    version: 1,
    owner: fields.owner,
    planDigest: fields.planDigest,
    configurationId: Buffer.from(fields.configurationId).toString("hex"),
    sequence: fields.sequence,
    issuedAt: fields.issuedAt,
    notBefore: fields.notBefore,
    notAfter: fields.notAfter,
    shardBytes: fields.set.shardBytes,
    cosigners: fields.cosigners,
    cards: fields.set.cards.map((c) => ({ ...c.range, hsms: c.hsms })),
    written: [],
  };
}

/**
 * The lock of one set's journal: `<station dir>/.card-set-<id>.lock` (withStationLock, the
 * project's one lock file). Two `station write --resume` on the same set take turns recording their
 * cards; a holder inside this process excludes as well.
 */
export function cardSetLockName(configurationId: string): string {
  return `card-set-${configurationId}`;
}

export interface JournalLockOptions {
  /** How long to wait for another holder of the set's lock (default withStationLock's 10 s). */
  readonly lockTimeoutMs?: number;
}

function withJournalLock<T>(
  stationDir: string,
  configurationId: string,
  options: JournalLockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  return withStationLock(
    stationDir,
    cardSetLockName(configurationId),
    fn,
    options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs },
  );
}

/** Writes a new set's journal (before its first card is written), under the set's lock. */
export async function saveCardSetJournal(
  stationDir: string,
  journal: CardSetJournal,
  options: JournalLockOptions = {},
): Promise<void> {
  await withJournalLock(stationDir, journal.configurationId, options, () =>
    writeStationFile(stationDir, journalPath(journal.configurationId), jsonText(journal)),
  );
}

/**
 * Records card `entry.index` as written and verified: under the set's lock, reads the journal as it
 * is on disk now, adds the entry (a rewrite of the same card of the same index replaces its entry;
 * another card that got the same index is recorded beside it) and writes it back. Returns the
 * journal written. StationBusyError when another process holds the lock past the wait.
 */
export async function recordCardWritten(
  stationDir: string,
  configurationId: string,
  entry: WrittenCard,
  options: JournalLockOptions = {},
): Promise<CardSetJournal> {
  return withJournalLock(stationDir, configurationId, options, () =>
    appendWritten(stationDir, configurationId, entry),
  );
}

async function appendWritten(
  stationDir: string,
  configurationId: string,
  entry: WrittenCard,
): Promise<CardSetJournal> {
  const current = await readStationJson(stationDir, journalPath(configurationId), journalSchema);
  if (!current) {
    throw new UsageError(`card set ${configurationId} is no longer in ${join(stationDir, CARD_SETS_DIR)}`);
  }
  const sameCard = (w: WrittenCard) =>
    w.index === entry.index && (w.cardSerial ?? w.cardName) === (entry.cardSerial ?? entry.cardName);
  const journal: CardSetJournal = {
    ...current,
    written: [...current.written.filter((w) => !sameCard(w)), entry],
  };
  await writeStationFile(stationDir, journalPath(configurationId), jsonText(journal));
  return journal;
}

/** The journal of configuration `id` (32 hex digits, or a unique prefix of at least 8). */
export async function readCardSetJournal(stationDir: string, id: string): Promise<CardSetJournal> {
  if (!/^[0-9a-f]{8,32}$/.test(id)) {
    throw new UsageError(`--resume takes a configuration id (8 to 32 hex digits), not ${JSON.stringify(id)}`);
  }
  let full = id;
  if (id.length < 32) {
    const { readdir } = await import("node:fs/promises");
    const names = await readdir(join(stationDir, CARD_SETS_DIR)).catch(() => [] as string[]);
    const matches = names.filter((n) => n.startsWith(id) && n.endsWith(".json"));
    if (matches.length !== 1) {
      throw new UsageError(
        matches.length === 0
          ? `no card set ${id} in ${join(stationDir, CARD_SETS_DIR)}`
          : `${id} names ${matches.length} card sets: give more digits`,
      );
    }
    full = matches[0]!.slice(0, -".json".length);
  }
  const journal = await readStationJson(stationDir, journalPath(full), journalSchema);
  if (!journal) throw new UsageError(`no card set ${full} in ${join(stationDir, CARD_SETS_DIR)}`);
  return journal;
}

/** Cards of the set not yet written and verified, in order. */
export function remainingCards(journal: CardSetJournal): number[] {
  const done = new Set(journal.written.map((w) => w.index));
  return journal.cards.map((_, i) => i + 1).filter((k) => !done.has(k));
}

export function journalRanges(journal: CardSetJournal): CardRange[] {
  return journal.cards.map((c) => ({ firstSerial: c.firstSerial, lastSerial: c.lastSerial }));
}

/**
 * Card `index`'s part, rebuilt from the plan and the recorded range: the plan's entries in that
 * range, laid out in shards as the whole plan was (planShards is greedy from its first entry). The
 * caller has checked the plan's digest; the entry count is checked again here.
 */
export function journalPart(journal: CardSetJournal, plan: NetworkPlan, index: number): CardPart {
  const card = journal.cards[index - 1];
  if (!card) throw new UsageError(`card ${index} is not in a set of ${journal.cards.length}`);
  const hsms = plan.hsms.filter(
    (h) => compareSerials(card.firstSerial, h.serial) <= 0 && compareSerials(h.serial, card.lastSerial) <= 0,
  );
  if (hsms.length !== card.hsms) {
    throw new UsageError(
      `card ${index} of configuration ${journal.configurationId} holds ${card.hsms} HSMs; the plan has ${hsms.length} in its range`,
    );
  }
  return {
    index,
    range: { firstSerial: card.firstSerial, lastSerial: card.lastSerial },
    hsms: hsms.length,
    shards: planShards(plan.subnets, hsms, journal.shardBytes),
  };
}
