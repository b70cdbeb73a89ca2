/**
 * Issue 14: sequence numbers come from the inventory — strictly increasing per owner across every
 * station sharing a PostgreSQL database (several station processes at once, a real server started
 * here), never re-issued after a station directory or its inventory is restored from an older backup
 * (the sequence mark outside the directory resynchronises the inventory upward), and an existing
 * sequences.json is migrated.
 */
import { copyFile, cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReplayError, UsageError } from "../../src/errors.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { SQLITE_FILE } from "../../src/station/inventory/sqlite.js";
import {
  defaultStateHome,
  markPath,
  readSequenceMark,
  readStationId,
  STATION_ID_FILE,
} from "../../src/station/sequence-mark.js";
import { allocateSequence, IMPORTED_SEQUENCES, lastSequence } from "../../src/station/sequence-store.js";
import { readJournal } from "../../src/station/station-journal.js";
import { buildForChildren, NodeChild, type PrivateBuild, requireOrSkipReason } from "../helpers/pcsc-env.js";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.js";

const pgMissing = requireOrSkipReason(postgresUnavailable());
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-sequences-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const station = () => mkdtemp(join(scratch, "station-"));

/** Allocates with the notices collected. */
async function allocate(dir: string, owner: string, options: Parameters<typeof allocateSequence>[2] = {}) {
  const notices: string[] = [];
  const n = await allocateSequence(dir, owner, { ...options, notice: (line) => notices.push(line) });
  return { n, notices };
}

/** The whole station directory put back from `backup` (inventory, journal, station id: all of one age). */
async function restoreDirectory(dir: string, backup: string): Promise<void> {
  await rm(dir, { recursive: true });
  await cp(backup, dir, { recursive: true });
}

