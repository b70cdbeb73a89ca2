/**
 * One suite, two engines (issue 14): the embedded SQLite inventory and a real PostgreSQL server this
 * test starts itself (Debian's postgresql, a cluster in a temporary directory on a private socket).
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import type { Inventory, ReceiptRecord } from "../../src/station/inventory/inventory.js";
import { MIGRATIONS, SCHEMA_VERSION } from "../../src/station/inventory/migrations.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { redactUrl } from "../../src/station/inventory/postgres.js";
import { receiptRecordsOf } from "../../src/station/inventory/record.js";
import { SQLITE_FILE } from "../../src/station/inventory/sqlite.js";
import { digestMatch, hsmStateJson } from "../../src/station/inventory/state.js";
import type { ReceiptReport, ReceiptRow } from "../../src/station/read-receipts.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.js";

const pgMissing = requireOrSkipReason(postgresUnavailable());

interface Engine {
  readonly name: "sqlite" | "postgresql";
  /** A fresh, empty inventory; `reopen` opens the same one again. */
  fresh(): Promise<{ inventory: Inventory; reopen: () => Promise<Inventory>; where: string }>;
}

let scratch: string;
let server: PostgresServer | undefined;
let databases = 0;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-inventory-"));
  if (!pgMissing) server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
  await rm(scratch, { recursive: true, force: true });
});

const sqlite: Engine = {
  name: "sqlite",
  async fresh() {
    const stationDir = await mkdtemp(join(scratch, "station-"));
    const open = () => openInventory({ stationDir });
    return { inventory: await open(), reopen: open, where: join(stationDir, SQLITE_FILE) };
  },
};
const postgresql: Engine = {
  name: "postgresql",
  async fresh() {
    const url = server!.createDatabase(`inv_${++databases}`);
    const open = () => openInventory({ stationDir: scratch, db: url });
    return { inventory: await open(), reopen: open, where: url };
  },
};

const T0 = new Date("2026-12-01T10:00:00Z");
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);

function plan(owner: string, count: number, prefix = "HSM-") {
  return {
    digest: `${owner}-${prefix}-${count}`.padEnd(64, "0").slice(0, 64),
    owner,
    recordedAt: at(0),
    hsms: Array.from({ length: count }, (_, i) => ({
      serial: `${prefix}${i + 1}`,
      hostname: `hsm-${i + 1}.example`,
      addresses: [`eth0 198.51.100.${i + 10}`],
    })),
  };
}

function receipt(serial: string, overrides: Partial<ReceiptRecord> = {}): ReceiptRecord {
  return {
    serial,
    hostname: `${serial.toLowerCase()}.example`,
    configurationId: "ab".repeat(16),
    sequence: 1,
    outcome: 0,
    outcomeName: "configured",
    verified: true,
    authentic: true,
    addresses: ["eth0 198.51.100.10/24"],
    networkDigest: "11".repeat(32),
    planDigest: "11".repeat(32),
    dryRun: false,
    time: at(5),
    collectedAt: at(6),
    ...overrides,
  };
}

