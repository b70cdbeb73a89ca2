/**
 * Issue 14: sequence numbers come from the inventory — strictly increasing per owner across every
 * station sharing a PostgreSQL database (several station processes at once, a real server started
 * here), never re-issued after a station directory or its inventory is restored from an older backup,
 * and an existing sequences.json is migrated.
 */
import { copyFile, cp, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReplayError } from "../../src/errors.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { SQLITE_FILE } from "../../src/station/inventory/sqlite.js";
import { allocateSequence, IMPORTED_SEQUENCES, lastSequence } from "../../src/station/sequence-store.js";
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
  },
);