describe("the sequence mark outside the station directory", () => {
  it("lives in $HSM_ONBOARD_STATE_HOME, else $XDG_STATE_HOME/hsm-onboard, else ~/.local/state/hsm-onboard", () => {
    expect(defaultStateHome({ HSM_ONBOARD_STATE_HOME: "/marks", XDG_STATE_HOME: "/x", HOME: "/h" })).toBe(
      "/marks",
    );
    expect(defaultStateHome({ XDG_STATE_HOME: "/state", HOME: "/h" })).toBe("/state/hsm-onboard");
    // A relative XDG_STATE_HOME is invalid (XDG Base Directory spec) and ignored.
    expect(defaultStateHome({ XDG_STATE_HOME: "state", HOME: "/home/alice" })).toBe(
      "/home/alice/.local/state/hsm-onboard",
    );
    // Tests keep theirs in a temporary directory (test/setup.ts), never in the real home.
    expect(process.env.HSM_ONBOARD_STATE_HOME).toMatch(/hsm-state-/);
  });

  it("a whole station directory restored from an older copy is resynchronised upward: never a repeated number", async () => {
    const dir = await station();
    const backup = join(scratch, `whole-${Date.now()}`);
    await cp(dir, backup, { recursive: true }); // before any write: no inventory, no journal, no id
    expect((await allocate(dir, "ACME Bank")).n).toBe(1);
    expect((await allocate(dir, "ACME Bank")).n).toBe(2);
    expect((await allocate(dir, "Globex")).n).toBe(1);
    const id = await readStationId(dir);
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(await readSequenceMark(process.env.HSM_ONBOARD_STATE_HOME!, id!, "ACME Bank")).toBe(2);

    // The copy was taken before the directory had an id (as one made by an older release): restored,
    // it takes back the id its marks were recorded under (same path), and goes on above them.
    await restoreDirectory(dir, backup);
    expect(await readStationId(dir)).toBeUndefined();
    const restored = await allocate(dir, "ACME Bank");
    expect(restored.n).toBe(3);
    expect(restored.notices).toEqual([expect.stringMatching(/resynchronised from 0 to 2/)]);
    expect(await readStationId(dir)).toBe(id);
    expect((await allocate(dir, "Globex")).n).toBe(2);

    const dir2 = await station();
    expect((await allocate(dir2, "ACME Bank")).n).toBe(1); // gives dir2 its id, mark 1
    const copy = join(scratch, `whole2-${Date.now()}`);
    await cp(dir2, copy, { recursive: true }); // inventory, journal and id, all saying 1
    expect((await allocate(dir2, "ACME Bank")).n).toBe(2);
    expect((await allocate(dir2, "ACME Bank")).n).toBe(3);
    await restoreDirectory(dir2, copy);
    expect(await lastSequence(dir2, "ACME Bank")).toBe(1); // the directory alone would hand out 2 again

    const { n, notices } = await allocate(dir2, "ACME Bank");
    expect(n).toBe(4);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(
      /^notice: sequence of "ACME Bank" resynchronised from 1 to 3 \(.*\) — the next number is above 3$/,
    );
    expect(notices[0]).not.toContain("\n");
    // Both journals say so; the station journal's high-water mark includes it.
    const journal = await readJournal(dir2);
    expect(journal.sequences.get("ACME Bank")).toBe(4n);
    const lines = (await readFile(join(dir2, "journal.log"), "utf8")).trim().split("\n");
    expect(lines.map((l) => JSON.parse(l.slice(0, l.lastIndexOf(" "))).event)).toEqual([
      "sequence",
      "sequence-resynchronised",
      "sequence",
    ]);
    const inventory = await openInventory({ stationDir: dir2 });
    expect((await inventory.journal()).map((j) => `${j.event} ${j.key} ${j.number}`)).toEqual([
      "sequence ACME Bank 1",
      "sequence-raised ACME Bank 3",
      "sequence-resynchronised ACME Bank 3",
      "sequence ACME Bank 4",
    ]);
    await inventory.close();
    // Once resynchronised, numbering goes on quietly.
    expect(await allocate(dir2, "ACME Bank")).toEqual({ n: 5, notices: [] });
  });

  it("gives an older station directory an id on first use, and station directories of their own marks", async () => {
    const a = await station();
    const b = await station();
    expect(await readStationId(a)).toBeUndefined();
    expect((await allocate(a, "ACME Bank")).n).toBe(1);
    expect((await allocate(b, "ACME Bank")).n).toBe(1);
    const idA = await readStationId(a);
    const idB = await readStationId(b);
    expect(idA).not.toBe(idB);
    expect((await readFile(join(a, STATION_ID_FILE), "utf8")).trim()).toBe(idA);
    expect((await allocate(a, "ACME Bank")).n).toBe(2);
    expect(await readSequenceMark(process.env.HSM_ONBOARD_STATE_HOME!, idA!, "ACME Bank")).toBe(2);
    expect(await readSequenceMark(process.env.HSM_ONBOARD_STATE_HOME!, idB!, "ACME Bank")).toBe(1);
  });

  it("a mark that cannot be read is refused (17, one line), and nothing is allocated", async () => {
    const dir = await station();
    const home = await mkdtemp(join(scratch, "marks-"));
    expect(await allocateSequence(dir, "ACME Bank", { stateHome: home })).toBe(1);
    const path = markPath(home, (await readStationId(dir))!, "ACME Bank");
    const good = await readFile(path, "utf8");
    for (const damage of [
      "{not json",
      JSON.stringify({ ...JSON.parse(good), last: -1 }),
      JSON.stringify({ ...JSON.parse(good), owner: "Globex" }),
      "",
    ]) {
      await writeFile(path, damage);
      const refused = await allocateSequence(dir, "ACME Bank", { stateHome: home }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ReplayError);
      expect((refused as ReplayError).exitCode).toBe(17);
      expect((refused as Error).message).toContain(path);
      expect((refused as Error).message).toMatch(/refusing to allocate/);
      expect((refused as Error).message).not.toContain("\n");
      expect(await lastSequence(dir, "ACME Bank")).toBe(1);
    }
    await writeFile(path, good);
    expect(await allocateSequence(dir, "ACME Bank", { stateHome: home })).toBe(2);
    // A damaged station id is refused too (15), never silently replaced by a new one.
    await writeFile(join(dir, STATION_ID_FILE), "not an id\n");
    const damaged = await allocateSequence(dir, "ACME Bank", { stateHome: home }).catch((e: unknown) => e);
    expect((damaged as { exitCode?: number }).exitCode).toBe(15);
  });

  it("a mark location that cannot be written is a usage error naming the variable; the number is spent, never reused", async () => {
    const dir = await station();
    const blocker = join(scratch, `blocker-${Date.now()}`);
    await writeFile(blocker, "a file where a directory should be");
    const failed = await allocateSequence(dir, "ACME Bank", { stateHome: blocker }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(UsageError);
    expect((failed as Error).message).toMatch(/cannot record the sequence mark .*HSM_ONBOARD_STATE_HOME/);
    expect(await allocateSequence(dir, "ACME Bank")).toBe(2);
  });
});

describe("sequences in the station's SQLite inventory", () => {
  it("migrates sequences.json: its numbers raise the counters, the file is renamed", async () => {
    const dir = await station();
    await writeFile(
      join(dir, "sequences.json"),
      JSON.stringify({
        format: "hsm-onboard/station-sequences",
        version: 1,
        owners: { "ACME Bank": { last: 7, allocatedAt: "2026-11-30T10:00:00.000Z" } },
      }),
    );
    expect(await lastSequence(dir, "ACME Bank")).toBe(7);
    const files = await readdir(dir);
    expect(files).toContain(IMPORTED_SEQUENCES);
    expect(files).not.toContain("sequences.json");
    expect(await allocateSequence(dir, "ACME Bank")).toBe(8);
    expect(await allocateSequence(dir, "Globex")).toBe(1);
    const inventory = await openInventory({ stationDir: dir });
    expect((await inventory.journal()).map((j) => `${j.event} ${j.key} ${j.number}`)).toEqual([
      "sequence-raised ACME Bank 7",
      "sequence ACME Bank 8",
      "sequence Globex 1",
    ]);
    await inventory.close();
  });

  it("an old sequences.json put back is only a floor: it never lowers the counter", async () => {
    const dir = await station();
    for (let i = 0; i < 3; i++) await allocateSequence(dir, "ACME Bank");
    // An old counter file (from before the journal existed, so the journal cannot refuse it).
    await rm(join(dir, "journal.log"));
    await writeFile(
      join(dir, "sequences.json"),
      JSON.stringify({
        format: "hsm-onboard/station-sequences",
        version: 1,
        owners: { "ACME Bank": { last: 1, allocatedAt: "2026-11-30T10:00:00.000Z" } },
      }),
    );
    expect(await allocateSequence(dir, "ACME Bank")).toBe(4);
  });

  it("an older inventory.sqlite restored under a newer journal is refused (17), never a repeated number", async () => {
    const dir = await station();
    await allocateSequence(dir, "ACME Bank");
    const backup = join(scratch, `backup-${Date.now()}.sqlite`);
    await copyFile(join(dir, SQLITE_FILE), backup); // closed: no WAL left beside it
    expect(await readdir(dir)).not.toContain(`${SQLITE_FILE}-wal`);
    await allocateSequence(dir, "ACME Bank");
    const current = join(scratch, `current-${Date.now()}.sqlite`);
    await copyFile(join(dir, SQLITE_FILE), current);
    await copyFile(backup, join(dir, SQLITE_FILE));
    const refused = await allocateSequence(dir, "ACME Bank").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ReplayError);
    expect((refused as Error).message).toMatch(
      /station rollback detected: the inventory .*inventory\.sqlite says 1 for "ACME Bank", but the station journal recorded 2/,
    );
    await copyFile(current, join(dir, SQLITE_FILE));
    expect(await allocateSequence(dir, "ACME Bank")).toBe(3);
  });
});