describe.each([
  { engine: sqlite, skip: undefined },
  { engine: postgresql, skip: pgMissing },
])("inventory on $engine.name", ({ engine, skip }) => {
  const test = it.skipIf(skip !== undefined);

  test("migrates to the current schema version once, and refuses a newer schema", async () => {
    const { inventory, reopen, where } = await engine.fresh();
    expect(await inventory.schemaVersion()).toBe(SCHEMA_VERSION);
    await inventory.close();
    const again = await reopen();
    expect(await again.schemaVersion()).toBe(SCHEMA_VERSION);
    // A station of a later release migrated it further: this one must not write into it.
    await (again as unknown as { db: { run(sql: string): Promise<number> } }).db.run(
      `INSERT INTO schema_migrations (version, name, applied_at) VALUES (${SCHEMA_VERSION + 1}, 'future', '2030-01-01T00:00:00Z')`,
    );
    await again.close();
    const refused = await reopen().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UsageError);
    expect((refused as Error).message).toMatch(/newer than this station knows/);
    if (engine.name === "sqlite") expect((await stat(where)).mode & 0o777).toBe(0o600);
  });

  test("allocates 1, 2, 3 per owner; jumps to atLeast, never back; raise never lowers", async () => {
    const { inventory } = await engine.fresh();
    const s = { station: "test" };
    expect(await inventory.lastSequence("ACME Bank")).toBe(0);
    expect(await inventory.allocateSequence("ACME Bank", s)).toBe(1);
    expect(await inventory.allocateSequence("ACME Bank", s)).toBe(2);
    expect(await inventory.allocateSequence("Globex", s)).toBe(1);
    expect(await inventory.allocateSequence("__proto__", s)).toBe(1);
    expect(await inventory.allocateSequence("ACME Bank", { ...s, atLeast: 10 })).toBe(10);
    expect(await inventory.allocateSequence("ACME Bank", { ...s, atLeast: 3 })).toBe(11);
    await inventory.raiseSequence("ACME Bank", 5, "test");
    expect(await inventory.lastSequence("ACME Bank")).toBe(11);
    await inventory.raiseSequence("ACME Bank", 40, "test");
    expect(await inventory.allocateSequence("ACME Bank", s)).toBe(41);
    expect((await inventory.journal()).map((j) => `${j.event} ${j.key} ${j.number}`)).toEqual([
      "sequence-raised ACME Bank 40",
    ]);
    await inventory.close();
  });

  test("never hands out a number twice under concurrency (one process, two connections)", async () => {
    const { inventory, reopen } = await engine.fresh();
    const other = await reopen();
    const numbers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        (i % 2 === 0 ? inventory : other).allocateSequence("ACME Bank", { station: `s${i % 2}` }),
      ),
    );
    expect([...numbers].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    await other.close();
    await inventory.close();
  });

  test("records plans, writes and receipts; inventory shows the latest state per HSM", async () => {
    const { inventory } = await engine.fresh();
    const p = plan("ACME Bank", 3);
    await inventory.recordPlan(p);
    await inventory.recordPlan(p); // the same plan again: one copy
    await inventory.recordPlan(plan("Globex", 1, "G-"));
    let states = await inventory.inventory({ owner: "ACME Bank" });
    expect(states.map((s) => s.serial)).toEqual(["HSM-1", "HSM-2", "HSM-3"]);
    expect(states.every((s) => s.written === undefined && s.receipt === undefined)).toBe(true);

    await inventory.recordWrite({
      configurationId: "ab".repeat(16),
      owner: "ACME Bank",
      sequence: 1,
      planDigest: p.digest,
      cardSerial: "12345678",
      cardName: "Virtual PIV",
      officer: "Alice",
      writtenAt: at(1),
      hsms: 3,
      channel: "SCP11a",
    });
    await inventory.recordWrite({
      kind: "cosign",
      configurationId: "ab".repeat(16),
      owner: "ACME Bank",
      sequence: 1,
      planDigest: p.digest,
      cardSerial: "87654321",
      officer: "Bob",
      cardIndex: 2,
      cardCount: 3,
      writtenAt: at(2),
      hsms: 3,
    });
    const added = await inventory.recordReceipts([
      receipt("HSM-1"),
      receipt("HSM-2", { outcome: 21, outcomeName: "address-conflict", addresses: [] }),
      receipt("HSM-3", { dryRun: true, outcomeName: "dry run — nothing applied", addresses: [], scp: true }),
      receipt("HSM-9", { verified: false, authentic: false, reason: "not authentic: bad signature" }),
    ]);
    expect(added).toBe(4);
    // Collected again from the same card: nothing doubles — also when one batch holds it twice.
    expect(await inventory.recordReceipts([receipt("HSM-1")])).toBe(0);
    expect(
      await inventory.recordReceipts([receipt("HSM-7", { time: at(9) }), receipt("HSM-7", { time: at(9) })]),
    ).toBe(1);

    states = await inventory.inventory({ owner: "ACME Bank" });
    expect(states).toHaveLength(3);
    const [one, two, three] = states;
    expect(one?.written).toMatchObject({ sequence: 1, cardSerial: "87654321", officer: "Bob" });
    expect(one?.receipt).toMatchObject({
      outcome: 0,
      verified: true,
      dryRun: false,
      addresses: ["eth0 198.51.100.10/24"],
    });
    expect(one?.receipt?.scp).toBeUndefined(); // not known: NULL, not false
    expect(two?.receipt).toMatchObject({ outcome: 21, outcomeName: "address-conflict", verified: true });
    expect(three?.receipt).toMatchObject({ dryRun: true, scp: true });
    expect((await inventory.inventory()).map((s) => s.owner)).toEqual([
      "ACME Bank",
      "ACME Bank",
      "ACME Bank",
      "Globex",
    ]);

    const history = await inventory.history({ limit: 50 });
    expect(history[0]?.time.getTime()).toBeGreaterThanOrEqual(history[history.length - 1]!.time.getTime());
    const texts = history.map((h) => h.text).join("\n");
    expect(texts).toMatch(
      /co-signed: configuration (ab){16} sequence 1 \(3 HSMs\) on card 87654321 by "Bob" \(card 2 of 3\)(?:\n|$)/,
    );
    // The station's channel of a write is kept with it (schema 4); a row without one says nothing.
    expect(texts).toMatch(
      /written: configuration (ab){16} sequence 1 \(3 HSMs\) on card 12345678 by "Alice" over SCP11a(?:\n|$)/,
    );
    expect(texts).toMatch(/receipt of HSM-9 .*✗ not verified: not authentic: bad signature/);
    expect(texts).toMatch(/plan .* of "Globex": 1 HSMs/);
    expect((await inventory.history({ limit: 2 })).length).toBe(2);
    expect((await inventory.history({ owner: "Globex" })).every((h) => h.kind !== "write")).toBe(true);
    await inventory.close();
  });

  test("keeps each receipt's full detail; the plan entry's state digest beside it; one HSM by serial", async () => {
    const { inventory } = await engine.fresh();
    const p = plan("ACME Bank", 2);
    await inventory.recordPlan({
      ...p,
      hsms: p.hsms.map((h, i) => ({ ...h, stateDigest: (i === 0 ? "11" : "22").repeat(32) })),
    });
    await inventory.recordReceipts([
      receipt("HSM-1", {
        channel: "SCP11b",
        scp: true,
        deviceSubject: "CN=HSM HSM-1, serialNumber=HSM-1",
        verifiedBy: 'station s1: device chain via "CN=Device CA" to trust anchor "CN=Root"',
        cardSerial: "12345678",
      }),
      // Reports another state than the one planned for it.
      receipt("HSM-2", { networkDigest: "33".repeat(32), time: at(7), collectedAt: at(8) }),
    ]);
    const [one] = await inventory.inventory({ serial: "HSM-1" });
    expect(one).toMatchObject({
      serial: "HSM-1",
      addresses: ["eth0 198.51.100.10"],
      stateDigest: "11".repeat(32),
      receipt: {
        authentic: true,
        channel: "SCP11b",
        scp: true,
        deviceSubject: "CN=HSM HSM-1, serialNumber=HSM-1",
        verifiedBy: 'station s1: device chain via "CN=Device CA" to trust anchor "CN=Root"',
        networkDigest: "11".repeat(32),
        planDigest: "11".repeat(32),
        configurationId: "ab".repeat(16),
        cardSerial: "12345678",
        time: at(5),
        at: at(6),
      },
    });
    expect(digestMatch(one!)).toBe(true);
    const [two] = await inventory.inventory({ owner: "ACME Bank", serial: "HSM-2" });
    expect(two?.receipt?.channel).toBeUndefined();
    expect(digestMatch(two!)).toBe(false);
    expect(hsmStateJson(two!).receipt).toMatchObject({ digestMatchesPlan: false, time: at(7).toISOString() });
    expect(await inventory.inventory({ owner: "Globex", serial: "HSM-1" })).toEqual([]);
    await inventory.close();
  });

  test("records receipts in multi-row batches: 100 across three batches, each once, again none", async () => {
    const { inventory } = await engine.fresh();
    const many = Array.from({ length: 100 }, (_, i) => receipt(`HSM-${i + 1}`, { time: at(i) }));
    expect(await inventory.recordReceipts(many)).toBe(100);
    expect(await inventory.recordReceipts(many)).toBe(0);
    await inventory.recordPlan(plan("ACME Bank", 100));
    const states = await inventory.inventory();
    expect(
      states.filter((s) => s.receipt?.time?.getTime() === at(Number(s.serial.slice(4)) - 1).getTime()),
    ).toHaveLength(100);
    await inventory.close();
  });

  test("a card set: each HSM is on the card whose serial range carries it", async () => {
    const { inventory } = await engine.fresh();
    const p = plan("ACME Bank", 5);
    await inventory.recordPlan(p);
    const card = (
      cardSerial: string,
      cardIndex: number,
      firstSerial: string,
      lastSerial: string,
      minutes: number,
    ) =>
      inventory.recordWrite({
        configurationId: "cd".repeat(16),
        owner: "ACME Bank",
        sequence: 7,
        planDigest: p.digest,
        cardSerial,
        cardIndex,
        cardCount: 2,
        firstSerial,
        lastSerial,
        writtenAt: at(minutes),
        hsms: 5,
      });
    await card("11111111", 1, "HSM-1", "HSM-3", 1);
    await card("22222222", 2, "HSM-4", "HSM-5", 2);
    const states = await inventory.inventory();
    expect(states.map((s) => [s.serial, s.written?.cardSerial])).toEqual([
      ["HSM-1", "11111111"],
      ["HSM-2", "11111111"],
      ["HSM-3", "11111111"],
      ["HSM-4", "22222222"],
      ["HSM-5", "22222222"],
    ]);
    await inventory.close();
  });

  test("keeps CRL events in the journal with what they revoke; history shows them for every owner", async () => {
    const { inventory } = await engine.fresh();
    await inventory.appendJournal({
      event: "crl",
      key: "issuer-x",
      number: "2",
      station: "s1",
      time: at(3),
      detail: '"CN=ACME Token CA" revokes 1 certificate (serial 0a1b), replacing CRL number 1',
    });
    await inventory.appendJournal({
      event: "crl-device",
      key: "issuer-d",
      number: "4",
      station: "s1",
      time: at(4),
    });
    expect((await inventory.journal()).map((j) => [j.event, j.number, j.detail])).toEqual([
      ["crl", "2", '"CN=ACME Token CA" revokes 1 certificate (serial 0a1b), replacing CRL number 1'],
      ["crl-device", "4", undefined],
    ]);
    const history = await inventory.history({ owner: "ACME Bank" });
    expect(history.map((h) => [h.kind, h.text])).toEqual([
      ["crl", "device CA CRL number 4 taken in (station s1)"],
      [
        "crl",
        'token CA CRL number 2 taken in: "CN=ACME Token CA" revokes 1 certificate (serial 0a1b), replacing CRL number 1 (station s1)',
      ],
    ]);
    await inventory.close();
  });

  test("keeps the journal in order", async () => {
    const { inventory } = await engine.fresh();
    for (let i = 1; i <= 3; i++) {
      await inventory.appendJournal({
        event: "crl",
        key: "issuer-x",
        number: String(i),
        station: "s",
        time: at(i),
      });
    }
    expect((await inventory.journal()).map((j) => j.number)).toEqual(["1", "2", "3"]);
    expect((await inventory.journal(2)).map((j) => j.number)).toEqual(["2", "3"]);
    await inventory.close();
  });
});

