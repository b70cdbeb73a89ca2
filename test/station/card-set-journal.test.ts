/**
 * The card-set journal's read-modify-write (issue 13 residual): recording a written card reads the
 * journal on disk and writes it back under the set's lock (src/util/lock.ts), so two station writes
 * on one set never lose each other's card; a lock another live process holds is a one-line
 * StationBusyError once the wait runs out.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StationBusyError } from "../../src/errors.js";
import {
  CARD_SETS_DIR,
  type CardSetJournal,
  cardSetLockName,
  readCardSetJournal,
  recordCardWritten,
  remainingCards,
  saveCardSetJournal,
} from "../../src/station/card-set-journal.js";
import { removeTempDirs, tempDir } from "./fixtures.js";

afterAll(removeTempDirs);

const CARDS = 8;

async function newSet(stationDir: string): Promise<CardSetJournal> {
  const journal: CardSetJournal = {
    format: "hsm-onboard/card-set",
    version: 1,
    owner: "ACME Bank",
    planDigest: randomBytes(32).toString("hex"),
    configurationId: randomBytes(16).toString("hex"),
    sequence: 4,
    issuedAt: 1_800_000_000,
    notBefore: 1_799_999_700,
    notAfter: 1_800_086_400,
    shardBytes: 3052,
    cosigners: 0,
    cards: Array.from({ length: CARDS }, (_, i) => ({
      firstSerial: String(1000 + i * 10),
      lastSerial: String(1009 + i * 10),
      hsms: 10,
    })),
    written: [],
  };
  await saveCardSetJournal(stationDir, journal);
  return journal;
}

const entry = (index: number, cardSerial = `card-${index}`) => ({
  index,
  cardName: "Test reader",
  cardSerial,
  officer: "Alice Example",
  writtenAt: new Date(1_800_000_000_000 + index * 1000).toISOString(),
});

describe("card-set journal: read-modify-write under the set's lock", () => {
  it("8 writers recording 8 cards at once: every card recorded, none lost", async () => {
    const stationDir = await tempDir("card-set-journal");
    const { configurationId } = await newSet(stationDir);
    const returned = await Promise.all(
      Array.from({ length: CARDS }, (_, i) => recordCardWritten(stationDir, configurationId, entry(i + 1))),
    );
    const journal = await readCardSetJournal(stationDir, configurationId);
    expect(journal.written.map((w) => w.index).sort((a, b) => a - b)).toEqual(
      Array.from({ length: CARDS }, (_, i) => i + 1),
    );
    expect(remainingCards(journal)).toEqual([]);
    // Each writer got the journal as it wrote it: with its own card and every card recorded before.
    for (const [i, j] of returned.entries()) expect(j.written.map((w) => w.index)).toContain(i + 1);
    expect(Math.max(...returned.map((j) => j.written.length))).toBe(CARDS);
    // No lock file and no temporary file left behind.
    expect((await readdir(stationDir)).filter((n) => n.includes("lock"))).toEqual([]);
    expect(await readdir(join(stationDir, CARD_SETS_DIR))).toEqual([`${configurationId}.json`]);
  });

  it("the same card written again for its index replaces its entry; another card with that index is kept beside it", async () => {
    const stationDir = await tempDir("card-set-journal");
    const { configurationId } = await newSet(stationDir);
    await recordCardWritten(stationDir, configurationId, entry(2));
    await recordCardWritten(stationDir, configurationId, {
      ...entry(2),
      writtenAt: "2027-01-01T00:00:00.000Z",
    });
    let journal = await readCardSetJournal(stationDir, configurationId);
    expect(journal.written).toEqual([{ ...entry(2), writtenAt: "2027-01-01T00:00:00.000Z" }]);
    journal = await recordCardWritten(stationDir, configurationId, entry(2, "another-card"));
    expect(journal.written.map((w) => [w.index, w.cardSerial])).toEqual([
      [2, "card-2"],
      [2, "another-card"],
    ]);
  });

  it("a lock held by another live process: StationBusyError, one line, naming the lock; the journal untouched", async () => {
    const stationDir = await tempDir("card-set-journal");
    const { configurationId } = await newSet(stationDir);
    await recordCardWritten(stationDir, configurationId, entry(1));
    // Another process (its PID in the lock file, as src/util/lock.ts writes it) holds the set's lock.
    const holder: ChildProcess = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      expect(holder.pid).toBeGreaterThan(0);
      const lock = join(stationDir, `.${cardSetLockName(configurationId)}.lock`);
      await writeFile(lock, `${holder.pid} ${randomBytes(8).toString("hex")}\n`, { mode: 0o600 });
      const started = Date.now();
      const error = await recordCardWritten(stationDir, configurationId, entry(2), {
        lockTimeoutMs: 150,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StationBusyError);
      expect((error as StationBusyError).exitCode).toBe(1);
      expect((error as Error).message).toContain(lock);
      expect((error as Error).message).not.toContain("\n");
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
      const journal = await readCardSetJournal(stationDir, configurationId);
      expect(journal.written.map((w) => w.index)).toEqual([1]);
    } finally {
      holder.kill("SIGKILL");
    }
    // Its holder gone, the lock is stale: the next record breaks it and goes through.
    await new Promise((resolve) => holder.once("exit", resolve));
    const journal = await recordCardWritten(stationDir, configurationId, entry(2), { lockTimeoutMs: 150 });
    expect(journal.written.map((w) => w.index)).toEqual([1, 2]);
  });
});