describe.skipIf(pgMissing !== undefined)(
  `sequences in a shared PostgreSQL inventory${pgMissing ? ` — skipped: ${pgMissing}` : ""}`,
  () => {
    let server: PostgresServer;
    let build: PrivateBuild;
    beforeAll(async () => {
      server = await startPostgres();
      build = await buildForChildren(["station/sequence-store.js", "station/inventory/open.js"]);
    }, 180_000);
    afterAll(async () => {
      await build?.cleanup();
      await server?.stop();
    });

    it("4 station processes allocating at once get distinct numbers, increasing in each, no gaps", async () => {
      const db = server.createDatabase("concurrent");
      const script = join(build.dir, "allocate-child.mjs");
      await writeFile(
        script,
        `import { allocateSequence } from ${JSON.stringify(build.url("station/sequence-store.js"))};
import { openInventory } from ${JSON.stringify(build.url("station/inventory/open.js"))};
const [dir, count] = process.argv.slice(2);
const inventory = await openInventory({ stationDir: dir, db: process.env.HSM_ONBOARD_DB });
const numbers = [];
for (let i = 0; i < Number(count); i++) numbers.push(await allocateSequence(dir, "ACME Bank", { inventory }));
await inventory.close();
console.log(JSON.stringify({ ev: "done", numbers }));
`,
      );
      const stations = await Promise.all(Array.from({ length: 4 }, () => station()));
      const children = stations.map(
        (dir) => new NodeChild(script, { HSM_ONBOARD_DB: db }, { args: [dir, "25"] }),
      );
      const codes = await Promise.all(children.map((c) => c.exited));
      expect(codes, children.map((c) => c.stderr).join("\n")).toEqual([0, 0, 0, 0]);
      const perStation = children.map((c) => c.messages.find((m) => m.ev === "done")?.numbers as number[]);
      for (const numbers of perStation) {
        expect(numbers).toHaveLength(25);
        for (let i = 1; i < numbers.length; i++) expect(numbers[i]!).toBeGreaterThan(numbers[i - 1]!);
      }
      const all = perStation.flat().sort((a, b) => a - b);
      expect(all).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      // The stations really interleaved (not one after the other).
      expect(perStation.some((n) => n[n.length - 1]! - n[0]! > 24)).toBe(true);
      const inventory = await openInventory({ stationDir: scratch, db });
      expect(await inventory.lastSequence("ACME Bank")).toBe(100);
      await inventory.close();
      // Each station recorded its own last number in its mark (harmless on a shared database: never
      // above it, so never a resynchronisation).
      for (const [i, dir] of stations.entries()) {
        const id = await readStationId(dir);
        const home = process.env.HSM_ONBOARD_STATE_HOME!;
        expect(await readSequenceMark(home, id!, "ACME Bank")).toBe(perStation[i]!.at(-1));
      }
      expect(children.map((c) => c.stderr).join("")).not.toMatch(/resynchronised/);
    }, 120_000);

    it("a station directory restored from an older backup goes on above the shared database's numbers", async () => {
      const db = server.createDatabase("restored");
      const dir = await station();
      const inventory = await openInventory({ stationDir: dir, db });
      expect(await allocateSequence(dir, "ACME Bank", { inventory })).toBe(1);
      const backup = join(scratch, `backup-dir-${Date.now()}`);
      await cp(dir, backup, { recursive: true });
      expect(await allocateSequence(dir, "ACME Bank", { inventory })).toBe(2);
      expect(await allocateSequence(dir, "ACME Bank", { inventory })).toBe(3);
      // The whole directory, journal included, put back: the database still knows 3.
      await rm(dir, { recursive: true });
      await cp(backup, dir, { recursive: true });
      expect(await allocateSequence(dir, "ACME Bank", { inventory })).toBe(4);
      // Another station of the same owner on the same database continues from there too.
      expect(await allocateSequence(await station(), "ACME Bank", { inventory })).toBe(5);
      await inventory.close();
    });

    it("a station directory and its database both older than the mark: PostgreSQL is raised to the mark too", async () => {
      const dir = await station();
      const first = await openInventory({ stationDir: dir, db: server.createDatabase("before") });
      expect(await allocateSequence(dir, "ACME Bank", { inventory: first })).toBe(1);
      const backup = join(scratch, `backup-pg-${Date.now()}`);
      await cp(dir, backup, { recursive: true });
      expect(await allocateSequence(dir, "ACME Bank", { inventory: first })).toBe(2);
      expect(await allocateSequence(dir, "ACME Bank", { inventory: first })).toBe(3);
      await first.close();
      // The directory put back, and a database that never saw 2 and 3 (restored from an old dump,
      // here: a new one that got the station's number 1 only).
      await restoreDirectory(dir, backup);
      const older = await openInventory({ stationDir: dir, db: server.createDatabase("older") });
      await older.raiseSequence("ACME Bank", 1, "dump");
      const { n, notices } = await allocate(dir, "ACME Bank", { inventory: older });
      expect(n).toBe(4);
      expect(notices[0]).toMatch(/resynchronised from 1 to 3/);
      expect(await older.lastSequence("ACME Bank")).toBe(4);
      expect((await older.journal()).map((j) => j.event)).toContain("sequence-resynchronised");
      await older.close();
    });
  },
);