describe("schema migrations", () => {
  it("takes a version-1 SQLite inventory to the current version, keeping its rows", async () => {
    const stationDir = await mkdtemp(join(scratch, "v1-"));
    const db = new Database(join(stationDir, SQLITE_FILE));
    db.exec(
      "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    );
    db.exec(MIGRATIONS[0]!.sql("sqlite"));
    db.exec("INSERT INTO schema_migrations VALUES (1, 'v1', '2026-11-01T00:00:00Z')");
    db.exec(
      `INSERT INTO receipts (receipt_key, serial, verified, authentic, addresses, collected_at)
       VALUES ('k', 'HSM-1', 1, 1, '[]', '2026-11-01T00:00:00Z')`,
    );
    db.close();
    const inventory = await openInventory({ stationDir });
    expect(await inventory.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(2);
    await inventory.recordPlan(plan("ACME Bank", 1));
    const [state] = await inventory.inventory();
    expect(state?.receipt).toMatchObject({ verified: true, authentic: true });
    expect(state?.receipt?.deviceSubject).toBeUndefined();
    await inventory.close();
  });
});

describe("inventory locations", () => {
  it("shows a PostgreSQL URL without its password", () => {
    expect(redactUrl("postgresql://station:s3cret@db.example:5432/inv")).toBe(
      "postgresql://station:***@db.example:5432/inv",
    );
  });

  it("refuses a --db that is not a postgresql:// URL", async () => {
    await expect(openInventory({ stationDir: scratch, db: "mysql://x/y" })).rejects.toBeInstanceOf(
      UsageError,
    );
  });

  it("refuses a damaged SQLite file with a one-line usage error", async () => {
    const stationDir = await mkdtemp(join(scratch, "damaged-"));
    execFileSync("sh", [
      "-c",
      `printf 'not a database at all, just text that is long enough' > ${join(stationDir, SQLITE_FILE)}`,
    ]);
    const error = await openInventory({ stationDir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).not.toMatch(/\n/);
  });
});

describe("receipt rows to inventory records", () => {
  const base = { location: "receipt-0[0]", addresses: [], authentic: true, current: true, verified: true };
  const report = (rows: ReceiptRow[]): ReceiptReport => ({
    card: {
      backend: "piv",
      name: "Virtual PIV",
      serial: "12345678",
      contactless: false,
      channel: { kind: "plaintext" },
    },
    receipts: rows,
  });

  it("keeps SCP or plaintext as the receipt says, NULL when it does not; dry run only for authentic receipts", () => {
    const at = new Date("2026-12-01T12:00:00Z");
    const records = receiptRecordsOf(
      report([
        { ...base, serial: "A", channel: "SCP11b", stateDigest: "aa", plannedDigest: "bb" },
        { ...base, serial: "B", channel: "plaintext", dryRun: true },
        { ...base, serial: "C" },
        {
          location: "receipt-0[3]",
          addresses: [],
          authentic: false,
          current: false,
          verified: false,
          reason: "x",
        },
      ]),
      at,
    );
    expect(records.map((r) => [r.serial, r.scp, r.dryRun])).toEqual([
      ["A", true, false],
      ["B", false, true],
      ["C", undefined, false],
      [undefined, undefined, undefined],
    ]);
    expect(records[0]).toMatchObject({
      networkDigest: "aa",
      planDigest: "bb",
      cardSerial: "12345678",
      collectedAt: at,
      channel: "SCP11b",
    });
    expect(records[2]?.channel).toBeUndefined();
    // A receipt whose device certificate a device CRL revokes (station update-crl --device) is kept, not verified, with why.
    const [revoked] = receiptRecordsOf(
      report([
        {
          location: "receipt-1[0]",
          addresses: [],
          authentic: false,
          current: false,
          verified: false,
          revoked: true,
          reason: 'revoked: "CN=HSM 7" is revoked by its CRL',
        },
      ]),
      at,
    );
    expect(revoked).toMatchObject({ verified: false, reason: 'revoked: "CN=HSM 7" is revoked by its CRL' });
  });
});
